"""Image and generator metrics: MONAI, PyWavelets and closed forms as references."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from salient.models.metrics import (
    attention_overlap,
    band_energy_stats,
    dice_score,
    frechet_distance,
    load_feature_extractor,
    ms_ssim,
    ms_ssim_plan,
    random_conv_extractor,
)


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


# --- rules pinned one by one (issue #19: each test kills a class of deliberate bugs) ---------------


def _monai_ms_ssim(x: torch.Tensor, y: torch.Tensor, kernel: int, weights: tuple[float, ...]) -> float:
    """MONAI's MS-SSIM with the kernel and weights written out by hand: the reference."""
    from monai.metrics import MultiScaleSSIMMetric

    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=2.0, kernel_size=kernel, weights=weights)
    return float(torch.as_tensor(metric(x, y)).mean())


@pytest.mark.parametrize(
    ("height", "width", "scales", "kernel"),
    # by hand: the most scales s whose coarsest image (min side / 2**(s-1)) is wider than the
    # kernel, with the 11 px kernel where it fits and 7 px otherwise
    [
        (16, 16, 2, 7),
        (32, 40, 3, 7),
        (40, 40, 3, 7),  # 11 px only from 41 px at 3 scales
        (48, 48, 3, 11),
        (80, 64, 4, 7),
        (80, 80, 4, 7),  # 11 px only from 81 px at 4 scales
        (112, 120, 5, 7),
        (160, 160, 5, 7),  # 11 px only from 161 px at 5 scales
        (176, 176, 5, 11),
        (200, 200, 5, 11),  # never more than the 5 standard scales
    ],
)
def test_ms_ssim_scales_and_kernel_fit_the_image(height: int, width: int, scales: int, kernel: int) -> None:
    g = torch.Generator().manual_seed(height)
    x = torch.rand((1, 1, height, width), generator=g) * 2 - 1
    result = ms_ssim(x, x)
    assert (result.scales, result.kernel_size) == (scales, kernel)
    assert result.value == pytest.approx(1.0, abs=1e-5)


def test_ms_ssim_renormalises_the_kept_weights_and_averages_the_batch() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand((3, 1, 40, 32), generator=g) * 2 - 1
    y = (x + 0.4 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    y[1] = -x[1]  # one very different pair: the batch mean is not any one image's value
    result = ms_ssim(x.double(), y)  # any float dtype
    # 32 px: 3 scales, 7 px kernel; the first three standard weights, summing to 0.6305
    weights = (0.0448 / 0.6305, 0.2856 / 0.6305, 0.3001 / 0.6305)
    per_image = [_monai_ms_ssim(x[i : i + 1], y[i : i + 1], 7, weights) for i in range(3)]
    assert result.value == pytest.approx(float(np.mean(per_image)), abs=1e-6)
    assert max(per_image) - min(per_image) > 0.3


@pytest.mark.parametrize(("size", "kernel", "kept"), [(64, 7, 4), (176, 11, 5)])
def test_ms_ssim_with_four_and_five_scales_equals_monai(size: int, kernel: int, kept: int) -> None:
    g = torch.Generator().manual_seed(size)
    x = torch.rand((2, 1, size, size), generator=g) * 2 - 1
    y = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    standard = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)[:kept]
    weights = tuple(w / sum(standard) for w in standard)  # 4 scales: / 0.8668; 5 scales: / 1.0001
    expected = _monai_ms_ssim(x, y, kernel, weights)
    assert ms_ssim(x, y).value == pytest.approx(expected, abs=1e-6)
    assert 0.05 < expected < 0.95  # a comparison that depends on every weight


def test_ms_ssim_refuses_images_below_16_px() -> None:
    with pytest.raises(ValueError, match=r"MS-SSIM needs images of at least 16 px, got \(15, 40\)"):
        ms_ssim(torch.zeros(1, 1, 15, 40), torch.zeros(1, 1, 15, 40))
    with pytest.raises(ValueError, match=r"got \(40, 15\)"):
        ms_ssim(torch.zeros(1, 1, 40, 15), torch.zeros(1, 1, 40, 15))


@pytest.mark.parametrize("size", [21, 25, 56, 96, 170, 175])
def test_ms_ssim_works_for_every_size_from_16_px(size: int) -> None:
    """Sizes 21, 25-27, 41-43, 49-62, 81-111 and 161-175 px raised (the plan ignored MONAI's size
    rule and the coarsest scale's size); every size from 16 px now has a plan that runs."""
    x = torch.zeros(1, 1, size, size)
    assert ms_ssim(x, x).value == pytest.approx(1.0, abs=1e-5)


