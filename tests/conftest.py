"""Shared fixtures: a real broker, the real Redis, a tiny checkpoint, unique names.

Never flush or stop the shared Redis: every test writes under its own ``key_prefix``
and the fixture deletes those keys afterwards.

Brokers: a test that takes the ``broker`` fixture runs against Apache Kafka; marked
``@pytest.mark.brokers("kafka", "tansu")`` it runs once on each (its id says which:
``test_x[kafka]``, ``test_x[tansu]``).  Both are started once per session.  Where
Apache Kafka cannot start (no Java, no jars and no Maven) its tests are skipped, and
under CI (``CI`` set) they fail instead: CI never skips them for lack of a broker.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import torch

# One torch thread in every CLI subprocess the tests start: with the broker, Redis and
# the test process sharing a 2-core machine, two OpenMP threads spin against each other
# and a seconds-long training run takes minutes.  Results do not depend on it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from stream_kt.checkpoint import save_checkpoint
from stream_kt.data.split import Split
from stream_kt.data.vocab import Vocabulary
from stream_kt.models import KTModel, build_model
from stream_kt.service.redis_store import redis_client_sync
from stream_kt.tools.brokers import EmbeddedBroker, KafkaBroker, KafkaCluster, kafka_unavailable

TINY_ITEMS = 12  # synthetic item ids "0".."11"
TINY_MODEL = {"num_items": TINY_ITEMS, "embed_dim": 8, "hidden_size": 16, "num_layers": 1, "dropout": 0.0}


def save_model_checkpoint(out_dir: Path, model: KTModel, seed: int = 0) -> Path:
    """``model`` (any, tests only) saved as a checkpoint over items "0".."num_items-1"."""
    vocab = Vocabulary("skill_id", tuple(str(i) for i in range(model.config.num_items)))
    split = Split(("synthetic:0",), (), (), seed, "holdout")
    save_checkpoint(out_dir, model, vocab, split, {"seed": seed, "note": "random init, tests only"})
    return out_dir


def save_tiny_checkpoint(out_dir: Path, seed: int = 0, **model_options: object) -> Path:
    """A randomly initialised small DKT over items "0".."TINY_ITEMS-1", saved as a checkpoint."""
    torch.manual_seed(seed)
    return save_model_checkpoint(out_dir, build_model("dkt", **{**TINY_MODEL, **model_options}), seed)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint"))


@pytest.fixture
def checkpoint_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``checkpoint_factory(seed=1, num_items=14)``: another saved tiny checkpoint (another version)."""

    def make(seed: int = 1, **model_options: object) -> Path:
        return save_tiny_checkpoint(tmp_path_factory.mktemp("checkpoint"), seed, **model_options)

    return make


def run_with_stdout_closed(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    """``stream-kt ARGS`` writing into a pipe whose reader has already gone, as ``stream-kt ... | head -1`` ends."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "stream_kt.cli", *map(str, args)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
    finally:
        os.close(write_end)


BROKERS = ("kafka", "tansu")


# Tests that take a broker are slow by construction: the first starts Apache Kafka (a JVM), and each runs a
# whole pipeline.  The other slow tests say so themselves (@pytest.mark.slow): the fault suite, the demo,
# CLI runs that train, the SAINT models' step checks.  `pytest -m "not slow"` leaves them all out.
SLOW_FIXTURES = {"broker", "kafka_broker", "tansu_broker", "kafka_cluster"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "brokers(*names): run the test on each of these brokers (default: kafka only)")
    config.addinivalue_line(
        "markers",
        "slow: a broker, a training run, a whole pipeline or a model costing seconds a step; left out by -m 'not slow'",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("brokers")
        names = marker.args if marker else ("kafka",)
        assert set(names) <= set(BROKERS), f"unknown broker in {names}"
        metafunc.parametrize("broker", names, indirect=True)


def require_kafka() -> None:
    """Skip (fail under CI) when Apache Kafka cannot run here."""
    reason = kafka_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Apache Kafka tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    require_kafka()
    with KafkaBroker(data_dir=tmp_path_factory.mktemp("kafka")) as started:
        yield started


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three Apache Kafka nodes, one KRaft quorum (``KafkaCluster``).  A test that kills a node restarts it
    before it ends: the next test finds all three serving."""
    require_kafka()
    with KafkaCluster(3, data_dir=tmp_path_factory.mktemp("kafka-cluster"), heap_mb=320) as started:
        yield started
        assert started.running() == [1, 2, 3], f"a test left nodes down (running: {started.running()})"


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as started:
        yield started


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> KafkaBroker | EmbeddedBroker:
    """The broker this test runs on (see the module docstring)."""
    return request.getfixturevalue(f"{request.param}_broker")


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("STREAM_KT_TEST_REDIS", "redis://127.0.0.1:6379/0")
    try:
        redis_client_sync(url, connect_timeout_s=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {url}: {exc}")
    return url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A prefix no other test uses; its keys are deleted afterwards (never FLUSHDB: Redis is shared)."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis_client_sync(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def topics() -> Callable[[str], str]:
    """``topics("in")`` gives a topic name unique to this test (and to the call)."""
    run = uuid.uuid4().hex[:10]
    counter = itertools.count()

    def make(label: str = "t") -> str:
        return f"test-{run}-{label}-{next(counter)}"

    return make
