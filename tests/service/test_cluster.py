"""The processor on a real 3-primary Redis Cluster ends with the same states as on one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stream_kt.checkpoint import load_checkpoint
from stream_kt.service import keys
from stream_kt.service.kafka_io import ensure_topics
from stream_kt.service.redis_store import REDIS_ERRORS, redis_client_sync
from stream_kt.service.state import decode_state
from stream_kt.tools.processes import RedisServer, wait_until

from .conftest import (
    TopicReader,
    answer_messages,
    by_student,
    dedupe_outputs,
    expected_output_keys,
    produce,
    read_states,
    running_processor,
    synthetic_answers,
)


class LocalCluster:
    """Three redis-server primaries on loopback (the launch layer's, as cluster nodes), joined by
    ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, primaries: int = 3) -> None:
        self.nodes = [RedisServer(directory / f"node-{n}", persistent=False, cluster=True) for n in range(primaries)]

    @property
    def url(self) -> str:
        return self.nodes[0].url  # any one node is the seed

    def start(self, timeout_s: float = 30.0) -> None:
        for node in self.nodes:
            node.start(timeout_s)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        for node in self.nodes:
            client = node.client()

            def cluster_ok() -> bool:
                assert all(n.process is not None and n.process.poll() is None for n in self.nodes), (
                    "a redis-server exited"
                )
                with contextlib.suppress(*REDIS_ERRORS):
                    return client.cluster("info")["cluster_state"] == "ok"
                return False

            try:
                wait_until(cluster_ok, timeout_s, f"cluster_state:ok on {node.port}", error=AssertionError)
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    if not RedisServer.available() or shutil.which("redis-cli") is None:
        pytest.skip("no redis-server / redis-cli binaries")
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_states_on_a_redis_cluster_equal_those_on_one_redis(
    make_settings, tiny_checkpoint, redis_url, redis_cluster, topics
):
    checkpoint = load_checkpoint(tiny_checkpoint)
    single = make_settings()
    clustered = make_settings(
        in_topic=single.in_topic,
        out_topic=topics("out-cluster"),
        dlq_topic=topics("dlq-cluster"),
        group_id=topics("group-cluster"),
        redis_url=redis_cluster.url,
        redis_cluster=True,
    )
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
    client = redis_client_sync(redis_cluster.url, cluster=True)
    try:
        student_keys = [keys.student_key(s, clustered.key_prefix) for s in students]
        on_cluster = {
            s: decode_state(client.get(k), s, checkpoint.vocab.ids, shapes) for s, k in zip(students, student_keys)
        }
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
