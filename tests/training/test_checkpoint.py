import json

import numpy as np
import pytest
import torch

from stream_kt.data.split import split_students
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.data.vocab import Vocabulary
from stream_kt.errors import CheckpointError
from stream_kt.models import build_model
from stream_kt.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def saved(tmp_path):
    students = generate(SyntheticConfig(students=10, items=8, seed=0))
    vocab = Vocabulary.build(students, "skill_id")
    torch.manual_seed(0)
    model = build_model("dkt", num_items=len(vocab), hidden_size=16, embed_dim=8).eval()
    split = split_students([s.student_id for s in students], seed=0, test_fraction=0.2)
    return save_checkpoint(tmp_path / "ck", model, vocab, split, {"epochs": 1}), tmp_path / "ck"


def test_round_trip_keeps_model_vocab_split_and_version(saved):
    checkpoint, path = saved
    loaded = load_checkpoint(path)
    assert loaded.version == checkpoint.version and loaded.version.startswith("dkt-")
    assert loaded.vocab.ids == checkpoint.vocab.ids
    assert loaded.split == checkpoint.split
    items, correct = torch.tensor([1, 2, 3]), torch.tensor([1, 0, 1])
    with torch.no_grad():
        a = checkpoint.model.step(checkpoint.model.initial_state(3), items, correct).mastery
        b = loaded.model.step(loaded.model.initial_state(3), items, correct).mastery
    assert torch.equal(a, b)


def test_changed_weights_are_detected(saved):
    checkpoint, path = saved
    state = checkpoint.model.state_dict()
    state["out.bias"] = state["out.bias"] + 1
    torch.save(state, path / "weights.pt")
    with pytest.raises(CheckpointError, match="does not match the recorded version"):
        load_checkpoint(path)


def test_other_format_version_and_missing_files_are_refused(saved, tmp_path):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="checkpoint format 99"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope")
