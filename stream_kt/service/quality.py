"""Online model quality: each event's ``p_correct`` (made before its answer) scored against the answer.  Pure.

``Scores`` keeps bounded-memory counts a run (or a fleet, through Redis) adds up: per
score bin (``BINS`` bins of width 1/BINS over [0, 1]) how many answers were correct and
how many wrong, the sums of log-loss and squared error, the answers the 0.5 threshold
got right, and per calibration decile the sum of predictions.  From them: AUC,
log-loss, RMSE, accuracy and a 10-bin calibration table.  Counts add, so processors
each add their batch's counts to one Redis hash (``redis_store.add_quality``) and any
reader gets the fleet's numbers.

AUC from bins counts every (correct, wrong) pair in one bin as a tie (half), where the
exact AUC would count 0, 1/2 or 1: so it is within ``auc_error_bound`` =
0.5 * sum over bins of correct_b * wrong_b / (correct * wrong) of the exact value, a
bound each summary reports (about 1e-4 on ASSISTments-like scores with 10,000 bins;
``tests/service/test_quality.py`` checks it against the exact AUC).

``RecentScores`` keeps the last N (score, answer) pairs of this process: the sliding
window's exact metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_kt.prediction_metrics import binary_metrics

BINS = 10_000
DECILES = 10
EPS = 1e-7  # log-loss clips predictions to [EPS, 1 - EPS]


def score_bins(p_correct: np.ndarray) -> np.ndarray:
    """The bin of each prediction: floor(p * BINS), 1.0 in the last bin."""
    return np.minimum((np.asarray(p_correct, np.float64) * BINS).astype(np.int64), BINS - 1)


@dataclass
class Scores:
    correct: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))  # answers correct, per score bin
    wrong: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    log_loss_sum: float = 0.0
    squared_error_sum: float = 0.0
    hits: int = 0  # answers the 0.5 threshold got right
    decile_p_sum: np.ndarray = field(default_factory=lambda: np.zeros(DECILES, np.float64))

    def add(self, p_correct: np.ndarray, answers: np.ndarray) -> Scores:
        """Score predictions against their answers (0/1); returns self."""
        self.merge(Scores.of(p_correct, answers))
        return self

    @classmethod
    def of(cls, p_correct: np.ndarray, answers: np.ndarray) -> Scores:
        p = np.asarray(p_correct, np.float64)
        y = np.asarray(answers, np.int64)
        bins = score_bins(p)
        clipped = np.clip(p, EPS, 1 - EPS)
        return cls(
            correct=np.bincount(bins[y == 1], minlength=BINS),
            wrong=np.bincount(bins[y == 0], minlength=BINS),
            log_loss_sum=float(-(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)).sum()),
            squared_error_sum=float(((p - y) ** 2).sum()),
            hits=int(((p >= 0.5) == (y == 1)).sum()),
            decile_p_sum=np.bincount(bins * DECILES // BINS, weights=p, minlength=DECILES),
        )

    def merge(self, other: Scores) -> None:
        self.correct += other.correct
        self.wrong += other.wrong
        self.log_loss_sum += other.log_loss_sum
        self.squared_error_sum += other.squared_error_sum
        self.hits += other.hits
        self.decile_p_sum += other.decile_p_sum

    @property
    def count(self) -> int:
        return int(self.correct.sum() + self.wrong.sum())

    def auc(self) -> tuple[float, float]:
        """(AUC, its error bound against the exact AUC); nan with one class only."""
        positives, negatives = int(self.correct.sum()), int(self.wrong.sum())
        if not positives or not negatives:
            return math.nan, math.nan
        below = np.cumsum(self.wrong) - self.wrong  # wrong answers in lower bins
        pairs = positives * negatives
        same_bin = float((self.correct * self.wrong).sum())
        return float((self.correct * below).sum() + 0.5 * same_bin) / pairs, 0.5 * same_bin / pairs

    def summary(self) -> dict[str, Any]:
        """count, auc, auc_error_bound, logloss, rmse, accuracy and a 10-bin calibration table."""
        n = self.count
        auc, bound = self.auc()
        per_decile_correct = self.correct.reshape(DECILES, -1).sum(axis=1)
        per_decile = per_decile_correct + self.wrong.reshape(DECILES, -1).sum(axis=1)
        calibration = [
            {
                "bin": f"{k / DECILES:.1f}-{(k + 1) / DECILES:.1f}",
                "count": int(c),
                "mean_p": float(self.decile_p_sum[k] / c) if c else None,
                "observed": float(per_decile_correct[k] / c) if c else None,
            }
            for k, c in enumerate(per_decile.tolist())
        ]
        return {
            "count": n,
            "auc": auc,
            "auc_error_bound": bound,
            "logloss": self.log_loss_sum / n if n else math.nan,
            "rmse": math.sqrt(self.squared_error_sum / n) if n else math.nan,
            "accuracy": self.hits / n if n else math.nan,
            "calibration": calibration,
        }

    # ------------------------------------------------------------------ as a Redis hash

    def to_fields(self) -> dict[str, int | float]:
        """The counts as hash fields to add (HINCRBY / HINCRBYFLOAT): only bins that hold something."""
        out: dict[str, int | float] = {f"c:{b}": int(self.correct[b]) for b in np.flatnonzero(self.correct).tolist()}
        out |= {f"w:{b}": int(self.wrong[b]) for b in np.flatnonzero(self.wrong).tolist()}
        out |= {f"d:{k}": float(self.decile_p_sum[k]) for k in np.flatnonzero(self.decile_p_sum).tolist()}
        out |= {"logloss": self.log_loss_sum, "se": self.squared_error_sum, "hits": self.hits}
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str | bytes, str | bytes | float | int]) -> Scores:
        scores = cls()
        for raw_name, raw in fields.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
            value = float(raw.decode() if isinstance(raw, bytes) else raw)
            kind, _, index = name.partition(":")
            if kind == "c":
                scores.correct[int(index)] = int(value)
            elif kind == "w":
                scores.wrong[int(index)] = int(value)
            elif kind == "d":
                scores.decile_p_sum[int(index)] = value
            elif name == "logloss":
                scores.log_loss_sum = value
            elif name == "se":
                scores.squared_error_sum = value
            elif name == "hits":
                scores.hits = int(value)
        return scores


class RecentScores:
    """The last ``size`` (prediction, answer) pairs of this process, for exact metrics over a sliding window."""

    def __init__(self, size: int) -> None:
        self.p_correct = np.zeros(size, np.float32)
        self.answers = np.zeros(size, np.int8)
        self.filled = 0
        self.head = 0

    def add(self, p_correct: np.ndarray, answers: np.ndarray) -> None:
        size = len(self.p_correct)
        p, y = np.asarray(p_correct)[-size:], np.asarray(answers)[-size:]
        at = (self.head + np.arange(len(p))) % size
        self.p_correct[at], self.answers[at] = p, y
        self.head = (self.head + len(p)) % size
        self.filled = min(size, self.filled + len(p))

    def summary(self) -> dict[str, Any]:
        if not self.filled:
            return {"count": 0, "auc": math.nan, "logloss": math.nan, "rmse": math.nan, "accuracy": math.nan}
        m = binary_metrics(self.answers[: self.filled], self.p_correct[: self.filled])
        return {"count": self.filled, "auc": m["auc"], "logloss": m["logloss"], "rmse": m["rmse"], "accuracy": m["acc"]}


def finite(value: Any) -> Any:
    """``value`` with every nan or infinite float (no AUC yet: one class of answers only) as None, for JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
