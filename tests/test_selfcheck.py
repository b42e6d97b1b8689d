"""`python -m autograder check`: the per-step points it reports are nbgrader's, its JSON has the
promised shape, and its exit code is non-zero only when the notebook cannot be read or run."""

from __future__ import annotations

import json

import pytest
from conftest import code, graded_cell, markdown, notebook, run_cli, solution, write

CELLS = [
    markdown("Self-check fixture: one step of each kind nbgrader scores differently."),
    code("import sys\nhelper = 'data.txt'\nDATA = open(helper).read().strip()"),
    solution("double", "def double(x):\n    return 2 * x"),
    graded_cell("check_double", 2, "assert double(3) == 6\nprint('double: all checks pass')\n2.0"),
    # Partial credit: the cell's value is a float below the maximum.
    graded_cell("check_partial", 4, "print('partial: 3 of 8 sub-parts hold')\n1.5"),
    # An error in the test cell: 0 points, the message names the exception.
    graded_cell("check_error", 3, "print('about to fail')\nraise ValueError('shapes (2, 3) and (4,) differ')"),
    # Anything on stderr costs the whole cell, even with a full-marks value.
    graded_cell("check_stderr", 1, "print('looks fine')\nprint('a warning', file=sys.stderr)\n1.0"),
    # No numeric value: full marks, like nbgrader.
    graded_cell("check_no_value", 2, "print('reads the data file:', DATA)"),
    # A value above the maximum is clamped (nbgrader itself would refuse the cell).
    graded_cell("check_too_much", 1, "5.0"),
    # An ordinary cell that raises does not stop the run.
    code("raise NotImplementedError()"),
    graded_cell("check_after_error", 1, "print('still runs after an error above')\n1.0"),
]


@pytest.fixture(scope="module")
def fixture_nb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learner")
    (folder / "data.txt").write_text("hello from the notebook's folder\n")
    return write(notebook(CELLS), folder / "fixture.ipynb")


@pytest.fixture(scope="module")
def json_run(fixture_nb):
    before = fixture_nb.read_bytes()
    proc = run_cli("check", fixture_nb, "--json", "--timeout", "60")
    return proc, before


@pytest.mark.slow
def test_json_is_one_object_with_the_promised_schema(json_run, fixture_nb):
    proc, _ = json_run
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert set(data) == {"notebook", "score", "max_score", "instructor_points", "total_points", "steps", "written",
                         "notes"}
    assert data["written"] == [] and data["instructor_points"] == 0.0 and data["total_points"] == data["max_score"]
    # Not a course notebook: checked as it is (nothing restored); the ordinary cell that raises is named.
    assert data["notes"] == ["cell 9 (`raise NotImplementedError()`) raised NotImplementedError"]
    assert data["notebook"] == str(fixture_nb)
    for step in data["steps"]:
        assert set(step) == {"id", "points", "max_points", "passed", "message"}
        assert isinstance(step["id"], str) and isinstance(step["message"], str)
        assert isinstance(step["passed"], bool)
        assert all(isinstance(step[k], float) for k in ("points", "max_points"))
    assert isinstance(data["score"], float) and isinstance(data["max_score"], float)


@pytest.mark.slow
def test_points_follow_nbgrader(json_run):
    data = json.loads(json_run[0].stdout)
    steps = {s["id"]: s for s in data["steps"]}
    assert list(steps) == [
        "check_double", "check_partial", "check_error", "check_stderr",
        "check_no_value", "check_too_much", "check_after_error",
    ]
    got = {k: (s["points"], s["max_points"], s["passed"]) for k, s in steps.items()}
    assert got == {
        "check_double": (2.0, 2.0, True),
        "check_partial": (1.5, 4.0, False),
        "check_error": (0.0, 3.0, False),
        "check_stderr": (0.0, 1.0, False),
        "check_no_value": (2.0, 2.0, True),
        "check_too_much": (1.0, 1.0, True),
        "check_after_error": (1.0, 1.0, True),
    }
    assert data["score"] == 7.5 and data["max_score"] == 14.0


