"""Properties of ``decode_answer``, the processor's only gate for input bytes.

Whatever arrives, it returns an ``AnswerEvent`` or raises ``InvalidEvent`` with a
reason from ``REASONS``: anything else would crash the processor on one bad record.
The fault suite's poison generator is checked here too: each kind gets the reason
the suite expects on its dead letter, whatever the seed.
"""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fault_suite.workload import ITEMS, POISON, encode_valid, poison
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.vocab import Vocabulary
from stream_kt.service.events import (
    ELAPSED_MAX_MS,
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    REASONS,
    TS_MAX_MS,
    AnswerEvent,
    decode_answer,
    encode_answer,
)
from stream_kt.service.exceptions import InvalidEvent

VOCAB = Vocabulary("skill_id", tuple(str(i) for i in range(ITEMS)))
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# anything msgpack can carry: the shapes a confused or hostile producer could send
SCALARS = st.none() | st.booleans() | INT64 | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=20)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10) | INT64, inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("v", "student_id", "skill_id", "item_id", "correct", "ts", "event_id", "elapsed_ms")


def outcome(raw: bytes | None) -> AnswerEvent | str:
    """The decoded event, or the reason it was refused; any other exception fails the test."""
    try:
        return decode_answer(raw, VOCAB.index)
    except InvalidEvent as exc:
        assert exc.reason in REASONS, f"reason {exc.reason!r} is not in REASONS"
        assert exc.detail, "every refusal says why"
        return exc.reason


@PROPERTIES
@given(st.binary(max_size=2 * MAX_EVENT_BYTES) | st.none())
def test_arbitrary_bytes_decode_or_raise_invalid_event(raw):
    result = outcome(raw)
    if raw is not None and len(raw) > MAX_EVENT_BYTES:
        assert result == "oversized"


@PROPERTIES
@given(VALUES)
def test_arbitrary_msgpack_values_decode_or_raise_invalid_event(value):
    result = outcome(msgpack.packb(value))
    if not isinstance(value, dict):
        assert result in ("not_a_map", "oversized")


@PROPERTIES
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), VALUES, max_size=8))
def test_maps_with_any_field_values_decode_or_raise_invalid_event(event):
    result = outcome(msgpack.packb(event))
    if isinstance(result, AnswerEvent):  # then every required field really was valid
        assert result.student_id and VOCAB.index(result.item_id) == result.item_index
        assert result.correct in (0, 1) and isinstance(result.ts_ms, int) and not isinstance(result.ts_ms, bool)
        assert result.elapsed_ms is None or (type(result.elapsed_ms) is int and result.elapsed_ms >= 0)


@PROPERTIES
@given(
    student=st.text(min_size=1, max_size=40) | st.integers(min_value=0, max_value=2**63 - 1),
    item=st.integers(min_value=0, max_value=ITEMS - 1),
    item_as_int=st.booleans(),
    item_field=st.sampled_from(["skill_id", "item_id"]),
    correct=st.sampled_from([0, 1, True, False]),
    ts=st.integers(min_value=0, max_value=TS_MAX_MS),
    event_id=st.none() | st.text(max_size=40) | INT64 | st.integers(min_value=2**63, max_value=2**64 - 1),
    elapsed_ms=st.none() | st.integers(min_value=0, max_value=ELAPSED_MAX_MS),
)
def test_valid_events_round_trip(student, item, item_as_int, item_field, correct, ts, event_id, elapsed_ms):
    raw = encode_answer(student, item if item_as_int else str(item), correct, ts, event_id, item_field, elapsed_ms)
    event = decode_answer(raw, VOCAB.index)
    assert event == AnswerEvent(str(student), str(item), item, int(correct), ts, event_id, elapsed_ms)


