"""The processor in this process (run_processor), on the real broker and Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

from stream_kt.checkpoint import load_checkpoint
from stream_kt.data.batches import make_batch
from stream_kt.data.sequences import interaction_times
from stream_kt.models import build_model
from stream_kt.service import keys
from stream_kt.service.events import MAX_EVENT_BYTES
from stream_kt.service.redis_store import redis_client_sync
from stream_kt.service.state import WINDOW, StudentState
from tests.conftest import TINY_ITEMS, save_model_checkpoint

from .conftest import (
    Answer,
    TopicReader,
    answer_messages,
    assert_final_states,
    by_student,
    committed_offsets,
    dedupe_outputs,
    expected_output_keys,
    produce,
    read_states,
    reference_run,
    running_processor,
    served_outputs,
    synthetic_answers,
)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path):
    return load_checkpoint(tiny_checkpoint)


def test_events_apply_in_production_order_and_a_stop_commits_what_was_applied(make_settings, checkpoint, redis_url):
    settings = make_settings()
    answers = synthetic_answers(checkpoint, students=8, seed=1)
    first_half, second_half = answers[: len(answers) // 2], answers[len(answers) // 2 :]

    async def scenario():
        end = await produce(settings, answer_messages(first_half))
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            async with running_processor(settings, checkpoint) as first:
                await out.read_until(lambda rs: len(rs) >= len(first_half))
            after_stop = await committed_offsets(settings)
            end_after_stop = dict(end)
            for partition, offset in (await produce(settings, answer_messages(second_half))).items():
                end[partition] = offset
            async with running_processor(settings, checkpoint) as second:
                await out.read_until(lambda rs: len(rs) >= len(answers))
            return (
                first[0],
                second[0],
                (after_stop, end_after_stop),
                (await committed_offsets(settings), end),
                out.records,
            )

    first, second, (committed, end), (final_committed, final_end), records = asyncio.run(scenario())

    # a stop commits exactly what the states applied: the second run replays nothing
    assert committed == end and sum(end.values()) == len(first_half)
    assert (first.events_in, first.outputs, first.skipped_replays) == (len(first_half), len(first_half), 0)
    assert (second.events_in, second.outputs, second.skipped_replays) == (len(second_half), len(second_half), 0)
    assert final_committed == final_end and sum(final_end.values()) == len(answers)
    states = read_states(
        redis_url,
        settings.key_prefix,
        by_student(answers),
        sources=[f"{settings.in_topic}/{p}" for p in range(settings.partitions)],
    )
    last_applied: dict[int, int] = {}
    for state in states.values():
        for source, offset in state.offsets.items():
            partition = int(source.rsplit("/", 1)[1])
            last_applied[partition] = max(last_applied.get(partition, -1), offset)
    assert {p: o + 1 for p, o in last_applied.items()} == final_committed

    # order: output seq k of a student is that student's k-th produced answer
    assert len(records) == len(answers)  # no repeats: nothing was replayed
    outputs = dedupe_outputs(records)
    for student, seq in by_student(answers).items():
        assert [(outputs[(student, k)]["item_id"], outputs[(student, k)]["ts"]) for k in range(1, len(seq) + 1)] == [
            (a.item_id, a.ts_ms) for a in seq
        ]
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)

    vocab_entry = json.loads(
        redis_client_sync(redis_url).get(keys.model_vocab_key(checkpoint.version, settings.key_prefix))
    )
    assert vocab_entry == {
        "item_column": "skill_id",
        "ids": list(checkpoint.vocab.ids),
        "names": {},
        "checkpoint": str(checkpoint.path.resolve()),
        "model": "dkt",
    }


def invalid_messages(student: str, n: int) -> list[tuple[bytes, str]]:
    """(bytes, expected reason) of the n-th batch of invalid events; each is unique by its ts."""
    ts = 1_800_000_000_000 + n
    return [
        (b"\xc1not msgpack" + str(n).encode(), "not_msgpack"),
        (msgpack.packb({"v": 1, "student_id": student, "correct": 1, "ts": ts}), "missing_field"),
        (msgpack.packb({"v": 1, "student_id": 1.5, "skill_id": "1", "correct": 1, "ts": ts}), "bad_type"),
        (msgpack.packb({"v": 1, "student_id": student, "skill_id": "1", "correct": 2, "ts": ts}), "bad_correct"),
        (
            msgpack.packb({"v": 1, "student_id": student, "skill_id": "no-such-skill", "correct": 1, "ts": ts}),
            "unknown_item",
        ),
        (
            msgpack.packb(
                {"v": 1, "student_id": student, "skill_id": "1", "correct": 1, "ts": ts, "pad": "x" * MAX_EVENT_BYTES}
            ),
            "oversized",
        ),
        (msgpack.packb([student, "1", 1, ts]), "not_a_map"),
        (msgpack.packb({"v": 2, "student_id": student, "skill_id": "1", "correct": 1, "ts": ts}), "bad_version"),
    ]


@pytest.mark.brokers("kafka", "tansu")
def test_every_valid_event_gives_one_output_and_every_invalid_one_a_dead_letter(make_settings, checkpoint, redis_url):
    settings = make_settings()
    answers = synthetic_answers(checkpoint, students=5, seed=2, min_length=20, max_length=40)
    messages, invalid = [], {}
    for i, (key, value) in enumerate(answer_messages(answers)):
        messages.append((key, value))
        if i % 20 == 0:  # a few of every kind, spread over the stream and the partitions
            for raw, reason in invalid_messages(key.decode(), i):
                messages.append((key, raw))
                invalid[raw] = reason

    async def scenario():
        await produce(settings, messages)
        async with TopicReader(settings.bootstrap, settings.in_topic) as source:
            await source.read_until(lambda rs: len(rs) == len(messages))
        async with (
            TopicReader(settings.bootstrap, settings.out_topic) as out,
            TopicReader(settings.bootstrap, settings.dlq_topic) as dlq,
        ):
            async with running_processor(settings, checkpoint) as stats:
                await out.read_until(lambda rs: len(rs) >= len(answers))
                await dlq.read_until(lambda rs: len(rs) >= len(invalid))
            return source.records, out.records, dlq.records, stats[0]

    source, out, dlq, stats = asyncio.run(scenario())

    assert set(dedupe_outputs(out)) == expected_output_keys(answers)
    assert len(out) == len(answers)
    assert (stats.events_in, stats.outputs, stats.dlq) == (len(messages), len(answers), len(invalid))
    where = {r.value: (r.key, f"{r.topic}/{r.partition}/{r.offset}") for r in source}
    assert len(dlq) == len(invalid)
    for letter in dlq:
        headers = dict(letter.headers)
        assert letter.value in invalid, "a dead letter carries the original bytes"
        assert headers["reason"].decode() == invalid[letter.value]
        assert headers["detail"]
        assert (letter.key, headers["source"].decode()) == where[letter.value]
    assert {letter.value for letter in dlq} == set(invalid)
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)  # invalid events never reached a state


def test_streamed_predictions_equal_the_offline_model(make_settings, checkpoint):
    settings = make_settings(batch_size=4)  # several steps per round: padding and splitting in play
    answers = synthetic_answers(checkpoint, students=6, seed=3, min_length=60, max_length=150)
    students = by_student(answers)
    assert max(len(seq) for seq in students.values()) > WINDOW

    outputs = served_outputs(settings, checkpoint, answers)
    model, vocab = checkpoint.model, checkpoint.vocab
    ids = list(students)
    rows = [
        (np.array([vocab.index(a.item_id) for a in students[s]]), np.array([a.correct for a in students[s]]))
        for s in ids
    ]
    batch = make_batch(rows)
    with torch.no_grad():
        logits = model(batch)  # (S, T): position t predicts event t + 1
        hidden, _ = model.hidden_states(batch.items, batch.correct, batch.mask)  # (S, T, H)
        mastery = torch.sigmoid(model.out(hidden))  # (S, T, V): after event t
        first_p = torch.sigmoid(model.out.bias)  # before any event the state is zero
    for row, student in enumerate(ids):
        for t in range(len(students[student])):
            message = outputs[(student, t + 1)]
            offline_p = first_p[rows[row][0][0]] if t == 0 else torch.sigmoid(logits[row, t - 1])
            assert message["model_version"] == checkpoint.version
            assert message["p_correct"] == pytest.approx(float(offline_p), abs=1e-5), f"{student} event {t}"
            np.testing.assert_allclose(
                message["mastery"], mastery[row, t].numpy(), atol=1e-5, err_msg=f"{student} event {t}"
            )


def test_an_ensemble_is_served_like_any_model(make_settings, tmp_path, redis_url):
    """Three members' states in one Redis row; every output is the mean the offline ensemble steps to."""
    torch.manual_seed(0)
    members = (
        {"model": "dkt", "embed_dim": 8, "hidden_size": 16},
        {"model": "lastquery", "dim": 8, "heads": 2, "hidden_size": 16},
        {"model": "bkt"},
    )
    model = build_model("ensemble", num_items=TINY_ITEMS, members=members)
    checkpoint = load_checkpoint(save_model_checkpoint(tmp_path / "ensemble", model))
    settings = make_settings(batch_size=4)
    answers = synthetic_answers(checkpoint, students=4, seed=5, min_length=60, max_length=130)

    outputs = served_outputs(settings, checkpoint, answers)
    for student, seq in by_student(answers).items():
        expected = reference_run(checkpoint, seq)
        for k in range(len(seq)):
            message = outputs[(student, k + 1)]
            assert message["model_version"] == checkpoint.version and checkpoint.version.startswith("ensemble-")
            assert message["p_correct"] == pytest.approx(expected.p_correct[k], abs=1e-5), f"{student} event {k}"
            np.testing.assert_allclose(message["mastery"], expected.mastery[k], atol=1e-5)
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)


