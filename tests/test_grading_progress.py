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


def _row(path, steps_passed=True, written=()):
    steps = [{"id": "s", "points": 2.0 if steps_passed else 0.5, "max_points": 2.0, "passed": steps_passed,
              "message": "s: 0.5 / 2 points\n  ✗ random cases"}]
    return progress.Row(path, steps=steps, written=[{"id": i, "points": p, "state": st} for i, p, st in written])


def test_written_parts_are_in_the_table_the_totals_and_the_next_step(tmp_path):
    spec = _row(tmp_path / "04_block.ipynb", written=[("design_spec", 3.0, "blank")])
    causes = _row(tmp_path / "06_debug.ipynb", written=[("rootcause_a", 2.0, "pending"), ("rootcause_b", 2.0, "blank")])
    plain = _row(tmp_path / "00_plain.ipynb")
    rows = [plain, spec, causes]
    text = progress.format_progress(rows, tmp_path)
    lines = {l.split()[0]: l for l in text.splitlines() if l.startswith("  ") and l.split()}
    assert "3 pt, 1 of 1 blank" in lines["04_block"] and "written part blank" in lines["04_block"]
    assert "4 pt, 1 of 2 blank" in lines["06_debug"]
    assert lines["00_plain"].split()[-1] == "done" and " - " in lines["00_plain"]
    assert ("Total: 3 / 3 steps pass, 6 of 6 auto-graded points, 7 points graded by your instructor "
            "(13 points in all)") in text
    nxt = progress.next_step(rows)
    assert "Well done" not in nxt and "04_block" in nxt and "design_spec" in nxt and "blank" in nxt
    # A failing auto-graded step earlier in the course comes first.
    assert "step s" in progress.next_step([_row(tmp_path / "00.ipynb", steps_passed=False), spec])


def test_everything_passing_with_written_parts_pending_is_not_called_finished(tmp_path):
    rows = [_row(tmp_path / "04.ipynb", written=[("design_spec", 3.0, "pending")])]
    nxt = progress.next_step(rows)
    assert "Well done" not in nxt and "3 points of written parts await your instructor's grading" in nxt
    assert rows[0].state == "done"
    assert "3 pt, pending grading" in progress.format_progress(rows, tmp_path)


@pytest.mark.slow
def test_progress_counts_the_written_parts_of_the_real_notebook_04(tmp_path):
    from autograder.grading import nbgrader_tools as nbt

    name = "04_transformer_block.ipynb"
    shutil.copy(NOTEBOOKS / name, tmp_path / name)
    source = nbformat.read(str(SOLUTIONS / name), as_version=4)
    gradebook_max = sum(nbt.max_points(c) for c in source.cells if nbt.is_grade(c))
    proc = run_cli("progress", "--notebooks", tmp_path, "--timeout", 120, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    row = next(l for l in out.splitlines() if l.strip().startswith(name[:-6]))
    assert "3 pt, 1 of 1 blank" in row
    assert f"3 points graded by your instructor ({gradebook_max:g} points in all)" in out
    assert "Well done" not in out
