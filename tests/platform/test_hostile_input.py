"""Hostile and careless input (issue #15 items 2, 3, 7, 9, 10): what bad input gets.

Each case is seconds and bounded in memory: the alias bomb runs in a child process under a 1 GiB
address-space limit, so a regression fails this test instead of exhausting the CI machine. The
expected values are written out by hand (key paths, exit codes, the characters that must be
printed), never produced by the code under test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import BaseModel, ValidationError
from salient.models import configs
from salient.platform import cli
from salient.platform.cli import main
from salient.platform.errors import InputTooComplexError, Issue, StudyError, clip, input_limits
from salient.platform.finite import NonFiniteMetricError, require_finite
from salient.platform.study import schema
from salient.platform.study.yaml_budget import MAX_YAML_BYTES, load_yaml_file
from salient.platform.tracking import Tracker, store_exists

REPO = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = {
    "name": "hostile",
    "cohort": {
        "source": "phantom",
        "phantom": {"n_subjects": 12, "n_positive": 6, "shape": [48, 48, 12], "spacing": [8.0, 8.0, 10.0]},
        "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-160, 240], "roi": [32, 32, 12]},
    },
    "stages": {"preset": "tiny"},
    "search_space": {"seed_size": {"grid": [2]}, "dose": {"grid": [0.0, 1.0]}},
    "sampler": {"name": "random", "n_trials": 1},
    "evaluation": {"prevalences": [0.25, 0.5]},
    "resources": {"cpus": 1, "max_concurrent": 1},
}


def _write_study(folder: Path, output_dir: Path | None = None, name: str = "study.yaml", **changes: Any) -> Path:
    data = json.loads(json.dumps(BASE))
    data["output_dir"] = str(output_dir or folder / "out")
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def _listing(root: Path) -> list[tuple[str, int, int]]:
    """Every entry under ``root`` with its size and modification time (a write changes one)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.stat()
            out.append((str(p.relative_to(root)), st.st_size if p.is_file() else 0, st.st_mtime_ns))
    return sorted(out)


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rich wraps at 80 columns when not on a terminal; long tmp paths must stay on one line.
    monkeypatch.setenv("COLUMNS", "500")


def test_base_study_is_valid(tmp_path: Path) -> None:
    """The parametrised failures below differ from this study in one value only."""
    assert main(["validate", str(_write_study(tmp_path))]) == 0


# -- item 2: YAML with a size, depth and alias budget ---------------------------------------------


