"""The CUDA backend's staging (one buffer in, one buffer out), run on the CPU against eager."""

import numpy as np
import pytest
import torch

from stream_kt.backends import make_backend
from stream_kt.backends.staged import ALIGN_BYTES, Layout, StagedBackend
from stream_kt.errors import ConfigError
from tests.backends.test_backends import BATCH, ROW_COUNTS, run_steps
from tests.models.conftest import NUM_ITEMS, every_model, small_model


@pytest.fixture(params=every_model())
def model(request):
    return small_model(request.param)


def assert_outputs_match(got, expected, atol):
    np.testing.assert_allclose(got.p_correct.numpy(), expected.p_correct.numpy(), atol=atol)
    np.testing.assert_allclose(got.mastery.float().numpy(), expected.mastery.numpy(), atol=atol)
    assert set(got.state) == set(expected.state)
    for key in expected.state:
        np.testing.assert_allclose(got.state[key].numpy(), expected.state[key].numpy(), atol=atol)


@pytest.mark.parametrize("rows", ROW_COUNTS)
def test_staged_step_matches_eager(model, rows):
    eager = make_backend("eager", model, BATCH)
    staged = StagedBackend(model, BATCH, "cpu")
    for expected, got in zip(run_steps(eager, model, rows), run_steps(staged, model, rows)):
        assert got.mastery.shape == (rows, NUM_ITEMS) and got.mastery.dtype == torch.float32
        assert_outputs_match(got, expected, atol=1e-5)


def test_one_staged_backend_serves_changing_row_counts(model):
    """Fewer rows after more: the rows a bigger call staged are the blank student again, and results stay eager's."""
    eager = make_backend("eager", model, BATCH)
    staged = StagedBackend(model, BATCH, "cpu")
    rng = np.random.default_rng(5)
    for rows in (3 * BATCH, BATCH, 3, 1, BATCH + 3, 5):
        state = model.initial_state(rows)
        for _ in range(2):
            items = torch.from_numpy(rng.integers(0, NUM_ITEMS, rows))
            correct = torch.from_numpy(rng.integers(0, 2, rows))
            expected, got = eager.step(state, items, correct), staged.step(state, items, correct)
            assert_outputs_match(got, expected, atol=1e-5)
            state = got.state
        padded = rows % BATCH
        if padded:  # the last chunk had B - padded blank rows
            blank = model.initial_state(1)
            for name, view in staged.inputs.views(staged.host_inputs).items():
                expected_blank = (
                    blank[name.removeprefix("state.")]
                    if name.startswith("state.")
                    else torch.zeros(1, *view.shape[1:], dtype=view.dtype)
                )
                torch.testing.assert_close(
                    view[padded:], expected_blank.to(view.dtype).expand_as(view[padded:]), atol=0, rtol=0
                )


def test_outputs_are_not_overwritten_by_the_next_step(model):
    staged = StagedBackend(model, BATCH, "cpu")
    first, second = run_steps(staged, model, 5, steps=2)
    again = run_steps(StagedBackend(model, BATCH, "cpu"), model, 5, steps=1)[0]
    assert_outputs_match(first, again, atol=0)  # still the first step's numbers after the second ran
    assert not torch.equal(first.mastery, second.mastery)


def test_float16_mastery_on_request(model):
    eager = make_backend("eager", model, BATCH)
    for backend in (
        StagedBackend(model, BATCH, "cpu", mastery_dtype=torch.float16),
        make_backend("cpu", model, BATCH, mastery_dtype=torch.float16),
    ):
        for expected, got in zip(run_steps(eager, model, BATCH + 3), run_steps(backend, model, BATCH + 3)):
            assert got.mastery.dtype == torch.float16 and got.p_correct.dtype == torch.float32
            np.testing.assert_allclose(
                got.mastery.float().numpy(), expected.mastery.numpy(), atol=1e-3
            )  # float16: 11 bits
            for key in expected.state:
                np.testing.assert_allclose(got.state[key].numpy(), expected.state[key].numpy(), atol=1e-4)


def test_other_mastery_dtypes_are_refused(model):
    with pytest.raises(ConfigError, match="float32 or float16"):
        make_backend("eager", model, BATCH, mastery_dtype=torch.bfloat16)


def test_layout_packs_aligned_fields_without_overlap():
    layout = Layout(5, [("a", torch.float32, (3,)), ("b", torch.long, ()), ("c", torch.float16, (2, 7))])
    spans = [(f.offset, f.offset + f.nbytes(5)) for f in layout.fields]
    assert [f.offset % ALIGN_BYTES for f in layout.fields] == [0, 0, 0]
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert layout.nbytes >= spans[-1][1]
    buffer = layout.empty("cpu")
    views = layout.views(buffer)
    assert {k: (tuple(v.shape), v.dtype) for k, v in views.items()} == {
        "a": ((5, 3), torch.float32),
        "b": ((5,), torch.long),
        "c": ((5, 2, 7), torch.float16),
    }
    views["a"].copy_(torch.arange(15.0).view(5, 3))
    views["b"].copy_(torch.arange(5) - 2)
    views["c"].fill_(0.5)
    again = layout.views(buffer.clone())  # the values live in the one buffer
    assert torch.equal(again["a"], torch.arange(15.0).view(5, 3)) and torch.equal(again["b"], torch.arange(5) - 2)
    assert bool((again["c"] == 0.5).all())
