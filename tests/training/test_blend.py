"""Ensemble weights: fitted for validation AUC, never worse than equal weights."""

import numpy as np

from stream_kt.prediction_metrics import auc
from stream_kt.training.blend import fit_weights


def test_weight_moves_to_the_member_that_ranks_better():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    informed = np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.2, 2000), 0.01, 0.99)
    noise = rng.random(2000)
    weights, score = fit_weights([noise, informed], labels)
    assert weights[1] > 0.8 and abs(sum(weights) - 1) < 1e-12
    assert score == auc(labels, weights[0] * noise + weights[1] * informed) > auc(labels, (noise + informed) / 2)


def test_equal_weights_stay_when_nothing_beats_them():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    p = rng.random(500)
    weights, score = fit_weights([p, p, p], labels)
    assert weights == [1 / 3] * 3 and score == auc(labels, p)
