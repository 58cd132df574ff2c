"""Is a dose better than none? Paired, multiplicity-aware answers from per-subject scores.

Every trial of a study scores the same validation and test subjects as the 0x trial of its seed
size and repeat, so the effect of a dose is estimated *paired*: the metric of the dose's scores
minus the metric of the 0x scores, on the same subjects (and at a prevalence, on the same
prevalence subsets).

**Interval.** A percentile bootstrap over subjects, stratified by label (each replicate keeps the
prevalence). With one repeat that is the whole interval (it is conditional on the trained
models: training noise is not in it). With several repeats it is two-stage: resample the repeats,
then the subjects within each (so the spread between repeats - different splits, seeds and
training runs - is in it too); the estimate is the mean gain over repeats.

**Multiplicity.** The doses of one curve (one arm, seed size and prevalence) are compared with
0x at once, so their intervals are Bonferroni-adjusted: with k doses each interval has level
``1 - (1 - level) / k``, and the k intervals cover their true gains together with probability at
least ``level``.

**Decisions (made on validation, reported on test).** A dose is *therapeutic* only where its
adjusted validation interval lies above 0, *toxic* only where it lies below 0; otherwise there is
"no significant effect". The chosen (therapeutic) dose is the one with the largest validation
gain among the significant ones (gains within 1e-9 of each other are ties, which go to the
smallest dose); the toxic dose is the smallest significantly harmful one. The chosen dose's test
gain is then reported with an unadjusted interval: it is a single comparison fixed in advance of
looking at the test set. The whole test curve is drawn too, with adjusted intervals, labelled as
such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from salient.dashboards import names
from salient.dashboards.stats import auprc_rows, auroc_rows, prevalence_subsample

__all__ = ["Finding", "Gain", "combine_repeats", "dose_findings", "paired_gains", "ties_to_smallest"]

_ROW_METRICS = {"auprc": auprc_rows, "auroc": auroc_rows}
#: Gains closer than this are equal (different summation orders differ in the last digits).
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Gain:
    """A dose's gain over 0x on one curve, with its bootstrap interval."""

    arm: str
    seed_size: object
    prevalence: float | None  # None: the whole held-out set
    dose: float
    role: str  # "validation" or "test"
    metric: str
    gain: float
    ci_low: float
    ci_high: float
    level: float  # the interval's own level (after the Bonferroni adjustment, if any)
    n_doses: int  # comparisons the adjustment accounts for (1: unadjusted)
    n_repeats: int
    n_subjects: int

    @property
    def direction(self) -> str:
        """``"gain"`` (interval above 0), ``"loss"`` (below 0) or ``"none"``."""
        return "gain" if self.ci_low > 0 else "loss" if self.ci_high < 0 else "none"

    def text(self) -> str:
        return f"{self.gain:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}]"


def _arm_column(trials: pd.DataFrame) -> pd.Series:
    if names.PARAM_ARM in trials.columns:
        return trials[names.PARAM_ARM].fillna("synthetic").astype(str)
    return pd.Series("synthetic", index=trials.index)


def _subject_arrays(scores: pd.DataFrame, trial: str, role: str, column: str) -> pd.DataFrame:
    part = scores[(scores["trial"] == trial) & (scores["role"] == role)]
    return part.set_index("subject")[["label", column]].sort_index()


def _repeat_replicates(
    y: np.ndarray,
    base: np.ndarray,
    dosed: np.ndarray,
    metric: str,
    prevalence: float | None,
    draws: int,
    n_boot: int,
    rng: np.random.Generator,
    subset_seed: int,
) -> tuple[float, np.ndarray]:
    """Observed gain (mean over prevalence subsets) and its ``n_boot`` stratified bootstrap replicates.

    One bootstrap replicate resamples the held-out set once (positives and negatives separately)
    and evaluates every prevalence subset on that same resample: a subset is a fixed set of
    slots among the positives and the negatives, filled in each replicate by the replicate's
    draws. Subsets that share subjects then share their resampled values, as the estimate's own
    subsets do. (Resampling each subset on its own and averaging would treat ``draws`` overlapping
    subsets - at a prevalence near the set's own, the very same subjects - as independent samples
    and shrink the interval by up to sqrt(draws).)
    """
    fn = _ROW_METRICS[metric]
    subsets = (
        [prevalence_subsample(y, prevalence, seed=subset_seed + j) for j in range(draws)]
        if prevalence is not None
        else [np.arange(len(y))]
    )
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    slot = np.empty(len(y), dtype=int)  # a subject's slot among its class
    slot[pos], slot[neg] = np.arange(len(pos)), np.arange(len(neg))
    fill_pos, fill_neg = rng.choice(pos, (n_boot, len(pos))), rng.choice(neg, (n_boot, len(neg)))
    observed, replicates = [], np.zeros(n_boot)
    for idx in subsets:
        observed.append(float(fn(y[idx][None], dosed[idx][None])[0] - fn(y[idx][None], base[idx][None])[0]))
        sub_pos, sub_neg = idx[y[idx] == 1], idx[y[idx] == 0]
        # stratified: every replicate keeps the subset's prevalence
        boot = np.concatenate([fill_pos[:, slot[sub_pos]], fill_neg[:, slot[sub_neg]]], axis=1)
        replicates += fn(y[boot], dosed[boot]) - fn(y[boot], base[boot])
    return float(np.mean(observed)), replicates / len(subsets)