def _alias_bomb(levels: int = 9, fan: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return "name: t\nsearch_space: {seed_size: {grid: [1]}}\n" + "\n".join(lines) + f"\nstages: *a{levels - 1}\n"


def test_alias_bomb_is_refused_while_loading_in_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    assert bomb.stat().st_size < 600  # 9**9 = 387 million values once expanded
    limit = 1 << 30

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    out = subprocess.run(
        [sys.executable, "-m", "salient.platform.cli", "validate", str(bomb)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=cap_memory,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"{bomb}: line 1, column 1: refused: expands to more than 100000 values" in out.stderr
    assert len(out.stderr) < 1000 and len(out.stdout) < 1000


def test_scalar_aliases_within_the_budget_still_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _write_study(tmp_path)
    text = study.read_text().replace("name: hostile", "name: &n hostile\ndescription: *n")
    study.write_text(text)
    assert main(["validate", str(study)]) == 0
    assert "study hostile" in capsys.readouterr().out


def test_recursive_alias_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "loop.yaml"
    study.write_text("name: t\nstages: &s {diffusion: *s}\n")
    assert main(["validate", str(study)]) == 2
    assert "loop.yaml: line 2, column 9: refused: an alias refers to a collection that contains it" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_exit_2_naming_file_and_depth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], opener: str
) -> None:
    closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
    depth = 20_000
    if opener == "- ":  # block style: one level per indented line
        body = "".join(" " * (2 * i) + "- \n" for i in range(200))
    else:
        body = opener * depth + "1" + closer * depth
    study = tmp_path / "deep.yaml"
    study.write_text("name: " + body + "\n" if opener != "- " else "name:\n" + body)
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert "deep.yaml: line " in err and "nested more than 32 levels deep" in err
    assert "RecursionError" not in err and len(err) < 1000


def test_depth_counts_aliases_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # l0 is 20 lists around a scalar (21 levels); l1..l4 add 19 lists each around the previous
    # anchor (21 + 4 * 19 = 97); the document's mapping is one more: 98. Each alone is <= 32.
    lines = ["l0: &l0 " + "[" * 20 + "1" + "]" * 20]
    lines += [f"l{i}: &l{i} " + "[" * 19 + f"*l{i - 1}" + "]" * 19 for i in range(1, 5)]
    study = tmp_path / "aliasdeep.yaml"
    study.write_text("name: t\n" + "\n".join(lines) + "\n")
    assert main(["validate", str(study)]) == 2
    assert "refused: nested 98 levels deep once aliases are expanded (the limit is 32)" in capsys.readouterr().err


def test_oversized_file_device_and_huge_number_are_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: t\n" + "#" * MAX_YAML_BYTES + "\n")
    assert main(["validate", str(big)]) == 2
    assert f"big.yaml: larger than {1 << 20} bytes, the limit for a YAML file" in capsys.readouterr().err
    assert main(["validate", "/dev/zero"]) == 2
    assert "/dev/zero: not a regular file" in capsys.readouterr().err
    control = tmp_path / "control.yaml"
    control.write_text("name: t\x1f\n")
    assert main(["validate", str(control)]) == 2
    assert "control.yaml: character 8: not valid YAML: unacceptable character #x001f" in capsys.readouterr().err
    digits = tmp_path / "digits.yaml"
    digits.write_text("name: t\nseed: " + "9" * 5000 + "\n")
    assert main(["validate", str(digits)]) == 2
    assert "digits.yaml: not valid YAML: Exceeds the limit (4300 digits)" in capsys.readouterr().err


def test_search_space_and_guidance_profile_files_have_the_same_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "space.yaml").write_text(_alias_bomb().replace("name: t\nsearch_space: {seed_size: {grid: [1]}}\n", ""))
    study = _write_study(tmp_path, search_space="space.yaml")
    assert main(["validate", str(study)]) == 2
    assert f"{tmp_path / 'space.yaml'}: line 1, column 1: refused: expands to more than 100000" in (
        capsys.readouterr().err
    )
    # "settings: " is 10 characters; the mapping is level 1, so the 32nd "[" (column 10 + 31,
    # 1-based 42) opens level 33.
    (tmp_path / "profile.yaml").write_text("settings: " + "[" * 100 + "]" * 100 + "\n")
    study = _write_study(tmp_path, name="with_profile.yaml", guidance={"profile": "profile.yaml"})
    assert main(["validate", str(study)]) == 2
    assert f"{tmp_path / 'profile.yaml'}: line 1, column 42: refused: nested more than 32 levels deep" in (
        capsys.readouterr().err
    )


def test_load_yaml_file_checks_its_limits() -> None:
    with pytest.raises(ValueError, match="max_depth must be an integer >= 1, got 0"):
        load_yaml_file(Path("x.yaml"), max_depth=0)


def test_issue_clips_echoed_values() -> None:
    value = "x" * 10_000
    text = str(Issue("study.yaml", "name", value, "must be short"))
    assert text == "study.yaml: name: must be short (got '" + "x" * 199 + "... (10002 characters))"
    assert clip("abc", 3) == "abc" and clip("abcd", 3) == "abc... (4 characters)"


def test_study_error_lists_at_most_50_issues() -> None:
    issues = [Issue("f.yaml", f"k{i}", i, "bad") for i in range(120)]
    lines = str(StudyError(issues)).splitlines()
    assert lines[0] == "120 problem(s) in study configuration:"
    assert lines[1] == "f.yaml: k0: bad (got 0)" and lines[50] == "f.yaml: k49: bad (got 49)"
    assert lines[51] == "... and 70 more problem(s)" and len(lines) == 52


