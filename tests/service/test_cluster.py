"""The processor on a real 3-primary Redis Cluster ends with the same states as on one Redis."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from stream_kt.checkpoint import load_checkpoint
from stream_kt.service import keys
from stream_kt.service.kafka_io import ensure_topics
from stream_kt.service.state import decode_state
from stream_kt.tools.brokers import free_port

from .conftest import TopicReader, answer_messages, by_student, dedupe_outputs, expected_output_keys, produce, read_states, running_processor, synthetic_answers


class LocalCluster:
    """Three redis-server primaries on loopback, joined by ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, primaries: int = 3) -> None:
        self.directory = directory
        self.ports = [free_port() for _ in range(primaries)]
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"  # any one node is the seed

    def start(self, timeout_s: float = 30.0) -> None:
        for port in self.ports:
            node_dir = self.directory / str(port)
            node_dir.mkdir()
            args = [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-port", str(free_port()),  # the bus port: port + 10000 may be taken or out of range
                "--save", "", "--appendonly", "no",
            ]  # fmt: skip
            self.processes.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            self._wait(lambda: redis.Redis(port=port, socket_connect_timeout=0.2).ping(), timeout_s, f"node {port} answers")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout_s,
        )  # fmt: skip
        for port in self.ports:
            self._wait(lambda: redis.Redis(port=port).cluster("info")["cluster_state"] == "ok", timeout_s, f"cluster_state:ok on {port}")

    def _wait(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            assert all(p.poll() is None for p in self.processes), "a redis-server exited"
            assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("no redis-server / redis-cli binaries")
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_states_on_a_redis_cluster_equal_those_on_one_redis(make_settings, tiny_checkpoint, redis_url, redis_cluster, topics):
    checkpoint = load_checkpoint(tiny_checkpoint)
    single = make_settings()
    clustered = make_settings(
        in_topic=single.in_topic, out_topic=topics("out-cluster"), dlq_topic=topics("dlq-cluster"), group_id=topics("group-cluster"),
        redis_url=redis_cluster.url, redis_cluster=True,
    )  # fmt: skip
    answers = synthetic_answers(checkpoint, students=12, seed=21, min_length=20, max_length=40)
    expected = expected_output_keys(answers)

    async def run_both():
        await produce(single, answer_messages(answers))
        await ensure_topics(clustered.bootstrap, [clustered.out_topic, clustered.dlq_topic], clustered.partitions)
        for settings in (single, clustered):  # the same input topic, read by two groups
            async with TopicReader(settings.bootstrap, settings.out_topic) as out:
                async with running_processor(settings, checkpoint):
                    await out.read_until(lambda rs: len(rs) >= len(expected) and set(dedupe_outputs(rs)) >= expected)

    asyncio.run(run_both())
    students = list(by_student(answers))
    on_single = read_states(redis_url, single.key_prefix, students, checkpoint)
    shapes = {k: tuple(v.shape[1:]) for k, v in checkpoint.model.initial_state(1).items()}
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        student_keys = [keys.student_key(s, clustered.key_prefix) for s in students]
        on_cluster = {s: decode_state(client.get(k), s, checkpoint.vocab.ids, shapes) for s, k in zip(students, student_keys)}
        primaries = {client.get_node_from_key(k).port for k in student_keys}
    finally:
        client.close()
    assert len(primaries) >= 2, "the students' keys are spread over several primaries"
    for student in students:
        a, b = on_single[student], on_cluster[student]
        assert a is not None and b is not None
        assert (b.events_applied, b.window, b.offsets) == (a.events_applied, a.window, a.offsets)
        assert b.model_state.keys() == a.model_state.keys()
        for name in a.model_state:
            np.testing.assert_allclose(b.model_state[name], a.model_state[name], atol=1e-5, err_msg=f"{student} {name}")
        np.testing.assert_allclose(b.mastery, a.mastery, atol=1e-5)
