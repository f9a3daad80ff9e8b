"""Engine v2's state: the binary layout, fenced writes, unreadable states, and the schema-1 upgrade."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgpack
import numpy as np
import pytest

from stream_kt.checkpoint import load_checkpoint
from stream_kt.service import keys
from stream_kt.service.exceptions import StreamError
from stream_kt.service.metrics import Metrics
from stream_kt.service.redis_store import StudentStore, redis_client_sync
from stream_kt.service.state import WINDOW, StateLayout, StudentState, decode_state, extra_ids, read_header, source_hash

from .conftest import (
    TopicReader,
    answer_messages,
    by_student,
    dedupe_outputs,
    produce,
    read_states,
    reference_run,
    running_processor,
    synthetic_answers,
)

SHAPES = {"c": (1, 4), "h": (1, 4)}


def layout_rows(count: int, events: int = 0) -> tuple[StateLayout, np.ndarray]:
    layout = StateLayout("dkt-v2test", SHAPES, num_items=6, window=3)
    rows = layout.new(count, {"c": np.full((count, 1, 4), 0.5, np.float32), "h": np.zeros((count, 1, 4), np.float32)})
    rows["events"] = events
    return layout, rows


# ---------------------------------------------------------------------- the layout (pure)


def test_rows_round_trip_through_blobs_and_read_back_as_states():
    layout, rows = layout_rows(2, events=7)
    rows["mastery"][1] = np.linspace(0, 1, 6)
    rows["window_len"][1], rows["window_head"][1] = 2, 2
    rows["win_item"][1, :2], rows["win_correct"][1, :2], rows["win_ts"][1, :2] = [4, 1], [1, 0], [1_000, 2_000]
    rows["src_hash"][1, 0], rows["src_offset"][1, 0] = source_hash("answers/2"), 41
    blobs = layout.to_blobs(rows)
    assert [len(b) for b in blobs] == [layout.size] * 2 and all(layout.is_mine(b) for b in blobs)
    assert (layout.parse(blobs) == rows).all()
    state = decode_state(blobs[1], "s", ["a", "b", "c", "d", "e", "f"], SHAPES, ["answers/2"])
    assert (state.model_version, state.events_applied) == ("dkt-v2test", 7)
    assert state.window == [("e", 1, 1_000), ("b", 0, 2_000)] and state.offsets == {"answers/2": 41}
    np.testing.assert_array_equal(state.model_state["c"], np.full((1, 4), 0.5, np.float32))
    np.testing.assert_allclose(state.mastery, np.linspace(0, 1, 6), atol=1e-7)


def test_window_ids_the_vocabulary_lacks_ride_in_the_tail():
    layout, rows = layout_rows(1, events=1)
    rows["window_len"][0], rows["window_head"][0], rows["win_item"][0, 0] = 1, 1, 6  # V + 0: the tail's first id
    blob = layout.to_blobs(rows, {0: ["retired", "gone"]})[0]
    header = read_header(blob)
    assert header is not None and not layout.is_mine(blob)  # not the bulk path's kind: read one by one
    assert extra_ids(blob, header) == ["retired", "gone"]
    assert decode_state(blob, "s", list("abcdef")).window == [("retired", 0, 0)]


@pytest.mark.parametrize(
    "blob", [b"KTS2", b"KTS2" + bytes(200), b"KTS3", b"KTS3" + bytes(200), b"\xc1garbage", msgpack.packb([1, 2])]
)
def test_an_unreadable_blob_is_a_stream_error_not_a_crash(blob):
    with pytest.raises(StreamError):
        decode_state(blob, "s")


def test_a_cut_short_state_has_no_header():
    layout, rows = layout_rows(1, events=3)
    blob = layout.to_blobs(rows)[0]
    assert read_header(blob) is not None
    assert read_header(blob[:-1]) is None and read_header(blob[:60]) is None


# ---------------------------------------------------------------------- fencing (real Redis)


def test_a_stale_writer_changes_nothing(redis_url, key_prefix):
    """A zombie member (it lost the partition, its batch still in flight) writes after the new owner moved on."""
    layout, rows = layout_rows(3)
    rows["events"] = [10, 8, 11]  # the owner's state at 10; the zombie's at 8, then 10, then a real next event 11
    owner, zombie_behind, next_event = layout.to_blobs(rows)
    same_count = owner[:-1] + b"\x01"  # as many events as stored, other bytes

    async def scenario():
        store = await StudentStore.connect(redis_url, key_prefix)
        try:
            assert await store.write_blobs(["s"], [owner], [10]) == []
            assert await store.write_blobs(["s"], [zombie_behind], [8]) == [0]
            assert await store.write_blobs(["s"], [same_count], [10]) == [0]
            after_zombie = (await store.read_blobs(["s"]))[0]
            refused_in_a_batch = await store.write_blobs(["t", "s", "u"], [owner, zombie_behind, owner], [10, 8, 10])
            await store.write_blobs(["s"], [next_event], [11])
            return after_zombie, refused_in_a_batch, await store.read_blobs(["s", "t", "u"])
        finally:
            await store.close()

    after_zombie, refused_in_a_batch, (stored, t, u) = asyncio.run(scenario())
    assert after_zombie == owner
    assert refused_in_a_batch == [1] and t == owner and u == owner  # one key refused, the others written
    assert stored == next_event


def test_a_schema_1_state_never_fences_out_its_upgrade(redis_url, key_prefix):
    layout, rows = layout_rows(1, events=5)
    blob = layout.to_blobs(rows)[0]
    client = redis_client_sync(redis_url)
    client.set(keys.student_key("s", key_prefix), StudentState("s", "old-model", events_applied=50).to_bytes())

    async def scenario():
        store = await StudentStore.connect(redis_url, key_prefix)
        try:
            return await store.write_blobs(["s"], [blob], [5])
        finally:
            await store.close()

    assert asyncio.run(scenario()) == []
    assert client.get(keys.student_key("s", key_prefix)) == blob


# ---------------------------------------------------------------------- through the processor (real broker and Redis)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path):
    return load_checkpoint(tiny_checkpoint)


def test_an_unreadable_state_is_quarantined_and_its_student_starts_again(make_settings, checkpoint, redis_url, caplog):
    settings = make_settings()
    answers = synthetic_answers(checkpoint, students=3, seed=8, min_length=4, max_length=6)
    students = by_student(answers)
    garbage, cut, _ = students
    layout = StateLayout(
        checkpoint.version,
        {k: tuple(v.shape[1:]) for k, v in checkpoint.model.initial_state(1).items()},
        len(checkpoint.vocab),
    )
    rows = layout.new(1, {k: v.numpy() for k, v in checkpoint.model.initial_state(1).items()})
    rows["events"] = 10**9  # a state from far ahead, cut short: it must not fence the student's next writes out
    unreadable = {garbage: b"\xc1 not a state", cut: layout.to_blobs(rows)[0][:80]}
    client = redis_client_sync(redis_url)
    for student, blob in unreadable.items():
        client.set(keys.student_key(student, settings.key_prefix), blob)
    metrics = Metrics(process_metrics=False)

    async def scenario():
        await produce(settings, answer_messages(answers))
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            async with running_processor(settings, checkpoint, metrics=metrics):
                await out.read_until(lambda rs: len(dedupe_outputs(rs)) >= len(answers))
            return dedupe_outputs(out.records)

    with caplog.at_level(logging.ERROR, "stream_kt.service.processor"):
        outputs = asyncio.run(scenario())
    assert set(outputs) == {
        (s, k) for s, seq in students.items() for k in range(1, len(seq) + 1)
    }  # counted again from 1
    states = read_states(redis_url, settings.key_prefix, students, checkpoint)
    for student, seq in students.items():
        expected = reference_run(checkpoint, seq)
        assert states[student].events_applied == len(seq)
        np.testing.assert_allclose(states[student].mastery, expected.mastery[-1], atol=1e-5)
        if student in unreadable:
            assert client.get(keys.quarantine_key(student, settings.key_prefix)) == unreadable[student]
    assert client.get(keys.quarantine_key(_, settings.key_prefix)) is None
    assert metrics.corrupt_states == 2
    assert sum("stored state unreadable" in r.getMessage() for r in caplog.records) == 2


def test_a_schema_1_state_is_upgraded_on_the_next_event_and_nothing_is_lost(make_settings, checkpoint, redis_url):
    settings = make_settings()
    history = synthetic_answers(checkpoint, students=3, seed=9, min_length=110, max_length=130)
    later: list = []
    for student, seq in by_student(history).items():  # all but the last 4 events were applied by an older stream-kt
        earlier, rest = seq[:-4], seq[-4:]
        old = reference_run(checkpoint, earlier)
        state = StudentState(
            student,
            checkpoint.version,
            events_applied=len(earlier),
            window=[(a.item_id, a.correct, a.ts_ms) for a in earlier[-WINDOW:]],
            model_state=old.state,
            mastery=old.mastery[-1],
            offsets={"an-older-topic/3": 17},
            updated_ms=1,
        )
        redis_client_sync(redis_url).set(keys.student_key(student, settings.key_prefix), state.to_bytes())
        later += rest

    async def scenario():
        await produce(settings, answer_messages(later))
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            async with running_processor(settings, checkpoint):
                await out.read_until(lambda rs: len(dedupe_outputs(rs)) >= len(later))
            return dedupe_outputs(out.records)

    outputs = asyncio.run(scenario())
    sources = ["an-older-topic/3", *(f"{settings.in_topic}/{p}" for p in range(settings.partitions))]
    states = read_states(redis_url, settings.key_prefix, by_student(history), checkpoint, sources)
    client = redis_client_sync(redis_url)
    for student, seq in by_student(history).items():
        expected = reference_run(checkpoint, seq)  # as if one stream-kt had applied them all
        state = states[student]
        assert (
            client.get(keys.student_key(student, settings.key_prefix))[:4] == b"KTS3"
        )  # written as the current schema
        assert state.events_applied == len(seq)
        assert state.window == [(a.item_id, a.correct, a.ts_ms) for a in seq[-WINDOW:]]
        assert state.offsets["an-older-topic/3"] == 17 and len(state.offsets) == 2
        for name, rows in expected.state.items():
            np.testing.assert_allclose(state.model_state[name], rows, atol=1e-5)
        for k in range(len(seq) - 3, len(seq) + 1):  # the outputs continue the student's count
            assert outputs[(student, k)]["p_correct"] == pytest.approx(expected.p_correct[k - 1], abs=1e-5)
