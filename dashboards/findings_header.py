"""The answer first: a study's findings as a short header, generated from the significance analysis.

A study has one :class:`~salient.dashboards.significance.Finding` per arm, seed size and
prevalence - two seed sizes, three prevalences and two controls are already 24 sentences, which
nobody reads. The header groups them the way a reader asks: one card per seed size, whose
headline is the synthetic curve on the whole held-out set (controls' whole-set lines beneath it),
and one compact row per (arm, prevalence) with the recommended dose, its gain over 0x on
validation (where it was chosen, Bonferroni-adjusted) and on test (where it is reported), and the
toxic dose. A lead sentence above the cards sums up the synthetic arm over seed sizes.

Nothing here is hand-written: every word comes from the findings, so the header cannot claim
more than the intervals do. The app and the report render the same :class:`Header`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from salient.dashboards import names
from salient.dashboards.analysis import natural_order
from salient.dashboards.significance import Finding, Gain

__all__ = ["Card", "Header", "Row", "build_header", "keep_intervals_whole"]

ARM_LABELS = names.ARM_LABELS
_ARM_ORDER = {arm: k for k, arm in enumerate(names.ARMS)}
NO_EFFECT = "no significant effect"


@dataclass(frozen=True)
class Row:
    """One curve (arm, prevalence) of a seed size, as short table cells; a gain cell is two lines,
    the estimate (and its verdict) over its interval; ``detail`` is the whole finding in words."""

    arm: str
    prevalence: str  # "whole set" or "0.05"
    dose: str  # the therapeutic dose ("2x") or "none"
    validation: tuple[str, str]  # its adjusted validation gain, or the largest one ("largest -0.013 at 4x")
    test: tuple[str, str]  # its test gain with "confirmed" / "not significant" / "reversed", or ("-", "")
    toxic: str  # the smallest significantly harmful dose ("4x") or "none"
    kind: str  # "gain", "toxic" (harm and no gain) or "none": for styling
    detail: str


@dataclass(frozen=True)
class Card:
    """One seed size: the verdict and evidence of its headline curve (synthetic arm, whole set),
    the controls' whole-set lines, and every curve's row."""

    seed_size: object
    title: str
    verdict: str  # "Therapeutic dose 2x; toxic from 4x", "No significant effect", ...
    headline: str  # the numbers behind the verdict
    kind: str
    lines: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Header:
    lead: str
    cards: tuple[Card, ...]
    note: str  # how the decisions were made, in one line


def keep_intervals_whole(text: str) -> str:
    """``text`` with no line break inside ``+0.429 [+0.329, +0.495]`` (non-breaking spaces), so a
    narrow table cell wraps only between a number and its words."""
    return re.sub(r"(\S) \[([^\]]*), ([^\]]*)\]", "\\1\u00a0[\\2,\u00a0\\3]", text)


def _where(f: Finding) -> str:
    return "whole set" if f.prevalence is None else f"prevalence {f.prevalence:g}"


def _test_text(g: Gain | None, expected: str = "gain") -> str:
    """A test gain and whether it confirms the validation decision (``expected``: "gain" or "loss")."""
    if g is None:
        return "-"
    return f"{g.text()} {_confirmation(g, expected)}"


def _kind(f: Finding) -> str:
    return "gain" if f.chosen is not None else "toxic" if f.toxic is not None else "none"


def _interval(g: Gain) -> str:
    return f"[{g.ci_low:+.3f}, {g.ci_high:+.3f}]"


def _confirmation(g: Gain, expected: str) -> str:
    return "confirmed" if g.direction == expected else "not significant" if g.direction == "none" else "reversed"


def _row(f: Finding) -> Row:
    if f.chosen is not None:
        dose, validation = f"{f.chosen.dose:g}x", (f"{f.chosen.gain:+.3f}", _interval(f.chosen))
        t = f.chosen_test
        test = ("-", "") if t is None else (f"{t.gain:+.3f} {_confirmation(t, 'gain')}", _interval(t))
    else:
        best = max(f.validation, key=lambda g: g.gain) if f.validation else None
        dose, test = "none", ("-", "")
        validation = ("-", "") if best is None else (f"largest {best.gain:+.3f} at {best.dose:g}x", _interval(best))
    toxic = "none" if f.toxic is None else f"{f.toxic.dose:g}x"
    where = "whole set" if f.prevalence is None else f"{f.prevalence:g}"
    return Row(f.arm, where, dose, validation, test, toxic, _kind(f), f.sentence())


def _verdict(f: Finding) -> str:
    """``"therapeutic dose 2x; toxic from 4x"``, ``"no significant effect"``, ``"toxic from 2x"`` ..."""
    parts = [f"therapeutic dose {f.chosen.dose:g}x"] if f.chosen is not None else []
    if f.toxic is not None:
        parts.append(f"toxic from {f.toxic.dose:g}x")
    return "; ".join(parts) if parts else NO_EFFECT


def _evidence(f: Finding) -> str:
    """The numbers behind :func:`_verdict`, in one sentence."""
    k = len(f.validation)
    over = f"Bonferroni over {k} dose{'s' if k != 1 else ''}"
    metric = f.metric.upper()
    if f.chosen is not None:
        text = (
            f"{metric} gain over 0x at {f.chosen.dose:g}x {f.chosen.text()} on validation ({over}), "
            f"{_test_text(f.chosen_test)} on test"
        )
    elif f.validation:
        best = max(f.validation, key=lambda g: g.gain)
        text = (
            f"no dose's {metric} gain over 0x is significant on validation ({over}); "
            f"the largest, at {best.dose:g}x, is {best.text()}"
        )
    else:
        text = "no dose above 0x to compare"
    if f.toxic is not None:
        text += (
            f"; at {f.toxic.dose:g}x (toxic) {f.toxic.text()} on validation, {_test_text(f.toxic_test, 'loss')} on test"
        )
    return text


def _line(f: Finding) -> str:
    """A control's whole-set verdict (its numbers are in the card's table)."""
    label = ARM_LABELS.get(f.arm, f.arm)
    return f"{label[0].upper() + label[1:]}, {_where(f)}: {_verdict(f)}."


def _seed_key(value: object) -> object:
    return natural_order(pd.Series([value])).iloc[0]


def _prevalence_key(f: Finding) -> float:
    return -1.0 if f.prevalence is None else f.prevalence


def _headline_finding(findings: Sequence[Finding]) -> Finding:
    """The whole-set finding when there is one, else the lowest prevalence's."""
    return min(findings, key=_prevalence_key)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _lead(cards: dict[object, list[Finding]]) -> str:
    """Sum up the synthetic arm's headline findings over seed sizes."""
    helped, harmed, flat = [], [], []
    for seed, group in cards.items():
        synthetic = [f for f in group if f.arm == "synthetic"]
        if not synthetic:
            continue
        f = _headline_finding(synthetic)
        if f.chosen is not None:
            helped.append(f"seed {seed} ({f.chosen.dose:g}x)")
        if f.toxic is not None:
            harmed.append(f"seed {seed} (from {f.toxic.dose:g}x)")
        if f.chosen is None and f.toxic is None:
            flat.append(f"seed {seed}")
    if not (helped or harmed or flat):
        return "Only control arms have findings."
    where = "on the whole held-out set" if any(f.prevalence is None for g in cards.values() for f in g) else ""
    parts = []
    if helped:
        parts.append(f"help significantly at {_join(helped)}")
    if harmed:
        parts.append(f"harm significantly at {_join(harmed)}")
    if flat:
        parts.append(f"have {NO_EFFECT} at {_join(flat)}")
    return "Synthetic pairs " + "; ".join(parts) + (f" ({where})." if where else ".")


