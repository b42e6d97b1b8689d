"""Scoring an executed notebook as nbgrader does: one :class:`StepResult` per autograded test
cell (its points, whether it passed, and a message made of the check's report and the error, if
any). The self-check and the grading worker both score with :func:`score_notebook`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from . import nbgrader_tools as nbt
from .reading import one_line

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class StepResult:
    id: str
    points: float
    max_points: float
    passed: bool
    message: str


def round_points(x: float) -> float:
    return float(round(x, 6))


def _stream_text(cell, name: str) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == name:
            t = o.get("text", "")
            parts.append("".join(t) if isinstance(t, list) else t)
    return "".join(parts)


def first_error(cell) -> Optional[Mapping[str, Any]]:
    """The error output that explains a cell's failure, or None."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    # A timeout shows as the kernel's KeyboardInterrupt plus our CellTimeoutError: name the cause.
    for o in errors:
        if o.get("ename") == "CellTimeoutError":
            return o
    return errors[0] if errors else None


def cell_errors(nb) -> List[Tuple[int, str, str]]:
    """Errors raised by the code cells outside the test cells: (cell index, ename, evalue)."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and not nbt.is_test_cell(cell):
            err = first_error(cell)
            if err is not None:
                found.append((index, err.get("ename", ""), one_line(_ANSI.sub("", str(err.get("evalue", ""))))))
    return found


def _step_message(cell, score: nbt.CellScore) -> str:
    report = _ANSI.sub("", _stream_text(cell, "stdout")).strip()
    lines = [report] if report else []
    if score.reason == "error":
        err = first_error(cell)
        ename = err.get("ename", "Error") if err else "Error"
        evalue = _ANSI.sub("", str(err.get("evalue", ""))).strip() if err else ""
        lines.append(f"{ename}: {evalue}" if evalue else ename)
    elif score.reason == "stderr":
        err_text = _ANSI.sub("", _stream_text(cell, "stderr")).strip()
        first = err_text.splitlines()[0] if err_text else ""
        lines.append("the cell wrote to stderr, which nbgrader scores 0" + (f": {first}" if first else ""))
    if score.note:
        lines.append(f"note: {score.note}")
    return "\n".join(lines)


def score_notebook(nb, ran: Optional[List[int]] = None, stopped: Optional[str] = None) -> List[StepResult]:
    """One result per autograded test cell of an executed notebook, in notebook order."""
    steps: List[StepResult] = []
    ran_set = None if ran is None else set(ran)
    for index, cell in enumerate(nb.cells):
        if not nbt.is_test_cell(cell):
            continue
        sid = nbt.grade_id(cell) or f"cell-{index}"
        top = nbt.max_points(cell)
        if ran_set is not None and index not in ran_set:
            why = stopped or "the cell did not run"
            steps.append(StepResult(sid, 0.0, top, False, f"not run: {why}"))
            continue
        score = nbt.score_test_cell(cell)
        points = round_points(score.points)
        passed = score.reason not in ("error", "stderr") and points >= top - 1e-9
        steps.append(StepResult(sid, points, top, passed, _step_message(cell, score)))
    return steps
