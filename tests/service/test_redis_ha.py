"""Redis high availability: Sentinel URLs, WAIT for replicas before a commit, and a failover mid-stream.

Real processes throughout (the launch layer's ``SentinelGroup``): a primary, a replica and three Sentinels;
the stream tests run the processor on Apache Kafka.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stream_kt.checkpoint import load_checkpoint
from stream_kt.cli import main
from stream_kt.errors import ConfigError
from stream_kt.service import keys
from stream_kt.service.metrics import Metrics
from stream_kt.service.redis_store import ReplicasNotReached, StudentStore, redis_client_sync
from stream_kt.service.state import EVENTS_BYTE
from stream_kt.settings import StreamSettings, sentinel_target
from stream_kt.tools.processes import SentinelGroup

from .conftest import (
    TopicReader,
    answer_messages,
    assert_final_states,
    by_student,
    committed_offsets,
    dedupe_outputs,
    expected_output_keys,
    produce,
    read_states,
    running_processor,
    synthetic_answers,
    until,
    until_committed,
)


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary, one replica of it and three Sentinels (skips without the binaries); every
    process killed at the end."""
    reason = SentinelGroup.unavailable()
    if reason:
        pytest.skip(reason)
    with SentinelGroup(tmp_path / "redis-ha") as group:
        yield group


def test_sentinel_urls_are_parsed_and_bad_ones_are_one_line():
    target = sentinel_target("redis+sentinel://app:p%40ss@10.0.0.1:26379,[::1]:26380,sentinel-c/kt-main/2")
    assert target.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-c", 26379))
    assert (target.service, target.db, target.username, target.password, target.tls) == (
        "kt-main",
        2,
        "app",
        "p@ss",
        False,
    )
    assert sentinel_target("rediss+sentinel://s1/m").tls
    assert StreamSettings(redis_url="redis+sentinel://s1:26379/m", redis_min_replicas=1).redis_min_replicas == 1
    bad = {
        "redis+sentinel://s1:26379": "must be redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]",
        "redis+sentinel://s1:26379/m/x": "must be redis+sentinel://",
        "redis+sentinel://s1:port/m": "Sentinel 's1:port' must be HOST or HOST:PORT",
        "redis+sentinel://u:secret@s1,,s2/m": "Sentinel '' must be HOST or HOST:PORT",
        "sentinel://s1/m": "must start with redis://, rediss://, unix:// or redis+sentinel://",
    }
    for url, message in bad.items():
        with pytest.raises(ConfigError) as caught:
            StreamSettings(redis_url=url)
        assert message in str(caught.value) and "\n" not in str(caught.value) and "secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="names Sentinels; a Redis Cluster fails over by itself"):
        StreamSettings(redis_url="redis+sentinel://s1/m", redis_cluster=True)
    with pytest.raises(ConfigError, match="not supported on a Redis Cluster"):
        StreamSettings(redis_cluster=True, redis_min_replicas=1)
    with pytest.raises(ConfigError, match="redis min replicas 17 must be between 0"):
        StreamSettings(redis_min_replicas=17)
    with pytest.raises(ConfigError, match="redis replica timeout 0 ms must be between 1 and 60000"):
        StreamSettings(redis_replica_timeout_ms=0)


def fake_state(events: int) -> bytes:
    """As much of a schema-2 state as the fence reads: the magic and the events applied."""
    return b"KTS2" + bytes(EVENTS_BYTE - 4) + struct.pack("<Q", events)


def test_state_writes_wait_for_replicas_and_a_sentinel_client_follows_a_failover(sentinel_group: SentinelGroup):
    group = sentinel_group
    primary, replica = group.nodes
    prefix = "ha-wait"

    async def scenario():
        store = await StudentStore.connect(group.url, prefix, attempts=1, min_replicas=1, replica_timeout_ms=200)
        plain = await StudentStore.connect(
            f"redis://127.0.0.1:{primary.port}/0", prefix, attempts=1, min_replicas=1, replica_timeout_ms=200
        )
        two = await StudentStore.connect(group.url, prefix, attempts=1, min_replicas=2, replica_timeout_ms=200)
        fresh = await StudentStore.connect(group.url, prefix, attempts=1, min_replicas=1, replica_timeout_ms=200)
        try:
            assert await store.write_blobs(["s1", "s2"], [fake_state(1), b"two"], [1, 1]) == []
            assert replica.client().get(keys.student_key("s1", prefix)) == fake_state(
                1
            )  # it returned: the replica has it
            with pytest.raises(ReplicasNotReached, match="reached 1 of 2 replicas"):
                await two.write_blobs(["s2"], [b"two-b"], [2])

            # a replica that stops acknowledging (SIGSTOP: connected, silent): the write lands on the primary only
            replica.process.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(ReplicasNotReached, match="reached 0 of 1 replicas within 200 ms"):
                    await store.write_blobs(["s1"], [fake_state(3)], [3])
                assert primary.client().get(keys.student_key("s1", prefix)) == fake_state(3)
                # a retry from a connection that has written nothing (a restarted processor) finds the state written,
                # so the fence refuses it, or step 4 skips it and nothing is left to write: it must still wait
                with pytest.raises(ReplicasNotReached):
                    await fresh.write_blobs([], [], [])
                with pytest.raises(ReplicasNotReached):
                    await plain.write_blobs(["s1"], [fake_state(3)], [3])
            finally:
                replica.process.send_signal(signal.SIGCONT)
            assert await plain.write_blobs(["s1"], [fake_state(3)], [3]) == [0]  # refused (as new), and replicated
            assert replica.client().get(keys.student_key("s1", prefix)) == fake_state(3)

            # failover: the same client finds the promoted replica through the Sentinels
            old = group.primary_port()
            primary.kill()
            promoted = await asyncio.to_thread(group.wait_promoted, old)
            assert promoted is replica
            store.min_replicas = 0  # the promoted replica has none yet
            deadline = time.monotonic() + 10
            while True:
                try:
                    blobs = await store.read_blobs(["s1", "s2"])
                    break
                except redis.RedisError:  # the connection to the killed primary
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert blobs == [fake_state(3), b"two-b"]  # "two-b" landed and was replicated, though short of 2 replicas
            assert await store.write_blobs(["s2"], [b"two-c"], [3]) == []
            assert replica.client().get(keys.student_key("s2", prefix)) == b"two-c"
            blocking = redis_client_sync(group.url, socket_timeout_s=5)  # the tools' and the fault suite's client
            try:
                assert blocking.get(keys.student_key("s2", prefix)) == b"two-c"
                assert blocking.connection_pool.get_master_address()[1] == replica.port
            finally:
                blocking.close()
        finally:
            for s in (store, plain, two, fresh):
                await s.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("min_replicas", [1, 0])
