"""Test helpers: the phantom cohort written out as an nnU-Net v2 raw dataset and as an MSD task.

Written by hand here (nibabel, json), not by the platform's own export, so the readers are tested
against an independent writer. Each label map carries an extra "anatomy" label (id 1: bright
voxels - aorta and bone - outside the lesion) and the lesion as id 2, so choosing the lesion
label matters: a reader that took "any label > 0" would get a different mask.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from salient.platform.cohort.manifest import read_manifest

__all__ = [
    "ANATOMY",
    "LABELS",
    "LESION",
    "label_map",
    "load_nifti",
    "write_msd_layout",
    "write_nnunet_layout",
]

ANATOMY, LESION = 1, 2
LABELS = {"background": 0, "anatomy": ANATOMY, "hematoma": LESION}
ANATOMY_HU = 200  # contrast-enhanced aorta and bone


def load_nifti(path: Path) -> nib.Nifti1Image:
    """``nib.load`` typed as the NIfTI image it returns for .nii/.nii.gz (mypy sees a base class)."""
    return cast(nib.Nifti1Image, nib.load(str(path)))


def label_map(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The phantom subject's multi-label map (uint8) and its affine."""
    image = np.asarray(load_nifti(image_path).dataobj)
    mask_img = load_nifti(mask_path)
    lesion = np.asarray(mask_img.dataobj) == 1
    labels = np.zeros(image.shape, np.uint8)
    labels[(image > ANATOMY_HU) & ~lesion] = ANATOMY
    labels[lesion] = LESION
    return labels, np.asarray(mask_img.affine)


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    nib.save(img, str(path))


def write_nnunet_layout(phantom_dir: Path, root: Path) -> Path:
    """``root`` = DatasetNNN_Name/: imagesTr/<subject>_0000.nii.gz (the phantom file, copied), labelsTr."""
    manifest = read_manifest(phantom_dir / "labels.csv")
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for r in manifest.records:
        shutil.copyfile(r.image, root / "imagesTr" / f"{r.subject}_0000.nii.gz")
        labels, affine = label_map(r.image, r.mask)
        _save(labels, affine, root / "labelsTr" / f"{r.subject}.nii.gz")
    meta = {
        "channel_names": {"0": "CT"},
        "labels": LABELS,
        "numTraining": len(manifest.records),
        "file_ending": ".nii.gz",
        "name": "phantom",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def write_msd_layout(phantom_dir: Path, root: Path, second_channel: bool = True) -> Path:
    """``root`` = TaskNN_Name/: 4D images (CT, and an "inverted" second channel), label maps, dataset.json."""
    manifest = read_manifest(phantom_dir / "labels.csv")
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    training = []
    for r in manifest.records:
        ct_img = load_nifti(r.image)
        ct = np.asarray(ct_img.dataobj)
        data = np.stack([ct, (-ct).astype(ct.dtype)], axis=-1) if second_channel else ct
        _save(data, np.asarray(ct_img.affine), root / "imagesTr" / f"{r.subject}.nii.gz")
        labels, affine = label_map(r.image, r.mask)
        _save(labels, affine, root / "labelsTr" / f"{r.subject}.nii.gz")
        training.append({"image": f"./imagesTr/{r.subject}.nii.gz", "label": f"./labelsTr/{r.subject}.nii.gz"})
    # macOS leaves "._" files in the MSD archives: a reader must skip them.
    (root / "labelsTr" / f"._{manifest.records[0].subject}.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    meta = {
        "name": "Phantom",
        "tensorImageSize": "4D" if second_channel else "3D",
        "modality": {"0": "CT", "1": "inverted"} if second_channel else {"0": "CT"},
        "labels": {str(v): k for k, v in LABELS.items()},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
