"""Distillation: the student learns the teacher's mastery, only from training students, and
is an ordinary checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_kt.checkpoint import load_checkpoint, save_checkpoint
from stream_kt.data.split import Split
from stream_kt.data.vocab import EncodedSequence, Vocabulary
from stream_kt.models import build_model
from stream_kt.training import distill as distill_module
from stream_kt.training.distill import DistillSettings, cached_teacher_mastery, distill, soft_loss, teacher_mastery
from stream_kt.training.train import TrainConfig
from tests.training.test_cli import run_cli

ITEMS = 12
PATTERN = torch.linspace(-2.0, 2.0, ITEMS)  # the constant teacher's logit per item, whatever the history
STUDENT = TrainConfig(
    model="dkt",
    epochs=8,
    batch_size=8,
    learning_rate=0.05,
    patience=8,
    model_options={"embed_dim": 8, "hidden_size": 16, "dropout": 0.0},
)


def students(prefix: str, n: int, p_right: np.ndarray, seed: int, length: int = 30) -> list[EncodedSequence]:
    """``n`` students answering random items, right with ``p_right[item]``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        items = rng.integers(0, ITEMS, length)
        out.append(EncodedSequence(f"{prefix}:{i}", items, (rng.random(length) < p_right[items]).astype(np.int64)))
    return out


def constant_teacher(path: Path, train, valid) -> "Checkpoint":  # noqa: F821
    """A DKT whose mastery is sigmoid(PATTERN) after any history (its output weights are zero)."""
    torch.manual_seed(0)
    model = build_model("dkt", num_items=ITEMS, embed_dim=4, hidden_size=4, dropout=0.0)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.copy_(PATTERN)
    vocab = Vocabulary("skill_id", tuple(str(i) for i in range(ITEMS)))
    split = Split(tuple(s.student_id for s in train), tuple(s.student_id for s in valid), (), 0, "file:test.txt")
    return save_checkpoint(path, model.eval(), vocab, split, {"note": "constant teacher, tests only"})


def mastery_of(model, sequences) -> np.ndarray:
    """The model's streamed mastery after every interaction of ``sequences``, (N, V)."""
    rows = []
    with torch.no_grad():
        for s in sequences:
            state = model.initial_state(1)
            for item, right in zip(s.items, s.correct):
                out = model.step(state, torch.tensor([item]), torch.tensor([right]))
                rows.append(out.mastery[0].numpy())
                state = out.state
    return np.array(rows)


@pytest.fixture
def uninformative_answers():
    """Training answers that are coin flips; validation answers that follow the teacher's per-item rates."""
    train = students("train", 60, np.full(ITEMS, 0.5), seed=0)
    valid = students("valid", 20, torch.sigmoid(PATTERN).numpy(), seed=1)
    return train, valid


@pytest.mark.slow
def test_the_student_learns_the_teachers_mastery_of_every_item(tmp_path, uninformative_answers):
    """Fails if the soft term is dropped: the training answers alone say every item is a coin flip."""
    train, valid = uninformative_answers
    teacher = constant_teacher(tmp_path / "teacher", train, valid)
    student = distill(
        teacher,
        train,
        valid,
        STUDENT,
        DistillSettings(alphas=(1.0,)),
        tmp_path / "student",
        tmp_path / "cache",
        progress=False,
    )
    unseen = students("unseen", 5, np.full(ITEMS, 0.5), seed=2)
    error = np.abs(mastery_of(student.model, unseen) - torch.sigmoid(PATTERN).numpy())  # (N, V)
    assert error.mean() < 0.03 and error.max() < 0.1
    history = student.metrics["history"]
    assert history[-1]["soft_loss"] < 0.2 * history[0]["soft_loss"]


@pytest.mark.slow
def test_validation_students_choose_alpha_and_the_answers_alone_learn_coin_flips(tmp_path, uninformative_answers):
    train, valid = uninformative_answers
    teacher = constant_teacher(tmp_path / "teacher", train, valid)
    student = distill(
        teacher,
        train,
        valid,
        STUDENT,
        DistillSettings(alphas=(0.0, 1.0)),
        tmp_path / "student",
        tmp_path / "cache",
        progress=False,
    )
    candidates = {c["alpha"]: c["valid_auc"] for c in student.metrics["distill"]["candidates"]}
    assert candidates[1.0] > 0.7 > candidates[0.0]  # only the teacher knows the validation students' item rates
    assert student.metrics["distill"]["alpha"] == student.train_config["distill"]["alpha"] == 1.0
    # alpha 0 is the undistilled twin: trained on the answers, its mastery is far from the teacher's
    twin = distill(
        teacher,
        train,
        valid,
        STUDENT,
        DistillSettings(alphas=(0.0,)),
        tmp_path / "twin",
        tmp_path / "cache",
        progress=False,
    )
    unseen = students("unseen", 5, np.full(ITEMS, 0.5), seed=2)
    assert np.abs(mastery_of(twin.model, unseen) - torch.sigmoid(PATTERN).numpy()).mean() > 0.2