def test_long_user_value_is_clipped_in_the_cli_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _write_study(tmp_path, name="long.yaml")
    study.write_text(study.read_text().replace("name: hostile", "name: " + "n" * 100_000))
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert "(100002 characters)" in err and len(err) < 2000


# -- item 3: every number finite --------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("cohort.preprocessing.hu_window", [NAN, 240.0], "cohort.preprocessing.hu_window[0]"),
        ("cohort.preprocessing.spacing", [INF, INF, INF], "cohort.preprocessing.spacing[0]"),
        ("cohort.phantom.spacing", [6.0, NAN, 8.0], "cohort.phantom.spacing[1]"),
        ("stages.diffusion", {"lr": INF}, "stages.diffusion.lr"),
        ("stages.diffusion", {"guidance": {"s_mask": NAN}}, "stages.diffusion.guidance.s_mask"),
        ("stages.diffusion", {"loss": {"band_weights": [1, NAN, 1, 1]}}, "stages.diffusion.loss.band_weights[1]"),
        ("stages.mask_vae", {"kl_weight": -INF}, "stages.mask_vae.kl_weight"),
        ("stages.detector", {"focal_gamma": INF}, "stages.detector.focal_gamma"),
        ("stages.ucmt", {"threshold": NAN}, "stages.ucmt.threshold"),
        ("stages.aggregator", {"epochs": INF}, "stages.aggregator.epochs"),
        ("resources.cpus", INF, "resources.cpus"),
        ("resources.gpus", NAN, "resources.gpus"),
        ("evaluation.prevalences", [0.1, NAN], "evaluation.prevalences[1]"),
        ("evaluation.ci", NAN, "evaluation.ci"),
        ("tuning.weights", {"cost": INF}, "tuning.weights.cost"),
        ("search_space.dose", {"grid": [0.0, NAN]}, "search_space.dose.grid[1]"),
        ("search_space.diffusion.guidance.s_mask", {"uniform": [NAN, 1.0]}, "s_mask.uniform[0]"),
        ("search_space.diffusion.lr", {"choice": [1e-3, INF]}, "search_space.diffusion.lr.choice[1]"),
        (
            "search_space.diffusion.loss.band_weights",
            {"grid": [[1, 1, INF, 1]]},
            "search_space.diffusion.loss.band_weights.grid[0]",
        ),
        ("sampler.seed", -1, "sampler.seed"),
        ("seed", 2**32, "seed"),
    ],
)
def test_non_finite_numbers_exit_2_naming_the_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: Any, named: str
) -> None:
    data = json.loads(json.dumps(BASE))
    data["output_dir"] = str(tmp_path / "out")
    if key.startswith("search_space."):
        data["search_space"][key.removeprefix("search_space.")] = value
    else:
        _set(data, key, value)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert f"study.yaml: {named}" in err or f".{named}" in err, err
    assert "Traceback" not in err


