"""The README's first command: `./course start` opens JupyterLab on notebooks/ with a kernel of
the course's environment (here headless, on a free port, stopped once it answers)."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_course_start_serves_the_learner_notebooks(tmp_path):
    port, token = _free_port(), "course-test"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    proc = subprocess.Popen(
        [str(ROOT / "course"), "start", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}"],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/api"
        deadline, contents = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                contents = _get(f"{base}/contents?token={token}")
                break
            except OSError:
                time.sleep(0.5)
        assert contents is not None, proc.stdout.read().decode(errors="replace") if proc.poll() is not None else "no answer"
        names = {item["name"] for item in contents["content"]}
        assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} <= names
        specs = _get(f"{base}/kernelspecs?token={token}")
        assert "python3" in specs["kernelspecs"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_course_help_lists_the_commands():
    out = subprocess.run([str(ROOT / "course"), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("./course start", "./course test", "./course check NOTEBOOK"):
        assert command in out
