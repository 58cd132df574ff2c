"""The nnU-Net v2 dataset writer (#17 item 2), and nnunetv2's own tools on our datasets (#17 item 1).

nnunetv2 is installed without its dependencies (its pins would replace torch 2.13.0; see the
README): the two tests that run its ``verify_dataset_integrity`` and ``convert_msd_dataset`` are
skipped only when it (or SimpleITK/batchgenerators/acvl_utils, which those functions import) is
missing. They run nnunetv2 in a child process because ``nnunetv2.paths`` reads ``nnUNet_raw``
from the environment at import time, and its multiprocessing pools spawn.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from salient.platform.cohort.check import check_cohort
from salient.platform.cohort.manifest import read_manifest
from salient.platform.cohort.nnunet_export import NnunetCase, case_name, write_nnunet_dataset
from salient.platform.cohort.prepare import load_cohort
from salient.platform.errors import CohortError
from salient.platform.study.schema import CohortSpec, PreprocessSpec

from tests.conftest import REPO
from tests.platform.cohort_layouts import LESION, load_nifti, write_msd_layout

CT = {0: "CT"}
LABELS = {"background": 0, "hematoma": 1}
NNUNET_MODULES = ("nnunetv2", "SimpleITK", "batchgenerators", "acvl_utils", "blosc2")
_missing = [m for m in NNUNET_MODULES if importlib.util.find_spec(m) is None]
needs_nnunetv2 = pytest.mark.skipif(
    bool(_missing),
    reason=f"nnunetv2's own tools are not importable here (missing {_missing}); "
    "install: pip install --no-deps nnunetv2==2.8.1 acvl_utils==0.2.6 batchgenerators==0.25.5 "
    "&& pip install SimpleITK scikit-image tifffile blosc2 (README, 'nnU-Net and MSD cohorts')",
)


def _cases(phantom_dir: Path) -> list[NnunetCase]:
    """Even subjects as synthetic cases given in memory, odd ones as real subjects given as files."""
    cases = []
    for i, r in enumerate(read_manifest(phantom_dir / "labels.csv").records):
        if i % 2:
            cases.append(NnunetCase((r.image,), r.mask, synthetic=False))
        else:
            img, msk = load_nifti(r.image), load_nifti(r.mask)
            cases.append(
                NnunetCase(
                    (nib.Nifti1Image(np.asarray(img.dataobj), img.affine),),
                    nib.Nifti1Image(np.asarray(msk.dataobj), msk.affine),
                    synthetic=True,
                )
            )
    return cases


@pytest.fixture(scope="module")
def exported(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nnunet_raw")
    return write_nnunet_dataset(root, 42, "SynthPhantom", _cases(phantom_dir), CT, LABELS, description="test").path


def test_layout_names_and_dataset_json(exported: Path, phantom_dir: Path) -> None:
    assert exported.name == "Dataset042_SynthPhantom"
    meta = json.loads((exported / "dataset.json").read_text())
    assert list(meta)[:4] == ["channel_names", "labels", "numTraining", "file_ending"]  # nnU-Net's order
    assert meta["channel_names"] == {"0": "CT"} and meta["labels"] == {"background": 0, "hematoma": 1}
    assert meta["numTraining"] == 12 and meta["file_ending"] == ".nii.gz"
    assert meta["salient"]["synthetic_cases"] == 6 and meta["salient"]["real_cases"] == 6
    ids = [f"SYN_{i:04d}" for i in range(1, 7)] + [f"REAL_{i:04d}" for i in range(1, 7)]
    assert sorted(p.name for p in (exported / "imagesTr").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in ids)
    assert sorted(p.name for p in (exported / "labelsTr").iterdir()) == sorted(f"{c}.nii.gz" for c in ids)
    assert not list(exported.parent.glob(".Dataset*"))  # no temporary folder left behind
    # Voxels as given: REAL_0001 is the second phantom subject (a file), SYN_0002 the third (in memory).
    records = read_manifest(phantom_dir / "labels.csv").records
    for case, rec in (("REAL_0001", records[1]), ("SYN_0002", records[2])):
        written = np.asarray(load_nifti(exported / "imagesTr" / f"{case}_0000.nii.gz").dataobj)
        assert np.array_equal(written, np.asarray(load_nifti(rec.image).dataobj)), case
        label = np.asarray(load_nifti(exported / "labelsTr" / f"{case}.nii.gz").dataobj)
        assert np.array_equal(label, np.asarray(load_nifti(rec.mask).dataobj)), case


def test_export_reads_back_as_an_nnunet_cohort(exported: Path) -> None:
    report = check_cohort(exported)  # one foreground label: no --lesion-label needed
    assert report.ok, report.problems
    assert (report.source, report.n_subjects, report.n_positive) == ("nnunet", 12, 6)


def test_case_names() -> None:
    assert (case_name(True, 1), case_name(False, 12)) == ("SYN_0001", "REAL_0012")
    with pytest.raises(ValueError, match="must be >= 1"):
        case_name(True, 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset_id": 0}, "dataset_id must be an integer from 1 to 999"),
        ({"dataset_id": 1000}, "dataset_id must be an integer from 1 to 999"),
        ({"name": "My_Data"}, "dataset name must be"),
        ({"labels": {"background": 0, "hematoma": 2}}, "consecutive integers"),
        ({"labels": {"bg": 0, "hematoma": 1}}, "'background' to 0"),
        ({"channel_names": {1: "CT"}}, "channel_names must map 0..n-1"),
        ({"channel_names": {0: "CT", 1: "PET"}}, r"1 image\(s\) given, channel_names declares 2"),
        ({"labels": {"background": 0}}, r"label values \[1\] are not among labels \[0\]"),
    ],
)
def test_bad_arguments_are_refused_and_leave_nothing(
    kwargs: dict, match: str, phantom_dir: Path, tmp_path: Path
) -> None:
    args = {"dataset_id": 7, "name": "Phantom", "channel_names": CT, "labels": LABELS, **kwargs}
    with pytest.raises(CohortError, match=match):
        write_nnunet_dataset(tmp_path, cases=_cases(phantom_dir)[:3], **args)
    assert not list(tmp_path.iterdir())  # neither the dataset nor a temporary folder


def test_a_case_on_another_grid_is_refused_after_others_were_written(phantom_dir: Path, tmp_path: Path) -> None:
    cases = _cases(phantom_dir)[:3]
    image = load_nifti(read_manifest(phantom_dir / "labels.csv").records[0].image)
    shifted = image.affine.copy()
    shifted[0, 3] += 4.0
    label = nib.Nifti1Image(np.zeros(image.shape, np.uint8), shifted)
    bad = NnunetCase((nib.Nifti1Image(np.asarray(image.dataobj), image.affine),), label, synthetic=True)
    with pytest.raises(CohortError, match="case SYN_0003: channel 0 and the label map are on different grids"):
        write_nnunet_dataset(tmp_path, 7, "Phantom", [*cases, bad], CT, LABELS)
    assert not list(tmp_path.iterdir())


def test_existing_target_and_taken_id_are_refused(phantom_dir: Path, tmp_path: Path) -> None:
    cases = _cases(phantom_dir)[:2]
    (tmp_path / "Dataset007_Phantom").mkdir()  # an empty target is fine
    assert write_nnunet_dataset(tmp_path, 7, "Phantom", cases, CT, LABELS).path == tmp_path / "Dataset007_Phantom"
    with pytest.raises(CohortError, match="exists and is not an empty folder"):
        write_nnunet_dataset(tmp_path, 7, "Phantom", cases, CT, LABELS)
    with pytest.raises(CohortError, match=r"dataset id 7 is already used by \['Dataset007_Phantom'\]"):
        write_nnunet_dataset(tmp_path, 7, "Other", cases, CT, LABELS)


def _run_nnunetv2(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "nnunet_job.py"
    path.write_text(f"import sys\nif __name__ == '__main__':\n{script}")
    env = {
        **os.environ,
        "nnUNet_raw": str(tmp_path / "nnUNet_raw"),
        "nnUNet_preprocessed": str(tmp_path / "nnUNet_preprocessed"),
        "nnUNet_results": str(tmp_path / "nnUNet_results"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
    }
    return subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )


VERIFY = """
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(sys.argv[1], num_processes=1)
"""


@needs_nnunetv2
def test_export_passes_nnunetv2_verify_dataset_integrity(exported: Path, tmp_path: Path) -> None:
    done = _run_nnunetv2(VERIFY, tmp_path, str(exported))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verify_dataset_integrity Done" in done.stdout
    assert "Warning" not in done.stdout and "Error" not in done.stdout  # no affine/origin/direction mismatch
    # Control: the same check refuses a label value dataset.json does not declare.
    broken = tmp_path / "nnUNet_raw" / exported.name
    broken.parent.mkdir(parents=True)
    shutil.copytree(exported, broken)
    label = broken / "labelsTr" / "SYN_0001.nii.gz"
    lab = load_nifti(label)
    data = np.asarray(lab.dataobj).copy()
    data[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(data, lab.affine, lab.header), str(label))
    done = _run_nnunetv2(VERIFY, tmp_path, str(broken))
    assert done.returncode != 0 and "Unexpected labels found" in done.stdout


@needs_nnunetv2
def test_msd_converted_by_nnunetv2_reads_back_as_nnunet(phantom_dir: Path, tmp_path: Path) -> None:
    source = write_msd_layout(phantom_dir, tmp_path / "msd" / "Task09_Phantom")
    convert = """
    from nnunetv2.dataset_conversion.convert_MSD_dataset import convert_msd_dataset
    convert_msd_dataset(sys.argv[1], overwrite_target_id=509, num_processes=1)
"""
    done = _run_nnunetv2(convert, tmp_path, str(source))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    converted = tmp_path / "nnUNet_raw" / "Dataset509_Phantom"
    assert sorted(p.name for p in (converted / "imagesTr").iterdir())[:2] == [
        "phantom_0000_0000.nii.gz",
        "phantom_0000_0001.nii.gz",
    ]  # nnunetv2 split each 4D image into one file per channel
    prep = PreprocessSpec(spacing=(8.0, 8.0, 10.0), roi=(40, 40, 12))
    ours = load_cohort(
        CohortSpec(source="nnunet", dataset=converted, lesion_label="hematoma", preprocessing=prep), tmp_path / "a"
    )
    reference = load_cohort(
        CohortSpec(source="manifest", manifest=phantom_dir / "labels.csv", preprocessing=prep), tmp_path / "b"
    )
    assert {r.subject: r.label for r in ours.records} == {r.subject: r.label for r in reference.records}
    assert all(r.lesion_label == LESION for r in ours.records)
    for subject, ref in reference.subjects.items():
        assert np.array_equal(ours.subjects[subject].image, ref.image), subject
        assert np.array_equal(ours.subjects[subject].mask, ref.mask), subject
