"""``stream-kt serve``: run the streaming processor until SIGTERM or SIGINT (``service.app``).

Settings come from flags, the environment and ``--config FILE`` (``settings.py``);
``/metrics``, ``/healthz`` and ``/readyz`` are served on ``--metrics-port``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click
import torch

from stream_kt.backends import resolve_backend_name
from stream_kt.checkpoint import load_checkpoint
from stream_kt.commands.settings_flags import settings_from_options, settings_options
from stream_kt.errors import ConfigError
from stream_kt.service.app import serve
from stream_kt.service.logging_setup import configure_logging
from stream_kt.tools.brokers import EmbeddedBroker

log = logging.getLogger(__name__)


@click.command("serve", help="consume answer events, keep student state in Redis, produce mastery")
@settings_options()
def serve_command(**options: Any) -> int:
    settings = settings_from_options(options)
    if not settings.checkpoint:
        raise ConfigError("serve needs the model: --checkpoint DIR (or KT_CHECKPOINT)")
    resolve_backend_name(settings.backend)  # an unknown or unavailable backend: one line now, before any connection
    checkpoint = load_checkpoint(settings.checkpoint)
    shadow = load_checkpoint(settings.shadow) if settings.shadow else None
    configure_logging(settings.log_format)
    log.info("settings: %r", settings)  # repr masks the passwords
    torch.set_num_threads(
        1
    )  # a step is a few small matmuls: more threads only contend with the event loop (4x slower on 2 cores)
    broker = EmbeddedBroker().start() if settings.bootstrap == "embedded" else None
    try:
        if broker is not None:
            settings = settings.replace(bootstrap=broker.bootstrap)

        def announce() -> None:
            print(
                f"serving {checkpoint.version} from {settings.in_topic} to {settings.out_topic} "
                f"(bootstrap {settings.bootstrap}, group {settings.group_id}, key prefix {settings.key_prefix}, "
                f"batch {settings.batch_size}, backend {settings.backend})"
                + (f", shadow {shadow.version}" if shadow else ""),
                flush=True,
            )

        stats = asyncio.run(serve(settings, checkpoint, announce, shadow))
    finally:
        if broker is not None:
            broker.stop()
    print(
        f"stopped: {stats.events_in} events in, {stats.outputs} outputs, {stats.dlq} dead letters, "
        f"{stats.skipped_replays} replays skipped, {stats.batches} batches",
        flush=True,
    )
    return 0


COMMANDS = (serve_command,)
