"""Shared helpers for the grading tests: small nbgrader notebooks built in code, and the
repository's paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import nbformat
except ImportError:  # a machine with only torch and pytest (a GPU run of the library's tests)
    nbformat = None

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
QUICK_TIER_GUARD = Path(__file__).resolve().parent / "quick_tier_guard"


@pytest.fixture(autouse=True)
def _quick_tests_start_no_kernel(request, monkeypatch, tmp_path_factory):
    """A test not marked slow must not start a Jupyter kernel or nbgrader, in this process or in
    any Python process it starts (see quick_tier_guard/sitecustomize.py)."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    record = tmp_path_factory.mktemp("quick_tier_guard") / "started.txt"
    monkeypatch.setenv("MHSA_QUICK_TIER_GUARD", str(record))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(QUICK_TIER_GUARD), os.environ.get("PYTHONPATH")) if p))
    import importlib.util

    spec = importlib.util.spec_from_file_location("_quick_tier_guard", QUICK_TIER_GUARD / "sitecustomize.py")
    init = subprocess.Popen.__init__
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # guards this process too
    try:
        yield
    finally:
        subprocess.Popen.__init__ = init
    if record.exists():
        pytest.fail("this test is not marked slow but started " + record.read_text(encoding="utf-8").strip()
                    + "; mark it @pytest.mark.slow", pytrace=False)


def markdown(text):
    return nbformat.v4.new_markdown_cell(text)


def code(text):
    return nbformat.v4.new_code_cell(text)


def solution(grade_id, text):
    """An answer cell: nbgrader replaces its BEGIN/END SOLUTION region with a stub."""
    cell = nbformat.v4.new_code_cell(text)
    cell.metadata["nbgrader"] = {
        "grade": False, "solution": True, "locked": False, "grade_id": grade_id, "schema_version": 3,
    }
    return cell


def graded_cell(grade_id, points, text):
    """A locked autograded test cell worth ``points``."""
    cell = nbformat.v4.new_code_cell(text)
    cell.metadata["nbgrader"] = {
        "grade": True, "solution": False, "locked": True, "points": points,
        "grade_id": grade_id, "schema_version": 3,
    }
    return cell


def notebook(cells):
    """A notebook whose cells have stable ids (so nbgrader's output is byte-stable)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"
    nb.cells = list(cells)
    return nb


def write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# A check in the style of the course's checks, defined in the notebook so the fixture needs no
# torch: prints a report and returns the points as a plain float.
CHECK_DOUBLE = '''\
def check_double(fn, points=2.0, hidden=False):
    cases = [(1, 2), (3, 6)] + ([(-5, -10), (7, 14)] if hidden else [])
    good = 0
    for x, want in cases:
        try:
            got = fn(x)
        except NotImplementedError:
            print("double: not implemented yet")
            return 0.0
        ok = got == want
        good += ok
        print(f"double({x}) = {got!r}, expected {want}", "ok" if ok else "WRONG")
    return float(points * good / len(cases))
'''


def source_cells():
    """The cells of the tiny source notebook: an explanation, its check, two answers and their
    graded test cells (one with hidden tests)."""
    return [
        markdown("# A tiny course notebook\n\nDouble a number, then triple one."),
        code(CHECK_DOUBLE),
        solution("double", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"),
        graded_cell(
            "check_double", 2,
            "check_double(double)\n### BEGIN HIDDEN TESTS\ncheck_double(double, hidden=True)\n### END HIDDEN TESTS\n",
        ),
        solution("triple", "def triple(x):\n    ### BEGIN SOLUTION\n    y = x + x\n    return y + x\n    ### END SOLUTION\n"),
        graded_cell(
            "check_triple", 3,
            "assert triple(2) == 6, 'triple(2) should be 6'\nprint('triple: ok')\n"
            "### BEGIN HIDDEN TESTS\nassert triple(-4) == -12\n### END HIDDEN TESTS\n",
        ),
    ]


@pytest.fixture(scope="session")
def tiny_source_nb():
    """An nbgrader source notebook with two graded steps (2 + 3 points)."""
    return notebook(source_cells())


#: The committed notebooks' self-check reports, each notebook executed once per test session
#: whichever test files read it (keyed by path and contents: an edited file runs again).
_EXECUTED = {}


def executed_notebook(path):
    """``check_notebook``'s report of ``path`` (a committed solution or learner notebook) with
    generous limits (a notebook that needs more on CPU is a bug in the notebook), executed once
    per session; callers only read it."""
    import hashlib

    from autograder.grading.selfcheck import check_notebook

    path = Path(path).resolve()
    key = (str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    if key not in _EXECUTED:
        _EXECUTED[key] = check_notebook(path, cell_timeout=300, total_timeout=900)
    return _EXECUTED[key]


def run_cli(*args, timeout=600, cwd=ROOT):
    """``python -m autograder ARGS`` in a subprocess, as ``./course`` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "autograder", *map(str, args)],
        cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
    )


