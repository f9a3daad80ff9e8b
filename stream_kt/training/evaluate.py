"""Honest held-out scoring.

Every answer of each held-out student except the first is predicted from ALL of that
student's earlier answers: the model runs over the whole history (the LSTM state
carries across 100-step windows exactly as the stream carries it in Redis).  Windows
are a training device only.  Attention models (SAKT, SAINT, the last-query encoder)
see only their own window of the last W interactions per prediction, here exactly as
in the stream.  Interactions whose item the vocabulary does not know are
dropped before scoring and counted in ``n_unknown``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stream_kt.checkpoint import Checkpoint
from stream_kt.data.audit import RepeatSignature
from stream_kt.data.batches import make_batch, row_of
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.vocab import EncodedSequence, Vocabulary
from stream_kt.errors import DataError
from stream_kt.models import KTModel
from stream_kt.prediction_metrics import binary_metrics
from stream_kt.progress import progress_bar
from stream_kt.training.prepare import load_students, students_of


@torch.no_grad()
def predict_sequences(
    model: KTModel, sequences: Sequence[EncodedSequence], batch_size: int = 32, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) for every scored answer, students in the given order."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths share a batch
    by_student: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    chunks = range(0, len(order), batch_size)
    for start in progress_bar(chunks, desc="scoring", unit="batch", disable=not progress, leave=False):
        index = [i for i in order[start : start + batch_size] if len(sequences[i]) >= 2]
        if not index:
            continue
        batch = make_batch([row_of(sequences[i]) for i in index])
        p_next = torch.sigmoid(model(batch))
        for row, i in enumerate(index):
            scored = batch.next_mask[row]
            by_student[i] = (batch.next_correct[row][scored].numpy(), p_next[row][scored].numpy())
    model.train(was_training)
    if not by_student:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    labels = np.concatenate([by_student[i][0] for i in sorted(by_student)])
    probs = np.concatenate([by_student[i][1] for i in sorted(by_student)])
    return labels, probs


def evaluate(
    model: KTModel,
    sequences: Sequence[EncodedSequence],
    progress: bool = False,
    flagged: Sequence[np.ndarray] | None = None,
) -> dict:
    """Metrics over every scored answer; with ``flagged`` (a bool per position of each sequence, ``flagged_positions``)
    also without the flagged answers (``auc_unflagged``) and on them alone (``auc_flagged``)."""
    labels, probs = predict_sequences(model, sequences, progress=progress)
    metrics = binary_metrics(labels, probs)
    metrics["students"] = len(sequences)
    metrics["n_unknown"] = int(sum(s.n_unknown for s in sequences))
    if flagged is not None:
        metrics.update(split_by_flags(sequences, flagged, labels, probs))
    metrics.update(
        model.extra_metrics(sequences)
    )  # a model's own scores beyond next-answer prediction (DKT+: consistency)
    return metrics


def split_by_flags(
    sequences: Sequence[EncodedSequence], flagged: Sequence[np.ndarray], labels: np.ndarray, probs: np.ndarray
) -> dict:
    """AUC without and on the flagged answers, ``labels`` and ``probs`` as ``predict_sequences`` orders them."""
    parts = [
        np.asarray(f, bool)[1:] for s, f in zip(sequences, flagged) if len(s) >= 2
    ]  # every answer but each student's first is scored
    mask = np.concatenate(parts) if parts else np.zeros(0, bool)
    if len(mask) != len(labels):
        raise ValueError(f"{len(mask)} flags for {len(labels)} scored answers")
    clean, leaky = binary_metrics(labels[~mask], probs[~mask]), binary_metrics(labels[mask], probs[mask])
    return {
        "auc_unflagged": clean["auc"],
        "n_unflagged": clean["n"],
        "auc_flagged": leaky["auc"],
        "n_flagged": leaky["n"],
    }


def flagged_positions(
    vocab: Vocabulary, students: Sequence[StudentSequence], signature: RepeatSignature
) -> list[np.ndarray]:
    """Per student, the positions ``signature`` flags (``stream-kt audit``'s multi-skill repeats), aligned with
    ``vocab.encode(student)``: positions on items the vocabulary lacks are dropped as encoding drops them."""
    out = []
    for student in students:
        known = np.fromiter((vocab.index(item) is not None for item in student.items), bool, count=len(student))
        out.append(signature.flags(student)[known])
    return out


def held_out_students(
    checkpoint: Checkpoint, test_data: str | None, data: str | None, fmt: str
) -> tuple[list[StudentSequence], str]:
    """The students to score and where they came from: a test file, or the checkpoint's
    held-out students of ``data``."""
    item = checkpoint.vocab.item_column
    if test_data:
        return load_students(test_data, fmt, item), test_data
    if not data:
        raise DataError("evaluate needs --test-data PATH (or --data PATH to score the checkpoint's held-out students)")
    held_out = checkpoint.split.test
    if not held_out:
        raise DataError(
            f"{checkpoint.path} held out a separate file ({checkpoint.split.test_source}): pass it with --test-data"
        )
    students = students_of(data, fmt, item, held_out)
    if not students:
        raise DataError(f"{data}: none of the checkpoint's {len(held_out)} held-out students are in this file")
    return students, f"{data} (held-out students of the checkpoint's split)"
