"""Parameter types and option groups several commands share (parsing only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from stream_kt.data.readers import ITEM_COLUMNS
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

    def __init__(self, low: float = float("-inf"), high: float = float("inf"), what: str = "", positive_sum: bool = False) -> None:
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


POSITIVE_INT = PositiveInt()
POSITIVE_FLOAT = PositiveFloat()
OPTION_PAIR = OptionPair()


def data_options(data_required: bool) -> Callable[[F], F]:
    """``--data``, ``--test-data`` and ``--format``."""

    def decorate(command: F) -> F:
        command = click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default="auto", show_default=True, help="file format (auto: detect from the header)")(command)
        command = click.option("--test-data", help="held-out students (never used for training or early stopping)")(command)
        return click.option("--data", required=data_required, help="training data file (3-line or ASSISTments CSV, plain or .gz)")(command)

    return decorate


def item_option(command: F) -> F:
    return click.option("--item", type=click.Choice(ITEM_COLUMNS), default="skill_id", show_default=True, help="modelled vocabulary")(command)


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")(command)
