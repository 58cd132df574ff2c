"""`platform synth --format nnunet` (#17 item 2) and `synth --cohort` with nnU-Net / MSD dataset folders.

The dataset is checked against hand-written expectations (case names, dataset.json keys, the
inverse of the preprocessing axis order written out here, HU window arithmetic) and by nnunetv2's
own ``verify_dataset_integrity`` when nnunetv2 is importable (installed with --no-deps; see
tests/platform/test_cohort_nnunet_export.py). The generator is the tiny one of
tests/platform/tiny_generator.py (trained once per session).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pytest
from salient.platform.cli import main
from salient.platform.cohort.manifest import read_manifest
from salient.platform.cohort.prepare import load_cohort
from salient.platform.study.schema import CohortSpec

from tests.conftest import REPO
from tests.platform.cohort_layouts import LESION, write_msd_layout, write_nnunet_layout
from tests.platform.tiny_generator import tiny_generator

pytestmark = pytest.mark.slow

NNUNET_MODULES = ("nnunetv2", "SimpleITK", "batchgenerators", "acvl_utils", "blosc2")
_missing = [m for m in NNUNET_MODULES if importlib.util.find_spec(m) is None]
needs_nnunetv2 = pytest.mark.skipif(
    bool(_missing),
    reason=f"nnunetv2's own tools are not importable here (missing {_missing}); "
    "install: pip install --no-deps nnunetv2==2.8.1 acvl_utils==0.2.6 batchgenerators==0.25.5 "
    "&& pip install SimpleITK scikit-image tifffile blosc2 (README, 'nnU-Net and MSD cohorts')",
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_generator(tmp_path_factory)


def _meta(pool: Path) -> dict:
    return cast(dict, json.loads((pool / "meta.json").read_text())["generator"])


def _data(path: Path) -> np.ndarray:
    return np.asarray(cast(nib.Nifti1Image, nib.load(str(path))).dataobj)


def _zhw(xyz: np.ndarray) -> np.ndarray:
    """(X, Y, Z) RAS -> preprocessing's (Z, H, W): Z first, rows anterior->posterior (Y flipped)."""
    return np.transpose(xyz, (2, 1, 0))[:, ::-1, :]


