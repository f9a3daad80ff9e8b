"""batcher.rounds: pure planning of which events share a model step."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream_kt.service.batcher import rounds


def student(event: tuple[str, int]) -> str:
    return event[0]


def test_rounds_hold_each_students_kth_event():
    events = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3), ("b", 2)]
    assert rounds(events, student) == [[("a", 1), ("b", 1), ("c", 1)], [("a", 2), ("b", 2)], [("a", 3)]]


def test_no_events_no_rounds():
    assert rounds([], student) == []


def test_distinct_students_share_one_round():
    events = [(str(s), 1) for s in range(200)]
    assert rounds(events, student) == [events]


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers()), max_size=60))
def test_rounds_keep_every_event_once_in_order_with_one_event_per_student(raw):
    events = [(s, i) for i, (s, _) in enumerate(raw)]  # i: position in the poll
    planned = rounds(events, student)
    assert sorted(e for r in planned for e in r) == sorted(events)
    for r in planned:
        assert len({s for s, _ in r}) == len(r)
    applied = [e for r in planned for e in r]  # the order the processor steps them
    for s in {s for s, _ in events}:
        assert [e for e in applied if e[0] == s] == [e for e in events if e[0] == s]
