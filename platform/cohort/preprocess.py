"""MONAI preprocessing of one subject (paper 3.1) and the slice cache that keeps its output.

Pipeline: vet both NIfTI headers (:mod:`~salient.platform.cohort.nifti_guard`: voxel cap, file
size) -> load NIfTI -> channel first -> [one channel of a 4D image] -> [lesion = label map ==
lesion label] -> reorient to RAS -> resample to common spacing (image bilinear, mask nearest) ->
crop to the body -> centre crop/pad to the mediastinal ROI -> soft-tissue HU window scaled to
[-1, 1]. The bracketed steps apply to records that name a ``channel`` / ``lesion_label``
(nnU-Net and MSD cohorts, or manifests with those columns); selecting them before resampling
keeps one channel's cost and makes the mask binary exactly as a 0/1 manifest mask is.

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
from typing import Any

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
from monai.transforms.transform import MapTransform
from salient.platform.cohort.check import BODY_HU
from salient.platform.cohort.manifest import Manifest, SubjectRecord
from salient.platform.cohort.nifti_guard import NiftiError, read_header
from salient.platform.errors import CohortError
from salient.platform.hashing import content_hash
from salient.platform.study.schema import PreprocessSpec

__all__ = ["BODY_HU", "PreprocessedSubject", "SliceCache", "build_transform", "preprocess_subject"]


def _is_body(x: torch.Tensor) -> torch.Tensor:  # module level: picklable for Ray workers
    return x > BODY_HU


class _SelectChannel(MapTransform):
    """(C, X, Y, Z) -> (1, X, Y, Z): keep one channel of a multi-channel image."""

    def __init__(self, key: str, channel: int):
        super().__init__([key])
        self.channel = channel

    def __call__(self, data: Any) -> Any:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if not 0 <= self.channel < x.shape[0]:
                raise ValueError(f"the image has {x.shape[0]} channel(s); channel {self.channel} does not exist")
            d[key] = x[self.channel : self.channel + 1]
        return d


class _SelectLabel(MapTransform):
    """A multi-label map -> the binary lesion mask ``label == lesion_label`` (same grid, float)."""

    def __init__(self, key: str, lesion_label: int):
        super().__init__([key])
        self.lesion_label = lesion_label

    def __call__(self, data: Any) -> Any:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            d[key] = (x == self.lesion_label).to(torch.float32)
        return d


def build_transform(spec: PreprocessSpec, channel: int | None = None, lesion_label: int | None = None) -> Compose:
    """The MONAI pipeline of one subject (``{"image": path, "mask": path}`` -> tensors).

    Args:
        spec: spacing, HU window and ROI.
        channel: for a 4D (x, y, z, c) image, the channel kept; None: a 3D image.
        lesion_label: the mask is a label map and the lesion is this id; None: a 0/1 mask.
    """
    keys = ["image", "mask"]
    low, high = spec.hu_window
    select: list[MapTransform] = []
    if channel is not None:
        select.append(_SelectChannel("image", channel))
    if lesion_label is not None:
        select.append(_SelectLabel("mask", lesion_label))
    return Compose(
        [
            LoadImaged(keys=keys, image_only=True),
            EnsureChannelFirstd(keys=keys),
            *select,
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
    record: SubjectRecord, spec: PreprocessSpec, transform: Compose | None = None, max_voxels: int | None = None
) -> PreprocessedSubject:
    """Preprocess one subject (see the module docstring).

    Args:
        record: the subject; its ``channel`` and ``lesion_label`` select what is read.
        spec: preprocessing settings.
        transform: a pipeline from :func:`build_transform` for this record's channel and lesion
            label (built here when None).
        max_voxels: voxel cap per file; both headers are vetted before MONAI reads any voxel.

    Returns:
        image ``(Z, H, W)`` float32 in [-1, 1] and mask ``(Z, H, W)`` uint8 in {0, 1}.
    """
    for path in (record.image, record.mask):
        try:
            read_header(path, max_voxels)
        except NiftiError as exc:  # a lying header is the user's input, not a bug: exit 2, named
            raise CohortError(f"subject {record.subject}: {exc}") from None
    if transform is None:
        transform = build_transform(spec, record.channel, record.lesion_label)
    out = transform({"image": str(record.image), "mask": str(record.mask)})
    image = _to_zhw(out["image"]).astype(np.float32)
    mask = (_to_zhw(out["mask"]) > 0.5).astype(np.uint8)
    return PreprocessedSubject(record.subject, image, mask, record.label, record.tvr)


class SliceCache:
    """Preprocessed subjects on disk, keyed by preprocessing settings and cohort fingerprint."""

    def __init__(self, root: str | Path, manifest: Manifest, spec: PreprocessSpec, max_voxels: int | None = None):
        key = content_hash({"spec": spec.model_dump(mode="json"), "cohort": manifest.fingerprint()}, 16)
        self.dir = Path(root) / key
        self.manifest = manifest
        self.spec = spec
        self.max_voxels = max_voxels
        self._transforms: dict[tuple[int | None, int | None], Compose] = {}

    def _file(self, subject: str) -> Path:
        return self.dir / f"{hashlib.sha256(subject.encode()).hexdigest()[:20]}.npz"

    def has(self, subject: str) -> bool:
        return self._file(subject).is_file()

    def get(self, record: SubjectRecord) -> PreprocessedSubject:
        path = self._file(record.subject)
        if path.is_file():
            with np.load(path) as z:
                return PreprocessedSubject(record.subject, z["image"], z["mask"], record.label, record.tvr)
        select = (record.channel, record.lesion_label)
        if select not in self._transforms:
            self._transforms[select] = build_transform(self.spec, *select)
        subj = preprocess_subject(record, self.spec, self._transforms[select], self.max_voxels)
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
