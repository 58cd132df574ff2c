"""`platform synth`: paired synthetic CT + mask NIfTI from a trained generator, as a cohort or an nnU-Net dataset.

A generator is what one trial's pool stage used: MaskVAE3D + wavelet diffusion + UCMT teacher.
It is named by the folder of that pool entry (``OUTPUT_DIR/stage_cache/pool/<key>``, the
``stage_key.pool`` param of a trial run), by the MLflow run id of a trial with dose > 0
(:mod:`salient.platform.generator_lookup`), or by a Model Registry URI ``models:/NAME/VERSION``
(``@ALIAS``, ``/latest``; :mod:`salient.platform.generator_registry`).

Each output subject is one MaskVAE3D lesion drawn into a healthy host: the slices of the lesion's
axial extent are synthesised by the diffusion model (conditioned on the mask and the host's
neighbouring slices) and pseudo-labelled by the UCMT teacher; the other slices are the host's.
So every output volume is partly a real scan: treat the output as patient-derived data.
A drawn lesion is written only if it passes the checks its generator's pool applied (recorded
with the generator): the mask must fit the host (placement rule), and the UCMT pseudo-label of
its slices must agree with the conditioning mask (Dice >= ``min_pair_dice``, which
``--min-pair-dice`` overrides; 0 turns off this check, not the placement rule). Rejected lesions
are redrawn, up to :data:`~salient.platform.stages.generator.MAX_DRAW_FACTOR` x the request, and
counted in the provenance (``pair_check``).
Host subject ids are written only as hashes. Hosts are the generator's own training hosts, or
the healthy (label 0) subjects of ``--cohort``: a manifest cohort, an nnU-Net v2 raw dataset or an
MSD task folder, preprocessed like the generator's cohort.

Two output formats:

* ``cohort`` (default): a folder with ``labels.csv`` (``subject, image, mask, label`` like
  ``platform cohort phantom`` writes; passes ``platform cohort check``), ``images/``, ``masks/``
  (with the MaskVAE3D ``*_condition`` masks) and ``synth.json`` (provenance).
* ``nnunet``: ``OUT_ROOT/DatasetNNN_NAME/`` in nnU-Net v2's raw layout, written by
  :func:`~salient.platform.cohort.nnunet_export.write_nnunet_dataset`: channel ``{0: "CT"}``,
  labels ``{background: 0, lesion: 1}`` (the lesion label is the UCMT pseudo-label, the mask the
  platform's detector trains on), synthetic cases ``SYN_####``; with ``include_real`` the
  generator's own training subjects (real scans with their real masks) as ``REAL_####``, never
  under their ids. Real cases are written from their preprocessed volumes, so every case shares
  one grid and HU window and no source header (which can carry identifying text) is copied.
  Provenance goes into dataset.json's ``salient`` block.

Both are written to a temporary sibling folder and renamed into place at the end, so an
interrupted run leaves no half-written output, and existing data is never overwritten.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from salient.platform.cohort.dataset import DATASET_SOURCES, detect_source
from salient.platform.cohort.manifest import manifest_file
from salient.platform.cohort.nnunet_export import NnunetCase, case_name, write_nnunet_dataset
from salient.platform.cohort.prepare import LoadedCohort
from salient.platform.cohort.preprocess import PreprocessedSubject
from salient.platform.errors import PlatformError, clip
from salient.platform.generator_lookup import RUN_ID, generator_from_entry, generator_from_run
from salient.platform.generator_registry import (
    RegisteredGenerator,
    generator_for_cohort,
    is_model_uri,
    load_registered_generator,
)
from salient.platform.outputs import new_output_problem
from salient.platform.privacy import subject_token
from salient.platform.stage_cache import CODE_VERSION
from salient.platform.stages import DIFFUSION, GENERATOR_STAGES, MASK_VAE, UCMT
from salient.platform.stages.generator import (
    MAX_DRAW_FACTOR,
    EmptyMasksError,
    GeneratorSource,
    LesionBlock,
    draw_lesion_blocks,
    load_generators,
    pair_dice,
    placement_rule,
    sample_blocks,
    ucmt_labels,
)
from salient.platform.study.schema import CohortSpec, PreprocessSpec

__all__ = [
    "MAX_SYNTH_MASKS",
    "NNUNET_CHANNELS",
    "NNUNET_LABELS",
    "GeneratorSource",
    "NnunetSynthesis",
    "SynthCounts",
    "resolve_generator",
    "synthesize_cohort",
    "synthesize_nnunet",
    "zhw_to_nifti",
]

_NOTHING_PASSED = "lower --min-pair-dice (0 turns the pair check off) or train the generator longer"
#: Most subjects one call writes (each is a full CT volume); the CLI enforces the same bound.
MAX_SYNTH_MASKS = 10_000
NNUNET_CHANNELS = {0: "CT"}
NNUNET_LABELS = {"background": 0, "lesion": 1}
DEFAULT_DATASET_NAME = "SalientSynthetic"
# The dataset-name and id rules of write_nnunet_dataset, checked here too so that a bad name or a
# taken id is refused before minutes of synthesis rather than after.
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,49}$")


def resolve_generator(ref: str, tracking_uri: str | None = None, work_dir: Path | None = None) -> GeneratorSource:
    """A pool-entry folder, the MLflow run id of a trial with synthetic data, or a registered model
    (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest``) -> its generator.

    Args:
        work_dir: a registered generator's work folder for its host cohort (default: the user cache).
    """
    if is_model_uri(ref):
        return load_registered_generator(ref, tracking_uri, work_dir)
    path = Path(ref)
    if path.exists():
        return generator_from_entry(path, "--generator")
    if not RUN_ID.match(ref):
        raise PlatformError(
            f"--generator {clip(repr(ref))} is neither an existing folder nor an MLflow run id (32 hex digits) "
            "nor a registered model (models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest)"
        )
    return generator_from_run(ref, tracking_uri)


def zhw_to_nifti(volume: np.ndarray, spacing: tuple[float, float, float]) -> nib.Nifti1Image:
    """The inverse of preprocessing's axis order: (Z, H, W) slices -> an (X, Y, Z) RAS NIfTI."""
    xyz = np.ascontiguousarray(np.transpose(volume[:, ::-1, :], (2, 1, 0)))
    return nib.Nifti1Image(xyz, np.diag([*spacing, 1.0]))