def test_every_size_from_16_to_300_px_has_a_plan_monai_accepts() -> None:
    from monai.metrics import MultiScaleSSIMMetric

    g = torch.Generator().manual_seed(0)
    for size in range(16, 301):  # MONAI itself is the judge of every plan
        scales, kernel = ms_ssim_plan(size)
        x, y = torch.rand(2, 1, 1, size, size, generator=g)
        weights = (1.0 / scales,) * scales
        value = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=kernel, weights=weights)(x, y)
        assert torch.isfinite(torch.as_tensor(value)).all(), size
        if size >= 176:
            assert (scales, kernel) == (5, 11), size  # MONAI's default wherever it fits
    assert ms_ssim_plan(48) == (3, 11) and ms_ssim_plan(176) == (5, 11)  # unchanged where it worked
    assert ms_ssim_plan(56) == (3, 11) and ms_ssim_plan(21) == (2, 7)


def test_frechet_distance_equals_the_closed_form_of_commuting_covariances() -> None:
    # 1-D: (mu1 - mu2)^2 + (sd1 - sd2)^2 with sample variances (ddof 1): means 1 and 3, variances 2 and 8
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])) == pytest.approx(6.0, abs=1e-9)
    # 2-D with diagonal sample covariances diag(2/3, 8/3) and diag(8/3, 8/3), means 0 and (1, -1):
    # |mu1 - mu2|^2 = 2, sum (sd1 - sd2)^2 = (2 sqrt(2/3) - sqrt(2/3))^2 = 2/3
    f1 = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    f2 = f1 * np.array([2.0, 1.0]) + np.array([1.0, -1.0])
    assert frechet_distance(f1, f2) == pytest.approx(2 + 2 / 3, abs=1e-9)
    assert frechet_distance(f2, f1) == pytest.approx(2 + 2 / 3, abs=1e-9)
    # N differs between the sets; integer features are read as floats
    assert frechet_distance(np.array([[0], [2]]), np.array([[1], [3], [5]])) == pytest.approx(4 + (2**0.5 - 2) ** 2)


def test_frechet_distance_of_a_rank_deficient_covariance_is_finite() -> None:
    # 2 samples in 3-D: both covariances have rank 1, sqrtm(s1 @ s2) is singular
    f1 = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    f2 = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    d = frechet_distance(f1, f2)
    # mu: (0.5, 0.5, 0.5) vs (1, 0, 0) -> 0.75; s1 = 0.5 * ones, tr 1.5; s2 = diag(2, 0, 0), tr 2;
    # s1 @ s2 = [1, 1, 1]^T [1, 0, 0] is idempotent, its own square root, trace 1: 0.75 + 1.5 + 2 - 2
    assert d == pytest.approx(2.25, abs=1e-6)


