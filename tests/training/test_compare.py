"""``stream-kt compare`` end to end on small simulated data, and its one-line errors."""

import json
import subprocess
import sys

import pytest

FAST = (
    "--epochs",
    1,
    "--batch-size",
    16,
    "--option",
    "dkt.hidden_size=8",
    "--option",
    "dkt.embed_dim=8",
    "--lr",
    "bkt=0.05",
)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "stream_kt.cli", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    assert run_cli("synth", "--out", root / "all.txt", "--students", 60, "--seed", 2).returncode == 0
    lines = (root / "all.txt").read_text().splitlines(keepends=True)
    (root / "train.txt").write_text("".join(lines[: 45 * 3]))
    (root / "test.txt").write_text("".join(lines[45 * 3 :]))
    return root


@pytest.mark.slow
def test_kfold_scores_every_model_on_the_same_students(files, tmp_path):
    result = run_cli(
        "compare", "--data", files / "all.txt", "--models", "bkt,dkt", "--folds", 2, *FAST, "--out", tmp_path, "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["models"]) == {"bkt", "dkt"}
    for row in report["models"].values():
        assert row["runs"] == 2 and 0 < row["auc_mean"] < 1 and row["auc_std"] >= 0
        assert row["step_us_per_event"] > 0 and row["train_seconds"] > 0
    # both folds together score every student's answers but the first, for each model alike
    lines = (files / "all.txt").read_text().splitlines()
    every_answer = sum(int(n) - 1 for n in lines[0::3])
    for model in ("bkt", "dkt"):
        assert sum(r["n"] for r in report["runs"] if r["model"] == model) == every_answer
    assert "AUC" in result.stdout and (tmp_path / "compare_auc.png").is_file() and (tmp_path / "compare.json").is_file()


@pytest.mark.slow
def test_held_out_file_repeated_over_seeds(files, tmp_path):
    result = run_cli(
        "compare",
        "--data",
        files / "train.txt",
        "--test-data",
        files / "test.txt",
        "--models",
        "bkt",
        "--seeds",
        2,
        *FAST[:4],
        "--lr",
        "0.05",
        "--out",
        tmp_path,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    runs = report["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and runs[0]["n"] == runs[1]["n"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "dkt,nope"], "unknown model(s) nope"),
        (["--models", "dkt", "--folds", "1"], "at least 2"),
        (["--models", "dkt", "--option", "sakt.dim=8"], "expected MODEL.KEY=VALUE"),
        (["--models", "dkt", "--option", "dkt.heads=2"], "has no option 'heads'"),
        (["--models", "dkt", "--option", "dkt.hidden_size=big"], "expects int"),
        (["--models", "dkt", "--lr", "fast"], "expected LR or MODEL=LR"),
    ],
)
def test_bad_input_is_one_line(files, tmp_path, args, message):
    result = run_cli("compare", "--data", files / "all.txt", *args, "--out", tmp_path)
    assert result.returncode != 0 and message in result.stderr
    assert (
        "Traceback" not in result.stderr and len([line for line in result.stderr.splitlines() if "error" in line]) == 1
    )


def test_train_rejects_an_option_the_model_does_not_have(files, tmp_path):
    result = run_cli(
        "train", "--data", files / "all.txt", "--model", "sakt", "--hidden-size", 8, "--out", tmp_path / "o"
    )
    assert (
        result.returncode == 2
        and "model sakt has no option 'hidden_size'" in result.stderr
        and "Traceback" not in result.stderr
    )