def _token(subject: str) -> str:
    return hashlib.sha256(subject.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def dataset(pool: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 synthetic cases + the generator's 2 training subjects, as Dataset042_Tiny."""
    root = tmp_path_factory.mktemp("nnunet") / "nnUNet_raw"
    args = ["synth", "--generator", str(pool), "--masks", "3", "--seed", "5", "--format", "nnunet"]
    rc = main([*args, "--dataset-id", "42", "--dataset-name", "Tiny", "--include-real", str(root)])
    assert rc == 0
    return root / "Dataset042_Tiny"


def test_nnunet_dataset_layout_and_dataset_json(dataset: Path, pool: Path) -> None:
    syn = [f"SYN_000{i}" for i in (1, 2, 3)]
    real = ["REAL_0001", "REAL_0002"]  # the generator's two training (seed) subjects
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in syn + real)
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == sorted(f"{c}.nii.gz" for c in syn + real)
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["numTraining"] == 5 and meta["file_ending"] == ".nii.gz"
    salient = meta["salient"]
    assert salient["synthetic_cases"] == 3 and salient["real_cases"] == 2 and salient["seed"] == 5
    assert sorted(salient["synthetic_case_facts"]) == syn
    hosts = {_token(h) for h in _meta(pool)["hosts"]}
    assert {f["host_sha256"] for f in salient["synthetic_case_facts"].values()} <= hosts
    # Real subjects are never named: not in file names, not in dataset.json.
    text = (dataset / "dataset.json").read_text()
    assert "phantom_" not in text and not any("phantom" in p.name for p in dataset.rglob("*"))
    for case in syn + real:
        image = cast(nib.Nifti1Image, nib.load(str(dataset / "imagesTr" / f"{case}_0000.nii.gz")))
        label = _data(dataset / "labelsTr" / f"{case}.nii.gz")
        assert image.shape == label.shape == (32, 32, 8)
        assert np.allclose(image.header.get_zooms(), (8.0, 8.0, 10.0))
        assert set(np.unique(label).tolist()) <= {0, 1}
        hu = np.asarray(image.dataobj)
        assert hu.min() >= -160.0 and hu.max() <= 240.0


def test_real_cases_are_the_generators_training_subjects(dataset: Path, pool: Path) -> None:
    record = _meta(pool)
    spec = CohortSpec.model_validate(record["cohort"])
    cohort = load_cohort(spec, pool.parent.parent.parent)  # the study's output folder: cached, nothing recomputed
    for n, subject in enumerate(record["trained_on"], start=1):
        pre = cohort.subjects[subject]
        label = _zhw(_data(dataset / "labelsTr" / f"REAL_{n:04d}.nii.gz"))
        assert np.array_equal(label, pre.mask) and label.any()
        hu = _zhw(_data(dataset / "imagesTr" / f"REAL_{n:04d}_0000.nii.gz"))
        expected = (np.clip(pre.image, -1, 1) + 1) / 2 * 400.0 - 160.0  # the [-160, 240] HU window
        assert np.allclose(hu, expected, atol=1e-3)


def test_nnunet_cases_are_the_cohort_formats_subjects(dataset: Path, pool: Path, tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    assert main(["synth", "--generator", str(pool), "--masks", "3", "--seed", "5", str(out)]) == 0
    for i in range(3):
        case = f"SYN_{i + 1:04d}"
        assert np.array_equal(
            _data(dataset / "imagesTr" / f"{case}_0000.nii.gz"), _data(out / "images" / f"synth_{i:04d}.nii.gz")
        )
        assert np.array_equal(
            _data(dataset / "labelsTr" / f"{case}.nii.gz"), _data(out / "masks" / f"synth_{i:04d}.nii.gz")
        )
    with (out / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    facts = json.loads((dataset / "dataset.json").read_text())["salient"]["synthetic_case_facts"]
    assert [r["host_sha256"] for r in rows] == [facts[f"SYN_{i + 1:04d}"]["host_sha256"] for i in range(3)]


def _run_nnunetv2(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A child process: nnunetv2.paths reads nnUNet_raw at import time, and its pools spawn.
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


@needs_nnunetv2
def test_nnunet_dataset_passes_nnunetv2_verify_dataset_integrity(dataset: Path, tmp_path: Path) -> None:
    verify = """
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(sys.argv[1], num_processes=1)
"""
    done = _run_nnunetv2(verify, tmp_path, str(dataset))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verify_dataset_integrity Done" in done.stdout
    assert "Warning" not in done.stdout and "Error" not in done.stdout  # no spacing/origin/direction mismatch


def test_nnunet_arguments_are_refused_before_any_work(
    pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "raw"
    (root / "Dataset042_Other").mkdir(parents=True)
    base = ["synth", "--generator", str(pool), "--masks", "1"]
    cases = [
        ([*base, "--format", "nnunet", "--dataset-id", "42", str(root)], "dataset id 42 is already used"),
        ([*base, "--format", "nnunet", str(root)], "needs --dataset-id"),
        ([*base, "--format", "nnunet", "--dataset-id", "7", "--dataset-name", "a_b", str(root)], "--dataset-name"),
        ([*base, "--include-real", str(tmp_path / "c")], "--include-real apply to --format nnunet only"),
        ([*base, "--dataset-id", "3", str(tmp_path / "c")], "--dataset-id apply to --format nnunet only"),
        ([*base, "--lesion-label", "2", str(tmp_path / "c")], "--lesion-label and --channel apply to an nnU-Net"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert sorted(p.name for p in root.iterdir()) == ["Dataset042_Other"] and not (tmp_path / "c").exists()
    with pytest.raises(SystemExit) as bad_id:  # argparse range check
        main([*base, "--format", "nnunet", "--dataset-id", "1000", str(root)])
    assert bad_id.value.code == 2 and "[1, 999]" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["nnunet", "msd"])
def test_synth_takes_healthy_hosts_from_a_dataset_folder(
    layout: str, pool: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every label map has an 'anatomy' label (1) besides the lesion (2): healthy hosts are the
    cases without label 2, which only a reader that honours --lesion-label finds."""
    if layout == "nnunet":
        folder = write_nnunet_layout(phantom_dir, tmp_path / "Dataset501_Phantom")
        label = str(LESION)
    else:
        folder = write_msd_layout(phantom_dir, tmp_path / "Task09_Phantom")
        label = "hematoma"  # by name, from dataset.json labels
    negatives = {r.subject for r in read_manifest(phantom_dir / "labels.csv").records if r.label == 0}
    out = tmp_path / "synth"
    argv = ["synth", "--generator", str(pool), "--masks", "3", "--cohort", str(folder), "--lesion-label", label]
    assert main([*argv, "--channel", "0", str(out)]) == 0, capsys.readouterr().err
    with (out / "labels.csv").open() as fh:
        hosts = {r["host_sha256"] for r in csv.DictReader(fh)}
    assert hosts and hosts <= {_token(s) for s in negatives}
    assert json.loads((out / "synth.json").read_text())["hosts"] == f"cohort {folder}"
    # Two foreground labels and no --lesion-label: which one is the lesion is not guessed.
    ambiguous = main(["synth", "--generator", str(pool), "--masks", "1", "--cohort", str(folder), str(tmp_path / "x")])
    assert ambiguous == 2 and not (tmp_path / "x").exists()
    assert "say which one is the lesion" in capsys.readouterr().err
