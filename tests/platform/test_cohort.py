"""Phantom generator, manifest reading, `cohort check` on broken fixtures, preprocessing, cache."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from salient.platform.cohort import SliceCache, check_cohort, read_manifest, write_phantom_cohort
from salient.platform.cohort.phantom import TVR_CLASSES, draw_subject
from salient.platform.errors import CohortError
from salient.platform.study.schema import PhantomSpec, PreprocessSpec

from tests.conftest import SMALL_PHANTOM
from tests.platform.cohort_layouts import load_nifti


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_phantom_is_deterministic_by_seed(tmp_path: Path, phantom_dir: Path) -> None:
    again = write_phantom_cohort(SMALL_PHANTOM, tmp_path / "again").parent
    assert _digest(again) == _digest(phantom_dir)  # bit for bit, NIfTI and manifest
    other = draw_subject(SMALL_PHANTOM.model_copy(update={"seed": 4}), 0, 1, "small")
    assert not np.array_equal(other.image, draw_subject(SMALL_PHANTOM, 0, 1, "small").image)


def test_phantom_anatomy_in_hounsfield_units() -> None:
    subj = draw_subject(PhantomSpec(), 1, 1, "large")
    img = subj.image.astype(float)
    assert img.min() < -900  # air and lungs
    assert (img > 200).mean() > 0.001  # contrast-enhanced aorta and bone
    lesion = img[subj.mask.astype(bool)]
    assert 30 < np.median(lesion) < 100  # hematoma ~65 HU
    assert subj.mask.sum() > 20


def test_phantom_tvr_spread_and_manifest(phantom_dir: Path) -> None:
    manifest = read_manifest(phantom_dir / "labels.csv")
    assert len(manifest.records) == SMALL_PHANTOM.n_subjects
    assert manifest.n_positive == SMALL_PHANTOM.n_positive
    pos = [r for r in manifest.records if r.label == 1]
    tvr: dict[str, list[float]] = {r.extra["tvr_class"]: [] for r in pos}
    for r in pos:
        tvr[r.extra["tvr_class"]].append(r.tvr)
        assert r.tvr is not None and r.tvr > 0
    assert set(tvr) == set(TVR_CLASSES)
    means = [np.mean(tvr[c]) for c in ("small", "middle", "large")]
    assert means[0] < means[1] < means[2] and means[2] / means[0] > 3
    assert all(r.tvr == 0 for r in manifest.records if r.label == 0)


def test_clean_phantom_passes_check(phantom_dir: Path) -> None:
    report = check_cohort(phantom_dir)
    assert report.ok, report.problems
    assert report.n_subjects == 12 and report.n_positive == 6


@pytest.fixture()
def broken_cohort(tmp_path: Path, phantom_dir: Path) -> Path:
    """A copy of the phantom with one deliberate fault per subject."""
    root = tmp_path / "broken"
    shutil.copytree(phantom_dir, root)
    rows = (root / "labels.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    subj = {line.split(",")[0]: line for line in body}
    names = sorted(subj)
    pos = [n for n in names if subj[n].split(",")[3] == "1"]
    neg = [n for n in names if subj[n].split(",")[3] == "0"]
    img = lambda n: root / "images" / f"{n}.nii.gz"  # noqa: E731
    msk = lambda n: root / "masks" / f"{n}.nii.gz"  # noqa: E731
    # 1. truncated (corrupt) image
    data = img(neg[0]).read_bytes()
    img(neg[0]).write_bytes(data[: len(data) // 3])
    # 2. not NIfTI at all
    img(neg[1]).write_bytes(gzip.compress(b"hello, not an image"))
    # 3. missing mask file
    msk(neg[2]).unlink()
    # 4. mask with the wrong shape
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), str(msk(neg[3])))
    # 5. NaN voxels in a float image
    a = load_nifti(img(neg[4]))
    f = np.asarray(a.dataobj).astype(np.float32)
    f[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(f, a.affine), str(img(neg[4])))
    # 6. positive with an empty mask
    m = load_nifti(msk(pos[0]))
    nib.save(nib.Nifti1Image(np.zeros(m.shape, np.uint8), m.affine), str(msk(pos[0])))
    # 7. mask shifted by 5 mm (affine mismatch) and with a label 2
    m = load_nifti(msk(pos[1]))
    aff = m.affine.copy()
    aff[0, 3] += 5.0
    mm = np.asarray(m.dataobj).copy()
    mm[mm == 1] = 2
    nib.save(nib.Nifti1Image(mm, aff), str(msk(pos[1])))
    # 8. negative with a lesion, 9. 2D image
    m = load_nifti(msk(neg[5]))
    mm = np.zeros(m.shape, np.uint8)
    mm[5, 5, 5] = 1
    nib.save(nib.Nifti1Image(mm, m.affine), str(msk(neg[5])))
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), str(img(pos[2])))
    # 10. duplicate subject row
    (root / "labels.csv").write_text("\n".join([header, *body, body[-1]]) + "\n")
    return root


def test_cohort_check_lists_every_problem(broken_cohort: Path) -> None:
    report = check_cohort(broken_cohort)
    kinds = sorted(p.kind for p in report.problems)
    text = "\n".join(map(str, report.problems))
    expected = {
        "bad image": 3,  # truncated, not NIfTI, 2D
        "missing mask": 1,
        "shape mismatch": 1,
        "non-finite voxels": 1,
        "empty mask": 2,
        "affine mismatch": 1,
        "mask labels": 1,
        "non-empty mask": 1,
        "manifest": 1,
    }
    # pos[1]'s lesion became label 2, so its mask is also empty of label 1 -> a second "empty mask"
    for kind, count in expected.items():
        assert kinds.count(kind) == count, (kind, text)
    assert "duplicate subject" in text and "2D" in text and "NaN" in text


def test_read_manifest_rejects_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("subject,image,label\na,a.nii,1\n")
    with pytest.raises(CohortError, match=r"missing column\(s\) \['mask'\]"):
        read_manifest(tmp_path / "labels.csv")


def test_manifest_split_marks_are_read_as_the_splits_honour_them(tmp_path: Path) -> None:
    """Every mark salient.platform.splits honours can be written in a manifest (``validation``
    was refused by the reader although the split code takes it); anything else is refused."""
    from salient.platform.splits import make_split

    rows = ["subject,image,mask,label,split"]
    marks = ["test", "test", "validation", "validation", "train", "train", "train", "", "unlabeled"]
    for i, mark in enumerate(marks):
        rows.append(f"s{i},s{i}.nii.gz,s{i}_m.nii.gz,{i % 2},{mark}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    records = read_manifest(tmp_path / "labels.csv").records
    assert [r.split for r in records] == marks
    split = make_split(records, 1, 0, 0, 0.3, 0.3)
    assert set(split.test) == {"s0", "s1"} and set(split.validation) == {"s2", "s3"}
    (tmp_path / "labels.csv").write_text("\n".join([*rows[:2], "x,x.nii.gz,x_m.nii.gz,1,valid"]) + "\n")
    with pytest.raises(
        CohortError, match=r"split must be empty or one of \['train', 'validation', 'test', 'unlabeled'\], got 'valid'"
    ):
        read_manifest(tmp_path / "labels.csv")


def test_preprocessing_geometry_and_cache(tmp_path: Path, phantom_dir: Path) -> None:
    manifest = read_manifest(phantom_dir / "labels.csv")
    spec = PreprocessSpec(spacing=(4.0, 4.0, 10.0), hu_window=(-160, 240), roi=(40, 36, 10))
    cache = SliceCache(tmp_path / "cache", manifest, spec)
    rec = next(r for r in manifest.records if r.label == 1)
    assert not cache.has(rec.subject)
    subj = cache.get(rec)
    assert subj.image.shape == (10, 36, 40)  # (Z, H=y, W=x)
    assert subj.image.dtype == np.float32 and subj.mask.dtype == np.uint8
    # the window is clipped at both ends: air / lung (< -160 HU) and bone (> 240 HU) saturate
    assert subj.image.min() == -1.0 and subj.image.max() == 1.0
    assert set(np.unique(subj.mask)) <= {0, 1} and subj.mask.sum() > 0
    # resampled from 8 mm to 4 mm in-plane: lesion area grows ~4x per slice
    raw = np.asarray(load_nifti(rec.mask).dataobj)
    assert 2.0 < subj.mask.sum() / raw.sum() < 6.0
    # lesion voxels fall in the soft-tissue window: hematoma (65 HU) -> about (65+160)/400*2-1 = 0.125
    assert abs(float(np.median(subj.image[subj.mask.astype(bool)])) - 0.125) < 0.15
    # anterior is up: the spine (bright, posterior) sits in the lower half of the slice
    mid = subj.image[5]
    bright_rows = np.nonzero((mid > 0.99).any(axis=1))[0]
    assert bright_rows.mean() > mid.shape[0] / 2
    assert cache.has(rec.subject)
    again = cache.get(rec)  # read back from the cache, identical
    assert np.array_equal(again.image, subj.image) and np.array_equal(again.mask, subj.mask)
    assert not list(cache.dir.glob("*.tmp.npz"))


def test_run_on_a_broken_cohort_fails_before_anything_is_written(
    broken_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from salient.platform.cli import main

    out = tmp_path / "out"
    study = {
        "name": "broken",
        "cohort": {"source": "manifest", "manifest": str(broken_cohort / "labels.csv")},
        "search_space": {"dose": {"grid": [0.0]}, "seed_size": {"grid": [2]}},
        "output_dir": str(out),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["run", str(path)]) == 2
    assert "duplicate subject" in capsys.readouterr().err  # the manifest is read strictly first
    labels = broken_cohort / "labels.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines[:-1]) + "\n")  # drop the duplicate row: the NIfTI faults remain
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "problem(s); nothing was trained" in err and "unreadable or corrupt NIfTI" in err
    assert "platform cohort check" in err and "... and 1 more" in err  # 11 problems, 10 listed
    assert not (out / "mlflow.db").exists() and not (out / "stage_cache").exists()