def _to_hu(x: np.ndarray, prep: PreprocessSpec) -> np.ndarray:
    low, high = prep.hu_window
    return ((np.clip(x, -1.0, 1.0) + 1.0) / 2.0 * (high - low) + low).astype(np.float32)


def _cohort_spec(
    source: GeneratorSource, cohort: Path | None, lesion_label: int | str | None, channel: int | str | None
) -> CohortSpec:
    """The cohort to load: the generator's own, or ``cohort`` preprocessed like it."""
    own = CohortSpec.model_validate(source.record.cohort)
    if cohort is None:
        if lesion_label is not None or channel is not None:
            raise PlatformError("--lesion-label and --channel apply to an nnU-Net or MSD --cohort only")
        return source.cohort_spec() if isinstance(source, RegisteredGenerator) else own
    kind = detect_source(cohort)
    if kind in DATASET_SOURCES:
        root = cohort.parent if cohort.name == "dataset.json" else cohort
        options: dict[str, Any] = {"lesion_label": lesion_label}
        if channel is not None:
            options["channel"] = channel
        try:
            return CohortSpec(source=kind, dataset=root.resolve(), preprocessing=own.preprocessing, **options)
        except ValueError as exc:
            raise PlatformError(f"--cohort {cohort}: {clip(str(exc))}") from None
    if lesion_label is not None or channel is not None:
        raise PlatformError(f"--lesion-label and --channel apply to an nnU-Net or MSD --cohort; {cohort} is a manifest")
    return CohortSpec(source="manifest", manifest=manifest_file(cohort), preprocessing=own.preprocessing)


@dataclass(frozen=True)
class _Prepared:
    """The generator with its subjects named as in the loaded cohort, and that cohort."""

    source: GeneratorSource
    cohort: LoadedCohort
    prep: PreprocessSpec
    hosts: list[PreprocessedSubject]
    given: Path | None  # the --cohort, or None for the generator's own


