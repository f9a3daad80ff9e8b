"""Wire formats: the hot path's answer decode equals the reference one; mastery messages of both versions."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_kt.service.events import MasteryEncoder, answer_fields, decode_answer, decode_mastery
from stream_kt.service.exceptions import InvalidEvent

INDEX = {str(i): i for i in range(5)} | {"x y": 5}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.binary(max_size=3),
)
near_misses = st.sampled_from(
    [None, True, False, 0, 1, 2, -1, 1.0, 0.5, "1", "", " ", b"1", [1], {"a": 1}, 2**63, -(2**63)]
)
fields = {  # replacements: mostly near misses of a valid value, sometimes anything
    "v": st.one_of(near_misses, scalars),
    "student_id": st.one_of(near_misses, st.text(max_size=3), scalars),
    "skill_id": st.one_of(near_misses, st.sampled_from(["0", "3", " 4 ", "x y", "9", 4, 9, -1]), scalars),
    "item_id": st.one_of(near_misses, st.sampled_from(["1", "7"])),
    "correct": st.one_of(near_misses, scalars),
    "ts": st.one_of(near_misses, st.integers(0, 2**63 - 1), scalars),
    "event_id": st.one_of(near_misses, st.text(max_size=3), st.integers(-(2**63), 2**64 - 1), scalars),
    "elapsed_ms": st.one_of(near_misses, st.integers(-2, 3), scalars),
}
valid = st.fixed_dictionaries(
    {
        "student_id": st.one_of(st.text(min_size=1, max_size=3), st.integers(-5, 5)),
        "skill_id": st.sampled_from(["0", "3", " 4", "x y", 2]),
        "correct": st.sampled_from([0, 1, True, False]),
        "ts": st.integers(0, 2**40),
    },
    optional={
        "v": st.just(1),
        "event_id": st.one_of(st.text(max_size=3), st.integers(-5, 5)),
        "elapsed_ms": st.integers(0, 10**6),
    },
)


@st.composite
def events(draw):
    """A valid event with up to two fields replaced by anything and up to one removed: near misses of every kind."""
    event = draw(valid)
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=2, unique=True)):
        event[name] = draw(fields[name])
    if draw(st.booleans()):
        event.pop(draw(st.sampled_from(sorted(event))), None)
    return event


messages = st.one_of(
    events().map(lambda e: msgpack.packb(e)),
    st.binary(max_size=12),
    st.lists(st.integers(-9, 9), max_size=3).map(msgpack.packb),
    st.none(),
)


def reference(raw: bytes | None, max_bytes: int):
    try:
        e = decode_answer(raw, INDEX.get, max_bytes)
    except InvalidEvent as exc:
        return ("invalid", exc.reason, exc.detail)
    return (e.student_id, e.item_id, e.item_index, e.correct, e.ts_ms, e.event_id, e.elapsed_ms, e.question_id)


@settings(max_examples=2000)
@given(messages, st.sampled_from([4096, 20]))
def test_the_fast_answer_decode_accepts_and_refuses_exactly_what_decode_answer_does(raw, max_bytes):
    try:
        got = answer_fields(raw, INDEX, max_bytes)
    except InvalidEvent as exc:
        got = ("invalid", exc.reason, exc.detail)
    expected = reference(raw, max_bytes)
    assert got == expected
    if got[0] != "invalid":  # same values and the same types (a True is stored as 1, a str id stays a str)
        assert [type(v) for v in got] == [type(v) for v in expected]


def test_a_common_event_is_decoded_by_the_fast_path():
    raw = msgpack.packb({"v": 1, "student_id": "s", "skill_id": "3", "correct": True, "ts": 5, "event_id": 9})
    assert answer_fields(raw, INDEX) == ("s", "3", 3, 1, 5, 9, None, None)


@pytest.mark.parametrize(
    ("fmt", "dtype", "atol"), [("v2", "float32", 0.0), ("v2", "float16", 5e-4), ("v1", "float32", 0.0)]
)
def test_mastery_messages_of_both_versions_decode_to_the_same_vector(fmt, dtype, atol):
    mastery = np.random.default_rng(0).random((3, 7), dtype=np.float32)
    encoder = MasteryEncoder("dkt-1", fmt, dtype)
    raws = encoder.encode(
        ["a", "b", "c"], [1, 2, 3], [None, "e", 4], [10, 20, 30], ["3", "4", "x y"], [0.25, 0.5, 0.75], mastery
    )
    for row, raw in enumerate(raws):
        message = decode_mastery(raw)
        assert message["v"] == (2 if fmt == "v2" else 1)
        assert (message["student_id"], message["seq"], message["ts"], message["item_id"], message["model_version"]) == (
            "abc"[row],
            row + 1,
            10 * (row + 1),
            ["3", "4", "x y"][row],
            "dkt-1",
        )
        assert message["p_correct"] == [0.25, 0.5, 0.75][row]
        np.testing.assert_allclose(message["mastery"], mastery[row], atol=atol, rtol=0)
    if fmt == "v2":
        raw = msgpack.unpackb(raws[0])
        assert raw["dtype"] == ("f4" if dtype == "float32" else "f2") and len(raw["mastery"]) == 7 * (
            4 if dtype == "float32" else 2
        )


def test_a_v1_message_keeps_its_list_and_half_precision_needs_v2():
    assert isinstance(
        msgpack.unpackb(
            MasteryEncoder("m", "v1").encode(["a"], [1], [None], [0], ["0"], [0.5], np.zeros((1, 2), np.float32))[0]
        )["mastery"],
        list,
    )
    with pytest.raises(ValueError, match="float16 with format v2"):
        MasteryEncoder("m", "v1", "float16")
