"""Paired significance, rule by rule, on scores whose every bootstrap replicate is known exactly.

AUROC of tied scores is 0.5, of perfectly separated scores 1 and of reversed ones 0 - on the whole
set, on any prevalence subset and on any stratified resample. A dose whose scores separate the
classes while the 0x trial's are tied therefore has a gain of exactly +0.5 with the interval
[+0.5, +0.5], whatever the bootstrap draws; AUPRC of tied scores is the set's prevalence, so its
gains are known too. The decisions (therapeutic, toxic, ties, order, sentences) are then pinned to
exact values, not to ranges; the interval's percentiles are pinned by their algebra (two
replicates, several levels) rather than by re-running the bootstrap.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
from salient.dashboards.significance import Finding, Gain, dose_findings, paired_gains, ties_to_smallest
from sklearn.metrics import average_precision_score

TIED, PERFECT, REVERSED = "tied", "perfect", "reversed"


def _pattern(kind: str, labels: np.ndarray) -> np.ndarray:
    return {TIED: np.full(len(labels), 0.5), PERFECT: labels.astype(float), REVERSED: 1.0 - labels}[kind]


def _study(
    doses: Mapping[float, str | tuple[str, str]],
    *,
    n_pos: int = 10,
    n_neg: int = 30,
    seed_size: object = 6,
    repeat: int = 0,
    arm: str | None = None,
    base: str = TIED,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One 0x trial (``base`` scores) and one trial per dose: ``doses[d]`` is the score pattern on
    validation and test, or a (validation, test) pair of patterns."""
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    trials, scores = [], []
    for dose, kind in {0.0: base, **doses}.items():
        name = f"s{seed_size}_r{repeat}_d{dose:g}" + (f"_{arm}" if arm and dose > 0 else "")
        row: dict[str, object] = {"trial": name, "seed_size": seed_size, "dose": dose, "repeat": repeat}
        if arm is not None:
            row["arm"] = arm if dose > 0 else None
        trials.append(row)
        for role, k in zip(("validation", "test"), (kind, kind) if isinstance(kind, str) else kind, strict=True):
            s = _pattern(k, labels)
            scores.append(
                pd.DataFrame(
                    {
                        "trial": name,
                        "role": role,
                        "subject": [f"{role[0]}{repeat}_{i:03d}" for i in range(len(labels))],
                        "label": labels,
                        "score": s,
                        "max_slice": 1.0 - s,
                    }
                )
            )
    return pd.DataFrame(trials), pd.concat(scores, ignore_index=True)


