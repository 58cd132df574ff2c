"""The findings header says, in generated words, what hand-made studies with a known answer found:
a clear gain (therapeutic), a clear loss (toxic), and nothing (no significant effect)."""

from __future__ import annotations

import re

from salient.dashboards.findings_header import build_header
from salient.dashboards.significance import dose_findings
from study_data import NULL_LIFTS, make_study

SETTINGS = {"n_boot": 300, "draws": 3, "seed": 0}
PREVALENCES = [None, 0.05, 0.2]


def test_known_gains_and_losses_per_seed_size() -> None:
    results, scores = make_study(controls=True)
    header = build_header(dose_findings(results, scores, PREVALENCES, **SETTINGS))
    assert header is not None
    # LIFTS: seed 6 lifts positives by 1.5 at 2x and lowers them by 1.5 at 4x; seed 10 by 1.5 at 1x, -1.5 at 4x
    assert header.lead == (
        "Synthetic pairs help significantly at seed 6 (2x) and seed 10 (1x); "
        "harm significantly at seed 6 (from 4x) and seed 10 (from 4x) (on the whole held-out set)."
    )
    six, ten = header.cards
    assert (six.title, ten.title) == ("Seed size 6", "Seed size 10")  # numeric order
    assert (six.verdict, ten.verdict) == ("Therapeutic dose 2x; toxic from 4x", "Therapeutic dose 1x; toxic from 4x")
    assert six.kind == "gain"
    assert six.headline.startswith("Synthetic pairs, whole set: AUPRC gain over 0x at 2x +")
    assert (
        "on validation (Bonferroni over 3 doses), +" in six.headline
        and " confirmed on test; at 4x (toxic) -" in six.headline
    )
    # the control's whole-set line under the headline; its rows grouped after the synthetic ones
    assert six.lines == ("Real control, whole set: therapeutic dose 2x; toxic from 4x.",)
    assert [(r.arm, r.prevalence) for r in six.rows] == [
        ("synthetic", "whole set"),
        ("synthetic", "0.05"),
        ("synthetic", "0.2"),
        ("real", "whole set"),
        ("real", "0.05"),
        ("real", "0.2"),
    ]
    row = six.rows[1]
    assert (row.dose, row.toxic, row.kind) == ("2x", "4x", "gain")
    gain, interval = r"\+0\.\d{3}", r"\[\+0\.\d{3}, \+0\.\d{3}\]"  # a clear gain: the interval above 0
    assert re.fullmatch(gain, row.validation[0]) and re.fullmatch(interval, row.validation[1])
    assert re.fullmatch(gain + " confirmed", row.test[0]) and re.fullmatch(interval, row.test[1])
    assert row.detail.startswith("seed 6, prevalence 0.05: therapeutic dose 2x")


def test_a_study_without_an_effect_says_so_everywhere() -> None:
    results, scores = make_study(seed_sizes=(6,), lifts=NULL_LIFTS, noise=0.3)
    header = build_header(dose_findings(results, scores, PREVALENCES, **SETTINGS))
    assert header is not None
    assert header.lead == "Synthetic pairs have no significant effect at seed 6 (on the whole held-out set)."
    (card,) = header.cards
    assert (card.kind, card.verdict) == ("none", "No significant effect")
    assert card.headline.startswith(
        "Synthetic pairs, whole set: no dose's AUPRC gain over 0x is significant on validation "
        "(Bonferroni over 3 doses); the largest, at "
    )
    assert {r.dose for r in card.rows} == {"none"} and {r.toxic for r in card.rows} == {"none"}
    assert {r.test for r in card.rows} == {("-", "")}
    for r in card.rows:  # the best it saw, at its dose, with an interval across 0
        assert re.fullmatch(r"largest [+-]0\.\d{3} at [124]x", r.validation[0])
        assert re.fullmatch(r"\[-0\.\d{3}, \+0\.\d{3}\]", r.validation[1])


def test_a_toxic_dose_without_a_gain_marks_the_card_toxic() -> None:
    lifts = {6: {0.0: 0.0, 1.0: 0.0, 2.0: -1.5, 4.0: -2.0}}
    results, scores = make_study(seed_sizes=(6,), lifts=lifts)
    header = build_header(dose_findings(results, scores, [None], **SETTINGS))
    assert header is not None
    assert header.lead == "Synthetic pairs harm significantly at seed 6 (from 2x) (on the whole held-out set)."
    (card,) = header.cards
    assert (card.kind, card.verdict) == ("toxic", "Toxic from 2x")
    assert "no dose's AUPRC gain over 0x is significant" in card.headline and "; at 2x (toxic) -" in card.headline


def test_no_findings_no_header() -> None:
    assert build_header([]) is None
