"""MONAI preprocessing of one subject (paper 3.1) and the slice cache that keeps its output.

Pipeline: load NIfTI -> channel first -> reorient to RAS -> resample to common spacing (image
bilinear, mask nearest) -> crop to the body -> centre crop/pad to the mediastinal ROI ->
soft-tissue HU window scaled to [-1, 1].

Output arrays are ``(Z, H, W)``: Z runs inferior -> superior, H anterior (row 0) -> posterior,
W right -> left (radiological display).

Decoding NIfTI and resampling cost far more than a trial needs to read a subject, so the output
is cached as ``.npz`` per subject under a key of the preprocessing settings and the cohort file
fingerprints; repeated trials and studies read the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
)
from salient.platform.cohort.manifest import Manifest, SubjectRecord
from salient.platform.hashing import content_hash
from salient.platform.study.schema import PreprocessSpec

__all__ = ["PreprocessedSubject", "SliceCache", "build_transform", "preprocess_subject"]

BODY_HU = -500.0  # voxels above this are body, used to crop away the air around the torso


def _is_body(x: torch.Tensor) -> torch.Tensor:  # module level: picklable for Ray workers
    return x > BODY_HU


def build_transform(spec: PreprocessSpec) -> Compose:
    keys = ["image", "mask"]
    low, high = spec.hu_window
    return Compose(
        [
            LoadImaged(keys=keys, image_only=True),
            EnsureChannelFirstd(keys=keys),
            Orientationd(keys=keys, axcodes="RAS"),
            Spacingd(keys=keys, pixdim=spec.spacing, mode=("bilinear", "nearest"), padding_mode="border"),
            CropForegroundd(keys=keys, source_key="image", select_fn=_is_body, allow_smaller=True),
            # Scale before padding so the pad value -1 is "air" in the normalised image.
            ScaleIntensityRanged(keys=["image"], a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True),
            ResizeWithPadOrCropd(keys=["image"], spatial_size=spec.roi, value=-1.0),
            ResizeWithPadOrCropd(keys=["mask"], spatial_size=spec.roi, value=0),
        ]
    )


@dataclass(frozen=True)
class PreprocessedSubject:
    subject: str
    image: np.ndarray  # (Z, H, W) float32 in [-1, 1]
    mask: np.ndarray  # (Z, H, W) uint8
    label: int
    tvr: float | None


def _to_zhw(x: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = np.asarray(x)[0]  # (X, Y, Z) in RAS
    # Z first; rows anterior->posterior (flip Y, which runs P->A in RAS); columns R->L.
    return np.ascontiguousarray(np.transpose(arr, (2, 1, 0))[:, ::-1, :])


def preprocess_subject(
    record: SubjectRecord, spec: PreprocessSpec, transform: Compose | None = None
) -> PreprocessedSubject:
    out = (transform or build_transform(spec))({"image": str(record.image), "mask": str(record.mask)})
    image = _to_zhw(out["image"]).astype(np.float32)
    mask = (_to_zhw(out["mask"]) > 0.5).astype(np.uint8)
    return PreprocessedSubject(record.subject, image, mask, record.label, record.tvr)


class SliceCache:
    """Preprocessed subjects on disk, keyed by preprocessing settings and cohort fingerprint."""

    def __init__(self, root: str | Path, manifest: Manifest, spec: PreprocessSpec):
        key = content_hash({"spec": spec.model_dump(mode="json"), "cohort": manifest.fingerprint()}, 16)
        self.dir = Path(root) / key
        self.manifest = manifest
        self.spec = spec
        self._transform: Compose | None = None

    def _file(self, subject: str) -> Path:
        return self.dir / f"{hashlib.sha256(subject.encode()).hexdigest()[:20]}.npz"

    def has(self, subject: str) -> bool:
        return self._file(subject).is_file()

    def get(self, record: SubjectRecord) -> PreprocessedSubject:
        path = self._file(record.subject)
        if path.is_file():
            with np.load(path) as z:
                return PreprocessedSubject(record.subject, z["image"], z["mask"], record.label, record.tvr)
        if self._transform is None:
            self._transform = build_transform(self.spec)
        subj = preprocess_subject(record, self.spec, self._transform)
        self.dir.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: a killed process never leaves a half-written cache entry behind.
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp.npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, image=subj.image, mask=subj.mask)
        os.replace(tmp, path)
        return subj

    def load_all(self, progress: bool = False) -> list[PreprocessedSubject]:
        records = list(self.manifest.records)
        if progress:
            from rich.progress import track

            return [self.get(r) for r in track(records, description="preprocessing cohort")]
        return [self.get(r) for r in records]
