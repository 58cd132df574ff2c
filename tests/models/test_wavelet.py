import numpy as np
import pytest
import pywt
import torch
from salient.models.fsa import FrequencyScaling
from salient.models.wavelet import HaarDWT, haar_dwt2, haar_idwt2


def test_dwt_matches_pywavelets_band_for_band() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 16, 10)).astype(np.float32)
    ours = haar_dwt2(torch.from_numpy(x)).numpy().reshape(3, 2, 4, 8, 5)
    for b in range(3):
        for c in range(2):
            ca, (ch, cv, cd) = pywt.dwt2(x[b, c].astype(np.float64), "haar")
            for k, ref in enumerate((ca, ch, cv, cd)):  # LL, LH, HL, HH
                assert np.abs(ours[b, c, k] - ref).max() <= 1e-6


def test_perfect_reconstruction_and_orthonormality() -> None:
    x = torch.randn(4, 3, 32, 24)
    w = haar_dwt2(x)
    assert torch.allclose(haar_idwt2(w), x, atol=1e-6)
    assert torch.allclose(w.pow(2).sum(), x.pow(2).sum(), rtol=1e-5)  # energy preserved


def test_odd_sizes_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="even height and width"):
        haar_dwt2(torch.zeros(1, 1, 15, 16))


def test_scaled_bands_fit_the_sampler_clip_range() -> None:
    dwt = HaarDWT()
    x = torch.ones(1, 1, 8, 8)
    assert haar_dwt2(x)[:, 0].max() == pytest.approx(2.0)  # unscaled LL would be clipped at 1
    extreme = torch.tensor([[1.0, 1.0], [-1.0, -1.0]]).repeat(4, 4)[None, None]
    for img in (x, -x, extreme, torch.rand(2, 1, 16, 16) * 2 - 1):
        w = dwt(img)
        assert w.abs().max() <= 1.0 + 1e-6
        assert torch.allclose(dwt.inverse(w), img, atol=1e-6)


def test_dwt_is_differentiable() -> None:
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    HaarDWT()(x).pow(2).sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, 0.5 * x.detach(), atol=1e-6)  # 0.25 * 2x


def test_fsa_is_identity_at_init_and_gates_by_mask() -> None:
    fsa = FrequencyScaling()
    w = torch.randn(2, 4, 6, 6)
    mask = torch.zeros(2, 1, 6, 6)
    mask[:, :, :3] = 1
    assert torch.allclose(fsa(w, mask), w)
    with torch.no_grad():
        fsa.log_scale_lesion.fill_(np.log(2.0))
    out = fsa(w, mask)
    assert torch.allclose(out[:, :, :3], 2 * w[:, :, :3], atol=1e-6)
    assert torch.allclose(out[:, :, 3:], w[:, :, 3:])
    with pytest.raises(ValueError, match="mask must be"):
        fsa(w, torch.zeros(2, 1, 3, 3))