def build_header(findings: Sequence[Finding]) -> Header | None:
    """The header of a study's findings; None without findings (no per-subject scores)."""
    if not findings:
        return None
    by_seed: dict[object, list[Finding]] = {}
    for f in findings:
        by_seed.setdefault(f.seed_size, []).append(f)
    by_seed = dict(sorted(by_seed.items(), key=lambda kv: _seed_key(kv[0])))  # type: ignore[arg-type,return-value]
    cards = []
    for seed, group in by_seed.items():
        group = sorted(group, key=lambda f: (_ARM_ORDER.get(f.arm, 3), f.arm, _prevalence_key(f)))
        arms = list(dict.fromkeys(f.arm for f in group))
        main = _headline_finding([f for f in group if f.arm == arms[0]])
        lines = tuple(_line(_headline_finding([f for f in group if f.arm == arm])) for arm in arms[1:])
        label = ARM_LABELS.get(main.arm, main.arm)
        verdict = _verdict(main)
        cards.append(
            Card(
                seed,
                f"Seed size {seed}",
                verdict[0].upper() + verdict[1:],
                f"{label[0].upper() + label[1:]}, {_where(main)}: {_evidence(main)}.",
                _kind(main),
                lines,
                tuple(_row(f) for f in group),
            )
        )
    note = (
        f"Gains are differences in {findings[0].metric.upper()} from 0x on the same subjects [interval]. Doses are "
        "chosen on validation (paired bootstrap, intervals Bonferroni-adjusted over each curve's doses) and "
        "reported on test (one comparison, unadjusted)."
    )
    return Header(_lead(by_seed), tuple(cards), note)