def paired_gains(
    trials: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    role: str,
    prevalence: float | None,
    metric: str = "auprc",
    score: str = "score",
    level: float = 0.95,
    n_boot: int = 1000,
    draws: int = 10,
    seed: int = 0,
    adjust: bool = True,
) -> list[Gain]:
    """The gain of every dose > 0 over 0x, per arm and seed size (see the module docstring).

    Args:
        trials: one row per trial: ``trial``, ``dose``, and ``seed_size``, ``repeat``, ``arm``
            when the study has them. The 0x trial of a seed size and repeat is every arm's baseline.
        scores: per-subject scores: ``trial``, ``role``, ``subject``, ``label``, and ``score``
            (the aggregator's) or ``max_slice``.
        role: ``"validation"`` or ``"test"``.
        prevalence: evaluate at this prevalence (``draws`` seeded subsets, the same for the dose
            and 0x), or None for the whole set.
        adjust: Bonferroni over the doses of each curve (False: each interval at ``level``).
    """
    if role not in names.ROLES:
        raise ValueError(f"role must be one of {names.ROLES}, got {role!r}")
    if metric not in _ROW_METRICS:
        raise ValueError(f"metric must be one of {sorted(_ROW_METRICS)}, got {metric!r}")
    if not 0 < level < 1 or n_boot < 1 or draws < 1:
        raise ValueError(f"need 0 < level < 1, n_boot >= 1, draws >= 1; got {level}, {n_boot}, {draws}")
    frame = trials.assign(
        arm=_arm_column(trials),
        seed_size=trials["seed_size"] if "seed_size" in trials.columns else "all",
        repeat=trials["repeat"] if "repeat" in trials.columns else 0,
        dose=trials["dose"].astype(float),
    )
    out: list[Gain] = []
    for seed_size, group in frame.groupby("seed_size", sort=True):
        baseline = group[group["dose"] == 0.0].set_index("repeat")["trial"]
        if baseline.index.duplicated().any():
            raise ValueError(f"seed size {seed_size}: several 0x trials in one repeat; filter the table first")
        for arm, curve in group[group["dose"] > 0].groupby("arm", sort=True):
            doses = sorted(curve["dose"].unique())
            k = len(doses) if adjust else 1
            alpha = (1 - level) / k
            for dose in doses:
                gains, reps, n_subj = [], [], 0
                # Each repeat's resamples come from a generator of (seed, repeat) alone, and repeats
                # are combined with one of (seed,): the same trials give the same interval in
                # whatever order the table lists them (MLflow lists runs by start time).
                for repeat, row in curve[curve["dose"] == dose].set_index("repeat").sort_index().iterrows():
                    if repeat not in baseline.index:
                        continue
                    b = _subject_arrays(scores, baseline[repeat], role, score)
                    d = _subject_arrays(scores, row["trial"], role, score)
                    if not b.index.equals(d.index) or not (b["label"] == d["label"]).all():
                        raise ValueError(
                            f"trial {row['trial']} and its 0x trial {baseline[repeat]} scored different {role} "
                            "subjects; a paired comparison needs the same ones"
                        )
                    g, r = _repeat_replicates(
                        b["label"].to_numpy(int),
                        b[score].to_numpy(float),
                        d[score].to_numpy(float),
                        metric,
                        prevalence,
                        draws,
                        n_boot,
                        np.random.default_rng([seed, int(repeat)]),
                        seed * 1000 + int(repeat) * 100,
                    )
                    gains.append(g)
                    reps.append(r)
                    n_subj = len(b)
                if not gains:
                    continue
                boot = combine_repeats(np.stack(reps), np.random.default_rng([seed, _COMBINE_STREAM]))
                lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
                out.append(
                    Gain(
                        str(arm),
                        seed_size,
                        prevalence,
                        float(dose),
                        role,
                        metric,
                        float(np.mean(gains)),
                        float(lo),
                        float(hi),
                        1 - alpha,
                        k,
                        len(gains),
                        n_subj,
                    )
                )
    return out


#: the stream that combines repeats (a repeat's own stream is (seed, repeat), repeat < this)
_COMBINE_STREAM = 2**31 - 1


