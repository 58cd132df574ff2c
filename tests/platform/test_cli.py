"""CLI exit codes: 0 ok, 2 bad input, 1 failure; --help on every subcommand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from salient.platform.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["run"],
        ["validate"],
        ["status"],
        ["synth"],
        ["dashboard"],
        ["report"],
        ["tune-guidance"],
        ["cohort"],
        ["cohort", "phantom"],
        ["cohort", "check"],
    ],
)
def test_help_on_every_command(args: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0


def test_console_script_is_installed() -> None:
    exe = shutil.which("platform")
    assert exe, "the `platform` console script is not on PATH (pip install -e .)"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "validate" in out.stdout


def test_validate_ok_prints_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO / "studies" / "dose_response.yaml")]) == 0
    out = capsys.readouterr().out
    assert "8 trials" in out and "trial_0007" in out


def test_validate_bad_study_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nrepeats: -1\nsearch_space: {seed_size: {grid: [1]}}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: repeats" in err and "-1" in err


def test_missing_study_exits_2(tmp_path: Path) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2


def test_unknown_subcommand_is_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_cohort_phantom_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cohort"
    assert main(["cohort", "phantom", str(out), "--subjects", "6", "--positives", "2", "--shape", "32", "32", "8"]) == 0
    assert (out / "labels.csv").is_file() and len(list((out / "images").glob("*.nii.gz"))) == 6
    assert main(["cohort", "check", str(out)]) == 0
    (out / "masks" / "phantom_0000.nii.gz").unlink()
    assert main(["cohort", "check", str(out / "labels.csv")]) == 2
    assert "missing mask" in capsys.readouterr().out


def test_cohort_phantom_bad_settings_exit_2(tmp_path: Path) -> None:
    assert main(["cohort", "phantom", str(tmp_path), "--subjects", "4", "--positives", "9"]) == 2
    assert main(["cohort", "check", str(tmp_path / "missing")]) == 2


def _tiny_study(tmp_path: Path, output_dir: Path) -> Path:
    text = (
        (REPO / "studies" / "dose_response.yaml")
        .read_text()
        .replace("output_dir: salient_runs", f"output_dir: {output_dir}")
    )
    path = tmp_path / "study.yaml"
    path.write_text(
        text.replace("search_space: search_spaces/dose.yaml", f"search_space: {REPO / 'search_spaces' / 'dose.yaml'}")
    )
    return path


def test_unwritable_output_dir_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["run", str(_tiny_study(tmp_path, blocker / "out"))]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_nearly_full_disk_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import salient.platform.outputs as outputs

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    out = tmp_path / "out"
    assert main(["run", str(_tiny_study(tmp_path, out))]) == 2
    assert "has only 1 MiB free" in capsys.readouterr().err
    assert not (out / "mlflow.db").exists() and not (out / "cohorts").exists()


def test_dashboard_without_a_tracking_store_says_how_to_name_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["dashboard"]) == 2
    assert "--tracking-uri" in capsys.readouterr().err
