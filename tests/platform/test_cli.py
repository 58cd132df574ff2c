"""CLI exit codes: 0 ok, 2 bad input, 1 failure; --help on every subcommand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from salient.platform.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [[], ["run"], ["validate"], ["cohort"], ["cohort", "phantom"], ["cohort", "check"]])
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
