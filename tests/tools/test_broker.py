"""``stream-kt broker``: a real broker in the foreground that serves, then stops on SIGTERM; one-line errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from stream_kt.service import kafka_io
from stream_kt.tools import brokers
from stream_kt.tools.brokers import KafkaBroker
from stream_kt.tools.traffic import TopicReader
from tests.conftest import require_kafka


async def round_trip(bootstrap: str) -> list[bytes]:
    producer = kafka_io.make_tool_producer(bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait("broker-smoke", f"m{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    async with TopicReader(bootstrap, "broker-smoke") as reader:
        return [r.value for r in await reader.read_until(lambda records: len(records) >= 3, timeout_s=60)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["--kafka", "--embedded"])
def test_broker_prints_its_bootstrap_serves_and_stops_on_sigterm(kind: str, tmp_path: Path) -> None:
    if kind == "--kafka":
        require_kafka()
    args = [sys.executable, "-m", "stream_kt.cli", "broker", kind] + (
        ["--data-dir", str(tmp_path / "kafka")] if kind == "--kafka" else []
    )
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # blocks until it serves (or exits)
        assert line.startswith("bootstrap=127.0.0.1:"), (
            line,
            process.stderr.read() if process.poll() is not None else "",
        )
        assert asyncio.run(round_trip(line.removeprefix("bootstrap="))) == [b"m0", b"m1", b"m2"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    if kind == "--kafka":  # the JVM is gone and the data directory stays
        assert (tmp_path / "kafka" / "kafka-logs" / "meta.properties").exists()
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert str(tmp_path / "kafka") not in ps


@pytest.mark.slow
def test_a_killed_kafka_restarts_on_its_log_directory_with_everything(tmp_path: Path) -> None:
    require_kafka()
    with KafkaBroker(data_dir=tmp_path / "kafka") as broker:
        assert asyncio.run(round_trip(broker.bootstrap)) == [b"m0", b"m1", b"m2"]
        broker.kill()
        broker.start()
        assert asyncio.run(round_trip(broker.bootstrap))[:3] == [
            b"m0",
            b"m1",
            b"m2",
        ]  # the first three survived the SIGKILL


def broker_error(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream_kt.cli", "broker", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_missing_java_or_jars_are_one_line_errors(tmp_path: Path) -> None:
    python_only = tmp_path / "bin"
    python_only.mkdir()
    (python_only / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}

    no_java = broker_error(["--kafka"], {**env, "PATH": str(python_only)})
    assert no_java.returncode == 2 and no_java.stdout == ""
    assert (
        no_java.stderr.count("\n") == 1
        and "needs Java 17 or newer" in no_java.stderr
        and "no `java` was found" in no_java.stderr
    )

    java = shutil.which("java")
    if java is None:
        pytest.skip("no java here to reach the missing-jars case")
    (python_only / "java").symlink_to(java)
    no_jars = broker_error(
        ["--kafka"], {**env, "PATH": str(python_only), "STREAM_KT_KAFKA_LIBS": str(tmp_path / "empty")}
    )
    assert no_jars.returncode == 2 and no_jars.stderr.count("\n") == 1
    assert "jars are not in" in no_jars.stderr and "Maven (`mvn`) is not installed" in no_jars.stderr


@pytest.mark.parametrize(
    "args, message",
    [(["--embedded", "--data-dir", "x"], "--data-dir needs --kafka"), (["--port", "70000"], "--port must be 1-65535")],
)
def test_bad_broker_arguments_are_one_line(args: list[str], message: str) -> None:
    done = broker_error(args, dict(os.environ))
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    drawn = iter(
        [uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x00" + bytes(15))]
    )  # the first encodes as "-AAA..."
    monkeypatch.setattr(brokers.uuid, "uuid4", lambda: next(drawn))
    assert brokers.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"
