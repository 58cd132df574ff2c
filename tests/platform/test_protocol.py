"""The protocol (issue #13): validation split, manifest split marks, compute-matched doses, controls,
TVR without a manifest column, and guidance tuning that never scores on a dose study's held-out
subjects. Trials run in-process on a small phantom (no Ray), so each check takes seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from salient.dashboards import names
from salient.platform.cohort.manifest import SubjectRecord
from salient.platform.cohort.prepare import load_cohort
from salient.platform.errors import PlatformError
from salient.platform.splits import make_split, training_side
from salient.platform.stage_cache import StageCache
from salient.platform.stages import POOL
from salient.platform.stages.scoring import subject_tvr
from salient.platform.stages.trial import plan_trial, run_trial
from salient.platform.study import load_study
from salient.platform.torch_runtime import configure_torch

STUDY = {
    "name": "protocol",
    "seed": 3,
    "cohort": {
        "source": "phantom",
        "phantom": {"n_subjects": 40, "n_positive": 16, "shape": [48, 48, 12], "spacing": [8.0, 8.0, 10.0], "seed": 4},
        "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-160, 240], "roi": [32, 32, 12]},
    },
    "stages": {
        "mask_vae": {"epochs": 2, "volume_size": [8, 16, 16]},
        "diffusion": {"train_steps": 3, "base_channels": 8, "guidance": {"sampling_steps": 2}},
        "ucmt": {"train_steps": 3},
        "detector": {"steps": 5, "batch_size": 8},
        "aggregator": {"epochs": 2},
    },
    "search_space": {"dose": {"grid": [0.0, 3.0]}, "seed_size": {"grid": [2]}},
    # untrained tiny models fail the pool QC; the QC itself is tested in test_generator_signal.py
    "protocol": {"controls": ["real", "shuffled"], "min_pair_dice": 0.0, "placement_hu": None},
    "evaluation": {
        "prevalences": [0.25],
        "test_fraction": 0.3,
        "validation_fraction": 0.3,
        "bootstrap": 10,
        "prevalence_draws": 2,
    },
}


def _records(n_pos: int, n_neg: int, marks: dict[str, str] | None = None) -> list[SubjectRecord]:
    marks = marks or {}
    ids = [(f"p{i:02d}", 1) for i in range(n_pos)] + [(f"n{i:03d}", 0) for i in range(n_neg)]
    return [SubjectRecord(s, Path(f"{s}.nii.gz"), Path(f"{s}_m.nii.gz"), y, marks.get(s, "")) for s, y in ids]


def test_validation_is_stratified_held_out_and_fixed_across_seed_sizes() -> None:
    records = _records(40, 160)
    a, b = make_split(records, 2, 0, 7, 0.5, 0.25), make_split(records, 10, 0, 7, 0.5, 0.25)
    assert a.validation == b.validation and a.test == b.test
    labels = {r.subject: r.label for r in records}
    # 25% of the 20 positives and 80 negatives left after the (50%) test set
    assert sum(labels[s] for s in a.validation) == 5 and len(a.validation) == 25
    training = set(a.seed_positive) | set(a.train_negative) | set(a.unlabeled)
    assert not training & set(a.validation) and not set(a.validation) & set(a.test)
    assert make_split(records, 2, 1, 7, 0.5, 0.25).validation != a.validation  # another repeat, another set


def test_manifest_marks_are_honoured() -> None:
    marks = {"p00": "train", "p01": "train", "n000": "train", "n001": "unlabeled", "p02": "validation"}
    marks |= {"n002": "validation", "p03": "validation", "n003": "validation"}
    records = _records(10, 30, marks)
    for repeat in range(5):  # train marks can never be drawn into the held-out sets
        split = make_split(records, 1, repeat, 0, 0.5, 0.5)
        assert not {"p00", "p01", "n000"} & (set(split.test) | set(split.validation))
        assert set(split.validation) == {"p02", "n002", "p03", "n003"}  # marked validation, exactly
        assert "n001" in split.unlabeled and "n001" not in split.train_negative  # never a labeled negative
        assert "n001" not in split.test and "n001" not in split.validation


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("protocol")
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "output_dir": str(tmp / "out")}))
    study = load_study(path)
    cohort = load_cohort(study.cohort, study.output_dir)
    configure_torch(1)
    cache = StageCache(tmp / "cache")
    out = {"study": study, "cohort": cohort, "cache": cache}
    for name, params in (
        ("0x", {"dose": 0.0, "seed_size": 2}),
        ("3x", {"dose": 3.0, "seed_size": 2}),
        ("real", {"dose": 3.0, "seed_size": 2, "arm": "real"}),
        ("shuffled", {"dose": 3.0, "seed_size": 2, "arm": "shuffled"}),
    ):
        plan = plan_trial(study, params, 0, 3.0, cohort)
        out[name] = (plan, run_trial(plan, cohort, cache))
    return out


def test_doses_are_compute_matched_and_counted(trials: dict[str, object]) -> None:
    (_, r0), (p3, r3) = trials["0x"], trials["3x"]  # type: ignore[misc]
    m0, m3 = r0.metrics, r3.metrics
    assert m0[names.DETECTOR_STEPS] == m3[names.DETECTOR_STEPS] == 5
    assert m0[names.SEEN_NEGATIVE] == m3[names.SEEN_NEGATIVE] == 5 * 4  # batch 8, one negative per positive
    assert m0[names.AGGREGATOR_STEPS] == m3[names.AGGREGATOR_STEPS]
    assert m0[names.N_ADDED] == 0 and m0[names.SEEN_ADDED_POSITIVE] == 0
    assert m3[names.N_ADDED] == m3[names.N_ADDED_REQUESTED] == round(3.0 * p3.n_real_positive) > 0
    assert m3[names.ADDED_RATIO] == pytest.approx(m3[names.N_ADDED] / m3[names.N_REAL_POSITIVE])
    assert 1 <= m3[names.N_ADDED_BLOCKS] <= m3[names.N_ADDED]
    assert m3[names.SEEN_ADDED_POSITIVE] > 0


def test_every_trial_scores_the_same_validation_and_test_subjects(trials: dict[str, object]) -> None:
    plans = [trials[k][0] for k in ("0x", "3x", "real", "shuffled")]  # type: ignore[index]
    results = [trials[k][1] for k in ("0x", "3x", "real", "shuffled")]  # type: ignore[index]
    for plan, result in zip(plans, results, strict=True):
        assert result.scores is not None
        assert result.scores.of("validation").subject == plan.split.validation
        assert result.scores.of("test").subject == plan.split.test
        assert {"val_auprc", "val_auprc_p0.25", "auprc", "auprc_p0.25"} <= set(result.metrics)
    assert len({p.split.fingerprint() for p in plans}) == 1


def test_controls_add_the_same_counts_from_their_own_sources(trials: dict[str, object]) -> None:
    cache: StageCache = trials["cache"]  # type: ignore[assignment]
    (p3, r3), (pr, rr), (ps, rs) = trials["3x"], trials["real"], trials["shuffled"]  # type: ignore[misc]
    assert r3.metrics[names.N_ADDED] == rs.metrics[names.N_ADDED] == rr.metrics[names.N_ADDED]
    # the real control: no generator, extra real lesion slices of training positives outside the seed
    assert POOL not in pr.keys and POOL in ps.keys and ps.keys[POOL] == p3.keys[POOL]
    assert pr.extra_real and not set(pr.extra_real) & (set(pr.split.seed_positive) | set(pr.split.test))
    assert not set(pr.extra_real) & set(pr.split.validation)
    assert len({p3.keys["detector"], pr.keys["detector"], ps.keys["detector"]}) == 3
    # the shuffled control trains on the same synthetic images with other pairs' masks
    from salient.platform.stages.base import StageRun, TrialData
    from salient.platform.stages.detector import added_positives

    pool = cache.load(p3.keys[POOL])
    run = StageRun("detector", ps, trials["cohort"], cache, TrialData(trials["cohort"], ps), {POOL: pool})  # type: ignore[arg-type]
    shuffled = added_positives(run)
    n = int(r3.metrics[names.N_ADDED])
    assert shuffled is not None and torch.equal(shuffled["image"], pool["image"][:n])
    originals = pool["pseudo_mask"][:n]
    assert not any(torch.equal(shuffled["mask"][i], originals[i]) for i in range(n) if originals[i].any())


def test_tvr_without_a_manifest_column_comes_from_the_masks(trials: dict[str, object]) -> None:
    cohort = trials["cohort"]
    study = trials["study"]
    subject = next(s for s in cohort.subjects.values() if s.label == 1)  # type: ignore[attr-defined]
    stripped = type(subject)(subject.subject, subject.image, subject.mask, subject.label, None)
    window = study.cohort.preprocessing.hu_window  # type: ignore[attr-defined]
    computed = subject_tvr(stripped, window)
    body = int((subject.image > -1 + 1e-6).sum())  # the window floor (-160 HU) is above -500 HU
    assert computed == pytest.approx(float(subject.mask.sum()) / body) and 0 < computed < 1
    assert subject_tvr(subject, window) == subject.tvr  # a manifest value wins


def test_tuning_never_holds_out_a_dose_study_test_or_validation_subject(trials: dict[str, object]) -> None:
    from salient.platform.guidance_tuning import check_profile_respects
    from salient.platform.privacy import subject_tokens

    study, cohort = trials["study"], trials["cohort"]
    ev = study.evaluation  # type: ignore[attr-defined]
    allowed = training_side(cohort.records, 2, study.seed, ev.test_fraction, ev.validation_fraction)  # type: ignore[attr-defined]
    for repeat in range(2):
        split = make_split(cohort.records, 0, repeat, study.seed, ev.test_fraction, ev.validation_fraction)  # type: ignore[attr-defined]
        assert not allowed & (set(split.test) | set(split.validation))
    profile = Path(str(study.output_dir)) / "profile.yaml"  # type: ignore[attr-defined]
    test_subject = trials["3x"][0].split.test[0]  # type: ignore[index]
    for held, refused in (([test_subject], True), (sorted(allowed)[:3], False)):
        profile.write_text(yaml.safe_dump({"held_out_subjects": subject_tokens(held)}))
        with_profile = study.model_copy(update={"guidance_profile": profile})  # type: ignore[attr-defined]
        if refused:
            with pytest.raises(PlatformError, match="test or validation subjects"):
                check_profile_respects(with_profile, cohort)  # type: ignore[arg-type]
        else:
            check_profile_respects(with_profile, cohort)  # type: ignore[arg-type]


def test_selection_is_refused_on_test_metrics(tmp_path: Path) -> None:
    from salient.platform.errors import StudyError

    path = tmp_path / "s.yaml"
    for metric, ok in (("auprc", False), ("auprc_p0.25", False), ("val_auprc_p0.25", True), ("val_f1", False)):
        path.write_text(yaml.safe_dump({**STUDY, "sampler": {"name": "grid", "metric": metric}}))
        if ok:
            assert load_study(path).sampler.metric == metric
            continue
        with pytest.raises(StudyError, match=r"sampler\.metric") as info:
            load_study(path)
        assert ("test set only reports" in str(info.value)) == (not metric.startswith("val_"))
    path.write_text(
        yaml.safe_dump(
            {
                **STUDY,
                "search_space": {"dose": {"uniform": [0, 4]}, "seed_size": {"grid": [2]}},
                "sampler": {"name": "tpe"},
            }
        )
    )
    with pytest.raises(StudyError, match="controls run at the doses of a dose grid"):
        load_study(path)
    space = {"dose": {"grid": [0, 4]}, "seed_size": {"grid": [2]}, "detector.lr": {"loguniform": [1e-4, 1e-2]}}
    path.write_text(yaml.safe_dump({**STUDY, "search_space": space, "sampler": {"name": "tpe"}}))
    with pytest.raises(StudyError, match=r"controls run in grid studies; the search space samples \['detector\.lr'\]"):
        load_study(path)


def test_control_doses_limit_where_the_controls_run(tmp_path: Path) -> None:
    """``protocol.control_doses``: controls only at those doses of the grid; the plan, its count
    before expansion and the loader's refusals agree."""
    from salient.platform.errors import StudyError
    from salient.platform.study.plan import build_plan
    from salient.platform.study.plan_size import count_plan

    path = tmp_path / "s.yaml"
    space = {"dose": {"grid": [0.0, 2.0, 8.0]}, "seed_size": {"grid": [2]}}
    protocol = {**STUDY["protocol"], "control_doses": [8.0]}  # type: ignore[dict-item]
    path.write_text(yaml.safe_dump({**STUDY, "search_space": space, "protocol": protocol, "repeats": 2}))
    study = load_study(path)
    trials = build_plan(study).trials
    arms = sorted((t.repeat, float(t.params["dose"]), t.params.get("arm", "synthetic")) for t in trials)
    assert arms == sorted(
        (r, d, a)
        for r in (0, 1)
        for d, a in [(0.0, "synthetic"), (2.0, "synthetic"), (8.0, "synthetic"), (8.0, "real"), (8.0, "shuffled")]
    )
    counted = count_plan(study.search_space, 2, 1, 2, study.protocol.control_doses)
    assert counted.trials == len(arms) == 10
    for bad, message in (
        ({**protocol, "control_doses": [4.0]}, r"control doses must be doses of the grid > 0: \[2.0, 8.0\]"),
        ({"control_doses": [2.0]}, "control doses without controls run nothing"),
        ({**protocol, "control_doses": [0.0]}, "greater than 0"),
    ):
        path.write_text(yaml.safe_dump({**STUDY, "search_space": space, "protocol": bad}))
        with pytest.raises(StudyError, match=message):
            load_study(path)