def test_teacher_mastery_is_what_the_teacher_streams_and_is_computed_once(tmp_path, monkeypatch):
    torch.manual_seed(3)
    model = build_model("lastquery", num_items=ITEMS, dim=8, heads=2, hidden_size=8).eval()
    rng = np.random.default_rng(4)
    sequences = [
        EncodedSequence(f"s:{i}", rng.integers(0, ITEMS, n), rng.integers(0, 2, n))
        for i, n in enumerate((5, 40, 1, 17))
    ]
    expected = mastery_of(model, sequences)
    computed = teacher_mastery(model, sequences)
    assert [m.shape for m in computed] == [(5, ITEMS), (40, ITEMS), (1, ITEMS), (17, ITEMS)]
    np.testing.assert_allclose(np.concatenate(computed), expected, atol=1e-3)  # float16 targets
    vocab = Vocabulary("skill_id", tuple(str(i) for i in range(ITEMS)))
    teacher = save_checkpoint(tmp_path / "teacher", model, vocab, Split(("s:0",), (), (), 0, "holdout"), {})
    first, path = cached_teacher_mastery(teacher, sequences, tmp_path / "cache")
    monkeypatch.setattr(distill_module, "teacher_mastery", lambda *a, **k: pytest.fail("computed again"))
    again, same_path = cached_teacher_mastery(teacher, sequences, tmp_path / "cache")
    assert same_path == path and [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]
    for sid in first:
        np.testing.assert_array_equal(again[sid], first[sid])
    # other answers are another file, never the cached one
    changed = [EncodedSequence(s.student_id, s.items, 1 - s.correct) for s in sequences]
    with pytest.raises(pytest.fail.Exception, match="computed again"):
        cached_teacher_mastery(teacher, changed, tmp_path / "cache")


