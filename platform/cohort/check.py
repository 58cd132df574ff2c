"""`platform cohort check`: find every problem in a cohort before any training touches it.

A cohort is a manifest (a folder with ``labels.csv``, or the CSV itself), an nnU-Net v2 raw
dataset or an MSD task folder (see :mod:`salient.platform.cohort.dataset`). Every NIfTI file is
vetted from its header first (:mod:`salient.platform.cohort.nifti_guard`), so a file that lies
about its size is one named problem and the check goes on with the next subject.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from salient.platform.cohort.manifest import SubjectRecord, manifest_file, parse_manifest
from salient.platform.cohort.nifti_guard import read_nifti
from salient.platform.errors import CohortError

__all__ = [
    "AFFINE_TOLERANCE",
    "BODY_HU",
    "CheckReport",
    "Problem",
    "SubjectCheck",
    "check_cohort",
    "check_subject",
    "load_volume",
    "problems_error",
]

AFFINE_TOLERANCE = 1e-3  # mm; image and mask grids must agree to this
#: Problems listed in a run's error before "... and N more" (``platform cohort check`` lists all).
MAX_LISTED_PROBLEMS = 10
BODY_HU = -500.0  # voxels above this are body (soft tissue, bone): preprocessing crops to them, TVR divides by them


@dataclass(frozen=True)
class Problem:
    subject: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class CheckReport:
    """What ``cohort check`` found. ``manifest`` is the labels CSV, or the dataset.json of a dataset."""

    manifest: Path
    n_subjects: int
    n_positive: int
    problems: tuple[Problem, ...]
    source: str = "manifest"

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class SubjectCheck:
    """Problems of one subject, and its lesion and body voxel counts when its files could be read."""

    problems: list[Problem]
    lesion_voxels: int | None = None
    body_voxels: int | None = None


def problems_error(cohort: str | Path, problems: Sequence[Problem | str], check_command: str) -> CohortError:
    """The error that stops a run on a broken cohort: the first problems and how to see all."""
    listed = [str(p) for p in problems[:MAX_LISTED_PROBLEMS]]
    more = len(problems) - len(listed)
    return CohortError(
        f"cohort {cohort} has {len(problems)} problem(s); nothing was trained:\n  "
        + "\n  ".join(listed)
        + (f"\n  ... and {more} more" if more else "")
        + f"\nrun `{check_command}` for the full list"
    )


def load_volume(path: Path, max_voxels: int | None = None, channel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode a NIfTI file fully, after vetting its header; raise ``ValueError`` with a readable reason.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        max_voxels: the voxel cap (see :func:`~salient.platform.cohort.nifti_guard.resolve_max_voxels`).
        channel: for a 4D (x, y, z, c) image, the channel to return; None: the file must be 3D
            (or 4D with one channel).

    Returns:
        ``(data, affine)`` with data of shape (x, y, z).
    """
    if not path.exists():
        raise FileNotFoundError(f"missing file {path}")
    data, affine = read_nifti(path, max_voxels)
    if data.ndim == 4 and channel is not None:
        if not 0 <= channel < data.shape[3]:
            raise ValueError(f"{path.name} has {data.shape[3]} channels; channel {channel} does not exist")
        data = data[..., channel]
    elif data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path.name} is {data.ndim}D with shape {data.shape}; a 3D volume is needed")
    return data, affine


def _mask_values(mask: np.ndarray) -> list[float]:
    return np.unique(mask[np.isfinite(mask)] if np.issubdtype(mask.dtype, np.floating) else mask).tolist()


