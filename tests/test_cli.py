"""The command line as a whole: what every command shares (``stream_kt/cli.py``), and flags
declared for people to read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from stream_kt.backends import BACKEND_CHOICES
from stream_kt.cli import COMMANDS, command
from stream_kt.commands.common import NumberList, PositiveFloat, PositiveInt
from stream_kt.commands.compare import LearningRate
from tests.conftest import run_with_stdout_closed, save_tiny_checkpoint


@pytest.mark.parametrize(
    "args", [["synth", "--out", "OUT", "--students", "3"], ["train", "--help"]], ids=["a command's output", "help"]
)
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, args):
    result = run_with_stdout_closed(*[str(tmp_path / "s.txt") if a == "OUT" else a for a in args])
    assert result.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit
    assert result.returncode == 141  # 128 + SIGPIPE, what a shell reports for a writer the closed pipe stopped


NUMBER_TYPES = (
    click.types.IntParamType,
    click.types.FloatParamType,
    PositiveInt,
    PositiveFloat,
    NumberList,
    LearningRate,
)


def numeric_options():
    """Every flag of every command that takes a number (the settings' flags say their default and
    variable by construction)."""
    for name in sorted(COMMANDS):
        for option in command(name).params:
            if isinstance(option, click.Option) and isinstance(option.type, NUMBER_TYPES):
                yield pytest.param(command(name), option, id=f"{name} {option.opts[0]}")


@pytest.mark.parametrize("cmd, option", list(numeric_options()))
def test_every_numeric_flag_says_what_it_means_and_its_default(cmd, option):
    context = click.Context(cmd, info_name=cmd.name)
    _, help_text = option.get_help_record(context)
    assert help_text.strip() and not help_text.startswith("[")  # words, not just the default
    default = option.get_default(context, call=False)
    if isinstance(default, int | float | str):
        assert "default" in help_text, help_text


def test_serve_help_lists_every_backend_and_its_default_auto():
    result = subprocess.run(
        [sys.executable, "-m", "stream_kt.cli", "serve", "--help"], capture_output=True, text=True, timeout=120
    )
    help_text = " ".join(result.stdout.split())
    backend = help_text[help_text.index("--backend BACKEND") :].split(" --")[0]
    assert result.returncode == 0 and all(choice in backend for choice in BACKEND_CHOICES), backend
    assert "default auto" in backend


def test_serve_with_an_unknown_backend_is_one_line_before_it_connects(tmp_path: Path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    args = [
        sys.executable,
        "-m",
        "stream_kt.cli",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--backend",
        "tpu",
        "--bootstrap",
        "127.0.0.1:1",
        "--metrics-port",
        "0",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"stream-kt serve: error: unknown backend 'tpu': choose one of auto, {', '.join(sorted(BACKEND_CHOICES[1:]))}"
    ]


def imported_modules(*args: str) -> set[str]:
    """The top-level packages ``python -m stream_kt.cli ARGS`` imports (``-X importtime`` lists each on stderr)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stream_kt.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|")[-1] for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert len(rows) > 50, result.stderr[-2000:]  # the listing is there: an empty set would pass for the wrong reason
    return {row.strip().split(".")[0] for row in rows}


def test_help_lists_every_command_without_importing_torch_or_matplotlib():
    modules = imported_modules("--help")
    assert {"click", "stream_kt"} <= modules
    assert not modules & {"torch", "matplotlib", "numpy", "pandas", "aiokafka", "redis"}


def test_serve_help_imports_no_matplotlib():
    modules = imported_modules("serve", "--help")
    assert "torch" in modules and "matplotlib" not in modules


def test_the_command_list_names_each_command_of_each_module():
    """``COMMANDS`` lists every command of every module in stream_kt/commands (a new one left out would never run)."""
    import importlib
    import pkgutil

    import stream_kt.commands

    found = {}
    for info in pkgutil.iter_modules(stream_kt.commands.__path__):
        for cmd in getattr(importlib.import_module(f"stream_kt.commands.{info.name}"), "COMMANDS", ()):
            found[cmd.name] = info.name
    assert found == {name: module for name, (module, _) in COMMANDS.items()}
    help_text = subprocess.run(
        [sys.executable, "-m", "stream_kt.cli", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert [
        line.split()[0]
        for line in help_text.split("Commands:")[1].splitlines()
        if line.startswith("  ") and not line.startswith("    ")
    ] == sorted(COMMANDS)


def test_an_unknown_command_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "stream_kt.cli", "sevre"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["stream-kt: error: No such command 'sevre'."]
