"""The launch layer: every child process the demo, the tests, the fault suite and the benchmarks start.

* ``serve_command`` and ``settings_environ``: the one ``stream-kt serve`` command line.  Its
  settings travel as their environment variables, every field of ``StreamSettings``
  (``settings.ENV``), so none can be left out when a setting is added; a flag given
  besides (``ServeProcess(..., "--log-format", "json")``) wins over them, as it would
  on a terminal.  The environment, not flags: a password never shows in ``ps``.
* ``ServeProcess``: ``stream-kt serve`` started, its stdout lines awaited
  (``wait_line``; "serving " is ready), stopped with SIGTERM or SIGKILL.
* ``RedisServer``: a ``redis-server`` of our own on a port and a directory, append-only
  (``persistent``) or not, a Redis Cluster node or a replica or neither; start, stop
  (three ways), restart.
* ``RedisSentinel`` and ``SentinelGroup``: a primary, its replicas and three Sentinels,
  the ``redis+sentinel://`` URL that follows them, and a failover (``fail_over``: the
  primary SIGKILLed, a replica promoted, the killed one back as a replica).
* ``wait_until`` / ``until``: the one poll-with-a-deadline loop, blocking or in an event loop.
* ``stop_process``, ``sigterm_as_interrupt``: stopping any child in order.

The brokers have theirs in ``brokers.py``.  The service itself imports nothing of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream_kt.service.exceptions import StreamError
from stream_kt.service.redis_store import REDIS_ERRORS, redis_client_sync
from stream_kt.settings import ENV, StreamSettings
from stream_kt.tools.brokers import free_port

if TYPE_CHECKING:
    import redis

# ---------------------------------------------------------------------- waiting


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str | Callable[[], str],
    poll_s: float = 0.05,
    error: type[Exception] = StreamError,
) -> None:
    """Poll ``condition`` every ``poll_s`` until it holds; ``error`` after ``timeout_s`` (never a fixed sleep instead).

    ``condition`` may raise to give up at once (the process it waits for has exited).
    ``what`` names the condition; a callable is asked at the timeout (what was seen last).
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise error(_not_within(what, timeout_s))
        time.sleep(poll_s)


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout_s: float,
    what: str | Callable[[], str],
    poll_s: float = 0.05,
    error: type[Exception] = StreamError,
) -> None:
    """``wait_until`` inside an event loop: ``condition`` may be a coroutine function, the loop runs between polls."""

    async def holds() -> bool:
        result = condition()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    deadline = time.monotonic() + timeout_s
    while not await holds():
        if time.monotonic() > deadline:
            raise error(_not_within(what, timeout_s))
        await asyncio.sleep(poll_s)


def _not_within(what: str | Callable[[], str], timeout_s: float) -> str:
    return f"{what() if callable(what) else what}: not within {timeout_s:g} s"


# ---------------------------------------------------------------------- stopping


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


# ---------------------------------------------------------------------- serve


def serve_command(*flags: str) -> list[str]:
    """The ``stream-kt serve`` command line (this interpreter, this package); its settings
    go in ``settings_environ``."""
    return [sys.executable, "-m", "stream_kt.cli", "serve", *flags]


