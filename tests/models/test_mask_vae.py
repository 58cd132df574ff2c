import numpy as np
import pytest
import torch
from salient.models.configs import MaskVAEConfig
from salient.models.mask_vae import MaskVAE3D, MaskVAETrainer, dice_loss, mask_to_volume, slice_volume, vae_loss
from salient.platform.cohort.phantom import draw_subject
from salient.platform.study.schema import PhantomSpec

CFG = MaskVAEConfig(volume_size=(8, 16, 16), channels=(8, 16), latent_dim=8, epochs=40, batch_size=4, lr=3e-3)


def phantom_volumes() -> torch.Tensor:
    spec = PhantomSpec(shape=(32, 32, 12), spacing=(12.0, 12.0, 12.0))
    vols = []
    for i, cls in enumerate(["small", "middle", "large"] * 2):
        m = draw_subject(spec, i, 1, cls).mask.transpose(2, 1, 0)
        vols.append(mask_to_volume(m, CFG.volume_size))
    return torch.tensor(np.stack(vols)).float()


def test_mask_to_volume_stretches_the_lesion_extent() -> None:
    m = np.zeros((10, 16, 16), np.uint8)
    m[3:5, 4:8, 4:8] = 1
    v = mask_to_volume(m, (8, 16, 16))
    assert v is not None and v.shape == (8, 16, 16) and v[:, 5, 5].all()
    assert mask_to_volume(np.zeros((4, 8, 8), np.uint8), (8, 16, 16)) is None


def test_vae_learns_phantom_masks_and_samples_binary_volumes() -> None:
    torch.manual_seed(0)
    vols = phantom_volumes()
    model = MaskVAE3D(CFG)
    trainer = MaskVAETrainer(model, vols, seed=0)
    losses = trainer.train()
    assert losses[-1] < 0.6 * losses[0]
    samples = trainer.ema.module.sample(5, torch.Generator().manual_seed(0))
    assert samples.shape == (5, 8, 16, 16)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    masks = slice_volume(samples[0], 6, (32, 32))
    assert masks.shape == (6, 1, 32, 32) and set(masks.unique().tolist()) <= {0.0, 1.0}


def test_vae_loss_terms() -> None:
    target = torch.zeros(1, 1, 8, 16, 16)
    target[..., 2:6, 4:10, 4:10] = 1
    perfect = (target * 2 - 1) * 50
    mu, logvar = torch.zeros(1, 8), torch.zeros(1, 8)
    terms = vae_loss(perfect, target, mu, logvar, CFG)
    assert float(terms["dice"]) < 1e-3 and float(terms["bce"]) < 1e-3
    assert float(terms["kl"]) == pytest.approx(CFG.free_bits * 8)  # free bits floor
    assert float(dice_loss(torch.zeros_like(target), target)) > 0.9


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="volume_size"):
        MaskVAEConfig(volume_size=(10, 16, 16), channels=(8, 16))
    with pytest.raises(ValueError, match=r"volumes must be \(B, 1"):
        MaskVAE3D(CFG).encode(torch.zeros(1, 1, 4, 4, 4))
