"""Child processes of the tools: ``stream-kt serve`` started and awaited, any process stopped in order."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from stream_kt.service.exceptions import StreamError
from stream_kt.settings import StreamSettings


class ServeProcess:
    """``stream-kt serve`` as a child process: started, awaited until it prints "serving ", stopped with SIGTERM."""

    def __init__(self, checkpoint_dir: Path, settings: StreamSettings, log_path: Path, ready_timeout_s: float = 120.0) -> None:
        self.command = [
            sys.executable, "-m", "stream_kt.cli", "serve",
            "--checkpoint", str(checkpoint_dir),
            "--bootstrap", settings.bootstrap,
            "--redis", settings.redis_url,
            "--in-topic", settings.in_topic,
            "--out-topic", settings.out_topic,
            "--dlq-topic", settings.dlq_topic,
            "--group", settings.group_id,
            "--key-prefix", settings.key_prefix,
            "--partitions", str(settings.partitions),
            "--metrics-port", str(settings.metrics_port),  # 0 where several run on one machine
            "--kafka-connect-timeout-s", str(settings.kafka_connect_timeout_s),
        ]  # fmt: skip
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.ready_line = ""
        self.process: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._last_lines: list[str] = []

    def __enter__(self) -> ServeProcess:
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # one torch thread unless the user says otherwise: a small model's step gains nothing
            # from two, and on a shared box spinning threads slow it down many times over
            env={"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # Ctrl-C reaches only us; we stop serve with SIGTERM in order
        )
        threading.Thread(target=self._copy_output, daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                status = f"did not print 'serving' within {self.ready_timeout_s:.0f} s" if self.process.poll() is None else f"exited with status {self.process.returncode}"
                last = self._last_lines[-1].strip() if self._last_lines else "no output"
                self.__exit__()
                raise StreamError(f"serve {status}: {last} (log {self.log_path})")
        return self

    def _copy_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with open(self.log_path, "a") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                self._last_lines = (self._last_lines + [line])[-20:]
                if line.startswith("serving ") and not self._ready.is_set():
                    self.ready_line = line.strip()
                    self._ready.set()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            status = stop_process(self.process, timeout_s=30)
            if status not in (0, None):
                print(f"stream-kt: serve exited with status {status} (log {self.log_path})", file=sys.stderr)
            self.process = None


def stop_process(process: subprocess.Popen | None, timeout_s: float = 10.0, signum: int = signal.SIGTERM) -> int | None:
    """Signal ``process`` (ours) and wait; SIGKILL it if it outlives ``timeout_s``."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the broker, Redis and serve are stopped either way."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
