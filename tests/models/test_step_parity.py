"""The stream's one-step update reproduces the full-sequence forward, across the 100-step window."""

import numpy as np
import pytest
import torch

from stream_kt.backends import make_backend
from stream_kt.data.batches import make_batch


@pytest.mark.parametrize("length", [250])
def test_stepping_one_event_at_a_time_matches_the_full_sequence(model, length):
    rng = np.random.default_rng(1)
    items, correct = rng.integers(0, 12, length), rng.integers(0, 2, length)
    batch = make_batch([(items, correct)])
    with torch.no_grad():
        full = torch.sigmoid(model(batch))[0][batch.next_mask[0]].numpy()  # predictions for steps 1..n-1
        state = model.initial_state(1)
        stepped, masteries = [], []
        for t in range(length):
            out = model.step(state, torch.tensor([items[t]]), torch.tensor([correct[t]]))
            stepped.append(out.p_correct.item())
            masteries.append(out.mastery[0].numpy())
            state = out.state
    np.testing.assert_allclose(np.array(stepped[1:]), full, atol=1e-5)
    # the mastery vector after step t holds the prediction for step t+1's item
    np.testing.assert_allclose(np.array([masteries[t][items[t + 1]] for t in range(length - 1)]), full, atol=1e-5)


def test_fixed_shape_backend_pads_and_splits_without_changing_results(model):
    rng = np.random.default_rng(2)
    n = 11
    state = model.initial_state(n)
    backend = make_backend("eager", model, batch_size=4)  # 11 rows -> chunks of 4, 4, 3 (padded to 4)
    for _ in range(5):
        items = torch.from_numpy(rng.integers(0, 12, n))
        correct = torch.from_numpy(rng.integers(0, 2, n))
        with torch.no_grad():
            expected = model.step(state, items, correct)
        got = backend.step(state, items, correct)
        assert got.mastery.shape == (n, 12)
        np.testing.assert_allclose(got.mastery.numpy(), expected.mastery.numpy(), atol=1e-6)
        np.testing.assert_allclose(got.p_correct.numpy(), expected.p_correct.numpy(), atol=1e-6)
        state = got.state
