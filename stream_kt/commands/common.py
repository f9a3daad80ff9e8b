"""Parameter types and option groups several commands share (parsing only)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from stream_kt.data.readers import ITEM_COLUMNS
from stream_kt.models import MODELS, trainable_models
from stream_kt.training.prepare import FORMAT_CHOICES

F = TypeVar("F", bound=Callable[..., Any])


class PositiveInt(click.ParamType):
    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(value)
            except (TypeError, ValueError):
                self.fail(f"expected a positive integer, got {value!r}", param, ctx)
        if number <= 0:
            self.fail(f"expected a positive integer, got {number}", param, ctx)
        return number


class PositiveFloat(click.ParamType):
    name = "X"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"expected a positive number, got {value!r}", param, ctx)
        if not number > 0:
            self.fail(f"expected a positive number, got {value}", param, ctx)
        return number


class OptionPair(click.ParamType):
    """``KEY=VALUE`` -> (key, value); the value is read as JSON (numbers, true/false, lists), else kept as text."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, object]:
        if isinstance(value, tuple):
            return value
        key, sep, raw = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"expected KEY=VALUE, got {value!r}", param, ctx)
        try:
            parsed: object = json.loads(raw)
        except ValueError:
            parsed = raw
        return key.strip(), parsed


class NumberList(click.ParamType):
    """Comma-separated numbers, each within [low, high] (weights, distillation alphas)."""

    name = "X,Y,..."

    def __init__(
        self, low: float = float("-inf"), high: float = float("inf"), what: str = "", positive_sum: bool = False
    ) -> None:
        self.low, self.high, self.what, self.positive_sum = low, high, what, positive_sum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(float(w) for w in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)
        if any(not self.low <= n <= self.high for n in numbers) or (self.positive_sum and sum(numbers) <= 0):
            self.fail(f"{value!r}: {self.what}", param, ctx)
        return numbers


class ModelChoice(click.Choice):
    """One of ``names`` (registered models); a registered model that is not trained directly is
    refused with how it is made."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__(sorted(names))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in MODELS and value not in self.choices and not MODELS[value].trainable_directly:
            self.fail(f"model {value} is not trained directly: {MODELS[value].made_by}", param, ctx)
        return super().convert(value, param, ctx)


def learning_rate_help(names: Iterable[str]) -> str:
    """What ``--lr`` defaults to for the models ``names``: each one's ``default_learning_rate``, the usual one first."""
    by_gradient = [name for name in sorted(names) if MODELS[name].fitted_by_gradient]
    rates = Counter(MODELS[name].default_learning_rate for name in by_gradient)
    usual = rates.most_common(1)[0][0]
    others = "".join(
        f", {name} {MODELS[name].default_learning_rate:g}"
        for name in by_gradient
        if MODELS[name].default_learning_rate != usual
    )
    text = f"Adam's learning rate [default: the model's own: {usual:g}{others}]"
    fitted_otherwise = [name for name in sorted(names) if not MODELS[name].fitted_by_gradient]
    if fitted_otherwise:
        text += f"; {', '.join(fitted_otherwise)} is fitted its own way and ignores it (see its --option fields)"
    return text


POSITIVE_INT = PositiveInt()
POSITIVE_FLOAT = PositiveFloat()
OPTION_PAIR = OptionPair()


def data_options(data_required: bool) -> Callable[[F], F]:
    """``--data``, ``--test-data`` and ``--format``."""

    def decorate(command: F) -> F:
        command = format_option(command)
        command = click.option("--test-data", help="held-out students (never used for training or early stopping)")(
            command
        )
        return click.option(
            "--data",
            required=data_required,
            help="training data file (3-line, ASSISTments CSV or stream-kt export csv; plain or .gz)",
        )(command)

    return decorate


def training_options(epochs: int | None = None) -> Callable[[F], F]:
    """``--epochs``, ``--batch-size``, ``--window`` and ``--patience``: the recipe train, distill and compare share
    (``epochs``: another default cap)."""
    from stream_kt.training.train import TrainConfig

    def decorate(command: F) -> F:
        command = click.option(
            "--patience",
            type=POSITIVE_INT,
            default=TrainConfig.patience,
            show_default=True,
            help="stop after this many epochs without a better validation AUC",
        )(command)
        command = click.option(
            "--window",
            type=POSITIVE_INT,
            default=TrainConfig.window,
            show_default=True,
            help="training window: longer sequences are cut into windows of this many answers",
        )(command)
        command = click.option(
            "--batch-size",
            type=POSITIVE_INT,
            default=TrainConfig.batch_size,
            show_default=True,
            help="training windows per Adam step",
        )(command)
        return click.option(
            "--epochs",
            type=POSITIVE_INT,
            default=epochs or TrainConfig.epochs,
            show_default=True,
            help="most training epochs (early stopping on validation AUC may end sooner)",
        )(command)

    return decorate


def format_option(command: F) -> F:
    """``--format`` of the data files a command reads (``training.prepare.FORMAT_CHOICES``)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMAT_CHOICES),
        default="auto",
        show_default=True,
        help="file format (auto: detect from the header)",
    )(command)


def item_option(command: F) -> F:
    return click.option(
        "--item", type=click.Choice(ITEM_COLUMNS), default="skill_id", show_default=True, help="modelled vocabulary"
    )(command)


def skills_options(command: F) -> F:
    """``--skills`` and ``--questions``: what a model sees of an answer's skill set and question (``Vocabulary``)."""
    from stream_kt.data.vocab import SKILL_MODES

    command = click.option(
        "--questions",
        is_flag=True,
        help="also give question-aware models (dkt, dkt_plus) each answer's question id: a learnt per-question offset, "
        "none for an unseen question",
    )(command)
    return click.option(
        "--skills",
        type=click.Choice(SKILL_MODES),
        default="combined",
        show_default=True,
        help="an answer with several skills (ids joined by _): one combined entry, the set "
        f"({set_takers()}), or its first skill",
    )(command)


def set_takers() -> str:
    """Which of the trained models take skill sets (``--skills sets``), for the help: every one, or their names."""
    names = trainable_models()
    takers = [name for name in names if MODELS[name].takes_skill_sets]
    return "every model" if takers == names else ", ".join(takers)


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")(command)