def _float_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if isinstance(f.default, float)]


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (cls, name)
        for cls in (
            configs.GuidanceConfig,
            configs.WaveletLossConfig,
            configs.DiffusionConfig,
            configs.MaskVAEConfig,
            configs.UCMTConfig,
            configs.DetectorConfig,
            configs.AggregatorConfig,
        )
        for name in _float_fields(cls)
    ],
)
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_every_float_of_every_stage_config_must_be_finite(cls: type, field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be finite, got {bad!r}$"):
        cls(**{field: bad})


def test_float_tuples_of_stage_configs_must_be_finite() -> None:
    with pytest.raises(ValueError, match=r"^band_weights\[2\] must be finite, got nan$"):
        configs.WaveletLossConfig(band_weights=(1.0, 1.0, NAN, 0.5))
    with pytest.raises(ValueError, match=r"^lambda_hf\[0\] must be finite, got inf$"):
        configs.WaveletLossConfig(lambda_hf=(INF, 0.05, 0.05))
    with pytest.raises(ValueError, match=r"^epochs must be finite, got inf$"):
        configs.DetectorConfig(epochs=INF)


def _schema_float_fields() -> list[tuple[type[BaseModel], str]]:
    out: list[tuple[type[BaseModel], str]] = []
    for obj in vars(schema).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and issubclass(obj, schema.Frozen):
            out += [(obj, name) for name, info in obj.model_fields.items() if isinstance(info.default, float)]
    return out


def test_study_models_have_float_fields_to_check() -> None:
    # test_fraction, ci, cpus and gpus (twice), four tuning weights, held_out_fraction: 11 today.
    assert len(_schema_float_fields()) >= 11


@pytest.mark.parametrize(("model", "field"), _schema_float_fields())
def test_every_float_of_every_study_model_must_be_finite(model: type[BaseModel], field: str) -> None:
    for bad in (NAN, INF):
        with pytest.raises(ValidationError) as info:
            model.model_validate({field: bad})
        assert any(e["loc"] == (field,) and e["type"] == "finite_number" for e in info.value.errors())


def test_require_finite_passes_finite_metrics() -> None:
    require_finite({"auroc": 0.5, "auprc_p0.01": np.float32(0.25), "n": 3}, "trial t0")
    require_finite({}, "trial t0")


@pytest.mark.parametrize(
    ("metrics", "listed"),
    [
        ({"auroc": NAN}, "auroc=nan"),
        ({"auroc": 0.5, "auprc": INF, "loss": -INF}, "auprc=inf, loss=-inf"),
        ({"auroc": np.float32("nan")}, "auroc=nan"),
        ({"auroc": np.float64("inf")}, "auroc=inf"),
        ({"flag": True}, "flag=True (not a number)"),
        ({"auroc": "0.5"}, "auroc='0.5' (not a number)"),
        ({"auroc": None}, "auroc=None (not a number)"),
    ],
)
def test_require_finite_names_every_bad_metric(metrics: dict[str, Any], listed: str) -> None:
    with pytest.raises(NonFiniteMetricError) as info:
        require_finite(metrics, "trial trial_0003 (repeat 0)")
    assert str(info.value) == f"trial trial_0003 (repeat 0): metric(s) not finite: {listed}"


def test_require_finite_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="what must be a non-empty string, got ''"):
        require_finite({"a": 1.0}, "")
    assert not math.isfinite(NAN)  # the sentinel this module uses is what math calls non-finite


# -- item 7: user strings are never Rich markup -----------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        ("runs[old]", "study.yaml"),
        ("[link=https:", "example.com]click[", "link].yaml"),
        ("a[", "]b.yaml"),
        (":thumbs_up:[bold]", "study.yaml"),
        ("x[/]", "[red]y.yaml"),
    ],
)
def test_paths_print_exactly_as_typed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], parts: tuple[str, ...]
) -> None:
    study = tmp_path.joinpath(*parts)
    _write_study(study.parent, output_dir=tmp_path / "out", name=study.name)
    assert main(["validate", str(study)]) == 0
    out = capsys.readouterr().out
    assert f"({study})" in out, out