def test_frechet_distance_when_the_matrix_square_root_fails() -> None:
    # 3 and 2 samples in 3-D: s1 @ s2 is singular and scipy's sqrtm returns NaN; the distance is
    # then computed with 1e-6 added to both diagonals. Reference: the symmetric form
    # tr sqrt(s1^(1/2) s2 s1^(1/2)) from eigenvalues, which needs no regularisation.
    f1 = np.array([[2.0, -2.0, 1.0], [0.0, 0.0, -1.0], [2.0, -1.0, 0.0]])
    f2 = np.array([[1.0, 0.0, 1.0], [-2.0, 1.0, -1.0]])
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()
    expected = ((f1.mean(0) - f2.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about the singular matrix
        got = frechet_distance(f1, f2)
    assert got == pytest.approx(expected, abs=5e-3)
    # exactly: the same closed form with 1e-6 on both diagonals
    eps = np.eye(3) * 1e-6
    w, v = np.linalg.eigh(s1 + eps)
    root = (v * np.sqrt(w)) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ (s2 + eps) @ root), 0, None)).sum()
    regularised = ((f1.mean(0) - f2.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross
    assert got == pytest.approx(regularised, abs=1e-7)


def test_frechet_distance_of_float32_features_is_computed_in_float64() -> None:
    # Feature extractors return float32. Means near 1000 and a distance near 1: float32 means
    # would be off in the 4th decimal of the distance (it is a difference of large numbers).
    rng = np.random.default_rng(0)
    f1 = rng.normal(1000.0, 1.0, (60, 2)).astype(np.float32)
    f2 = (rng.normal(1000.0, 1.0, (50, 2)) + np.array([0.5, -0.3])).astype(np.float32)
    a, b = f1.astype(np.float64), f2.astype(np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(w)) @ v.T
    cross = np.sqrt(np.linalg.eigvalsh(root @ s2 @ root)).sum()
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross
    assert frechet_distance(f1, f2) == pytest.approx(expected, abs=1e-9)
    assert frechet_distance(f2, f1) == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_refuses_bad_feature_arrays() -> None:
    ok = np.zeros((3, 2))
    for f1, f2 in (
        (np.zeros(3), ok),
        (ok, np.zeros(3)),
        (ok, np.zeros((3, 3))),
        (np.zeros((1, 2)), ok),
        (ok, np.zeros((1, 2))),
    ):
        with pytest.raises(ValueError, match=r"need two \(N >= 2, D\) feature arrays of equal D"):
            frechet_distance(f1, f2)


def test_random_conv_extractor_is_seeded_named_and_he_scaled() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand((5, 1, 32, 32), generator=g) * 2 - 1
    small = random_conv_extractor(seed=3, dim=8)
    assert small.name == "random-conv-8d-seed3"
    features = small(x.double())  # any float dtype
    assert features.shape == (5, 8) and features.dtype == np.float32
    assert np.array_equal(features, random_conv_extractor(seed=3, dim=8)(x))
    assert not np.allclose(features, random_conv_extractor(seed=4, dim=8)(x))
    default = random_conv_extractor()
    assert default(x).shape == (5, 64)
    # He scaling: weights ~ N(0, 2 / fan_in), fan_in = in_channels * 3 * 3 (the last conv: 32 * 9)
    convs = [m for m in default.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.weight.shape[1] * 9 for c in convs] == [9, 144, 288]
    last = convs[-1].weight
    assert float(last.std()) == pytest.approx((2 / 288) ** 0.5, rel=0.03)  # 18432 weights: ~0.5% noise
    assert float(convs[1].weight.std()) == pytest.approx((2 / 144) ** 0.5, rel=0.05)  # 4608 weights
    # biases: fan-in 1, so N(0, 2); 112 values pooled: ~7% noise
    biases = torch.cat([c.bias for c in convs if c.bias is not None])
    assert biases.numel() == 16 + 32 + 64 and float(biases.std()) == pytest.approx(2**0.5, rel=0.2)


def test_the_default_extractor_is_the_network_its_name_promises() -> None:
    # "random-conv-64d-seed0" must always name the same network, or logged Frechet distances stop
    # being comparable: three 3x3 convolutions with stride 2 and padding 1 (1 -> 16 -> 32 -> dim
    # channels), each followed by a ReLU, then a global average pool.
    net = random_conv_extractor(seed=0, dim=24).net
    layers = list(net)
    assert [type(m).__name__ for m in layers] == ["Conv2d", "ReLU"] * 3 + ["AdaptiveAvgPool2d"]
    convs = [m for m in layers if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 32), (32, 24)]
    assert all((c.kernel_size, c.stride, c.padding) == ((3, 3), (2, 2), (1, 1)) for c in convs)
    assert all(c.bias is not None for c in convs)
    assert layers[-1].output_size == 1


def test_load_feature_extractor_names_the_file(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    path = tmp_path / "features.pt"
    torch.jit.script(net).save(str(path))
    ext = load_feature_extractor(str(path))
    assert ext.name == f"torchscript:{path}"
    x = torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        assert np.allclose(ext(x), net(x).numpy())


def test_dice_is_twice_the_overlap_over_the_sizes() -> None:
    p = np.zeros((4, 4))
    t = np.zeros((4, 4))
    p[0, :3] = 1.0  # 3 voxels
    t[0, 2:] = 1.0  # 2 voxels, 1 shared: 2 * 1 / (3 + 2)
    # (the 1e-6 guard in the denominator is far below the tolerance)
    assert dice_score(p, t) == pytest.approx(0.4, rel=1e-5)
    assert dice_score(torch.from_numpy(p), torch.from_numpy(t * 2)) == pytest.approx(0.4, rel=1e-5)  # nonzero is in
    assert dice_score(p, t, eps=0.5) == pytest.approx(2 / 5.5)  # the guard is added to the sizes
    assert dice_score(np.zeros(3), np.zeros(3)) == 1.0  # both empty: perfect agreement
    assert dice_score(np.zeros(3), np.ones(3)) == 0.0


def test_band_energies_equal_pywavelets_per_slice() -> None:
    import pywt

    g = torch.Generator().manual_seed(4)
    x = torch.rand((3, 1, 8, 12), generator=g) * 2 - 1
    stats = band_energy_stats(x.double())
    for i in range(3):
        ca, (ch, cv, cd) = pywt.dwt2(x[i, 0].double().numpy(), "haar")
        # torch's std/var are the sample (ddof 1) ones
        assert stats["ll_std"][i] == pytest.approx(np.std(ca, ddof=1), rel=1e-5)
        assert stats["lh_var"][i] == pytest.approx(np.var(ch, ddof=1), rel=1e-5)
        assert stats["hl_var"][i] == pytest.approx(np.var(cv, ddof=1), rel=1e-5)
        assert stats["hh_var"][i] == pytest.approx(np.var(cd, ddof=1), rel=1e-5)


def test_attention_overlap_is_the_mass_inside_the_resized_mask() -> None:
    att = torch.zeros(3, 1, 4, 4)
    att[0, 0, 0, 0], att[0, 0, 3, 3] = 0.03, 0.01  # 3/4 of the (small) mass inside
    att[1, 0, 0, 0], att[1, 0, 3, 3] = 1.0, -5.0  # negative attention counts as none
    mask = torch.zeros(3, 1, 8, 8)
    mask[:, :, 1, 1] = 1  # one lesion voxel: its whole 2x2 block of the 4x4 map is inside
    overlap = attention_overlap(att, mask)
    assert overlap.shape == (3,)
    assert overlap[0] == pytest.approx(0.75) and overlap[1] == pytest.approx(1.0)
    assert overlap[2] == 0.0  # no attention at all: 0, not NaN
