"""Three ``stream-kt serve`` processes in one group over 6 partitions end with the states one process reaches."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import urllib.request
from pathlib import Path

import numpy as np

from stream_kt.checkpoint import load_checkpoint
from stream_kt.service.kafka_io import ensure_topics
from stream_kt.service.redis_store import redis_client_sync
from stream_kt.tools.brokers import free_port

from .conftest import (
    TopicReader,
    answer_messages,
    assert_final_states,
    by_student,
    dedupe_outputs,
    expected_output_keys,
    produce,
    read_states,
    running_processor,
    synthetic_answers,
    until,
)

SUMMARY = re.compile(r"stopped: (\d+) events in, (\d+) outputs")
MEMBERS, PARTITIONS = 3, 6


def assigned_partitions(log_path: Path) -> set[str] | None:
    """The partitions of the last "partitions assigned" JSON log line of a serve process (None before the first)."""
    assigned = None
    for line in log_path.read_text().splitlines():
        try:
            message = json.loads(line)["message"]
        except (ValueError, KeyError, TypeError):
            continue  # a line that is not ours (a warning printed by a library)
        if message.startswith("partitions assigned: "):
            listed = message.removeprefix("partitions assigned: ")
            assigned = set() if listed == "none" else set(listed.split(", "))
    return assigned


def events_in(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return float(re.search(r"^stream_kt_events_in_total (\S+)$", text, re.M).group(1))


def test_three_processes_over_six_partitions_equal_one_process(
    make_settings, tiny_checkpoint, serve_process, redis_url, key_prefix, topics, tmp_path
):
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(partitions=PARTITIONS)
    alone = make_settings(
        partitions=PARTITIONS,
        in_topic=settings.in_topic,
        out_topic=topics("out-alone"),
        dlq_topic=topics("dlq-alone"),
        group_id=topics("group-alone"),
        key_prefix=f"{key_prefix}-alone",
    )
    answers = synthetic_answers(checkpoint, students=30, seed=31, min_length=40, max_length=80)
    expected = expected_output_keys(answers)
    ports = [free_port() for _ in range(MEMBERS)]
    logs = [tmp_path / f"serve-{n}.log" for n in range(MEMBERS)]  # where serve_process sends each one's stderr

    async def scenario():
        await ensure_topics(
            settings.bootstrap,
            [settings.in_topic, settings.out_topic, settings.dlq_topic, alone.out_topic, alone.dlq_topic],
            PARTITIONS,
        )
        members = [
            serve_process(settings, tiny_checkpoint, "--metrics-port", str(port), "--log-format", "json")
            for port in ports
        ]

        def balanced() -> bool:  # every member holds 2 of the 6 partitions: the group is stable before any event
            assigned = [assigned_partitions(log) if log.exists() else None for log in logs]
            return (
                all(a is not None and len(a) == PARTITIONS // MEMBERS for a in assigned)
                and len(set().union(*assigned)) == PARTITIONS
            )

        await until(balanced, timeout_s=120, what="three members with two partitions each")
        await produce(settings, answer_messages(answers))
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            await out.read_until(
                lambda rs: len(rs) >= len(expected) and set(dedupe_outputs(rs)) >= expected, timeout_s=120
            )
        per_member: list[float] = []

        async def all_counted() -> bool:  # metrics land after the commit
            per_member[:] = [await asyncio.to_thread(events_in, port) for port in ports]
            return sum(per_member) >= len(answers)

        await until(
            all_counted, timeout_s=30, what=lambda: f"events_in_total {per_member} of {len(answers)}", poll_s=0.1
        )
        for member in members:
            member.signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(member.wait) for member in members]
        summaries = [await asyncio.to_thread(member.wait_line, "stopped") for member in members]
        async with TopicReader(alone.bootstrap, alone.out_topic) as out:  # the same events, one process
            async with running_processor(alone, checkpoint):
                await out.read_until(
                    lambda rs: len(rs) >= len(expected) and set(dedupe_outputs(rs)) >= expected, timeout_s=120
                )
        return per_member, codes, summaries

    try:
        per_member, codes, summaries = asyncio.run(scenario())
        students = list(by_student(answers))
        three, one = (
            read_states(redis_url, settings.key_prefix, students),
            read_states(redis_url, alone.key_prefix, students),
        )
    finally:
        client = redis_client_sync(redis_url)
        doomed = list(client.scan_iter(f"{alone.key_prefix}:*", count=1000))
        if doomed:
            client.delete(*doomed)
        client.close()
    assert codes == [0] * MEMBERS
    counted = [int(SUMMARY.match(s).group(1)) for s in summaries]
    assert all(n > 0 for n in per_member) and counted == [int(n) for n in per_member], (per_member, counted)
    assert sum(counted) == len(answers)  # each event consumed by exactly one member, none twice
    for student in students:
        a, b = one[student], three[student]
        assert a is not None and b is not None, student
        assert (b.events_applied, b.window) == (a.events_applied, a.window)
        for name in a.model_state:  # DKT: h and c
            np.testing.assert_allclose(b.model_state[name], a.model_state[name], atol=1e-5, err_msg=f"{student} {name}")
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)  # and both equal the model run offline
