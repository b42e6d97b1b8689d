"""The self-check (``./course check``) and the class grader (``./course autograde``) run notebooks
through one executor, autograder/grading/engine.py, and give the same points for the same
notebook: test cells restored the same way, run under the same limits, scored the same way."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, code, graded_cell, markdown, notebook, solution, write

from autograder.grading import engine, selfcheck, worker

GRADING = ROOT / "autograder" / "grading"

# A check in the course's style, defined in the notebook itself: not a course step, so the grader
# runs its test cells as nbgrader would (and says so) instead of judging them outside.
GRADE_DOUBLE = '''\
def grade_double(fn, points=2.0, hidden=False):
    cases = [(1, 2), (3, 6)] + ([(-5, -10), (7, 14)] if hidden else [])
    good = sum(fn(x) == want for x, want in cases)
    print(f"double: {good} of {len(cases)} cases right")
    return float(points * good / len(cases))
'''


def _source():
    return notebook([
        markdown("Double a number, then triple one."),
        code(GRADE_DOUBLE),
        solution("double", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"),
        graded_cell("check_double", 2, "grade_double(double)\n### BEGIN HIDDEN TESTS\n"
                                       "grade_double(double, hidden=True)\n### END HIDDEN TESTS\n"),
        solution("triple", "def triple(x):\n    ### BEGIN SOLUTION\n    return 3 * x\n    ### END SOLUTION\n"),
        graded_cell("check_triple", 3, "assert triple(2) == 6, 'triple(2) should be 6'\nprint('triple: ok')\n"
                                       "### BEGIN HIDDEN TESTS\nassert triple(-4) == -12\n### END HIDDEN TESTS\n"),
    ])


def _submission(source):
    """A correct double, a wrong triple, and the test cell of triple edited to pass anything."""
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(source), as_version=4))
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "double":
            cell.source = "def double(x):\n    return x * 2\n"
        elif gid == "triple":
            cell.source = "def triple(x):\n    return x + x\n"
        elif gid == "check_triple":
            cell.source = "print('triple: fine, trust me')\n3.0"
    return nb


@pytest.mark.slow
def test_self_check_and_grader_run_one_executor_and_agree(tmp_path, monkeypatch):
    source_path = write(_source(), tmp_path / "solutions" / "01_tiny.ipynb")
    learner = write(_submission(_source()), tmp_path / "learner" / "01_tiny.ipynb")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # the worker sets it for its kernel
    callers = []
    real_execute = engine.execute

    def spy(*args, **kwargs):
        callers.append("self-check")  # (the grader's runner calls it in its own, sandboxed process)
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(engine, "execute", spy)
    from autograder.grading import sandbox

    sandboxed = []
    real_run = sandbox.run

    def run_spy(spec, argv, **kwargs):  # the grader runs the notebook in its sandbox, in another process
        sandboxed.append(list(argv))
        return real_run(spec, argv, **kwargs)

    monkeypatch.setattr(sandbox, "run", run_spy)

    report = selfcheck.check_notebook(learner, cell_timeout=60, total_timeout=120, solutions=tmp_path / "solutions")
    result = worker.grade({
        "student": "alice", "assignment": "01_tiny", "notebook": "01_tiny.ipynb",
        "submission_dir": str(learner.parent), "source_notebook": str(source_path), "seed": "1",
        "limits": engine.Limits(cell_timeout=60, total_timeout=120).to_dict(), "guard": True,
        "tmp_root": str(tmp_path),
    })

    # The self-check ran the notebook through engine.execute here; the grader through the runner
    # in its sandbox, which runs it through engine.execute too.
    assert callers == ["self-check"]
    assert len(sandboxed) == 1 and "autograder.grading.run_notebook" in sandboxed[0]
    runner = (GRADING / "run_notebook.py").read_text(encoding="utf-8")
    assert "engine.execute(" in runner
    assert result["status"] == "ok", result["message"]
    checked = {s.id: (s.points, s.max_points, s.passed) for s in report.steps}
    graded = {s["id"]: (s["points"], s["max_points"], s["passed"]) for s in result["steps"]}
    assert checked == graded == {"check_double": (2.0, 2.0, True), "check_triple": (0.0, 3.0, False)}
    assert report.score == result["score"] == 2.0
    # The edited test cell was put back by both, and both say so.
    for notes in (report.notes, result["notes"]):
        assert any("'check_triple' was edited" in n for n in notes), notes
    assert "triple(2) should be 6" in {s.id: s.message for s in report.steps}["check_triple"]


def _sibling_imports(path: Path):
    """The modules of autograder/grading that ``path`` imports, at any depth (functions too)."""
    siblings = {p.stem for p in GRADING.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("autograder.grading."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("autograder.grading."):
                    found.add(a.name.split(".")[2])
    return (found & siblings) - {path.stem}


def test_only_the_engine_runs_notebooks():
    runners = sorted(p.name for p in GRADING.glob("*.py")
                     if any(w in p.read_text(encoding="utf-8") for w in ("NotebookClient", "nbclient", "setup_kernel")))
    assert runners == ["engine.py"]
    for name in ("selfcheck.py", "worker.py"):
        assert "engine" in _sibling_imports(GRADING / name)


def test_no_import_cycles_in_grading():
    graph = {p.stem: _sibling_imports(p) for p in GRADING.glob("*.py") if p.stem != "__init__"}

    def visit(node, path):
        for nxt in sorted(graph.get(node, ())):
            assert nxt not in path, "import cycle: " + " -> ".join([*path, nxt])
            visit(nxt, [*path, nxt])

    for start in graph:
        visit(start, [start])
