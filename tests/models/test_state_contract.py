"""The serving contract: what the stream stores and stacks must be float32, batch-first rows."""

import torch

from stream_kt.models import MODELS
from tests.models.conftest import NUM_ITEMS, SMALL_OPTIONS


def test_every_registered_model_has_small_test_options():
    assert set(SMALL_OPTIONS) == set(MODELS)


def test_state_is_float32_batch_first_and_keeps_its_shape(model):
    state = model.initial_state(3)
    shapes = {k: v.shape for k, v in state.items()}
    for _ in range(3):
        for name, tensor in state.items():
            assert tensor.dtype == torch.float32, name
            assert tensor.shape[0] == 3 and tensor.shape == shapes[name], name
        with torch.no_grad():
            out = model.step(state, torch.tensor([0, 5, NUM_ITEMS - 1]), torch.tensor([1, 0, 1]))
        assert out.p_correct.shape == (3,) and out.mastery.shape == (3, NUM_ITEMS)
        assert ((out.mastery >= 0) & (out.mastery <= 1)).all()
        assert out.state.keys() == state.keys()
        state = out.state


def test_rows_are_independent(model):
    """A student's row gives the same answer alone or stacked with others (the stream batches anyone)."""
    with torch.no_grad():
        both = model.step(model.initial_state(2), torch.tensor([3, 7]), torch.tensor([1, 0]))
        alone = model.step(model.initial_state(1), torch.tensor([7]), torch.tensor([0]))
    torch.testing.assert_close(both.mastery[1:], alone.mastery, atol=1e-6, rtol=0)
    for name in both.state:
        torch.testing.assert_close(both.state[name][1:], alone.state[name], atol=1e-6, rtol=0)
