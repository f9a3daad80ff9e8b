"""Ensemble weights fitted on validation students: the weighted mean probability with the best AUC."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stream_kt.checkpoint import Checkpoint, save_ensemble
from stream_kt.data.vocab import EncodedSequence
from stream_kt.errors import CheckpointError, DataError
from stream_kt.prediction_metrics import auc
from stream_kt.progress import progress_bar
from stream_kt.training.evaluate import predict_sequences
from stream_kt.training.prepare import students_of


def fit_weights(
    probs: Sequence[np.ndarray], labels: np.ndarray, rounds: int = 3, steps: int = 20, progress: bool = False
) -> tuple[list[float], float]:
    """Non-negative weights summing to 1, and their AUC, for ``sum_k w_k probs[k]`` on ``labels``.

    Coordinate search from equal weights: each round tries every member's share on a
    grid of ``steps + 1`` values (the others keep their proportions) and keeps the best.
    Equal weights are kept unless something beats them.
    """
    stacked = np.stack([np.asarray(p, np.float64) for p in probs])  # (K, N)
    k = stacked.shape[0]
    weights = np.full(k, 1.0 / k)
    best = auc(labels, weights @ stacked)
    for _ in progress_bar(range(rounds), desc="fitting weights", unit="round", disable=not progress):
        for i in range(k):
            others = np.delete(weights, i)
            others = others / others.sum() if others.sum() > 0 else np.full(k - 1, 1.0 / (k - 1))
            for share in np.linspace(0.0, 1.0, steps + 1):
                candidate = np.insert(others * (1.0 - share), i, share)
                score = auc(labels, candidate @ stacked)
                if score > best + 1e-12:
                    best, weights = score, candidate
    return weights.tolist(), float(best)


def validation_students(members: list[Checkpoint], data: str, fmt: str) -> list[EncodedSequence]:
    """The validation students every member shares, encoded, from their training file ``data``."""
    first = members[0]
    for member in members:
        if not member.split.valid:
            raise CheckpointError(
                f"{member.path}: has no validation students (refit on them); fit the weights on the checkpoints it was "
                "refit from, then refit that ensemble"
            )
    for member in members[1:]:
        if member.split.valid != first.split.valid:
            raise CheckpointError(
                f"{member.path}: validated on other students than {first.path} "
                "(train the members with the same --seed to fit weights)"
            )
    students = students_of(data, fmt, first.vocab.item_column, first.split.valid)
    if len(students) < len(first.split.valid):
        raise DataError(
            f"{data}: {len(first.split.valid) - len(students)} of the members' {len(first.split.valid)} validation "
            "students are not in it; give the file they were trained on"
        )
    return [first.vocab.encode(s) for s in students]


def build_ensemble(
    members: list[Checkpoint],
    out: str | Path,
    weights: Sequence[float] = (),
    fit_on: str | None = None,
    fmt: str = "auto",
) -> Checkpoint:
    """One checkpoint serving the members' (weighted) mean; ``fit_on``: fit the weights on their shared validation
    students, read from that file."""
    fitted = None
    if fit_on:
        valid = validation_students(members, fit_on, fmt)
        predictions = [predict_sequences(m.model, valid, progress=True) for m in members]  # same students, same order
        labels, probs = predictions[0][0], [p for _, p in predictions]
        weights, valid_auc = fit_weights(probs, labels, progress=True)
        fitted = {
            "students": len(valid),
            "answers": len(labels),
            "valid_auc": valid_auc,
            "valid_auc_equal": auc(labels, np.mean(probs, 0)),
        }
    return save_ensemble(out, members, tuple(weights), fitted)
