"""A finished trial's numbers (stages/scoring.py) on hand-made subjects, scores and stage metadata.

No model trains here: the subjects are a few voxels, the aggregator's output is written by hand
and the stage metadata is stored in a real stage cache. Expectations come from scikit-learn
(whole-set metrics), hand-counted voxels (TVR) and :func:`evaluate_subjects` (prevalence metrics:
the evaluation rules themselves are pinned in test_evaluation.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from salient.dashboards import names
from salient.platform.cohort.prepare import LoadedCohort
from salient.platform.cohort.preprocess import PreprocessedSubject
from salient.platform.evaluation import evaluate_subjects
from salient.platform.finite import NonFiniteMetricError
from salient.platform.splits import Split
from salient.platform.stage_cache import StageCache, StageKey
from salient.platform.stages import AGGREGATOR, DETECTOR, POOL
from salient.platform.stages.base import derive_seed
from salient.platform.stages.scoring import SubjectScores, subject_scores, subject_tvr, trial_metrics
from salient.platform.stages.trial import TrialPlan
from salient.platform.study import Study, load_study
from sklearn.metrics import average_precision_score, roc_auc_score

STUDY = {
    "name": "scoring",
    "seed": 11,
    "cohort": {
        "source": "phantom",
        "phantom": {"n_subjects": 40, "n_positive": 16, "shape": [48, 48, 12], "spacing": [8.0, 8.0, 10.0], "seed": 4},
        "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-1000, 1000], "roi": [32, 32, 12]},
    },
    # untrained tiny models fail the pool QC; the QC itself is tested in test_generator_signal.py
    "protocol": {"min_pair_dice": 0.0, "placement_hu": None},
    "search_space": {"dose": {"grid": [0.0, 2.0]}, "seed_size": {"grid": [2]}},
    "evaluation": {"prevalences": [0.25], "bootstrap": 40, "prevalence_draws": 3, "tvr_prevalence": 0.2},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    tmp = tmp_path_factory.mktemp("scoring")
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "output_dir": str(tmp / "out")}))
    return load_study(path)


def _subject(
    name: str, label: int, image: list[float], mask: list[int], tvr: float | None = None
) -> PreprocessedSubject:
    """A (1, 1, n) volume: the voxel values in the [-1, 1] image scale and the lesion mask."""
    return PreprocessedSubject(
        name, np.asarray(image, np.float32).reshape(1, 1, -1), np.asarray(mask, np.uint8).reshape(1, 1, -1), label, tvr
    )


def test_tvr_is_the_manifest_value_or_lesion_over_body_voxels() -> None:
    # window [-1000, 1000] HU: -500 HU (the body threshold) is -0.5 on the image scale; a voxel
    # exactly there is not body, one just above is
    s = _subject("a", 1, [-1.0, -0.5, -0.4999, 0.0, 0.7, 1.0], [0, 0, 1, 1, 0, 0])
    assert subject_tvr(s, (-1000.0, 1000.0)) == pytest.approx(2 / 4)
    # window [-160, 240]: its floor (-160 HU) is above -500 HU, so the floor -1 is the threshold
    assert subject_tvr(s, (-160.0, 240.0)) == pytest.approx(2 / 5)
    # window [-600, 400]: -500 HU is (100 / 1000) * 2 - 1 = -0.8 on the image scale
    t = _subject("b", 1, [-0.85, -0.8, -0.79, 0.5], [0, 0, 0, 1])
    assert subject_tvr(t, (-600.0, 400.0)) == pytest.approx(1 / 2)
    # the manifest's value wins, also when it is 0
    assert subject_tvr(_subject("c", 1, [0.0, 0.0], [1, 1], tvr=0.0), (-1000.0, 1000.0)) == 0.0
    assert subject_tvr(_subject("d", 1, [0.0, 0.0], [1, 1], tvr=0.125), (-1000.0, 1000.0)) == 0.125
    # no lesion, no body: 0, not a division by zero; one body voxel, all lesion: 1
    assert subject_tvr(_subject("e", 0, [-1.0, -1.0], [0, 0]), (-1000.0, 1000.0)) == 0.0
    assert subject_tvr(_subject("f", 1, [0.0, -1.0], [1, 0]), (-1000.0, 1000.0)) == 1.0


def _scores() -> SubjectScores:
    return SubjectScores(
        ("validation", "test", "validation", "test", "test"),
        ("v1", "t1", "v2", "t2", "t3"),
        np.array([1, 0, 0, 1, 0]),
        np.array([0.1, 0.0, 0.0, 0.3, 0.0]),
        np.array([0.9, 0.2, 0.4, 0.8, 0.1]),
        np.array([0.7, 0.3, 0.5, 0.6, 0.2]),
    )


def test_subject_scores_of_one_role_and_as_rows() -> None:
    test = _scores().of("test")
    assert test.role == ("test",) * 3 and test.subject == ("t1", "t2", "t3")
    assert test.label.tolist() == [0, 1, 0] and test.tvr.tolist() == [0.0, 0.3, 0.0]
    assert test.score.tolist() == [0.2, 0.8, 0.1] and test.max_slice.tolist() == [0.3, 0.6, 0.2]
    val = _scores().of("validation")
    assert val.subject == ("v1", "v2") and val.label.tolist() == [1, 0] and val.score.tolist() == [0.9, 0.4]
    rows = _scores().rows()
    assert rows[1] == {"role": "test", "subject": "t1", "label": 0, "tvr": 0.0, "score": 0.2, "max_slice": 0.3}
    assert [r["subject"] for r in rows] == ["v1", "t1", "v2", "t2", "t3"]
    # plain Python numbers: the rows go into a CSV artifact and JSON
    assert all(type(r["label"]) is int and type(r["score"]) is float and type(r["tvr"]) is float for r in rows)
    assert all(type(r["max_slice"]) is float for r in rows)


def test_subject_scores_of_unequal_length_are_refused() -> None:
    # one subject short: never silently truncated into the scores artifact
    s = _scores()
    short = SubjectScores(s.role, s.subject[:-1], s.label, s.tvr, s.score, s.max_slice)
    with pytest.raises(ValueError, match="zip"):
        short.rows()
    with pytest.raises(ValueError, match="zip"):
        short.of("test")


def _plan(study: Study, split: Split, keys: dict[str, StageKey], n_real_positive: int = 8) -> TrialPlan:
    return TrialPlan(study, {"dose": 2.0, "seed_size": 2}, 1, study.stages, split, n_real_positive, 16, 16, keys=keys)


def test_subject_scores_are_the_aggregators_in_split_order(study: Study) -> None:
    subjects = {
        "v1": _subject("v1", 1, [0.0, 0.0, 0.0, 0.0], [1, 0, 0, 0]),  # tvr from the mask: 1 / 4
        "v2": _subject("v2", 0, [0.0, 0.0], [0, 0], tvr=0.0),
        "t1": _subject("t1", 0, [0.0, -1.0], [0, 0]),
        "t2": _subject("t2", 1, [0.0, 0.0], [0, 1], tvr=0.3),  # the manifest's value wins
        "x": _subject("x", 1, [0.0], [1]),  # a training subject: never scored
    }
    cohort = LoadedCohort((), subjects, "fp")
    split = Split(("x",), (), (), ("v1", "v2"), ("t1", "t2"))
    aggregated = {
        "validation": {"scores": torch.tensor([0.9, 0.4]), "max_slice": torch.tensor([0.7, 0.5])},
        "test": {"scores": torch.tensor([0.25, 0.75]), "max_slice": torch.tensor([0.5, 1.0])},
    }
    got = subject_scores(_plan(study, split, {}), cohort, aggregated)
    assert got.role == ("validation", "validation", "test", "test") and got.subject == ("v1", "v2", "t1", "t2")
    assert got.label.tolist() == [1, 0, 0, 1] and got.label.dtype.kind == "i"
    assert got.tvr.tolist() == pytest.approx([0.25, 0.0, 0.0, 0.3])
    assert got.score.tolist() == pytest.approx([0.9, 0.4, 0.25, 0.75])
    assert got.max_slice.tolist() == pytest.approx([0.7, 0.5, 0.5, 1.0])
    assert got.score.dtype == got.max_slice.dtype == got.tvr.dtype == np.float64


def _held_out(seed: int, n: int, n_pos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, TVR, aggregator score, max-slice score (SubjectScores' order) of ``n`` subjects."""
    rng = np.random.default_rng(seed)
    label = np.r_[np.ones(n_pos, int), np.zeros(n - n_pos, int)]
    score = rng.normal(size=n) + label
    max_slice = rng.normal(size=n) + 0.5 * label
    tvr = np.where(label == 1, rng.uniform(0.001, 0.05, n), 0.0)
    return label, tvr, score, max_slice