@pytest.mark.slow
def test_messages_carry_the_report_or_the_error(json_run):
    steps = {s["id"]: s for s in json.loads(json_run[0].stdout)["steps"]}
    assert steps["check_double"]["message"] == "double: all checks pass"
    assert steps["check_partial"]["message"] == "partial: 3 of 8 sub-parts hold"
    assert "about to fail" in steps["check_error"]["message"]
    assert "ValueError: shapes (2, 3) and (4,) differ" in steps["check_error"]["message"]
    assert "stderr" in steps["check_stderr"]["message"] and "a warning" in steps["check_stderr"]["message"]
    # The kernel ran in the notebook's folder: the data file next to it was found.
    assert "hello from the notebook's folder" in steps["check_no_value"]["message"]
    assert "above" in steps["check_too_much"]["message"]


@pytest.mark.slow
def test_the_notebook_file_is_not_modified(json_run, fixture_nb):
    assert fixture_nb.read_bytes() == json_run[1]


@pytest.mark.slow
def test_table_output_lists_every_step(fixture_nb):
    proc = run_cli("check", fixture_nb, "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "✓ check_double" in out and "2 / 2" in out
    assert "✗ check_partial" in out and "1.5 / 4" in out
    assert "✗ check_error" in out and "ValueError" in out
    assert "cell 9: NotImplementedError" in out  # the ordinary cell that raised
    assert "Score: 7.5 of 14 auto-graded points" in out and "instructor" not in out


@pytest.mark.slow
def test_a_cell_past_its_time_limit_scores_zero_and_the_rest_still_runs(tmp_path):
    nb = notebook([
        graded_cell("check_slow", 2, "import time\ntime.sleep(60)\n2.0"),
        graded_cell("check_fast", 1, "1.0"),
    ])
    path = write(nb, tmp_path / "slow.ipynb")
    proc = run_cli("check", path, "--json", "--timeout", "2", timeout=120)
    assert proc.returncode == 0, proc.stderr
    steps = {s["id"]: s for s in json.loads(proc.stdout)["steps"]}
    assert steps["check_slow"]["points"] == 0.0 and not steps["check_slow"]["passed"]
    assert "CellTimeoutError" in steps["check_slow"]["message"] and "time limit of 2 s" in steps["check_slow"]["message"]
    assert steps["check_fast"]["points"] == 1.0


@pytest.mark.slow
def test_the_total_time_limit_stops_the_run(tmp_path):
    nb = notebook([
        code("import time\ntime.sleep(1)"),
        code("time.sleep(1)"),
        graded_cell("check_late", 2, "2.0"),
    ])
    path = write(nb, tmp_path / "long.ipynb")
    proc = run_cli("check", path, "--json", "--timeout", "30", "--total-timeout", "1.5", timeout=120)
    assert proc.returncode == 0, proc.stderr
    (step,) = json.loads(proc.stdout)["steps"]
    assert step["points"] == 0.0 and not step["passed"]
    assert "not run" in step["message"] and "time limit" in step["message"]


def _one_line_reason(proc):
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_missing_file_fails_with_one_line(tmp_path):
    reason = _one_line_reason(run_cli("check", tmp_path / "nope.ipynb", "--json"))
    assert "nope.ipynb" in reason and "no such file" in reason


class _Proc:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _in_process(capsys, *args):
    """The command line's main(), in this process (no interpreter start-up per case)."""
    from autograder.__main__ import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return _Proc(code, out.out, out.err)


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"cells": [ {"cell_type": "code", ', "invalid JSON"),
        ("[1, 2, 3]", "not a Jupyter notebook"),
        ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"source": "x"}]}', "not a usable notebook"),
        ("", "invalid JSON"),
    ],
)
def test_unreadable_notebooks_fail_with_one_line(tmp_path, capsys, text, reason):
    path = tmp_path / "broken.ipynb"
    path.write_text(text)
    line = _one_line_reason(_in_process(capsys, "check", path, "--json"))
    assert "broken.ipynb" in line and reason in line


def test_a_folder_is_not_a_notebook(tmp_path, capsys):
    line = _one_line_reason(_in_process(capsys, "check", tmp_path))
    assert "folder" in line


