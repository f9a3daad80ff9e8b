"""Binary prediction metrics (numpy only): AUC, accuracy, RMSE, log-loss. (The Prometheus
metrics are service/metrics.py.)"""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); nan with one class only."""
    labels = np.asarray(labels, dtype=bool)
    probs = np.asarray(probs, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(probs, kind="mergesort")
    sorted_probs = probs[order]
    ranks = np.empty(len(probs), np.float64)
    # average rank within each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_probs[1:] != sorted_probs[:-1]])
    ends = np.r_[starts[1:], len(probs)]
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    return {
        "auc": auc(labels, probs),
        "acc": float(((probs >= 0.5) == (labels >= 0.5)).mean()) if len(labels) else float("nan"),
        "rmse": float(np.sqrt(np.mean((probs - labels) ** 2))) if len(labels) else float("nan"),
        "logloss": float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
        if len(labels)
        else float("nan"),
        "n": int(len(labels)),
    }
