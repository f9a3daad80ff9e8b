"""Redis failures: the batch is retried with backoff and nothing is committed until its states are written."""

from __future__ import annotations

import asyncio
import logging

from stream_kt.checkpoint import load_checkpoint
from stream_kt.service.redis_store import redis_client_sync

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
    until,
    until_committed,
)


def test_failed_state_writes_and_a_redis_outage_are_retried_without_committing(
    make_settings, tiny_checkpoint, own_redis, caplog
):
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(redis_url=own_redis.url)
    answers = synthetic_answers(checkpoint, students=6, seed=8, min_length=30, max_length=45)
    third = len(answers) // 3
    parts = answers[:third], answers[third : 2 * third], answers[2 * third :]
    expected = expected_output_keys(answers)
    admin = redis_client_sync(own_redis.url)

    def failures() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "stream_kt.service.processor" and r.levelno == logging.ERROR
        ]

    async def scenario():
        end: dict[int, int] = {}
        committed_while_failing = []

        async def send(part):
            for partition, offset in (await produce(settings, answer_messages(part))).items():
                end[partition] = offset

        await send(parts[0])
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            async with running_processor(settings, checkpoint) as stats:
                await out.read_until(lambda rs: len(rs) >= third)
                await until_committed(settings, third)  # the last batch's state write and commit follow its outputs

                # reads work, writes are refused: steps 3-6 run (outputs go out), step 7 fails
                admin.config_set("min-replicas-to-write", 1)
                await send(parts[1])
                await until(lambda: len(failures()) >= 3, what="three failed state writes")
                committed_while_failing.append(await committed_offsets(settings))
                admin.config_set("min-replicas-to-write", 0)
                await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(parts[0] + parts[1]))
                # outputs (step 6) come before the state write and the commit (7, 8): wait for the commit too
                await until_committed(settings, 2 * third)
                failed_writes = len(failures())

                # the server is gone: step 3 fails
                own_redis.stop()
                await send(parts[2])
                await until(lambda: len(failures()) >= failed_writes + 3, what="three failed reads")
                committed_while_failing.append(await committed_offsets(settings))
                own_redis.start()  # same port, same append-only file: the states are back
                await out.read_until(lambda rs: len(rs) >= len(answers) and set(dedupe_outputs(rs)) >= expected)
            return end, committed_while_failing, await committed_offsets(settings), out.records, stats[0]

    with caplog.at_level(logging.INFO, logger="stream_kt"):
        end, committed_while_failing, committed, records, stats = asyncio.run(scenario())
    admin.close()

    # no offset of a batch whose state write failed was committed
    assert [sum(c.values()) for c in committed_while_failing] == [third, 2 * third]
    assert committed == end and sum(end.values()) == len(answers)
    assert all(
        f"{settings.in_topic}/" in f and "@" in f and "nothing committed" in f for f in failures()
    )  # topic/partition@offsets
    outputs = dedupe_outputs(records)  # repeats (from retried step 6) carry the same values
    assert set(outputs) == expected and len(records) > len(answers)
    assert stats.events_in == len(answers) and stats.skipped_replays == 0
    assert_final_states(own_redis.url, settings.key_prefix, checkpoint, answers)