@pytest.mark.slow
def test_a_notebook_without_graded_steps_scores_zero_of_zero(tmp_path):
    path = write(notebook([code("x = 1")]), tmp_path / "plain.ipynb")
    proc = run_cli("check", path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"notebook": str(path), "score": 0.0, "max_score": 0.0, "instructor_points": 0.0,
                                       "total_points": 0.0, "steps": [], "written": [], "notes": []}


# --------------------------------------------------------------------------- released test cells


@pytest.fixture()
def course_copy(tmp_path, tiny_source_nb):
    """An instructor notebook in a solutions/ folder, and a learner's copy of it (same file name)
    whose test cell check_double was edited to pass anything, whose check_triple test cell was
    deleted, and whose triple() is wrong."""
    import nbformat

    solutions = tmp_path / "solutions"
    source_path = write(tiny_source_nb, solutions / "01_tiny.ipynb")
    learner = nbformat.from_dict(nbformat.reads(nbformat.writes(tiny_source_nb), as_version=4))
    cells = []
    for cell in learner.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "check_double":
            cell.source = "print('double: fine, trust me')\n2.0"
        elif gid == "check_triple":
            continue
        elif gid == "triple":
            cell.source = "def triple(x):\n    return 0\n"
        cells.append(cell)
    learner.cells = cells
    return solutions, source_path, write(learner, tmp_path / "learner" / "01_tiny.ipynb")


def _steps(report):
    return {s.id: s for s in report.steps}


@pytest.mark.slow
def test_edited_and_deleted_test_cells_are_checked_as_released(course_copy):
    from autograder.grading.selfcheck import check_notebook

    solutions, _, learner = course_copy
    report = check_notebook(learner, cell_timeout=60, total_timeout=120, solutions=solutions)
    steps = _steps(report)
    assert set(steps) == {"check_double", "check_triple"}
    assert steps["check_double"].points == 2.0 and "double(3) = 6" in steps["check_double"].message
    assert "double(-5)" not in steps["check_double"].message  # hidden tests stay out of the self-check
    assert steps["check_triple"].points == 0.0 and "triple(2) should be 6" in steps["check_triple"].message
    assert any("'check_double' was edited" in n for n in report.notes), report.notes
    assert any("'check_triple' was missing" in n for n in report.notes), report.notes
    # As it is, the same notebook would look better than its grade will be.
    as_is = _steps(check_notebook(learner, cell_timeout=60, total_timeout=120, solutions=None))
    assert set(as_is) == {"check_double"} and "trust me" in as_is["check_double"].message


@pytest.mark.slow
def test_the_instructor_notebook_itself_is_checked_as_it_is(course_copy):
    from autograder.grading.selfcheck import check_notebook

    solutions, source, _ = course_copy
    report = check_notebook(source, cell_timeout=60, total_timeout=120, solutions=solutions)
    assert report.notes == []
    steps = _steps(report)
    assert "double(-5)" in steps["check_double"].message  # its hidden tests ran
    assert report.score == report.max_score == 5.0


def test_released_copy_only_for_notebooks_of_the_course(course_copy, tmp_path):
    import nbformat

    from autograder.grading.selfcheck import released_copy

    solutions, source, learner = course_copy
    nb = nbformat.read(str(learner), as_version=4)
    released = released_copy(learner, nb, solutions)
    tests = [c for c in released.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(tests) == 2 and all("HIDDEN" not in c.source and "hidden=True" not in c.source for c in tests)
    assert released_copy(source, nb, solutions) is None  # the instructor notebook itself
    assert released_copy(tmp_path / "other.ipynb", nb, solutions) is None  # no instructor copy of that name
    stranger = write(notebook([graded_cell("check_other", 1, "1.0")]), tmp_path / "x" / "01_tiny.ipynb")
    assert released_copy(stranger, nbformat.read(str(stranger), as_version=4), solutions) is None


# --------------------------------------------------------------------------- scoring rule


def _executed_cell(points, outputs):
    import nbformat

    cell = graded_cell("check_x", points, "...")
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


def _result(text):
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {}, "data": {"text/plain": text}}


