"""Compare models: every model trained and scored on the same students (``stream-kt compare``).

Splits are by student and shared by all models:

* with ``--test-data``: the held-out file is the test set; each of ``--seeds`` seeds
  draws its own validation students from ``--data`` and seeds the training run;
* without: ``--folds``-fold cross-validation by student (``kfold_students``), once per
  seed; each fold's model is scored on the students it never saw.

For each model the table gives AUC, ACC and RMSE as mean ± std over the runs, the
training wall-clock seconds, and the streamed cost per event: the time of one
``backend.step`` over a full batch of ``--step-batch`` students divided by that batch
(the stream's unit of work).  ``--out`` receives every run's checkpoint,
``compare.json`` and ``compare_auc.png`` (AUC with std error bars).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stream_kt.backends import make_backend
from stream_kt.data.readers import item_names
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.split import Split, kfold_students, split_students
from stream_kt.data.vocab import EncodedSequence, Vocabulary
from stream_kt.errors import ConfigError, DataError, extra
from stream_kt.models import MODELS, KTModel, config_options, trainable_models
from stream_kt.progress import progress_bar
from stream_kt.training.evaluate import evaluate
from stream_kt.training.prepare import load_students
from stream_kt.training.train import TrainConfig, require_trainable, train

REPORTED = ("auc", "acc", "rmse")


@dataclass
class CompareSetup:
    models: list[str]
    learning_rates: dict[str, float]
    options: dict[str, dict]


def parse_setup(
    models: str, learning_rates: Sequence[tuple[str | None, float]], options: Sequence[tuple[str, object]], window: int
) -> CompareSetup:
    """Model list, per-model learning rates (``(None, lr)``: every model; else each model's own) and ``MODEL.KEY``
    options, validated: a bad one is one clear error."""
    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        raise ConfigError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(trainable_models())}"
        )
    for model in names:
        require_trainable(model)
    if window < 2:
        raise ConfigError("--window must be at least 2 (a window of one answer has nothing to predict)")
    default_lr: float | None = None
    per_model_lr: dict[str, float] = {}
    for name, lr in learning_rates:
        if lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {lr}")
        if name is None:
            default_lr = lr
        elif name not in names:
            raise ConfigError(f"--lr {name}={lr}: {name!r} is not among the compared models ({', '.join(names)})")
        else:
            per_model_lr[name] = lr
    pairs: dict[str, list[tuple[str, object]]] = {m: [] for m in names}
    for key, value in options:
        name, dot, field = key.partition(".")
        if not dot or name not in pairs:
            raise ConfigError(f"--option {key}={value}: expected MODEL.KEY=VALUE with MODEL among {', '.join(names)}")
        pairs[name].append((field, value))
    rates = {m: per_model_lr.get(m, default_lr or MODELS[m].default_learning_rate) for m in names}
    return CompareSetup(names, rates, {m: config_options(m, pairs[m]) for m in names})


def make_splits(
    students: list[StudentSequence],
    held_out: list[StudentSequence] | None,
    folds: int,
    seeds: int,
    test_name: str | None,
) -> list[Split]:
    ids = [s.student_id for s in students]
    if held_out is not None:
        return [split_students(ids, seed, 0.1, 0.0, test_source=f"file:{test_name}") for seed in range(seeds)]
    if folds < 2:
        raise ConfigError("k-fold needs --folds of at least 2 (or give --test-data)")
    if len(ids) < 2 * folds:
        raise DataError(f"{len(ids)} students are too few for {folds} folds")
    return [split for seed in range(seeds) for split in kfold_students(ids, folds, seed)]


@torch.no_grad()
def step_cost_us(model: KTModel, batch_size: int, steps: int = 30, warmup: int = 3) -> float:
    """Microseconds per event of the stream's step: one full batch of ``batch_size`` students per call."""
    backend = make_backend("eager", model, batch_size)
    generator = torch.Generator().manual_seed(0)
    num_items = model.config.num_items
    state = backend.initial_state(batch_size)
    started = 0.0
    for call in range(warmup + steps):
        if call == warmup:
            started = time.perf_counter()
        width = model.input_width  # skill sets: K skills an answer, as the stream would pass them
        items = torch.randint(0, num_items, (batch_size, width) if width > 1 else (batch_size,), generator=generator)
        correct = torch.randint(0, 2, (batch_size,), generator=generator)
        questions = (
            torch.randint(0, model.config.num_questions + 1, (batch_size,), generator=generator)
            if model.reads_questions
            else None
        )
        state = backend.step(state, items, correct, questions=questions).state
    return (time.perf_counter() - started) / (steps * batch_size) * 1e6


def summarise(runs: list[dict], step_costs: dict[str, float], models: list[str]) -> dict[str, dict]:
    summary = {}
    for name in models:
        mine = [r for r in runs if r["model"] == name]
        row = {
            "runs": len(mine),
            "train_seconds": float(np.mean([r["train_seconds"] for r in mine])),
            "step_us_per_event": step_costs[name],
        }
        for key in REPORTED:
            values = np.array([r[key] for r in mine], dtype=np.float64)
            row[f"{key}_mean"], row[f"{key}_std"] = float(values.mean()), float(values.std())
        summary[name] = row
    return summary


def format_table(summary: dict[str, dict]) -> str:
    header = f"{'model':<12} {'AUC':>17} {'ACC':>17} {'RMSE':>17} {'train s':>9} {'us/event':>9} {'runs':>5}"
    lines = [header, "-" * len(header)]
    for name, row in sorted(summary.items(), key=lambda kv: -kv[1]["auc_mean"]):
        cells = " ".join(f"{row[f'{k}_mean']:>8.4f} ± {row[f'{k}_std']:.4f}" for k in REPORTED)
        lines.append(
            f"{name:<12} {cells} {row['train_seconds']:>9.1f} {row['step_us_per_event']:>9.1f} {row['runs']:>5}"
        )
    return "\n".join(lines)


def plot_auc(summary: dict[str, dict], path: Path, title: str, references: dict[str, float] | None = None) -> None:
    """Bars of each model's held-out AUC (mean ± std), best first; ``references``: labelled horizontal lines
    (published figures, targets)."""
    extra("matplotlib", "compare's chart")
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    ranked = sorted(summary, key=lambda m: -summary[m]["auc_mean"])
    means = [summary[m]["auc_mean"] for m in ranked]
    stds = [summary[m]["auc_std"] for m in ranked]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(ranked)), 4))
    ax.bar(ranked, means, yerr=stds, capsize=4, color="tab:blue")
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    for (label, value), style in zip((references or {}).items(), (":", "--", "-.")):
        ax.axhline(value, color="grey" if style == ":" else "tab:red", linestyle=style, label=label)
        high = max(high, value)
    if references:
        ax.legend(loc="lower left", fontsize=8)
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, high + 0.02))
    ax.set_ylabel("held-out AUC (mean ± std)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass(frozen=True)
class CompareRun:
    """What to compare on: the files, the split protocol and the training recipe."""

    data: str
    test_data: str | None
    fmt: str
    item: str
    folds: int
    seeds: int
    epochs: int
    batch_size: int
    window: int
    patience: int
    step_batch: int
    out: Path
    skills: str = "combined"  # Vocabulary.build's: what a model sees of a skill set
    questions: bool = False


def compare(setup: CompareSetup, run: CompareRun) -> dict:
    """Train every model on every split, score it on the split's held-out students; the report
    (also ``out/compare.json``)."""
    students = load_students(run.data, run.fmt, run.item)
    held_out = load_students(run.test_data, run.fmt, run.item) if run.test_data else None
    splits = make_splits(students, held_out, run.folds, run.seeds, Path(run.test_data).name if run.test_data else None)
    out = run.out
    by_id = {s.student_id: s for s in students}
    names = item_names(students)
    runs: list[dict] = []
    step_costs: dict[str, float] = {}
    protocol = (
        f"held-out file {Path(run.test_data).name}, {run.seeds} seed(s)"
        if run.test_data
        else f"{run.folds}-fold by student, {run.seeds} seed(s)"
    )
    prepared: list[tuple[Split, Vocabulary, list[EncodedSequence], list[EncodedSequence], list[EncodedSequence]]] = []
    for split in splits:
        train_students, valid_students = [by_id[i] for i in split.train], [by_id[i] for i in split.valid]
        # the vocabulary comes from training and validation students only, as in `train`
        vocab = Vocabulary.build(
            train_students + valid_students, run.item, names, skills=run.skills, questions=run.questions
        )
        test_students = held_out if held_out is not None else [by_id[i] for i in split.test]
        prepared.append(
            (
                split,
                vocab,
                [vocab.encode(s) for s in train_students],
                [vocab.encode(s) for s in valid_students],
                [vocab.encode(s) for s in test_students],
            )
        )
    bar = progress_bar(total=len(splits) * len(setup.models), desc="compare", unit="run", file=sys.stderr)
    # model by model: an interrupted comparison still has every split of the models it finished
    for name in setup.models:
        for split_index, (split, vocab, train_seqs, valid_seqs, test_seqs) in enumerate(prepared):
            bar.set_postfix(model=name, split=split.test_source)
            config = TrainConfig(
                model=name, epochs=run.epochs, batch_size=run.batch_size, window=run.window, patience=run.patience,
                learning_rate=setup.learning_rates[name], seed=split.seed, model_options=setup.options[name],
            )  # fmt: skip
            started = time.perf_counter()
            checkpoint = train(train_seqs, valid_seqs, vocab, split, config, out / name / f"run{split_index}")
            train_seconds = time.perf_counter() - started
            metrics = evaluate(checkpoint.model, test_seqs)
            if name not in step_costs:
                step_costs[name] = step_cost_us(checkpoint.model, run.step_batch)
            runs.append({
                "model": name, "split": split.test_source, "seed": split.seed, "train_seconds": train_seconds,
                "epochs": len(checkpoint.metrics["history"]), "best_epoch": checkpoint.metrics["best_epoch"],
                "n": metrics["n"], **{k: metrics[k] for k in REPORTED},
            })  # fmt: skip
            # after every run, so a long comparison cut short keeps what it measured
            (out / "compare_runs.json").write_text(
                json.dumps({"data": str(run.data), "protocol": protocol, "runs": runs}, indent=2)
            )
            bar.update()
    bar.close()
    summary = summarise(runs, step_costs, setup.models)
    plot = out / "compare_auc.png"
    plot_auc(summary, plot, f"{Path(run.data).name}: {protocol}")
    result = {"data": str(run.data), "protocol": protocol, "models": summary, "runs": runs, "plot": str(plot)}
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    return result
