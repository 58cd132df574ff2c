"""Subject splits (`salient.platform.splits.make_split`): the rules every trained detector relies on.

Disjointness is checked here with set arithmetic over every role of the returned split, never
with the split's own ``assert_disjoint``: a test that trusted that assertion would pass with it
switched off. Expected sizes are worked out by hand from the documented rule (a stratified
``test_fraction`` of the positives and of the negatives, rounded, drawn before anything else).

The split is gaining a validation role (issue #19's evaluation redesign): ``_split`` passes a
``validation_fraction`` when ``make_split`` takes one, and every expectation about the training
side is computed from the held-out sets (test and, where it exists, validation) by set arithmetic.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from pathlib import Path
from typing import Any

import pytest
from salient.platform.cohort.manifest import SubjectRecord
from salient.platform.errors import PlatformError
from salient.platform.splits import Split, make_split

VALIDATION_FRACTION = 0.2  # only used where make_split has a validation set


def _cohort(n_pos: int, n_neg: int, splits: dict[str, str] | None = None) -> list[SubjectRecord]:
    """Positives ``p00..``, negatives ``n000..``; ``splits`` sets the manifest split column."""
    splits = splits or {}
    ids = [(f"p{i:02d}", 1) for i in range(n_pos)] + [(f"n{i:03d}", 0) for i in range(n_neg)]
    return [
        SubjectRecord(
            subject=s, image=Path(f"{s}.nii.gz"), mask=Path(f"{s}_mask.nii.gz"), label=y, split=splits.get(s, "")
        )
        for s, y in ids
    ]


def _split(records: list[SubjectRecord], seed_size: int, repeat: int, study_seed: int, test_fraction: float) -> Split:
    extra: dict[str, Any] = {}
    if "validation_fraction" in inspect.signature(make_split).parameters:
        extra["validation_fraction"] = VALIDATION_FRACTION
    return make_split(
        records, seed_size=seed_size, repeat=repeat, study_seed=study_seed, test_fraction=test_fraction, **extra
    )


def _make(**roles: tuple[str, ...]) -> Split:
    """A Split from the given roles; roles it has and that are not given are empty."""
    return Split(**{f.name: roles.get(f.name, ()) for f in dataclasses.fields(Split)})


def _roles(split: Split) -> dict[str, set[str]]:
    """Every role the split defines (whatever roles it grows), as sets of subject ids."""
    return {f.name: set(getattr(split, f.name)) for f in dataclasses.fields(split)}


def _held_out(split: Split) -> set[str]:
    return set(split.test) | set(getattr(split, "validation", ()))


def _training(split: Split) -> set[str]:
    return set(split.seed_positive) | set(split.train_negative) | set(split.unlabeled)


def _labels(records: list[SubjectRecord]) -> dict[str, int]:
    return {r.subject: r.label for r in records}


@pytest.mark.parametrize(("repeat", "seed_size"), [(0, 1), (0, 12), (1, 5), (3, 20)])
def test_roles_are_disjoint_and_cover_the_cohort(repeat: int, seed_size: int) -> None:
    records = _cohort(40, 160)
    split = _split(records, seed_size=seed_size, repeat=repeat, study_seed=11, test_fraction=0.25)
    roles = _roles(split)
    for (a, ids_a), (b, ids_b) in itertools.combinations(roles.items(), 2):
        assert not ids_a & ids_b, f"{a} and {b} share {sorted(ids_a & ids_b)[:5]}"
    assert set().union(*roles.values()) == {r.subject for r in records}  # nobody dropped
    assert sum(len(getattr(split, name)) for name in roles) == len(records)  # nobody twice within a role
    assert not _training(split) & _held_out(split)
    assert set(split.labeled) == set(split.seed_positive) | set(split.train_negative)


def test_roles_hold_the_right_labels() -> None:
    records = _cohort(40, 160)
    label = _labels(records)
    split = _split(records, seed_size=7, repeat=0, study_seed=0, test_fraction=0.25)
    assert len(split.seed_positive) == 7
    assert all(label[s] == 1 for s in split.seed_positive)
    assert all(label[s] == 0 for s in split.train_negative)
    assert all(label[s] == 1 for s in split.unlabeled)  # positives that lost their labels
    positives = {s for s, y in label.items() if y == 1}
    assert set(split.unlabeled) == positives - _held_out(split) - set(split.seed_positive)
    assert set(split.train_negative) == set(label) - positives - _held_out(split)
    assert len(split.test) == 10 + 40  # round(0.25 * 40) positives, round(0.25 * 160) negatives


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "fraction", "test_pos", "test_neg"),
    [
        (40, 160, 0.25, 10, 40),
        (30, 70, 0.2, 6, 14),
        (7, 13, 0.5, 4, 6),  # round(3.5) = 4 (banker's rounding), round(6.5) = 6
        (8, 16, 0.5, 4, 8),
    ],
)
def test_test_set_is_a_stratified_fraction(
    n_pos: int, n_neg: int, fraction: float, test_pos: int, test_neg: int
) -> None:
    records = _cohort(n_pos, n_neg)
    label = _labels(records)
    for repeat in range(3):
        test = _split(records, seed_size=1, repeat=repeat, study_seed=2, test_fraction=fraction).test
        assert sum(label[s] for s in test) == test_pos
        assert sum(1 - label[s] for s in test) == test_neg


def test_held_out_sets_are_the_same_for_every_seed_size_of_a_repeat() -> None:
    records = _cohort(40, 160)
    for repeat in range(3):
        splits = [_split(records, seed_size=n, repeat=repeat, study_seed=5, test_fraction=0.25) for n in (1, 5, 10, 20)]
        assert len({s.test for s in splits}) == 1
        assert len({frozenset(_held_out(s)) for s in splits}) == 1


def test_smaller_seeds_are_subsets_of_larger_seeds() -> None:
    records = _cohort(40, 160)
    seeds = [
        set(_split(records, seed_size=n, repeat=1, study_seed=5, test_fraction=0.25).seed_positive)
        for n in (1, 2, 5, 10, 20)
    ]
    assert [len(s) for s in seeds] == [1, 2, 5, 10, 20]
    for small, large in itertools.pairwise(seeds):
        assert small < large


def test_repeats_and_study_seeds_give_different_test_sets() -> None:
    records = _cohort(40, 160)
    splits = [_split(records, 5, repeat=r, study_seed=3, test_fraction=0.25) for r in range(5)]
    assert len({s.test for s in splits}) == 5
    assert len({s.seed_positive for s in splits}) == 5
    assert _split(records, 5, 0, study_seed=4, test_fraction=0.25).test != splits[0].test


def test_with_fixed_held_out_sets_repeats_and_study_seeds_still_draw_different_seeds() -> None:
    # The manifest fixes the held-out subjects, so the eligible positives are the same in every
    # repeat: only the seed draw can make repeats differ, and it must depend on repeat and seed.
    marks = {f"p{i:02d}": "test" for i in range(5)} | {"n000": "test", "n001": "test"}
    marks |= {f"p{i:02d}": "validation" for i in range(5, 8)} | {"n002": "validation", "n003": "validation"}
    records = _cohort(30, 30, splits=marks)
    seeds = {
        (study_seed, repeat): _split(records, 5, repeat=repeat, study_seed=study_seed, test_fraction=0.2).seed_positive
        for study_seed in (0, 1)
        for repeat in range(4)
    }
    assert len(set(seeds.values())) == len(seeds)


def test_the_same_arguments_give_the_same_split() -> None:
    a = _split(_cohort(40, 160), 5, repeat=2, study_seed=9, test_fraction=0.25)
    b = _split(list(reversed(_cohort(40, 160))), 5, repeat=2, study_seed=9, test_fraction=0.25)
    assert a == b  # the manifest's row order does not matter
    assert a.fingerprint() == b.fingerprint()
    c = _split(_cohort(40, 160), 6, repeat=2, study_seed=9, test_fraction=0.25)
    assert c.fingerprint() != a.fingerprint()


def test_manifest_test_marks_are_the_test_set_for_every_repeat() -> None:
    marked = {"p00", "p01", "p02", "n000", "n001", "n002", "n003", "n004"}
    records = _cohort(20, 40, splits=dict.fromkeys(marked, "test"))
    for repeat in range(3):
        split = _split(records, seed_size=5, repeat=repeat, study_seed=1, test_fraction=0.5)
        assert set(split.test) == marked  # test_fraction is ignored when the manifest decides
        assert not _training(split) & marked


def test_unlabeled_subjects_never_join_the_seed() -> None:
    unlabeled = {f"p{i:02d}" for i in range(10, 20)}
    records = _cohort(20, 40, splits=dict.fromkeys(unlabeled, "unlabeled"))
    label = _labels(records)
    positives = {s for s, y in label.items() if y == 1}
    for repeat in range(4):
        split = _split(records, seed_size=3, repeat=repeat, study_seed=1, test_fraction=0.25)
        assert not set(split.seed_positive) & unlabeled
        # every training positive that is not in the seed is unlabeled, marked or not
        assert set(split.unlabeled) == positives - _held_out(split) - set(split.seed_positive)
    # the largest seed takes every eligible positive, and not one marked unlabeled
    split = _split(records, seed_size=1, repeat=0, study_seed=1, test_fraction=0.25)
    eligible = positives - _held_out(split) - unlabeled
    largest = _split(records, seed_size=len(eligible), repeat=0, study_seed=1, test_fraction=0.25)
    assert set(largest.seed_positive) == eligible
    with pytest.raises(PlatformError, match="seed_size"):
        _split(records, seed_size=len(eligible) + 1, repeat=0, study_seed=1, test_fraction=0.25)


def test_a_seed_larger_than_the_training_positives_is_a_user_error() -> None:
    records = _cohort(10, 30)
    positives = {r.subject for r in records if r.label == 1}
    eligible = positives - _held_out(_split(records, seed_size=1, repeat=0, study_seed=0, test_fraction=0.3))
    assert len(eligible) <= 10 - 3  # round(0.3 * 10) = 3 positives held out for the test set
    assert len(_split(records, len(eligible), repeat=0, study_seed=0, test_fraction=0.3).seed_positive) == len(eligible)
    with pytest.raises(PlatformError, match=rf"seed_size {len(eligible) + 1} .*\b{len(eligible)}\b"):
        _split(records, len(eligible) + 1, repeat=0, study_seed=0, test_fraction=0.3)


def test_duplicate_subject_ids_are_a_user_error() -> None:
    records = _cohort(5, 5)
    with pytest.raises(PlatformError, match="duplicate"):
        _split([*records, records[0]], seed_size=1, repeat=0, study_seed=0, test_fraction=0.2)


@pytest.mark.parametrize("role", ["seed_positive", "train_negative", "unlabeled"])
def test_the_leak_assertion_fires_for_a_test_subject_in_any_training_role(role: str) -> None:
    clean = _make(seed_positive=("p1",), train_negative=("n1",), unlabeled=("p2",), test=("p9", "n9"))
    clean.assert_disjoint()
    leaky = dataclasses.replace(clean, **{role: (*getattr(clean, role), "n9")})
    with pytest.raises(AssertionError, match="n9"):
        leaky.assert_disjoint()


def test_the_fingerprint_tells_roles_apart() -> None:
    a = _make(seed_positive=("p1", "p2"), train_negative=("n1",), test=("t1",))
    moved = _make(seed_positive=("p1",), train_negative=("n1",), unlabeled=("p2",), test=("t1",))
    assert a.fingerprint() != moved.fingerprint()  # p2 moved from the seed to the unlabeled
    assert a.fingerprint() == _make(seed_positive=("p1", "p2"), train_negative=("n1",), test=("t1",)).fingerprint()


# The validation set (evaluation redesign, issue #13): drawn like the test set from what is left.


def test_validation_set_is_a_stratified_fraction_of_the_rest() -> None:
    records = _cohort(40, 160)
    label = _labels(records)
    for repeat in range(3):
        split = make_split(records, 5, repeat=repeat, study_seed=2, test_fraction=0.25, validation_fraction=0.2)
        # test: round(0.25 * 40) = 10 positives, 40 negatives; validation: 0.2 of the 30 / 120 left
        assert sum(label[s] for s in split.validation) == 6
        assert sum(1 - label[s] for s in split.validation) == 24


def test_validation_set_depends_on_the_repeat_and_the_study_seed_only() -> None:
    # The test set is fixed by the manifest, so what is left to draw the validation set from is
    # the same in every repeat: only the validation draw itself can make them differ.
    records = _cohort(40, 160, splits={f"p{i:02d}": "test" for i in range(10)} | {"n000": "test", "n001": "test"})
    draws = {
        (seed, repeat): make_split(records, n, repeat, seed, test_fraction=0.25, validation_fraction=0.2).validation
        for seed in (0, 1)
        for repeat in range(3)
        for n in (1, 10)
    }
    assert len(set(draws.values())) == 6  # one per (study seed, repeat), the same for every seed size


def test_manifest_marks_fix_validation_and_keep_train_subjects_in_training() -> None:
    marks = {"p00": "validation", "p01": "validation", "n000": "validation", "n001": "validation"}
    marks |= {f"p{i:02d}": "train" for i in range(2, 8)} | {f"n{i:03d}": "train" for i in range(2, 20)}
    records = _cohort(20, 40, splits=marks)
    train_marked = {s for s, m in marks.items() if m == "train"}
    for repeat in range(4):
        split = make_split(records, 2, repeat, 0, test_fraction=0.25, validation_fraction=0.5)
        assert set(split.validation) == {"p00", "p01", "n000", "n001"}
        assert not _held_out(split) & train_marked


def test_negatives_marked_unlabeled_are_never_labeled_negatives() -> None:
    unlabeled_negatives = {f"n{i:03d}" for i in range(5)}
    records = _cohort(20, 40, splits=dict.fromkeys(unlabeled_negatives, "unlabeled"))
    for repeat in range(3):
        split = make_split(records, 3, repeat, 0, test_fraction=0.25, validation_fraction=0.2)
        assert unlabeled_negatives <= set(split.unlabeled)
        assert not unlabeled_negatives & (set(split.train_negative) | _held_out(split))


def test_a_held_out_set_without_both_classes_is_a_user_error() -> None:
    only_positives = _cohort(20, 40, splits={"p00": "test", "p01": "test"})
    with pytest.raises(PlatformError, match=r"test set .* positives and negatives"):
        make_split(only_positives, 2, 0, 0, test_fraction=0.25, validation_fraction=0.2)
    with pytest.raises(PlatformError, match=r"validation set .* positives and negatives"):
        # 0.01 of 15 positives and 30 negatives rounds to no subject at all
        make_split(_cohort(20, 40), 2, 0, 0, test_fraction=0.25, validation_fraction=0.01)


def test_training_side_is_what_no_repeat_holds_out() -> None:
    from salient.platform.splits import training_side

    records = _cohort(20, 40, splits={f"p{i:02d}": "train" for i in range(3)})
    held: set[str] = set()
    for repeat in range(3):
        held |= _held_out(make_split(records, 1, repeat, 4, test_fraction=0.25, validation_fraction=0.2))
    side = training_side(records, 3, 4, test_fraction=0.25, validation_fraction=0.2)
    assert side == {r.subject for r in records} - held
    assert {"p00", "p01", "p02"} <= side
    assert training_side(records, 1, 4, 0.25, 0.2) > side  # fewer repeats hold out fewer subjects


@pytest.mark.parametrize("role", ["seed_positive", "train_negative", "unlabeled"])
def test_the_leak_assertion_fires_for_a_validation_subject_in_training(role: str) -> None:
    clean = _make(seed_positive=("p1",), train_negative=("n1",), unlabeled=("p2",), validation=("v1",), test=("t1",))
    clean.assert_disjoint()
    with pytest.raises(AssertionError, match="v1"):
        dataclasses.replace(clean, **{role: (*getattr(clean, role), "v1")}).assert_disjoint()
    with pytest.raises(AssertionError, match="t1"):
        dataclasses.replace(clean, validation=("v1", "t1")).assert_disjoint()