def _stream(name, text):
    return {"output_type": "stream", "name": name, "text": text}


_ERROR = {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []}


@pytest.mark.parametrize(
    "outputs, expected",
    [
        ([], 3.0),
        ([_stream("stdout", "report\n")], 3.0),
        ([_stream("stdout", "report\n"), _result("1.25")], 1.25),
        ([_result("0.0")], 0.0),
        ([_result("3.0")], 3.0),
        ([_result("True")], 3.0),  # a bool is full marks
        ([_result("None-ish text")], 3.0),
        ([_result("tensor(0.5000)")], 3.0),  # only a plain number is partial credit
        ([_stream("stderr", "warning\n"), _result("3.0")], 0.0),
        ([_stream("stdout", "report\n"), _ERROR], 0.0),
        ([_result("2.0"), _stream("stderr", "late\n")], 2.0),  # the first deciding output wins
    ],
)
def test_cell_scores_agree_with_nbgrader(outputs, expected):
    from nbgrader.utils import determine_grade

    from autograder.grading.nbgrader_tools import score_test_cell

    cell = _executed_cell(3, outputs)
    assert score_test_cell(cell).points == expected
    assert determine_grade(cell)[0] == expected


@pytest.mark.parametrize("text, expected", [("-1.0", 0.0), ("nan", 0.0), ("7.5", 3.0), ("inf", 3.0)])
def test_odd_values_are_clamped_and_explained(text, expected):
    from autograder.grading.nbgrader_tools import score_test_cell

    score = score_test_cell(_executed_cell(3, [_result(text)]))
    assert score.points == expected and score.note


# --------------------------------------------------------------------------- written parts


def _written_cell(grade_id, points, text, kind="markdown", task=False):
    import nbformat

    cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
    meta = {"grade": not task, "solution": not task, "locked": task, "points": points, "grade_id": grade_id,
            "schema_version": 3}
    if task:
        meta["task"] = True
    cell.metadata["nbgrader"] = meta
    return cell


def _written_source():
    return notebook([
        markdown("Write a spec."),
        _written_cell("spec", 3, "### BEGIN SOLUTION\nA model answer.\n### END SOLUTION"),
        graded_cell("check_x", 2, "2.0"),
        _written_cell("why", 2, "# a model answer in code\nprint('because')", kind="code"),
        _written_cell("task", 1, "Explain the plot.", task=True),
        _written_cell("later", 1, "### BEGIN SOLUTION\nAnother.\n### END SOLUTION"),
    ])


def _learner(source, texts):
    import nbformat

    from autograder.grading import nbgrader_tools as nbt

    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(source), as_version=4))
    cells = []
    for cell in nb.cells:
        gid = nbt.grade_id(cell)
        if gid in texts:
            if texts[gid] is None:
                continue  # deleted
            cell.source = texts[gid]
        cells.append(cell)
    nb.cells = cells
    return nb


def test_written_parts_are_blank_or_pending_with_the_sources_points():
    from autograder.grading import nbgrader_tools as nbt
    from autograder.grading.selfcheck import written_parts

    source = _written_source()
    learner = _learner(source, {"spec": "YOUR ANSWER HERE", "why": nbt.CODE_STUB, "task": "My explanation.",
                                "later": None})
    learner.cells[1].metadata["nbgrader"]["points"] = 99  # a learner's edit does not change the points
    parts = {w.id: (w.points, w.state, w.label) for w in written_parts(learner, source)}
    assert parts == {
        "spec": (3.0, "blank", "blank (3 points)"),
        "why": (2.0, "blank", "blank (2 points)"),
        "task": (1.0, "pending", "pending instructor grading (1 point)"),
        "later": (1.0, "blank", "blank (1 point)"),  # deleted
    }
    filled = _learner(source, {"spec": "My spec:\n\n| part | shape |", "why": "print('it is the norm')",
                               "later": "  \n"})
    states = {w.id: w.state for w in written_parts(filled, source)}
    assert states == {"spec": "pending", "why": "pending", "task": "pending", "later": "blank"}
    # Without the instructor's copy, the notebook's own cells (the instructor notebook itself).
    assert [w.state for w in written_parts(source)] == ["pending"] * 4
    # Test cells and ordinary answers are not written parts.
    assert written_parts(notebook([graded_cell("check_y", 1, "1.0"), solution("f", "def f(): pass")])) == []