def settings_environ(settings: StreamSettings) -> dict[str, str]:
    """Every setting as the environment variable the settings loader reads it from: ``load_settings`` reads these back
    to ``settings`` itself, field for field, so a child started with them runs with exactly these settings."""
    return {ENV[name]: _env_text(getattr(settings, name)) for name in type(settings).model_fields}


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class ServeProcess:
    """``stream-kt serve`` as a child process, with ``settings`` (``settings_environ``) and any ``flags`` besides.

    Its stderr (the log) and its stdout lines go to ``log_path``; the stdout lines are also
    kept for ``wait_line``.  ``start`` returns at once; as a context manager it returns once
    serve printed "serving " (``ready_line``) and stops it with SIGTERM at the end.  ``cwd``:
    where it runs (a checkout, so its own package is the one imported).
    """

    def __init__(
        self,
        settings: StreamSettings,
        log_path: Path,
        *flags: str,
        ready_timeout_s: float = 120.0,
        cwd: Path | None = None,
    ) -> None:
        self.settings = settings
        self.command = serve_command(*flags)
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.cwd = cwd
        self.ready_line = ""
        self.process: subprocess.Popen | None = None
        self.stdout: list[str] = []  # the lines ``wait_line`` has read, in order
        self._lines: queue.Queue[str | None] = queue.Queue()  # None: stdout closed

    def start(self) -> ServeProcess:
        environ = {
            # one torch thread unless the user says otherwise: a small model's step gains nothing
            # from two, and on a shared box spinning threads slow it down many times over
            "OMP_NUM_THREADS": "1",
            **os.environ,
            **settings_environ(self.settings),
            "PYTHONUNBUFFERED": "1",
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                env=environ,
                cwd=self.cwd,
                start_new_session=True,  # Ctrl-C reaches only us; we stop serve with SIGTERM in order
            )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        return self

    def _read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        with open(self.log_path, "a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                self._lines.put(line)
        self._lines.put(None)

    def wait_line(self, prefix: str, timeout_s: float = 60.0) -> str:
        """The next stdout line starting with ``prefix``; ``StreamError`` if serve exits or
        ``timeout_s`` passes first."""
        deadline, closed = time.monotonic() + timeout_s, False
        while not closed and (left_s := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=min(left_s, 0.1))
            except queue.Empty:
                continue
            if line is None:
                self._lines.put(None)  # stays closed for the next call
                closed = True
                continue
            self.stdout.append(line)
            if line.startswith(prefix):
                return line
        code = None
        if closed and self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.process.wait(5)  # stdout closed: it is exiting
        status = (
            f"exited with status {code}" if code is not None else f"did not print {prefix!r} within {timeout_s:g} s"
        )
        raise StreamError(f"serve {status}: {self.last_log_line()} (log {self.log_path})")

    def last_log_line(self) -> str:
        """The last line serve wrote (stdout or log): why it stopped, where it did."""
        with contextlib.suppress(OSError):
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return "no output"

    def wait_ready(self, timeout_s: float | None = None) -> str:
        self.ready_line = self.wait_line("serving ", self.ready_timeout_s if timeout_s is None else timeout_s).strip()
        return self.ready_line

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout_s: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self, timeout_s: float = 30.0, signum: int = signal.SIGTERM) -> int | None:
        """Signal serve (SIGTERM: the in-flight batch finishes and commits) and wait; its exit
        status (None: never started)."""
        status = stop_process(self.process, timeout_s, signum)
        self.process = None
        return status

    def kill(self) -> int | None:
        """SIGKILL: no shutdown, the in-flight batch is cut wherever it is."""
        return self.stop(signum=signal.SIGKILL)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def __enter__(self) -> ServeProcess:
        self.start()
        try:
            self.wait_ready()
        except StreamError:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        status = self.stop()
        if status not in (0, None):
            print(f"stream-kt: serve exited with status {status} (log {self.log_path})", file=sys.stderr)


# ---------------------------------------------------------------------- redis-server, its replicas and Sentinels


