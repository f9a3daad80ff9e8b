"""Ensemble weights fitted on validation students: the weighted mean probability with the best AUC."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tqdm import tqdm

from stream_kt.training.metrics import auc


def fit_weights(probs: Sequence[np.ndarray], labels: np.ndarray, rounds: int = 3, steps: int = 20, progress: bool = False) -> tuple[list[float], float]:
    """Non-negative weights summing to 1, and their AUC, for ``sum_k w_k probs[k]`` on ``labels``.

    Coordinate search from equal weights: each round tries every member's share on a
    grid of ``steps + 1`` values (the others keep their proportions) and keeps the best.
    Equal weights are kept unless something beats them.
    """
    stacked = np.stack([np.asarray(p, np.float64) for p in probs])  # (K, N)
    k = stacked.shape[0]
    weights = np.full(k, 1.0 / k)
    best = auc(labels, weights @ stacked)
    for _ in tqdm(range(rounds), desc="fitting weights", unit="round", disable=not progress):
        for i in range(k):
            others = np.delete(weights, i)
            others = others / others.sum() if others.sum() > 0 else np.full(k - 1, 1.0 / (k - 1))
            for share in np.linspace(0.0, 1.0, steps + 1):
                candidate = np.insert(others * (1.0 - share), i, share)
                score = auc(labels, candidate @ stacked)
                if score > best + 1e-12:
                    best, weights = score, candidate
    return weights.tolist(), float(best)