def _prepare(
    source: GeneratorSource,
    cohort: Path | None,
    lesion_label: int | str | None,
    channel: int | str | None,
    progress: bool,
) -> _Prepared:
    from salient.platform.cohort.prepare import load_cohort

    spec = _cohort_spec(source, cohort, lesion_label, channel)
    if isinstance(source, RegisteredGenerator):
        source.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # may hold preprocessed real scans
    loaded = load_cohort(spec, source.output_dir, progress=progress)
    source = generator_for_cohort(source, loaded.subjects)
    if cohort is not None:
        hosts = [s for s in loaded.subjects.values() if s.label == 0]
        if not hosts:
            raise PlatformError(f"--cohort {cohort}: no healthy (label 0) subject to host synthetic lesions")
    else:
        missing = [h for h in source.record.hosts if h not in loaded.subjects]
        if missing:
            raise PlatformError(f"{len(missing)} host subject(s) of the generator are not in its cohort any more")
        hosts = [loaded.subjects[h] for h in source.record.hosts]
    return _Prepared(source, loaded, spec.preprocessing, hosts, cohort)


@dataclass(frozen=True)
class _Synthetic:
    """One synthetic subject: volumes (Z, H, W) on the preprocessing grid."""

    image_hu: np.ndarray  # float32, HU within the preprocessing window
    mask: np.ndarray  # uint8 {0, 1}: the UCMT pseudo-label
    condition: np.ndarray  # uint8 {0, 1}: the MaskVAE3D mask it was synthesised from
    host_sha256: str
    z_first: int
    z_slices: int

    def facts(self) -> dict[str, Any]:
        return {
            "host_sha256": self.host_sha256,
            "z_first": self.z_first,
            "z_slices": self.z_slices,
            "mask_dice_vs_condition": f"{_dice(self.mask, self.condition):.4f}",
        }


@dataclass
class SynthCounts:
    """What one synthesis drew and kept (filled in as subjects are synthesised).

    ``min_pair_dice`` and ``placement_hu``/``placement_share`` are the rules applied: a drawn
    lesion is written only when the UCMT pseudo-label of its block agrees with the conditioning
    mask (Dice over the block's slices >= ``min_pair_dice``; an empty pseudo-label fails any
    check above 0) - the same check the generator's pool applied, per block instead of per slice,
    because a volume cannot drop single slices."""

    requested: int
    min_pair_dice: float
    placement_hu: list[float] | None
    placement_share: float
    written: int = 0
    drawn: int = 0
    rejected_empty: int = 0
    rejected_low_dice: int = 0
    placement_rejected: int = 0
    vae_only_empty: bool = False  # a later round's MaskVAE3D draws were all empty: drawing stopped
    no_host_fits: bool = False  # a round's masks all failed the placement rule: drawing stopped

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def advice(self) -> str:
        """What may help when nothing passed."""
        if self.no_host_fits:
            return (
                "take healthy hosts from another --cohort, or rerun the generator's study with another placement rule"
            )
        return _NOTHING_PASSED

    def shortfall(self) -> str | None:
        """Why fewer subjects than requested were written, or None."""
        if self.written >= self.requested:
            return None
        check = (
            f"rejected {self.rejected_empty} with an empty pseudo-label, {self.rejected_low_dice} with pair Dice < "
            f"{self.min_pair_dice:g}"
            if self.min_pair_dice > 0
            else "no pair check"
        )
        if self.no_host_fits:
            stop = f"then no drawn mask fit any host: placement {self.placement_hu} HU, share {self.placement_share:g}"
        elif self.vae_only_empty:
            stop = "then MaskVAE3D drew only empty masks (it is undertrained)"
        else:
            stop = f"drawing stops at {MAX_DRAW_FACTOR}x the request"
        return (
            f"wrote {self.written} of {self.requested} requested subjects: drew {self.drawn} lesions; {check}; "
            f"{self.placement_rejected} masks fit no host ({stop})"
        )