def test_a_time_aware_model_gets_each_events_elapsed_and_lag_times(make_settings, tmp_path):
    """SAINT+ served live equals its offline forward over the same students' timed sequences."""
    torch.manual_seed(0)
    model = build_model("saint_plus", num_items=TINY_ITEMS, dim=16, heads=2, encoder_layers=1, decoder_layers=1).eval()
    with torch.no_grad():  # the time projection starts small; make times matter for sure
        model.time_projection.weight.mul_(20)
    checkpoint = load_checkpoint(save_model_checkpoint(tmp_path / "saint_plus", model))
    vocab = checkpoint.vocab
    settings = make_settings(batch_size=4)
    rng = np.random.default_rng(6)
    answers = [
        dataclasses.replace(a, elapsed_ms=int(rng.integers(0, 90_000)))
        for a in synthetic_answers(checkpoint, students=4, seed=6, min_length=20, max_length=40)
    ]

    outputs = served_outputs(settings, checkpoint, answers)
    students = by_student(answers)
    rows = []
    for seq in students.values():
        times = interaction_times([a.ts_ms for a in seq], [a.elapsed_ms for a in seq])
        rows.append((np.array([vocab.index(a.item_id) for a in seq]), np.array([a.correct for a in seq]), times))
    batch = make_batch(rows)
    with torch.no_grad():
        timed = torch.sigmoid(checkpoint.model(batch))
        untimed = torch.sigmoid(checkpoint.model(make_batch([row[:2] for row in rows])))
    assert (timed - untimed)[batch.next_mask].abs().max() > 1e-3  # the times matter to this model
    for row, (student, seq) in enumerate(students.items()):
        for t in range(1, len(seq)):
            streamed = outputs[(student, t + 1)]["p_correct"]
            assert streamed == pytest.approx(float(timed[row, t - 1]), abs=1e-5), f"{student} event {t}"