def test_a_real_control_the_cohort_cannot_fill_is_refused(trials: dict[str, object], tmp_path: Path) -> None:
    """The real control adds real lesion slices of training-side positives outside the seed; where
    there are fewer than the dose asks for, the run stops before training (exit 2), naming the most
    it could be, instead of a control that differs from its synthetic arm in count."""
    from salient.platform.errors import StudyError
    from salient.platform.pipeline import _resolve_trials
    from salient.platform.study.plan import build_plan

    cohort = trials["cohort"]
    real_plan, real_result = trials["real"]  # type: ignore[misc]
    masks = [np.asarray(cohort.subjects[s].mask) for s in real_plan.extra_real]  # type: ignore[attr-defined]
    extra = sum(int((m.reshape(len(m), -1) > 0).any(axis=1).sum()) for m in masks)  # lesion slices
    assert extra >= real_plan.n_synthetic  # the fixture's control at 3x is filled ...
    assert real_result.metrics[names.N_ADDED] == real_plan.n_synthetic  # ... and adds exactly that many
    fits = extra / real_plan.n_real_positive
    path = tmp_path / "s.yaml"
    for dose, refused in ((3.0, False), (float(int(fits) + 2), True)):
        space = {"dose": {"grid": [0.0, dose]}, "seed_size": {"grid": [2]}}
        path.write_text(yaml.safe_dump({**STUDY, "search_space": space, "output_dir": str(tmp_path / "out")}))
        study = load_study(path)
        if not refused:
            assert len(_resolve_trials(study, build_plan(study), cohort)) == 4
            continue
        with pytest.raises(StudyError, match=rf"protocol\.control_doses.*at most dose {fits:.2f}"):
            _resolve_trials(study, build_plan(study), cohort)
    # with doses in slices, the largest fillable dose is the spare slices themselves
    space = {"dose": {"grid": [0.0, float(extra + 5)]}, "seed_size": {"grid": [2]}}
    protocol = {**STUDY["protocol"], "dose_unit": "slices"}  # type: ignore[dict-item]
    path.write_text(
        yaml.safe_dump({**STUDY, "search_space": space, "protocol": protocol, "output_dir": str(tmp_path / "out")})
    )
    study = load_study(path)
    with pytest.raises(StudyError, match=rf"adds {extra + 5} real lesion slices.*at most dose {extra:.2f}"):
        _resolve_trials(study, build_plan(study), cohort)