def _trial_scores() -> SubjectScores:
    v, t = _held_out(0, 40, 12), _held_out(1, 48, 12)
    return SubjectScores(
        ("validation",) * 40 + ("test",) * 48,
        tuple(f"v{i}" for i in range(40)) + tuple(f"t{i}" for i in range(48)),
        *(np.r_[a, b] for a, b in zip(v, t, strict=True)),
    )


def _cache(tmp_path: Path, pool: bool) -> tuple[StageCache, dict[str, StageKey]]:
    cache = StageCache(tmp_path / "cache")
    keys = {AGGREGATOR: StageKey(AGGREGATOR, "agg0"), DETECTOR: StageKey(DETECTOR, "det0")}
    metas = {
        AGGREGATOR: {"attention_overlap": 0.375, "steps": 120},
        DETECTOR: {
            "n_added": 14,
            "n_added_blocks": 5,
            "steps": 300,
            "seed_positive_seen": 1100,
            "added_positive_seen": 1300,
            "negative_seen": 2400,
        },
    }
    if pool:
        keys[POOL] = StageKey(POOL, "pool0")
        metas[POOL] = {
            "ms_ssim": 0.61,
            "frechet": 12.5,
            "synthetic_ll_std": 0.2,
            "real_ll_std": 0.25,
            "n_slices": 16,
            "mask_guided": True,  # a flag, not a measurement
            "extractor": "random-conv-64d-seed0",  # a text
        }
    for stage, key in keys.items():
        cache.get_or_compute(key, lambda stage=stage: ({}, metas[stage]))
    return cache, keys


