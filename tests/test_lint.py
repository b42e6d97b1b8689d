"""The linter (ruff, with the rule set in pyproject.toml) finds nothing in the course's code."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff():
    try:
        import ruff  # noqa: F401  (installed by `./course test` from requirements-test.txt)
    except ImportError:
        if shutil.which("ruff") is None:
            pytest.skip("ruff is not installed here: `./course test` installs it from requirements-test.txt")
        return ["ruff"]
    return [sys.executable, "-m", "ruff"]


def test_ruff_finds_nothing():
    done = subprocess.run([*_ruff(), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_would_find_an_unused_import(tmp_path):
    """The check can fail: the same command on a file with an unused import reports it."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text().replace(
        'include = ["autograder/**/*.py", "mhsa_lib/**/*.py", "tests/**/*.py", "benchmarks/**/*.py"]', ""))
    (tmp_path / "bad.py").write_text("import os\n")
    done = subprocess.run([*_ruff(), "check", "--no-cache", "."], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1 and "F401" in done.stdout, done.stdout + done.stderr