class RedisServer:
    """A redis-server of our own on 127.0.0.1:``port`` (default: a free one) and ``directory``; restartable.

    ``persistent``: append-only with ``appendfsync always``, so every acknowledged write is
    on disk before the reply and even a SIGKILL loses nothing: a restart on the same port
    and directory reloads every state.  (Without persistence a restart loses all state.)
    ``cluster``: a Redis Cluster node (its cluster bus on a free port of its own: port +
    10000 may be taken or out of range), to be joined with ``redis-cli --cluster create``.
    ``replica_of``: the port of a primary on 127.0.0.1 to replicate (``SentinelGroup``);
    ``replica_priority`` 0: a replica no Sentinel may promote (one still copying its data).

    Its settings are on the command line, after a config file of its own (``redis.conf``,
    written empty at each start): Sentinel's ``CONFIG REWRITE`` of a promoted or
    reconfigured node needs one.
    """

    binary = "redis-server"
    log_name, config_name = "redis.log", "redis.conf"  # in its directory

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        persistent: bool = True,
        cluster: bool = False,
        replica_of: int | None = None,
        replica_priority: int | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.persistent = persistent
        self.cluster = cluster
        self.replica_of = replica_of
        self.replica_priority = replica_priority
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / self.log_name

    @property
    def config_path(self) -> Path:
        return self.directory / self.config_name

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, socket_timeout_s: float | None = 10.0) -> redis.Redis | redis.RedisCluster:
        return redis_client_sync(self.url, socket_timeout_s=socket_timeout_s, connect_timeout_s=1.0)

    def command(self) -> list[str]:
        args = [
            "redis-server",
            str(self.config_path),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--logfile",
            str(self.log_path),
        ]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.directory / "nodes.conf"),
                "--cluster-port",
                str(free_port()),
            ]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.replica_priority is not None:
            args += ["--replica-priority", str(self.replica_priority)]
        return args

    def write_config(self) -> None:
        self.config_path.write_text(
            "# stream-kt's redis-server: its settings are on the command line; CONFIG REWRITE writes here\n"
        )

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        """Start it and return once it answers PING; ``StreamError`` (one line) if it cannot."""
        if not self.available():
            raise StreamError(
                f"no {self.binary} binary on PATH "
                f"(install Redis{' Sentinel' if self.binary == 'redis-sentinel' else ''})"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        process, client = self.process, self.client(socket_timeout_s=1.0)

        def answers() -> bool:
            if process.poll() is not None:
                raise StreamError(
                    f"{self.binary} on port {self.port} exited with status {process.returncode} (log {self.log_path})"
                )
            try:
                return bool(client.ping())
            except REDIS_ERRORS:
                return False

        try:
            wait_until(answers, timeout_s, f"{self.binary} on port {self.port} answering (log {self.log_path})")
        except StreamError:
            self.stop("sigkill")
            raise
        finally:
            client.close()
        return self

    def stop(self, how: str = "sigterm") -> None:
        """``sigterm`` (clean shutdown), ``shutdown-nosave`` (the SHUTDOWN NOSAVE command) or ``sigkill``."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        if how == "shutdown-nosave":
            client = self.client()
            with contextlib.suppress(*REDIS_ERRORS):  # the server closes the connection as it goes
                client.shutdown(nosave=True)
            client.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(self.process, signum=signal.SIGKILL)
        else:
            stop_process(self.process, signum=signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed."""
        self.stop("sigkill")

    def restart(self, how: str = "sigterm", down_s: float = 0.0) -> None:
        """Stop it (``how``), stay down ``down_s``, start it again on the same port and directory."""
        self.stop(how)
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def replication_info(node: RedisServer) -> dict[str, Any]:
    """``INFO replication`` of ``node``: its role, its primary's link, its replicas."""
    client = node.client(socket_timeout_s=2.0)
    try:
        info: dict[str, Any] = client.info("replication")
        return info
    finally:
        client.close()


def wait_replica_in_sync(node: RedisServer, timeout_s: float = 30.0) -> None:
    """Return once replica ``node``'s link to its primary is up (the first full copy done)."""

    def linked() -> bool:
        try:
            return replication_info(node).get("master_link_status") == "up"
        except REDIS_ERRORS:
            return False

    wait_until(linked, timeout_s, f"redis-server {node.port} in sync with its primary", poll_s=0.1)


def start_replicated(directory: Path, replicas: int, timeout_s: float = 30.0) -> list[RedisServer]:
    """A primary (first) and ``replicas`` replicas of it, without persistence or Sentinels, started and in sync
    (``bench --redis-replicas``: what WAIT costs).  The caller stops each."""
    primary = RedisServer(directory / "redis-0", persistent=False)
    nodes = [primary] + [
        RedisServer(directory / f"redis-{i}", persistent=False, replica_of=primary.port) for i in range(1, replicas + 1)
    ]
    try:
        for node in nodes:
            node.start()
        for node in nodes[1:]:
            wait_replica_in_sync(node, timeout_s)
    except StreamError:
        for node in nodes:
            node.kill()
        raise
    return nodes


SENTINEL_SERVICE = "stream-kt"  # the name the Sentinels monitor the primary under: redis+sentinel://.../stream-kt


class RedisSentinel(RedisServer):
    """A ``redis-sentinel`` on 127.0.0.1:``port`` watching the primary on ``primary_port`` as ``service``.

    Its config file is written once, at the first start (Sentinel rewrites it with what it
    learns: replicas, other Sentinels, the epoch; a restart keeps that).  ``quorum``:
    Sentinels that must agree the primary is down; a failover needs a majority of them all.
    """

    binary = "redis-sentinel"
    log_name, config_name = "sentinel.log", "sentinel.conf"

    def __init__(
        self,
        directory: Path,
        primary_port: int,
        *,
        service: str = SENTINEL_SERVICE,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        port: int | None = None,
    ) -> None:
        super().__init__(directory, port, persistent=False)
        self.monitored_port, self.service, self.quorum = primary_port, service, quorum
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms

    def command(self) -> list[str]:
        return ["redis-sentinel", str(self.config_path)]

    def client(self, socket_timeout_s: float | None = 10.0) -> redis.Redis:
        import redis  # the service's client library: imported where a Sentinel is asked

        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=socket_timeout_s, socket_connect_timeout=1.0
        )

    def primary_port(self) -> int:
        """The port of the primary this Sentinel names for its service now."""
        client = self.client(socket_timeout_s=2.0)
        try:
            address: Any = client.sentinel_get_master_addr_by_name(self.service)
        finally:
            client.close()
        if not address:
            raise StreamError(f"sentinel {self.port} knows no primary of {self.service!r}")
        return int(address[1])

    def view(self) -> tuple[int, set[int], int]:
        """(the primary's port, the ports of the replicas it sees up and linked, the other Sentinels it knows)."""
        client = self.client(socket_timeout_s=2.0)
        try:
            primary: Any = client.sentinel_master(self.service)
            replicas: Any = client.sentinel_slaves(self.service)
        finally:
            client.close()
        up = {
            int(r["port"])
            for r in replicas
            if not r["is_sdown"] and not r["is_disconnected"] and r.get("master-link-status") == "ok"
        }
        return int(primary["port"]), up, int(primary["num-other-sentinels"])

    def write_config(self) -> None:
        if self.config_path.exists():
            return
        s = self.service
        lines = [
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.directory}", f"logfile {self.log_path}",
            f"sentinel monitor {s} 127.0.0.1 {self.monitored_port} {self.quorum}",
            f"sentinel down-after-milliseconds {s} {self.down_after_ms}",
            f"sentinel failover-timeout {s} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {s} 1",
        ]  # fmt: skip
        self.config_path.write_text("\n".join(lines) + "\n")


