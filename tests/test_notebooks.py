"""Every notebook runs top to bottom through the self-check: the instructor's solution earns
full marks on every step; the learner's copy, untouched, runs without other errors than
NotImplementedError and earns nothing."""

from __future__ import annotations

import pytest
from conftest import NOTEBOOKS, SOLUTIONS, executed_notebook

from autograder.grading import nbgrader_tools as nbt

NAMES = sorted(p.stem for p in SOLUTIONS.glob("*.ipynb"))


@pytest.fixture(scope="module")
def reports():
    """Each notebook is executed once per session, whichever tests ask for it (the notebooks'
    own section tests read the same reports)."""
    return executed_notebook


def test_there_are_notebooks():
    assert NAMES, "solutions/ holds no notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_solution_scores_full_marks(reports, name):
    report = reports(SOLUTIONS / f"{name}.ipynb")
    assert report.stopped_early is None, report.stopped_early
    assert report.errors == [], f"cells raised: {report.errors}"
    assert report.steps, "no graded steps"
    failed = {s.id: f"{s.points:g}/{s.max_points:g}: {s.message[-400:]}" for s in report.steps if not s.passed}
    assert not failed, failed
    assert report.score == report.max_score > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_learner_notebook_runs_and_scores_zero(reports, name):
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.exists(), f"{path} is missing: run `./course release` and commit notebooks/"
    report = reports(path)
    assert report.stopped_early is None, report.stopped_early
    unexpected = [e for e in report.errors if e[1] != "NotImplementedError"]
    assert not unexpected, f"cells raised something other than NotImplementedError: {unexpected}"
    earned = {s.id: s.points for s in report.steps if s.points != 0}
    assert not earned, f"an untouched learner notebook earns points: {earned}"
    # Test cells themselves never crash on an unfinished step: each reports and returns 0.
    crashed = [
        nbt.grade_id(c) for c in report.executed.cells
        if nbt.is_test_cell(c) and any(o.get("output_type") == "error" for o in c.outputs)
    ]
    assert not crashed, f"test cells raised instead of reporting: {crashed}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_learner_and_solution_grade_the_same_steps(reports, name):
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.exists(), f"{path} is missing: run `./course release` and commit notebooks/"
    sol = reports(SOLUTIONS / f"{name}.ipynb")
    learner = reports(path)
    assert [(s.id, s.max_points) for s in learner.steps] == [(s.id, s.max_points) for s in sol.steps]


def _outputs_text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif "data" in o:
            parts.append(str(o["data"].get("text/plain", "")))
    return "".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_printed_numbers_keep_one_precision(reports, name):
    """No float printed with all its digits (0.9999999403953552 next to 0.369) and no printed
    tensor that switches to scientific notation half way."""
    report = reports(SOLUTIONS / f"{name}.ipynb")
    import re

    for i, cell in enumerate(report.executed.cells):
        text = _outputs_text(cell)
        long_floats = re.findall(r"(?<![\w.])-?\d+\.\d{8,}", text)
        assert not long_floats, f"{name} cell {i} prints {long_floats[:3]}: format it (e.g. :.3f)"
        for line in text.splitlines():
            if "tensor(" in line or line.lstrip().startswith("["):
                assert not re.search(r"\de[-+]\d\d", line), f"{name} cell {i} prints a tensor in scientific notation: {line[:120]}"


@pytest.mark.slow
def test_vectorised_heads_are_faster_than_the_loop_as_the_text_says(reports):
    """02 says the vectorised heads beat the loop; timed on one thread, it holds on a busy machine."""
    import re

    report = reports(SOLUTIONS / "02_multiple_heads.ipynb")
    text = "".join(_outputs_text(c) for c in report.executed.cells)
    found = re.search(r"one thread: loop ([\d.]+) ms, vectorised ([\d.]+) ms \(([\d.]+)x faster\)", text)
    assert found, "02 no longer prints its timing line"
    loop_ms, vec_ms = float(found.group(1)), float(found.group(2))
    assert vec_ms < loop_ms, f"vectorised {vec_ms} ms is not faster than the loop's {loop_ms} ms"
