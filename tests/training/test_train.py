"""The training recipe: each model's own learning rate unless one is given."""

import pytest

from stream_kt.models import MODELS
from stream_kt.training.compare import parse_setup
from stream_kt.training.train import TrainConfig


def test_each_model_brings_its_own_learning_rate_unless_one_is_given():
    assert MODELS["bkt"].default_learning_rate == 0.05 and MODELS["dkt"].default_learning_rate == 1e-3
    assert TrainConfig(model="bkt").learning_rate == 0.05  # what a checkpoint records, and a refit reuses
    assert TrainConfig(model="dkt").learning_rate == 1e-3
    assert TrainConfig(model="bkt", learning_rate=0.01).learning_rate == 0.01
    assert all(cls.default_learning_rate > 0 for cls in MODELS.values())


@pytest.mark.parametrize(
    "given, expected",
    [
        ((), {"bkt": 0.05, "dkt": 1e-3}),
        (((None, 0.02),), {"bkt": 0.02, "dkt": 0.02}),
        ((("bkt", 0.1),), {"bkt": 0.1, "dkt": 1e-3}),
        (((None, 0.02), ("bkt", 0.1)), {"bkt": 0.1, "dkt": 0.02}),
    ],
)
def test_compare_takes_each_models_own_learning_rate_where_no_lr_names_it(given, expected):
    assert parse_setup("bkt,dkt", given, (), window=100).learning_rates == expected
