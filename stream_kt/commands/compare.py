"""``stream-kt compare``: every model trained and scored on the same students (``training.compare``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from stream_kt.commands.common import (
    OPTION_PAIR,
    POSITIVE_INT,
    data_options,
    item_option,
    json_option,
    learning_rate_help,
    skills_options,
    training_options,
)
from stream_kt.models import trainable_models
from stream_kt.training.compare import CompareRun, compare, format_table, parse_setup


class LearningRate(click.ParamType):
    """``0.01`` (every model) or ``bkt=0.05`` (one model)."""

    name = "[MODEL=]LR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str | None, float]:
        if isinstance(value, tuple):
            return value
        name, sep, number = str(value).rpartition("=")
        try:
            return (name.strip() if sep else None), float(number)
        except ValueError:
            self.fail(f"expected LR or MODEL=LR, got {value!r}", param, ctx)


@click.command("compare", help="train and score several models on the same students; table, JSON and bar chart")
@data_options(data_required=True)
@item_option
@skills_options
@click.option(
    "--models",
    default=",".join(trainable_models()),
    help="comma-separated model names (default: every model trained directly)",
)
@click.option(
    "--folds", type=POSITIVE_INT, default=5, show_default=True, help="k-fold by student when there is no --test-data"
)
@click.option("--seeds", type=POSITIVE_INT, default=1, show_default=True, help="repeat every split with seeds 0..N-1")
@training_options()
@click.option(
    "--lr",
    "learning_rates",
    type=LearningRate(),
    multiple=True,
    help=f"LR for every model or MODEL=LR for one (repeatable); {learning_rate_help(trainable_models())}",
)
@click.option(
    "--option",
    "pairs",
    type=OPTION_PAIR,
    multiple=True,
    metavar="MODEL.KEY=VALUE",
    help="a model Config field, e.g. sakt.dim=32 (repeatable)",
)
@click.option(
    "--step-batch", type=POSITIVE_INT, default=64, show_default=True, help="batch of the streamed-cost measurement"
)
@click.option(
    "--out",
    default="runs/compare",
    show_default=True,
    help="directory for checkpoints, compare.json and compare_auc.png",
)
@json_option
def compare_command(
    data: str,
    test_data: str | None,
    fmt: str,
    item: str,
    skills: str,
    questions: bool,
    models: str,
    folds: int,
    seeds: int,
    epochs: int,
    batch_size: int,
    window: int,
    patience: int,
    learning_rates: tuple,
    pairs: tuple,
    step_batch: int,
    out: str,
    as_json: bool,
) -> int:
    setup = parse_setup(models, learning_rates, pairs, window)
    result = compare(
        setup,
        CompareRun(
            data,
            test_data,
            fmt,
            item,
            folds,
            seeds,
            epochs,
            batch_size,
            window,
            patience,
            step_batch,
            Path(out),
            skills,
            questions,
        ),
    )
    print(f"{Path(data).name}: {result['protocol']}")
    print(format_table(result["models"]))
    print(f"chart: {result['plot']}")
    if as_json:
        print(json.dumps(result))
    return 0


COMMANDS = (compare_command,)
