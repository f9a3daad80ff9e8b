"""The offline CLI end to end: real files, a real (small) training run, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent.parent / "fixtures"
FAST = ("--epochs", 4, "--hidden-size", 32, "--batch-size", 16, "--lr", 0.005)  # a small model, enough steps to learn


def run_cli(*args, check=False):
    result = subprocess.run([sys.executable, "-m", "stream_kt.cli", *map(str, args)], capture_output=True, text=True, timeout=600)
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


def test_shuffled_labels_score_chance_auc(tmp_path, synthetic_files):
    """With labels made noise, an honest model cannot beat chance; a leaking one would score ~1."""
    out = tmp_path / "shuffled"
    run_cli("train", "--data", synthetic_files[0], *FAST, "--shuffle-labels", "--out", out, check=True)
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    assert metrics["n"] > 5000
    assert abs(metrics["auc"] - 0.5) < 0.03


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "/nonexistent/x.csv", "--out", "OUT"], "no such file"),
        (["train", "--data", FIXTURES / "small.3line", "--format", "assistments", "--out", "OUT"], "missing column(s)"),
        (["evaluate", "--checkpoint", "/nonexistent"], "no such checkpoint directory"),
        (["evaluate", "--checkpoint", FIXTURES], "not a stream-kt checkpoint"),
        (["train", "--data", FIXTURES / "small.3line", "--epochs", "0", "--out", "OUT"], "expected a positive integer"),
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
