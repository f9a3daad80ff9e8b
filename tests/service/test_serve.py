"""``stream-kt serve`` as a process: kill -9, SIGTERM, a second member joining, start-up errors."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
from collections.abc import Callable

import pytest

from stream_kt.checkpoint import load_checkpoint
from stream_kt.cli import main
from stream_kt.tools.brokers import free_port

from .conftest import (
    TopicReader,
    answer_messages,
    assert_final_states,
    committed_offsets,
    dedupe_outputs,
    expected_output_keys,
    produce,
    synthetic_answers,
)

SUMMARY = re.compile(
    r"stopped: (\d+) events in, (\d+) outputs, (\d+) dead letters, (\d+) replays skipped, (\d+) batches"
)


def complete(expected: set) -> Callable[[list], bool]:
    """A read_until condition: every expected (student_id, seq) arrived (decoding only once enough did)."""
    return lambda records: len(records) >= len(expected) and set(dedupe_outputs(records)) >= expected


def test_kill_9_at_random_moments_loses_nothing_and_applies_nothing_twice(
    make_settings, tiny_checkpoint, serve_process, redis_url
):
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings()
    answers = synthetic_answers(
        checkpoint, students=90, seed=5
    )  # long enough that a restarted member cannot finish before the kill
    expected = expected_output_keys(answers)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills = rng.choice([2, 3])
    fractions = [rng.uniform((k + 0.3) / (kills + 1), (k + 0.7) / (kills + 1)) for k in range(kills)]

    async def scenario():
        end = await produce(settings, answer_messages(answers))
        progress = []
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            for fraction in fractions:
                proc = serve_process(settings, tiny_checkpoint)
                await asyncio.to_thread(proc.wait_line, "serving")
                await out.read_until(
                    lambda rs: len(dedupe_outputs(rs)) >= fraction * len(answers), timeout_s=90
                )  # new outputs, not replayed repeats
                await asyncio.sleep(rng.uniform(0, 0.05))  # somewhere inside a batch's steps
                proc.kill()
                progress.append(len(dedupe_outputs(out.records)))
            proc = serve_process(settings, tiny_checkpoint)
            await asyncio.to_thread(proc.wait_line, "serving")
            await out.read_until(complete(expected), timeout_s=90)
            proc.signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait)
            summary = await asyncio.to_thread(proc.wait_line, "stopped")
            return end, progress, out.records, code, summary, await committed_offsets(settings)

    end, progress, records, code, summary, committed = asyncio.run(scenario())
    print(
        f"seed {seed}: killed at {progress} of {len(expected)} outputs; {len(records)} outputs with repeats; "
        f"final run: {summary.strip()}"
    )
    assert all(p < len(expected) for p in progress), "every kill landed mid-stream"
    assert code == 0 and SUMMARY.match(summary)
    assert set(dedupe_outputs(records)) == expected  # repeats carry equal values (checked in dedupe_outputs)
    assert committed == end
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)


def test_sigterm_and_a_member_joining_mid_stream_lose_nothing(make_settings, tiny_checkpoint, serve_process, redis_url):
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings()
    answers = synthetic_answers(checkpoint, students=30, seed=6)
    expected = expected_output_keys(answers)
    third = len(answers) // 3
    end: dict[int, int] = {}

    async def send(chunk):
        for partition, offset in (await produce(settings, answer_messages(chunk))).items():
            end[partition] = max(end.get(partition, 0), offset)

    async def trickle(chunk, until: asyncio.Event):
        """Events keep arriving while a rebalance runs; the rest at once when ``until`` is set."""
        for start in range(0, len(chunk), 20):
            if until.is_set():
                await send(chunk[start:])
                return
            await send(chunk[start : start + 20])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(until.wait(), 0.2)

    async def scenario():
        await send(answers[:third])
        first = serve_process(settings, tiny_checkpoint)
        await asyncio.to_thread(first.wait_line, "serving")
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            await out.read_until(lambda rs: len(rs) >= third // 2)
            joined = asyncio.Event()
            producing = asyncio.create_task(trickle(answers[third : 2 * third], joined))
            second = serve_process(settings, tiny_checkpoint)
            await asyncio.to_thread(second.wait_line, "serving")  # assigned: the group rebalanced mid-stream
            joined.set()
            await producing
            await out.read_until(lambda rs: len(rs) >= third)
            leaving = asyncio.create_task(trickle(answers[2 * third :], asyncio.Event()))
            first.signal(
                signal.SIGTERM
            )  # mid-stream: its in-flight batch finishes and commits, then its partitions move
            first_code = await asyncio.to_thread(first.wait)
            await leaving
            await out.read_until(complete(expected), timeout_s=90)
            second.signal(signal.SIGTERM)
            second_code = await asyncio.to_thread(second.wait)
            summaries = [await asyncio.to_thread(p.wait_line, "stopped") for p in (first, second)]
            return out.records, (first_code, second_code), summaries, await committed_offsets(settings)

    records, codes, summaries, committed = asyncio.run(scenario())
    assert codes == (0, 0)
    stats = [tuple(int(n) for n in SUMMARY.match(s).groups()) for s in summaries]
    assert all(events_in > 0 for events_in, *_ in stats), f"both members processed events: {stats}"
    assert sum(events_in for events_in, *_ in stats) == len(answers)  # every hand-over was at a committed batch
    assert len(records) == len(answers) and set(dedupe_outputs(records)) == expected  # complete, not one repeat
    assert committed == end
    assert_final_states(redis_url, settings.key_prefix, checkpoint, answers)


def test_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"stream-kt serve: error: {tmp_path / 'nope'}: no such checkpoint directory"


@pytest.mark.parametrize("unreachable", ["--bootstrap", "--redis"])
def test_an_unreachable_broker_or_redis_is_one_line_and_exit_2(
    unreachable, tiny_checkpoint, broker, redis_url, key_prefix, capsys
):
    port = free_port()  # nothing listens there
    address = {"--bootstrap": f"127.0.0.1:{port}", "--redis": f"redis://127.0.0.1:{port}/0"}[unreachable]
    args = [
        "serve",
        "--checkpoint",
        str(tiny_checkpoint),
        "--bootstrap",
        broker.bootstrap,
        "--redis",
        redis_url,
        "--key-prefix",
        key_prefix,
    ]
    args[args.index(unreachable) + 1] = address
    assert main(args) == 2
    err = capsys.readouterr().err
    what = {
        "--bootstrap": f"cannot reach the Kafka broker at {address}",
        "--redis": f"cannot reach Redis at {address}",
    }[unreachable]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"stream-kt serve: error: {what}")
