"""What the benchmarks run: a model with random weights, and synthetic students over its items."""

from __future__ import annotations

from pathlib import Path

import torch

from stream_kt.checkpoint import Checkpoint, save_checkpoint
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.split import split_students
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.data.vocab import Vocabulary
from stream_kt.models import build_model


def default_checkpoint(
    directory: Path, model_name: str | None = None, hidden_size: int = 128, seed: int = 0
) -> Checkpoint:
    """DKT, hidden 128, 124 items (the ASSISTments 2009 skill count), or ``model_name`` at its
    default configuration over the same items: speed does not depend on the weights (``seed``
    draws them: another seed is another model version, e.g. a shadow)."""
    torch.manual_seed(seed)
    vocab = Vocabulary("skill_id", tuple(str(i) for i in range(124)))
    if model_name is None:
        model = build_model("dkt", num_items=124, embed_dim=hidden_size, hidden_size=hidden_size).eval()
    else:
        model = build_model(model_name, num_items=124).eval()
    split = split_students(["x", "y"], seed=0, valid_fraction=0.5)
    name = f"bench-dkt-h{hidden_size}" if model_name is None else f"bench-{model_name}"
    return save_checkpoint(directory / name, model, vocab, split, {"note": "random weights for benchmarking"})


def bench_students(vocab: Vocabulary, events: int, seed: int = 0) -> list[StudentSequence]:
    """Synthetic students whose items are the checkpoint's own ids, about ``events`` answers in all."""
    students = generate(SyntheticConfig(students=max(10, events // 90), items=len(vocab), concepts=8, seed=seed))
    mapped = [StudentSequence(s.student_id, tuple(vocab.ids[int(i)] for i in s.items), s.correct) for s in students]
    out, total = [], 0
    for s in mapped:
        if total >= events:
            break
        out.append(s)
        total += len(s)
    return out