def test_tracking_uri_in_dashboard_error_is_not_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path}/[/]x[link=https://e.com]y[/link].db"
    assert main(["dashboard", "--tracking-uri", uri]) == 2
    assert f"tracking URI {uri}: no MLflow store there" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- item 9: the exit-code contract -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            ["synth", "--generator", "g", "--masks", "1", "--seed", "-1", "o"],
            "argument --seed: must be in [0, 4294967295], got -1",
        ),
        (["synth", "--generator", "g", "--masks", "1", "--seed", "4294967296", "o"], "got 4294967296"),
        (["synth", "--generator", "g", "--masks", "0", "o"], "argument --masks: must be in [1, 10000], got 0"),
        (["synth", "--generator", "g", "--masks", "10" * 20, "o"], "argument --masks: must be in [1, 10000]"),
        (["synth", "--generator", "g", "--masks", "1.5", "o"], "argument --masks: must be a whole number, got '1.5'"),
        (["dashboard", "--port", "70000"], "argument --port: must be in [1, 65535], got 70000"),
        (["tune-guidance", "--trials", "0"], "argument --trials: must be in [1, 100000], got 0"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(capsys: pytest.CaptureFixture[str], args: list[str], named: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert named in capsys.readouterr().err


def test_synth_into_a_file_or_proc_is_exit_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "a_file"
    target.write_text("mine")
    missing_generator = str(tmp_path / "no_such_generator")
    assert main(["synth", "--generator", missing_generator, "--masks", "1", str(target)]) == 2
    assert f"OUT_DIR {target} exists and is not a folder" in capsys.readouterr().err
    assert target.read_text() == "mine"
    assert main(["synth", "--generator", missing_generator, "--masks", "1", "/proc/salient_synth_out"]) == 2
    assert "OUT_DIR /proc/salient_synth_out is not writable: cannot create entries in /proc" in (
        capsys.readouterr().err
    )


def _pool_entry(tmp_path: Path, meta: str) -> Path:
    entry = tmp_path / "stage_cache" / "pool" / "k1"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(meta)
    return entry


_RECORD = {
    "mask_vae": "mask_vae/abc",
    "diffusion": "diffusion/def",
    "ucmt": "ucmt/0a1",
    "stages": {},
    "cohort": {},
    "hosts": ["s1"],
    "extents": [[0, 2]],
}


@pytest.mark.parametrize(
    ("meta", "named"),
    [
        ("{not json", "meta.json is not valid JSON: Expecting property name"),
        ("[1, 2]", "meta.json must hold a JSON object, got [1, 2]"),
        ("[" * 100_000 + "]" * 100_000, "meta.json: nested too deeply to parse"),
        (json.dumps({"stage": "pool", "generator": {}}), "meta.json: generator.mask_vae: Field required"),
        (
            json.dumps({"stage": "pool", "generator": {**_RECORD, "hosts": "s1"}}),
            "meta.json: generator.hosts: Input should be a valid list",
        ),
        (
            json.dumps({"stage": "pool", "generator": {**_RECORD, "stages": {"diffusion": {"lr": -1}}}}),
            "meta.json: generator.stages.diffusion: lr must be > 0",
        ),
        (
            json.dumps({"stage": "pool", "generator": {**_RECORD, "ucmt": "ucmt/../../../etc"}}),
            "meta.json: generator.ucmt must be STAGE/KEY, got 'ucmt/../../../etc'",
        ),
    ],
)
def test_malformed_generator_meta_is_exit_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], meta: str, named: str
) -> None:
    entry = _pool_entry(tmp_path, meta)
    assert main(["synth", "--generator", str(entry), "--masks", "1", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"--generator: {entry}/{named}" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["/proc/salient/profile.yaml", "/dev/null", "."])
def test_tune_guidance_unwritable_output_fails_before_the_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    text = (REPO / "studies" / "guidance_autotune.yaml").read_text()
    study = tmp_path / "tune.yaml"
    study.write_text(
        text.replace("output_dir: salient_runs", f"output_dir: {tmp_path / 'out'}").replace(
            "search_space: search_spaces/guidance.yaml", f"search_space: {REPO / 'search_spaces' / 'guidance.yaml'}"
        )
    )
    output = str(tmp_path) if target == "." else target
    assert main(["tune-guidance", "--study", str(study), "-o", output]) == 2
    err = capsys.readouterr().err
    expected = {
        "/proc/salient/profile.yaml": "-o /proc/salient/profile.yaml is not writable",
        "/dev/null": "-o /dev/null exists and is not a regular file",
        ".": f"-o {tmp_path} is a folder; give a file name",
    }[target]
    assert expected in err, err
    assert not (tmp_path / "out").exists()  # nothing was prepared, trained or tracked


def test_report_unwritable_output_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(_write_study(tmp_path)), "-o", "/proc/salient/report.html"]) == 2
    assert "-o /proc/salient/report.html is not writable" in capsys.readouterr().err


def test_input_limits_names_the_input_and_passes_other_errors() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with (
        pytest.raises(InputTooComplexError, match=r"^meta\.json: nested too deeply to parse$"),
        input_limits("meta.json"),
    ):
        json.loads(deep)
    with (
        pytest.raises(InputTooComplexError, match=r"^big: too large to parse \(ran out of memory\)$"),
        input_limits("big"),
    ):
        raise MemoryError
    with pytest.raises(KeyError), input_limits("x"):
        raise KeyError("a bug stays a bug")


