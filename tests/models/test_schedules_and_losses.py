import itertools

import pytest
import torch
from salient.models.configs import WaveletLossConfig
from salient.models.losses import boundary_map, pixel_aux_loss, wavelet_loss
from salient.models.schedules import NEI_SCHEDULES, cosine_alphas_cumprod, ddim_timesteps, nei_scale


def test_cosine_schedule_golden_values() -> None:
    ab = cosine_alphas_cumprod(1000)
    assert ab.shape == (1000,)
    assert torch.all(ab[1:] < ab[:-1])
    # closed form f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2, s = 0.008 (no beta clip here)
    assert float(ab[0]) == pytest.approx(0.999958715775178, abs=1e-12)
    assert float(ab[499]) == pytest.approx(0.4938435904406382, abs=1e-12)
    assert float(ab[-1]) < 1e-8


def test_ddim_timesteps_strided_from_top() -> None:
    steps = ddim_timesteps(1000, 10)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps) == 10
    assert all(a > b for a, b in itertools.pairwise(steps))
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


@pytest.mark.parametrize("schedule", NEI_SCHEDULES)
def test_nei_schedule_endpoints_and_monotone(schedule: str) -> None:
    start, end = 2.0, 0.25
    assert nei_scale(schedule, 0.0, start, end) == pytest.approx(start)
    expected_end = start if schedule == "constant" else end
    assert nei_scale(schedule, 1.0, start, end) == pytest.approx(expected_end)
    values = [nei_scale(schedule, p / 10, start, end) for p in range(11)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values))


def test_nei_schedule_rejects_unknown_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="schedule must be one of"):
        nei_scale("zigzag", 0.5, 1, 0)
    with pytest.raises(ValueError, match="progress"):
        nei_scale("linear", 1.5, 1, 0)


def _case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand((2, 4, 8, 8), generator=g) - 0.5
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 3:6] = 1
    return target, target + 0.1 * torch.randn((2, 4, 8, 8), generator=g), mask


def test_wavelet_loss_terms_zero_at_target_positive_away() -> None:
    cfg = WaveletLossConfig()
    target, pred, mask = _case()
    at = wavelet_loss(target, target, mask, cfg)
    away = wavelet_loss(pred, target, mask, cfg)
    for k in ("wavelet", "ll", "hf", "total"):
        assert float(at[k]) == pytest.approx(0.0, abs=1e-9)
        assert float(away[k]) > 0
    assert float(away["total"]) == pytest.approx(float(away["wavelet"] + away["ll"] + away["hf"]))


def test_boundary_weighting_and_hh_moderation() -> None:
    mask = torch.zeros(1, 1, 9, 9)
    mask[:, :, 3:6, 3:6] = 1
    edge = boundary_map(mask, 1)
    assert edge[0, 0, 4, 4] == 0 and edge[0, 0, 3, 3] == 1 and edge[0, 0, 0, 0] == 0
    target = torch.zeros(1, 4, 9, 9)
    err = torch.zeros(1, 4, 9, 9)
    err[0, :, 3, 3] = 1.0  # error on the boundary in every band
    cfg = WaveletLossConfig(
        band_weights=(1, 1, 1, 1),
        boundary_weight=3.0,
        hh_moderation=0.5,
        lambda_mu=0,
        lambda_sigma=0,
        lambda_hf=(0, 0, 0),
    )
    per_band = [
        float(wavelet_loss(err * (torch.arange(4) == b).view(1, 4, 1, 1), target, mask, cfg)["wavelet"])
        for b in range(4)
    ]
    n = 4 * 81
    assert per_band[0] == pytest.approx(3.0 / n)  # boundary up-weighted x3
    assert per_band[3] == pytest.approx(1.5 / n)  # HH moderated by 0.5 on the boundary


def test_pixel_aux_zero_at_target_positive_away() -> None:
    cfg = WaveletLossConfig()
    g = torch.Generator().manual_seed(1)
    target = torch.rand((2, 1, 16, 16), generator=g) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 6:10, 6:10] = 1
    at = pixel_aux_loss(target, target, mask, cfg)
    assert float(at["edge"]) == pytest.approx(0, abs=1e-9) and float(at["saturation"]) == 0
    away = pixel_aux_loss(target * 1.8, target, mask, cfg)
    assert float(away["edge"]) > 0 and float(away["saturation"]) > 0 and float(away["aux"]) > 0
