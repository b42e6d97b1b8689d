"""Self-study progress: every notebook of a learner's folder checked, one course-wide table, and
the next thing to do."""

from __future__ import annotations

import shutil

import nbformat
import pytest
from conftest import NOTEBOOKS, SOLUTIONS, fill_submission, run_cli

from autograder.grading import progress

DONE = "00_orientation"
TODO = "01_scaled_dot_product_attention"


@pytest.fixture(scope="module")
def learner_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("learner")
    source = nbformat.read(str(SOLUTIONS / f"{DONE}.ipynb"), as_version=4)
    learner = nbformat.read(str(NOTEBOOKS / f"{DONE}.ipynb"), as_version=4)
    nbformat.write(fill_submission(learner, source), str(d / f"{DONE}.ipynb"))
    shutil.copy(NOTEBOOKS / f"{TODO}.ipynb", d / f"{TODO}.ipynb")
    (d / "zz_broken.ipynb").write_text("{ not json")
    if (NOTEBOOKS / "data").is_dir():
        shutil.copytree(NOTEBOOKS / "data", d / "data")
    return d


@pytest.mark.slow
def test_progress_table_and_next_step(learner_dir):
    proc = run_cli("progress", "--notebooks", learner_dir, "--timeout", 60, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = {l.split()[0]: l for l in out.splitlines() if l.startswith("  ") and l.split()}
    assert "4 / 4" in lines[DONE] and "5 / 5" in lines[DONE] and "done" in lines[DONE]
    assert "not started" in lines[TODO] and " 0 / " in lines[TODO]
    assert "cannot run" in lines["zz_broken"]
    assert "Total:" in out
    nxt = out.split("Next: ", 1)[1]
    assert TODO in nxt and "step " in nxt


def test_next_step_when_everything_passes(tmp_path):
    row = progress.Row(tmp_path / "a.ipynb", steps=[{"id": "s", "points": 1, "max_points": 1, "passed": True,
                                                      "message": ""}])
    assert "Well done" in progress.next_step([row])
    text = progress.format_progress([row], tmp_path)
    assert "1 / 1" in text and "done" in text