def _noisy(seed: int = 0, doses: tuple[float, ...] = (1.0, 2.0)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random scores (no known answer): for the interval's algebra and the input checks."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(20, int), np.zeros(60, int)]
    trials, scores = [], []
    for dose in (0.0, *doses):
        name = f"d{dose:g}"
        trials.append({"trial": name, "seed_size": 6, "dose": dose, "repeat": 0})
        for role in ("validation", "test"):
            s = rng.normal(size=len(labels)) + (0.5 + 0.3 * dose) * labels
            other = s + rng.normal(0, 0.7, len(labels))  # the max-slice score: related, not equal
            scores.append(
                pd.DataFrame(
                    {
                        "trial": name,
                        "role": role,
                        "subject": [f"{role[0]}{i:03d}" for i in range(len(labels))],
                        "label": labels,
                        "score": s,
                        "max_slice": other,
                    }
                )
            )
    return pd.DataFrame(trials), pd.concat(scores, ignore_index=True)


FAST = {"n_boot": 60, "draws": 2, "seed": 3}


def _gain(lo: float, hi: float, gain: float = 0.0, dose: float = 2.0, **kw: object) -> Gain:
    fields: dict[str, object] = {
        "arm": "synthetic",
        "seed_size": 6,
        "prevalence": None,
        "dose": dose,
        "role": "validation",
        "metric": "auprc",
        "gain": gain,
        "ci_low": lo,
        "ci_high": hi,
        "level": 0.975,
        "n_doses": 2,
        "n_repeats": 1,
        "n_subjects": 40,
    }
    return Gain(**{**fields, **kw})


def test_direction_needs_the_interval_to_exclude_zero() -> None:
    cases = {
        (0.0, 0.2): "none",  # touching 0 does not exclude it
        (1e-9, 0.2): "gain",
        (0.5, 1.5): "gain",
        (-0.2, 0.0): "none",
        (-0.2, -1e-9): "loss",
        (-1.5, -0.5): "loss",
        (-0.2, 0.5): "none",
        (-0.9, 0.9): "none",
    }
    assert {k: _gain(*k).direction for k in cases} == cases
    assert _gain(-0.0104, 0.25, gain=0.1234).text() == "+0.123 [-0.010, +0.250]"


@pytest.mark.parametrize("prevalence", [None, 0.2, 0.1])
def test_a_separating_dose_over_a_tied_0x_has_an_exact_gain(prevalence: float | None) -> None:
    trials, scores = _study({2.0: PERFECT, 4.0: REVERSED, 8.0: TIED})
    kw = {**FAST, "prevalence": prevalence}
    auroc = {g.dose: g for g in paired_gains(trials, scores, role="validation", metric="auroc", **kw)}
    assert sorted(auroc) == [2.0, 4.0, 8.0]  # every dose > 0, never 0x against itself
    assert [(auroc[d].gain, auroc[d].ci_low, auroc[d].ci_high) for d in (2.0, 4.0, 8.0)] == [
        (0.5, 0.5, 0.5),
        (-0.5, -0.5, -0.5),
        (0.0, 0.0, 0.0),
    ]
    # AUPRC: perfect 1, tied the prevalence (0.25 on the whole set of 10 + 30, else the subsets')
    auprc = {g.dose: g for g in paired_gains(trials, scores, role="test", metric="auprc", **kw)}
    expected = 1 - (0.25 if prevalence is None else prevalence)
    assert auprc[2.0].gain == pytest.approx(expected, abs=1e-12)
    assert (auprc[2.0].ci_low, auprc[2.0].ci_high) == pytest.approx((expected, expected), abs=1e-12)
    g = auprc[2.0]
    assert (g.arm, g.seed_size, g.prevalence, g.role, g.metric) == ("synthetic", 6, prevalence, "test", "auprc")
    assert (g.n_doses, g.n_repeats, g.n_subjects) == (3, 1, 40)
    assert g.level == pytest.approx(1 - 0.05 / 3)


def test_the_gain_is_paired_by_subject_not_by_row_and_uses_the_named_score() -> None:
    trials, scores = _noisy()
    reference = paired_gains(trials, scores, role="validation", prevalence=None, **FAST)
    shuffled = scores.sample(frac=1.0, random_state=0).reset_index(drop=True)
    again = paired_gains(trials, shuffled, role="validation", prevalence=None, **FAST)
    assert [(g.gain, g.ci_low, g.ci_high) for g in again] == [(g.gain, g.ci_low, g.ci_high) for g in reference]
    # the gain is the difference of the metric of the two trials on the same subjects
    val = scores[scores["role"] == "validation"]
    d0, d2 = val[val["trial"] == "d0"], val[val["trial"] == "d2"]
    hand = average_precision_score(d2["label"], d2["score"]) - average_precision_score(d0["label"], d0["score"])
    assert reference[1].dose == 2.0 and reference[1].gain == pytest.approx(hand, abs=1e-12)
    # another score column: max_slice here is the reverse of the separating score
    _, exact = _study({2.0: PERFECT})
    trials2, _ = _study({2.0: PERFECT})
    (g,) = paired_gains(trials2, exact, role="test", prevalence=None, metric="auroc", score="max_slice", **FAST)
    assert (g.gain, g.ci_low, g.ci_high) == (-0.5, -0.5, -0.5)


def test_the_interval_is_the_equal_tailed_percentile_interval() -> None:
    # Two replicates r1 < r2 per dose (n_boot = 2): numpy's percentile q is r1 + q (r2 - r1), so
    # an interval at level L has width (1 - alpha) (r2 - r1) around the midpoint (r1 + r2) / 2,
    # with alpha = (1 - L) / k over k doses. The replicates do not depend on the level.
    trials, scores = _noisy(doses=(1.0, 2.0))
    kw = {"role": "validation", "prevalence": None, "n_boot": 2, "draws": 1, "seed": 5}
    plain = {L: paired_gains(trials, scores, level=L, adjust=False, **kw) for L in (0.5, 0.9)}
    adjusted = paired_gains(trials, scores, level=0.9, adjust=True, **kw)
    for i in range(2):
        half, ninety, bonferroni = plain[0.5][i], plain[0.9][i], adjusted[i]
        spread = (half.ci_high - half.ci_low) / 0.5
        assert spread > 0
        mid = (half.ci_low + half.ci_high) / 2
        for g, width in ((ninety, 0.9), (bonferroni, 1 - 0.1 / 2)):
            assert g.ci_low == pytest.approx(mid - width * spread / 2, abs=1e-12)
            assert g.ci_high == pytest.approx(mid + width * spread / 2, abs=1e-12)
        assert (ninety.level, bonferroni.level) == pytest.approx((0.9, 0.95))
        assert (ninety.n_doses, bonferroni.n_doses) == (1, 2)


def test_repeats_are_resampled_as_units() -> None:
    # Repeat 0 (10 + 30 subjects) gains 1 - 0.25 = 0.75 in AUPRC, repeat 1 (25 + 25) 1 - 0.5 = 0.5,
    # in every replicate. Resampling the 2 repeats gives means 0.5, 0.625, 0.75 with probabilities
    # 1/4, 1/2, 1/4: the 20% and 80% percentiles are exactly 0.5 and 0.75.
    a = _study({2.0: PERFECT}, repeat=0)
    b = _study({2.0: PERFECT}, repeat=1, n_pos=25, n_neg=25)
    trials, scores = (pd.concat([x, y], ignore_index=True) for x, y in zip(a, b, strict=True))
    (g,) = paired_gains(trials, scores, role="validation", prevalence=None, level=0.6, n_boot=4000, seed=0)
    assert g.n_repeats == 2 and g.gain == pytest.approx(0.625, abs=1e-12)
    assert (g.ci_low, g.ci_high) == pytest.approx((0.5, 0.75), abs=1e-12)
    # a repeat without its 0x trial is left out (here the first one listed), not the whole dose
    c = _study({2.0: PERFECT}, repeat=2, n_pos=20, n_neg=20)
    no_base = c[0][c[0]["dose"] > 0]
    trials3 = pd.concat([no_base, trials], ignore_index=True)
    scores3 = pd.concat([c[1], scores], ignore_index=True)
    (g3,) = paired_gains(trials3, scores3, role="validation", prevalence=None, level=0.6, n_boot=4000, seed=0)
    assert g3.n_repeats == 2 and g3.gain == pytest.approx(0.625, abs=1e-12)
    # without any 0x trial there is nothing to compare
    assert paired_gains(no_base, c[1], role="validation", prevalence=None, **FAST) == []
    # a dose with no comparable repeat is left out, not the doses after it
    d = _study({4.0: PERFECT}, repeat=3, n_pos=20, n_neg=20)
    later = pd.concat([no_base, d[0]], ignore_index=True)
    (g4,) = paired_gains(later, pd.concat([c[1], d[1]]), role="validation", prevalence=None, metric="auroc", **FAST)
    assert (g4.dose, g4.gain, g4.n_repeats) == (4.0, 0.5, 1)


def test_within_repeat_noise_carries_into_the_combined_interval() -> None:
    # Repeat 0 gains exactly 0 in every replicate; repeat 1 gains about +0.4, with sampling noise.
    # The mean of two resampled repeats is 0 (1/4), 0 and a repeat-1 replicate (1/2) or two
    # repeat-1 replicates (1/4): its 40% and 60% percentiles both lie among the mixed means,
    # which differ from replicate to replicate - unless one replicate stood in for all.
    flat = _study({2.0: TIED}, repeat=0)
    trials1, scores1 = _noisy(seed=3, doses=(2.0,))
    trials1 = trials1.assign(repeat=1, trial=trials1["trial"] + "_r1")
    scores1 = scores1.assign(trial=scores1["trial"] + "_r1")
    base = scores1["trial"] == "d0_r1"
    scores1.loc[base, "score"] = 0.5  # a tied 0x: AUROC 0.5
    trials = pd.concat([flat[0], trials1], ignore_index=True)
    scores = pd.concat([flat[1], scores1], ignore_index=True)
    (g,) = paired_gains(trials, scores, role="validation", prevalence=None, metric="auroc", level=0.2, n_boot=2000)
    assert g.n_repeats == 2 and g.gain > 0.05  # half of repeat 1's gain
    assert 0 < g.ci_low < g.ci_high < 2 * g.gain and g.ci_high - g.ci_low > 1e-3


def test_seeded_bootstrap() -> None:
    trials, scores = _noisy()
    # at 0.1 of 20 positives and 60 negatives a subset is 6 + 54: the subsets are draws too
    kw = {"role": "test", "prevalence": 0.1, "n_boot": 50, "draws": 2}
    first = paired_gains(trials, scores, seed=7, **kw)
    assert first == paired_gains(trials, scores, seed=7, **kw)
    other = paired_gains(trials, scores, seed=8, **kw)
    assert [(g.ci_low, g.ci_high) for g in other] != [(g.ci_low, g.ci_high) for g in first]
    assert [g.gain for g in other] != [g.gain for g in first]  # other subsets, other estimate
    # the defaults: seed 0, 1000 replicates, 10 subsets
    default = paired_gains(trials, scores, role="test", prevalence=0.1)
    assert default == paired_gains(trials, scores, role="test", prevalence=0.1, seed=0, n_boot=1000, draws=10)
    findings = dose_findings(trials, scores, [0.1])
    assert findings == dose_findings(trials, scores, [0.1], n_boot=1000, draws=10, seed=0)


def test_the_answer_does_not_depend_on_the_order_of_the_table() -> None:
    parts = [_noisy(seed=s) for s in (0, 1)]
    for i, size in enumerate((10, 6)):  # seed size 10 listed first
        parts[i][0]["seed_size"] = size
        parts[i][0]["trial"] += f"_s{size}"
        parts[i][1]["trial"] += f"_s{size}"
    trials = pd.concat([p[0] for p in parts], ignore_index=True).assign(arm=None)
    scores = pd.concat([p[1] for p in parts], ignore_index=True)
    # a control arm listed before the curve: the 2x trials' scores again, as "zeta" arm trials
    control = trials[trials["dose"] == 2.0].assign(arm="zeta")
    control["trial"] += "_zeta"
    copied = scores[scores["trial"].isin(control["trial"].str.removesuffix("_zeta"))].copy()
    copied["trial"] += "_zeta"
    trials = pd.concat([control, trials], ignore_index=True)
    scores = pd.concat([scores, copied], ignore_index=True)
    kw = {"role": "validation", "prevalence": 0.1, "n_boot": 40, "draws": 2, "seed": 1}
    ordered = paired_gains(trials, scores, **kw)
    assert [(g.seed_size, g.arm, g.dose) for g in ordered] == [
        (6, "synthetic", 1.0),
        (6, "synthetic", 2.0),
        (6, "zeta", 2.0),
        (10, "synthetic", 1.0),
        (10, "synthetic", 2.0),
        (10, "zeta", 2.0),
    ]
    for state in range(3):
        again = paired_gains(trials.sample(frac=1.0, random_state=state), scores, **kw)
        assert again == ordered
    # doses as MLflow hands parameters back: text
    as_text = paired_gains(trials.astype({"dose": str}), scores, **kw)
    assert as_text == ordered
    # a table without a repeat column is repeat 0 (the same subsets as a study's first repeat)
    assert paired_gains(trials.drop(columns="repeat"), scores, **kw) == ordered


def test_the_answer_with_repeats_does_not_depend_on_the_order_of_the_table() -> None:
    parts = [_noisy(seed=s) for s in (0, 1, 2)]
    for repeat, part in enumerate(parts):
        part[0]["repeat"] = repeat
        part[0]["trial"] += f"_r{repeat}"
        part[1]["trial"] += f"_r{repeat}"
    trials = pd.concat([p[0] for p in parts], ignore_index=True)
    scores = pd.concat([p[1] for p in parts], ignore_index=True)
    kw = {"role": "validation", "prevalence": None, "n_boot": 40, "seed": 1}
    ordered = paired_gains(trials, scores, **kw)
    assert paired_gains(trials.iloc[::-1], scores, **kw) == ordered


def test_findings_pass_every_setting_to_both_comparisons() -> None:
    trials, scores = _noisy(doses=(1.0, 4.0))
    settings = {"metric": "auroc", "score": "max_slice", "level": 0.8, "n_boot": 30, "draws": 3, "seed": 4}
    (f,) = dose_findings(trials, scores, [0.1], **settings)
    validation = paired_gains(trials, scores, role="validation", prevalence=0.1, **settings)
    test = paired_gains(trials, scores, role="test", prevalence=0.1, adjust=False, **settings)
    assert f.validation == tuple(validation)
    assert all(g.level == pytest.approx(1 - 0.2 / 2) and g.prevalence == 0.1 for g in f.validation)
    significant = [g for g in validation if g.direction == "gain"]
    assert significant, "the data must give a significant dose for this check"
    assert f.chosen_test == next(g for g in test if g.dose == f.therapeutic_dose)


def test_tables_without_study_axes_and_bad_inputs() -> None:
    trials, scores = _study({2.0: PERFECT})
    bare = trials.drop(columns=["seed_size", "repeat"])
    (g,) = paired_gains(bare, scores, role="test", prevalence=None, metric="auroc", **FAST)
    assert (g.arm, g.seed_size, g.n_repeats, g.gain) == ("synthetic", "all", 1, 0.5)
    base = {"role": "validation", "prevalence": None}
    with pytest.raises(ValueError, match=r"role must be one of \('validation', 'test'\), got 'train'"):
        paired_gains(trials, scores, role="train", prevalence=None)
    with pytest.raises(ValueError, match=r"metric must be one of \['auprc', 'auroc'\], got 'f1'"):
        paired_gains(trials, scores, metric="f1", **base)
    for bad, shown in (({"level": 1.0}, "1.0, 1000, 10"), ({"level": 0.0}, "0.0, 1000, 10")):
        with pytest.raises(ValueError, match=rf"need 0 < level < 1, n_boot >= 1, draws >= 1; got {shown}"):
            paired_gains(trials, scores, **base, **bad)
    for count in ("n_boot", "draws"):
        with pytest.raises(ValueError, match="n_boot >= 1, draws >= 1"):
            paired_gains(trials, scores, **base, **{count: 0})
    (one,) = paired_gains(trials, scores, metric="auroc", n_boot=1, draws=1, **base)
    assert (one.gain, one.ci_low, one.ci_high) == (0.5, 0.5, 0.5)
    twice = pd.concat([trials, trials[trials["dose"] == 0].assign(trial="other0x")], ignore_index=True)
    with pytest.raises(ValueError, match="seed size 6: several 0x trials in one repeat; filter the table first"):
        paired_gains(twice, scores, **base)
    relabelled = scores.copy()
    flip = (relabelled["trial"] == "s6_r0_d2") & (relabelled["subject"] == "v0_000")
    relabelled.loc[flip, "label"] = 0
    with pytest.raises(
        ValueError, match="trial s6_r0_d2 and its 0x trial s6_r0_d0 scored different validation subjects"
    ):
        paired_gains(trials, relabelled, **base)


def test_ties_to_smallest_needs_equal_non_empty_lists() -> None:
    assert ties_to_smallest([4.0, 2.0, 1.0], [0.3, 0.3 + 5e-10, 0.1]) == 2.0
    assert ties_to_smallest([2.0], [-0.4]) == 2.0
    with pytest.raises(ValueError, match="need equal, non-empty doses and gains, got 2 and 1"):
        ties_to_smallest([1.0, 2.0], [0.1])
    with pytest.raises(ValueError, match="got 0 and 1"):
        ties_to_smallest([], [0.1])


def test_decisions_and_their_sentence_on_exact_gains() -> None:
    # 1x no effect, 2x and 3x the same clear gain (a tie: the smaller), 4x and 8x clear losses
    doses = {1.0: TIED, 2.0: PERFECT, 3.0: PERFECT, 4.0: REVERSED, 8.0: REVERSED}
    (f,) = dose_findings(*_study(doses), [None], metric="auroc", **FAST)
    assert (f.arm, f.seed_size, f.prevalence, f.metric) == ("synthetic", 6, None, "auroc")
    assert [g.dose for g in f.validation] == [1.0, 2.0, 3.0, 4.0, 8.0]
    assert all(g.role == "validation" and g.n_doses == 5 for g in f.validation)
    assert f.therapeutic_dose == 2.0 and f.toxic_dose == 4.0
    assert f.chosen is not None and (f.chosen.role, f.chosen.dose, f.chosen.gain) == ("validation", 2.0, 0.5)
    assert f.chosen_test is not None and (f.chosen_test.role, f.chosen_test.dose, f.chosen_test.n_doses) == (
        "test",
        2.0,
        1,
    )
    assert f.toxic is not None and f.toxic.role == "validation"
    assert f.toxic_test is not None and (f.toxic_test.role, f.toxic_test.dose, f.toxic_test.n_doses) == ("test", 4.0, 1)
    assert f.sentence() == (
        "seed 6, whole set: therapeutic dose 2x - validation auroc gain +0.500 [+0.500, +0.500] "
        "(Bonferroni over 5 doses), test gain +0.500 [+0.500, +0.500] (confirmed on test); "
        "toxic from 4x (validation -0.500 [-0.500, -0.500], test -0.500 [-0.500, -0.500])"
    )


def test_what_the_test_set_says_about_the_chosen_dose() -> None:
    doses = {2.0: (PERFECT, REVERSED), 4.0: (PERFECT, TIED)}
    (f,) = dose_findings(*_study(doses), [0.25], metric="auroc", **FAST)
    assert f.therapeutic_dose == 2.0 and f.chosen_test is not None and f.chosen_test.direction == "loss"
    assert f.sentence() == (
        "seed 6, prevalence 0.25: therapeutic dose 2x - validation auroc gain +0.500 [+0.500, +0.500] "
        "(Bonferroni over 2 doses), test gain -0.500 [-0.500, -0.500] (reversed on test)"
    )
    (f4,) = dose_findings(*_study({4.0: (PERFECT, TIED)}), [None], metric="auroc", **FAST)
    assert f4.sentence().endswith(
        "(Bonferroni over 1 dose), test gain +0.000 [+0.000, +0.000] (not significant on test)"
    )


def test_no_significant_effect_is_said_with_the_largest_gain() -> None:
    (f,) = dose_findings(*_study({1.0: TIED, 2.0: TIED}, arm="real"), [None], metric="auroc", **FAST)
    assert f.therapeutic_dose is None and f.toxic_dose is None and f.chosen_test is None and f.toxic_test is None
    assert f.sentence() == (
        "seed 6, whole set [real control]: no significant effect on validation "
        "(largest auroc gain +0.000 [+0.000, +0.000] at 1x, Bonferroni over 2 doses)"
    )
    gains = (_gain(-0.02, 0.04, 0.01, dose=1.0), _gain(-0.01, 0.07, 0.03, dose=2.0), _gain(-0.1, 0.05, -0.02, dose=4.0))
    by_hand = Finding("shuffled", "all", 0.05, "auprc", gains, None, None, None, None)
    assert by_hand.sentence() == (
        "seed all, prevalence 0.05 [shuffled control]: no significant effect on validation "
        "(largest auprc gain +0.030 [-0.010, +0.070] at 2x, Bonferroni over 3 doses)"
    )
    # with a significant loss it is not "no effect": the sentence says no gain, then the toxic dose
    toxic = _gain(-0.2, -0.03, -0.1, dose=4.0)
    harmed = Finding("synthetic", 6, None, "auprc", gains, None, None, toxic, toxic)
    assert harmed.sentence().startswith("seed 6, whole set: no significant gain on validation (largest")
    assert "toxic from 4x" in harmed.sentence() and "no significant effect" not in harmed.sentence()
    empty = Finding("synthetic", 6, None, "auprc", (), None, None, None, None)
    assert empty.sentence() == "seed 6, whole set: no significant effect on validation"
    assert empty.therapeutic_dose is None and empty.toxic_dose is None


def test_findings_are_ordered_by_arm_seed_size_and_prevalence() -> None:
    parts = [
        _study({2.0: PERFECT}, seed_size=size, arm=arm)
        for size in ("10", 6, "all")  # a number as text (MLflow's), a number, a label
        for arm in ("bespoke", "shuffled", "real", None)
    ]
    trials = pd.concat([p[0] for p in parts], ignore_index=True).drop_duplicates("trial")
    scores = pd.concat([p[1] for p in parts], ignore_index=True).drop_duplicates(["trial", "role", "subject"])
    findings = dose_findings(trials, scores, [0.2, None], metric="auroc", n_boot=20, draws=1, seed=0)
    order = [(f.arm, f.seed_size, f.prevalence) for f in findings]
    assert order == [
        (arm, size, prevalence)
        for arm in ("synthetic", "real", "shuffled", "bespoke")  # the curve, the controls, any other arm
        for size in (6, "10", "all")  # numerically, labels last
        for prevalence in (None, 0.2)  # the whole set first
    ]
    assert all(f.therapeutic_dose == 2.0 for f in findings)
    for f in findings:  # each finding's gains are at its own prevalence
        assert f.chosen_test is not None and f.chosen_test.prevalence == f.prevalence
        assert all(g.prevalence == f.prevalence and g.seed_size == f.seed_size for g in f.validation)


def test_a_repeat_without_its_0x_trial_is_skipped_and_the_later_ones_still_count() -> None:
    """A repeat whose 0x trial is missing (failed, or not logged yet) has nothing to pair with and
    is skipped; the repeats after it are still analysed (a mutation that stopped at the first such
    repeat survived the suite)."""
    from tests.dashboards.study_data import make_study

    results, scores = make_study(seed_sizes=(6,), doses=(0.0, 2.0))
    trials, all_scores = [], []
    for repeat in (0, 1, 2):
        r = results.assign(repeat=repeat, trial=results["trial"] + f"_r{repeat}")
        trials.append(r[r["dose"] > 0] if repeat == 0 else r)  # repeat 0 lost its 0x trial
        all_scores.append(scores.assign(trial=scores["trial"] + f"_r{repeat}"))
    (gain,) = paired_gains(
        pd.concat(trials, ignore_index=True),
        pd.concat(all_scores, ignore_index=True),
        role="validation",
        prevalence=None,
        n_boot=50,
        draws=2,
    )
    assert gain.n_repeats == 2 and gain.dose == 2.0
