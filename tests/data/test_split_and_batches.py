import numpy as np
import pytest

from stream_kt.data.batches import cut_windows, iterate_batches, make_batch
from stream_kt.data.sequences import StudentSequence, interaction_times
from stream_kt.data.split import kfold_students, split_students
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.data.vocab import EncodedSequence, Vocabulary

IDS = [f"s{i}" for i in range(100)]


def test_split_is_by_student_disjoint_and_reproducible():
    a = split_students(IDS, seed=3, valid_fraction=0.1, test_fraction=0.2)
    b = split_students(list(reversed(IDS)), seed=3, valid_fraction=0.1, test_fraction=0.2)
    assert a == b  # file order does not matter, the seed does
    assert (len(a.train), len(a.valid), len(a.test)) == (70, 10, 20)
    assert not set(a.train) & set(a.valid) and not set(a.train) & set(a.test) and not set(a.valid) & set(a.test)
    assert split_students(IDS, seed=4, valid_fraction=0.1, test_fraction=0.2).test != a.test


def test_kfold_test_parts_partition_the_students():
    folds = kfold_students(IDS, 5, seed=0)
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == set(IDS) and sum(len(t) for t in tests) == len(IDS)
    for f in folds:
        assert not set(f.test) & (set(f.train) | set(f.valid))


def test_windows_cut_long_sequences_instead_of_truncating():
    seq = EncodedSequence("a", np.arange(250), np.ones(250, np.int64))
    windows = cut_windows([seq], 100)
    assert [len(w.items) for w in windows] == [100, 100, 50]
    assert np.array_equal(np.concatenate([w.items for w in windows]), np.arange(250))
    # a trailing window of one interaction has nothing to score
    assert [len(w.items) for w in cut_windows([EncodedSequence("b", np.arange(201), np.ones(201, np.int64))], 100)] == [
        100,
        100,
    ]


@pytest.mark.parametrize("pad", ["post", "pre"])
def test_batch_targets_are_the_next_interaction_and_never_the_input(pad):
    items, correct = np.array([4, 5, 6, 7]), np.array([1, 0, 0, 1])
    batch = make_batch([(items, correct), (items[:2], correct[:2])], pad=pad, length=6)
    row = batch.mask[0]
    scored = batch.next_mask[0]
    assert batch.items[0][row].tolist() == [4, 5, 6, 7]
    assert batch.next_items[0][scored].tolist() == [5, 6, 7]
    assert batch.next_correct[0][scored].tolist() == [0, 0, 1]
    # the label at t is the input at t+1, never the input at t
    positions = scored.nonzero().flatten()
    assert all(batch.correct[0][p + 1] == batch.next_correct[0][p] for p in positions)
    assert batch.next_mask.sum().item() == 3 + 1


def test_vocabulary_maps_unknown_ids_to_none_and_encode_drops_them():
    students = generate(SyntheticConfig(students=5, items=10, seed=1))
    vocab = Vocabulary.build(students, "skill_id")
    assert vocab.index("3") == vocab.index(3) is not None
    assert vocab.index("999") is None
    from stream_kt.data.sequences import StudentSequence

    encoded = vocab.encode(StudentSequence("x", ("3", "999", "4"), (1, 0, 1)))
    assert encoded.items.tolist() == [vocab.index("3"), vocab.index("4")] and encoded.n_unknown == 1


def test_synthetic_students_learn_over_time():
    students = generate(SyntheticConfig(students=300, seed=0, min_length=60, max_length=60))
    early = np.mean([s.correct[:10] for s in students])
    late = np.mean([s.correct[-10:] for s in students])
    assert late > early + 0.1
    assert generate(SyntheticConfig(students=3, seed=5)) == generate(SyntheticConfig(students=3, seed=5))


def test_times_are_elapsed_and_lag_seconds_between_the_kept_interactions():
    assert interaction_times(None, None) is None
    np.testing.assert_allclose(
        interaction_times([1_000, 4_000, 3_500, 10_000], None), [[0, 0], [0, 3], [0, 0], [0, 6.5]]
    )  # a clock going back is lag 0
    np.testing.assert_allclose(interaction_times(None, [2_500, 0]), [[2.5, 0], [0, 0]])
    student = StudentSequence(
        "a",
        ("1", "x", "2", "1"),
        (1, 0, 1, 1),
        ts_ms=(0, 5_000, 9_000, 20_000),
        elapsed_ms=(1_000, 2_000, 3_000, 4_000),
    )
    encoded = Vocabulary("skill_id", ("1", "2")).encode(student)
    assert encoded.items.tolist() == [0, 1, 0] and encoded.n_unknown == 1
    # the unknown "x" is dropped, so "2"'s lag runs from "1" (9 s), as in the stream, which never applies "x"
    np.testing.assert_allclose(encoded.times, [[1, 0], [3, 9], [4, 11]])


def test_batches_carry_times_only_when_the_data_has_them():
    timed = EncodedSequence(
        "t", np.arange(150) % 5, np.ones(150, np.int64), times=np.arange(300, dtype=np.float32).reshape(150, 2)
    )
    untimed = EncodedSequence("u", np.arange(30) % 5, np.zeros(30, np.int64))
    windows = cut_windows([timed, untimed], 100)
    assert [w.times is None for w in windows] == [False, False, True]
    np.testing.assert_array_equal(windows[1].times, timed.times[100:])
    batch = next(iterate_batches(windows, batch_size=3, shuffle=False, pad="pre"))
    assert batch.times.shape == (3, 100, 2)
    np.testing.assert_array_equal(
        batch.times[1, 50:].numpy(), timed.times[100:]
    )  # pre-padded: the real span is at the end
    assert not batch.times[2].any() and not batch.times[1, :50].any()  # rows without times and padding are zeros
    assert make_batch([(untimed.items, untimed.correct)]).times is None