class SentinelGroup:
    """A primary, ``replicas`` replicas of it and ``sentinels`` Sentinels (quorum 2), all on loopback ports.

    No persistence: a node killed and restarted (``restart_as_replica``) comes back empty
    and gets every key from its primary.  ``url`` is the ``redis+sentinel://`` URL serve
    follows.  ``nodes[0]`` is the first primary; after a failover the Sentinels say which
    node is (``primary``).  ``fail_over`` is the whole fault: SIGKILL the primary, wait for
    the promotion, bring the killed one back as a replica of the new primary.
    """

    def __init__(
        self,
        directory: Path,
        replicas: int = 1,
        sentinels: int = 3,
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        service: str = SENTINEL_SERVICE,
    ) -> None:
        if replicas < 1 or sentinels < 1:
            raise StreamError(
                f"a Sentinel group needs a replica and a Sentinel at least, got {replicas} and {sentinels}"
            )
        self.directory, self.service = directory, service
        first = RedisServer(directory / "redis-0", persistent=False)
        self.nodes = [first] + [
            RedisServer(directory / f"redis-{i}", persistent=False, replica_of=first.port)
            for i in range(1, replicas + 1)
        ]
        quorum = min(2, sentinels)
        self.sentinels = [
            RedisSentinel(
                directory / f"sentinel-{i}",
                first.port,
                service=service,
                quorum=quorum,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
            for i in range(sentinels)
        ]
        self.failovers = 0

    @staticmethod
    def unavailable() -> str | None:
        """Why a group cannot start here (a binary missing), or None."""
        missing = [b.binary for b in (RedisServer, RedisSentinel) if not b.available()]
        return f"no {' or '.join(missing)} binary on PATH" if missing else None

    @property
    def url(self) -> str:
        return f"redis+sentinel://{','.join(f'127.0.0.1:{s.port}' for s in self.sentinels)}/{self.service}"

    def processes(self) -> list[subprocess.Popen]:
        return [p.process for p in [*self.sentinels, *self.nodes] if p.process is not None]

    def start(self, timeout_s: float = 60.0) -> SentinelGroup:
        """Start the nodes, wait until every replica is in sync, start the Sentinels, wait
        until each knows the group."""
        reason = self.unavailable()
        if reason:
            raise StreamError(f"{reason} (install redis-server and redis-sentinel)")
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes[1:]:
                self.wait_in_sync(node, timeout_s)
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_monitored(timeout_s)
        except StreamError:
            self.stop()
            raise
        return self

    def wait_in_sync(self, node: RedisServer, timeout_s: float = 30.0) -> None:
        wait_replica_in_sync(node, timeout_s)

    def wait_monitored(self, timeout_s: float = 60.0) -> None:
        """Until every Sentinel names one primary, sees every other running node as its replica, up and linked,
        and knows the other Sentinels: a failover can happen."""
        seen: list[str] = []

        def monitored() -> bool:
            seen.clear()
            try:
                views = [s.view() for s in self.sentinels]
            except (StreamError, *REDIS_ERRORS) as exc:
                seen.append(str(exc))
                return False
            seen.extend(
                f"sentinel {s.port}: primary {p}, replicas {sorted(r)}, {o} other Sentinels"
                for s, (p, r, o) in zip(self.sentinels, views)
            )
            primaries = {p for p, _, _ in views}
            if len(primaries) != 1:
                return False
            (primary,) = primaries
            running = {n.port for n in self.nodes if n.alive} - {primary}
            return all(running <= replicas and others == len(self.sentinels) - 1 for _, replicas, others in views)

        wait_until(
            monitored,
            timeout_s,
            lambda: f"the Sentinels monitoring the group ({'; '.join(seen) or 'no answer'})",
            poll_s=0.2,
        )

    def primary_port(self) -> int:
        """The primary's port as the first Sentinel that answers reports it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(StreamError, *REDIS_ERRORS):
                return sentinel.primary_port()
        raise StreamError(f"no Sentinel of {self.url} answers")

    def node(self, port: int) -> RedisServer:
        found = [n for n in self.nodes if n.port == port]
        if not found:
            raise StreamError(f"no redis-server of this group on port {port}")
        return found[0]

    @property
    def primary(self) -> RedisServer:
        return self.node(self.primary_port())

    def replicas(self) -> list[RedisServer]:
        """The running nodes other than the primary."""
        primary = self.primary_port()
        return [n for n in self.nodes if n.port != primary and n.alive]

    def wait_promoted(self, old_port: int, timeout_s: float = 30.0) -> RedisServer:
        """Wait until every Sentinel names another primary than ``old_port`` and that node answers as one; that node."""

        def promoted() -> bool:
            try:
                ports = {sentinel.primary_port() for sentinel in self.sentinels}
                if len(ports) != 1 or old_port in ports:
                    return False
                return replication_info(self.node(ports.pop())).get("role") == "master"
            except (StreamError, *REDIS_ERRORS):
                return False

        wait_until(promoted, timeout_s, f"a replica promoted in place of redis-server {old_port}", poll_s=0.1)
        return self.primary

    def cut_off(self, node: RedisServer) -> None:
        """Point replica ``node`` at a port nothing listens on: it keeps its data and receives nothing more (a
        replica fallen behind).  Sentinel puts it back after ``failover-timeout`` if the primary is still up."""
        client = node.client(socket_timeout_s=2.0)
        try:
            client.replicaof("127.0.0.1", free_port())
        finally:
            client.close()

    def restart_as_replica(self, node: RedisServer, primary: RedisServer, timeout_s: float = 30.0) -> None:
        """Start a killed ``node`` again, empty, on its port, as a replica of ``primary``; wait until it is in sync.

        Until then its replica priority is 0: no Sentinel may promote it.  (On a loaded machine a Sentinel was seen
        to take the just-promoted primary for down a second after the switch and fail over again, to this node
        while it was still empty: every state would have gone.)"""
        node.replica_of, node.replica_priority = primary.port, 0
        node.restart("sigkill")
        self.wait_in_sync(node, timeout_s)
        client = node.client(socket_timeout_s=2.0)
        try:
            client.config_set("replica-priority", 100)  # Redis's default: a replica with a full copy may be promoted
        finally:
            client.close()
        node.replica_priority = None

    def fail_over(self, timeout_s: float = 60.0) -> tuple[RedisServer, RedisServer, float]:
        """SIGKILL the primary; wait until the Sentinels promote a replica; start the killed node again as a replica
        of the new primary and wait until every Sentinel sees it.  (old, new, seconds from the kill to the
        promotion)."""
        old = self.primary
        killed = time.monotonic()
        old.kill()
        new = self.wait_promoted(old.port, timeout_s)
        promoted_s = time.monotonic() - killed
        self.restart_as_replica(old, new, timeout_s)
        self.wait_monitored(timeout_s)
        self.failovers += 1
        return old, new, promoted_s

    def stop(self) -> None:
        """SIGKILL every Sentinel, then every node (no persistence: nothing to flush;
        Sentinels first, so none reacts)."""
        for process in [*self.sentinels, *self.nodes]:
            process.kill()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
