"""Simulated students: the seed draws the students, the bank seed the items, and old data sets can be written again."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from stream_kt.cli import main
from stream_kt.data.synthetic import SyntheticConfig, generate, item_bank


def item_rates(config: SyntheticConfig) -> np.ndarray:
    """Each item's share of correct answers over the students of ``config``."""
    right, seen = np.zeros(config.items), np.zeros(config.items)
    for student in generate(config):
        for item, correct in zip(student.items, student.correct, strict=True):
            seen[int(item)] += 1
            right[int(item)] += correct
    return right / seen


def test_the_item_bank_is_the_same_whatever_the_seed():
    concepts, difficulty = item_bank(SyntheticConfig(seed=1))
    for seed in (0, 2, 7):
        other_concepts, other_difficulty = item_bank(SyntheticConfig(seed=seed))
        np.testing.assert_array_equal(other_concepts, concepts)
        np.testing.assert_array_equal(other_difficulty, difficulty)
    assert not np.allclose(item_bank(SyntheticConfig(bank_seed=1))[1], difficulty)


def test_students_of_other_seeds_answer_the_same_items_alike_and_other_banks_not():
    """Items' correct rates agree across seeds of one bank (a model of one set fits another), not across banks."""
    first = item_rates(SyntheticConfig(students=300, seed=1))
    same_bank = item_rates(SyntheticConfig(students=300, seed=2))
    other_bank = item_rates(SyntheticConfig(students=300, seed=2, bank_seed=5))
    assert np.corrcoef(first, same_bank)[0, 1] > 0.8
    assert abs(np.corrcoef(first, other_bank)[0, 1]) < 0.5


@pytest.mark.parametrize(
    "args, sha256",
    [
        ([], "ecd7ef05b52e8277f0a2ed933c63ce1d5ce63b00d58f4a06dbd69188c1575c95"),
        (["--seed", "7", "--bank-seed", "7"], "66f6358c2ac6212386a83f02add5944c03c3cf9faab91d04c1ebd2490e04a893"),
    ],
    ids=["seed 0", "seed 7 of bank 7"],
)
def test_data_sets_written_before_the_bank_had_its_own_seed_are_written_again(tmp_path, args, sha256):
    """What ``synth --students 20 --seed S`` wrote when the seed drew the bank too: seed 0 as it is,
    another seed with --bank-seed S."""
    out = tmp_path / "s.txt"
    assert main(["synth", "--out", str(out), "--students", "20", *args]) == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha256
