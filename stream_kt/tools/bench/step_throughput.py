"""Benchmark 1: model step throughput (student-steps/s) against batch size, per backend.

Every rate counts the whole ``backend.step``: on CUDA that includes packing the rows into
pinned memory and the copies to the GPU and back, state included (the state a step
returns is the next step's input, as in the stream).
"""

from __future__ import annotations

import time

import torch

from stream_kt.backends import make_backend
from stream_kt.models import KTModel
from stream_kt.progress import progress_bar

CUDA_BATCHES = [64, 256, 1024, 4096, 16384, 65536]
# (row name, CudaGraphBackend options): with and without the graph, and float16 mastery on request
CUDA_VARIANTS: tuple[tuple[str, dict[str, object]], ...] = (
    ("cuda", {}),
    ("cuda-eager", {"graphs": False}),
    ("cuda-f16", {"mastery_dtype": torch.float16}),
)


def measure_step(backend, model: KTModel, rows: int, min_seconds: float = 0.3, repeats: int = 3) -> float:
    """Best-of-``repeats`` student-steps/s of ``backend.step`` on ``rows`` rows (state carried)."""
    generator = torch.Generator().manual_seed(0)
    items = torch.randint(0, model.config.num_items, (rows,), generator=generator)
    correct = torch.randint(0, 2, (rows,), generator=generator)
    state = model.initial_state(rows)
    for _ in range(5):  # warm-up: allocator, caches, first-call compilation
        state = backend.step(state, items, correct).state
    best = 0.0
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < min_seconds or calls < 3:
            state = backend.step(state, items, correct).state
            calls += 1
        best = max(best, calls * rows / elapsed)
    return best


def step_throughput(
    model: KTModel, backends: list[str], batch_sizes: list[int], min_seconds: float = 0.3, progress: bool = True
) -> list[dict]:
    rows = []
    cases = [(b, s) for b in backends for s in batch_sizes]
    for name, batch in progress_bar(cases, desc="step throughput", unit="case", disable=not progress):
        backend = make_backend(name, model, batch)
        rate = measure_step(backend, model, batch, min_seconds)
        rows.append(
            {"backend": backend.name, "batch": batch, "student_steps_per_s": rate, "us_per_step": 1e6 * batch / rate}
        )
    return rows


def cuda_step_throughput(
    model: KTModel, batch_sizes: list[int] = CUDA_BATCHES, min_seconds: float = 0.3, progress: bool = True
) -> tuple[list[dict], list[dict]]:
    """(rows, skipped): the CUDA backend with and without CUDA graphs, and with float16 mastery, against B.

    Each row also gives the bytes one student-step copies to the GPU and back.  A B that
    does not fit in GPU memory is skipped, with the larger ones of that variant.
    """
    from stream_kt.backends.compiled import CudaGraphBackend  # CUDA only

    rows, skipped = [], []
    for name, options in progress_bar(CUDA_VARIANTS, desc="cuda step throughput", unit="variant", disable=not progress):
        for batch in batch_sizes:
            try:
                backend = CudaGraphBackend(model, batch, **options)
                rate = measure_step(backend, model, batch, min_seconds)
            except torch.cuda.OutOfMemoryError:
                skipped += [
                    {"backend": name, "batch": b, "reason": "out of GPU memory"} for b in batch_sizes if b >= batch
                ]
                torch.cuda.empty_cache()
                break
            row_bytes = {
                which: sum(f.nbytes(1) for f in layout.fields)
                for which, layout in (("to", backend.inputs), ("from", backend.outputs))
            }
            rows.append(
                {
                    "backend": name,
                    "batch": batch,
                    "student_steps_per_s": rate,
                    "us_per_step": 1e6 * batch / rate,
                    "bytes_to_gpu_per_step": row_bytes["to"],
                    "bytes_from_gpu_per_step": row_bytes["from"],
                }
            )
            del backend  # its buffers and graph pool, before the next B
            torch.cuda.empty_cache()
    return rows, skipped
