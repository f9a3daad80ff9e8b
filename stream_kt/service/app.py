"""``serve`` as a whole: the HTTP probes and the processor, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from stream_kt.checkpoint import Checkpoint
from stream_kt.service import http
from stream_kt.service.metrics import Metrics
from stream_kt.service.processor import ProcessorStats, run_processor
from stream_kt.settings import StreamSettings


async def serve(
    settings: StreamSettings,
    checkpoint: Checkpoint,
    on_ready: Callable[[], None] = lambda: None,
    shadow: Checkpoint | None = None,
) -> ProcessorStats:
    """Run the processor with ``/metrics``, ``/healthz`` and ``/readyz`` until a signal; ``on_ready`` once
    partitions are assigned.

    A signal lets the in-flight batch finish and commit before everything closes.
    """
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def announce() -> None:
        await ready.wait()
        on_ready()

    metrics, readiness = Metrics(), http.Readiness()
    announcing = asyncio.create_task(announce())
    try:
        async with http.serving(
            metrics, readiness, settings.metrics_port
        ):  # up first: /healthz answers during start-up
            return await run_processor(
                settings,
                checkpoint,
                backend=settings.backend,
                stop=stop,
                ready=ready,
                metrics=metrics,
                readiness=readiness,
                shadow=shadow,
            )
    finally:
        announcing.cancel()