def test_trial_metrics_of_validation_and_test(study: Study, tmp_path: Path) -> None:
    cache, keys = _cache(tmp_path, pool=True)
    split = Split((), (), (), tuple(f"v{i}" for i in range(40)), tuple(f"t{i}" for i in range(48)))
    plan = _plan(study, split, keys)
    scores = _trial_scores()
    metrics = trial_metrics(plan, cache, scores)
    val, test = scores.of("validation"), scores.of("test")
    # whole held-out sets, against scikit-learn: validation prefixed, test not
    assert metrics["val_auprc"] == pytest.approx(average_precision_score(val.label, val.score), abs=1e-12)
    assert metrics["val_auroc"] == pytest.approx(roc_auc_score(val.label, val.score), abs=1e-12)
    assert metrics["auprc"] == pytest.approx(average_precision_score(test.label, test.score), abs=1e-12)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(test.label, test.score), abs=1e-12)
    assert metrics["maxslice_auprc"] == pytest.approx(average_precision_score(test.label, test.max_slice), abs=1e-12)
    assert metrics["val_maxslice_auroc"] == pytest.approx(roc_auc_score(val.label, val.max_slice), abs=1e-12)
    assert metrics["n_pos"] == 12 and metrics["n_neg"] == 36 and metrics["val_n_pos"] == 12
    # prevalence metrics: the study's prevalences, draws and level, seeded by study seed and
    # repeat - the same subsets for validation, test and the max-slice score
    ev = study.evaluation
    common = {"draws": 3, "ci": 0.95, "seed": derive_seed(11, 1, "evaluation")}
    test_ref = evaluate_subjects(
        test.label, test.score, (0.25,), bootstrap=40, tvr=test.tvr, tvr_prevalence=0.2, **common
    )
    val_ref = evaluate_subjects(val.label, val.score, (0.25,), bootstrap=0, **common)
    max_ref = evaluate_subjects(test.label, test.max_slice, (0.25,), bootstrap=0, **common)
    assert (ev.prevalences, ev.prevalence_draws, ev.bootstrap, ev.tvr_prevalence) == ((0.25,), 3, 40, 0.2)
    for k in ("auprc_p0.25", "auroc_p0.25", "auprc_p0.25_ci_low", "auroc_p0.25_ci_high", "n_pos_p0.25"):
        assert metrics[k] == test_ref[k]
    for k in ("auprc_tvr_small", "auroc_tvr_large"):
        assert metrics[k] == test_ref[k]
    assert metrics["val_auprc_p0.25"] == val_ref["auprc_p0.25"] and metrics["val_n_neg_p0.25"] == val_ref["n_neg_p0.25"]
    assert metrics["maxslice_auprc_p0.25"] == max_ref["auprc_p0.25"]
    # validation: no bootstrap and no TVR strata; max-slice: the metrics only, no counts or intervals
    assert not [k for k in metrics if k.startswith("val_") and ("_ci_" in k or "_tvr_" in k)]
    maxslice = {k for k in metrics if k.startswith("maxslice_")}
    assert maxslice == {"maxslice_auprc", "maxslice_auroc", "maxslice_auprc_p0.25", "maxslice_auroc_p0.25"}
    assert {k for k in metrics if k.startswith("val_maxslice_")} == {f"val_{k}" for k in maxslice}
    # the stages' bookkeeping
    assert metrics["attention_overlap"] == 0.375
    assert metrics[names.N_REAL_POSITIVE] == 8.0 and metrics[names.N_ADDED] == 14.0
    assert metrics[names.N_ADDED_REQUESTED] == 16.0 and metrics[names.N_ADDED_BLOCKS] == 5.0
    assert metrics[names.ADDED_RATIO] == pytest.approx(14 / 8)
    assert metrics[names.DETECTOR_STEPS] == 300.0 and metrics[names.AGGREGATOR_STEPS] == 120.0
    assert metrics[names.SEEN_SEED_POSITIVE] == 1100.0 and metrics[names.SEEN_ADDED_POSITIVE] == 1300.0
    assert metrics[names.SEEN_NEGATIVE] == 2400.0
    # the pool's measurements: realism named pool_..., synthetic_/real_ as they are; never its
    # compute time (it varies run to run), flags or texts
    assert metrics["pool_ms_ssim"] == 0.61 and metrics["pool_frechet"] == 12.5 and metrics["pool_n_slices"] == 16
    assert metrics["synthetic_ll_std"] == 0.2 and metrics["real_ll_std"] == 0.25
    assert not {"pool_compute_seconds", "pool_mask_guided", "pool_extractor", "pool_synthetic_ll_std"} & set(metrics)
    assert not {"pool_stage", "pool_key"} & set(metrics)  # the cache's own fields are texts too