def combine_repeats(replicates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(R, B) per-repeat replicates -> (B,) replicates of the mean over repeats: with one repeat
    itself; otherwise resample the repeats, and for each drawn repeat one of its replicates."""
    n_rep, n_boot = replicates.shape
    if n_rep == 1:
        return replicates[0]
    which = rng.integers(n_rep, size=(n_boot, n_rep))
    column = rng.integers(n_boot, size=(n_boot, n_rep))
    return replicates[which, column].mean(axis=1)


def ties_to_smallest(doses: Sequence[float], gains: Sequence[float]) -> float:
    """The dose with the largest gain; gains within :data:`TIE_TOLERANCE` of the largest are ties
    and go to the smallest dose (less synthesis for the same result)."""
    if not doses or len(doses) != len(gains):
        raise ValueError(f"need equal, non-empty doses and gains, got {len(doses)} and {len(gains)}")
    best = max(gains)
    return min(d for d, g in zip(doses, gains, strict=True) if math.isclose(g, best, rel_tol=0, abs_tol=TIE_TOLERANCE))


@dataclass(frozen=True)
class Finding:
    """The answer for one curve (arm, seed size, prevalence): chosen on validation, reported on test."""

    arm: str
    seed_size: object
    prevalence: float | None
    metric: str
    validation: tuple[Gain, ...]  # every dose, adjusted
    chosen: Gain | None  # the therapeutic dose's validation gain (None: no significant gain)
    chosen_test: Gain | None  # the chosen dose's test gain, unadjusted (one comparison)
    toxic: Gain | None  # the smallest significantly harmful dose's validation loss
    toxic_test: Gain | None

    @property
    def therapeutic_dose(self) -> float | None:
        return None if self.chosen is None else self.chosen.dose

    @property
    def toxic_dose(self) -> float | None:
        return None if self.toxic is None else self.toxic.dose

    def sentence(self) -> str:
        """The finding in words (generated, never hand-written)."""
        where = f"seed {self.seed_size}, " + (
            "whole set" if self.prevalence is None else f"prevalence {self.prevalence:g}"
        )
        arm = "" if self.arm == "synthetic" else f" [{self.arm} control]"
        k = len(self.validation)
        over = f"Bonferroni over {k} dose{'s' if k != 1 else ''}"
        if self.chosen is None:
            best = max(self.validation, key=lambda g: g.gain) if self.validation else None
            # "effect" only where nothing is significant: a significant loss is still an effect
            verdict = "no significant gain" if self.toxic is not None else "no significant effect"
            text = f"{where}{arm}: {verdict} on validation"
            if best is not None:
                text += f" (largest {self.metric} gain {best.text()} at {best.dose:g}x, {over})"
        else:
            assert self.chosen_test is not None
            confirmed = {
                "gain": "confirmed on test",
                "loss": "reversed on test",
                "none": "not significant on test",
            }[self.chosen_test.direction]
            text = (
                f"{where}{arm}: therapeutic dose {self.chosen.dose:g}x - validation {self.metric} gain "
                f"{self.chosen.text()} ({over}), test gain {self.chosen_test.text()} "
                f"({confirmed})"
            )
        if self.toxic is not None:
            assert self.toxic_test is not None
            text += f"; toxic from {self.toxic.dose:g}x (validation {self.toxic.text()}, test {self.toxic_test.text()})"
        return text


def dose_findings(
    trials: pd.DataFrame,
    scores: pd.DataFrame,
    prevalences: Sequence[float | None],
    *,
    metric: str = "auprc",
    score: str = "score",
    level: float = 0.95,
    n_boot: int = 1000,
    draws: int = 10,
    seed: int = 0,
) -> list[Finding]:
    """Chosen on validation, reported on test: one :class:`Finding` per arm, seed size and prevalence."""
    findings = []
    for prevalence in prevalences:

        def compare(role: str, adjust: bool, prevalence: float | None = prevalence) -> list[Gain]:
            return paired_gains(
                trials,
                scores,
                role=role,
                prevalence=prevalence,
                metric=metric,
                score=score,
                level=level,
                n_boot=n_boot,
                draws=draws,
                seed=seed,
                adjust=adjust,
            )

        val, single = compare("validation", adjust=True), compare("test", adjust=False)
        test_at = {(g.arm, g.seed_size, g.dose): g for g in single}
        curves: dict[tuple[str, object], list[Gain]] = {}
        for g in val:
            curves.setdefault((g.arm, g.seed_size), []).append(g)
        for (arm, seed_size), gains in curves.items():
            significant = [g for g in gains if g.direction == "gain"]
            chosen = None
            if significant:
                dose = ties_to_smallest([g.dose for g in significant], [g.gain for g in significant])
                chosen = next(g for g in significant if g.dose == dose)
            harmful = sorted((g for g in gains if g.direction == "loss"), key=lambda g: g.dose)
            toxic = harmful[0] if harmful else None
            findings.append(
                Finding(
                    arm,
                    seed_size,
                    prevalence,
                    metric,
                    tuple(gains),
                    chosen,
                    test_at.get((arm, seed_size, chosen.dose)) if chosen else None,
                    toxic,
                    test_at.get((arm, seed_size, toxic.dose)) if toxic else None,
                )
            )
    order = {"synthetic": 0, "real": 1, "shuffled": 2}
    return sorted(
        findings,
        key=lambda f: (
            order.get(f.arm, 3),
            f.arm,
            _seed_order(f.seed_size),
            -1.0 if f.prevalence is None else f.prevalence,
        ),
    )


def _seed_order(seed_size: object) -> tuple[int, float, str]:
    """Seed sizes numerically (6 before 10), labels such as "all" after them."""
    try:
        return (0, float(seed_size), "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0.0, str(seed_size))
