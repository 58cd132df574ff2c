"""`platform cohort check`: find every problem in a cohort before any training touches it."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from salient.platform.cohort.manifest import SubjectRecord, manifest_file, parse_manifest

__all__ = ["CheckReport", "Problem", "check_cohort", "load_volume"]

AFFINE_TOLERANCE = 1e-3  # mm; image and mask grids must agree to this


@dataclass(frozen=True)
class Problem:
    subject: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class CheckReport:
    manifest: Path
    n_subjects: int
    n_positive: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode a NIfTI file fully; raise ``ValueError`` with a readable reason if it cannot be used."""
    if not path.exists():
        raise FileNotFoundError(f"missing file {path}")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)  # type: ignore[attr-defined]  # every NIfTI image has it
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"unreadable or corrupt NIfTI {path.name}: {type(exc).__name__}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path.name} is {data.ndim}D with shape {data.shape}; a 3D volume is needed")
    return data, np.asarray(img.affine)  # type: ignore[attr-defined]


def _check_subject(rec: SubjectRecord) -> list[Problem]:
    problems: list[Problem] = []
    vols = {}
    for kind, path in (("image", rec.image), ("mask", rec.mask)):
        try:
            vols[kind] = load_volume(path)
        except FileNotFoundError as exc:
            problems.append(Problem(rec.subject, f"missing {kind}", str(exc)))
        except ValueError as exc:
            problems.append(Problem(rec.subject, f"bad {kind}", str(exc)))
    if "image" in vols:
        image = vols["image"][0]
        if np.issubdtype(image.dtype, np.floating):
            bad = int((~np.isfinite(image)).sum())
            if bad:
                problems.append(Problem(rec.subject, "non-finite voxels", f"{bad} NaN/inf voxels in {rec.image.name}"))
    if "mask" in vols:
        mask = vols["mask"][0]
        values = np.unique(mask[np.isfinite(mask)] if np.issubdtype(mask.dtype, np.floating) else mask)
        others = [v for v in values.tolist() if v not in (0, 1)]
        if others:
            problems.append(Problem(rec.subject, "mask labels", f"mask values other than 0/1: {others[:5]}"))
        n_lesion = int((mask == 1).sum())
        if rec.label == 1 and n_lesion == 0:
            problems.append(Problem(rec.subject, "empty mask", "label 1 (positive) but the mask is empty"))
        if rec.label == 0 and n_lesion > 0:
            problems.append(
                Problem(rec.subject, "non-empty mask", f"label 0 (negative) but the mask has {n_lesion} lesion voxels")
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
    return problems


def check_cohort(cohort: str | Path, progress: bool = False) -> CheckReport:
    """Read every file of the cohort (a folder with labels.csv, or a manifest) and list every
    problem found (never stops at the first)."""
    manifest = manifest_file(cohort)
    records, manifest_problems = parse_manifest(manifest)
    problems = [Problem("(manifest)", "manifest", p) for p in manifest_problems]
    items = records
    if progress:
        from rich.progress import track

        items = track(records, description="checking cohort")
    for rec in items:
        problems.extend(_check_subject(rec))
    return CheckReport(manifest, len(records), sum(r.label for r in records), tuple(problems))