def test_recursion_error_outside_input_parsing_stays_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: Any, console: Any) -> int:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(cli, "_cmd_validate", broken)
    assert main(["validate", str(_write_study(tmp_path))]) == 1
    assert "failed: RecursionError: maximum recursion depth exceeded" in capsys.readouterr().err


# -- item 10: read-only commands do not write -------------------------------------------------------


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_status_and_report_leave_the_file_system_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    out = tmp_path / "runs"
    if folder == "empty":
        out.mkdir()
    study = _write_study(tmp_path / "studies", output_dir=out)
    before = _listing(tmp_path)
    assert main(["status", str(study)]) == 0
    assert f"study hostile: not started (no MLflow run at sqlite:///{out / 'mlflow.db'})" in capsys.readouterr().out
    assert main(["report", str(study), "-o", str(tmp_path / "report.html")]) == 2
    assert "study hostile has no run" in capsys.readouterr().err
    assert _listing(tmp_path) == before


@pytest.fixture(scope="module")
def other_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow store that holds another study's experiment, not ours."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    Tracker(f"sqlite:///{db}", "someone_else")
    return db


def _experiments(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return sorted(row[0] for row in con.execute("SELECT name FROM experiments"))


def test_report_and_status_do_not_create_an_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], other_store: Path
) -> None:
    assert _experiments(other_store) == ["Default", "someone_else"]
    before = _listing(other_store.parent)
    study = _write_study(tmp_path)
    uri = f"sqlite:///{other_store}"
    assert main(["report", str(study), "-o", str(tmp_path / "r.html"), "--tracking-uri", uri]) == 2
    assert main(["status", str(study), "--tracking-uri", uri]) == 0
    capsys.readouterr()
    assert _experiments(other_store) == ["Default", "someone_else"]
    assert _listing(other_store.parent) == before


def test_read_only_tracker_finds_runs_and_refuses_writes(other_store: Path) -> None:
    uri = f"sqlite:///{other_store}"
    writer = Tracker(uri, "someone_else")
    run_id, _ = writer.start_study("key-ro-1", "s", {"a": 1}, {})
    reader = Tracker(uri, "someone_else", create=False)
    found = reader.find_study_run("key-ro-1")
    assert found is not None and found.info.run_id == run_id
    with pytest.raises(RuntimeError, match="opened read-only"):
        reader.start_study("key-ro-2", "s", {}, {})
    assert Tracker(uri, "nobody", create=False).find_study_run("key-ro-1") is None
    assert "nobody" not in _experiments(other_store)


@pytest.mark.parametrize(
    ("uri", "exists"),
    [
        ("sqlite:///{tmp}/missing.db", False),
        ("sqlite:///{tmp}/empty.db", False),
        ("sqlite:///{tmp}/full.db", True),
        ("{tmp}/mlruns_missing", False),
        ("file://{tmp}", True),
        ("http://127.0.0.1:5000", True),
        ("sqlite://", True),
    ],
)
def test_store_exists(tmp_path: Path, uri: str, exists: bool) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "full.db").write_bytes(b"SQLite format 3\x00")
    assert store_exists(uri.format(tmp=tmp_path)) is exists
    assert not (tmp_path / "missing.db").exists()


# -- item 6: the plan is counted before it is built, and capped -------------------------------------


def _validate_capped(study: Path) -> subprocess.CompletedProcess[str]:
    """``platform validate`` in a child process under a 1 GiB address-space limit and a timeout:
    a plan that is expanded instead of counted fails this instead of exhausting the machine."""
    limit = 1 << 30

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "salient.platform.cli", "validate", str(study)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=cap_memory,
    )


