"""The built-in phantom cohort: deterministic synthetic torso CT with mediastinal hematomas.

No patient data can ship with the platform, so the default cohort is drawn here: every subject
is a contrast-enhanced torso volume in Hounsfield units (air, a subcutaneous fat rim, chest
wall, two lungs, mediastinal fat, heart, an enhanced aorta with its arch, a spine), with
per-subject anatomical variation and scanner noise. Positive subjects carry an irregular,
multiscale hematoma in the mediastinum; its size class (small/middle/large) cycles over the
positives so the target-to-volume ratio (TVR = lesion voxels / body voxels) has a spread.

Everything is a pure function of the :class:`PhantomSpec` seed: the same spec writes the same
files bit for bit.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from salient.platform.study.schema import PhantomSpec

__all__ = ["TVR_CLASSES", "PhantomSubject", "draw_subject", "write_phantom_cohort"]

log = logging.getLogger(__name__)

# Hounsfield units of each tissue (typical contrast-enhanced CT values).
HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 45.0,
    "lung": -850.0,
    "mediastinal_fat": -70.0,
    "heart": 40.0,
    "aorta": 260.0,
    "cortex": 800.0,
    "marrow": 250.0,
    "hematoma": 65.0,
}
#: Lesion radius range (mm) of each size class; gives roughly a decade of TVR.
TVR_CLASSES = {"small": (9.0, 12.0), "middle": (14.0, 18.0), "large": (22.0, 28.0)}
NOISE_HU = 12.0


@dataclass(frozen=True)
class PhantomSubject:
    subject: str
    image: np.ndarray  # (x, y, z) int16 HU
    mask: np.ndarray  # (x, y, z) uint8
    label: int
    tvr: float
    tvr_class: str
    #: anatomy masks (x, y, z) uint8: the body and the mediastinal fat where hematomas are drawn
    #: (without heart and aorta); not written to the cohort, for checks of lesion placement
    body: np.ndarray | None = None
    mediastinum: np.ndarray | None = None


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], passes: int) -> np.ndarray:
    """Cheap band-limited noise: white noise box-blurred ``passes`` times along every axis."""
    field = rng.standard_normal(shape)
    for _ in range(passes):
        for axis in range(field.ndim):
            field = (np.roll(field, 1, axis) + field + np.roll(field, -1, axis)) / 3.0
    return field / (field.std() + 1e-8)


def draw_subject(spec: PhantomSpec, index: int, label: int, tvr_class: str | None) -> PhantomSubject:
    """Draw one subject. ``tvr_class`` is required for positives (label 1)."""
    rng = np.random.default_rng([spec.seed, index])
    nx, ny, nz = spec.shape
    sx, sy, sz = spec.spacing
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    z = np.arange(nz) / max(nz - 1, 1)  # 0 = inferior, 1 = superior (apex)
    X, Y = np.meshgrid(x, y, indexing="ij")
    fov_x, fov_y = nx * sx, ny * sy

    a = fov_x * rng.uniform(0.40, 0.46)  # torso half-width
    b = fov_y * rng.uniform(0.27, 0.33)  # torso half-depth (anterior-posterior)
    cx, cy = rng.normal(0, 0.01 * fov_x), rng.normal(0, 0.01 * fov_y)
    fat = rng.uniform(0.05, 0.09)
    lung_w, lung_d = a * rng.uniform(0.34, 0.40), b * rng.uniform(0.62, 0.72)
    lung_off = a * rng.uniform(0.47, 0.53)
    aorta_r = b * rng.uniform(0.08, 0.10)
    heart_top = rng.uniform(0.45, 0.6)

    vol = np.full((nx, ny, nz), HU["air"], dtype=np.float64)
    body = np.zeros((nx, ny, nz), dtype=bool)
    medi = np.zeros((nx, ny, nz), dtype=bool)
    for k in range(nz):
        taper = 1.0 - 0.12 * z[k]  # the torso narrows toward the apex
        torso = _ellipse(X, Y, cx, cy, a * taper, b * taper)
        inner = _ellipse(X, Y, cx, cy, a * taper * (1 - fat), b * taper * (1 - fat))
        sl = np.where(torso, HU["fat"], HU["air"])
        sl[inner] = HU["muscle"]
        lung_scale = 0.75 + 0.25 * np.sin(np.pi * (0.15 + 0.8 * z[k]))
        lungs = np.zeros_like(torso)
        for side in (-1, 1):
            lungs |= _ellipse(
                X, Y, cx + side * lung_off * taper, cy + 0.05 * b, lung_w * lung_scale, lung_d * lung_scale
            )
        lungs &= inner
        sl[lungs] = HU["lung"]
        mediastinum = _ellipse(X, Y, cx, cy + 0.1 * b, 0.30 * a * taper, 0.62 * b) & inner & ~lungs
        sl[mediastinum] = HU["mediastinal_fat"]
        heart = np.zeros_like(torso)
        if z[k] < heart_top:
            heart = (
                _ellipse(X, Y, cx - 0.08 * a, cy + 0.25 * b, 0.22 * a, 0.28 * b * (1 - 0.5 * z[k] / heart_top)) & inner
            )
            sl[heart] = HU["heart"]
        asc_c = (cx + 0.06 * a, cy + 0.12 * b)
        desc_c = (cx - 0.10 * a, cy - 0.42 * b)
        aorta = _ellipse(X, Y, *desc_c, aorta_r, aorta_r)
        if z[k] >= heart_top - 0.1:
            aorta |= _ellipse(X, Y, *asc_c, aorta_r * 1.1, aorta_r * 1.1)
        if z[k] > 0.85:  # the arch joins ascending and descending aorta near the apex
            t = np.clip(
                ((X - asc_c[0]) * (desc_c[0] - asc_c[0]) + (Y - asc_c[1]) * (desc_c[1] - asc_c[1]))
                / ((desc_c[0] - asc_c[0]) ** 2 + (desc_c[1] - asc_c[1]) ** 2),
                0,
                1,
            )
            px, py = asc_c[0] + t * (desc_c[0] - asc_c[0]), asc_c[1] + t * (desc_c[1] - asc_c[1])
            aorta |= (X - px) ** 2 + (Y - py) ** 2 <= aorta_r**2
        sl[aorta & inner] = HU["aorta"]
        spine_c = (cx, cy - 0.72 * b)
        sl[_ellipse(X, Y, *spine_c, 0.16 * b, 0.16 * b)] = HU["cortex"]
        sl[_ellipse(X, Y, *spine_c, 0.11 * b, 0.11 * b)] = HU["marrow"]
        vol[:, :, k] = sl
        body[:, :, k] = torso
        medi[:, :, k] = mediastinum & ~aorta & ~heart

    mask = np.zeros((nx, ny, nz), dtype=np.uint8)
    if label == 1:
        if tvr_class not in TVR_CLASSES:
            raise ValueError(f"tvr_class must be one of {sorted(TVR_CLASSES)}, got {tvr_class!r}")
        mask = _hematoma(rng, X, Y, z * (nz - 1) * sz, medi, TVR_CLASSES[tvr_class])
        # Hematoma attenuation varies a little within the lesion (clot age, partial volume).
        vol[mask.astype(bool)] = HU["hematoma"] + 8.0 * _smooth_noise(rng, mask.shape, 1)[mask.astype(bool)]
    vol += NOISE_HU * rng.standard_normal(vol.shape)
    vol[~body] = HU["air"] + 5.0 * rng.standard_normal(int((~body).sum()))
    tvr = float(mask.sum() / max(body.sum(), 1))
    image = np.clip(np.round(vol), -1024, 3071).astype(np.int16)
    return PhantomSubject(
        f"phantom_{index:04d}", image, mask, label, tvr, tvr_class or "", body.astype(np.uint8), medi.astype(np.uint8)
    )


def _hematoma(
    rng: np.random.Generator,
    X: np.ndarray,
    Y: np.ndarray,
    zmm: np.ndarray,
    mediastinum: np.ndarray,
    radius_range: tuple[float, float],
) -> np.ndarray:
    """Irregular multiscale lesion: a union of blobs of several scales, roughened by noise."""
    r = rng.uniform(*radius_range)
    # Centre on a random mediastinal voxel in the upper two thirds (where hematomas sit).
    zrel = zmm / max(zmm[-1], 1e-6)
    candidates = np.argwhere(mediastinum & ((zrel > 0.3) & (zrel < 0.85))[None, None, :])
    if len(candidates) == 0:
        candidates = np.argwhere(mediastinum)
    ix, iy, iz = candidates[rng.integers(len(candidates))]
    centre = (X[ix, iy], Y[ix, iy], zmm[iz])
    field = np.zeros(mediastinum.shape)
    Z = np.broadcast_to(zmm[None, None, :], mediastinum.shape)
    Xb, Yb = X[:, :, None], Y[:, :, None]
    for scale, count in ((1.0, 1), (0.55, 3), (0.3, 5)):
        for _ in range(count):
            off = rng.normal(0, 0.6 * r, size=3) if scale < 1 else np.zeros(3)
            rr = r * scale * rng.uniform(0.8, 1.2)
            d2 = ((Xb - centre[0] - off[0]) ** 2 + (Yb - centre[1] - off[1]) ** 2) / rr**2 + (
                (Z - centre[2] - off[2]) / (1.3 * rr)
            ) ** 2
            field = np.maximum(field, np.exp(-d2))
    field *= 1.0 + 0.35 * _smooth_noise(rng, field.shape, 2)
    lesion = (field > 0.5) & mediastinum
    if lesion.sum() < 3:  # the lesion must exist: fall back to the mediastinum voxels nearest the centre
        d = (Xb - centre[0]) ** 2 + (Yb - centre[1]) ** 2 + (Z - centre[2]) ** 2
        d = np.where(mediastinum, d, np.inf)
        lesion = d <= np.sort(d, axis=None)[min(5, max(int(np.isfinite(d).sum()) - 1, 0))]
    return lesion.astype(np.uint8)


def write_phantom_cohort(spec: PhantomSpec, out_dir: str | Path, progress: bool = False) -> Path:
    """Write the cohort as NIfTI (``images/``, ``masks/``) plus ``labels.csv``; returns the manifest.

    The manifest has columns ``subject, image, mask, label, split, tvr, tvr_class``. A
    ``phantom.json`` next to it records the spec so the cohort can be identified and redrawn.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([spec.seed, 10**6]).permutation(spec.n_subjects)
    positives = {
        int(i): list(TVR_CLASSES)[k % len(TVR_CLASSES)] for k, i in enumerate(sorted(order[: spec.n_positive]))
    }
    affine = np.diag([*spec.spacing, 1.0])
    rows = []
    indices = range(spec.n_subjects)
    if progress:
        from rich.markup import escape
        from rich.progress import track

        # The folder name is the user's: escaped, so `runs[old]` is not read as Rich markup.
        indices = track(indices, description=f"phantom cohort -> {escape(str(out))}")  # type: ignore[assignment]
    for i in indices:
        subj = draw_subject(spec, i, int(i in positives), positives.get(i))
        img_path = Path("images") / f"{subj.subject}.nii.gz"
        msk_path = Path("masks") / f"{subj.subject}.nii.gz"
        for data, rel in ((subj.image, img_path), (subj.mask, msk_path)):
            nii = nib.Nifti1Image(data, affine)
            nii.header.set_xyzt_units("mm")
            nii.header.set_qform(affine, code=1)
            nii.header.set_sform(affine, code=1)
            nib.save(nii, str(out / rel))
        rows.append(
            {
                "subject": subj.subject,
                "image": str(img_path),
                "mask": str(msk_path),
                "label": subj.label,
                "split": "",
                "tvr": f"{subj.tvr:.6g}",
                "tvr_class": subj.tvr_class,
            }
        )
    manifest = out / "labels.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "phantom.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")
    log.info("wrote %d phantom subjects (%d positive) to %s", spec.n_subjects, spec.n_positive, out)
    return manifest
