"""SAINT+'s time inputs: absent means zero, present flows through offline and streamed alike, never early."""

import numpy as np
import pytest
import torch

from stream_kt.backends import available_backends, make_backend
from stream_kt.data.batches import make_batch
from stream_kt.models import build_model

LENGTH = 130  # past the window of 100


def saint_plus():
    torch.manual_seed(0)
    return build_model("saint_plus", num_items=6, dim=16, heads=2, encoder_layers=1, decoder_layers=1).eval()


def data():
    rng = np.random.default_rng(0)
    items, correct = rng.integers(0, 6, LENGTH), rng.integers(0, 2, LENGTH)
    times = np.stack([rng.uniform(1, 60, LENGTH), rng.uniform(1, 3600, LENGTH)], 1).astype(np.float32)  # elapsed, lag
    return items, correct, times


def test_absent_times_equal_zero_times():
    model = saint_plus()
    items, correct, times = data()
    with torch.no_grad():
        untimed = model(make_batch([(items, correct)]))
        zero = model(make_batch([(items, correct, np.zeros_like(times))]))
    torch.testing.assert_close(untimed, zero, atol=1e-6, rtol=0)


def test_times_change_predictions_and_stream_like_the_offline_forward():
    model = saint_plus()
    items, correct, times = data()
    with torch.no_grad():
        timed = torch.sigmoid(model(make_batch([(items, correct, times)])))[0, :-1]
        untimed = torch.sigmoid(model(make_batch([(items, correct)])))[0, :-1]
        assert (timed - untimed).abs().max() > 1e-3
        state, streamed = model.initial_state(1), []
        for t in range(LENGTH):
            out = model.step(
                state, torch.tensor([items[t]]), torch.tensor([correct[t]]), torch.from_numpy(times[t : t + 1])
            )
            streamed.append(out.p_correct.item())
            state = out.state
    np.testing.assert_allclose(np.array(streamed[1:]), timed.numpy(), atol=1e-5)


def test_the_times_of_interaction_t_never_reach_a_prediction_before_t_plus_1():
    """Logit t predicts answer t+1 and may use times <= t; times of t must not move logits < t."""
    model = saint_plus()
    items, correct, times = data()
    t = 60
    changed = times.copy()
    changed[t] = [999.0, 99999.0]
    with torch.no_grad():
        before = model(make_batch([(items, correct, times)]))[0]
        after = model(make_batch([(items, correct, changed)]))[0]
    torch.testing.assert_close(before[:t], after[:t], atol=0, rtol=0)
    assert (before[t:] - after[t:]).abs().max() > 1e-4  # and they do reach the later ones


@pytest.mark.parametrize("name", available_backends())
def test_every_backend_passes_the_times_through(name):
    model = saint_plus()
    items, correct, times = data()
    backend = make_backend(name, model, batch_size=4)
    rows = 3  # fewer than B: the padding rows get zero times
    state_eager, state_backend = model.initial_state(rows), backend.initial_state(rows)
    with torch.no_grad():
        for t in range(5):
            step_items, step_correct = torch.tensor(items[t : t + rows]), torch.tensor(correct[t : t + rows])
            step_times = torch.from_numpy(times[t : t + rows])
            expected = model.step(state_eager, step_items, step_correct, step_times)
            got = backend.step(state_backend, step_items, step_correct, step_times)
            torch.testing.assert_close(got.p_correct, expected.p_correct, atol=1e-5, rtol=0)
            state_eager, state_backend = expected.state, got.state
    assert (state_backend["previous_times"] == torch.from_numpy(times[4 : 4 + rows])).all()
