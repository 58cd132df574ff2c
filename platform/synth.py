"""`platform synth`: paired synthetic CT + mask NIfTI from a trained generator.

A generator is what one trial's pool stage used: MaskVAE3D + wavelet diffusion + UCMT teacher,
found in the stage cache. It is named either by the folder of that pool entry
(``OUTPUT_DIR/stage_cache/pool/<key>``, the ``stage_key.pool`` param of a trial run) or by the
MLflow run id of a trial with dose > 0.

Each output subject is one MaskVAE3D lesion drawn into a healthy host: the slices of the lesion's
axial extent are synthesised by the diffusion model (conditioned on the mask and the host's
neighbouring slices) and pseudo-labelled by the UCMT teacher; the other slices are the host's.
So every output volume is partly a real scan: treat the folder as patient-derived data.
Host subject ids are written only as hashes.

The output folder is a cohort (``labels.csv`` with ``subject, image, mask, label`` like
``platform cohort phantom`` writes) and passes ``platform cohort check``. It is written to a
temporary sibling folder and renamed into place at the end, so an interrupted run leaves no
half-written cohort, and an existing folder is never overwritten.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from salient.dashboards import names
from salient.platform.cohort.manifest import manifest_file
from salient.platform.cohort.preprocess import PreprocessedSubject
from salient.platform.errors import PlatformError, clip, input_limits
from salient.platform.outputs import new_output_problem
from salient.platform.privacy import subject_token
from salient.platform.stage_cache import CODE_VERSION
from salient.platform.stages import DIFFUSION, GENERATOR_STAGES, MASK_VAE, POOL, UCMT
from salient.platform.stages.generator import (
    GeneratorRecord,
    GeneratorSource,
    draw_lesion_blocks,
    load_generators,
    sample_blocks,
    ucmt_labels,
)
from salient.platform.study.schema import CohortSpec, PreprocessSpec, StagesSpec

__all__ = ["GeneratorSource", "resolve_generator", "synthesize_cohort", "zhw_to_nifti"]

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
#: Most subjects one call writes (each is a full CT volume); the CLI enforces the same bound.
MAX_SYNTH_MASKS = 10_000


#: Largest generator ``meta.json`` read (it lists the host subjects: kB to a few MB).
MAX_META_BYTES = 64 << 20
_KEY_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def _read_meta(meta_file: Path, what: str) -> dict[str, Any]:
    """A generator's ``meta.json`` as a dict; anything else is the user's bad input (exit 2)."""
    try:
        with meta_file.open("rb") as fh:
            data = fh.read(MAX_META_BYTES + 1)
    except OSError as exc:
        raise PlatformError(f"{what}: {meta_file} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_META_BYTES:
        raise PlatformError(f"{what}: {meta_file} is larger than {MAX_META_BYTES} bytes; not a generator record")
    try:
        with input_limits(f"{what}: {meta_file}"):
            meta = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlatformError(f"{what}: {meta_file} is not valid JSON: {clip(str(exc))}") from None
    if not isinstance(meta, dict):
        raise PlatformError(f"{what}: {meta_file} must hold a JSON object, got {clip(repr(meta))}")
    return meta


def _meta_error(exc: Any, where: str, meta_file: Path, what: str) -> PlatformError:
    first = exc.errors()[0]
    loc = ".".join([where, *(str(x) for x in first["loc"])])
    msg = first["msg"].removeprefix("Value error, ")
    return PlatformError(
        f"{what}: {meta_file}: {loc}: {msg} (got {clip(repr(first.get('input')))}); "
        f"{exc.error_count()} problem(s) - not a generator record this platform wrote"
    )


def _generator_record(raw: Any, meta_file: Path, what: str) -> GeneratorRecord:
    """``meta.json["generator"]`` checked field by field (types, configs, model keys) before use."""
    from pydantic import TypeAdapter, ValidationError

    try:
        record = TypeAdapter(GeneratorRecord).validate_python(raw)
    except ValidationError as exc:
        raise _meta_error(exc, "generator", meta_file, what) from None
    for field, model in (("stages", StagesSpec), ("cohort", CohortSpec)):
        try:
            model.model_validate(getattr(record, field))
        except ValidationError as exc:
            raise _meta_error(exc, f"generator.{field}", meta_file, what) from None
    for model in (MASK_VAE, DIFFUSION, UCMT):
        key = getattr(record, model)
        parts = key.split("/")
        if len(parts) != 2 or not all(_KEY_PART.match(p) for p in parts) or ".." in parts:
            raise PlatformError(f"{what}: {meta_file}: generator.{model} must be STAGE/KEY, got {clip(repr(key))}")
    return record


def _from_entry(entry: Path, what: str) -> GeneratorSource:
    meta_file = entry / "meta.json"
    if not meta_file.is_file():
        raise PlatformError(f"{what}: {entry} is not a finished stage-cache entry (no meta.json)")
    meta = _read_meta(meta_file, what)
    if meta.get("stage") != POOL:
        raise PlatformError(
            f"{what}: {entry} is a {meta.get('stage')!r} entry; a generator is named by its pool entry "
            "(OUTPUT_DIR/stage_cache/pool/<key>)"
        )
    if "generator" not in meta:
        raise PlatformError(f"{what}: {entry} was written before generators were recorded; rerun its study")
    return GeneratorSource(entry, _generator_record(meta["generator"], meta_file, what))


def resolve_generator(ref: str, tracking_uri: str | None = None) -> GeneratorSource:
    """A pool-entry folder or the MLflow run id of a trial with synthetic data -> its generator."""
    path = Path(ref)
    if path.exists():
        return _from_entry(path, "--generator")
    if not _RUN_ID.match(ref):
        raise PlatformError(f"--generator {ref!r} is neither an existing folder nor an MLflow run id (32 hex digits)")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise PlatformError(
            f"--generator {ref} looks like an MLflow run id: give --tracking-uri (or set MLFLOW_TRACKING_URI), "
            "e.g. sqlite:///salient_runs/mlflow.db"
        )
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(ref)
        parent_id = run.data.tags.get(names.TAG_PARENT)
        parent = client.get_run(parent_id) if parent_id else None
    except MlflowException as exc:
        raise PlatformError(f"--generator {ref}: no such run at {uri} ({exc.message})") from None
    pool = run.data.params.get(names.PARAM_STAGE_KEY_PREFIX + POOL)
    if pool is None:
        raise PlatformError(
            f"--generator {ref}: run {run.info.run_name!r} trained no generator (dose 0?); pick a trial with dose > 0"
        )
    root = parent.data.params.get(names.PARAM_STAGE_CACHE) if parent is not None else None
    if root is None:
        raise PlatformError(f"--generator {ref}: its study run does not record where its stage cache is")
    return _from_entry(Path(root) / pool, f"--generator {ref}")


def zhw_to_nifti(volume: np.ndarray, spacing: tuple[float, float, float]) -> nib.Nifti1Image:
    """The inverse of preprocessing's axis order: (Z, H, W) slices -> an (X, Y, Z) RAS NIfTI."""
    xyz = np.ascontiguousarray(np.transpose(volume[:, ::-1, :], (2, 1, 0)))
    return nib.Nifti1Image(xyz, np.diag([*spacing, 1.0]))


