"""Does the stream serve what offline evaluation scored?

Replays held-out students through the fixed-shape step backend the stream uses, one
event at a time, students batched as rows, with every state row stored and reloaded
as float32 between events exactly as the stream keeps it in Redis, and compares each
streamed P(correct) with the offline forward's prediction for the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stream_kt.backends import make_backend
from stream_kt.data.vocab import EncodedSequence
from stream_kt.models import KTModel
from stream_kt.progress import progress_bar
from stream_kt.training.evaluate import predict_sequences


def event_times(sequence: EncodedSequence, t: int) -> np.ndarray:
    """[elapsed, lag] seconds of interaction t as the stream passes them (zeros where unknown)."""
    return np.zeros(2, np.float32) if sequence.times is None else sequence.times[t]


@torch.no_grad()
def streamed_predictions(
    model: KTModel, sequences: Sequence[EncodedSequence], batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """P(correct) streamed for every answer but each student's first, in ``predict_sequences``' order."""
    backend = make_backend("eager", model, batch_size)
    # longest first, so the students still answering at step t are always the first rows
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    lengths = np.array([len(sequences[i]) for i in order])
    state = {k: v.numpy().astype(np.float32) for k, v in backend.initial_state(len(order)).items()}
    predicted = [np.zeros(max(n - 1, 0), np.float32) for n in lengths]
    steps = int(lengths.max()) if len(lengths) else 0
    for t in progress_bar(range(steps), desc="streaming", unit="step", disable=not progress, leave=False):
        active = int((lengths > t).sum())
        items = torch.from_numpy(np.array([sequences[i].items[t] for i in order[:active]]))  # (n,) or (n, K) skill sets
        correct = torch.tensor([sequences[i].correct[t] for i in order[:active]])
        times = torch.tensor(np.array([event_times(sequences[i], t) for i in order[:active]]))
        questions = (
            None
            if sequences[order[0]].questions is None
            else torch.tensor([sequences[i].questions[t] for i in order[:active]])  # type: ignore[index]
        )
        out = backend.step(
            {k: torch.from_numpy(v[:active]) for k, v in state.items()}, items, correct, times, questions
        )
        for k, v in out.state.items():  # what the stream writes back: float32 rows
            state[k][:active] = v.numpy().astype(np.float32)
        if t >= 1:
            for row, p in enumerate(out.p_correct.numpy()):
                predicted[row][t - 1] = p
    by_student = {i: predicted[row] for row, i in enumerate(order) if lengths[row] >= 2}
    return np.concatenate([by_student[i] for i in sorted(by_student)]) if by_student else np.zeros(0, np.float32)


def parity_max_abs_diff(
    model: KTModel, sequences: Sequence[EncodedSequence], batch_size: int = 64, progress: bool = False
) -> float:
    """max |streamed - offline| P(correct) over every scored answer (0.0 when nothing is scored)."""
    _, offline = predict_sequences(model, sequences, progress=progress)
    streamed = streamed_predictions(model, sequences, batch_size, progress)
    return float(np.abs(streamed - offline).max()) if len(offline) else 0.0
