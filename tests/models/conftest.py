import numpy as np
import pytest
import torch

from stream_kt.models import MODELS, build_model

NUM_ITEMS = 12

# small, fast versions of each model; the attention models keep their default window of
# 100 so the step-parity test (250 steps) crosses it
SMALL_OPTIONS = {
    "bkt": {},
    "dkt": {"embed_dim": 16, "hidden_size": 24},
    "dkt_plus": {"embed_dim": 16, "hidden_size": 24},
    # a recurrent, a windowed-attention and a windowless member: their states side by side
    "ensemble": {"members": ({"model": "dkt", "embed_dim": 16, "hidden_size": 24}, {"model": "lastquery", "dim": 16, "heads": 2, "hidden_size": 24}, {"model": "bkt"})},
    "lastquery": {"dim": 16, "heads": 2, "hidden_size": 24},
    "saint": {"dim": 16, "heads": 2},
    "saint_plus": {"dim": 16, "heads": 2},
    "sakt": {"dim": 16, "heads": 2},
}


def small_options(name: str) -> dict:
    """Small config overrides per model (models not listed use their defaults)."""
    return SMALL_OPTIONS.get(name, {})


@pytest.fixture(params=sorted(MODELS))
def model(request):
    """Every registered model, small and randomly initialised, in eval mode."""
    torch.manual_seed(0)
    return build_model(request.param, num_items=NUM_ITEMS, **small_options(request.param)).eval()


@pytest.fixture
def sequences():
    rng = np.random.default_rng(0)
    return [(rng.integers(0, NUM_ITEMS, n), rng.integers(0, 2, n)) for n in (7, 30, 3, 18)]