def test_a_billion_repeats_is_refused_by_count_in_bounded_memory(tmp_path: Path) -> None:
    out = _validate_capped(_write_study(tmp_path, repeats=1_000_000_000))
    assert out.returncode == 2, out.stderr[-2000:]
    assert (
        "study.yaml: limits.max_trials: the plan has seed_size 1 x dose 2 x repeats 1000000000 = 2000000000 trials, "
        "more than limits.max_trials (10000); shrink the grid, repeats or sampler.n_trials, or raise "
        "limits.max_trials (got 10000)"
    ) in out.stderr
    assert len(out.stderr) < 1000


@pytest.mark.parametrize(
    ("space", "extra", "named"),
    [
        (  # 300 x 300 x 299 cells: each list is short, the product is not
            {
                "seed_size": {"grid": [2]},
                "dose": {"grid": [i / 100 for i in range(300)]},
                "detector.lr": {"grid": [(i + 1) * 1e-5 for i in range(300)]},
                "detector.epochs": {"grid": list(range(1, 300))},
            },
            {},
            "the plan has seed_size 1 x dose 300 x detector.lr 300 x detector.epochs 299 x repeats 1 = 26910000 trials",
        ),
        (  # sampled draws count too
            {"seed_size": {"grid": [2]}, "detector.lr": {"loguniform": [1e-5, 1e-2]}},
            {"sampler": {"name": "random", "n_trials": 50_000}},
            "the plan has seed_size 1 x repeats 1 x sampler.n_trials 50000 = 50000 trials",
        ),
        (  # conditional entries may collapse cells: the count is an upper bound, and says so
            {
                "seed_size": {"grid": [2]},
                "dose": {"grid": [i / 10 for i in range(200)]},
                "diffusion.guidance.nei_schedule": {"grid": ["constant", "exponential"]},
                "diffusion.guidance.s_nei_decay": {
                    "grid": [i / 100 + 0.01 for i in range(30)],
                    "when": {"diffusion.guidance.nei_schedule": ["exponential"]},
                },
            },
            {},
            "x repeats 1 = up to 12000 trials",
        ),
    ],
)
def test_large_plans_are_refused_naming_count_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], space: dict[str, Any], extra: dict[str, Any], named: str
) -> None:
    study = _write_study(tmp_path, search_space=space, **extra)
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert "study.yaml: limits.max_trials: " in err and named in err, err


def test_a_grid_of_fifty_thousand_values_is_named_not_walked(tmp_path: Path) -> None:
    # 10**6 values cannot fit the 1 MiB YAML budget; 50 000 do, and are one list over max_values
    study = _write_study(tmp_path, search_space={"seed_size": {"grid": [2]}, "dose": {"grid": list(range(50_000))}})
    out = _validate_capped(study)
    assert out.returncode == 2, out.stderr[-2000:]
    assert (
        "study.yaml: search_space.dose.grid: holds 50000 values, more than limits.max_values (1000); use fewer "
        "values, a sampled range, or raise limits.max_values (got '50000 values')"
    ) in out.stderr
    assert "seed_size 1 x dose 50000 x repeats 1 = 50000 trials" in out.stderr


def test_limits_are_a_study_key_with_a_ceiling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = REPO / "studies" / "dose_response.yaml"  # 4 doses x 2 seed sizes = 8 trials
    text = demo.read_text().replace(
        "search_space: search_spaces/dose.yaml", f"search_space: {REPO}/search_spaces/dose.yaml"
    )
    tight = tmp_path / "tight.yaml"
    tight.write_text(
        text.replace("output_dir: salient_runs", f"output_dir: {tmp_path / 'o'}") + "limits: {max_trials: 7}\n"
    )
    assert main(["validate", str(tight)]) == 2
    assert "the plan has dose 4 x seed_size 2 x repeats 1 = 8 trials, more than limits.max_trials (7)" in (
        capsys.readouterr().err
    )
    tight.write_text(tight.read_text().replace("max_trials: 7", "max_trials: 8"))
    assert main(["validate", str(tight)]) == 0
    assert "8 trials" in capsys.readouterr().out
    tight.write_text(tight.read_text().replace("max_trials: 8", "max_trials: 100001"))
    assert main(["validate", str(tight)]) == 2
    assert "tight.yaml: limits.max_trials: Input should be less than or equal to 100000" in capsys.readouterr().err
    tight.write_text(tight.read_text().replace("{max_trials: 100001}", "{max_values: 3}"))
    assert main(["validate", str(tight)]) == 2
    assert "search_spaces/dose.yaml: dose.grid: holds 4 values, more than limits.max_values (3)" in (
        capsys.readouterr().err
    )


