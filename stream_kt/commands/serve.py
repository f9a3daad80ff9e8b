"""``stream-kt serve``: run the streaming processor until SIGTERM or SIGINT.

Settings come from flags, the environment and ``--config FILE`` (``settings.py``);
``/metrics``, ``/healthz`` and ``/readyz`` are served on ``--metrics-port`` (``stream/http.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal

import torch

from stream_kt.service.logging_setup import configure_logging
from stream_kt.settings import StreamSettings, add_settings_arguments, settings_from_args
from stream_kt.service import http
from stream_kt.tools.brokers import EmbeddedBroker
from stream_kt.service.metrics import Metrics
from stream_kt.service.processor import ProcessorStats, run_processor
from stream_kt.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="consume answer events, keep student state in Redis, produce mastery")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (from stream-kt train)")
    add_settings_arguments(p)
    p.add_argument("--backend", default="eager", help="step backend (default eager)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    checkpoint = load_checkpoint(args.checkpoint)
    configure_logging(settings.log_format)
    log.info("settings: %r", settings)  # repr masks the passwords
    torch.set_num_threads(1)  # a step is a few small matmuls: more threads only contend with the event loop (4x slower on 2 cores)
    broker = EmbeddedBroker().start() if settings.bootstrap == "embedded" else None
    try:
        if broker is not None:
            settings = dataclasses.replace(settings, bootstrap=broker.bootstrap)
        stats = asyncio.run(serve(settings, checkpoint, args.backend))
    finally:
        if broker is not None:
            broker.stop()
    print(f"stopped: {stats.events_in} events in, {stats.outputs} outputs, {stats.dlq} dead letters, {stats.skipped_replays} replays skipped, {stats.batches} batches", flush=True)
    return 0


async def serve(settings: StreamSettings, checkpoint: Checkpoint, backend: str) -> ProcessorStats:
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)  # the in-flight batch finishes and commits

    async def announce() -> None:
        await ready.wait()
        print(
            f"serving {checkpoint.version} from {settings.in_topic} to {settings.out_topic} "
            f"(bootstrap {settings.bootstrap}, group {settings.group_id}, key prefix {settings.key_prefix}, batch {settings.batch_size}, backend {backend})",
            flush=True,
        )

    metrics, readiness = Metrics(), http.Readiness()
    announcing = asyncio.create_task(announce())
    try:
        async with http.serving(metrics, readiness, settings.metrics_port):  # up first: /healthz answers during start-up
            return await run_processor(settings, checkpoint, backend=backend, stop=stop, ready=ready, metrics=metrics, readiness=readiness)
    finally:
        announcing.cancel()
