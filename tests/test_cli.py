"""The command line as a whole: what every command shares (``stream_kt/cli.py``), and flags declared for people to read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from stream_kt.backends import BACKEND_CHOICES
from stream_kt.cli import cli
from stream_kt.commands.common import NumberList, PositiveFloat, PositiveInt
from stream_kt.commands.compare import LearningRate
from tests.conftest import run_with_stdout_closed, save_tiny_checkpoint


@pytest.mark.parametrize("args", [["synth", "--out", "OUT", "--students", "3"], ["train", "--help"]], ids=["a command's output", "help"])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, args):
    result = run_with_stdout_closed(*[str(tmp_path / "s.txt") if a == "OUT" else a for a in args])
    assert result.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit
    assert result.returncode == 141  # 128 + SIGPIPE, what a shell reports for a writer the closed pipe stopped


NUMBER_TYPES = (click.types.IntParamType, click.types.FloatParamType, PositiveInt, PositiveFloat, NumberList, LearningRate)


def numeric_options():
    """Every flag of every command that takes a number (the settings' flags say their default and variable by construction)."""
    for name, command in sorted(cli.commands.items()):
        for option in command.params:
            if isinstance(option, click.Option) and isinstance(option.type, NUMBER_TYPES):
                yield pytest.param(command, option, id=f"{name} {option.opts[0]}")


@pytest.mark.parametrize("command, option", list(numeric_options()))
def test_every_numeric_flag_says_what_it_means_and_its_default(command, option):
    context = click.Context(command, info_name=command.name)
    _, help_text = option.get_help_record(context)
    assert help_text.strip() and not help_text.startswith("[")  # words, not just the default
    default = option.get_default(context, call=False)
    if isinstance(default, int | float | str):
        assert "default" in help_text, help_text


def test_serve_help_lists_every_backend_and_its_default_auto():
    result = subprocess.run([sys.executable, "-m", "stream_kt.cli", "serve", "--help"], capture_output=True, text=True, timeout=120)
    help_text = " ".join(result.stdout.split())
    backend = help_text[help_text.index("--backend BACKEND") :].split(" --")[0]
    assert result.returncode == 0 and all(choice in backend for choice in BACKEND_CHOICES), backend
    assert "default auto" in backend


def test_serve_with_an_unknown_backend_is_one_line_before_it_connects(tmp_path: Path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    command = [sys.executable, "-m", "stream_kt.cli", "serve", "--checkpoint", str(checkpoint), "--backend", "tpu", "--bootstrap", "127.0.0.1:1", "--metrics-port", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"stream-kt serve: error: unknown backend 'tpu': choose one of auto, {', '.join(sorted(BACKEND_CHOICES[1:]))}"]