def test_a_state_of_another_model_version_is_rebuilt_from_its_window(
    make_settings, checkpoint, checkpoint_factory, redis_url
):
    upgraded = load_checkpoint(checkpoint_factory(seed=7, num_items=len(checkpoint.vocab) + 2))
    assert upgraded.version != checkpoint.version
    settings = make_settings()
    history = synthetic_answers(checkpoint, students=2, seed=4, min_length=120, max_length=130)  # windows cut at WINDOW
    legacy = Answer("legacy", "retired-skill", 1, 1)  # an id the new vocabulary lacks: dropped from the rebuild
    old_states, new_events = {}, {}
    for student, seq in by_student(history).items():
        window = [*seq[:-WINDOW], legacy, *seq[-WINDOW + 1 :]][-WINDOW:]
        old = reference_run(checkpoint, seq)
        old_states[student] = StudentState(
            student,
            checkpoint.version,
            events_applied=len(seq),
            window=[(a.item_id, a.correct, a.ts_ms) for a in window],
            model_state=old.state,
            mastery=old.mastery[-1],
            offsets={"retired-topic/0": 41},
        )
        new_events[student] = (
            Answer(student, str(len(upgraded.vocab) - 1), 1, seq[-1].ts_ms + 1),
            window,
        )  # an item only the new model has
    client = redis_client_sync(redis_url)
    for state in old_states.values():
        client.set(keys.student_key(state.student_id, settings.key_prefix), state.to_bytes())

    async def scenario():
        await produce(settings, answer_messages(event for event, _ in new_events.values()))
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            async with running_processor(settings, upgraded):
                await out.read_until(lambda rs: len(rs) >= len(new_events))
            return dedupe_outputs(out.records)

    outputs = asyncio.run(scenario())
    sources = ["retired-topic/0", *(f"{settings.in_topic}/{p}" for p in range(settings.partitions))]
    states = read_states(redis_url, settings.key_prefix, new_events, upgraded, sources)
    for student, (event, window) in new_events.items():
        replayed = [a for a in window if upgraded.vocab.index(a.item_id) is not None] + [event]
        assert len(replayed) == WINDOW  # the legacy id was dropped, the new event added
        expected = reference_run(upgraded, replayed)
        state, old = states[student], old_states[student]
        assert state.model_version == upgraded.version
        assert state.events_applied == old.events_applied + 1
        assert state.window == (old.window + [(event.item_id, event.correct, event.ts_ms)])[-WINDOW:]
        assert state.offsets["retired-topic/0"] == 41 and len(state.offsets) == 2
        for name, rows in expected.state.items():
            np.testing.assert_allclose(state.model_state[name], rows, atol=1e-5)
        np.testing.assert_allclose(state.mastery, expected.mastery[-1], atol=1e-5)
        message = outputs[(student, old.events_applied + 1)]
        assert message["model_version"] == upgraded.version
        assert message["p_correct"] == pytest.approx(expected.p_correct[-1], abs=1e-5)
        np.testing.assert_allclose(message["mastery"], expected.mastery[-1], atol=1e-5)


