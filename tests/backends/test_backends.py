"""Every backend matches eager within 1e-4, at any row count, without recompiling."""

import numpy as np
import pytest
import torch

from stream_kt.backends import available_backends, make_backend
from stream_kt.backends.compiled import NeuronBackend
from stream_kt.errors import ConfigError
from tests.models.conftest import NUM_ITEMS, every_model, small_model

BATCH = 8
ROW_COUNTS = [1, 5, BATCH, BATCH + 3, 3 * BATCH]  # below, at and above B


@pytest.fixture(params=every_model())
def model(request):
    return small_model(request.param)


def run_steps(backend, model, rows, steps=4, seed=0):
    rng = np.random.default_rng(seed)
    state = model.initial_state(rows)
    outputs = []
    for _ in range(steps):
        items = torch.from_numpy(rng.integers(0, NUM_ITEMS, rows))
        correct = torch.from_numpy(rng.integers(0, 2, rows))
        out = backend.step(state, items, correct)
        outputs.append(out)
        state = out.state
    return outputs


@pytest.mark.parametrize("name", [b for b in available_backends() if b != "eager"])
@pytest.mark.parametrize("rows", ROW_COUNTS)
def test_backend_matches_eager(model, name, rows):
    eager = make_backend("eager", model, BATCH)
    compiled = make_backend(name, model, BATCH)
    for expected, got in zip(run_steps(eager, model, rows), run_steps(compiled, model, rows)):
        assert got.mastery.shape == (rows, NUM_ITEMS)
        np.testing.assert_allclose(got.p_correct.numpy(), expected.p_correct.numpy(), atol=1e-4)
        np.testing.assert_allclose(got.mastery.numpy(), expected.mastery.numpy(), atol=1e-4)
        for key in expected.state:
            np.testing.assert_allclose(got.state[key].numpy(), expected.state[key].numpy(), atol=1e-4)


@pytest.mark.skipif(
    "cuda" not in available_backends(),
    reason="no CUDA GPU here; tests/backends/test_device_check.py and test_staged.py run its code path on the CPU",
)
@pytest.mark.parametrize("mastery_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows", ROW_COUNTS)
def test_cuda_backend_matches_eager_across_the_window(model, rows, mastery_dtype):
    """150 steps: past the attention models' 100-event window, every step one graph replay."""
    eager = make_backend("eager", model, BATCH)
    cuda = make_backend("cuda", model, BATCH, mastery_dtype=mastery_dtype)
    mastery_atol = 1e-4 if mastery_dtype == torch.float32 else 1e-3  # float16 keeps 11 significant bits
    for expected, got in zip(
        run_steps(eager, model, rows, steps=150), run_steps(cuda, model, rows, steps=150), strict=True
    ):
        assert (
            got.mastery.device.type == "cpu"
            and got.mastery.dtype == mastery_dtype
            and got.mastery.shape == (rows, NUM_ITEMS)
        )
        np.testing.assert_allclose(got.p_correct.numpy(), expected.p_correct.numpy(), atol=1e-4)
        np.testing.assert_allclose(got.mastery.float().numpy(), expected.mastery.numpy(), atol=mastery_atol)
        for key in expected.state:
            np.testing.assert_allclose(got.state[key].numpy(), expected.state[key].numpy(), atol=1e-4)


def test_eager_backend_matches_the_models_own_step(model):
    """The eager backend runs model.inference_module (DKT: folded input gates): hold it to model.step."""
    backend = make_backend("eager", model, BATCH)
    rng = np.random.default_rng(3)
    state = model.initial_state(BATCH + 2)
    for _ in range(4):
        items = torch.from_numpy(rng.integers(0, NUM_ITEMS, BATCH + 2))
        correct = torch.from_numpy(rng.integers(0, 2, BATCH + 2))
        with torch.no_grad():
            expected = model.step(state, items, correct)
        got = backend.step(state, items, correct)
        np.testing.assert_allclose(got.mastery.numpy(), expected.mastery.numpy(), atol=1e-5)
        np.testing.assert_allclose(got.p_correct.numpy(), expected.p_correct.numpy(), atol=1e-5)
        state = got.state


def test_dkt_on_the_cpu_backend_packs_its_weights_and_matches_the_models_own_step_over_a_window():
    """DKT's CPU step (oneDNN-packed weights, one sigmoid for all gates) against model.step: 120 steps, 1e-5."""
    model = small_model("dkt")
    backend = make_backend("cpu", model, BATCH)
    assert backend.module.packed is not None  # the packed path is the one under test
    rng = np.random.default_rng(5)
    rows = BATCH + 3
    state = expected_state = model.initial_state(rows)
    for _ in range(120):
        items = torch.from_numpy(rng.integers(0, NUM_ITEMS, rows))
        correct = torch.from_numpy(rng.integers(0, 2, rows))
        with torch.no_grad():
            expected = model.step(expected_state, items, correct)
        got = backend.step(state, items, correct)
        np.testing.assert_allclose(got.p_correct.numpy(), expected.p_correct.numpy(), atol=1e-5)
        np.testing.assert_allclose(got.mastery.numpy(), expected.mastery.numpy(), atol=1e-5)
        for key in expected.state:
            np.testing.assert_allclose(got.state[key].numpy(), expected.state[key].numpy(), atol=1e-5)
        state, expected_state = got.state, expected.state


class ShapeCheckingTracer:
    """Stands in for torch_neuronx.trace: same code path, minus the Neuron compiler.

    Like a Neuron graph, the returned callable refuses any shape but the traced one."""

    def __init__(self):
        self.traces = 0
        self.calls = 0

    def __call__(self, module, example_inputs):
        self.traces += 1
        shapes = [t.shape for t in example_inputs]

        def run(*inputs):
            assert [t.shape for t in inputs] == shapes, "a compiled Neuron graph accepts only its traced shape"
            self.calls += 1
            return module(*inputs)

        return run


def test_neuron_backend_feeds_only_the_traced_shape(model, monkeypatch):
    tracer = ShapeCheckingTracer()
    monkeypatch.setattr(NeuronBackend, "tracer", tracer)
    neuron = NeuronBackend(model, BATCH)
    eager = make_backend("eager", model, BATCH)
    for rows in ROW_COUNTS:
        for expected, got in zip(run_steps(eager, model, rows), run_steps(neuron, model, rows)):
            np.testing.assert_allclose(got.mastery.numpy(), expected.mastery.numpy(), atol=1e-6)
    assert tracer.traces == 1  # traced once, never per call
    assert tracer.calls == 4 * sum(
        -(-rows // BATCH) for rows in ROW_COUNTS
    )  # ceil(rows / B) fixed-shape calls per step


def test_missing_runtime_is_one_clear_error(model):
    if "neuron" not in available_backends():
        with pytest.raises(ConfigError, match="torch-neuronx"):
            make_backend("neuron", model, BATCH)
    if "cuda" not in available_backends():
        with pytest.raises(ConfigError, match="CUDA"):
            make_backend("cuda", model, BATCH)
    with pytest.raises(ConfigError, match="unknown backend"):
        make_backend("tpu", model, BATCH)


def test_auto_picks_the_best_available_backend(model):
    assert make_backend("auto", model, BATCH).name in ("neuron", "cuda", "cpu")
