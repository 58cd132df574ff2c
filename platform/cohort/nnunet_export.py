"""Write an nnU-Net v2 raw dataset (``DatasetNNN_Name/``) that nnU-Net can plan and train on.

The layout and dataset.json are exactly what nnU-Net v2 expects (``documentation/dataset_format.md``,
``nnunetv2.dataset_conversion.generate_dataset_json``; the test runs nnunetv2's own
``verify_dataset_integrity`` on the output)::

    DatasetNNN_Name/
      dataset.json   channel_names, labels, numTraining, file_ending first; then name, description,
                     licence, converted_by and a "salient" block (how many cases are synthetic/real)
      imagesTr/      SYN_0001_0000.nii.gz ... REAL_0001_0000.nii.gz ...   (one file per channel)
      labelsTr/      SYN_0001.nii.gz ... REAL_0001.nii.gz ...

Case names tell synthetic from real cases at a glance: ``SYN_<n>`` for cases the platform
synthesised, ``REAL_<n>`` for real subjects included alongside (numbered from 1 in the order
given, four digits; real subject ids are never written, so the dataset can be shared like the
synthetic cohort). The folder is written under a temporary name in the same parent and renamed
into place, so nnU-Net never sees half a dataset; an existing non-empty target, or another
dataset with the same id in the parent folder (nnU-Net finds datasets by id), is refused.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from salient.platform.cohort.check import AFFINE_TOLERANCE
from salient.platform.cohort.nifti_guard import NiftiError, read_nifti
from salient.platform.errors import CohortError

__all__ = [
    "FILE_ENDING",
    "REAL_PREFIX",
    "SYNTHETIC_PREFIX",
    "NnunetCase",
    "NnunetExport",
    "case_name",
    "write_nnunet_dataset",
]

log = logging.getLogger(__name__)

SYNTHETIC_PREFIX = "SYN"
REAL_PREFIX = "REAL"
FILE_ENDING = ".nii.gz"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,49}$")

#: A volume given in memory, or a NIfTI file (copied as is when it is already ``.nii.gz``).
Volume = nib.Nifti1Image | Path


@dataclass(frozen=True)
class NnunetCase:
    """One training case to write.

    Args:
        images: one volume per channel, in ``channel_names`` order; each (x, y, z).
        label: the label map (x, y, z), integer values among the dataset's label ids, on the
            images' grid.
        synthetic: True for a case the platform synthesised (named ``SYN_<n>``), False for a
            real subject (``REAL_<n>``).
    """

    images: tuple[Volume, ...]
    label: Volume
    synthetic: bool


@dataclass(frozen=True)
class NnunetExport:
    """The written dataset folder and the case name given to each input case, in input order."""

    path: Path
    case_ids: tuple[str, ...]


def case_name(synthetic: bool, number: int) -> str:
    """``SYN_0001`` / ``REAL_0001`` (``number`` >= 1)."""
    if number < 1:
        raise ValueError(f"case number must be >= 1, got {number}")
    return f"{SYNTHETIC_PREFIX if synthetic else REAL_PREFIX}_{number:04d}"


def _validate(dataset_id: int, name: str, channel_names: Mapping[int, str], labels: Mapping[str, int]) -> None:
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise CohortError(f"dataset_id must be an integer from 1 to 999 (nnU-Net's DatasetNNN), got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CohortError(
            f"dataset name must be 1-50 letters, digits or '-' starting with a letter or digit (nnU-Net splits "
            f"folder names at '_'), got {name!r}"
        )
    if not channel_names or sorted(channel_names) != list(range(len(channel_names))):
        raise CohortError(f"channel_names must map 0..n-1 to names, got {dict(channel_names)!r}")
    if not all(isinstance(v, str) and v.strip() for v in channel_names.values()):
        raise CohortError(f"channel_names must be non-empty strings, got {dict(channel_names)!r}")
    ids = list(labels.values())
    if labels.get("background") != 0:
        raise CohortError(f"labels must map 'background' to 0 (nnU-Net's rule), got {dict(labels)!r}")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in ids) or sorted(ids) != list(range(len(ids))):
        raise CohortError(f"label ids must be the consecutive integers 0..n-1 (nnU-Net's rule), got {dict(labels)!r}")


def _load(volume: Volume, what: str, max_voxels: int | None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(volume, nib.Nifti1Image):
        return np.asanyarray(volume.dataobj), np.asarray(volume.affine)
    try:
        return read_nifti(volume, max_voxels)
    except (OSError, NiftiError) as exc:
        raise CohortError(f"{what}: {exc}") from None


def _write(volume: Volume, target: Path) -> None:
    if isinstance(volume, Path) and volume.name.endswith(FILE_ENDING):
        shutil.copyfile(volume, target)  # byte for byte: the header stays exactly the source's
    elif isinstance(volume, Path):
        with volume.open("rb") as src, gzip.open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        nib.save(volume, str(target))


def _write_case(
    case: NnunetCase, case_id: str, n_channels: int, label_ids: set[int], folder: Path, max_voxels: int | None
) -> None:
    if len(case.images) != n_channels:
        raise CohortError(f"case {case_id}: {len(case.images)} image(s) given, channel_names declares {n_channels}")
    label, label_affine = _load(case.label, f"case {case_id} label", max_voxels)
    if label.ndim != 3:
        raise CohortError(f"case {case_id}: the label map must be 3D, got shape {label.shape}")
    values = np.unique(label)
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise CohortError(f"case {case_id}: the label map has non-integer values {values[:5].tolist()}")
    undeclared = sorted(set(values.astype(np.int64).tolist()) - label_ids)
    if undeclared:
        raise CohortError(f"case {case_id}: label values {undeclared[:5]} are not among labels {sorted(label_ids)}")
    for c, image in enumerate(case.images):
        data, affine = _load(image, f"case {case_id} channel {c}", max_voxels)
        if data.shape != label.shape:
            raise CohortError(f"case {case_id}: channel {c} has shape {data.shape}, the label map {label.shape}")
        if not np.allclose(affine, label_affine, atol=AFFINE_TOLERANCE):
            raise CohortError(f"case {case_id}: channel {c} and the label map are on different grids (affines differ)")
        _write(image, folder / "imagesTr" / f"{case_id}_{c:04d}{FILE_ENDING}")
    _write(case.label, folder / "labelsTr" / f"{case_id}{FILE_ENDING}")


def write_nnunet_dataset(
    out_root: str | Path,
    dataset_id: int,
    name: str,
    cases: Sequence[NnunetCase],
    channel_names: Mapping[int, str],
    labels: Mapping[str, int],
    *,
    description: str = "",
    licence: str = "see the source cohort",
    extra: Mapping[str, Any] | None = None,
    max_voxels: int | None = None,
) -> NnunetExport:
    """Write ``out_root/DatasetNNN_name/`` atomically (see the module docstring).

    Args:
        out_root: the folder that holds nnU-Net datasets (``$nnUNet_raw``), created if missing.
        dataset_id: 1..999, formatted ``NNN``.
        name: the dataset name (letters, digits, '-').
        cases: the training cases; synthetic ones are named ``SYN_<n>``, real ones ``REAL_<n>``.
        channel_names: channel index -> name, e.g. ``{0: "CT"}`` (nnU-Net normalises "CT" by HU).
        labels: label name -> id, ``background`` = 0 and ids consecutive, e.g.
            ``{"background": 0, "hematoma": 1}``.
        description, licence: written to dataset.json.
        extra: more JSON-serialisable provenance, stored under dataset.json's ``salient`` key.
        max_voxels: voxel cap for volumes given as files.

    Returns:
        the dataset folder and each input case's name.

    Raises:
        CohortError: a bad argument, a case that does not fit the declared channels/labels/grid,
            an existing non-empty target, or the id already used by another dataset in ``out_root``.
    """
    _validate(dataset_id, name, channel_names, labels)
    if not cases:
        raise CohortError("an nnU-Net dataset needs at least one training case, got none")
    out_root = Path(out_root)
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    target = out_root / folder_name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CohortError(f"{target} exists and is not an empty folder; refusing to overwrite it")
    out_root.mkdir(parents=True, exist_ok=True)
    taken = sorted(p.name for p in out_root.glob(f"Dataset{dataset_id:03d}_*") if p.name != folder_name)
    if taken:
        raise CohortError(f"dataset id {dataset_id} is already used by {taken} in {out_root}; choose another id")
    counters = {True: 0, False: 0}
    case_ids = []
    for case in cases:
        counters[case.synthetic] += 1
        case_ids.append(case_name(case.synthetic, counters[case.synthetic]))
    tmp = Path(tempfile.mkdtemp(dir=out_root, prefix=f".{folder_name}.tmp-"))
    try:
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir()
        for case, case_id in zip(cases, case_ids, strict=True):
            _write_case(case, case_id, len(channel_names), set(labels.values()), tmp, max_voxels)
        meta: dict[str, Any] = {
            "channel_names": {str(k): channel_names[k] for k in sorted(channel_names)},
            "labels": {k: int(v) for k, v in sorted(labels.items(), key=lambda kv: kv[1])},
            "numTraining": len(cases),
            "file_ending": FILE_ENDING,
            "name": name,
            "description": description,
            "licence": licence,
            "converted_by": "salient platform (salient.platform.cohort.nnunet_export)",
            "salient": {
                "case_names": f"{SYNTHETIC_PREFIX}_<n>: synthesised by the platform; {REAL_PREFIX}_<n>: real subjects",
                "synthetic_cases": counters[True],
                "real_cases": counters[False],
                **dict(extra or {}),
            },
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
        if target.is_dir():
            target.rmdir()  # empty (checked above); rename() needs the name free or an empty dir
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote nnU-Net dataset %s: %d synthetic + %d real cases", target, counters[True], counters[False])
    return NnunetExport(target, tuple(case_ids))
