import copy
import functools

import numpy as np
import pytest
import torch

from stream_kt.data.vocab import EncodedSequence
from stream_kt.models import MODELS, KTModel, build_model
from stream_kt.training.fitters import fitter_of

NUM_ITEMS = 12

# small, fast versions of each model; the attention models keep their default window of
# 100 so the step-parity test (250 steps) crosses it
SMALL_OPTIONS = {
    "bkt": {},
    "dkt": {"embed_dim": 16, "hidden_size": 24},
    "dkt_plus": {"embed_dim": 16, "hidden_size": 24},
    # a recurrent, a windowed-attention and a windowless member: their states side by side
    "ensemble": {
        "members": (
            {"model": "dkt", "embed_dim": 16, "hidden_size": 24},
            {"model": "lastquery", "dim": 16, "heads": 2, "hidden_size": 24},
            {"model": "bkt"},
        )
    },
    "gbdt": {
        "num_leaves": 7,
        "max_rounds": 30,
        "min_data_in_leaf": 20,
        "folds": 3,
        "context": 3,
        "transfer_steps": 40,
    },  # fitted: see small_model
    "lastquery": {"dim": 16, "heads": 2, "hidden_size": 24},
    "saint": {"dim": 16, "heads": 2},
    "saint_plus": {"dim": 16, "heads": 2},
    "sakt": {"dim": 16, "heads": 2},
}


def small_options(name: str) -> dict:
    """Small config overrides per model (models not listed use their defaults)."""
    return SMALL_OPTIONS.get(name, {})


def learnable_students(n: int, length: int, seed: int) -> list[EncodedSequence]:
    """Students whose answers depend on ability, item difficulty, practice and their previous answer."""
    rng = np.random.default_rng(seed)
    difficulty = np.linspace(-1.5, 1.5, NUM_ITEMS)
    students = []
    for s in range(n):
        ability, previous = rng.normal(), 0
        items = rng.integers(0, NUM_ITEMS, length)
        correct = np.zeros(length, np.int64)
        for t, item in enumerate(items):
            logit = ability - difficulty[item] + 0.15 * np.sum(items[:t] == item) + 0.8 * (2 * previous - 1)
            correct[t] = previous = int(rng.random() < 1 / (1 + np.exp(-logit)))
        students.append(EncodedSequence(f"s{seed}:{s}", items, correct))
    return students


@functools.cache
def _fitted(name: str) -> KTModel:
    model = build_model(name, num_items=NUM_ITEMS, **small_options(name))
    model, _ = fitter_of(model)(model, learnable_students(240, 40, 0), learnable_students(60, 40, 1), progress=False)
    return model


def small_model(name: str) -> KTModel:
    """A small ``name`` in eval mode: randomly initialised, or fitted on learnable students if
    it fits its own way (gbdt)."""
    torch.manual_seed(0)
    model = build_model(name, num_items=NUM_ITEMS, **small_options(name))
    if not model.fitted_by_gradient:  # an unfitted gbdt predicts 0.5 everywhere and would prove nothing
        model = copy.deepcopy(_fitted(name))
    return model.eval()


# SAINT and SAINT+ re-run an encoder and a decoder over the whole window at every step: their step
# and backend checks take tens of seconds where the other models take one
SLOW_MODELS = ("saint", "saint_plus")


def every_model() -> list:
    """Every registered model's name as a fixture parameter, the slow ones marked slow."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODELS else name for name in sorted(MODELS)]


@pytest.fixture(params=every_model())
def model(request):
    """Every registered model, small, in eval mode."""
    return small_model(request.param)


@pytest.fixture
def sequences():
    rng = np.random.default_rng(0)
    return [(rng.integers(0, NUM_ITEMS, n), rng.integers(0, 2, n)) for n in (7, 30, 3, 18)]
