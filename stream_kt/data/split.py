"""Splits by student, never by interaction: seeded, reproducible, stored with the checkpoint."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    """Student ids per role.  ``test`` is empty when held-out students come from a separate file."""

    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    test_source: str  # "file:<path>" or "holdout" (a fraction of --data)

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "test_source": self.test_source,
            "train": list(self.train),
            "valid": list(self.valid),
            "test": list(self.test),
        }

    @classmethod
    def from_json(cls, data: dict) -> Split:
        return cls(
            tuple(data["train"]), tuple(data["valid"]), tuple(data["test"]), int(data["seed"]), data["test_source"]
        )


def _shuffled(student_ids: list[str], seed: int) -> list[str]:
    ids = sorted(set(student_ids))  # sort first: the split must not depend on file order
    random.Random(seed).shuffle(ids)
    return ids


def split_students(
    student_ids: list[str],
    seed: int,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.0,
    test_source: str = "holdout",
) -> Split:
    """Shuffle students with ``seed`` and cut off test then validation students."""
    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError("fractions must be in [0, 1) and leave training students")
    ids = _shuffled(student_ids, seed)
    n_test = round(len(ids) * test_fraction)
    n_valid = max(1, round(len(ids) * valid_fraction)) if valid_fraction > 0 else 0
    test, rest = ids[:n_test], ids[n_test:]
    valid, train = rest[:n_valid], rest[n_valid:]
    return Split(tuple(train), tuple(valid), tuple(test), seed, test_source)


def kfold_students(student_ids: list[str], folds: int, seed: int, valid_fraction: float = 0.1) -> list[Split]:
    """``folds`` splits whose test parts partition the students; validation comes from the rest."""
    if folds < 2:
        raise ValueError("k-fold needs at least 2 folds")
    ids = _shuffled(student_ids, seed)
    splits = []
    for k in range(folds):
        test = ids[k::folds]
        rest = [s for i, s in enumerate(ids) if i % folds != k]
        n_valid = max(1, round(len(rest) * valid_fraction))
        splits.append(Split(tuple(rest[n_valid:]), tuple(rest[:n_valid]), tuple(test), seed, f"fold {k + 1}/{folds}"))
    return splits
