"""Benchmark 1: model step throughput (student-steps/s) against batch size, per backend."""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from stream_kt.backends import make_backend
from stream_kt.models import KTModel


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


def step_throughput(model: KTModel, backends: list[str], batch_sizes: list[int], min_seconds: float = 0.3, progress: bool = True) -> list[dict]:
    rows = []
    cases = [(b, s) for b in backends for s in batch_sizes]
    for name, batch in tqdm(cases, desc="step throughput", unit="case", disable=not progress):
        backend = make_backend(name, model, batch)
        rate = measure_step(backend, model, batch, min_seconds)
        rows.append({"backend": backend.name, "batch": batch, "student_steps_per_s": rate, "us_per_step": 1e6 * batch / rate})
    return rows