def _report(written, steps=((2.0, 2.0),)):
    from autograder.grading.selfcheck import CheckReport, StepResult, WrittenPart

    report = CheckReport(notebook="nb.ipynb", seconds=1.0)
    report.steps = [StepResult(f"check_{i}", p, m, p >= m, "") for i, (p, m) in enumerate(steps)]
    report.written = [WrittenPart(*w) for w in written]
    return report


def test_the_table_shows_written_parts_and_the_gradebooks_total():
    from autograder.grading.selfcheck import format_table

    report = _report([("spec", 3.0, "blank"), ("why", 2.0, "pending")], steps=((2.0, 2.0), (1.5, 3.0)))
    text = format_table(report)
    assert "spec  blank (3 points): write your answer in its cell" in text
    assert "why   pending instructor grading (2 points)" in text
    assert "Score: 3.5 of 5 auto-graded points, 5 points graded by your instructor (10 points in all)" in text
    assert "Still blank: spec (3 points)." in text
    data = report.to_dict()
    assert (data["score"], data["max_score"], data["instructor_points"], data["total_points"]) == (3.5, 5.0, 5.0, 10.0)
    assert data["written"][0] == {"id": "spec", "points": 3.0, "state": "blank", "label": "blank (3 points)"}
    # All filled in: nothing is said to be blank, and the total still counts the instructor's points.
    done = format_table(_report([("spec", 3.0, "pending")]))
    assert "Still blank" not in done and "(5 points in all)" in done and "2 of 2 auto-graded points" in done


@pytest.mark.slow
def test_the_real_written_parts_of_notebooks_04_and_06(tmp_path):
    """The released notebooks: 04's design spec and 06's root causes, blank or written, and
    totals equal to the gradebook's maximum (every point of the instructor's notebook)."""
    import shutil

    import nbformat
    from conftest import NOTEBOOKS, SOLUTIONS

    from autograder.grading import nbgrader_tools as nbt

    def gradebook_max(name):
        source = nbformat.read(str(SOLUTIONS / name), as_version=4)
        return sum(nbt.max_points(c) for c in source.cells if nbt.is_grade(c) or nbt.nbgrader_meta(c).get("task"))

    name04, name06 = "04_transformer_block.ipynb", "06_debugging_transformer_blocks.ipynb"
    shutil.copy(NOTEBOOKS / name04, tmp_path / name04)
    learner = nbformat.read(str(NOTEBOOKS / name06), as_version=4)
    set_text = {"rootcause_norms": "The second norm sits on the residual path: post-norm."}
    for cell in learner.cells:
        if nbt.grade_id(cell) in set_text:
            cell.source = set_text[nbt.grade_id(cell)]
    write(learner, tmp_path / name06)
    if (NOTEBOOKS / "data").is_dir():
        shutil.copytree(NOTEBOOKS / "data", tmp_path / "data")

    proc = run_cli("check", tmp_path / name04, "--json", "--timeout", "120")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(w["id"], w["points"], w["state"]) for w in data["written"]] == [("design_spec", 3.0, "blank")]
    assert data["total_points"] == data["max_score"] + 3 == gradebook_max(name04)

    proc = run_cli("check", tmp_path / name06, "--timeout", "120")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "rootcause_norms        pending instructor grading (2 points)" in out
    for gid in ("rootcause_merge", "rootcause_instability", "rootcause_slowdown"):
        assert f"{gid}" in out and "blank (2 points)" in out
    auto = gradebook_max(name06) - 8
    assert f"of {auto:g} auto-graded points, 8 points graded by your instructor ({gradebook_max(name06):g} points in all)" in out
    assert "Still blank: rootcause_merge, rootcause_instability, rootcause_slowdown (6 points)." in out
