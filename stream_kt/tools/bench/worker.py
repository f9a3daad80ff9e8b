"""One benchmark processor process: ``python -m stream_kt.tools.bench.worker --variant NAME [--stop-after N]``.

Its settings come from the environment, every one, as ``end_to_end.Worker`` puts them there
(``tools.processes.settings_environ``).  Runs the real ``run_processor`` with the variant's model and batch size, prints
``ready`` once partitions are assigned, and on SIGTERM prints one JSON line with its
stats and the CPU seconds it spent after ``ready`` (start-up excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal

import torch

from stream_kt.checkpoint import Checkpoint, load_checkpoint
from stream_kt.service.metrics import Metrics
from stream_kt.service.processor import run_processor
from stream_kt.settings import StreamSettings, load_settings
from stream_kt.tools.bench.alternatives import RecomputeWindow
from stream_kt.tools.bench.end_to_end import cpu_s
from stream_kt.tools.bench.handwritten import HandwrittenLoop


async def handwritten(settings: StreamSettings, checkpoint: Checkpoint) -> None:
    """``--variant handwritten``: the loop of ``stream_kt.tools.bench.handwritten`` instead of ``run_processor``."""
    s = settings
    loop = HandwrittenLoop(
        checkpoint, s.bootstrap, s.redis_url, s.in_topic, s.out_topic, s.group_id, s.key_prefix, s.batch_size
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await loop.start()
    started = cpu_s()
    print("ready", flush=True)
    try:
        await loop.run(stop)
    finally:
        await loop.stop()
    print(json.dumps({"events_in": loop.events_in, "outputs": loop.outputs, "cpu_s": cpu_s() - started}), flush=True)


async def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)  # as serve does
    settings = load_settings()
    checkpoint = load_checkpoint(settings.checkpoint)
    if args.variant == "handwritten":
        return await handwritten(settings, checkpoint)
    if args.variant == "recompute":
        checkpoint = dataclasses.replace(
            checkpoint, model=RecomputeWindow(checkpoint.model).eval(), version=checkpoint.version + "-recompute"
        )
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    cpu_at_ready: list[float] = []

    async def announce() -> None:
        await ready.wait()
        cpu_at_ready.append(cpu_s())
        print("ready", flush=True)

    metrics = Metrics(process_metrics=False)

    async def stop_after(events: int) -> None:  # --stop-after: once this many events are committed
        while metrics.events_in < events:
            await asyncio.sleep(0.05)
        stop.set()

    tasks = [asyncio.create_task(announce())] + (
        [asyncio.create_task(stop_after(args.stop_after))] if args.stop_after else []
    )
    shadow = load_checkpoint(settings.shadow) if settings.shadow else None  # --variant stream-kt+shadow
    stats = await run_processor(
        settings, checkpoint, backend=settings.backend, stop=stop, ready=ready, metrics=metrics, shadow=shadow
    )
    for task in tasks:
        task.cancel()
    print(
        json.dumps({**dataclasses.asdict(stats), "cpu_s": cpu_s() - (cpu_at_ready[0] if cpu_at_ready else 0.0)}),
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--variant", choices=("stream-kt", "stream-kt+shadow", "handwritten", "naive", "recompute"), required=True
    )
    parser.add_argument("--stop-after", type=int, help="stop once this many events are committed (default: on SIGTERM)")
    asyncio.run(main(parser.parse_args()))