def test_trial_metrics_without_a_pool_or_real_positives(study: Study, tmp_path: Path) -> None:
    cache, keys = _cache(tmp_path, pool=False)
    split = Split((), (), (), tuple(f"v{i}" for i in range(40)), tuple(f"t{i}" for i in range(48)))
    metrics = trial_metrics(_plan(study, split, keys, n_real_positive=0), cache, _trial_scores())
    assert not [k for k in metrics if k.startswith(("pool_", "synthetic_", "real_"))]
    assert metrics[names.ADDED_RATIO] == 14.0  # no real positive slice: the ratio is over 1, not a division by 0


def test_a_non_finite_primary_metric_fails_the_trial_and_names_it(study: Study, tmp_path: Path) -> None:
    cache, keys = _cache(tmp_path, pool=False)
    split = Split((), (), (), tuple(f"v{i}" for i in range(40)), tuple(f"t{i}" for i in range(48)))
    plan = _plan(study, split, keys)
    scores = _trial_scores()
    for role in ("validation", "test"):
        broken = scores.score.copy()
        broken[scores.role.index(role)] = np.nan  # one subject's score of this role
        bad = SubjectScores(scores.role, scores.subject, scores.label, scores.tvr, broken, scores.max_slice)
        with pytest.raises(NonFiniteMetricError) as info:
            trial_metrics(plan, cache, bad)
        message = str(info.value)
        assert f"trial {plan.trial_key} (repeat 1, {plan.params})" in message
        prefix = "val_" if role == "validation" else ""
        assert f"{prefix}auroc" in message


def test_every_primary_metric_is_checked_under_its_own_name(study: Study, tmp_path: Path) -> None:
    # A NaN score makes AUROC NaN (ranks propagate NaN; AUPRC ranks NaN last and stays finite). On
    # a subject that no prevalence subset draws, only the whole-set AUROC is NaN: the error names
    # exactly that metric.
    cache, keys = _cache(tmp_path, pool=False)
    v = _held_out(0, 40, 12)
    label, tvr, score, max_slice = _held_out(2, 66, 30)  # at 0.25: 12 of the 30 positives per subset
    split = Split((), (), (), tuple(f"v{i}" for i in range(40)), tuple(f"t{i}" for i in range(66)))
    plan = _plan(study, split, keys)
    common = {"draws": 3, "ci": 0.95, "seed": derive_seed(11, 1, "evaluation")}
    for i in range(30):  # a positive outside every subset, by the evaluation's own draws
        broken = score.copy()
        broken[i] = np.nan
        ref = evaluate_subjects(label, broken, (0.25,), bootstrap=0, **common)
        if np.isnan(ref["auroc"]) and np.isfinite(ref["auroc_p0.25"]):
            break
    else:
        pytest.fail("no positive is left out of every prevalence subset; change the data")
    scores = SubjectScores(
        ("validation",) * 40 + ("test",) * 66,
        split.validation + split.test,
        *(np.r_[a, b] for a, b in zip(v, (label, tvr, broken, max_slice), strict=True)),
    )
    with pytest.raises(NonFiniteMetricError) as info:
        trial_metrics(plan, cache, scores)
    message = str(info.value)
    assert "auroc=nan" in message and "auroc_p0.25" not in message and "auprc" not in message
