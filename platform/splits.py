"""Subject splits of one (seed size, repeat): labeled seed | unlabeled | held-out test.

The held-out test set depends only on the study seed and the repeat, never on the seed size or
dose, so every detector of a repeat is scored on the same subjects. From the remaining (train)
subjects, ``seed_size`` positives keep their masks (the labeled seed); the other train positives
lose their labels and masks (unlabeled, used only by UCMT), and train negatives are labeled
negatives (a negative needs no mask). Test subjects never enter any training stage:
:meth:`Split.assert_disjoint` is called before every stage that trains.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from salient.platform.cohort.manifest import SubjectRecord
from salient.platform.errors import PlatformError

__all__ = ["Split", "make_split"]


@dataclass(frozen=True)
class Split:
    """Subject ids per role (sorted tuples, so the split hashes deterministically)."""

    seed_positive: tuple[str, ...]
    train_negative: tuple[str, ...]
    unlabeled: tuple[str, ...]
    test: tuple[str, ...]

    #: The roles, in the order the fingerprint hashes them.
    ROLES: ClassVar[tuple[str, ...]] = ("seed_positive", "train_negative", "unlabeled", "test")

    @property
    def labeled(self) -> tuple[str, ...]:
        """Subjects with a known label for detector training."""
        return self.seed_positive + self.train_negative

    def assert_disjoint(self) -> None:
        train = set(self.seed_positive) | set(self.train_negative) | set(self.unlabeled)
        leaked = train & set(self.test)
        if leaked:  # a bug, never a user error: fail loudly
            raise AssertionError(f"test subjects leaked into training: {sorted(leaked)[:5]}")

    def fingerprint(self) -> str:
        text = "|".join(",".join(getattr(self, role)) for role in self.ROLES)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rng(*keys: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_split(
    records: Sequence[SubjectRecord], seed_size: int, repeat: int, study_seed: int, test_fraction: float
) -> Split:
    """Split a cohort for one repeat.

    If the manifest's ``split`` column marks any subject ``test``, those subjects are the test set
    (the same for every repeat); otherwise ``test_fraction`` of the positives and of the negatives
    are drawn (stratified, seeded by study seed and repeat). Subjects marked ``unlabeled`` never
    join the labeled seed.
    """
    ids = [r.subject for r in records]
    if len(set(ids)) != len(ids):
        raise PlatformError("cohort has duplicate subject ids; run `platform cohort check` on it")
    marked_test = [r for r in records if r.split == "test"]
    if marked_test:
        test = {r.subject for r in marked_test}
    else:
        rng = _rng("test", study_seed, repeat)
        test = set()
        for label in (0, 1):
            group = sorted(r.subject for r in records if r.label == label)
            n_test = round(test_fraction * len(group))
            test.update(rng.permutation(group)[:n_test].tolist())
    train = [r for r in records if r.subject not in test]
    eligible = sorted(r.subject for r in train if r.label == 1 and r.split != "unlabeled")
    if seed_size > len(eligible):
        raise PlatformError(
            f"seed_size {seed_size} is larger than the {len(eligible)} positive training subjects "
            f"left after holding out {len(test)} test subjects; lower seed_size or test_fraction"
        )
    seed = set(_rng("seed", study_seed, repeat).permutation(eligible)[:seed_size].tolist())
    split = Split(
        seed_positive=tuple(sorted(seed)),
        train_negative=tuple(sorted(r.subject for r in train if r.label == 0)),
        unlabeled=tuple(sorted(r.subject for r in train if r.label == 1 and r.subject not in seed)),
        test=tuple(sorted(test)),
    )
    split.assert_disjoint()
    return split