def _synthesise(
    prepared: _Prepared, n_masks: int, seed: int, progress: bool, min_pair_dice: float | None
) -> tuple[SynthCounts, Iterator[_Synthetic]]:
    """The subjects, synthesised lazily (one full volume in memory at a time), and their counts
    (complete once the iterator is exhausted). Masks are drawn in rounds: first ``n_masks``, then
    what is still missing, until ``n_masks`` subjects passed the pair check or
    :data:`MAX_DRAW_FACTOR` x ``n_masks`` lesions were drawn. Same generator, hosts and seed ->
    same voxels on CPU."""
    source, hosts, prep = prepared.source, prepared.hosts, prepared.prep
    record, stages = source.record, source.stages
    counts = SynthCounts(
        n_masks,
        record.min_pair_dice if min_pair_dice is None else min_pair_dice,
        record.placement_hu,
        record.placement_share,
    )
    placement = placement_rule(record.placement_hu, prep.hu_window, record.placement_share)
    states = {name: source.load(name) for name in GENERATOR_STAGES}
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    diffusion, vae = load_generators(
        stages.diffusion, states[DIFFUSION]["ema"], stages.mask_vae, states[MASK_VAE]["ema"]
    )
    extents = [(int(a), int(b)) for a, b in record.extents]
    placed = {"placement_rejected": 0}

    def draw(n: int) -> list[LesionBlock]:
        blocks = draw_lesion_blocks(vae, hosts, extents, g, rng, min_blocks=n, placement=placement, counts=placed)
        counts.placement_rejected = placed["placement_rejected"]
        return blocks[:n]

    first = draw(n_masks)  # raises here, before any output exists, if the VAE draws only empty masks

    def synthesised(block: LesionBlock) -> _Synthetic | None:
        syn = sample_blocks(diffusion, stages.diffusion, [block], hosts, g)[0]
        pseudo = ucmt_labels(stages.ucmt, states[UCMT]["teacher"], syn)
        counts.drawn += 1
        if counts.min_pair_dice > 0:
            if not bool((pseudo > 0.5).any()):
                counts.rejected_empty += 1
                return None
            if float(pair_dice(pseudo[None], block.mask[None])[0]) < counts.min_pair_dice:
                counts.rejected_low_dice += 1
                return None
        host = hosts[block.host]
        z = slice(block.z0, block.z0 + len(syn))
        image = host.image.copy()
        image[z] = syn[:, 0].numpy()
        mask = np.zeros_like(host.mask)
        mask[z] = pseudo[:, 0].numpy().astype(np.uint8)
        cond = np.zeros_like(host.mask)
        cond[z] = block.mask[:, 0].numpy().astype(np.uint8)
        return _Synthetic(_to_hu(image, prep), mask, cond, subject_token(host.subject), block.z0, len(syn))

    def subjects() -> Iterator[_Synthetic]:
        from rich.progress import Progress

        with Progress(disable=not progress) as bar:
            task = bar.add_task(f"synthesising {n_masks} lesions", total=n_masks)
            blocks = first
            counts.no_host_fits = not first
            while blocks:
                for block in blocks:
                    syn = synthesised(block)
                    if syn is not None:
                        counts.written += 1
                        bar.advance(task)
                        yield syn
                    if counts.written == n_masks or counts.drawn >= MAX_DRAW_FACTOR * n_masks:
                        return
                try:
                    blocks = draw(n_masks - counts.written)
                    counts.no_host_fits = not blocks
                except EmptyMasksError:  # a later round of only empty masks: stop, the shortfall says why
                    counts.vae_only_empty = True
                    return

    return counts, subjects()


def _provenance(prepared: _Prepared, seed: int, counts: SynthCounts) -> dict[str, Any]:
    source, prep = prepared.source, prepared.prep
    return {
        "generator": str(source.entry),
        "models": {name: getattr(source.record, name) for name in GENERATOR_STAGES},
        "guidance": source.record.stages[DIFFUSION].get("guidance"),
        "seed": seed,
        "n_masks": counts.written,
        "pair_check": counts.to_json(),
        "hosts": "cohort " + str(prepared.given) if prepared.given is not None else "the generator's training hosts",
        "intensity": f"HU, clipped to the preprocessing window {list(prep.hu_window)}",
        "spacing_mm": list(prep.spacing),
        "code_version": CODE_VERSION,
    }


