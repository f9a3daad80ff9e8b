import json

import pytest
import torch

from stream_kt.checkpoint import check_out_dir, load_checkpoint, save_checkpoint, save_ensemble
from stream_kt.data.split import Split, split_students
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.data.vocab import Vocabulary
from stream_kt.errors import CheckpointError
from stream_kt.models import build_model
from tests.conftest import save_tiny_checkpoint


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


def test_a_model_of_one_skill_an_answer_saves_the_config_it_had_before_skill_sets(saved, tmp_path):
    """Checkpoints trained before skill sets and questions still load: their config, hashed into the version,
    has none of the fields those added (at their off values), and a model with them says so."""
    _, path = saved
    config = json.loads((path / "config.json").read_text())["model_config"]
    assert set(config) == {"num_items", "embed_dim", "hidden_size", "num_layers", "dropout"}
    students = generate(SyntheticConfig(students=10, items=8, seed=0, max_skills=3))
    vocab = Vocabulary.build(students, "skill_id", skills="sets", questions=True)
    model = build_model("dkt", num_items=len(vocab), max_skills=vocab.max_skills, num_questions=len(vocab.questions))
    split = split_students([s.student_id for s in students], seed=0, test_fraction=0.2)
    save_checkpoint(tmp_path / "sets", model, vocab, split, {})
    config = json.loads((tmp_path / "sets" / "config.json").read_text())["model_config"]
    assert config["max_skills"] == 3 and config["num_questions"] == len(vocab.questions) > 0
    loaded = load_checkpoint(tmp_path / "sets")
    assert (loaded.model.input_width, loaded.model.reads_questions) == (3, True)


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


def test_an_ensemble_checkpoint_round_trips_and_names_its_members(tmp_path):
    members = [load_checkpoint(save_tiny_checkpoint(tmp_path / f"m{seed}", seed)) for seed in (1, 2)]
    saved = save_ensemble(tmp_path / "ensemble", members)
    loaded = load_checkpoint(tmp_path / "ensemble")
    assert loaded.version == saved.version and loaded.version.startswith("ensemble-")
    assert [m["version"] for m in loaded.metrics["members"]] == [m.version for m in members]
    assert loaded.train_config["ensemble_of"][1]["checkpoint"] == str(tmp_path / "m2")
    items, correct = torch.tensor([1, 2, 3]), torch.tensor([1, 0, 1])
    with torch.no_grad():
        got = loaded.model.step(loaded.model.initial_state(3), items, correct).mastery
        alone = [m.model.step(m.model.initial_state(3), items, correct).mastery for m in members]
    torch.testing.assert_close(got, (alone[0] + alone[1]) / 2, atol=1e-7, rtol=0)


def test_ensembles_of_mismatched_checkpoints_are_refused(tmp_path):
    a = load_checkpoint(save_tiny_checkpoint(tmp_path / "a", 1))
    other_vocab = load_checkpoint(save_tiny_checkpoint(tmp_path / "b", 2, num_items=14))
    with pytest.raises(CheckpointError, match="vocabulary differs"):
        save_ensemble(tmp_path / "e1", [a, other_vocab])
    other_test = load_checkpoint(save_tiny_checkpoint(tmp_path / "c", 3))
    other_test.split = Split(other_test.split.train, (), ("synthetic:9",), 3, "holdout")  # its held-out students differ
    with pytest.raises(CheckpointError, match="held out other students"):
        save_ensemble(tmp_path / "e2", [a, other_test])
    with pytest.raises(CheckpointError, match="at least two"):
        save_ensemble(tmp_path / "e3", [a])
    nested = load_checkpoint(
        save_ensemble(tmp_path / "e4", [a, load_checkpoint(save_tiny_checkpoint(tmp_path / "d", 4))]).path
    )
    with pytest.raises(CheckpointError, match="an ensemble already"):
        save_ensemble(tmp_path / "e5", [a, nested])


def test_a_checkpoint_goes_to_a_new_or_empty_directory_or_replaces_a_checkpoint(saved, tmp_path):
    _, checkpoint_dir = saved
    (tmp_path / "empty").mkdir()
    for fine in (tmp_path / "new" / "deeper", tmp_path / "empty", checkpoint_dir):
        assert check_out_dir(fine) == fine
    (tmp_path / "file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    refused = {
        tmp_path / "file": "exists and is not a directory",
        tmp_path / "file" / "ck": "is not a directory",
        tmp_path / "other": "a directory with other files and no checkpoint in it",
    }
    for path, message in refused.items():
        with pytest.raises(CheckpointError, match=message):
            check_out_dir(path)
