"""Subject splits (`salient.platform.splits.make_split`): the rules every trained detector relies on.

Disjointness is checked here with set arithmetic over every role of the returned split, never
with the split's own ``assert_disjoint``: a test that trusted that assertion would pass with it
switched off. Expected sizes are worked out by hand from the documented rule (a stratified
``test_fraction`` of the positives and of the negatives, rounded).
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
from salient.platform.cohort.manifest import SubjectRecord
from salient.platform.errors import PlatformError
from salient.platform.splits import Split, make_split


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


def _roles(split: Split) -> dict[str, set[str]]:
    """Every role the split defines (whatever roles it grows), as sets of subject ids."""
    return {f.name: set(getattr(split, f.name)) for f in dataclasses.fields(split)}


def _labels(records: list[SubjectRecord]) -> dict[str, int]:
    return {r.subject: r.label for r in records}


@pytest.mark.parametrize(("repeat", "seed_size"), [(0, 1), (0, 12), (1, 5), (3, 30)])
def test_roles_are_disjoint_and_cover_the_cohort(repeat: int, seed_size: int) -> None:
    records = _cohort(40, 160)
    split = make_split(records, seed_size=seed_size, repeat=repeat, study_seed=11, test_fraction=0.25)
    roles = _roles(split)
    for (a, ids_a), (b, ids_b) in itertools.combinations(roles.items(), 2):
        assert not ids_a & ids_b, f"{a} and {b} share {sorted(ids_a & ids_b)[:5]}"
    assert set().union(*roles.values()) == {r.subject for r in records}  # nobody dropped
    assert sum(len(getattr(split, name)) for name in roles) == len(records)  # nobody twice within a role
    train = set(split.seed_positive) | set(split.train_negative) | set(split.unlabeled)
    assert not train & set(split.test)
    assert set(split.labeled) == set(split.seed_positive) | set(split.train_negative)


def test_roles_hold_the_right_labels() -> None:
    records = _cohort(40, 160)
    label = _labels(records)
    split = make_split(records, seed_size=7, repeat=0, study_seed=0, test_fraction=0.25)
    assert len(split.seed_positive) == 7
    assert all(label[s] == 1 for s in split.seed_positive)
    assert all(label[s] == 0 for s in split.train_negative)
    assert all(label[s] == 1 for s in split.unlabeled)  # positives that lost their labels
    # 40 positives - 10 in test = 30 train positives: 7 seed + 23 unlabeled
    assert len(split.unlabeled) == 23
    assert len(split.train_negative) == 120  # 160 - 40 in test


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
        test = make_split(records, seed_size=1, repeat=repeat, study_seed=2, test_fraction=fraction).test
        assert sum(label[s] for s in test) == test_pos
        assert sum(1 - label[s] for s in test) == test_neg


def test_test_set_is_the_same_for_every_seed_size_of_a_repeat() -> None:
    records = _cohort(40, 160)
    for repeat in range(3):
        tests = {
            make_split(records, seed_size=n, repeat=repeat, study_seed=5, test_fraction=0.25).test
            for n in (1, 5, 10, 30)
        }
        assert len(tests) == 1


def test_smaller_seeds_are_subsets_of_larger_seeds() -> None:
    records = _cohort(40, 160)
    seeds = [
        set(make_split(records, seed_size=n, repeat=1, study_seed=5, test_fraction=0.25).seed_positive)
        for n in (1, 2, 5, 10, 30)
    ]
    assert [len(s) for s in seeds] == [1, 2, 5, 10, 30]
    for small, large in itertools.pairwise(seeds):
        assert small < large


def test_repeats_and_study_seeds_give_different_test_sets() -> None:
    records = _cohort(40, 160)
    by_repeat = [make_split(records, 5, repeat=r, study_seed=3, test_fraction=0.25).test for r in range(5)]
    assert len(set(by_repeat)) == 5
    seeds_by_repeat = [
        make_split(records, 5, repeat=r, study_seed=3, test_fraction=0.25).seed_positive for r in range(5)
    ]
    assert len(set(seeds_by_repeat)) == 5
    assert make_split(records, 5, 0, study_seed=4, test_fraction=0.25).test != by_repeat[0]


def test_with_a_fixed_test_set_repeats_and_study_seeds_still_draw_different_seeds() -> None:
    # The manifest fixes the test set, so the eligible positives are the same in every repeat:
    # only the seed draw can make repeats differ, and it must depend on the repeat and the seed.
    records = _cohort(30, 30, splits={f"p{i:02d}": "test" for i in range(5)} | {"n000": "test"})
    seeds = {
        (study_seed, repeat): make_split(
            records, 5, repeat=repeat, study_seed=study_seed, test_fraction=0.2
        ).seed_positive
        for study_seed in (0, 1)
        for repeat in range(4)
    }
    assert len(set(seeds.values())) == len(seeds)


def test_the_same_arguments_give_the_same_split() -> None:
    a = make_split(_cohort(40, 160), 5, repeat=2, study_seed=9, test_fraction=0.25)
    b = make_split(list(reversed(_cohort(40, 160))), 5, repeat=2, study_seed=9, test_fraction=0.25)
    assert a == b  # the manifest's row order does not matter
    assert a.fingerprint() == b.fingerprint()
    c = make_split(_cohort(40, 160), 6, repeat=2, study_seed=9, test_fraction=0.25)
    assert c.fingerprint() != a.fingerprint()


def test_manifest_test_marks_are_the_test_set_for_every_repeat() -> None:
    marked = {"p00", "p01", "p02", "n000", "n001", "n002", "n003", "n004"}
    records = _cohort(20, 40, splits=dict.fromkeys(marked, "test"))
    for repeat in range(3):
        split = make_split(records, seed_size=10, repeat=repeat, study_seed=1, test_fraction=0.5)
        assert set(split.test) == marked  # test_fraction is ignored when the manifest decides
        assert not (set(split.seed_positive) | set(split.train_negative) | set(split.unlabeled)) & marked


def test_unlabeled_subjects_never_join_the_seed() -> None:
    unlabeled = {f"p{i:02d}" for i in range(10, 20)}
    records = _cohort(20, 40, splits=dict.fromkeys(unlabeled, "unlabeled"))
    label = _labels(records)
    for repeat in range(4):
        split = make_split(records, seed_size=5, repeat=repeat, study_seed=1, test_fraction=0.25)
        assert not set(split.seed_positive) & unlabeled
        # every train positive that is not in the seed is unlabeled, marked or not
        train_pos = {s for s in label if label[s] == 1} - set(split.test)
        assert set(split.unlabeled) == train_pos - set(split.seed_positive)
    # 20 positives - round(0.25 * 20) = 5 in test; the marked ones in the train part cannot be seeds
    split = make_split(records, seed_size=1, repeat=0, study_seed=1, test_fraction=0.25)
    eligible = {s for s in label if label[s] == 1} - set(split.test) - unlabeled
    all_eligible = make_split(records, seed_size=len(eligible), repeat=0, study_seed=1, test_fraction=0.25)
    assert set(all_eligible.seed_positive) == eligible
    with pytest.raises(PlatformError, match="seed_size"):
        make_split(records, seed_size=len(eligible) + 1, repeat=0, study_seed=1, test_fraction=0.25)


def test_a_seed_larger_than_the_training_positives_is_a_user_error() -> None:
    records = _cohort(10, 30)
    # round(0.3 * 10) = 3 positives held out: 7 left for the seed
    assert len(make_split(records, seed_size=7, repeat=0, study_seed=0, test_fraction=0.3).seed_positive) == 7
    with pytest.raises(PlatformError, match=r"seed_size 8 .*\b7\b"):
        make_split(records, seed_size=8, repeat=0, study_seed=0, test_fraction=0.3)


@pytest.mark.parametrize("role", ["seed_positive", "train_negative", "unlabeled"])
def test_the_leak_assertion_fires_for_a_test_subject_in_any_training_role(role: str) -> None:
    clean = Split(seed_positive=("p1",), train_negative=("n1",), unlabeled=("p2",), test=("p9", "n9"))
    clean.assert_disjoint()
    leaky = dataclasses.replace(clean, **{role: (*getattr(clean, role), "n9")})
    with pytest.raises(AssertionError, match="n9"):
        leaky.assert_disjoint()


def test_the_fingerprint_tells_roles_apart() -> None:
    a = Split(seed_positive=("p1", "p2"), train_negative=("n1",), unlabeled=(), test=("t1",))
    moved = Split(seed_positive=("p1",), train_negative=("n1",), unlabeled=("p2",), test=("t1",))
    assert a.fingerprint() != moved.fingerprint()  # p2 moved from the seed to the unlabeled
    assert a.fingerprint() == Split(("p1", "p2"), ("n1",), (), ("t1",)).fingerprint()


def test_duplicate_subject_ids_are_a_user_error() -> None:
    records = _cohort(5, 5)
    with pytest.raises(PlatformError, match="duplicate"):
        make_split([*records, records[0]], seed_size=1, repeat=0, study_seed=0, test_fraction=0.2)
