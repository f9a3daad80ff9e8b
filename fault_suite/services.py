"""The suite's own servers and processors, all on 127.0.0.1: the broker (Apache Kafka, one node or three, or tansu and
an S3 server) and the serve group.

redis-server (and with ``--ha`` its replica and Sentinels) and serve are the launch
layer's (``stream_kt.tools.processes``); the single redis-server is persistent, so a
restart on the same port and directory loses nothing.

Nothing here touches the shared Redis on 6379 or any broker it did not start; every
process is started in its own session and stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stream_kt.service.exceptions import StreamError
from stream_kt.settings import StreamSettings
from stream_kt.tools.brokers import EmbeddedBroker, KafkaBroker, KafkaCluster, free_port
from stream_kt.tools.processes import ServeProcess, stop_process, wait_until


class S3Server:
    """moto's S3 server: a place for tansu's ``s3://`` storage engine that outlives the broker process."""

    BUCKET = "tansu"

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        try:
            import boto3  # noqa: F401
            import moto.server  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> S3Server:
        import boto3

        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="fault-suite",
            aws_secret_access_key="fault-suite",
            region_name="us-east-1",
        )

        def bucket_created() -> bool:
            if self.process.poll() is not None:
                raise StreamError(f"moto S3 server exited with {self.process.returncode} (log {self.log_path})")
            try:
                s3.create_bucket(Bucket=self.BUCKET)
                return True
            except Exception:  # not listening yet: botocore raises several connection errors
                return False

        wait_until(bucket_created, timeout_s, "moto S3 server", poll_s=0.2)
        return self

    def broker_environ(self) -> dict[str, str]:
        """What tansu's ``s3://`` engine reads (object_store's AWS variables)."""
        return {
            "STORAGE_ENGINE": f"s3://{self.BUCKET}/",
            "AWS_ACCESS_KEY_ID": "fault-suite",
            "AWS_SECRET_ACCESS_KEY": "fault-suite",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` for the duration (EmbeddedBroker's tansu inherits our environment)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Broker:
    """The suite's broker on fixed ports, restartable.

    ``kind`` "kafka": Apache Kafka on a log directory in the work directory; a restart,
    even after SIGKILL, keeps every topic, record and committed offset.  With ``nodes``
    3 (``--ha``), three such nodes of one KRaft quorum (``KafkaCluster``): topics get
    three replicas, two in sync for a write, and one node at a time is killed.  ``kind``
    "tansu": the embedded broker, with ``storage`` "s3" (everything lives in the S3
    server and survives a restart) or "memory" (a restart loses every topic and every
    committed offset).
    """

    def __init__(self, kind: str, storage: str, work_dir: Path, nodes: int = 1) -> None:
        self.kind = kind
        self.storage = storage if kind == "tansu" else "disk"
        self.s3 = S3Server(work_dir / "s3.log") if kind == "tansu" and storage == "s3" else None
        self.cluster: KafkaCluster | None = None
        if kind == "kafka" and nodes > 1:
            self.cluster = KafkaCluster(nodes, data_dir=work_dir / "kafka")
            self.server: KafkaBroker | EmbeddedBroker | KafkaCluster = self.cluster
            self.log_path = work_dir / "kafka"
        elif kind == "kafka":
            self.server = KafkaBroker(data_dir=work_dir / "kafka")
            self.log_path = self.server.log_path
        else:
            self.log_path = work_dir / "broker.log"
            self.server = EmbeddedBroker(log_path=self.log_path)
        self.restarts = 0

    @property
    def bootstrap(self) -> str:
        return self.server.bootstrap

    @property
    def persistent(self) -> bool:
        return self.kind == "kafka" or self.s3 is not None

    def processes(self) -> list[subprocess.Popen]:
        """Every process of ours that serves (the nodes of a cluster; the S3 server)."""
        found = [n.process for n in self.cluster.nodes.values()] if self.cluster is not None else [self.server.process]
        return [p for p in [*found, self.s3.process if self.s3 else None] if p is not None]

    def start(self) -> Broker:
        if self.s3 is not None and self.s3.process is None:
            self.s3.start()
        if self.kind == "kafka":
            self.server.start()
            return self
        with environ(self.s3.broker_environ() if self.s3 else {"STORAGE_ENGINE": "memory://tansu/"}):
            self.server.start()
        return self

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.server.kill()
        self.server.stop()

    def close(self) -> None:
        self.stop()
        if self.s3 is not None:
            self.s3.stop()


@dataclass
class Member:
    """One ``stream-kt serve`` process of the group, with its fate."""

    name: str
    serve: ServeProcess
    log_path: Path
    started_s: float
    expected_exit: bool = False  # set before we stop or kill it
    exit_code: int | None = None

    @property
    def alive(self) -> bool:
        return self.serve.alive


@dataclass
class Group:
    """The processor group: starts, kills, stops and (as a supervisor) restarts ``serve`` members."""

    settings: StreamSettings
    checkpoint_dir: Path
    log_dir: Path
    members: list[Member] = field(default_factory=list)
    started: int = 0
    kills: int = 0
    graceful_stops: int = 0
    crashes: list[str] = field(default_factory=list)  # "<member>: exit <code>" of exits nobody asked for
    supervisor_restarts: int = 0
    restarts_due: list[str] = field(default_factory=list)
    restart_failures: list[str] = field(default_factory=list)

    def start(self, name: str | None = None) -> Member:
        """Start one member and return once it has partitions (it printed "serving ")."""
        name = name or f"serve-{self.started}"
        log_path = self.log_dir / f"{name}-{self.started}.log"
        self.started += 1
        serve = ServeProcess(
            self.settings.replace(checkpoint=str(self.checkpoint_dir)), log_path, ready_timeout_s=120.0
        )
        member = Member(name, serve, log_path, time.monotonic())
        self.members.append(member)  # before it starts: the hard deadline kills what is listed here
        try:
            serve.__enter__()  # returns once the member printed "serving "; stops it and raises if it never does
        except StreamError:
            member.expected_exit = True
            raise
        return member

    def running(self) -> list[Member]:
        return [m for m in self.members if m.alive]

    def kill(self, member: Member) -> None:
        """SIGKILL: no shutdown, the in-flight batch is cut wherever it is."""
        member.expected_exit = True
        assert member.serve.process is not None
        member.exit_code = member.serve.kill()
        self.kills += 1

    def stop(self, member: Member, timeout_s: float = 60.0) -> int | None:
        """SIGTERM: the in-flight batch finishes and commits, then the member leaves the group."""
        member.expected_exit = True
        member.exit_code = member.serve.stop(timeout_s)
        self.graceful_stops += 1
        return member.exit_code

    def supervise(self) -> None:
        """Restart every member that exited without being asked to (a failed restart is tried again next call)."""
        for member in list(self.members):
            process = member.serve.process
            if process is None or process.poll() is None or member.expected_exit:
                continue
            member.expected_exit = True
            member.exit_code = member.serve.stop()  # it has exited: its status
            self.crashes.append(f"{member.name}: exit {member.exit_code} (log {member.log_path})")
            self.restarts_due.append(member.name)
        while self.restarts_due:
            name = self.restarts_due[0]
            try:
                self.start(name)
            except StreamError as exc:
                self.restart_failures.append(f"{name}: {exc}")
                return
            self.restarts_due.pop(0)
            self.supervisor_restarts += 1

    def kill_all(self) -> None:
        for member in self.members:
            if member.serve.alive:
                member.expected_exit = True
            member.serve.kill()

    def log_text(self) -> str:
        return "".join(m.log_path.read_text(errors="replace") for m in self.members if m.log_path.exists())