def test_limits_are_not_part_of_the_study_identity(tmp_path: Path) -> None:
    from salient.platform.pipeline import study_key
    from salient.platform.study import load_study

    plain = load_study(_write_study(tmp_path))
    capped = load_study(_write_study(tmp_path, name="capped.yaml", limits={"max_trials": 50, "max_values": 20}))
    assert capped.limits.max_trials == 50 and plain.limits.max_trials == 10_000
    assert study_key(capped) == study_key(plain)  # raising a cap later resumes the same study


def test_build_plan_counts_before_expanding_studies_made_in_code() -> None:
    from salient.platform.study import build_plan
    from salient.platform.study.schema import Study

    study = Study.model_validate(
        {"name": "coded", "repeats": 10**9, "search_space": {"seed_size": {"grid": [2]}, "dose": {"grid": [0.0]}}}
    )
    with pytest.raises(StudyError, match=r"seed_size 1 x dose 1 x repeats 1000000000 = 1000000000 trials"):
        build_plan(study)


def test_run_refuses_a_large_plan_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _write_study(tmp_path, output_dir=tmp_path / "out", repeats=20_000)
    assert main(["run", str(study)]) == 2
    assert "repeats 20000 = 40000 trials, more than limits.max_trials (10000)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- item 8: output_dir is new, empty or the platform's; never a system folder ----------------------


@pytest.mark.parametrize(
    ("output_dir", "named"),
    [
        ("/etc", "output_dir /etc is a system folder"),
        ("/", "output_dir / is a system folder"),
        ("/usr/lib/salient", "output_dir /usr/lib/salient is inside /usr, a system folder"),
        ("/proc/salient", "output_dir /proc/salient is inside /proc, a system folder"),
    ],
)
def test_system_output_dirs_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output_dir: str, named: str
) -> None:
    assert main(["validate", str(_write_study(tmp_path, output_dir=Path(output_dir)))]) == 2
    assert named in capsys.readouterr().err


def test_run_into_a_folder_of_the_users_own_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "analysis"
    mine.mkdir()
    (mine / "results.csv").write_text("my,own\n1,2\n")
    before = _listing(mine)
    assert main(["run", str(_write_study(tmp_path, output_dir=mine))]) == 2
    assert f"output_dir {mine} already holds files the platform did not write (results.csv, ...)" in (
        capsys.readouterr().err
    )
    assert _listing(mine) == before


def test_the_count_is_the_plan_built_and_counts_control_arms() -> None:
    from salient.platform.study import build_plan, load_study
    from salient.platform.study.plan_size import count_plan
    from salient.platform.study.schema import ParamSpec

    demo = load_study(REPO / "studies" / "dose_response.yaml")  # doses 0, 1, 2, 4 x seed sizes 6, 10
    size = count_plan(demo.search_space, demo.repeats, demo.sampler.n_trials)
    assert (size.trials, size.exact) == (8, True) and size.trials == len(build_plan(demo).trials)
    assert size.describe() == "dose 4 x seed_size 2 x repeats 1 = 8"  # prevalence is evaluation only
    space = {"dose": ParamSpec(grid=(0.0, 1.0, 2.0)), "seed_size": ParamSpec(grid=(2, 4))}
    # two control arms repeat each of the 2 doses > 0: (3 + 2 x 2) doses x 2 seed sizes x 3 repeats
    with_controls = count_plan(space, 3, 1, controls=2)
    assert with_controls.trials == 42
    assert with_controls.describe() == (
        "dose (with 2 control arm(s) at its 2 dose(s) > 0) 7 x seed_size 2 x repeats 3 = 42"
    )
    with pytest.raises(ValueError, match="got 0, 1 and 0"):
        count_plan(space, 0, 1)
