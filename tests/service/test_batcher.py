"""batcher: which events of a poll share a model step (rounds), and the in-place row updates.  Pure."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stream_kt.service.batcher import codes_of, event_times, push_window, round_index
from stream_kt.service.state import StateLayout, read_header, window_of


def test_round_k_holds_each_students_kth_event():
    codes, students = codes_of(["a", "b", "a", "c", "a", "b"])
    assert students == ["a", "b", "c"] and codes.tolist() == [0, 1, 0, 2, 0, 1]
    assert round_index(codes).tolist() == [0, 0, 1, 0, 2, 1]


def test_no_events_no_rounds():
    assert round_index(np.zeros(0, np.int64)).tolist() == []


def test_distinct_students_share_one_round():
    codes, _ = codes_of([str(s) for s in range(200)])
    assert (round_index(codes) == 0).all()


@given(st.lists(st.sampled_from("abcdef"), max_size=60))
def test_each_event_is_in_the_round_of_how_many_events_of_its_student_came_before(students):
    codes, _ = codes_of(students)
    rounds = round_index(codes)
    assert rounds.tolist() == [students[:i].count(s) for i, s in enumerate(students)]
    for k in set(rounds.tolist()):  # one event per student in a round, so one row per student in its step
        in_round = [s for s, r in zip(students, rounds) if r == k]
        assert len(set(in_round)) == len(in_round)


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 1)), max_size=12))
def test_the_window_ring_keeps_the_last_interactions_oldest_first(answers):
    layout = StateLayout("m", {"h": (1, 2)}, num_items=10, window=5)
    rows = layout.new(1, {"h": np.zeros((1, 1, 2), np.float32)})
    for t, (item, correct) in enumerate(answers):
        push_window(rows, np.array([0]), np.array([item]), np.array([correct]), np.array([1000 * t]))
    blob = layout.to_blobs(rows)[0]
    items, correct, ts, questions = window_of(blob, read_header(blob))
    assert items.shape == (len(answers[-5:]), 1) and questions is None  # one skill an answer, no question ids
    items = items[:, 0]
    kept = answers[-5:]
    assert items.tolist() == [i for i, _ in kept] and correct.tolist() == [c for _, c in kept]
    assert ts.tolist() == [1000 * t for t in range(len(answers))][-5:]


def test_event_times_are_elapsed_and_the_lag_since_the_previous_answer_in_seconds():
    layout = StateLayout("m", {"h": (1, 2)}, num_items=10, window=3)
    rows = layout.new(2, {"h": np.zeros((2, 1, 2), np.float32)})
    push_window(rows, np.array([0]), np.array([1]), np.array([1]), np.array([10_000]))
    times = event_times(rows, np.array([0, 1]), np.array([12_500, 5_000]), np.array([-1, 4_000]))
    assert times.tolist() == [[0.0, 2.5], [4.0, 0.0]]  # row 1 has no earlier answer: lag 0
