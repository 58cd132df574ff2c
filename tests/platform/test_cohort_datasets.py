"""nnU-Net v2 and MSD cohorts: read back the phantom written in both layouts, and check broken ones.

The reference is the phantom's own manifest cohort: the same subjects, the same labels, and -
after preprocessing - the same image and mask arrays, although the datasets store the lesion as
label 2 of a multi-label map (with an "anatomy" label 1) and the MSD images as 4D (CT + a second
channel).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from salient.platform.cohort import check_cohort, read_manifest
from salient.platform.cohort.dataset import derived_manifest, detect_source, index_dataset, scan_dataset
from salient.platform.cohort.prepare import LoadedCohort, load_cohort
from salient.platform.errors import CohortError
from salient.platform.study.schema import CohortSpec, PreprocessSpec

from tests.platform.cohort_layouts import ANATOMY, LESION, label_map, load_nifti, write_msd_layout, write_nnunet_layout

PREP = PreprocessSpec(spacing=(8.0, 8.0, 10.0), roi=(40, 40, 12))


@pytest.fixture(scope="module")
def layouts(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {
        "nnunet": write_nnunet_layout(phantom_dir, root / "Dataset501_Phantom"),
        "msd": write_msd_layout(phantom_dir, root / "Task09_Phantom"),
    }


@pytest.fixture(scope="module")
def reference(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedCohort:
    spec = CohortSpec(source="manifest", manifest=phantom_dir / "labels.csv", preprocessing=PREP)
    return load_cohort(spec, tmp_path_factory.mktemp("ref_out"))


def test_layouts_are_detected(layouts: dict[str, Path], phantom_dir: Path) -> None:
    assert detect_source(layouts["nnunet"]) == "nnunet"
    assert detect_source(layouts["nnunet"] / "dataset.json") == "nnunet"
    assert detect_source(layouts["msd"]) == "msd"
    assert detect_source(phantom_dir) == "manifest"
    assert detect_source(phantom_dir / "labels.csv") == "manifest"


@pytest.mark.parametrize(
    ("source", "settings"),
    [
        ("nnunet", {"lesion_label": LESION}),
        ("nnunet", {"lesion_label": "hematoma"}),  # by name from dataset.json labels
        ("msd", {"lesion_label": LESION}),
        ("msd", {"lesion_label": "Hematoma", "channel": "ct"}),  # names match case-insensitively
    ],
)
def test_dataset_cohort_equals_the_manifest_cohort(
    source: str,
    settings: dict[str, Any],
    layouts: dict[str, Path],
    reference: LoadedCohort,
    tmp_path: Path,
) -> None:
    spec = CohortSpec(source=source, dataset=layouts[source], preprocessing=PREP, **settings)
    loaded = load_cohort(spec, tmp_path)
    by_subject = {r.subject: r for r in reference.records}
    assert {r.subject for r in loaded.records} == set(by_subject)
    for r in loaded.records:
        assert r.label == by_subject[r.subject].label, r.subject
        assert r.lesion_label == LESION
        assert r.channel == (0 if source == "msd" else None)
        ours, ref = loaded.subjects[r.subject], reference.subjects[r.subject]
        assert np.array_equal(ours.image, ref.image), r.subject
        assert np.array_equal(ours.mask, ref.mask), r.subject
    assert sum(r.label for r in loaded.records) == 6


def test_anatomy_label_is_ignored_not_merged(layouts: dict[str, Path], phantom_dir: Path, tmp_path: Path) -> None:
    """Choosing label 1 (anatomy) gives a different cohort: the reader really selects the label."""
    ref = read_manifest(phantom_dir / "labels.csv")
    lab, _ = label_map(ref.records[0].image, ref.records[0].mask)
    assert (lab == ANATOMY).sum() > 0 and (lab == LESION).sum() >= 0
    spec = CohortSpec(source="nnunet", dataset=layouts["nnunet"], lesion_label=ANATOMY)
    records = read_manifest(derived_manifest(spec, tmp_path)).records
    assert all(r.label == 1 for r in records)  # every phantom has aorta and bone


def test_tvr_is_lesion_over_body_voxels(layouts: dict[str, Path], phantom_dir: Path, tmp_path: Path) -> None:
    spec = CohortSpec(source="nnunet", dataset=layouts["nnunet"], lesion_label=LESION)
    records = {r.subject: r for r in read_manifest(derived_manifest(spec, tmp_path)).records}
    for r in read_manifest(phantom_dir / "labels.csv").records:
        image = np.asarray(load_nifti(r.image).dataobj)
        lesion = np.asarray(load_nifti(r.mask).dataobj) == 1
        expected = lesion.sum() / (image > -500).sum()
        assert records[r.subject].tvr == pytest.approx(expected, rel=1e-5)


def test_negatives_exclude_keeps_only_positives(layouts: dict[str, Path], tmp_path: Path) -> None:
    spec = CohortSpec(source="msd", dataset=layouts["msd"], lesion_label=LESION, negatives="exclude")
    records = read_manifest(derived_manifest(spec, tmp_path)).records
    assert len(records) == 6 and all(r.label == 1 for r in records)


def test_derived_manifest_is_reused_until_a_file_changes(
    layouts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "Dataset502_Copy"
    shutil.copytree(layouts["nnunet"], data)
    spec = CohortSpec(source="nnunet", dataset=data, lesion_label=LESION)
    first = derived_manifest(spec, tmp_path / "out")
    provenance = json.loads((first.parent / "source.json").read_text())
    assert provenance["lesion_label_name"] == "hematoma" and provenance["ignored_labels"] == {"1": "anatomy"}

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was scanned again")

    monkeypatch.setattr("salient.platform.cohort.dataset.scan_dataset", no_scan)
    assert derived_manifest(spec, tmp_path / "out") == first
    label = next((data / "labelsTr").iterdir())
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="scanned again"):
        derived_manifest(spec, tmp_path / "out")


def test_lesion_label_must_be_chosen_when_several_exist(layouts: dict[str, Path]) -> None:
    report = check_cohort(layouts["nnunet"])
    assert [p.kind for p in report.problems] == ["lesion label"]
    assert "1='anatomy', 2='hematoma'" in report.problems[0].detail
    report = check_cohort(layouts["msd"], lesion_label="tumour")
    assert "no label named 'tumour'" in report.problems[0].detail


def test_clean_layouts_pass_check(layouts: dict[str, Path]) -> None:
    for source in ("nnunet", "msd"):
        report = check_cohort(layouts[source], lesion_label=LESION)
        assert report.ok, report.problems
        assert (report.source, report.n_subjects, report.n_positive) == (source, 12, 6)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_nnunet_check_lists_every_problem(layouts: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(layouts["nnunet"], tmp_path / "Dataset503_Broken")
    images, labels = root / "imagesTr", root / "labelsTr"
    cases = sorted(p.name[: -len(".nii.gz")] for p in labels.iterdir())
    meta = json.loads((root / "dataset.json").read_text())
    del meta["file_ending"]  # 1. a required key missing
    (root / "dataset.json").write_text(json.dumps(meta))
    (labels / f"{cases[0]}.nii.gz").unlink()  # 2. an image without its label
    (images / f"{cases[1]}_0000.nii.gz").unlink()  # 3. a label without its image
    shutil.copyfile(images / f"{cases[2]}_0000.nii.gz", images / f"{cases[2]}_0001.nii.gz")  # 4. channel count
    data = (labels / f"{cases[3]}.nii.gz").read_bytes()
    (labels / f"{cases[3]}.nii.gz").write_bytes(data[: len(data) // 2])  # 5. truncated label map
    lab = load_nifti(labels / f"{cases[4]}.nii.gz")  # 6. label map on another grid
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[:-2], lab.affine), str(labels / f"{cases[4]}.nii.gz"))
    img = load_nifti(images / f"{cases[5]}_0000.nii.gz")  # 7. NaN voxels
    f = np.asarray(img.dataobj).astype(np.float32)
    f[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(f, img.affine), str(images / f"{cases[5]}_0000.nii.gz"))
    lab = load_nifti(labels / f"{cases[6]}.nii.gz")  # 8. a label value dataset.json does not declare
    m = np.asarray(lab.dataobj).copy()
    m[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(m, lab.affine), str(labels / f"{cases[6]}.nii.gz"))
    (images / "stray.nii.gz").write_bytes(b"")  # 9. an image not named CASE_XXXX
    (images / f"{cases[7]}_0000.nii").write_bytes(b"")  # 10. another file ending
    (images / "._hidden_0000.nii.gz").write_bytes(b"mac")  # skipped, not a problem

    report = check_cohort(root, lesion_label=LESION)
    kinds = sorted(p.kind for p in report.problems)
    text = "\n".join(map(str, report.problems))
    expected = {
        "dataset.json": 1,
        "missing label": 1,
        "missing image": 1,
        "channel count": 1,
        "bad mask": 1,
        "shape mismatch": 1,
        "non-finite voxels": 1,
        "mask labels": 1,
        "image file name": 1,
        "file ending": 1,
        "numTraining": 1,  # 12 declared, 11 cases with images
    }
    assert kinds == sorted(k for k, n in expected.items() for _ in range(n)), text
    assert "missing key(s) ['file_ending']" in text and "truncated" in text and "[7]" in text
    assert "hidden" not in text
    assert report.n_subjects == 12 - 2 - 1  # two cases lack a file, the truncated map has no label


def test_msd_check_lists_every_problem(layouts: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(layouts["msd"], tmp_path / "Task10_Broken")
    meta = json.loads((root / "dataset.json").read_text())
    training = meta["training"]
    removed = training.pop(0)  # 1. its label in labelsTr is now in no training entry
    training.append(dict(training[0]))  # 2. duplicate case
    training[1]["image"] = "../../etc/passwd"  # 3. a path that leaves the folder
    (root / training[2]["label"]).unlink()  # 4. missing label file
    case3 = Path(training[3]["image"]).name  # 5. a 4D image with 3 channels where modality declares 2
    img = load_nifti(root / "imagesTr" / case3)
    three = np.concatenate([np.asarray(img.dataobj)] * 2, axis=-1)[..., :3]
    nib.save(nib.Nifti1Image(three, img.affine), str(root / "imagesTr" / case3))
    meta["numTraining"] = 99  # 6. numTraining disagrees
    (root / "dataset.json").write_text(json.dumps(meta))

    report = check_cohort(root, lesion_label=LESION)
    kinds = sorted(p.kind for p in report.problems)
    text = "\n".join(map(str, report.problems))
    assert kinds == sorted(
        ["missing image", "duplicate case", "bad image path", "missing label", "channel count", "numTraining"]
    ), text
    assert Path(removed["label"]).name in text and "leaves" in text and "has shape" in text


def test_msd_without_required_keys(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text('{"training": [], "labels": {"0": "background", "0": "x"}}')
    report = check_cohort(tmp_path, source="msd")
    text = "\n".join(map(str, report.problems))
    assert "missing key(s) ['modality']" in text
    assert "'0' appears more than once" in text  # json keeps the last silently; we say so


def test_run_refuses_a_broken_dataset_before_writing(layouts: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(layouts["nnunet"], tmp_path / "Dataset504_Broken")
    next((root / "labelsTr").iterdir()).unlink()
    spec = CohortSpec(source="nnunet", dataset=root, lesion_label=LESION)
    with pytest.raises(CohortError, match=r"1 problem\(s\); nothing was trained") as err:
        load_cohort(spec, tmp_path / "out")
    assert "platform cohort check" in str(err.value) and "--format nnunet --lesion-label 2" in str(err.value)
    assert not (tmp_path / "out" / "cohorts").exists() and not (tmp_path / "out" / "slice_cache").exists()


def test_index_reads_no_voxel(layouts: dict[str, Path], tmp_path: Path) -> None:
    """Indexing works from names only: a dataset of unreadable files still indexes fully."""
    root = _copy(layouts["nnunet"], tmp_path / "Dataset505_Empty")
    for p in [*(root / "imagesTr").iterdir(), *(root / "labelsTr").iterdir()]:
        p.write_bytes(b"")
    index = index_dataset(root, "nnunet", LESION)
    assert len(index.cases) == 12 and not index.problems
    records, problems = scan_dataset(index)
    assert records == [] and len(problems) == 24  # every image and every label map is a named problem
    assert all(p.detail.startswith("unreadable or corrupt NIfTI phantom_00") for p in problems), problems


def test_cli_checks_a_dataset(
    layouts: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from salient.platform.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # Rich folds lines at the terminal width

    assert main(["cohort", "check", str(layouts["msd"]), "--lesion-label", "2", "--channel", "CT"]) == 0
    out = capsys.readouterr().out
    assert "(msd): 12 subjects, 6 positive, 6 negative" in out and "no problems found" in out
    assert main(["cohort", "check", str(layouts["nnunet"])]) == 2  # which label is the lesion?
    assert "say which one is the lesion" in capsys.readouterr().out
    assert main(["cohort", "check", str(layouts["nnunet"]), "--format", "msd", "--lesion-label", "2"]) == 2
    assert "an nnU-Net v2 dataset? (--format nnunet)" in capsys.readouterr().out


def test_study_file_with_a_relative_dataset_path(layouts: dict[str, Path], tmp_path: Path) -> None:
    import yaml
    from salient.platform.errors import StudyError
    from salient.platform.study import load_study

    shutil.copytree(layouts["nnunet"], tmp_path / "data" / "Dataset501_Phantom")
    study: dict[str, Any] = {
        "name": "nnunet-study",
        "cohort": {"source": "nnunet", "dataset": "data/Dataset501_Phantom", "lesion_label": "hematoma"},
        "search_space": {"dose": {"grid": [0.0]}, "seed_size": {"grid": [2]}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    loaded = load_study(path)
    assert loaded.cohort.dataset == (tmp_path / "data" / "Dataset501_Phantom").resolve()
    assert loaded.cohort.lesion_label == "hematoma"
    study["cohort"]["dataset"] = "data/nowhere"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(StudyError, match=r"cohort.dataset: no dataset.json in .*data/nowhere"):
        load_study(path)
    study["cohort"] = {"source": "msd", "dataset": "x", "lesion_label": 0}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(StudyError, match=r"lesion_label must be >= 1 \(0 is background\)"):
        load_study(path)


def test_new_cohort_fields_leave_old_studies_dumping_as_before(tmp_path: Path) -> None:
    """Phantom and manifest studies dump (and so hash: the study key) exactly as before nnunet/msd."""
    keys = ["source", "manifest", "phantom", "preprocessing"]
    assert list(CohortSpec().model_dump(mode="json")) == keys
    assert list(CohortSpec(source="manifest", manifest=tmp_path / "m.csv").model_dump(mode="json")) == keys
    spec = CohortSpec(source="msd", dataset=tmp_path, lesion_label="2", channel="CT", max_voxels=10)
    dumped = spec.model_dump(mode="json")
    assert dumped["lesion_label"] == 2 and dumped["channel"] == "CT" and dumped["max_voxels"] == 10
    assert CohortSpec.model_validate(dumped) == spec


def test_dataset_path_is_redacted_like_a_manifest_path(layouts: dict[str, Path]) -> None:
    from salient.platform.privacy import redact_resolved_study
    from salient.platform.study.schema import Study, TrackingSpec

    study = Study(name="s", cohort=CohortSpec(source="nnunet", dataset=layouts["nnunet"], lesion_label=2))
    logged = redact_resolved_study(study.model_dump(mode="json"), study)
    assert logged["cohort"]["dataset"].startswith("Dataset501_Phantom (path not logged")
    assert str(layouts["nnunet"].parent) not in json.dumps(logged)
    opted = study.model_copy(update={"tracking": TrackingSpec(log_subject_ids=True)})
    assert redact_resolved_study(opted.model_dump(mode="json"), opted)["cohort"]["dataset"] == str(layouts["nnunet"])
