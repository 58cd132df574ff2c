import numpy as np
import pytest
import torch
from salient.models.metrics import (
    attention_overlap,
    auprc,
    auroc,
    band_energy_stats,
    bootstrap_ci,
    dice_score,
    frechet_distance,
    ms_ssim,
    prevalence_subsample,
    random_conv_extractor,
    tvr_strata,
)
from sklearn.metrics import average_precision_score, roc_auc_score


@pytest.mark.parametrize("seed", range(5))
def test_auprc_auroc_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    y[0], y[1] = 0, 1
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes ties
    assert auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_prevalence_subsample_is_exact_and_seeded() -> None:
    labels = np.r_[np.ones(30, int), np.zeros(500, int)]
    for p in (0.01, 0.02, 0.03, 0.05, 0.1):
        idx = prevalence_subsample(labels, p, seed=7)
        assert labels[idx].sum() / len(idx) == pytest.approx(p, abs=1e-12)
        assert np.array_equal(idx, prevalence_subsample(labels, p, seed=7))
        assert len(np.unique(idx)) == len(idx)
    assert not np.array_equal(prevalence_subsample(labels, 0.05, 1), prevalence_subsample(labels, 0.05, 2))
    with pytest.raises(ValueError, match="too small for prevalence"):
        prevalence_subsample(np.r_[np.ones(1, int), np.zeros(50, int)], 0.01, 0)


def test_bootstrap_ci_contains_point_and_narrows_with_n() -> None:
    def data(n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        y = (np.arange(n) % 5 == 0).astype(int)
        return y, rng.normal(size=n) + 1.2 * y

    widths = []
    for n in (50, 400):
        y, s = data(n)
        point, lo, hi = bootstrap_ci(auprc, y, s, n_boot=300, seed=1)
        assert lo <= point <= hi and point == pytest.approx(auprc(y, s))
        widths.append(hi - lo)
    assert widths[1] < 0.6 * widths[0]


def test_tvr_strata_split_positives_into_tertiles() -> None:
    tvr = np.r_[np.arange(1, 10) / 1000, np.zeros(5)]
    labels = np.r_[np.ones(9, int), np.zeros(5, int)]
    strata = tvr_strata(tvr, labels)
    assert [int((strata[k] & (labels == 1)).sum()) for k in ("small", "middle", "large")] == [3, 3, 3]
    assert all(strata[k][labels == 0].all() for k in strata)


def test_realism_metrics() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((8, 1, 32, 32), generator=g) * 2 - 1
    assert ms_ssim(x, x).value == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim(x, torch.rand((8, 1, 32, 32), generator=g) * 2 - 1).value < 0.5
    ext = random_conv_extractor()
    assert ext.name == "random-conv-64d-seed0"
    f_real = ext(x)
    assert frechet_distance(f_real, f_real) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(f_real, ext(x * 0.2)) > frechet_distance(f_real, ext(x * 0.9))
    assert np.allclose(random_conv_extractor()(x), f_real)  # deterministic default
    assert dice_score(np.ones((4, 4)), np.ones((4, 4))) == pytest.approx(1.0)
    assert dice_score(np.eye(4), np.zeros((4, 4))) == 0.0
    stats = band_energy_stats(x)
    assert set(stats) == {"ll_std", "lh_var", "hl_var", "hh_var"} and stats["ll_std"].shape == (8,)
    att = torch.zeros(1, 1, 4, 4)
    att[..., :2, :2] = 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :4] = 1
    assert attention_overlap(att, mask)[0] == pytest.approx(1.0)
