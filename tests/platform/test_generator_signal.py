"""The generator chain does its job at tiny size (issue #14 item 5): conditioning masks land in the
body and in the mediastinum like real hematomas, and the pool keeps only pairs whose pseudo-label
agrees with the conditioning mask - a regression here (masks off-body, pool Dice 0) fails fast."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from salient.models.configs import MaskVAEConfig, UCMTConfig, stage_config
from salient.models.diffusion import ConditionalDiffusion
from salient.models.mask_vae import MaskVAE3D
from salient.platform.cohort.manifest import SubjectRecord, read_manifest
from salient.platform.cohort.phantom import draw_subject, write_phantom_cohort
from salient.platform.cohort.preprocess import preprocess_subject
from salient.platform.stages import generator
from salient.platform.stages.generator import Placement, draw_lesion_blocks, lesion_extents, pair_dice, synthesize_pool
from salient.platform.stages.mask_vae import train_mask_vae
from salient.platform.study.schema import PhantomSpec, PreprocessSpec, ProtocolSpec
from salient.platform.torch_runtime import configure_torch

SPEC = PhantomSpec(n_subjects=20, n_positive=10, shape=(64, 64, 24), spacing=(6.0, 6.0, 8.0), seed=5)
PREP = PreprocessSpec(spacing=(6.0, 6.0, 8.0), hu_window=(-160.0, 240.0), roi=(48, 48, 24))


@pytest.fixture(scope="module")
def anatomy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Preprocessed subjects and, for the healthy hosts, their body and mediastinum in the same
    space (the phantom's own regions, written as masks and put through the same preprocessing)."""
    out = tmp_path_factory.mktemp("anatomy")
    manifest = read_manifest(write_phantom_cohort(SPEC, out))
    subjects = {r.subject: preprocess_subject(r, PREP) for r in manifest.records}
    regions: dict[str, dict[str, np.ndarray]] = {"body": {}, "mediastinum": {}}
    affine = np.diag([*SPEC.spacing, 1.0])
    for index, record in enumerate(manifest.records):
        if record.label:
            continue
        drawn = draw_subject(SPEC, index, 0, None)
        for name, region in (("body", drawn.body), ("mediastinum", drawn.mediastinum)):
            path = out / f"{record.subject}_{name}.nii.gz"
            nib.save(nib.Nifti1Image(region, affine), str(path))
            as_mask = SubjectRecord(record.subject, record.image, path, 0, "")
            regions[name][record.subject] = preprocess_subject(as_mask, PREP).mask.astype(bool)
    return {"subjects": subjects, **regions}


VAE = MaskVAEConfig(volume_size=(8, 32, 32), epochs=80)


@pytest.fixture(scope="module")
def vae_state(anatomy: dict[str, object]) -> dict[str, torch.Tensor]:
    """A MaskVAE3D trained on the cohort's seed masks (seconds at this size)."""
    configure_torch(1)
    seeds = [s for s in anatomy["subjects"].values() if s.label == 1]  # type: ignore[attr-defined]
    out, _ = train_mask_vae(VAE, [s.mask for s in seeds], seed=0)
    return dict(out["ema"])


def test_conditioning_masks_lie_in_the_body_and_the_mediastinum(
    anatomy: dict[str, object], vae_state: dict[str, torch.Tensor]
) -> None:
    subjects = anatomy["subjects"]  # type: ignore[assignment]
    mediastinum, body = anatomy["mediastinum"], anatomy["body"]  # type: ignore[assignment]
    seeds = [s for s in subjects.values() if s.label == 1]  # type: ignore[attr-defined]
    hosts = [subjects[h] for h in mediastinum]  # type: ignore[index]
    vae = MaskVAE3D(VAE)
    vae.load_state_dict(vae_state)
    vae.eval()
    g, rng = torch.Generator().manual_seed(1), np.random.default_rng(1)
    protocol = ProtocolSpec()  # the default placement rule: soft (fat-like) tissue
    assert protocol.placement_hu is not None
    placement = Placement.from_hu(protocol.placement_hu, PREP.hu_window, protocol.placement_share)
    extents = lesion_extents([s.mask for s in seeds])
    blocks = draw_lesion_blocks(vae, hosts, extents, g, rng, min_blocks=20, placement=placement)
    assert len(blocks) >= 20
    inside, voxels = [], []
    for block in blocks:
        host = hosts[block.host]
        z = slice(block.z0, block.z0 + len(block.mask))
        mask = block.mask[:, 0].numpy().astype(bool)
        assert mask.any()
        assert body[host.subject][z][mask].all(), "a conditioning mask leaves the body"  # type: ignore[index]
        inside.append(float(mediastinum[host.subject][z][mask].mean()))  # type: ignore[index]
        voxels.append(int(mask.sum()))
    # Measured over two MaskVAE3D seeds x two draws (this spec and settings): with the placement rule
    # 96.8-98.2% of all mask voxels in the host's mediastinum, every mask >= 85% (19-20 of 20 masks
    # >= 90%); without it 76-90%, and some masks entirely outside. Pinned with margin below that.
    share = float(np.average(inside, weights=voxels))
    assert share >= 0.95 and min(inside) >= 0.8, (share, sorted(inside))


