"""Study files: every rule rejects with file, key path and value; valid files plan correctly."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError
from salient.platform.errors import StudyError
from salient.platform.study import apply_params, build_plan, load_study

REPO = Path(__file__).resolve().parents[2]

BASE = """
name: t
cohort: {source: phantom, phantom: {n_subjects: 20, n_positive: 8}}
search_space:
  dose: {grid: [0, 2]}
  seed_size: {grid: [4]}
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> list[tuple[str, str, object, str]]:
    with pytest.raises(StudyError) as info:
        load_study(path)
    return [(i.file, i.path, i.value, i.message) for i in info.value.issues]


def only_issue(path: Path) -> tuple[str, str, object, str]:
    issues = errors_of(path)
    assert len(issues) == 1, issues
    return issues[0]


def test_shipped_demo_study_validates_and_plans() -> None:
    study = load_study(REPO / "studies" / "dose_response.yaml")
    plan = build_plan(study)
    assert plan.n_trials == 8  # 4 doses x 2 seed sizes x 1 repeat
    assert plan.n_generators == 2  # one pool per seed size; doses share it
    assert plan.prevalences == (0.05, 0.1, 0.2)
    assert plan.n_evaluations == 24
    # the per-stage overrides reach the configs (3000 steps: 250 gave noise, see generator_quality.py)
    assert study.stages.diffusion.train_steps == 3000 and study.stages.diffusion.loss.boundary_weight == 10.0
    assert study.stages.ucmt.train_steps == 2000 and study.stages.detector.steps == 800


def test_shipped_phantom_benchmark_studies_validate_and_plan() -> None:
    """The benchmark (3 repeats x 2 seed sizes x doses 0/1/8 + real and shuffled controls at 1x)
    and its pixel arm, which shares the benchmark's output folder (and so its 0x detectors)."""
    bench = load_study(REPO / "studies" / "phantom_benchmark.yaml")
    plan = build_plan(bench)
    assert plan.n_trials == 3 * 2 * (3 + 2)
    assert plan.n_generators == 3 * 2  # one pool per seed size and repeat, sized for 8x
    assert bench.protocol.control_doses == (1.0,) and bench.stages.diffusion.domain == "wavelet"
    pixel = load_study(REPO / "studies" / "phantom_benchmark_pixel.yaml")
    assert build_plan(pixel).n_trials == 2 * 3 and pixel.stages.diffusion.domain == "pixel"
    assert pixel.output_dir == bench.output_dir and pixel.cohort == bench.cohort
    same = {"mask_vae", "ucmt", "detector", "aggregator"}
    assert all(getattr(pixel.stages, s) == getattr(bench.stages, s) for s in same)
    assert pixel.evaluation == bench.evaluation