def check_subject(
    rec: SubjectRecord,
    max_voxels: int | None = None,
    label_ids: frozenset[int] | None = None,
    label_is_declared: bool = True,
) -> SubjectCheck:
    """Read one subject's image and mask and list what is wrong with them.

    Args:
        rec: the subject. With ``rec.lesion_label`` set the mask is a multi-label map (values
            must be integers, and in ``label_ids`` when given); otherwise it must be 0/1.
        max_voxels: voxel cap per file.
        label_ids: the label ids a dataset declares (dataset.json ``labels``), or None.
        label_is_declared: False when ``rec.label`` is derived from this very mask (nnU-Net/MSD),
            so a positive with an empty mask cannot happen and is not checked.
    """
    problems: list[Problem] = []
    vols = {}
    for kind, path, channel in (("image", rec.image, rec.channel), ("mask", rec.mask, None)):
        try:
            vols[kind] = load_volume(path, max_voxels, channel)
        except FileNotFoundError as exc:
            problems.append(Problem(rec.subject, f"missing {kind}", str(exc)))
        except ValueError as exc:  # NiftiError included: unreadable, truncated, over the voxel cap
            problems.append(Problem(rec.subject, f"bad {kind}", str(exc)))
    body_voxels = lesion_voxels = None
    if "image" in vols:
        image = vols["image"][0]
        if np.issubdtype(image.dtype, np.floating):
            bad = int((~np.isfinite(image)).sum())
            if bad:
                problems.append(Problem(rec.subject, "non-finite voxels", f"{bad} NaN/inf voxels in {rec.image.name}"))
        body_voxels = int((image > BODY_HU).sum())
    if "mask" in vols:
        mask = vols["mask"][0]
        values = _mask_values(mask)
        if rec.lesion_label is None:
            others = [v for v in values if v not in (0, 1)]
            if others:
                problems.append(Problem(rec.subject, "mask labels", f"mask values other than 0/1: {others[:5]}"))
            lesion_voxels = int((mask == 1).sum())
        else:
            non_integer = [v for v in values if v != int(v)]
            undeclared = [v for v in values if v == int(v) and label_ids is not None and int(v) not in label_ids]
            if non_integer or (np.issubdtype(mask.dtype, np.floating) and not np.isfinite(mask).all()):
                problems.append(
                    Problem(rec.subject, "mask labels", f"label map has non-integer values: {non_integer[:5]}")
                )
            if undeclared:
                problems.append(
                    Problem(
                        rec.subject,
                        "mask labels",
                        f"label values {undeclared[:5]} in {rec.mask.name} are not in dataset.json labels "
                        f"{sorted(label_ids or ())}",
                    )
                )
            lesion_voxels = int((mask == rec.lesion_label).sum())
        if label_is_declared:
            what = "mask" if rec.lesion_label is None else f"label map (lesion label {rec.lesion_label})"
            if rec.label == 1 and lesion_voxels == 0:
                problems.append(Problem(rec.subject, "empty mask", f"label 1 (positive) but the {what} is empty"))
            if rec.label == 0 and lesion_voxels > 0:
                problems.append(
                    Problem(
                        rec.subject,
                        "non-empty mask",
                        f"label 0 (negative) but the {what} has {lesion_voxels} lesion voxels",
                    )
                )
    if "image" in vols and "mask" in vols:
        (image, ia), (mask, ma) = vols["image"], vols["mask"]
        if image.shape != mask.shape:
            problems.append(Problem(rec.subject, "shape mismatch", f"image {image.shape} vs mask {mask.shape}"))
        elif not np.allclose(ia, ma, atol=AFFINE_TOLERANCE):
            problems.append(
                Problem(
                    rec.subject,
                    "affine mismatch",
                    f"image and mask grids differ by up to {np.abs(ia - ma).max():.4g} mm",
                )
            )
    return SubjectCheck(problems, lesion_voxels, body_voxels)


def _check_manifest(manifest: Path, progress: bool, max_voxels: int | None) -> CheckReport:
    records, manifest_problems = parse_manifest(manifest)
    problems = [Problem("(manifest)", "manifest", p) for p in manifest_problems]
    items: Iterable[SubjectRecord] = records
    if progress:
        from rich.progress import track

        items = track(records, description="checking cohort")
    for rec in items:
        problems.extend(check_subject(rec, max_voxels).problems)
    return CheckReport(manifest, len(records), sum(r.label for r in records), tuple(problems))


def check_cohort(
    cohort: str | Path,
    progress: bool = False,
    *,
    source: str = "auto",
    lesion_label: int | str | None = None,
    channel: int | str = 0,
    negatives: str = "include",
    max_voxels: int | None = None,
) -> CheckReport:
    """Read every file of the cohort and list every problem found (never stops at the first).

    Args:
        cohort: a folder with labels.csv, a manifest CSV, or an nnU-Net/MSD dataset folder (or
            its dataset.json).
        progress: show a progress bar.
        source: ``auto`` (detect from the folder), ``manifest``, ``nnunet`` or ``msd``.
        lesion_label, channel, negatives: the dataset settings (see
            :class:`~salient.platform.study.schema.CohortSpec`); ignored for a manifest.
        max_voxels: voxel cap per file (default ``$SALIENT_MAX_VOXELS``, else 1024^3).

    Raises:
        CohortError: the arguments contradict the cohort (e.g. ``source='nnunet'`` on a CSV).
    """
    # Imported here: the dataset module builds on this one (check_subject, Problem).
    from salient.platform.cohort.dataset import check_dataset, detect_source

    path = Path(cohort)
    kind = detect_source(path) if source == "auto" else source
    if kind == "manifest":
        return _check_manifest(manifest_file(path), progress, max_voxels)
    return check_dataset(
        path,
        kind,
        lesion_label=lesion_label,
        channel=channel,
        negatives=negatives,
        max_voxels=max_voxels,
        progress=progress,
    )
