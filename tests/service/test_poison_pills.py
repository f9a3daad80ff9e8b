"""No event can stop the stream: out-of-range integers, events the processor fails on, a
fuzzed stream (Apache Kafka)."""

from __future__ import annotations

import asyncio
import random
import signal

import msgpack

from fault_suite.fuzz import fuzz_message
from stream_kt.checkpoint import load_checkpoint
from stream_kt.service import events
from stream_kt.service.events import decode_answer, decode_mastery
from stream_kt.service.exceptions import InvalidEvent
from stream_kt.service.metrics import Metrics

from .conftest import (
    TopicReader,
    answer_messages,
    assert_final_states,
    committed_offsets,
    dedupe_outputs,
    expected_output_keys,
    produce,
    running_processor,
    synthetic_answers,
)

HUGE = 2**64 - 1  # the largest integer msgpack carries


def with_bad_events(answers, bad: list[dict]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """The answers as messages with ``bad`` (changes to a valid event of a student) spread between them."""
    messages = answer_messages(answers)
    raws = []
    for n, change in enumerate(bad):
        event = {
            "v": 1,
            "student_id": answers[0].student_id,
            "skill_id": "1",
            "correct": 1,
            "ts": 1_700_000_000_000,
            **change,
        }
        raws.append(msgpack.packb(event))
        messages.insert((n + 1) * len(messages) // (len(bad) + 1), (answers[n].student_id.encode(), raws[-1]))
    return messages, raws


def test_huge_integers_are_dead_lettered_and_serve_keeps_serving(
    make_settings, tiny_checkpoint, serve_process, redis_url
):
    """The poison pill a new user found: ts or elapsed_ms = 2**64 - 1 crash-looped serve (OverflowError)."""
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings()
    answers = synthetic_answers(checkpoint, students=12, seed=31, min_length=20, max_length=40)
    messages, bad = with_bad_events(answers, [{"ts": HUGE}, {"elapsed_ms": HUGE}])

    async def scenario():
        end = await produce(settings, messages)
        proc = serve_process(settings, tiny_checkpoint)
        await asyncio.to_thread(proc.wait_line, "serving")
        async with (
            TopicReader(settings.bootstrap, settings.out_topic) as out,
            TopicReader(settings.bootstrap, settings.dlq_topic) as dlq,
        ):
            await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=90)
            await dlq.read_until(lambda rs: len(rs) >= len(bad))
        still_running = proc.process.poll() is None
        committed = await committed_offsets(settings)
        proc.signal(signal.SIGTERM)
        return end, still_running, await asyncio.to_thread(proc.wait), out.records, dlq.records, committed

    end, still_running, code, outputs, dead, committed = asyncio.run(scenario())
    assert still_running and code == 0
    assert set(dedupe_outputs(outputs)) == expected_output_keys(answers)
    assert sorted(r.value for r in dead) == sorted(bad)
    assert {dict(r.headers)["reason"] for r in dead} == {b"out_of_range"}
    assert committed == end
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)


def test_an_event_the_processor_fails_on_twice_is_dead_lettered_and_its_batch_commits(
    make_settings, tiny_checkpoint, redis_url, monkeypatch
):
    """The crash-loop guard, on the real failure: with the range check off, 2**64 - 1 reaches numpy and raises."""
    monkeypatch.setattr(events, "TS_MAX_MS", 2**70)
    monkeypatch.setattr(events, "ELAPSED_MAX_MS", 2**70)
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(partitions=2, batch_size=32)
    answers = synthetic_answers(checkpoint, students=8, seed=32, min_length=15, max_length=25)
    messages, bad = with_bad_events(answers, [{"ts": HUGE}, {"elapsed_ms": HUGE}])
    metrics = Metrics(process_metrics=False)

    async def scenario():
        end = await produce(settings, messages)
        async with (
            TopicReader(settings.bootstrap, settings.out_topic) as out,
            TopicReader(settings.bootstrap, settings.dlq_topic) as dlq,
        ):
            async with running_processor(settings, checkpoint, metrics=metrics):
                await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=90)
                await dlq.read_until(lambda rs: len({r.value for r in rs}) >= len(bad))
            return end, out.records, dlq.records, await committed_offsets(settings)

    end, outputs, dead, committed = asyncio.run(scenario())
    assert set(dedupe_outputs(outputs)) == expected_output_keys(answers)
    assert {r.value for r in dead} == set(bad)
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["reason"] == "processing_error" and headers["detail"].startswith("OverflowError: ")
    assert metrics.processing_errors == 2 and metrics.dlq["processing_error"] >= 2
    assert committed == end
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)


def test_a_fuzzed_stream_is_answered_or_dead_lettered_and_every_batch_commits(
    make_settings, tiny_checkpoint, redis_url
):
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings()
    answers = synthetic_answers(checkpoint, students=10, seed=33, min_length=20, max_length=30)
    rng = random.Random(33)
    messages = answer_messages(answers)
    fuzzed = []
    for n in range(600):
        value = fuzz_message(rng, n, checkpoint.vocab.ids)
        fuzzed.append(value)
        messages.insert(rng.randrange(len(messages) + 1), (f"fuzz-key-{n}".encode(), value))
    verdicts = []
    for value in fuzzed:
        try:
            event = decode_answer(value, checkpoint.vocab.index)
            verdicts.append((event.student_id, event.event_id))
        except InvalidEvent as exc:
            verdicts.append(exc.reason)
    answered = [v for v in verdicts if not isinstance(v, str)]
    lettered = sorted(v for v in verdicts if isinstance(v, str))

    async def scenario():
        end = await produce(settings, messages)
        async with (
            TopicReader(settings.bootstrap, settings.out_topic) as out,
            TopicReader(settings.bootstrap, settings.dlq_topic) as dlq,
        ):
            async with running_processor(settings, checkpoint) as stats:
                await out.read_until(
                    lambda rs: len(dedupe_outputs(rs)) >= len(expected_output_keys(answers)) + len(answered),
                    timeout_s=120,
                )
                await dlq.read_until(lambda rs: len(rs) >= len(lettered))
            return end, out.records, dlq.records, await committed_offsets(settings), stats[0]

    end, outputs, dead, committed, stats = asyncio.run(scenario())
    real = {a.student_id for a in answers}
    by_key = dedupe_outputs(outputs)
    assert {k for k in by_key if k[0] in real} == expected_output_keys(answers)
    assert sorted(
        ((m["student_id"], m["event_id"]) for k, m in by_key.items() if k[0] not in real), key=repr
    ) == sorted(answered, key=repr)
    assert all(m["seq"] == 1 for k, m in by_key.items() if k[0] not in real)  # each fuzzed student answered once
    assert sorted(dict(r.headers)["reason"].decode() for r in dead) == lettered
    assert committed == end and stats.events_in == len(messages)
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)
    assert all(decode_mastery(r.value)["model_version"] == checkpoint.version for r in outputs)
