import numpy as np
import pytest
import torch
from salient.models.metrics import (
    attention_overlap,
    band_energy_stats,
    dice_score,
    frechet_distance,
    ms_ssim,
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
