"""The offline CLI end to end: real files, a real (small) training run, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_kt.checkpoint import load_checkpoint
from stream_kt.prediction_metrics import binary_metrics
from stream_kt.training.evaluate import predict_sequences
from stream_kt.training.prepare import load_students

FIXTURES = Path(__file__).parent.parent / "fixtures"
FAST = ("--epochs", 4, "--hidden-size", 32, "--batch-size", 16, "--lr", 0.005)  # a small model, enough steps to learn


def run_cli(*args, check=False):
    result = subprocess.run(
        [sys.executable, "-m", "stream_kt.cli", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    if check and result.returncode:
        raise AssertionError(result.stderr)
    return result


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory):
    """300 training and 100 held-out simulated students of one item bank (one seed)."""
    root = tmp_path_factory.mktemp("synthetic")
    run_cli("synth", "--out", root / "all.txt", "--students", 400, "--seed", 1, check=True)
    lines = (root / "all.txt").read_text().splitlines(keepends=True)
    (root / "train.txt").write_text("".join(lines[: 300 * 3]))
    (root / "test.txt").write_text("".join(lines[300 * 3 :]))
    return root / "train.txt", root / "test.txt"


def train_and_evaluate(tmp_path, train, test, *extra):
    out = tmp_path / "ck"
    run_cli("train", "--data", train, "--test-data", test, *FAST, "--out", out, *extra, check=True)
    result = run_cli("evaluate", "--checkpoint", out, "--test-data", test, "--json", check=True)
    return out, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_then_evaluate_learns_and_reports_json(tmp_path, synthetic_files):
    out, metrics = train_and_evaluate(tmp_path, *synthetic_files)
    assert {"auc", "acc", "rmse", "n", "model"} <= metrics.keys()
    assert metrics["model"] == "dkt"
    assert metrics["auc"] > 0.65  # simulated students are predictable
    # every answer but each student's first is scored
    lines = Path(synthetic_files[1]).read_text().splitlines()
    assert metrics["n"] == sum(int(n) - 1 for n in lines[0::3])
    for name in ("config.json", "weights.pt", "vocab.json", "split.json", "metrics.json", "learning_curves.png"):
        assert (out / name).is_file()
    split = json.loads((out / "split.json").read_text())
    assert split["test"] == [] and split["test_source"] == "file:test.txt"
    assert not set(split["train"]) & set(split["valid"])


@pytest.mark.slow
def test_an_ensemble_of_trained_checkpoints_scores_and_streams_their_mean(tmp_path, synthetic_files):
    train, test = synthetic_files
    members = [train_and_evaluate(tmp_path / f"seed{seed}", train, test, "--seed", seed)[0] for seed in (0, 1)]
    run_cli("ensemble", "--out", tmp_path / "ensemble", *members, check=True)
    result = run_cli(
        "evaluate", "--checkpoint", tmp_path / "ensemble", "--test-data", test, "--parity", "--json", check=True
    )
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["model"] == "ensemble" and metrics["parity_max_abs_diff"] < 1e-5
    # its score is the score of the members' mean probability, answer by answer
    loaded = [load_checkpoint(path) for path in members]
    encoded = [loaded[0].vocab.encode(s) for s in load_students(test)]
    (labels, p0), (_, p1) = (predict_sequences(c.model, encoded) for c in loaded)
    assert metrics["auc"] == pytest.approx(binary_metrics(labels, (p0 + p1) / 2)["auc"], abs=1e-6)
    assert metrics["auc"] > 0.65 and not np.allclose(p0, p1)
    assert [m["version"] for m in metrics["members"]] == [c.version for c in loaded]


def weighted_dkt_and_gbdt(tmp_path, train, test):
    """A DKT and a gbdt checkpoint, and their ensemble (tmp_path / "weighted") with weights fitted on validation."""
    dkt = train_and_evaluate(tmp_path / "dkt", train, test)[0]
    gbdt = tmp_path / "gbdt"
    run_cli("train", "--data", train, "--test-data", test, "--model", "gbdt", "--out", gbdt, check=True)
    run_cli("ensemble", "--out", tmp_path / "weighted", dkt, gbdt, "--fit-weights", train, check=True)
    return dkt, gbdt


@pytest.mark.slow
def test_ensemble_weights_fitted_on_the_shared_validation_students(tmp_path, synthetic_files):
    train, test = synthetic_files
    dkt, gbdt = weighted_dkt_and_gbdt(tmp_path, train, test)
    metrics = json.loads((tmp_path / "weighted" / "metrics.json").read_text())
    weights = [m["weight"] for m in metrics["members"]]
    fitted = metrics["weights_fitted_on_validation"]
    assert sum(weights) == pytest.approx(1.0) and min(weights) >= 0
    assert fitted["valid_auc"] >= fitted["valid_auc_equal"] and fitted["students"] == 30  # 10% of 300 training students
    result = run_cli(
        "evaluate", "--checkpoint", tmp_path / "weighted", "--test-data", test, "--parity", "--json", check=True
    )
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert scored["parity_max_abs_diff"] < 1e-5
    # the served score is the score of the weighted mean, answer by answer
    loaded = [load_checkpoint(path) for path in (dkt, gbdt)]
    encoded = [loaded[0].vocab.encode(s) for s in load_students(test)]
    (labels, p0), (_, p1) = (predict_sequences(c.model, encoded) for c in loaded)
    assert scored["auc"] == pytest.approx(binary_metrics(labels, weights[0] * p0 + weights[1] * p1)["auc"], abs=1e-6)
    # members validated on other students cannot have weights fitted on them
    other = train_and_evaluate(tmp_path / "seed1", train, test, "--seed", 1)[0]
    refused = run_cli("ensemble", "--out", tmp_path / "refused", dkt, other, "--fit-weights", train)
    assert (
        refused.returncode == 2
        and "validated on other students" in refused.stderr
        and "Traceback" not in refused.stderr
    )


@pytest.mark.slow
def test_refit_trains_an_ensemble_again_on_training_and_validation_students_with_its_weights(tmp_path, synthetic_files):
    train, test = synthetic_files
    dkt, gbdt = weighted_dkt_and_gbdt(tmp_path, train, test)
    out = tmp_path / "refit"
    run_cli(
        "refit", "--checkpoint", tmp_path / "weighted", "--data", train, "--test-data", test, "--out", out, check=True
    )
    original, refitted = load_checkpoint(tmp_path / "weighted"), load_checkpoint(out)
    assert torch.equal(refitted.model.weights, original.model.weights)
    members = [load_checkpoint(m["checkpoint"]) for m in refitted.metrics["members"]]
    for member, source in zip(members, (load_checkpoint(dkt), load_checkpoint(gbdt))):
        assert member.model.name == source.model.name and member.version != source.version
        assert member.split.train == source.split.train + source.split.valid and member.split.valid == ()
        assert member.split.test_source == source.split.test_source == "file:test.txt"
        assert member.metrics["refit_of"]["version"] == source.version
        assert (
            len(member.metrics["history"]) == source.metrics["best_epoch"]
        )  # the epochs (trees) early stopping picked
    assert members[1].model.config.num_trees == load_checkpoint(gbdt).metrics["best_epoch"]
    # the validation students' answers are now in the gbdt's tables
    counted = members[1].model.item_counts[0].sum().item()
    assert (
        counted == sum(len(s) for s in load_students(train)) > load_checkpoint(gbdt).model.item_counts[0].sum().item()
    )
    result = run_cli("evaluate", "--checkpoint", out, "--test-data", test, "--parity", "--json", check=True)
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        scored["auc"] == pytest.approx(refitted.metrics["test"]["auc"])
        and scored["auc"] > 0.65
        and scored["parity_max_abs_diff"] < 1e-5
    )
    # weights cannot be fitted on students the members trained on; a refit needs the file trained on
    refused = run_cli(
        "ensemble",
        "--out",
        tmp_path / "refused",
        *[m["checkpoint"] for m in refitted.metrics["members"]],
        "--fit-weights",
        train,
    )
    assert (
        refused.returncode == 2 and "has no validation students" in refused.stderr and "Traceback" not in refused.stderr
    )
    refused = run_cli("refit", "--checkpoint", gbdt, "--data", test, "--out", tmp_path / "wrong")
    assert (
        refused.returncode == 2
        and "give the file it was trained on" in refused.stderr
        and "Traceback" not in refused.stderr
    )


@pytest.mark.slow
def test_gbdt_trains_with_boosting_and_streams_what_it_scores(tmp_path, synthetic_files):
    train, test = synthetic_files
    out = tmp_path / "gbdt"
    run_cli("train", "--data", train, "--test-data", test, "--model", "gbdt", "--out", out, check=True)
    result = run_cli("evaluate", "--checkpoint", out, "--test-data", test, "--parity", "--json", check=True)
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["model"] == "gbdt" and metrics["auc"] > 0.65 and metrics["parity_max_abs_diff"] < 1e-5
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert {"train_loss", "valid_logloss", "valid_auc"} <= history[0].keys() and (out / "learning_curves.png").is_file()


def shuffled_labels(data, seed: int):
    """``data`` with every response replaced by a random permutation of all responses (train, valid and test)."""
    from stream_kt.data.vocab import EncodedSequence

    rng = np.random.default_rng(seed)

    def shuffled(seqs):
        labels = rng.permutation(np.concatenate([s.correct for s in seqs]))
        out, start = [], 0
        for s in seqs:
            out.append(EncodedSequence(s.student_id, s.items, labels[start : start + len(s)], s.n_unknown))
            start += len(s)
        return out

    data.train, data.valid, data.test = shuffled(data.train), shuffled(data.valid), shuffled(data.test)
    return data


FAST_CONFIG = {
    "epochs": 4,
    "batch_size": 16,
    "learning_rate": 0.005,
    "model_options": {"hidden_size": 32},
}  # FAST, as a TrainConfig


@pytest.mark.slow
@pytest.mark.parametrize("config", [{"model": "dkt", **FAST_CONFIG}, {"model": "gbdt"}], ids=["dkt", "gbdt"])
def test_shuffled_labels_score_chance_auc(tmp_path, synthetic_files, config):
    """With labels made noise, an honest model cannot beat chance; a leaking one would score ~1."""
    from stream_kt.training.evaluate import evaluate
    from stream_kt.training.prepare import prepare
    from stream_kt.training.train import TrainConfig, train

    data = shuffled_labels(prepare(synthetic_files[0], "auto", "skill_id", None, 0), 0)
    threads = torch.get_num_threads()
    try:  # one thread, as the CLI's subprocesses run (OMP_NUM_THREADS=1)
        checkpoint = train(
            data.train,
            data.valid,
            data.vocab,
            data.split,
            TrainConfig(seed=0, threads=1, **config),
            tmp_path / "shuffled",
        )
    finally:
        torch.set_num_threads(threads)
    metrics = evaluate(checkpoint.model, data.test)
    assert metrics["n"] > 5000
    assert abs(metrics["auc"] - 0.5) < 0.03


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "/nonexistent/x.csv", "--out", "OUT"], "no such file"),
        (["train", "--data", FIXTURES / "small.3line", "--format", "assistments", "--out", "OUT"], "missing column(s)"),
        (["evaluate", "--checkpoint", "/nonexistent"], "no such checkpoint directory"),
        (["evaluate", "--checkpoint", FIXTURES], "not a stream-kt checkpoint"),
        (["ensemble", "--out", "OUT", "/nonexistent/a", "/nonexistent/b"], "no such checkpoint directory"),
        (["ensemble", "--out", "OUT", "--weights", "1,-1", "/nonexistent/a", "/nonexistent/b"], "non-negative"),
        (
            [
                "train",
                "--data",
                FIXTURES / "small.3line",
                "--model",
                "ensemble",
                "--option",
                "members=[]",
                "--out",
                "OUT",
            ],
            "model ensemble is not trained directly",
        ),
        (["train", "--data", FIXTURES / "small.3line", "--epochs", "0", "--out", "OUT"], "expected a positive integer"),
        (
            [
                "train",
                "--data",
                FIXTURES / "small.3line",
                "--model",
                "ensemble",
                "--option",
                'members=[{"model": "gbdt"}, {"model": "dkt"}]',
                "--out",
                "OUT",
            ],
            "model ensemble is not trained directly",
        ),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, message):
    result = run_cli(*[str(a).replace("OUT", str(tmp_path / "o")) for a in args])
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line]) == 1


def test_empty_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = run_cli("train", "--data", empty, "--out", tmp_path / "o")
    assert result.returncode == 2 and "no students" in result.stderr and "Traceback" not in result.stderr


def test_train_refuses_an_out_path_that_is_a_file_before_reading_any_data(tmp_path, monkeypatch, capsys):
    from stream_kt.cli import main
    from stream_kt.commands import offline

    def never(*args, **kwargs):
        raise AssertionError("--out must be checked before the data is read or anything trained")

    monkeypatch.setattr(offline, "prepare", never)
    monkeypatch.setattr(offline, "train", never)
    taken = tmp_path / "model.pt"
    taken.write_bytes(b"someone's file")
    assert main(["train", "--data", FIXTURES / "small.3line", "--out", taken]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"stream-kt train: error: {taken}: exists and is not a directory (a checkpoint is a directory): give a new path"
    ]
    assert taken.read_bytes() == b"someone's file"
    # a directory of other files is refused as well: config.json and metrics.json would overwrite files of those names
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    assert main(["train", "--data", FIXTURES / "small.3line", "--out", tmp_path / "notes"]) == 2
    assert "a directory with other files and no checkpoint in it" in capsys.readouterr().err


def test_models_not_trained_directly_are_not_offered(capsys):
    import click

    from stream_kt.cli import command, main
    from stream_kt.models import MODELS, trainable_models

    assert "ensemble" in MODELS and "ensemble" not in trainable_models()
    offered = next(p for p in command("train").params if p.name == "model").type
    assert isinstance(offered, click.Choice) and list(offered.choices) == trainable_models()
    compare_models = next(p for p in command("compare").params if p.name == "models")
    assert compare_models.default.split(",") == trainable_models()
    assert main(["compare", "--data", FIXTURES / "small.3line", "--models", "dkt,ensemble"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "stream-kt compare: error: model ensemble is not trained directly: train its members, "
        "then combine their checkpoints with stream-kt ensemble"
    ]


@pytest.mark.slow
def test_train_without_lr_uses_the_models_own_learning_rate(tmp_path):
    out = tmp_path / "bkt"
    run_cli("train", "--data", FIXTURES / "small.3line", "--model", "bkt", "--epochs", 1, "--out", out, check=True)
    assert load_checkpoint(out).train_config["learning_rate"] == 0.05
    run_cli(
        "train",
        "--data",
        FIXTURES / "small.3line",
        "--model",
        "bkt",
        "--epochs",
        1,
        "--lr",
        0.01,
        "--out",
        out,
        check=True,
    )  # replaces the checkpoint
    assert load_checkpoint(out).train_config["learning_rate"] == 0.01
    shown = " ".join(run_cli("train", "--help", check=True).stdout.split())
    assert "[default: the model's own: 0.001, bkt 0.05]" in shown
