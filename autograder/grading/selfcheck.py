"""Self-check: run a notebook the way the class grader does and say what each step earns.

``python -m autograder check NOTEBOOK [--json]`` runs the notebook through the course's one
notebook executor (:mod:`.engine`, the class grader's too): top to bottom in a fresh kernel of
this very interpreter (whatever kernel the notebook names), in the notebook's folder, going on
after errors, under the same per-cell and total time limits, and scores every autograded test
cell exactly as nbgrader would: an error or anything on stderr gives 0, a number as the cell's
value is partial credit, anything else is full marks. The notebook file itself is only read,
never written. Unlike the grader it sets no memory limit and uses no sandbox (the learner's own
code on the learner's own machine), and the checks score in the kernel.

A learner's copy of a course notebook is checked with its test cells as the course released them,
as the class grader does: an edited or deleted test cell is put back from the instructor copy in
``solutions/`` (hidden tests left out), and the report says so.

Written parts (nbgrader's manually graded cells: ``grade`` and ``solution`` both set, markdown or
code, or a ``task``) are not run or scored here; the report lists each one as "pending instructor
grading" or "blank", with its points, and the totals separate the auto-graded points from the
points your instructor grades, which together make the gradebook's maximum.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import engine
from . import nbgrader_tools as nbt
from .reading import NotebookUnusable, one_line, read_notebook
from .scoring import StepResult, cell_errors, round_points

#: Seconds one cell may run before it is interrupted (and counts as an error).
DEFAULT_CELL_TIMEOUT = engine.CELL_TIMEOUT
#: Seconds the whole notebook may run; cells after that are not run and their steps earn 0.
DEFAULT_TOTAL_TIMEOUT = engine.TOTAL_TIMEOUT

__all__ = ["CheckReport", "NotebookUnusable", "StepResult", "WrittenPart", "check_notebook", "read_notebook",
           "released_copy", "written_parts"]

#: Set in the kernel's environment: the checks print their reports as plain text (the test cells'
#: stdout is the step's message), not as HTML for a notebook front end
#: (``autograder.frame.results.PLAIN_ENV``).
PLAIN_REPORT_ENV = "AUTOGRADER_PLAIN_REPORT"

#: What nbgrader leaves in a written part's cell when it releases the notebook (ClearSolutions).
MARKDOWN_STUB = "YOUR ANSWER HERE"


@dataclass
class WrittenPart:
    """A part of the notebook graded by the instructor: its grade id, points, and ``state``,
    "blank" (still the released stub, empty, or deleted) or "pending" (written, to be graded)."""

    id: str
    points: float
    state: str

    @property
    def label(self) -> str:
        what = "pending instructor grading" if self.state == "pending" else "blank"
        return f"{what} ({_points(self.points)})"


def _points(x: float) -> str:
    return f"{x:g} point" + ("" if x == 1 else "s")


def is_written_part(cell) -> bool:
    """A manually graded cell: an answer with points (``grade`` and ``solution``), or a task."""
    meta = nbt.nbgrader_meta(cell)
    return bool(meta.get("grade") and meta.get("solution")) or bool(meta.get("task"))


def _is_blank(cell) -> bool:
    text = nbt.cell_source(cell).strip() if cell is not None else ""
    return text in ("", MARKDOWN_STUB) or " ".join(text.split()) == " ".join(nbt.CODE_STUB.split())


def written_parts(nb, source=None) -> List["WrittenPart"]:
    """The written parts of ``nb``, in notebook order: those of ``source`` (the instructor's
    copy, whose points the gradebook counts) when given, each looked up in ``nb`` by grade id
    (a deleted one is blank), else those of ``nb`` itself."""
    mine = {nbt.grade_id(c): c for c in nb.cells if nbt.grade_id(c)}
    parts = []
    for index, cell in enumerate((source or nb).cells):
        if not is_written_part(cell):
            continue
        gid = nbt.grade_id(cell) or f"cell-{index}"
        learner = mine.get(gid) if source is not None else cell
        parts.append(WrittenPart(gid, float(nbt.max_points(cell)), "blank" if _is_blank(learner) else "pending"))
    return parts


@dataclass
class CheckReport:
    notebook: str
    steps: List[StepResult] = field(default_factory=list)
    #: The executed notebook (outputs filled in), for callers that inspect it further.
    executed: Any = None
    #: Errors raised by cells outside the test cells: (cell index, ename, evalue).
    errors: List[tuple] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: Optional[str] = None
    #: What was put back before the run (edited or deleted test cells, a changed kernel), and what
    #: the run cut short (output over the limit, a cell outside the tests interrupted at its limit).
    notes: List[str] = field(default_factory=list)
    #: Seconds each step's test cell took to run (grade id -> seconds), for the benchmarks.
    step_seconds: Dict[str, float] = field(default_factory=dict)
    #: The parts your instructor grades (not run, not scored here).
    written: List[WrittenPart] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The auto-graded points earned."""
        return round_points(sum(s.points for s in self.steps))

    @property
    def max_score(self) -> float:
        """The auto-graded points there are (the written parts are not among them)."""
        return round_points(sum(s.max_points for s in self.steps))

    @property
    def instructor_points(self) -> float:
        """The points of the written parts, graded by the instructor."""
        return round_points(sum(w.points for w in self.written))

    @property
    def total_points(self) -> float:
        """Every point of the notebook: the gradebook's maximum."""
        return round_points(self.max_score + self.instructor_points)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "notebook": self.notebook,
            "score": self.score,
            "max_score": self.max_score,
            "instructor_points": self.instructor_points,
            "total_points": self.total_points,
            "steps": [asdict(s) for s in self.steps],
            "written": [dict(asdict(w), label=w.label) for w in self.written],
            "notes": list(self.notes),
        }


