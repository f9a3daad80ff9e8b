"""Start-up against an address that is not a Kafka broker's: one line within ``kafka_connect_timeout_s``; a signal
meanwhile stops at once.

The address is the test Redis's: something accepts the connection there and never
answers as Kafka does, which is what a wrong port or a firewall that drops packets
looks like to a client (a port where nothing listens is refused at once, see
test_serve.py).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from stream_kt.cli import main

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def not_kafka(redis_url: str) -> str:
    """HOST:PORT of the test Redis: a listener that is not Kafka."""
    where = urlsplit(redis_url)
    return f"{where.hostname}:{where.port or 6379}"


class Serve:
    """``python -m stream_kt.cli serve`` with stderr read line by line, each line with the time it arrived."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "stream_kt.cli", "serve", "--metrics-port", "0", *args]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put((time.monotonic(), line))

    def wait_line(self, text: str, timeout_s: float = 60.0) -> float:
        """When the stderr line containing ``text`` arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                arrived, line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.stderr.append(line)
            if text in line:
                return arrived
        raise AssertionError(
            f"no {text!r} on stderr within {timeout_s} s (status {self.process.poll()}): {self.stderr}"
        )

    def wait(self, timeout_s: float) -> tuple[int, float]:
        """(exit status, when it exited); the rest of stderr is read into ``self.stderr``."""
        status = self.process.wait(timeout_s)
        exited = time.monotonic()
        time.sleep(0.2)  # the reader thread takes the last lines
        while not self.lines.empty():
            self.stderr.append(self.lines.get()[1])
        return status, exited

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serve_processes():
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        started.append(Serve(*args))
        return started[-1]

    yield start
    for serve in started:
        serve.kill()


def test_serve_to_an_address_that_is_not_kafka_is_one_line_and_exit_2_within_the_timeout(
    serve_processes, tiny_checkpoint, redis_url, key_prefix
):
    address, timeout_s = not_kafka(redis_url), 3
    serve = serve_processes(
        "--checkpoint",
        str(tiny_checkpoint),
        "--bootstrap",
        address,
        "--redis",
        redis_url,
        "--key-prefix",
        key_prefix,
        "--kafka-connect-timeout-s",
        str(timeout_s),
    )
    connecting = serve.wait_line("connecting to Kafka")
    status, exited = serve.wait(timeout_s + 60)
    assert status == 2
    assert "Traceback" not in "".join(serve.stderr) and "Unclosed" not in "".join(serve.stderr)
    assert serve.stderr[-1].rstrip("\n") == (
        f"stream-kt serve: error: cannot reach the Kafka broker at {address}: no Kafka answer within {timeout_s} s "
        "(is that a Kafka broker's address? KT_KAFKA_CONNECT_TIMEOUT_S sets the wait)"
    )
    assert timeout_s - 0.5 < exited - connecting < timeout_s + 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_start_up_stops_serve_within_2_s(
    serve_processes, tiny_checkpoint, redis_url, key_prefix, signum
):
    serve = serve_processes(
        "--checkpoint",
        str(tiny_checkpoint),
        "--bootstrap",
        not_kafka(redis_url),
        "--redis",
        redis_url,
        "--key-prefix",
        key_prefix,
        "--kafka-connect-timeout-s",
        "600",
    )
    serve.wait_line("connecting to Kafka")  # start-up has begun: the model is loaded, Redis answered, Kafka does not
    time.sleep(1)
    signalled = time.monotonic()
    serve.process.send_signal(signum)
    status, exited = serve.wait(30)
    assert exited - signalled < 2
    assert status == 0
    assert (
        serve.process.stdout is not None
        and serve.process.stdout.read().splitlines()[-1]
        == "stopped: 0 events in, 0 outputs, 0 dead letters, 0 replays skipped, 0 batches"
    )


def test_replay_to_an_address_that_is_not_kafka_is_one_line_and_exit_2(redis_url, capsys):
    address = not_kafka(redis_url)
    started = time.monotonic()
    status = main(
        ["replay", "--data", str(FIXTURES / "small.3line"), "--bootstrap", address, "--kafka-connect-timeout-s", "2"]
    )
    elapsed = time.monotonic() - started
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"stream-kt replay: error: cannot reach the Kafka broker at {address}: no Kafka answer within 2 s "
        "(is that a Kafka broker's address? KT_KAFKA_CONNECT_TIMEOUT_S sets the wait)"
    )
    assert elapsed < 2 + 5  # reading the file and the timeout


def test_the_connect_timeout_setting_is_checked(capsys):
    assert main(["replay", "--data", str(FIXTURES / "small.3line"), "--kafka-connect-timeout-s", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "stream-kt replay: error: kafka connect timeout 0 s must be between 1 and 3600"
    ]
