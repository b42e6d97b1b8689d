"""The quick tier (``-m "not slow"``) starts no Jupyter kernel and no nbgrader: conftest.py's guard
refuses both, in the test process and in every Python process a test starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _started_in_child(argv):
    code = f"import subprocess\ntry:\n    subprocess.Popen({argv!r})\nexcept RuntimeError as e:\n    print(e)\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout


def test_a_kernel_or_nbgrader_started_by_a_quick_test_is_refused_and_recorded():
    record = Path(os.environ["MHSA_QUICK_TIER_GUARD"])
    try:
        assert "started a Jupyter kernel" in _started_in_child([sys.executable, "-m", "ipykernel_launcher", "-f", "k.json"])
        assert "started nbgrader" in _started_in_child(["/venv/bin/nbgrader", "autograde", "x"])
        with pytest.raises(RuntimeError, match="kernel"):
            subprocess.Popen([sys.executable, "sandbox_kernel.py", "--", "-f", "k.json"])
        assert record.read_text(encoding="utf-8").count("\n") == 3
    finally:
        record.unlink(missing_ok=True)  # the refusals above were this test's point, not a fault


def test_other_processes_still_start():
    proc = subprocess.run([sys.executable, "-c", "print('fine')"], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "fine"
