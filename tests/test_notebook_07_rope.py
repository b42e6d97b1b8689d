"""Notebook 07's rotary section: every number its text states is asserted against the executed
solution, the whole notebook stays within its time budget, and the untouched learner copy runs
with only NotImplementedError and earns nothing."""

import re

import pytest
from conftest import NOTEBOOKS, SOLUTIONS, executed_notebook

from autograder.grading import nbgrader_tools as nbt

NAME = "07_capstone_tiny_transformer"
BUDGET_S = 180  # the whole notebook, top to bottom, on the course's 2-core machine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def solution():
    return executed_notebook(SOLUTIONS / f"{NAME}.ipynb")


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _output_of(report, marker: str) -> str:
    for cell in report.executed.cells:
        if cell.cell_type == "code" and marker in cell.source:
            return _text(cell)
    raise AssertionError(f"no code cell contains {marker!r}")


def test_solution_runs_within_budget_and_earns_the_rotary_points(solution):
    assert solution.stopped_early is None and solution.errors == [], solution.errors
    assert solution.seconds < BUDGET_S, f"notebook 07 took {solution.seconds:.0f} s, budget {BUDGET_S} s"
    rope = [s for s in solution.steps if s.id == "check_apply_rotary"]
    assert rope and rope[0].passed and rope[0].max_points == 4


def test_rotary_properties_printed_true(solution):
    out = _output_of(solution, 'rope_fn = fallback("apply_rotary"')
    for claim in ("scores unchanged when q and k are both shifted by 100: True", "norms kept: True",
                  "cached decoding == full sequence, last row: True"):
        assert claim in out, out


def test_length_probe_numbers_match_the_text(solution):
    out = _output_of(solution, "LENGTH_PROBE = {")
    acc = {}
    for line in out.splitlines():
        m = re.match(r"(\w+)\s+T=16:\s+(\S+)\s+T=64:\s+(\S+)", line)
        if m:
            acc[m.group(1)] = tuple(None if v == "n/a" else float(v) for v in m.group(2, 3))
    assert set(acc) == {"learned", "sinusoidal", "rope", "alibi"}, out
    # "At the training length the learned table, the sinusoidal encoding and RoPE all solve the task (above 0.99)"
    assert all(acc[s][0] > 0.99 for s in ("learned", "sinusoidal", "rope")), acc
    # "At length 64 the learned table cannot run at all"
    assert acc["learned"][1] is None, acc
    # "The sinusoidal model falls below 0.4", "RoPE keeps more (above 0.5)", "does not keep all of its accuracy"
    assert acc["sinusoidal"][1] < 0.4 and 0.5 < acc["rope"][1] < acc["rope"][0], acc
    # "ALiBi stays below 0.5 even at the training length"
    assert acc["alibi"][0] < 0.5 and acc["alibi"][1] < 0.5, acc
    # "takes a few seconds"
    seconds = float(re.search(r"\((\d+\.\d) s\)", out).group(1))
    assert seconds < 20, out


def test_learner_copy_runs_with_only_not_implemented_and_earns_nothing():
    report = executed_notebook(NOTEBOOKS / f"{NAME}.ipynb")
    assert report.stopped_early is None, report.stopped_early
    assert {e[1] for e in report.errors} <= {"NotImplementedError"}, report.errors
    assert not {s.id: s.points for s in report.steps if s.points}
    assert any(s.id == "check_apply_rotary" for s in report.steps)
    crashed = [nbt.grade_id(c) for c in report.executed.cells
               if nbt.is_test_cell(c) and any(o.get("output_type") == "error" for o in c.outputs)]
    assert not crashed, crashed