def _check_counts(n_masks: int, seed: int, min_pair_dice: float | None) -> None:
    if min_pair_dice is not None and not 0.0 <= min_pair_dice <= 1.0:  # NaN fails too
        raise PlatformError(f"--min-pair-dice must be in [0, 1], got {min_pair_dice!r}")
    if isinstance(n_masks, bool) or not isinstance(n_masks, int) or not 1 <= n_masks <= MAX_SYNTH_MASKS:
        raise PlatformError(f"--masks must be a whole number from 1 to {MAX_SYNTH_MASKS}, got {n_masks!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**32 - 1:
        raise PlatformError(f"--seed must be a whole number from 0 to 2**32 - 1, got {seed!r}")


def synthesize_cohort(
    source: GeneratorSource,
    n_masks: int,
    out_dir: Path,
    seed: int = 0,
    cohort: Path | None = None,
    progress: bool = False,
    *,
    lesion_label: int | str | None = None,
    channel: int | str | None = None,
    min_pair_dice: float | None = None,
) -> tuple[Path, SynthCounts]:
    """Write ``n_masks`` synthetic subjects to ``out_dir``; returns its ``labels.csv`` and the
    counts (``written`` is fewer than ``n_masks`` when too many drawn lesions failed the pair check
    or the placement rule, or the MaskVAE3D kept drawing empty masks; see :class:`SynthCounts`).

    Args:
        n_masks: subjects to write (one lesion each).
        seed: the draw's seed (same seed, same generator -> same output on CPU).
        cohort: take healthy hosts from this cohort (folder or manifest, nnU-Net or MSD dataset
            folder) instead of the generator's own training hosts; it is preprocessed like the
            generator's cohort.
        lesion_label, channel: for an nnU-Net/MSD ``cohort``: the lesion label (id or name) whose
            absence makes a case healthy, and the image channel (default: its only foreground
            label, channel 0).
        min_pair_dice: the pair check's threshold, 0 turns it off (default: the one the
            generator's pool applied, as its record says).
    """
    _check_counts(n_masks, seed, min_pair_dice)
    if (problem := new_output_problem(out_dir, "OUT_DIR", folder=True)) is not None:
        raise PlatformError(problem)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PlatformError(f"{out_dir} exists and is not empty; choose a new folder (nothing is overwritten)")
    prepared = _prepare(source, cohort, lesion_label, channel, progress)
    prep = prepared.prep
    counts, subjects = _synthesise(prepared, n_masks, seed, progress, min_pair_dice)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        rows = []
        for i, syn in enumerate(subjects):
            subject = f"synth_{i:04d}"
            nib.save(zhw_to_nifti(syn.image_hu, prep.spacing), str(tmp / "images" / f"{subject}.nii.gz"))
            nib.save(zhw_to_nifti(syn.mask, prep.spacing), str(tmp / "masks" / f"{subject}.nii.gz"))
            nib.save(zhw_to_nifti(syn.condition, prep.spacing), str(tmp / "masks" / f"{subject}_condition.nii.gz"))
            rows.append(
                {
                    "subject": subject,
                    "image": f"images/{subject}.nii.gz",
                    "mask": f"masks/{subject}.nii.gz",
                    "label": 1,
                    "condition_mask": f"masks/{subject}_condition.nii.gz",
                    **syn.facts(),
                }
            )
        if not rows:
            raise PlatformError(f"nothing written to {out_dir}: {counts.shortfall()}; {counts.advice()}")
        with (tmp / "labels.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (tmp / "synth.json").write_text(json.dumps(_provenance(prepared, seed, counts), indent=1))
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "labels.csv", counts


@dataclass(frozen=True)
class NnunetSynthesis:
    """What :func:`synthesize_nnunet` wrote: the dataset folder, its case counts and what was
    drawn and rejected."""

    path: Path
    n_synthetic: int
    n_real: int
    counts: SynthCounts


def _nnunet_target_problem(out_root: Path, dataset_id: int, name: str) -> str | None:
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        return f"--dataset-id must be a whole number from 1 to 999 (nnU-Net's DatasetNNN), got {dataset_id!r}"
    if not isinstance(name, str) or not _DATASET_NAME.match(name):
        return (
            f"--dataset-name must be 1-50 letters, digits or '-' starting with a letter or digit (nnU-Net splits "
            f"folder names at '_'), got {clip(repr(name))}"
        )
    if (problem := new_output_problem(out_root, "OUT_ROOT", folder=True)) is not None:
        return problem
    target = out_root / f"Dataset{dataset_id:03d}_{name}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        return f"{target} exists and is not empty; nothing is overwritten"
    if out_root.is_dir():
        taken = sorted(p.name for p in out_root.glob(f"Dataset{dataset_id:03d}_*") if p != target)
        if taken:
            return f"dataset id {dataset_id} is already used by {taken} in {out_root}; choose another --dataset-id"
    return None


def _real_subjects(prepared: _Prepared) -> list[PreprocessedSubject]:
    """The generator's training subjects (real positives) as found in the loaded cohort."""
    trained_on = prepared.source.record.trained_on
    if not trained_on:
        raise PlatformError("--include-real: the generator does not record its training subjects; rerun its study")
    missing = [s for s in trained_on if s not in prepared.cohort.subjects]
    if missing:
        where = f"--cohort {prepared.given}" if prepared.given is not None else "the generator's cohort"
        raise PlatformError(
            f"--include-real: {len(missing)} of the generator's {len(trained_on)} training subjects are not in "
            f"{where}; give the cohort it was trained on"
        )
    return [prepared.cohort.subjects[s] for s in trained_on]


def synthesize_nnunet(
    source: GeneratorSource,
    n_masks: int,
    out_root: Path,
    dataset_id: int,
    name: str = DEFAULT_DATASET_NAME,
    seed: int = 0,
    cohort: Path | None = None,
    include_real: bool = False,
    progress: bool = False,
    *,
    lesion_label: int | str | None = None,
    channel: int | str | None = None,
    min_pair_dice: float | None = None,
) -> NnunetSynthesis:
    """Write ``out_root/DatasetNNN_name/`` (nnU-Net v2 raw) with ``n_masks`` synthetic cases.

    Args:
        out_root: the folder holding nnU-Net datasets (``$nnUNet_raw``); created if missing.
        dataset_id: 1..999, unique in ``out_root`` (nnU-Net finds datasets by id).
        name: the dataset name (letters, digits, '-').
        include_real: also write the generator's training subjects as ``REAL_####`` cases.
        n_masks, seed, cohort, lesion_label, channel, min_pair_dice: as for :func:`synthesize_cohort`.

    Returns:
        the dataset folder, how many synthetic and real cases it holds, and what was drawn and
        rejected (:class:`SynthCounts`).
    """
    _check_counts(n_masks, seed, min_pair_dice)
    if (problem := _nnunet_target_problem(out_root, dataset_id, name)) is not None:
        raise PlatformError(problem)
    prepared = _prepare(source, cohort, lesion_label, channel, progress)
    prep = prepared.prep
    real = _real_subjects(prepared) if include_real else []
    counts, subjects = _synthesise(prepared, n_masks, seed, progress, min_pair_dice)
    out_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_root, prefix=".salient-synth-"))
    try:
        cases, facts = [], {}
        # Each case is staged as files (write_nnunet_dataset copies .nii.gz byte for byte), so
        # only one volume is in memory at a time however many cases there are.
        for i, syn in enumerate(subjects):
            image, label = staging / f"syn{i}_image.nii.gz", staging / f"syn{i}_label.nii.gz"
            nib.save(zhw_to_nifti(syn.image_hu, prep.spacing), str(image))
            nib.save(zhw_to_nifti(syn.mask, prep.spacing), str(label))
            cases.append(NnunetCase((image,), label, synthetic=True))
            facts[case_name(True, i + 1)] = syn.facts()
        if not cases:
            raise PlatformError(f"nothing written to {out_root}: {counts.shortfall()}; {counts.advice()}")
        for i, subject in enumerate(real):
            image, label = staging / f"real{i}_image.nii.gz", staging / f"real{i}_label.nii.gz"
            nib.save(zhw_to_nifti(_to_hu(subject.image, prep), prep.spacing), str(image))
            nib.save(zhw_to_nifti((subject.mask > 0).astype(np.uint8), prep.spacing), str(label))
            cases.append(NnunetCase((image,), label, synthetic=False))
        extra = {
            **_provenance(prepared, seed, counts),
            "label_source": "SYN: UCMT teacher pseudo-label of the synthetic slices; REAL: the cohort's mask",
            "real_cases_are": "the generator's own training subjects (real scans), ids not written"
            if real
            else "none (--include-real not given)",
            "synthetic_case_facts": facts,
        }
        export = write_nnunet_dataset(
            out_root,
            dataset_id,
            name,
            cases,
            NNUNET_CHANNELS,
            NNUNET_LABELS,
            description="SALIENT synthetic lesions (SYN_*) in real healthy host scans"
            + (", with the generator's real training subjects (REAL_*)" if real else ""),
            licence="patient-derived data: the licence and data-use terms of the source cohort apply",
            extra=extra,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return NnunetSynthesis(export.path, counts.written, len(real), counts)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a > 0, b > 0).sum()) / total
