"""SAINT+'s optional time inputs: absent means zero, present flows through offline and streamed alike."""

import numpy as np
import torch

from stream_kt.data.batches import make_batch
from stream_kt.models import build_model

LENGTH = 130  # past the window of 100


def saint_plus():
    torch.manual_seed(0)
    return build_model("saint_plus", num_items=6, dim=16, heads=2, encoder_layers=1, decoder_layers=1).eval()


def data():
    rng = np.random.default_rng(0)
    items, correct = rng.integers(0, 6, LENGTH), rng.integers(0, 2, LENGTH)
    elapsed, lag = rng.uniform(1, 60, LENGTH), rng.uniform(1, 3600, LENGTH)
    return items, correct, torch.tensor(elapsed, dtype=torch.float32), torch.tensor(lag, dtype=torch.float32)


def test_absent_times_equal_zero_times():
    model = saint_plus()
    items, correct, _, _ = data()
    batch = make_batch([(items, correct)])
    zeros = torch.zeros(1, LENGTH)
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(batch, elapsed_s=zeros, lag_s=zeros), atol=1e-6, rtol=0)


def test_times_change_predictions_and_stream_like_the_offline_forward():
    model = saint_plus()
    items, correct, elapsed, lag = data()
    batch = make_batch([(items, correct)])
    with torch.no_grad():
        timed = torch.sigmoid(model(batch, elapsed_s=elapsed.view(1, -1), lag_s=lag.view(1, -1)))[0, :-1]
        untimed = torch.sigmoid(model(batch))[0, :-1]
        assert (timed - untimed).abs().max() > 1e-3
        state, streamed = model.initial_state(1), []
        for t in range(LENGTH):
            out = model.step(state, torch.tensor([items[t]]), torch.tensor([correct[t]]), elapsed_s=elapsed[t : t + 1], lag_s=lag[t : t + 1])
            streamed.append(out.p_correct.item())
            state = out.state
    np.testing.assert_allclose(np.array(streamed[1:]), timed.numpy(), atol=1e-5)