def fill_submission(learner, source, replace=None):
    """A learner's notebook with every stub filled in with the source's solution code of the same
    grade_id (or with ``replace[grade_id]``): a correct submission, or one with chosen bugs."""
    from autograder.grading import nbgrader_tools as nbt

    replace = replace or {}
    regions = {nbt.grade_id(c): nbt.solution_regions(nbt.cell_source(c)) for c in source.cells if nbt.is_solution(c)}
    nb = nbformat.from_dict(learner)
    for cell in nb.cells:
        if nbt.is_solution(cell):
            gid = nbt.grade_id(cell)
            code = [replace[gid]] if gid in replace else regions[gid]
            cell.source = nbt.fill_stubs(nbt.cell_source(cell), code)
    return nb


def find_cell(nb, key):
    """(index, cell) of the cell with this grade_id or cell id."""
    from autograder.grading import nbgrader_tools as nbt

    for i, c in enumerate(nb.cells):
        if nbt.grade_id(c) == key or c.get("id") == key:
            return i, c
    raise KeyError(key)


def set_source(nb, key, text):
    find_cell(nb, key)[1].source = text
    return nb


def insert_after(nb, key, text):
    """A student's own code cell right after the cell ``key``."""
    i, _ = find_cell(nb, key)
    cell = nbformat.v4.new_code_cell(text)
    cell["id"] = f"student-{i}-{len(nb.cells)}"
    nb.cells.insert(i + 1, cell)
    return nb


def cpu_matmul_supports(dtype) -> bool:
    """Whether this torch multiplies ``dtype`` matrices on the CPU (2.1 has no float16 matmul there)."""
    import torch

    try:
        torch.ones(2, 2, dtype=dtype) @ torch.ones(2, 2, dtype=dtype)
        return True
    except RuntimeError:
        return False


def run_check(check, obj, capsys, **kwargs):
    """Run a step check the way a test cell does; return (points, report with its line wraps
    undone), asserting the check wrote nothing to stderr and returned a plain float.

    The same check then runs split in two, as class grading runs it: its probe half in a child
    process (forked, so the learner's object needs no pickling) that saves the observations to
    a file, and its judge half here, from that file alone. Both must give the same points and the
    same report as the check run in one go."""
    step = getattr(check, "step", None)
    if step is not None and kwargs.get("seed") is None:
        from autograder.frame.cases import draw_seed

        kwargs["seed"] = draw_seed(step.name, None, kwargs.get("hidden", False))
    points = check(obj, **kwargs)
    captured = capsys.readouterr()
    assert captured.err == "", f"the check wrote to stderr: {captured.err!r}"
    assert type(points) is float
    if step is not None and not kwargs.get("quiet"):
        judged = probe_apart_then_judge(step, obj, kwargs["seed"], kwargs.get("hidden", False))
        assert unmeasured(judged.report()) == unmeasured(captured.out.rstrip("\n")), "the split check's report differs"
        assert judged.points == points
    return points, " ".join(captured.out.split())


def unmeasured(report: str) -> str:
    """A report with its measured durations blanked: a timing probe measures anew in each run."""
    import re

    return re.sub(r"\d+(?:\.\d+)? ms\b|\d+(?:\.\d+)?x faster", "#", report)


def probe_apart_then_judge(step, obj, seed, hidden):
    """The probe in a forked child process (observations saved to a file), the judge here."""
    import os
    import tempfile

    from autograder.frame.observe import Observations

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "observations.zip")
        pid = os.fork()
        if pid == 0:  # the child: probe only, then leave without running any of pytest's exit code
            code = 1
            try:
                import torch

                torch.set_num_threads(1)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                step.probe(obj, seed=seed, hidden=hidden).save(path)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the probe failed in its own process"
        observations = Observations.load(path)
    return step.judge(observations, seed=seed, hidden=hidden, strict=True)


@pytest.fixture
def torch_seed():
    """Seed torch's global generator before a test, so that the random inputs a test draws are
    the same whatever ran before it (library tests use it through ``pytestmark``)."""
    import torch

    torch.manual_seed(0)