def test_shipped_h100_study_validates_with_a_paper_sized_manifest(tmp_path: Path) -> None:
    rows = ["subject,image,mask,label"] + [f"s{i},i{i}.nii.gz,m{i}.nii.gz,{int(i < 200)}" for i in range(5205)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    text = (REPO / "studies" / "dose_response_h100.yaml").read_text()
    text = text.replace("/data/wbct_mediastinal_hematoma/labels.csv", str(tmp_path / "labels.csv"))
    study = load_study(write(tmp_path, text))
    plan = build_plan(study)
    assert plan.n_trials == 22 and plan.n_evaluations == 110  # Table 1: 22 trainings, 110 cells
    assert study.stages.detector.layers == (3, 4, 6, 3)  # ResNet-50
    assert study.stages.aggregator.max_len == 500 and study.stages.aggregator.d_model == 512
    assert study.resources.for_stage("diffusion").gpus == 1
    assert study.resources.for_stage("aggregator").gpus == 0.5


def test_shipped_search_spaces_parse(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        name: t
        sampler: {{name: tpe, n_trials: 3}}
        search_space:
          - {REPO / "search_spaces" / "guidance.yaml"}
          - {REPO / "search_spaces" / "wavelet_bands.yaml"}
          - {{seed_size: {{grid: [4]}}}}
    """,
    )
    study = load_study(path)
    plan = build_plan(study)
    assert "diffusion.guidance.s_mask" in plan.sampled
    assert plan.n_trials == 3


def test_unknown_top_level_key(tmp_path: Path) -> None:
    file, path, _value, msg = only_issue(write(tmp_path, BASE + "bogus: 1\n"))
    assert file.endswith("study.yaml") and path == "bogus" and msg == "unknown key"


def test_unknown_stage_setting(tmp_path: Path) -> None:
    _, path, _value, msg = only_issue(write(tmp_path, BASE + "stages: {diffusion: {guidance: {s_mask_typo: 1}}}\n"))
    assert path == "stages.diffusion.guidance.s_mask_typo" and msg == "unknown key"


def test_wrong_type(tmp_path: Path) -> None:
    _, path, value, _ = only_issue(write(tmp_path, BASE + "repeats: two\n"))
    assert path == "repeats" and value == "two"


def test_impossible_stage_value_names_field(tmp_path: Path) -> None:
    _, path, value, msg = only_issue(write(tmp_path, BASE + "stages: {detector: {focal_alpha: 3}}\n"))
    assert path == "stages.detector.focal_alpha" and value == 3 and "[0, 1]" in msg


def test_negative_dose(tmp_path: Path) -> None:
    _, path, value, msg = only_issue(write(tmp_path, BASE.replace("[0, 2]", "[0, -1]")))
    assert path == "search_space.dose.grid[1]" and value == -1 and ">= 0" in msg


def test_prevalence_outside_unit_interval_in_evaluation(tmp_path: Path) -> None:
    _, path, _value, msg = only_issue(write(tmp_path, BASE + "evaluation: {prevalences: [0.01, 1.5]}\n"))
    assert path == "evaluation.prevalences" and "(0, 1)" in msg


def test_prevalence_outside_unit_interval_in_search_space(tmp_path: Path) -> None:
    _, path, value, _ = only_issue(write(tmp_path, BASE + "  prevalence: {grid: [0.0, 0.05]}\n"))
    assert path == "search_space.prevalence.grid[0]" and value == 0.0


def test_seed_size_larger_than_positives(tmp_path: Path) -> None:
    _, path, value, msg = only_issue(write(tmp_path, BASE.replace("grid: [4]", "grid: [4, 8]")))
    assert path == "search_space.seed_size.grid[1]" and value == 8 and "8 positive" in msg


def test_seed_size_checked_against_manifest_positives(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text(
        "subject,image,mask,label\na,a.nii,am.nii,1\nb,b.nii,bm.nii,1\nc,c.nii,cm.nii,0\n"
    )
    text = BASE.replace(
        "{source: phantom, phantom: {n_subjects: 20, n_positive: 8}}", "{source: manifest, manifest: labels.csv}"
    )
    _, path, _value, msg = only_issue(write(tmp_path, text))
    assert path == "search_space.seed_size.grid[0]" and "2 positive" in msg


def test_unknown_sampler(tmp_path: Path) -> None:
    _, path, value, _msg = only_issue(write(tmp_path, BASE + "sampler: {name: annealing}\n"))
    assert path == "sampler.name" and value == "annealing"


def test_sampled_entries_need_a_sampler(tmp_path: Path) -> None:
    _, path, _value, msg = only_issue(write(tmp_path, BASE + "  diffusion.guidance.s_mask: {uniform: [1, 3]}\n"))
    assert path == "sampler.name" and "diffusion.guidance.s_mask" in msg


def test_search_space_value_checked_against_stage_rules(tmp_path: Path) -> None:
    text = BASE + "  diffusion.guidance.nei_schedule: {grid: [cosine, zigzag]}\n"
    _, path, value, _ = only_issue(write(tmp_path, text))
    assert path == "search_space.diffusion.guidance.nei_schedule.grid[1]" and value == "zigzag"


def test_unknown_search_space_parameter(tmp_path: Path) -> None:
    _, path, _value, msg = only_issue(write(tmp_path, BASE + "  diffusion.nonexistent: {grid: [1]}\n"))
    assert path == "search_space.diffusion.nonexistent" and "no setting" in msg


def test_entry_with_two_kinds(tmp_path: Path) -> None:
    _, path, _, msg = only_issue(write(tmp_path, BASE + "  detector.lr: {grid: [0.1], uniform: [0.1, 0.2]}\n"))
    assert path == "search_space.detector.lr" and "exactly one" in msg


def test_condition_on_missing_parameter(tmp_path: Path) -> None:
    text = BASE + "  detector.lr: {grid: [0.01], when: {detector.epochs: [3]}}\n"
    _, path, _value, msg = only_issue(write(tmp_path, text))
    assert path == "search_space.detector.lr.when.detector.epochs" and "not in the search space" in msg


def test_errors_in_a_search_space_file_name_that_file(tmp_path: Path) -> None:
    write(tmp_path, "dose: {grid: [-3]}\nseed_size: {grid: [2]}\n", "space.yaml")
    file, path, value, _ = only_issue(write(tmp_path, "name: t\nsearch_space: space.yaml\n"))
    assert file.endswith("space.yaml") and path == "dose.grid[0]" and value == -3


def test_missing_search_space_file(tmp_path: Path) -> None:
    _, path, value, msg = errors_of(write(tmp_path, "name: t\nsearch_space: nowhere.yaml\n"))[0]
    assert path == "search_space" and value == "nowhere.yaml" and "not found" in msg


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    _file, path, _, msg = only_issue(write(tmp_path, "name: t\nsearch_space: {dose: [\n"))
    assert "line" in path and "not valid YAML" in msg


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = BASE.replace("[0, 2]", "[-1, 2]") + "repeats: 0\nbogus: 1\n"
    assert {p for _, p, _, _ in errors_of(write(tmp_path, text))} == {"search_space.dose.grid[0]", "repeats", "bogus"}


def test_prevalence_in_both_places_is_contradictory(tmp_path: Path) -> None:
    text = BASE + "  prevalence: {grid: [0.05]}\nevaluation: {prevalences: [0.01]}\n"
    _, path, _, msg = only_issue(write(tmp_path, text))
    assert path == "evaluation.prevalences" and "both" in msg


def test_manifest_with_phantom_source_is_contradictory(tmp_path: Path) -> None:
    text = BASE.replace(
        "{source: phantom, phantom: {n_subjects: 20, n_positive: 8}}", "{source: phantom, manifest: x.csv}"
    )
    _, path, _, msg = only_issue(write(tmp_path, text))
    assert path == "cohort" and "source" in msg


def test_conditional_grid_entries_expand_without_duplicates(tmp_path: Path) -> None:
    text = BASE + (
        "  diffusion.guidance.nei_schedule: {grid: [constant, exponential]}\n"
        "  diffusion.guidance.nei_decay_rate:\n"
        "    {grid: [1.0, 5.0], when: {diffusion.guidance.nei_schedule: [exponential]}}\n"
    )
    plan = build_plan(load_study(write(tmp_path, text)))
    cells = {
        (
            t.params["dose"],
            t.params["diffusion.guidance.nei_schedule"],
            t.params.get("diffusion.guidance.nei_decay_rate"),
        )
        for t in plan.trials
    }
    assert len(plan.trials) == len(cells) == 2 * 3  # per dose: constant, exp@1, exp@5
    assert plan.n_generators == 3


def test_apply_params_sets_nested_and_indexed_fields(tmp_path: Path) -> None:
    study = load_study(write(tmp_path, BASE))
    stages = apply_params(
        study.stages, {"diffusion.guidance.s_mask": 3.5, "diffusion.loss.band_weights.3": 0.2, "dose": 2}
    )
    assert stages.diffusion.guidance.s_mask == 3.5
    assert stages.diffusion.loss.band_weights == (1.0, 1.0, 1.0, 0.2)
    assert study.stages.diffusion.guidance.s_mask == 2.0  # the original is frozen and unchanged
    with pytest.raises(ValidationError):
        study.repeats = 3  # type: ignore[misc]


def test_a_trial_asks_for_the_largest_stage_request(tmp_path: Path) -> None:
    from salient.platform.study.schema import ResourceSpec

    spec = ResourceSpec(cpus=2, gpus=0, stages={"diffusion": {"cpus": 1, "gpus": 1}, "ucmt": {"cpus": 4, "gpus": 0.5}})
    per_trial = spec.per_trial()
    assert (per_trial.cpus, per_trial.gpus) == (4, 1)
    assert ResourceSpec().per_trial().cpus == 1.0


def test_a_setting_has_one_spelling_valid_everywhere() -> None:
    from salient.platform.study.params import ParamPath

    path = ParamPath.parse("diffusion.loss.band_weights.3")
    assert (path.stage, path.segments, str(path)) == (
        "diffusion",
        ("loss", "band_weights", 3),
        "diffusion.loss.band_weights.3",
    )
    # the one spelling is also a valid MLflow param name (MLflow refuses brackets)
    assert re.fullmatch(r"[A-Za-z0-9_\-. :/]+", str(path))
    with pytest.raises(ValueError, match=r"write band_weights\.3"):
        ParamPath.parse("diffusion.loss.band_weights[3]")
    for wrong in ("guidance.s_mask", "s_mask", "diffusion", "diffusion.3", "diffusion.loss..lambda_mu"):
        with pytest.raises(ValueError):
            ParamPath.parse(wrong)
    settings = {"loss": {"band_weights": [1.0, 1.0, 1.0, 0.5]}, "lr": 0.1}
    assert ParamPath.parse("diffusion.loss.band_weights.3").set(settings, 0.2)["loss"]["band_weights"] == [
        1.0,
        1.0,
        1.0,
        0.2,
    ]
    assert settings["loss"]["band_weights"][3] == 0.5  # a copy was changed
    for wrong, missing in (("diffusion.loss.band_weights.4", "band_weights.4"), ("diffusion.lr.0", "lr.0")):
        with pytest.raises(KeyError, match=re.escape(missing)):
            ParamPath.parse(wrong).set(settings, 1.0)


def test_a_sampled_dose_sizes_the_pool_from_its_range(tmp_path: Path) -> None:
    text = BASE.replace("  dose: {grid: [0, 2]}\n", "  dose: {uniform: [0, 4]}\n") + "sampler: {name: tpe}\n"
    assert text != BASE + "sampler: {name: tpe}\n"
    plan = build_plan(load_study(write(tmp_path, text)))
    assert plan.sampled and plan.pool_dose == 4.0
    assert build_plan(load_study(write(tmp_path, BASE))).pool_dose == 2.0