def test_a_failover_mid_stream_loses_nothing_with_one_replica_and_the_last_batches_with_none(
    min_replicas, make_settings, tiny_checkpoint, sentinel_group: SentinelGroup, caplog, capsys
):
    """The replica stops receiving (its link pointed at a port nothing listens on), answers go on, the primary is
    SIGKILLed and the Sentinels promote the replica.  With ``redis_min_replicas=1`` those answers' batches are not
    committed until a replica has their states, so the promoted replica's processor redoes them: nothing lost.
    With 0 they were committed on the primary alone, and the promoted replica never sees them: answers lost."""
    group = sentinel_group
    old, spare = group.nodes
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(redis_url=group.url, redis_min_replicas=min_replicas, redis_replica_timeout_ms=300)
    answers = synthetic_answers(checkpoint, students=6, seed=11, min_length=30, max_length=45)
    third = len(answers) // 3
    parts = answers[:third], answers[third : 2 * third], answers[2 * third :]
    metrics = Metrics(process_metrics=False)
    figures: dict[str, float] = {}

    async def send(part) -> None:
        await produce(settings, answer_messages(part))

    async def scenario():
        await send(parts[0])
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            async with running_processor(settings, checkpoint, metrics=metrics):
                await until_committed(settings, third)
                group.cut_off(spare)  # the replica stops receiving, keeps its data
                await send(parts[1])
                if min_replicas:
                    await until(
                        lambda: metrics.redis_wait_failures >= 2, what="two batches not acknowledged by a replica"
                    )
                    figures["committed_before_kill"] = sum((await committed_offsets(settings)).values())
                else:
                    await until_committed(settings, 2 * third)
                killed = time.monotonic()
                old.kill()
                new = await asyncio.to_thread(group.wait_promoted, old.port)
                figures["failover_s"] = time.monotonic() - killed
                assert new is spare
                if min_replicas:  # a replica for the new primary: the old one, restarted empty
                    await asyncio.to_thread(group.restart_as_replica, old, new)
                    assert old.client().config_get("replica-priority") == {
                        "replica-priority": "100"
                    }  # 0 only until in sync
                await send(parts[2])
                await until_committed(settings, len(answers), timeout_s=90)
                figures["recovered_s"] = time.monotonic() - killed
                if min_replicas:  # with 0, the seqs of the lost answers are given again to later ones
                    await out.read_until(
                        lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=30
                    )
            return out.records

    with caplog.at_level(logging.INFO, logger="stream_kt"):
        records = asyncio.run(scenario())
    new_url = f"redis://127.0.0.1:{spare.port}/0"
    states = read_states(new_url, settings.key_prefix, by_student(answers), checkpoint)
    applied = sum(state.events_applied for state in states.values() if state is not None)
    lost = len(answers) - applied
    with capsys.disabled():
        print(
            f"\nmin_replicas={min_replicas}: failover {figures['failover_s']:.1f} s, "
            f"all committed {figures['recovered_s']:.1f} s after the kill, {lost} of {len(answers)} answers lost"
        )
    if min_replicas:
        assert figures["committed_before_kill"] == third  # nothing of part 2 was committed while no replica had it
        assert metrics.redis_wait_failures >= 2 and lost == 0
        assert set(dedupe_outputs(records)) == expected_output_keys(answers)  # repeats carry the same values
        assert_final_states(new_url, settings.key_prefix, checkpoint, answers)
        # the tools reach the promoted primary through the same URL
        student = answers[0].student_id
        capsys.readouterr()
        assert (
            main(["inspect", student, "--redis", settings.redis_url, "--key-prefix", settings.key_prefix, "--json"])
            == 0
        )
        assert json.loads(capsys.readouterr().out)["events_applied"] == len(by_student(answers)[student])
        assert main(["forget", student, "--redis", settings.redis_url, "--key-prefix", settings.key_prefix]) == 0
        assert spare.client().get(keys.student_key(student, settings.key_prefix)) is None
    else:
        # part 2's states were on the killed primary only, its offsets committed: never applied
        assert metrics.redis_wait_failures == 0 and lost == len(parts[1])
