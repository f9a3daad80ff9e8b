"""The rooms import only what lies below them: the layout is the architecture.

Lowest first: errors, metrics, progress bars, settings; data; models; backends and the checkpoint
format; the service and training (neither imports the other); the tools; the commands
and the CLI on top.  benchmarks/ and fault_suite/ stand beside the tools and never
import the commands.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

ALLOWED = {
    "stream_kt.errors": set(),
    "stream_kt.prediction_metrics": set(),
    "stream_kt.progress": set(),
    "stream_kt.settings": {"stream_kt.errors"},
    "stream_kt.data": {"stream_kt.errors"},
    "stream_kt.models": {"stream_kt.errors", "stream_kt.data", "stream_kt.prediction_metrics"},
    "stream_kt.backends": {"stream_kt.errors", "stream_kt.data", "stream_kt.models"},
    "stream_kt.checkpoint": {"stream_kt.errors", "stream_kt.data", "stream_kt.models"},
    "stream_kt.service": {
        "stream_kt.errors",
        "stream_kt.settings",
        "stream_kt.data",
        "stream_kt.models",
        "stream_kt.backends",
        "stream_kt.checkpoint",
        "stream_kt.prediction_metrics",
    },
    "stream_kt.training": {
        "stream_kt.errors",
        "stream_kt.data",
        "stream_kt.models",
        "stream_kt.backends",
        "stream_kt.checkpoint",
        "stream_kt.prediction_metrics",
        "stream_kt.progress",
    },
    "stream_kt.tools": {
        "stream_kt.errors",
        "stream_kt.settings",
        "stream_kt.data",
        "stream_kt.models",
        "stream_kt.backends",
        "stream_kt.checkpoint",
        "stream_kt.prediction_metrics",
        "stream_kt.progress",
        "stream_kt.service",
        "stream_kt.training",
    },  # fmt: skip
}
NEVER_FROM_OUTSIDE = {
    "benchmarks": {"stream_kt.commands", "stream_kt.cli"},
    "fault_suite": {"stream_kt.commands", "stream_kt.cli"},
}


def room_of(module: str) -> str:
    """``stream_kt.service.processor`` -> ``stream_kt.service``; top-level modules are rooms of their own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "stream_kt" and len(parts) > 1 else parts[0]


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if node.module in ("stream_kt",)}
    return {name for name in found if name.split(".")[0] in ("stream_kt", "benchmarks", "fault_suite")}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_the_rooms_below_it(room: str) -> None:
    base = ROOT / Path(*room.split("."))
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    assert files, room
    wrong = {
        f"{module_name(path)} imports {name}"
        for path in files
        for name in imports_of(path)
        if room_of(name) != room and room_of(name) not in ALLOWED[room]
    }
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("package", sorted(NEVER_FROM_OUTSIDE))
def test_benchmarks_and_the_fault_suite_never_import_the_commands(package: str) -> None:
    wrong = {
        f"{module_name(path)} imports {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in imports_of(path)
        if room_of(name) in NEVER_FROM_OUTSIDE[package]
    }
    assert not wrong, sorted(wrong)


def test_the_service_and_the_settings_import_no_click() -> None:
    """The settings' click flags live in the commands (``commands/settings_flags.py``): the pure service and the
    settings load without click."""
    code = "import sys, stream_kt.service.events, stream_kt.settings; print('click' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout.strip() == "False", done.stdout + done.stderr