def test_a_batch_polled_across_a_rebalance_is_rewound_not_skipped(broker, topics):
    """The rewind behind the rebalance gate: records dropped unprocessed are read again, from their first offset.

    Without it the consumer's position is already past the dropped batch and the next
    commit would make the loss permanent (found by scripts/fault-suite).
    """
    import asyncio
    import types

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream_kt.service.kafka_io import ensure_topics, make_tool_producer
    from stream_kt.service.processor import Processor

    topic = topics("rewind")

    async def scenario() -> tuple[list[int], list[int]]:
        await ensure_topics(broker.bootstrap, [topic], 2)
        producer = make_tool_producer(broker.bootstrap)
        await producer.start()
        for i in range(10):
            await producer.send_and_wait(topic, f"event-{i}".encode(), partition=i % 2)
        await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        first: dict = {}
        while sum(len(v) for v in first.values()) < 10:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                first.setdefault(tp, []).extend(records)
        consumer.assign([TopicPartition(topic, 1)])  # partition 0 moved to another member
        consumer.seek(TopicPartition(topic, 1), first[TopicPartition(topic, 1)][-1].offset + 1)  # as after the fetch
        Processor.rewind(types.SimpleNamespace(consumer=consumer), first)
        again = await consumer.getmany(timeout_ms=2000)
        await consumer.stop()
        return [r.offset for r in first[TopicPartition(topic, 1)]], [
            r.offset for r in again.get(TopicPartition(topic, 1), [])
        ]

    first_offsets, reread_offsets = asyncio.run(scenario())
    assert first_offsets == [0, 1, 2, 3, 4]
    assert reread_offsets == first_offsets  # the still-owned partition is read again from the batch's first offset
