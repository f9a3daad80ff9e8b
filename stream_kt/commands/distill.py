"""``stream-kt distill``: a streamable student trained on a teacher checkpoint's mastery
vectors (``training.distill``)."""

from __future__ import annotations

import json

import click

from stream_kt.checkpoint import check_out_dir, load_checkpoint
from stream_kt.commands.common import (
    OPTION_PAIR,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    ModelChoice,
    NumberList,
    data_options,
    learning_rate_help,
    training_options,
)
from stream_kt.models import MODELS, config_options, trainable_models
from stream_kt.training.distill import DISTILL_EPOCHS, DistillSettings, distill_from_file, distillable
from stream_kt.training.train import TrainConfig

DEFAULT_CACHE = "runs/teacher_cache"
STUDENTS = [name for name in trainable_models() if distillable(MODELS[name])]


@click.command(help="train a streamable student on a teacher checkpoint's mastery vectors and the observed answers")
@click.option(
    "--teacher",
    required=True,
    help="an early-stopped checkpoint (any model; an ensemble): the student trains on its training students and is "
    "chosen on its validation students",
)
@click.option("--model", type=ModelChoice(STUDENTS), default="dkt_plus", show_default=True, help="the student")
@data_options(data_required=True)
@click.option(
    "--alpha",
    "alphas",
    type=NumberList(0.0, 1.0, "every alpha must be in [0, 1]"),
    default=",".join(map(str, DistillSettings.alphas)),
    show_default=True,
    help="the teacher's share of the loss; several comma-separated candidates train one student "
    "each and validation AUC picks",
)
@click.option(
    "--temperature",
    type=POSITIVE_FLOAT,
    default=DistillSettings.temperature,
    show_default=True,
    help="divides both sides' logits in the soft term",
)
@click.option(
    "--folds",
    type=POSITIVE_INT,
    default=DistillSettings.folds,
    show_default=True,
    help="1: the teacher's own predictions; K >= 2: cross-fitted, the teacher's recipe trained again K times, "
    "each without one fold of the training students, and each fold's targets from the teacher that never saw it "
    "(a teacher is overfit on its own training students)",
)
@training_options(epochs=DISTILL_EPOCHS)
@click.option("--lr", type=POSITIVE_FLOAT, help=learning_rate_help(STUDENTS))
@click.option("--hidden-size", type=POSITIVE_INT, help="model hidden size (model default if omitted)")
@click.option(
    "--option", "pairs", type=OPTION_PAIR, multiple=True, help="a model Config field, e.g. dropout=0.3 (repeatable)"
)
@click.option("--seed", type=int, help="initialisation and batch order (default: the teacher's split seed)")
@click.option(
    "--cache",
    default=DEFAULT_CACHE,
    show_default=True,
    help="directory of cached teacher mastery, one file per teacher and students",
)
@click.option("--out", required=True, help="checkpoint directory to write")
def distill(
    teacher: str,
    model: str,
    data: str,
    test_data: str | None,
    fmt: str,
    alphas: tuple[float, ...],
    temperature: float,
    folds: int,
    epochs: int,
    batch_size: int,
    window: int,
    patience: int,
    lr: float | None,
    hidden_size: int | None,
    pairs: tuple,
    seed: int | None,
    cache: str,
    out: str,
) -> int:
    check_out_dir(out)
    source = load_checkpoint(teacher)
    options = config_options(model, ([("hidden_size", hidden_size)] if hidden_size else []) + list(pairs))
    config = TrainConfig(
        model=model,
        window=window,
        batch_size=batch_size,
        epochs=epochs,
        learning_rate=lr or 0.0,
        patience=patience,
        seed=source.split.seed if seed is None else seed,
        model_options=options,
    )
    student = distill_from_file(
        source,
        data,
        fmt,
        test_data,
        config,
        DistillSettings(alphas=alphas, temperature=temperature, folds=folds),
        out,
        cache,
    )
    summary = {k: student.metrics[k] for k in ("best_epoch", "valid_auc", "seconds_per_epoch")}
    summary["alpha"] = student.metrics["distill"]["alpha"]
    summary.update(
        {f"test_{k}": v for k, v in student.metrics.get("test", {}).items() if k in ("auc", "acc", "rmse", "n")}
    )
    print(f"checkpoint {student.version} written to {out}: " + json.dumps(summary))
    return 0


COMMANDS = (distill,)
