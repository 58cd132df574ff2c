"""Subject splits of one (seed size, repeat): labeled seed | training negatives | unlabeled |
validation | test.

The **test** set and the **validation** set depend only on the study seed and the repeat, never
on the seed size or the dose, so every detector of a repeat is selected on the same validation
subjects and scored on the same test subjects. Both are stratified by label. From the remaining
(training) subjects, ``seed_size`` positives keep their masks (the labeled seed; smaller seeds are
subsets of larger ones); the other training positives lose their labels and masks (unlabeled,
seen only by UCMT); training negatives are labeled negatives.

The manifest's ``split`` column is honoured: ``test`` and ``validation`` subjects are exactly
those sets (the same for every repeat) when any subject is marked so; ``train`` subjects are
never test or validation; ``unlabeled`` subjects are only ever unlabeled data (a negative marked
``unlabeled`` is never used as a labeled negative).

Neither validation nor test subjects ever enter a training stage: :meth:`Split.assert_disjoint`
checks it whenever a trial or stage runs. (The aggregator is fit on the validation subjects'
embeddings by cross-fitting, so each validation subject's score comes from a model that did not
see it - see :mod:`salient.platform.stages.aggregator`.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from salient.platform.cohort.manifest import SubjectRecord
from salient.platform.errors import PlatformError

__all__ = ["Split", "make_split", "training_side"]


@dataclass(frozen=True)
class Split:
    """Subject ids per role (sorted tuples, so the split hashes deterministically)."""

    seed_positive: tuple[str, ...]
    train_negative: tuple[str, ...]
    unlabeled: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    #: The roles, in the order the fingerprint hashes them.
    ROLES: ClassVar[tuple[str, ...]] = ("seed_positive", "train_negative", "unlabeled", "validation", "test")

    @property
    def labeled(self) -> tuple[str, ...]:
        """Subjects with a known label for detector training."""
        return self.seed_positive + self.train_negative

    @property
    def training(self) -> frozenset[str]:
        """Every subject any training stage may see (labeled or not)."""
        return frozenset(self.seed_positive) | frozenset(self.train_negative) | frozenset(self.unlabeled)

    def assert_disjoint(self) -> None:
        """Fail loudly (a bug, never a user error) if a held-out subject reached training."""
        for role in ("validation", "test"):
            leaked = self.training & set(getattr(self, role))
            if leaked:
                raise AssertionError(f"{role} subjects leaked into training: {sorted(leaked)[:5]}")
        if both := set(self.validation) & set(self.test):
            raise AssertionError(f"subjects are both validation and test: {sorted(both)[:5]}")

    def fingerprint(self) -> str:
        text = "|".join(",".join(getattr(self, role)) for role in self.ROLES)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rng(*keys: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _stratified(records: Sequence[SubjectRecord], fraction: float, rng: np.random.Generator) -> set[str]:
    """``round(fraction x group size)`` subjects of each label, drawn with ``rng``."""
    chosen: set[str] = set()
    for label in (0, 1):
        group = sorted(r.subject for r in records if r.label == label)
        chosen.update(rng.permutation(group)[: round(fraction * len(group))].tolist())
    return chosen


def _held_out(
    records: Sequence[SubjectRecord], repeat: int, study_seed: int, test_fraction: float, validation_fraction: float
) -> tuple[set[str], set[str]]:
    """The (test, validation) subjects of a repeat: marked in the manifest, or drawn stratified
    from the subjects that may be held out (not marked ``train`` or ``unlabeled``)."""
    free = [r for r in records if r.split not in ("train", "unlabeled", "test", "validation")]
    marked_test = {r.subject for r in records if r.split == "test"}
    test = marked_test or _stratified(free, test_fraction, _rng("test", study_seed, repeat))
    marked_validation = {r.subject for r in records if r.split == "validation"}
    if marked_validation:
        return test, marked_validation
    rest = [r for r in free if r.subject not in test]
    # validation_fraction is a share of the subjects left after the test set is held out
    return test, _stratified(rest, validation_fraction, _rng("validation", study_seed, repeat))


def training_side(
    records: Sequence[SubjectRecord], repeats: int, study_seed: int, test_fraction: float, validation_fraction: float
) -> set[str]:
    """Subjects that are neither test nor validation in any of ``repeats`` repeats (what a guidance
    tuning may hold out without scoring on a dose study's held-out subjects)."""
    held: set[str] = set()
    for repeat in range(repeats):
        test, validation = _held_out(records, repeat, study_seed, test_fraction, validation_fraction)
        held |= test | validation
    return {r.subject for r in records if r.subject not in held}


def make_split(
    records: Sequence[SubjectRecord],
    seed_size: int,
    repeat: int,
    study_seed: int,
    test_fraction: float,
    validation_fraction: float,
) -> Split:
    """Split a cohort for one repeat (see the module docstring for the rules).

    Raises:
        PlatformError: duplicate subject ids; a seed larger than the training positives; a
            validation or test set without both classes.
    """
    ids = [r.subject for r in records]
    if len(set(ids)) != len(ids):
        raise PlatformError("cohort has duplicate subject ids; run `platform cohort check` on it")
    test, validation = _held_out(records, repeat, study_seed, test_fraction, validation_fraction)
    by_id = {r.subject: r for r in records}
    for name, role in (("test", test), ("validation", validation)):
        labels = {by_id[s].label for s in role}
        if labels != {0, 1}:
            raise PlatformError(
                f"the {name} set of repeat {repeat} has {len(role)} subject(s) with labels {sorted(labels)}; it needs "
                f"positives and negatives (raise evaluation.{name}_fraction or mark subjects {name} in the manifest)"
            )
    train = [r for r in records if r.subject not in test and r.subject not in validation]
    eligible = sorted(r.subject for r in train if r.label == 1 and r.split != "unlabeled")
    if seed_size > len(eligible):
        raise PlatformError(
            f"seed_size {seed_size} is larger than the {len(eligible)} positive training subjects left after "
            f"holding out {len(test)} test and {len(validation)} validation subjects; lower seed_size, "
            "evaluation.test_fraction or evaluation.validation_fraction"
        )
    seed = set(_rng("seed", study_seed, repeat).permutation(eligible)[:seed_size].tolist())
    split = Split(
        seed_positive=tuple(sorted(seed)),
        train_negative=tuple(sorted(r.subject for r in train if r.label == 0 and r.split != "unlabeled")),
        unlabeled=tuple(
            sorted(r.subject for r in train if r.subject not in seed and (r.label == 1 or r.split == "unlabeled"))
        ),
        validation=tuple(sorted(validation)),
        test=tuple(sorted(test)),
    )
    split.assert_disjoint()
    return split
