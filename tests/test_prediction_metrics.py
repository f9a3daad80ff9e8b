import numpy as np
import pytest

from stream_kt.prediction_metrics import auc, binary_metrics


def brute_force_auc(labels, probs):
    pos = [p for p, l in zip(probs, labels) if l]
    neg = [p for p, l in zip(probs, labels) if not l]
    return np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg])


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    probs = rng.integers(0, 10, 200) / 10  # many ties
    assert auc(labels, probs) == pytest.approx(brute_force_auc(labels, probs), abs=1e-12)


def test_metrics_values():
    m = binary_metrics(np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.6]))
    assert m["auc"] == pytest.approx(0.75)
    assert m["acc"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(np.sqrt((0.01 + 0.04 + 0.36 + 0.36) / 4))
    assert m["n"] == 4
    assert np.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))