def test_the_trial_key_changes_with_how_metrics_are_computed(
    trials: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished trial is found again by its key (trial store, MLflow): changing only the evaluation
    settings or the evaluation code keeps every stage key but must re-score the trial, not reuse
    metrics computed the old way."""
    from salient.platform.stages import trial as trial_module

    study, cohort = trials["study"], trials["cohort"]
    plan, _ = trials["3x"]  # type: ignore[misc]
    same = plan_trial(study, plan.params, 0, 3.0, cohort)  # type: ignore[arg-type]
    assert same.trial_key == plan.trial_key
    for update in ({"prevalences": (0.2,)}, {"prevalence_draws": 3}, {"bootstrap": 11}, {"tvr_prevalence": 0.1}):
        other = study.model_copy(update={"evaluation": study.evaluation.model_copy(update=update)})  # type: ignore[attr-defined]
        changed = plan_trial(other, plan.params, 0, 3.0, cohort)  # type: ignore[arg-type]
        assert changed.keys == plan.keys and changed.trial_key != plan.trial_key, update
    before = plan.trial_key  # a property: computed when read
    monkeypatch.setattr(trial_module, "EVALUATION_VERSION", "other-evaluation-code")
    assert plan_trial(study, plan.params, 0, 3.0, cohort).trial_key != before  # type: ignore[arg-type]
