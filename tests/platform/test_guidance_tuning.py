"""Guidance auto-tuning (#7): scoring and Pareto maths, profiles into studies, and a seeded tiny
tuning run on the phantom that beats the default guidance on held-out slices."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import mlflow
import pytest
import yaml
from salient.models.configs import GuidanceConfig
from salient.platform.errors import StudyError
from salient.platform.guidance_tuning import (
    guidance_from_values,
    pareto_front,
    profile_document,
    run_guidance_tuning,
    score,
    write_profile,
)
from salient.platform.study import load_study
from salient.platform.study.schema import TuningWeights

from tests.conftest import REPO

BASE_STUDY = """
name: uses_profile
cohort: {source: phantom}
search_space: {dose: {grid: [0, 1]}, seed_size: {grid: [4]}}
"""


def test_score_is_relative_to_the_default_and_rewards_cheaper_sampling() -> None:
    base = {"mask_dice": 0.6, "frechet_distance": 10.0, "band_energy_distance": 0.2, "nfe": 60.0}
    w = TuningWeights()
    assert score(base, base, w) == pytest.approx(0.6 - 0.5 - 0.5 - 0.25)
    cheaper = {**base, "nfe": 15.0}
    assert score(cheaper, base, w) - score(base, base, w) == pytest.approx(0.25 * 0.75)
    worse = {**base, "frechet_distance": 20.0}
    assert score(worse, base, w) < score(base, base, w)


def test_pareto_front_keeps_exactly_the_non_dominated_rows() -> None:
    rows = [
        {"mask_dice": 0.6, "frechet_distance": 10, "band_energy_distance": 0.2, "nfe": 60},  # default
        {"mask_dice": 0.6, "frechet_distance": 10, "band_energy_distance": 0.2, "nfe": 30},  # dominates 0
        {"mask_dice": 0.7, "frechet_distance": 12, "band_energy_distance": 0.2, "nfe": 60},  # trade-off
        {"mask_dice": 0.5, "frechet_distance": 12, "band_energy_distance": 0.3, "nfe": 60},  # dominated
        {"mask_dice": 0.6, "frechet_distance": 10, "band_energy_distance": 0.2, "nfe": 30},  # tie with 1
    ]
    assert pareto_front(rows) == [1, 2, 4]


def test_guidance_values_apply_by_their_one_spelling() -> None:
    g = guidance_from_values(
        GuidanceConfig(), {"diffusion.guidance.s_mask": 3.0, "diffusion.guidance.sampling_steps": 5}
    )
    assert (g.s_mask, g.sampling_steps, g.nei_schedule) == (3.0, 5, "cosine")
    for wrong in ("diffusion.guidance.s_foo", "sampling_steps", "guidance.s_mask"):  # typo, bare, short
        with pytest.raises(ValueError, match="unknown guidance setting"):
            guidance_from_values(GuidanceConfig(), {wrong: 1})


def _profile(tmp_path: Path, guidance: dict[str, object]) -> Path:
    settings = {f"diffusion.guidance.{k}": v for k, v in guidance.items()}
    chosen = {"settings": settings, "objectives": {"score": 0.1}}
    doc = profile_document(chosen, chosen, [chosen], {"cohort_fingerprint": "abc"}, TuningWeights(), {"total": 1})
    return write_profile(doc, tmp_path / "profile.yaml")


def test_a_profile_round_trips_into_a_study(tmp_path: Path) -> None:
    _profile(tmp_path, {**dataclasses.asdict(GuidanceConfig()), "s_mask": 3.25, "sampling_steps": 10})
    (tmp_path / "study.yaml").write_text(BASE_STUDY + "guidance: {profile: profile.yaml}\n")
    study = load_study(tmp_path / "study.yaml")
    assert study.stages.diffusion.guidance.s_mask == 3.25 and study.stages.diffusion.guidance.sampling_steps == 10
    assert study.guidance_profile == (tmp_path / "profile.yaml").resolve()
    # the study's own explicit setting wins over the profile
    (tmp_path / "study.yaml").write_text(
        BASE_STUDY + "guidance: {profile: profile.yaml}\nstages: {diffusion: {guidance: {s_mask: 1.0}}}\n"
    )
    study = load_study(tmp_path / "study.yaml")
    assert study.stages.diffusion.guidance.s_mask == 1.0 and study.stages.diffusion.guidance.sampling_steps == 10


V2 = "salient_guidance_profile: 2\nsettings: "


@pytest.mark.parametrize(
    ("profile_text", "path", "message"),
    [
        (None, "guidance.profile", "profile file not found"),
        ("just text", "salient_guidance_profile", "not a version-2 guidance profile"),
        ("guidance: {s_mask: 2.0}", "salient_guidance_profile", "not a version-2 guidance profile"),  # version 1
        ("salient_guidance_profile: 2\nsettings: {}", "settings", "needs diffusion.guidance.* settings"),
        (V2 + "{diffusion.guidance.s_foo: 1}", "settings.diffusion.guidance.s_foo", "has no setting 's_foo'"),
        (V2 + "{1: 2}", "settings.1", "sets diffusion.guidance.* only"),
        (V2 + "{diffusion.lr: 0.1}", "settings.diffusion.lr", "sets diffusion.guidance.* only"),
        (V2 + "{diffusion.guidance.s_mask: -1.0}", "settings.diffusion.guidance.s_mask", "s_mask must be >= 0"),
        (V2 + "{diffusion.guidance.nei_schedule: wobbly}", "settings.diffusion.guidance.nei_schedule", "Input should"),
        ("guidance: [1, 2", "line", "not valid YAML"),
    ],
)
def test_bad_profiles_are_rejected_naming_file_and_key(
    tmp_path: Path, profile_text: str | None, path: str, message: str
) -> None:
    if profile_text is not None:
        (tmp_path / "profile.yaml").write_text(profile_text + "\n")
    (tmp_path / "study.yaml").write_text(BASE_STUDY + "guidance: {profile: profile.yaml}\n")
    with pytest.raises(StudyError) as info:
        load_study(tmp_path / "study.yaml")
    issue = info.value.issues[0]
    assert issue.path.startswith(path) and message in issue.message, info.value
    if profile_text is not None:
        assert issue.file.endswith("profile.yaml")


def test_a_tuning_study_searches_guidance_only(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """
        name: t
        kind: guidance_tuning
        search_space:
          dose: {grid: [0, 1]}
          diffusion.loss.lambda_sigma: {uniform: [0.1, 1.0]}
          diffusion.guidance.s_mask: {uniform: [0.5, 3.0]}
          diffusion.guidance.sampling_steps: {grid: [5, 10]}
        sampler: {name: tpe}
        """
    )
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(StudyError) as info:
        load_study(tmp_path / "t.yaml")
    messages = [i.message for i in info.value.issues]
    assert any("no dose, seed_size or prevalence axis" in m for m in messages)
    assert any("diffusion.guidance.* only" in m for m in messages)
    assert any("make it a choice entry" in m for m in messages)
    assert load_study(REPO / "studies" / "guidance_autotune.yaml").kind == "guidance_tuning"


@pytest.mark.slow
def test_tuning_beats_the_default_guidance_on_held_out_slices(tmp_path: Path) -> None:
    study = yaml.safe_load((REPO / "studies" / "guidance_autotune.yaml").read_text())
    study.update(
        {
            "cohort": {
                "source": "phantom",
                "phantom": {"n_subjects": 20, "n_positive": 8, "shape": [48, 48, 12], "spacing": [8.0, 8.0, 10.0]},
                "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-160, 240], "roi": [32, 32, 12]},
            },
            "stages": {"diffusion": {"train_steps": 30, "base_channels": 8}, "ucmt": {"train_steps": 20}},
            "search_space": str(REPO / "search_spaces" / "guidance.yaml"),
            "sampler": {"name": "tpe", "n_trials": 6, "seed": 3},
            "tuning": {"eval_slices": 8, "first_rung_slices": 3},
            "resources": {"cpus": 1, "max_concurrent": 1},
            "output_dir": str(tmp_path / "out"),
        }
    )
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(study))
    result = run_guidance_tuning(tmp_path / "tune.yaml", tmp_path / "profile.yaml")
    assert result.chosen["objectives"]["score"] > result.default["objectives"]["score"]
    # picked among configurations scored on every held-out slice (the training side of the split
    # holds out 5 here, fewer than eval_slices), not on the first rung's 3
    assert result.chosen["objectives"]["n_slices"] == result.default["objectives"]["n_slices"] == 5
    assert any(r["stopped_early"] for r in result.rows)  # ASHA stopped the worse half after 3 slices
    assert len(result.rows) == 6 and result.front
    profile = yaml.safe_load((tmp_path / "profile.yaml").read_text())
    assert profile["settings"] == result.chosen["settings"]
    assert profile["cohort_fingerprint"] and profile["held_out_slices"] == 5
    assert all(len(s) == 16 for s in profile["held_out_subjects"])  # hashed ids
    # the profile drives a dose study
    (tmp_path / "study.yaml").write_text(BASE_STUDY + f"guidance: {{profile: {tmp_path / 'profile.yaml'}}}\n")
    applied = load_study(tmp_path / "study.yaml").stages.diffusion.guidance
    assert {f"diffusion.guidance.{k}": v for k, v in dataclasses.asdict(applied).items()} == profile["settings"]
    # the search is in MLflow for the dashboard: one study run, the default + every configuration
    client = mlflow.MlflowClient(tracking_uri=result.tracking_uri)
    experiment = client.get_experiment_by_name("guidance_autotune")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 + 1 + 6
    assert {r.data.tags.get("salient.stopped_early") for r in runs} >= {"True", "False"}


def test_tuning_holds_its_output_folder_like_run(tmp_path: Path) -> None:
    """Another command holding the folder (a dose study running there): refused (exit 2) before the
    cohort is written or a generator trained."""
    from salient.platform.run_lock import OutputDirInUseError, hold_output_dir

    study = yaml.safe_load((REPO / "studies" / "guidance_autotune.yaml").read_text())
    study["output_dir"] = str(tmp_path / "out")
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(study))
    with (
        hold_output_dir(tmp_path / "out", "a dose study", "platform run dose.yaml"),
        pytest.raises(OutputDirInUseError, match=r"platform run dose\.yaml"),
    ):
        run_guidance_tuning(tmp_path / "tune.yaml", tmp_path / "profile.yaml")
    assert not (tmp_path / "out" / "cohorts").exists() and not (tmp_path / "profile.yaml").exists()
