"""Streamed predictions through the step backend equal the offline forward, past the 100 window."""

import json
import subprocess
import sys

import pytest
import torch

from stream_kt.checkpoint import save_checkpoint
from stream_kt.data.readers import write_3line
from stream_kt.data.split import Split
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.data.vocab import Vocabulary
from stream_kt.models import build_model
from stream_kt.models.base import StepOutput
from stream_kt.training.parity import parity_max_abs_diff
from tests.models.conftest import SLOW_MODELS

SMALL = {
    "dkt": {"embed_dim": 8, "hidden_size": 8},
    "sakt": {"dim": 8, "heads": 2},
    "bkt": {},
    "saint_plus": {
        "dim": 8,
        "heads": 2,
        "encoder_layers": 1,
        "decoder_layers": 1,
    },  # the synthetic students have timestamps: lags flow
    "ensemble": {
        "members": ({"model": "dkt", "embed_dim": 8, "hidden_size": 8}, {"model": "sakt", "dim": 8, "heads": 2})
    },
}


@pytest.fixture(scope="module")
def students():
    # lengths up to 160: several students cross the attention window of 100
    return generate(SyntheticConfig(students=12, items=10, min_length=1, max_length=160, seed=3))


def small_model(name, vocab):
    torch.manual_seed(0)
    return build_model(name, num_items=len(vocab), **SMALL[name]).eval()


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODELS else name for name in sorted(SMALL)]
)
def test_streamed_equals_offline(name, students):
    vocab = Vocabulary.build(students, "skill_id")
    model = small_model(name, vocab)
    encoded = [vocab.encode(s) for s in students]
    assert all(s.times is not None and s.times[1:, 1].all() for s in encoded if len(s) > 1)
    assert parity_max_abs_diff(model, encoded, batch_size=5) < 1e-5


def test_a_step_that_disagrees_is_caught(students, monkeypatch):
    vocab = Vocabulary.build(students, "skill_id")
    model = small_model("bkt", vocab)  # serves through the generic wrapper of model.step
    honest = model.step

    def off_by_a_little(state, items, correct, times=None):
        out = honest(state, items, correct, times)
        return StepOutput(out.p_correct * 0.99, out.state, out.mastery)

    monkeypatch.setattr(model, "step", off_by_a_little)
    assert parity_max_abs_diff(model, [vocab.encode(s) for s in students]) > 1e-3


def test_evaluate_parity_flag_reports_the_difference(tmp_path, students):
    vocab = Vocabulary.build(students, "skill_id")
    save_checkpoint(tmp_path / "ck", small_model("sakt", vocab), vocab, Split((), (), (), 0, "holdout"), {})
    write_3line(students, tmp_path / "test.txt")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_kt.cli",
            "evaluate",
            "--checkpoint",
            tmp_path / "ck",
            "--test-data",
            tmp_path / "test.txt",
            "--parity",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["model"] == "sakt" and 0 <= metrics["parity_max_abs_diff"] < 1e-5
