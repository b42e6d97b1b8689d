"""Self-check: run a notebook the way nbgrader's autograder does and say what each step earns.

``python -m autograder check NOTEBOOK [--json]`` executes the notebook top to bottom in a fresh
kernel of this very interpreter (whatever kernel the notebook names), in the notebook's folder,
going on after errors, and scores every autograded test cell exactly as nbgrader would: an error
or anything on stderr gives 0, a number as the cell's value is partial credit, anything else is
full marks. The notebook file itself is only read, never written.

A learner's copy of a course notebook is checked with its test cells as the course released them,
as the class grader does: an edited or deleted test cell is put back from the instructor copy in
``solutions/`` (hidden tests left out), and the report says so.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import nbgrader_tools as nbt

#: Seconds one cell may run before it is interrupted (and counts as an error).
DEFAULT_CELL_TIMEOUT = 300
#: Seconds the whole notebook may run; cells after that are not run and their steps earn 0.
DEFAULT_TOTAL_TIMEOUT = 1800

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookUnusable(Exception):
    """The notebook cannot be read or run; ``str()`` is the one-line reason."""


@dataclass
class StepResult:
    id: str
    points: float
    max_points: float
    passed: bool
    message: str


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
    #: What was put back before the run (edited or deleted test cells, a changed kernel).
    notes: List[str] = field(default_factory=list)
    #: Seconds each step's test cell took to run (grade id -> seconds), for the benchmarks.
    step_seconds: Dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return _round(sum(s.points for s in self.steps))

    @property
    def max_score(self) -> float:
        return _round(sum(s.max_points for s in self.steps))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "notebook": self.notebook,
            "score": self.score,
            "max_score": self.max_score,
            "steps": [asdict(s) for s in self.steps],
            "notes": list(self.notes),
        }


def _round(x: float) -> float:
    return float(round(x, 6))


# --------------------------------------------------------------------------- reading


def read_notebook(path: Path):
    """The notebook at ``path`` as an nbformat v4 node, or :class:`NotebookUnusable`."""
    import nbformat

    path = Path(path)
    if not path.exists():
        raise NotebookUnusable(f"{path}: no such file")
    if path.is_dir():
        raise NotebookUnusable(f"{path}: is a folder, not a notebook")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NotebookUnusable(f"{path}: cannot be read ({type(e).__name__}: {e})")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookUnusable(f"{path}: not a notebook, invalid JSON at line {e.lineno} column {e.colno} ({e.msg})")
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or "nbformat" not in raw:
        raise NotebookUnusable(f"{path}: not a Jupyter notebook (no 'nbformat' and 'cells')")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as e:  # nbformat's errors are many and varied
        raise NotebookUnusable(f"{path}: not a usable notebook ({type(e).__name__}: {_one_line(str(e))})")
    for i, cell in enumerate(nb.cells):
        if not isinstance(cell, dict) or "cell_type" not in cell:
            raise NotebookUnusable(f"{path}: cell {i} has no cell_type")
        cell.setdefault("metadata", {})
        if cell.cell_type == "code":
            cell.setdefault("outputs", [])
    return nb


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


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------- running


def execute(nb, cwd: Path, cell_timeout: float, total_timeout: float) -> Dict[str, Any]:
    """Execute ``nb`` in place, cell by cell, like nbgrader's Execute preprocessor (errors
    allowed, a timed-out cell is interrupted and gets an error output). Returns a summary:
    ``ran`` (indices of the code cells that ran), ``seconds`` (cell index -> wall time of running
    it, the kernel's round trip included) and ``stopped`` (why it stopped early, or None)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError
    from nbformat import NotebookNode

    def on_cell_executed(cell, cell_index, execute_reply):
        # As nbgrader does: a failed reply with no matching error output (a timeout) still
        # leaves an error in the cell.
        content = execute_reply.get("content", {})
        if content.get("status") == "error":
            ename = content.get("ename", "Error")
            if not any(o.get("output_type") == "error" and o.get("ename") == ename for o in cell.outputs):
                cell.outputs.append(
                    NotebookNode(
                        output_type="error",
                        ename=ename,
                        evalue=content.get("evalue", ""),
                        traceback=list(content.get("traceback", [])),
                    )
                )

    client = NotebookClient(
        nb,
        kernel_name=nbt.KERNEL_NAME,
        kernel_manager_class=nbt.kernel_manager_class(),
        allow_errors=True,
        interrupt_on_timeout=True,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": "", "traceback": []},  # set per cell
        raise_on_iopub_timeout=False,
        iopub_timeout=4,
        shutdown_kernel="immediate",
        record_timing=False,
        on_cell_executed=on_cell_executed,
        resources={"metadata": {"path": str(cwd)}},
        startup_timeout=120,
        log=nbt.quiet_log("autograder.selfcheck.nbclient"),
    )
    deadline = time.monotonic() + total_timeout
    ran: List[int] = []
    seconds: Dict[int, float] = {}
    stopped: Optional[str] = None
    # The kernel process's own stderr (start-up chatter such as ipykernel's transport warning)
    # goes to a file: it is no output of the notebook's, and its tail explains a failed start.
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as kernel_log:
        try:
            with client.setup_kernel(cwd=str(cwd), stderr=kernel_log):
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        stopped = f"the notebook ran past the total time limit of {total_timeout:g} s"
                        break
                    limit = max(1, int(math.ceil(min(cell_timeout, remaining))))
                    client.timeout = limit
                    client.error_on_timeout = {
                        "ename": "CellTimeoutError",
                        "evalue": f"the cell ran past its time limit of {limit} s and was interrupted"
                        + ("" if cell_timeout <= remaining else " (the limit for the whole notebook)"),
                        "traceback": [],
                    }
                    started = time.perf_counter()
                    try:
                        client.execute_cell(cell, index)
                    except DeadKernelError:
                        ran.append(index)
                        cell.outputs.append(
                            NotebookNode(output_type="error", ename="DeadKernelError",
                                         evalue="the kernel died while running this cell", traceback=[])
                        )
                        stopped = f"the kernel died in cell {index} (out of memory, or the process exited)"
                        break
                    finally:
                        seconds[index] = time.perf_counter() - started
                    ran.append(index)
        except DeadKernelError as e:
            stopped = stopped or f"the kernel died ({e})"
        except Exception as e:
            if not ran:
                kernel_log.seek(0)
                tail = [l for l in kernel_log.read().splitlines() if l.strip()][-1:]
                why = f"{type(e).__name__}: {_one_line(str(e))}" + (f" ({_one_line(tail[0])})" if tail else "")
                raise NotebookUnusable(f"cannot run a Python kernel: {why}")
            stopped = stopped or f"execution stopped: {type(e).__name__}: {_one_line(str(e))}"
    return {"ran": ran, "seconds": seconds, "stopped": stopped}


# --------------------------------------------------------------------------- scoring


def _stream_text(cell, name: str) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == name:
            t = o.get("text", "")
            parts.append("".join(t) if isinstance(t, list) else t)
    return "".join(parts)


def _first_error(cell):
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    # A timeout shows as the kernel's KeyboardInterrupt plus our CellTimeoutError: name the cause.
    for o in errors:
        if o.get("ename") == "CellTimeoutError":
            return o
    return errors[0] if errors else None


def _step_message(cell, score: nbt.CellScore) -> str:
    report = _ANSI.sub("", _stream_text(cell, "stdout")).strip()
    lines = [report] if report else []
    if score.reason == "error":
        err = _first_error(cell)
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
        points = _round(score.points)
        passed = score.reason not in ("error", "stderr") and points >= top - 1e-9
        steps.append(StepResult(sid, points, top, passed, _step_message(cell, score)))
    return steps


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
    notes: List[str] = []
    source = released_copy(path, nb, solutions) if solutions is not None else None
    if source is not None:
        nb, notes = nbt.restore(nb, source)
    started = time.monotonic()
    summary = execute(nb, path.resolve().parent, cell_timeout, total_timeout)
    report = CheckReport(notebook=str(path), notes=notes)
    report.executed = nb
    report.stopped_early = summary["stopped"]
    report.steps = score_notebook(nb, summary["ran"], summary["stopped"])
    report.step_seconds = {nbt.grade_id(nb.cells[i]): t for i, t in summary["seconds"].items()
                           if nbt.is_test_cell(nb.cells[i])}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and not nbt.is_test_cell(cell):
            err = _first_error(cell)
            if err is not None:
                report.errors.append((index, err.get("ename", ""), _one_line(_ANSI.sub("", str(err.get("evalue", ""))))))
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
    if report.errors:
        lines.append("Cells outside the checks that raised an error:")
        for index, ename, evalue in report.errors:
            lines.append(f"    cell {index}: {ename}" + (f": {evalue}" if evalue else ""))
        lines.append("")
    if report.stopped_early:
        lines.append(f"Stopped early: {report.stopped_early}")
    passed = sum(1 for s in report.steps if s.passed)
    lines.append(
        f"Score: {report.score:g} / {report.max_score:g}  ({passed} of {len(report.steps)} steps pass, "
        f"{report.seconds:.0f} s)"
    )
    return "\n".join(lines)


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
        print(f"check: {_one_line(str(e), 400)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(format_table(report))
    return 0
