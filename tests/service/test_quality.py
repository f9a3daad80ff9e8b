"""Online quality (``quality.py``): binned counts against the exact metrics; pure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_kt.prediction_metrics import auc, binary_metrics
from stream_kt.service.quality import RecentScores, Scores, finite


def realistic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores spread like a KT model's (mostly 0.5-0.9) with answers drawn from them, as float32 like p_correct."""
    rng = np.random.default_rng(seed)
    p = rng.beta(4, 2, n).astype(np.float32)
    return p, (rng.random(n) < p).astype(np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binned_auc_is_within_its_bound_of_the_exact_auc_and_the_bound_is_small(seed):
    p, y = realistic(200_000, seed)
    scores = Scores.of(p, y)
    binned, bound = scores.auc()
    exact = auc(y, p)
    assert abs(binned - exact) <= bound + 1e-12
    assert bound <= 0.001  # what the docs promise for such scores (measured: about 1e-4)


def test_the_other_metrics_equal_the_offline_ones():
    p, y = realistic(50_000, 3)
    summary = Scores.of(p, y).summary()
    offline = binary_metrics(y, p)
    assert summary["count"] == 50_000
    assert summary["logloss"] == pytest.approx(offline["logloss"], rel=1e-9)
    assert summary["rmse"] == pytest.approx(offline["rmse"], rel=1e-9)
    assert summary["accuracy"] == pytest.approx(offline["acc"], rel=1e-12)
    calibration = summary["calibration"]
    assert sum(c["count"] for c in calibration) == 50_000
    for c in calibration:
        if c["count"]:
            low, high = (float(x) for x in c["bin"].split("-"))
            inside = (p >= low) & (p < high) if high < 1 else p >= low
            assert c["count"] == inside.sum() and c["mean_p"] == pytest.approx(
                float(p[inside].astype(np.float64).mean()), rel=1e-9
            )
            assert c["observed"] == pytest.approx(y[inside].mean())


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 400), st.integers(0, 400))
def test_counts_add_up_in_any_split_and_survive_a_redis_hash(seed, first, second):
    p, y = realistic(first + second, seed)
    whole = Scores.of(p, y)
    parts = Scores.of(p[:first], y[:first])
    parts.merge(Scores.of(p[first:], y[first:]))
    fields = {
        name.encode(): str(value).encode() for name, value in parts.to_fields().items()
    }  # as HGETALL returns them
    again = Scores.from_fields(fields)
    for scores in (parts, again):
        assert (
            (scores.correct == whole.correct).all()
            and (scores.wrong == whole.wrong).all()
            and scores.hits == whole.hits
        )
        assert scores.log_loss_sum == pytest.approx(
            whole.log_loss_sum, rel=1e-9
        ) and scores.squared_error_sum == pytest.approx(whole.squared_error_sum, rel=1e-9)


def test_one_class_only_has_no_auc_and_json_says_null():
    summary = Scores.of(np.array([0.2, 0.9], np.float32), np.array([1, 1])).summary()
    assert math.isnan(summary["auc"]) and finite(summary)["auc"] is None and summary["accuracy"] == 0.5


def test_the_recent_window_holds_exactly_the_last_answers():
    recent = RecentScores(1000)
    p, y = realistic(2500, 4)
    for start in range(0, 2500, 300):
        recent.add(p[start : start + 300], y[start : start + 300])
    expected = binary_metrics(y[-1000:], p[-1000:])
    summary = recent.summary()
    assert (
        summary["count"] == 1000
        and summary["auc"] == pytest.approx(expected["auc"])
        and summary["logloss"] == pytest.approx(expected["logloss"])
    )