def test_soft_loss_is_zero_only_at_the_teachers_mastery_and_ignores_padding():
    teacher = torch.rand(2, 5, ITEMS) * 0.98 + 0.01
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    matched = torch.logit(teacher)
    assert soft_loss(matched, teacher, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert soft_loss(matched, teacher, mask, temperature=2.0).item() == pytest.approx(0.0, abs=1e-5)
    off = matched.clone()
    off[0, 0, 3] += 1.0
    assert soft_loss(off, teacher, mask).item() > 1e-3
    padded = matched.clone()
    padded[1, 3] += 5.0  # a padding position: not scored
    assert soft_loss(padded, teacher, mask).item() == pytest.approx(0.0, abs=1e-5)


# ---- the command line -----------------------------------------------------------
@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A small DKT teacher trained on synthetic students, and a Last-Query student distilled from it."""
    root = tmp_path_factory.mktemp("distill")
    run_cli("synth", "--out", root / "all.txt", "--students", 150, "--seed", 2, check=True)
    lines = (root / "all.txt").read_text().splitlines(keepends=True)
    (root / "train.txt").write_text("".join(lines[: 100 * 3]))
    (root / "test.txt").write_text("".join(lines[100 * 3 :]))
    data = ("--data", root / "train.txt", "--test-data", root / "test.txt")
    run_cli("train", *data, "--epochs", 2, "--hidden-size", 16, "--out", root / "teacher", check=True)
    student_args = (
        "--model",
        "lastquery",
        "--option",
        "dim=16",
        "--option",
        "heads=2",
        "--hidden-size",
        16,
        "--epochs",
        2,
        "--alpha",
        "0.5,1",
        "--cache",
        root / "cache",
    )
    run_cli("distill", "--teacher", root / "teacher", *data, *student_args, "--out", root / "student", check=True)
    return root, data, student_args


@pytest.mark.slow
def test_the_student_is_an_ordinary_checkpoint_that_records_its_teacher_and_streams_what_it_scores(distilled):
    root, _, _ = distilled
    teacher, student = load_checkpoint(root / "teacher"), load_checkpoint(root / "student")
    assert student.model.name == "lastquery"
    recorded = json.loads((root / "student" / "config.json").read_text())["train"]["distill"]
    assert (
        recorded["teacher"]["version"] == teacher.version
        and recorded["alpha"] in (0.5, 1.0)
        and recorded["temperature"] == 1.0
    )
    assert [c["alpha"] for c in student.metrics["distill"]["candidates"]] == [0.5, 1.0]
    result = run_cli(
        "evaluate", "--checkpoint", root / "student", "--test-data", root / "test.txt", "--parity", "--json", check=True
    )
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert scored["model_version"] == student.version and scored["parity_max_abs_diff"] <= 1e-5
    assert scored["auc"] == pytest.approx(student.metrics["test"]["auc"])


@pytest.mark.slow
def test_only_the_teachers_training_students_train_the_student_and_the_test_file_chooses_nothing(distilled):
    root, data, student_args = distilled
    teacher, student = load_checkpoint(root / "teacher"), load_checkpoint(root / "student")
    assert (student.split.train, student.split.valid, student.split.test_source) == (
        teacher.split.train,
        teacher.split.valid,
        "file:test.txt",
    )
    [cache] = list((root / "cache").iterdir())
    with np.load(cache) as cached:
        assert sorted(cached["student_ids"]) == sorted(
            teacher.split.train
        )  # no validation or held-out student is a target
    # a test file with every answer flipped gives the same student
    flipped = root / "flipped.txt"
    lines = (root / "test.txt").read_text().splitlines()
    lines[2::3] = [",".join(str(1 - int(c)) for c in line.split(",")) for line in lines[2::3]]
    flipped.write_text("\n".join(lines) + "\n")
    run_cli(
        "distill",
        "--teacher",
        root / "teacher",
        "--data",
        data[1],
        "--test-data",
        flipped,
        *student_args,
        "--out",
        root / "again",
        check=True,
    )
    assert load_checkpoint(root / "again").version == student.version


@pytest.mark.slow
def test_refit_trains_the_student_again_against_the_refit_teacher(distilled):
    root, data, _ = distilled
    teacher, student = load_checkpoint(root / "teacher"), load_checkpoint(root / "student")
    run_cli("refit", "--checkpoint", root / "teacher", *data, "--out", root / "teacher_refit", check=True)
    teacher_refit = load_checkpoint(root / "teacher_refit")
    refused = run_cli("refit", "--checkpoint", root / "student", *data, "--out", root / "no_teacher")
    assert (
        refused.returncode == 2 and "distilled from a teacher" in refused.stderr and "Traceback" not in refused.stderr
    )
    refused = run_cli(
        "refit", "--checkpoint", root / "student", *data, "--teacher", root / "teacher", "--out", root / "wrong_teacher"
    )
    assert (
        refused.returncode == 2
        and "give the teacher refit on them" in refused.stderr
        and "Traceback" not in refused.stderr
    )
    refused = run_cli("distill", "--teacher", root / "teacher_refit", *data, "--out", root / "no_validation")
    assert refused.returncode == 2 and "no validation students" in refused.stderr and "Traceback" not in refused.stderr
    run_cli(
        "refit",
        "--checkpoint",
        root / "student",
        *data,
        "--teacher",
        root / "teacher_refit",
        "--cache",
        root / "cache",
        "--out",
        root / "student_refit",
        check=True,
    )
    refit = load_checkpoint(root / "student_refit")
    assert refit.split.train == student.split.train + student.split.valid and refit.split.valid == ()
    assert refit.train_config["distill"]["teacher"]["version"] == teacher_refit.version
    assert refit.train_config["distill"]["chosen_with_teacher"]["version"] == teacher.version
    assert refit.train_config["distill"]["alpha"] == student.train_config["distill"]["alpha"]
    assert (
        len(refit.metrics["history"]) == student.metrics["best_epoch"]
        and refit.metrics["refit_of"]["version"] == student.version
    )
    assert "test" in refit.metrics
    # the same recipe from another seed: the spread between runs, nothing chosen again
    run_cli(
        "refit",
        "--checkpoint",
        root / "student",
        *data,
        "--teacher",
        root / "teacher_refit",
        "--cache",
        root / "cache",
        "--seed",
        5,
        "--out",
        root / "seed5",
        check=True,
    )
    other = load_checkpoint(root / "seed5")
    assert (
        other.train_config["seed"] == 5
        and refit.train_config["seed"] == student.train_config["seed"]
        and other.version != refit.version
    )
    assert other.train_config["distill"] == refit.train_config["distill"] and len(other.metrics["history"]) == len(
        refit.metrics["history"]
    )


def test_cross_fitted_targets_come_from_teachers_that_never_saw_the_student(distilled):
    root, data, _ = distilled
    teacher = load_checkpoint(root / "teacher")
    cache = root / "cv_cache"
    run_cli(
        "distill",
        "--teacher",
        root / "teacher",
        *data,
        "--model",
        "dkt",
        "--hidden-size",
        16,
        "--epochs",
        2,
        "--folds",
        2,
        "--cache",
        cache,
        "--out",
        root / "cv_student",
        check=True,
    )
    student = load_checkpoint(root / "cv_student")
    assert student.train_config["distill"]["folds"] == 2
    [targets] = cache.glob("*.npz")
    with np.load(targets) as cached:
        assert sorted(cached["student_ids"]) == sorted(teacher.split.train)
    fold_teachers = [load_checkpoint(d) for d in sorted(cache.glob("*-fold*"))]
    assert len(fold_teachers) == 2
    trained_on = [set(t.split.train) for t in fold_teachers]
    # the two folds partition the training students; each teacher trained on one and predicts the other
    assert not trained_on[0] & trained_on[1] and trained_on[0] | trained_on[1] == set(teacher.split.train)
    for fold_teacher in fold_teachers:
        assert not set(fold_teacher.split.train) & set(teacher.split.valid)  # validation students stay unseen
        assert len(fold_teacher.metrics["history"]) == teacher.metrics["best_epoch"]  # the epochs validation chose
        [fold_targets] = fold_teacher.path.glob(
            "*.npz"
        )  # each fold's targets are kept, so a run cut short resumes there
        with np.load(fold_targets) as cached:
            assert set(cached["student_ids"]) == set(teacher.split.train) - set(fold_teacher.split.train)


@pytest.mark.slow
def test_the_distillation_table_reports_each_checkpoints_held_out_metrics_parity_and_teacher(distilled, tmp_path):
    root, _, _ = distilled
    runs = tmp_path / "runs"
    (runs / "logs").mkdir(parents=True)
    (runs / "dktp_s0").symlink_to(root / "teacher")  # the table's rows are found by run names
    (runs / "dist_lq_s0").symlink_to(root / "student")
    (runs / "logs" / "parity_dist_lq_s0.log").write_text(
        "progress lines\n" + json.dumps({"auc": 0.5, "parity_max_abs_diff": 3.5e-7}) + "\n"
    )
    out = tmp_path / "table.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.distill_results", "--runs", str(runs), "--seeds", "0,1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["models"]
    assert set(rows) == {"DKT+", "distilled Last-Query, 30 epochs"}  # only the runs that exist
    teacher, student = load_checkpoint(root / "teacher"), load_checkpoint(root / "student")
    twin, distilled_row = rows["DKT+"], rows["distilled Last-Query, 30 epochs"]
    assert twin["seeds"] == [0] and twin["auc_mean"] == teacher.metrics["test"]["auc"] and twin["auc_std"] == 0.0
    assert twin["parity_max_abs_diff"] is None  # none was run for it
    assert (
        distilled_row["rmse_mean"] == student.metrics["test"]["rmse"] and distilled_row["parity_max_abs_diff"] == 3.5e-7
    )
    assert distilled_row["runs"][0]["teacher"] == teacher.version and distilled_row["runs"][0]["step_us_per_event"] > 0
    student_test = student.metrics["test"]
    assert (
        f"| distilled Last-Query, 30 epochs | 0 | {student_test['auc']:.4f} | {student_test['acc']:.4f} |"
        in done.stdout
    )  # one seed: no ± 0
    assert (tmp_path / "table_auc.png").stat().st_size > 0
    # --keep: a seed whose checkpoint is gone keeps its recorded run; one still there is measured again
    earlier = json.loads(out.read_text())["models"]
    earlier["DKT+"]["runs"][0] |= {"seed": 1, "auc": 0.625}  # as if seed 1 had been recorded, then deleted
    kept_file = tmp_path / "earlier.json"
    kept_file.write_text(json.dumps({"models": earlier}))
    again = subprocess.run(
        [sys.executable, "-m", "benchmarks.distill_results", "--runs", str(runs), "--seeds", "0,1", "--out", str(out)]
        + ["--keep", str(kept_file)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    assert again.returncode == 0, again.stderr
    merged = json.loads(out.read_text())["models"]["DKT+"]
    assert merged["seeds"] == [0, 1] and [r.get("kept", False) for r in merged["runs"]] == [False, True]
    assert merged["auc_mean"] == pytest.approx((teacher.metrics["test"]["auc"] + 0.625) / 2)
