"""A primary, its replica and three Sentinels as real processes on loopback ports, for the Redis HA tests.

Each server runs from a config file of its own in its own directory (Sentinel rewrites
its file; a promoted replica's CONFIG REWRITE needs one), with no persistence: a node
restarted as a replica gets the data from its primary.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from stream_kt.tools.brokers import free_port

SERVICE = "mymaster"


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``condition`` (Redis errors count as not yet) every 50 ms; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


class Node:
    """One redis-server (``replica_of``: a port to replicate) or redis-sentinel process."""

    def __init__(self, directory: Path, lines: list[str], sentinel: bool = False, port: int | None = None) -> None:
        self.port = port or free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / ("sentinel.conf" if sentinel else "redis.conf")
        self.config.write_text("\n".join([f"port {self.port}", "bind 127.0.0.1", f"dir {directory}", *lines]) + "\n")
        self.binary = "redis-sentinel" if sentinel else "redis-server"
        self.process: subprocess.Popen | None = None

    def start(self) -> Node:
        log = open(self.directory / "log.txt", "ab")
        self.process = subprocess.Popen([self.binary, str(self.config)], stdout=log, stderr=log)
        log.close()
        wait_for(lambda: self.client().ping(), 10, f"{self.binary} on port {self.port} answers")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2)

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


class SentinelGroup:
    """A primary, one replica of it, and three Sentinels (quorum 2) monitoring ``SERVICE``."""

    def __init__(self, directory: Path, down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        self.directory = directory
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.primary = Node(directory / "a", ['save ""', "appendonly no"])
        self.replica = Node(directory / "b", ['save ""', "appendonly no", f"replicaof 127.0.0.1 {self.primary.port}"])
        self.sentinels: list[Node] = []
        self.nodes = [self.primary, self.replica]

    @property
    def url(self) -> str:
        return f"redis+sentinel://{','.join(f'127.0.0.1:{s.port}' for s in self.sentinels)}/{SERVICE}"

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        wait_for(lambda: self.replica.client().info("replication")["master_link_status"] == "up", 20, "replica in sync")
        for i in range(3):
            lines = [
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {SERVICE} 1",
            ]
            self.sentinels.append(Node(self.directory / f"sentinel-{i}", lines, sentinel=True).start())
        for sentinel in self.sentinels:  # each knows the replica and the two other Sentinels: a failover can happen
            client = sentinel.client()
            wait_for(lambda: len(client.sentinel_slaves(SERVICE)) == 1 and client.sentinel_master(SERVICE)["num-other-sentinels"] == 2, 30, f"sentinel {sentinel.port} sees the group")

    def primary_port(self) -> int:
        """The primary's port as the Sentinels report it."""
        host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def node(self, port: int) -> Node:
        (found,) = [n for n in self.nodes if n.port == port]
        return found

    def wait_promoted(self, old_port: int, timeout_s: float = 30.0) -> Node:
        """Wait until every Sentinel names another primary than ``old_port`` and it answers as one; that node."""

        def promoted() -> bool:
            ports = {int(s.client().sentinel_get_master_addr_by_name(SERVICE)[1]) for s in self.sentinels}
            return len(ports) == 1 and old_port not in ports and self.node(ports.pop()).client().info("replication")["role"] == "master"

        wait_for(promoted, timeout_s, f"a replica promoted in place of {old_port}")
        return self.node(self.primary_port())

    def restart_as_replica(self, node: Node, primary: Node) -> None:
        """Start a killed ``node`` again, empty, on its port, as a replica of ``primary``; wait until it is in sync."""
        lines = ['save ""', "appendonly no", f"replicaof 127.0.0.1 {primary.port}"]
        restarted = Node(node.directory, lines, port=node.port)
        node.config, node.process = restarted.config, restarted.start().process
        wait_for(lambda: node.client().info("replication")["master_link_status"] == "up", 20, f"{node.port} in sync with {primary.port}")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.kill()


@contextlib.contextmanager
def started_group(directory: Path) -> Iterator[SentinelGroup]:
    """A started ``SentinelGroup`` in ``directory`` (skips without the binaries); every process killed at the end."""
    if shutil.which("redis-server") is None or shutil.which("redis-sentinel") is None:
        pytest.skip("no redis-server or redis-sentinel binary")
    group = SentinelGroup(directory)
    try:
        group.start()
        yield group
    finally:
        group.stop()
