"""``KafkaCluster``: three KRaft nodes of one quorum; replicated topics; a leader killed and restarted loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream_kt.service import kafka_io
from stream_kt.settings import StreamSettings
from stream_kt.tools.brokers import KafkaCluster
from stream_kt.tools.processes import wait_until
from stream_kt.tools.traffic import TopicReader
from tests.conftest import require_kafka


async def describe(bootstrap: str, topic: str) -> tuple[list[dict[str, Any]], str | None]:
    """``topic``'s partitions (replicas, in-sync replicas, leader) and its min.insync.replicas.

    The controller answers CreateTopics before every broker has the new metadata, so a broker
    asked at once may not know the topic yet: ask again for up to 30 s until it lists partitions.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 30
        while (
            not (described := (await admin.describe_topics([topic]))[0])["partitions"] and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.25)
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
        )
        entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
        return sorted(described["partitions"], key=lambda p: p["partition"]), entries.get("min.insync.replicas")
    finally:
        await admin.close()


async def send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = kafka_io.make_tool_producer(bootstrap, acks="all", request_timeout_ms=60_000)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def read(bootstrap: str, topic: str, count: int) -> list[bytes]:
    async with TopicReader(bootstrap, topic) as reader:
        return [r.value for r in await reader.read_until(lambda records: len(records) >= count, timeout_s=60)]


def live(cluster: KafkaCluster) -> str:
    return ",".join(cluster.nodes[i].bootstrap for i in cluster.running())


def test_three_nodes_replicate_a_topic_and_lose_nothing_when_its_leader_is_killed(kafka_cluster: KafkaCluster) -> None:
    cluster = kafka_cluster
    assert len(cluster.bootstrap.split(",")) == 3 and all(
        a.startswith("127.0.0.1:") for a in cluster.bootstrap.split(",")
    )
    ids = {
        (node.data_dir / "kafka-logs" / "meta.properties").read_text().split("cluster.id=")[1].split()[0]
        for node in cluster.nodes.values()
    }
    assert ids == {cluster.cluster_id}  # one cluster id, three log directories
    topic = f"cluster-{uuid.uuid4().hex[:8]}"
    asyncio.run(kafka_io.ensure_topics(cluster.bootstrap, [topic], 2))  # the default: three replicas, two in sync
    partitions, min_isr = asyncio.run(describe(cluster.bootstrap, topic))
    assert [sorted(p["replicas"]) for p in partitions] == [[1, 2, 3], [1, 2, 3]]
    assert min_isr == "2"

    asyncio.run(send(cluster.bootstrap, topic, [b"a0", b"a1", b"a2"]))
    leader = cluster.leader(topic, 0)
    assert leader in (1, 2, 3)
    cluster.kill(leader)
    assert cluster.running() == sorted({1, 2, 3} - {leader})
    try:
        asyncio.run(send(live(cluster), topic, [b"b0", b"b1", b"b2"]))  # two of three in sync: writes go on
        assert cluster.leader(topic, 0) not in (leader, -1)
        assert asyncio.run(read(live(cluster), topic, 6)) == [b"a0", b"a1", b"a2", b"b0", b"b1", b"b2"]
    finally:
        cluster.restart(leader)

    def back_in_sync() -> bool:
        return all(sorted(p["isr"]) == [1, 2, 3] for p in asyncio.run(describe(cluster.bootstrap, topic))[0])

    wait_until(
        back_in_sync, 60, f"node {leader} back in every partition's in-sync replicas", poll_s=0.5, error=AssertionError
    )
    # the restarted node holds every record: with the other two killed in turn it could lead; here it is enough
    # that it is in sync (it has the log up to the high-water mark) and the cluster reads all six through it
    assert asyncio.run(read(cluster.nodes[leader].bootstrap, topic, 6)) == [b"a0", b"a1", b"a2", b"b0", b"b1", b"b2"]


def test_a_single_broker_gets_one_replica_and_an_explicit_factor_it_cannot_hold_is_one_line(kafka_broker) -> None:
    topic = f"single-{uuid.uuid4().hex[:8]}"
    asyncio.run(kafka_io.ensure_topics(kafka_broker.bootstrap, [topic], 1))
    partitions, _ = asyncio.run(describe(kafka_broker.bootstrap, topic))
    assert [p["replicas"] for p in partitions] == [[1]]
    try:
        asyncio.run(
            kafka_io.ensure_topics(
                kafka_broker.bootstrap, [topic + "-3"], 1, replication_factor=3, min_insync_replicas=2
            )
        )
    except kafka_io.StreamError as exc:
        assert "3 replicas, 1 brokers" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("three replicas on one broker were accepted")


def test_replication_defaults() -> None:
    assert kafka_io.replication(1) == (1, 1)
    assert kafka_io.replication(2) == (2, 1)
    assert kafka_io.replication(3) == (3, 2)
    assert kafka_io.replication(5) == (3, 2)
    assert kafka_io.replication(0) == (1, 1)  # the embedded broker's metadata may list none
    assert kafka_io.replication(5, 5, 3) == (5, 3)
    assert kafka_io.replication(3, 2) == (2, 1)


def test_broker_nodes_3_prints_three_addresses_and_stops_on_sigterm(tmp_path) -> None:
    require_kafka()
    args = [
        sys.executable,
        "-m",
        "stream_kt.cli",
        "broker",
        "--kafka",
        "--nodes",
        "3",
        "--data-dir",
        str(tmp_path / "cluster"),
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        addresses = line.removeprefix("bootstrap=").split(",")
        assert (
            line.startswith("bootstrap=") and len(addresses) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
        ), line
        topic = f"nodes-{uuid.uuid4().hex[:8]}"
        asyncio.run(kafka_io.ensure_topics(line.removeprefix("bootstrap="), [topic], 1))
        assert [sorted(p["replicas"]) for p in asyncio.run(describe(addresses[0], topic))[0]] == [[1, 2, 3]]
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert sorted(p.name for p in (tmp_path / "cluster").iterdir()) == ["node-1", "node-2", "node-3"]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "cluster") not in ps


def test_nodes_needs_kafka_and_free_ports() -> None:
    for args, message in [
        (["--embedded", "--nodes", "3"], "--nodes needs --kafka"),
        (["--nodes", "3", "--port", "9092"], "--nodes needs --kafka and no --port"),
        (["--nodes", "0"], "--nodes must be 1-9"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "stream_kt.cli", "broker", *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, (args, done.stderr)


def test_replication_settings_are_checked() -> None:
    from stream_kt.errors import ConfigError
    from stream_kt.settings import load_settings

    assert load_settings({}, {"KT_REPLICATION_FACTOR": "3", "KT_MIN_INSYNC_REPLICAS": "2"}).replication_factor == 3
    for values, message in [
        ({"replication_factor": -1}, "replication factor -1"),
        ({"replication_factor": 2, "min_insync_replicas": 3}, "min insync replicas 3"),
    ]:
        try:
            StreamSettings(**values)
        except ConfigError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{values} accepted")