OUT_OF_RANGE = {
    "ts": st.integers(min_value=-(2**63), max_value=-1) | st.integers(min_value=TS_MAX_MS + 1, max_value=2**64 - 1),
    "elapsed_ms": st.integers(min_value=ELAPSED_MAX_MS + 1, max_value=2**64 - 1),
    "student_id": st.text(min_size=MAX_ID_CHARS + 1, max_size=MAX_ID_CHARS + 50),
    "event_id": st.text(min_size=MAX_ID_CHARS + 1, max_size=MAX_ID_CHARS + 50),
}


@PROPERTIES
@given(st.sampled_from(sorted(OUT_OF_RANGE)).flatmap(lambda name: st.tuples(st.just(name), OUT_OF_RANGE[name])))
def test_a_value_out_of_its_documented_range_is_out_of_range(field_value):
    name, value = field_value
    event = {
        "v": 1,
        "student_id": "s",
        "skill_id": "1",
        "correct": 1,
        "ts": 5,
        "event_id": "e",
        "elapsed_ms": 10,
        name: value,
    }
    assert outcome(msgpack.packb(event)) == "out_of_range"


@pytest.mark.parametrize(
    ("name", "value"), [("ts", 2**64 - 1), ("elapsed_ms", 2**64 - 1), ("ts", -1), ("ts", TS_MAX_MS + 1)]
)
def test_the_huge_integers_that_crashed_serve_are_out_of_range(name, value):
    event = {"student_id": "s", "skill_id": "1", "correct": 1, "ts": 5, name: value}
    assert outcome(msgpack.packb(event)) == "out_of_range"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ts", 0),
        ("ts", TS_MAX_MS),
        ("elapsed_ms", 0),
        ("elapsed_ms", ELAPSED_MAX_MS),
        ("student_id", "s" * MAX_ID_CHARS),
        ("event_id", 2**64 - 1),
    ],
)
def test_the_ends_of_each_range_are_accepted(name, value):
    event = {"student_id": "s", "skill_id": "1", "correct": 1, "ts": 5, name: value}
    assert isinstance(outcome(msgpack.packb(event)), AnswerEvent)


@pytest.mark.parametrize("elapsed", [-1, 1.5, "12", True, [3]])
def test_a_bad_elapsed_time_is_a_dead_letter_not_a_guess(elapsed):
    raw = msgpack.packb({"student_id": "s", "skill_id": "1", "correct": 1, "ts": 5, "elapsed_ms": elapsed})
    assert outcome(raw) == "bad_type"


@PROPERTIES
@given(st.integers(min_value=0, max_value=2**32), st.sampled_from(sorted(POISON)))
def test_every_poison_kind_of_the_fault_suite_gets_its_reason(seed, kind):
    raw, reason = poison(kind, random.Random(seed), "student-1")
    assert outcome(raw) == reason


@PROPERTIES
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=50))
def test_the_fault_suites_valid_encodings_all_decode(seed, length):
    rng = random.Random(seed)
    student = StudentSequence(
        "s",
        tuple(str(rng.randrange(ITEMS)) for _ in range(length)),
        tuple(rng.randint(0, 1) for _ in range(length)),
        tuple(rng.randrange(10**12) for _ in range(length)),
    )
    for position in range(length):
        event = decode_answer(encode_valid(rng, student, position), VOCAB.index)
        assert (event.item_id, event.correct, event.ts_ms, event.event_id) == (
            student.items[position],
            student.correct[position],
            student.ts_ms[position],
            f"s#{position}",
        )


def test_the_poison_kinds_cover_every_reason():
    assert {reason for reason, _ in POISON.values()} == set(REASONS)


@pytest.mark.parametrize("size", [MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1])
def test_the_size_limit_is_inclusive(size):
    event = msgpack.unpackb(encode_answer("s", "1", 1, 0))
    event["pad"] = "x" * 300  # a str16 header, as the final padding has
    overhead = len(msgpack.packb(event)) - 300
    event["pad"] = "x" * (size - overhead)
    raw = msgpack.packb(event)
    assert len(raw) == size
    assert (outcome(raw) == "oversized") == (size > MAX_EVENT_BYTES)