def _to_hu(x: np.ndarray, prep: PreprocessSpec) -> np.ndarray:
    low, high = prep.hu_window
    return ((np.clip(x, -1.0, 1.0) + 1.0) / 2.0 * (high - low) + low).astype(np.float32)


def _hosts(
    source: GeneratorSource, cohort: Path | None, progress: bool
) -> tuple[list[PreprocessedSubject], PreprocessSpec]:
    from salient.platform.cohort.prepare import load_cohort

    spec = CohortSpec.model_validate(source.record.cohort)
    if cohort is not None:
        spec = CohortSpec(source="manifest", manifest=manifest_file(cohort), preprocessing=spec.preprocessing)
    loaded = load_cohort(spec, source.output_dir, progress=progress)
    if cohort is not None:
        hosts = [s for s in loaded.subjects.values() if s.label == 0]
        if not hosts:
            raise PlatformError(f"--cohort {cohort}: no healthy (label 0) subject to host synthetic lesions")
    else:
        missing = [h for h in source.record.hosts if h not in loaded.subjects]
        if missing:
            raise PlatformError(f"{len(missing)} host subject(s) of the generator are not in its cohort any more")
        hosts = [loaded.subjects[h] for h in source.record.hosts]
    return hosts, spec.preprocessing


def synthesize_cohort(
    source: GeneratorSource,
    n_masks: int,
    out_dir: Path,
    seed: int = 0,
    cohort: Path | None = None,
    progress: bool = False,
) -> tuple[Path, int]:
    """Write ``n_masks`` synthetic subjects to ``out_dir``; returns its ``labels.csv`` and how many
    subjects it holds (fewer than ``n_masks`` if the MaskVAE3D kept drawing empty masks).

    Args:
        n_masks: lesion masks to draw (one output subject each).
        seed: the draw's seed (same seed, same generator -> same output on CPU).
        cohort: take healthy hosts from this cohort (folder or manifest) instead of the
            generator's own training hosts; it is preprocessed like the generator's cohort.
    """
    if isinstance(n_masks, bool) or not isinstance(n_masks, int) or not 1 <= n_masks <= MAX_SYNTH_MASKS:
        raise PlatformError(f"--masks must be a whole number from 1 to {MAX_SYNTH_MASKS}, got {n_masks!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**32 - 1:
        raise PlatformError(f"--seed must be a whole number from 0 to 2**32 - 1, got {seed!r}")
    if (problem := new_output_problem(out_dir, "OUT_DIR", folder=True)) is not None:
        raise PlatformError(problem)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PlatformError(f"{out_dir} exists and is not empty; choose a new folder (nothing is overwritten)")
    rec = source.record
    stages = source.stages
    states = {name: source.load(name) for name in GENERATOR_STAGES}
    hosts, prep = _hosts(source, cohort, progress)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    diffusion, vae = load_generators(
        stages.diffusion, states[DIFFUSION]["ema"], stages.mask_vae, states[MASK_VAE]["ema"]
    )
    extents = [(int(a), int(b)) for a, b in rec.extents]
    blocks = draw_lesion_blocks(vae, hosts, extents, g, rng, min_blocks=n_masks)[:n_masks]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        rows = []
        items = list(enumerate(blocks))
        if progress:
            from rich.progress import track

            items = list(track(items, description=f"synthesising {len(blocks)} lesions"))
        for i, block in items:
            syn = sample_blocks(diffusion, stages.diffusion, [block], hosts, g)[0]
            pseudo = ucmt_labels(stages.ucmt, states[UCMT]["teacher"], syn)
            host = hosts[block.host]
            z = slice(block.z0, block.z0 + len(syn))
            image = host.image.copy()
            image[z] = syn[:, 0].numpy()
            mask = np.zeros_like(host.mask)
            mask[z] = pseudo[:, 0].numpy().astype(np.uint8)
            cond = np.zeros_like(host.mask)
            cond[z] = block.mask[:, 0].numpy().astype(np.uint8)
            subject = f"synth_{i:04d}"
            nib.save(zhw_to_nifti(_to_hu(image, prep), prep.spacing), str(tmp / "images" / f"{subject}.nii.gz"))
            nib.save(zhw_to_nifti(mask, prep.spacing), str(tmp / "masks" / f"{subject}.nii.gz"))
            nib.save(zhw_to_nifti(cond, prep.spacing), str(tmp / "masks" / f"{subject}_condition.nii.gz"))
            rows.append(
                {
                    "subject": subject,
                    "image": f"images/{subject}.nii.gz",
                    "mask": f"masks/{subject}.nii.gz",
                    "label": 1,
                    "condition_mask": f"masks/{subject}_condition.nii.gz",
                    "host_sha256": subject_token(host.subject),
                    "z_first": block.z0,
                    "z_slices": len(syn),
                    "mask_dice_vs_condition": f"{_dice(mask, cond):.4f}",
                }
            )
        with (tmp / "labels.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        provenance = {
            "generator": str(source.entry),
            "models": {name: getattr(rec, name) for name in GENERATOR_STAGES},
            "guidance": rec.stages[DIFFUSION].get("guidance"),
            "seed": seed,
            "n_masks": len(blocks),
            "hosts": "cohort " + str(cohort) if cohort is not None else "the generator's training hosts",
            "intensity": f"HU, clipped to the preprocessing window {list(prep.hu_window)}",
            "spacing_mm": list(prep.spacing),
            "code_version": CODE_VERSION,
        }
        (tmp / "synth.json").write_text(json.dumps(provenance, indent=1))
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "labels.csv", len(blocks)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a > 0, b > 0).sum()) / total