def test_pair_dice_counts_agreement_and_empty_labels() -> None:
    cond = torch.zeros(3, 1, 8, 8)
    cond[:, :, 2:6, 2:6] = 1
    pseudo = torch.zeros(3, 1, 8, 8)
    pseudo[0, :, 2:6, 2:6] = 1  # the same: 1
    pseudo[1, :, 2:6, 4:8] = 1  # half overlaps: 8 / (16 + 16) * 2 = 0.5
    dice = pair_dice(pseudo, cond)  # the third is empty: 0
    assert dice.tolist() == [1.0, 0.5, 0.0]
    assert pair_dice(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)).tolist() == [1.0]


def test_the_seed_masks_themselves_are_in_the_mediastinum(tmp_path: Path) -> None:
    # The yardstick for the test above: the phantom draws its hematomas inside the same region.
    for index in range(3):
        subject = draw_subject(SPEC, index, 1, "middle")
        assert subject.mediastinum is not None
        assert subject.mediastinum[subject.mask.astype(bool)].all()


#: The stand-in generator paints its lesion at this value ([-1, 1] scale) where the mask is.
PAINT = 0.9


def _painting_sampler(diffusion, cfg, blocks, hosts, g, batch_size=64):  # type: ignore[no-untyped-def]
    """A perfect generator: each block's host slices with the lesion painted in at its mask."""
    out = []
    for b in blocks:
        host = torch.from_numpy(hosts[b.host].image[b.z0 : b.z0 + len(b.mask)]).float()[:, None]
        out.append(torch.where(b.mask > 0.5, torch.full_like(host, PAINT), host.clamp(max=PAINT - 0.2)))
    return out


def _labeler(quality: list[str]):  # type: ignore[no-untyped-def]
    """A stand-in teacher that finds the painted lesion, then spoils slice i as ``quality[i % 3]``:
    ``good`` (the painted region), ``empty``, or ``off`` (moved 12 px: no overlap)."""

    def label(cfg, state, images, device=None):  # type: ignore[no-untyped-def]
        found = (images >= PAINT - 1e-6).float()
        for i in range(len(found)):
            kind = quality[i % 3]
            if kind == "empty":
                found[i] = 0
            elif kind == "off":
                found[i] = torch.roll(found[i], shifts=12, dims=-1)
        return found

    return label


@pytest.mark.parametrize("min_dice", [0.5, 0.0])
def test_the_pool_keeps_agreeing_pairs_with_their_own_images_and_counts_the_rest(
    anatomy: dict[str, object], vae_state: dict[str, torch.Tensor], min_dice: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's plumbing (blocks -> slices -> labels -> check -> shuffle) keeps each image with
    its own masks: with a perfect generator and a teacher that is right on one slice in three,
    empty on one and elsewhere on one, every kept pair agrees (Dice 1 recomputed from the kept
    tensors, the painted lesion exactly under both masks), the rejects are counted by reason,
    and ``min_pair_dice`` 0 keeps everything. A pool Dice that collapses to 0 through a wiring
    bug (labels of another slice, masks flipped or shifted against images) fails here."""
    monkeypatch.setattr(generator, "sample_blocks", _painting_sampler)
    monkeypatch.setattr(generator, "ucmt_labels", _labeler(["good", "empty", "off"]))
    subjects = anatomy["subjects"]  # type: ignore[assignment]
    seeds = [s for s in subjects.values() if s.label == 1]  # type: ignore[attr-defined]
    hosts = [s for s in subjects.values() if s.label == 0]  # type: ignore[attr-defined]
    diff = stage_config("diffusion", "tiny", {"base_channels": 8})
    diff_state = ConditionalDiffusion(diff).state_dict()
    n_target = 30
    pool, counts = synthesize_pool(
        diff, diff_state, VAE, vae_state, UCMTConfig(), {}, hosts, lesion_extents([s.mask for s in seeds]),
        n_target, seed=3, min_pair_dice=min_dice, placement=None,
    )  # fmt: skip
    kept = len(pool["image"])
    assert counts["n_kept"] == kept and kept == min(n_target, counts["n_drawn"])
    dice = pair_dice(pool["pseudo_mask"], pool["cond_mask"])
    assert torch.equal(dice, pool["pair_dice"])
    painted = (pool["image"] >= PAINT - 1e-6).float()
    if min_dice > 0:
        # only the "good" third survives; the other two are counted by reason, the pool falls short
        assert counts["n_rejected_empty"] > 0 and counts["n_rejected_low_dice"] > 0
        rejected = counts["n_rejected_empty"] + counts["n_rejected_low_dice"]
        assert rejected + kept <= counts["n_drawn"] and (kept == n_target or rejected + kept == counts["n_drawn"])
        assert bool((dice == 1).all())
        assert torch.equal(painted, pool["cond_mask"]) and torch.equal(painted, pool["pseudo_mask"])
        assert 0.2 < counts["drawn_mask_dice"] < 0.5  # 1 on a third, 0 on the rest (a few tiny masks aside)
    else:
        assert counts["n_rejected_empty"] == counts["n_rejected_low_dice"] == 0 and kept == n_target
        assert torch.equal(painted, pool["cond_mask"])  # images stay with their conditioning masks
        assert 0 < float(dice.mean()) < 1
