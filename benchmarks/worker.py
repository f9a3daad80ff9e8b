"""One benchmark processor process: ``python -m benchmarks.worker --variant NAME ...``.

Runs the real ``run_processor`` with the variant's model and batch size, prints
``ready`` once partitions are assigned, and on SIGTERM prints one JSON line with its
stats and the CPU seconds it spent after ``ready`` (start-up excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import resource
import signal

import torch

from benchmarks.alternatives import RecomputeWindow
from stream_kt.checkpoint import load_checkpoint
from stream_kt.service.processor import run_processor
from stream_kt.settings import StreamSettings


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)  # as serve does
    checkpoint = load_checkpoint(args.checkpoint)
    if args.variant == "recompute":
        checkpoint = dataclasses.replace(checkpoint, model=RecomputeWindow(checkpoint.model).eval(), version=checkpoint.version + "-recompute")
    settings = StreamSettings(
        bootstrap=args.bootstrap,
        redis_url=args.redis,
        in_topic=args.in_topic,
        out_topic=args.out_topic,
        dlq_topic=args.dlq_topic,
        group_id=args.group,
        key_prefix=args.key_prefix,
        batch_size=args.batch,
        max_wait_ms=args.max_wait_ms,
        partitions=args.partitions,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    cpu_at_ready: list[float] = []

    async def announce() -> None:
        await ready.wait()
        cpu_at_ready.append(cpu_s())
        print("ready", flush=True)

    announcing = asyncio.create_task(announce())
    stats = await run_processor(settings, checkpoint, backend=args.backend, stop=stop, ready=ready)
    announcing.cancel()
    print(json.dumps({**dataclasses.asdict(stats), "cpu_s": cpu_s() - (cpu_at_ready[0] if cpu_at_ready else 0.0)}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=("stream-kt", "naive", "recompute"), required=True)
    for flag in ("checkpoint", "bootstrap", "redis", "in-topic", "out-topic", "dlq-topic", "group", "key-prefix", "backend"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--max-wait-ms", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=6)
    asyncio.run(main(parser.parse_args()))
