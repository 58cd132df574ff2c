"""Training-time augmentation (salient.models.augment): masks move with their slices, the
generator is the only source of randomness, and the trainers refuse bad settings."""

from __future__ import annotations

import pytest
import torch
from salient.models.augment import AIR, augment
from salient.models.configs import DetectorConfig, UCMTConfig


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 20, 20, generator=g) * 2 - 1
    masks = torch.zeros(16, 1, 20, 20)
    masks[:, :, 8:12, 5:9] = 1.0
    images = torch.where(masks.bool(), torch.full_like(images, 5.0), images)  # lesion pixels are 5
    return images, masks


def test_masks_move_with_their_slices() -> None:
    images, masks = _batch()
    out, out_masks = augment(images, masks, torch.Generator().manual_seed(1), shift=3, flip=True, noise=0.0)
    assert out.shape == images.shape and out_masks.shape == masks.shape
    for i in range(len(out)):
        lesion = out[i, 0] == 5.0
        assert torch.equal(lesion, out_masks[i, 0].bool())  # the mask is where the lesion went
        assert out_masks[i].sum() == masks[i].sum()  # a 3 px shift cannot push this lesion out
    moved = [not torch.equal(out_masks[i], masks[i]) for i in range(len(out))]
    assert sum(moved) >= 12  # 16 draws of 7x7 offsets and a flip: nearly all moved
    padded = out[:, :, 0, :] == AIR
    assert padded.any()  # a slice shifted down is padded with air at the top row


def test_noise_only_changes_intensities_and_a_seed_repeats_it() -> None:
    images, masks = _batch()
    a, am = augment(images, masks, torch.Generator().manual_seed(7), shift=0, flip=False, noise=0.1)
    b, bm = augment(images, masks, torch.Generator().manual_seed(7), shift=0, flip=False, noise=0.1)
    assert torch.equal(a, b) and torch.equal(am, masks) and torch.equal(bm, masks)
    assert 0.08 < float((a - images).std()) < 0.12
    off, off_masks = augment(images, masks, torch.Generator().manual_seed(7), shift=0, flip=False, noise=0.0)
    assert torch.equal(off, images) and torch.equal(off_masks, masks)


def test_flip_alone_mirrors_about_half_the_batch() -> None:
    images, masks = _batch()
    out, out_masks = augment(images, masks, torch.Generator().manual_seed(3), shift=0, flip=True, noise=0.0)
    mirrored = [torch.equal(out[i], images[i].flip(-1)) for i in range(len(out))]
    kept = [torch.equal(out[i], images[i]) for i in range(len(out))]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))  # each slice one or the other
    assert 3 <= sum(mirrored) <= 13
    assert all(torch.equal(out_masks[i], masks[i].flip(-1)) == mirrored[i] for i in range(len(out)))


@pytest.mark.parametrize("config", [DetectorConfig, UCMTConfig])
def test_configs_refuse_negative_augmentation(config: type) -> None:
    with pytest.raises(ValueError, match="augment_shift must be >= 0, got -1"):
        config(augment_shift=-1)
    with pytest.raises(ValueError, match="augment_noise"):
        config(augment_noise=-0.1)
    with pytest.raises(ValueError, match="shift and noise must be >= 0"):
        augment(*_batch(), torch.Generator(), shift=-1, flip=False, noise=0.0)


def test_both_trainers_augment_their_labeled_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The detector and the UCMT trainer pass every labeled batch through ``augment`` with their
    config's settings (deleting the call, or ignoring the config, fails here)."""
    from salient.models import detector as detector_module
    from salient.models import ucmt as ucmt_module
    from salient.models.configs import stage_config
    from salient.models.detector import DetectorTrainer
    from salient.models.ucmt import UCMTTrainer

    calls: list[tuple[str, int, bool, float, int]] = []

    def spy(module: str):  # type: ignore[no-untyped-def]
        def wrapped(images, masks, generator, *, shift, flip, noise):  # type: ignore[no-untyped-def]
            calls.append((module, shift, flip, noise, len(images)))
            return augment(images, masks, generator, shift=shift, flip=flip, noise=noise)

        return wrapped

    monkeypatch.setattr(detector_module, "augment", spy("detector"))
    monkeypatch.setattr(ucmt_module, "augment", spy("ucmt"))
    images, masks = _batch()
    labels = (torch.arange(16) % 2).float()
    det_cfg = stage_config("detector", "tiny", {"steps": 2, "batch_size": 4, "augment_shift": 2, "augment_noise": 0.05})
    DetectorTrainer(det_cfg, images, labels, masks * labels[:, None, None, None]).train()
    ucmt_cfg = UCMTConfig(train_steps=2, batch_size=4, augment_shift=3, augment_flip=False, augment_noise=0.01)
    UCMTTrainer(ucmt_cfg, (images[:8, :1], masks[:8]), images[8:, :1], seed=0).train()
    assert [c for c in calls if c[0] == "detector"] == [("detector", 2, True, 0.05, 4)] * 2
    assert [c for c in calls if c[0] == "ucmt"] == [("ucmt", 3, False, 0.01, 4)] * 2