#: The instructor copies of the course notebooks (in a checkout of the course).
SOLUTIONS = Path(__file__).resolve().parents[2] / "solutions"


def released_copy(path: Path, nb, solutions: Path = SOLUTIONS):
    """The course notebook that ``nb`` (read from ``path``) is a learner's copy of, with its test
    cells as released (hidden tests removed), or ``None``: no instructor notebook of that file
    name, none of its graded cells in ``nb``, or ``path`` is the instructor notebook itself."""
    import nbformat

    src = Path(solutions) / Path(path).name
    try:
        if not src.is_file() or src.resolve() == Path(path).resolve():
            return None
        source = nbformat.read(str(src), as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable instructor copy: check the notebook as it is
        return None
    graded = {nbt.grade_id(c) for c in source.cells if nbt.is_grade(c)} - {None}
    if not graded & {nbt.grade_id(c) for c in nb.cells}:
        return None
    for cell in source.cells:
        if nbt.is_test_cell(cell):
            cell.source = nbt.strip_hidden(nbt.cell_source(cell))
    return source


# --------------------------------------------------------------------------- checking


def check_notebook(
    path,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    solutions: Optional[Path] = SOLUTIONS,
) -> CheckReport:
    """Execute the notebook at ``path`` (a copy in memory) and score its steps. A learner's copy
    of a course notebook gets its released test cells back first (see :func:`released_copy`;
    ``solutions=None`` checks the notebook exactly as it is)."""
    path = Path(path)
    nb = read_notebook(path)
    source = released_copy(path, nb, solutions) if solutions is not None else None
    written = written_parts(nb, source)  # read before the run, which may restore cells in place
    prep = engine.prepare(nb, source)
    limits = engine.Limits(cell_timeout=cell_timeout, total_timeout=total_timeout, memory_mb=0)
    started = time.monotonic()
    env = dict(os.environ, **{PLAIN_REPORT_ENV: "1"})
    try:
        graded = engine.run(prep, path.resolve().parent, limits, env=env)
    except engine.KernelFailed as e:
        raise NotebookUnusable(str(e)) from None
    report = CheckReport(notebook=str(path), notes=graded.notes, written=written)
    report.executed = graded.nb
    report.stopped_early = graded.execution.stopped
    report.steps = graded.steps
    report.step_seconds = {nbt.grade_id(graded.nb.cells[i]): t for i, t in graded.execution.cell_seconds.items()
                           if i in prep.test_cells}
    report.errors = cell_errors(graded.nb)
    report.seconds = time.monotonic() - started
    return report


# --------------------------------------------------------------------------- printing


def _symbols():
    enc = (getattr(sys.stdout, "encoding", None) or "ascii").lower()
    try:
        "✓✗".encode(enc)
        return "✓", "✗"
    except (UnicodeEncodeError, LookupError):
        return "+", "x"


def format_table(report: CheckReport) -> str:
    ok, bad = _symbols()
    lines = [f"Self-check of {report.notebook}", ""]
    for note in report.notes:
        lines.append(f"Note: {note}")
    if report.notes:
        lines.append("")
    if not report.steps:
        lines.append("This notebook has no graded steps.")
    width = max([len(s.id) for s in report.steps] + [4])
    for s in report.steps:
        mark = ok if s.passed else bad
        lines.append(f"{mark} {s.id:<{width}}  {s.points:g} / {s.max_points:g}")
        for line in s.message.splitlines():
            lines.append(f"    {line}")
    lines.append("")
    if report.written:
        lines.append("Written parts, graded by your instructor:")
        wid = max(len(w.id) for w in report.written)
        for w in report.written:
            lines.append(f"  {w.id:<{wid}}  {w.label}" + (": write your answer in its cell" if w.state == "blank" else ""))
        lines.append("")
    if report.errors:
        lines.append("Cells outside the checks that raised an error:")
        for index, ename, evalue in report.errors:
            lines.append(f"    cell {index}: {ename}" + (f": {evalue}" if evalue else ""))
        lines.append("")
    if report.stopped_early:
        lines.append(f"Stopped early: {report.stopped_early}")
    passed = sum(1 for s in report.steps if s.passed)
    lines.append(f"Score: {score_line(report.score, report.max_score, report.instructor_points)}  "
                 f"({passed} of {len(report.steps)} steps pass, {report.seconds:.0f} s)")
    blank = [w for w in report.written if w.state == "blank"]
    if blank:
        lines.append(f"Still blank: {', '.join(w.id for w in blank)} ({_points(sum(w.points for w in blank))}).")
    return "\n".join(lines)


def score_line(score: float, auto: float, instructor: float) -> str:
    """ "X of Y auto-graded points", and the instructor's points if there are any: together the
    gradebook's maximum."""
    text = f"{score:g} of {auto:g} auto-graded points"
    if instructor:
        text += f", {_points(instructor)} graded by your instructor ({auto + instructor:g} points in all)"
    return text


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    parser.add_argument("notebook", help="the notebook to check (it is only read, never changed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_CELL_TIMEOUT, metavar="SECONDS",
        help=f"time limit for one cell (default {DEFAULT_CELL_TIMEOUT})",
    )
    parser.add_argument(
        "--total-timeout", type=float, default=DEFAULT_TOTAL_TIMEOUT, metavar="SECONDS",
        help=f"time limit for the whole notebook (default {DEFAULT_TOTAL_TIMEOUT})",
    )


def main(args) -> int:
    if args.timeout <= 0 or args.total_timeout <= 0:
        print("check: --timeout and --total-timeout must be positive", file=sys.stderr)
        return 2
    try:
        report = check_notebook(args.notebook, cell_timeout=args.timeout, total_timeout=args.total_timeout)
    except NotebookUnusable as e:
        print(f"check: {one_line(str(e), 400)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(format_table(report))
    return 0
