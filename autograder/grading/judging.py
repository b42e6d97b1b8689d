"""Class grading with every score judged outside the student's code.

A test cell of a course notebook is a list of check calls (``check_softmax(softmax)``, the same
with ``hidden=True``, ``check_concept("01.why_scale", answer_why_scale)``). For class grading:

1. :func:`plan` reads the instructor's test cells into :class:`CheckCall` lists;
2. :func:`probe_cell_source` writes the code that replaces each test cell in the student's copy:
   it only observes (:mod:`.probing`), saving one record per check in the run's scratch folder,
   with seeds that the grader draws from the course secret and the assignment
   (:func:`class_seed`: one set of hidden cases for the whole class, the same on every re-grade);
3. after the run, :func:`judge_notebook` judges each record in the grader's own process with the
   step's judge half (the same step definitions the notebooks use), and writes each test cell's
   outputs itself: the report and the points, which nbgrader and the course's scoring read.

Nothing the student's code printed or returned in a test cell is kept. A record is untrusted
data: loaded with size limits and without pickle, judged against the grader's own seed (a record
made for other inputs earns nothing). Reports of hidden cases keep the sub-parts and points but
no details, since details can quote inputs, expected values or the learner's exception text.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from . import nbgrader_tools as nbt

#: Where the probes save their records, relative to the run's working copy (the kernel's cwd).
OBSERVATIONS = ".grading-observations"

#: The largest record of one check the judge reads (unpacked bytes).
MAX_RECORD_BYTES = 64 * 2**20


@dataclass(frozen=True)
class CheckCall:
    check: str  # the check function's name, e.g. "check_softmax", "check_concept"
    step: str  # the registered step (a checkpoint's question id)
    subject: str  # source of the expression that names the learner's object
    hidden: bool


def plan_cell(source: str) -> Optional[List[CheckCall]]:
    """The check calls a test cell is made of, or None if it holds anything else."""
    from ..checks import steps_by_name

    steps = steps_by_name()
    by_check = {s.check_name: s.name for s in steps.values() if s.kind != "checkpoint"}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    calls: List[CheckCall] = []
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                and isinstance(stmt.value.func, ast.Name)):
            return None
        call = stmt.value
        hidden = False
        for kw in call.keywords:
            if kw.arg != "hidden" or not isinstance(kw.value, ast.Constant) or not isinstance(kw.value.value, bool):
                return None
            hidden = kw.value.value
        name = call.func.id
        if name == "check_concept":
            if len(call.args) != 2 or not isinstance(call.args[0], ast.Constant) or call.args[0].value not in steps:
                return None
            step, subject = call.args[0].value, call.args[1]
        elif name in by_check and len(call.args) == 1:
            step, subject = by_check[name], call.args[0]
        else:
            return None
        calls.append(CheckCall(name, step, ast.unparse(subject), hidden))
    return calls or None


def plan(source_nb) -> Dict[str, List[CheckCall]]:
    """grade_id -> its check calls, for every test cell of the instructor's notebook that is
    made of course checks."""
    found = {}
    for cell in source_nb.cells:
        if nbt.is_test_cell(cell):
            calls = plan_cell(nbt.cell_source(cell))
            if calls is not None:
                found[nbt.grade_id(cell)] = calls
    return found


def class_seed(secret: str, assignment: str, step: str, hidden: bool) -> int:
    """The seed of a step's cases for a whole class: from the course secret and the assignment
    only, so identical code scores identically across the class and on every re-grade."""
    digest = hashlib.sha256(f"{secret}\0{assignment}\0{step}\0{'hidden' if hidden else 'public'}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def safe_id(grade_id: str) -> str:
    """A grade id as a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(grade_id))


def record_path(obs_dir: str, grade_id: str, index: int) -> str:
    return str(Path(obs_dir) / f"{safe_id(grade_id)}-{index}.zip")


def probe_cell_source(grade_id: str, calls: List[CheckCall], seeds: Mapping[CheckCall, int], obs_dir: str) -> str:
    """The code that replaces a test cell in the student's copy: observe, save, print nothing."""
    items = ",\n    ".join(
        f"({c.step!r}, lambda: ({c.subject}), {int(seeds[c])}, {c.hidden!r}, {record_path(obs_dir, grade_id, i)!r})"
        for i, c in enumerate(calls))
    return ("# Observed by the grader; scored outside this notebook.\n"
            "from autograder.grading.probing import probe_cell as _grader_probe_cell\n"
            f"_grader_probe_cell([\n    {items},\n])\n"
            "del _grader_probe_cell\n")


@dataclass
class Judged:
    points: float  # what the cell earns: the points of its last check, as nbgrader reads a cell
    report: str


def judge_call(call: CheckCall, seed: int, path: Path) -> Any:
    """The judge's result for one check call (a CheckResult), from its record at ``path``."""
    from ..checks import steps_by_name
    from ..frame.observe import Observations
    from ..frame.results import CheckResult

    step = steps_by_name()[call.step]
    error = path.with_suffix(".error")
    if path.is_file() and not path.is_symlink():
        try:
            record = Observations.load(path, max_bytes=MAX_RECORD_BYTES)
            for entry in record.entries:
                entry.value = _quiet_errors(entry.value)
            return step.judge(record, seed=seed, hidden=call.hidden)
        except Exception as e:  # an unreadable or malformed record is the submission's, never ours
            why = f"its record of observations could not be read ({type(e).__name__})"
    elif error.is_file() and not error.is_symlink():
        text = error.read_text(encoding="utf-8", errors="replace")[:80]
        why = (f"{call.subject} is not defined when this cell runs" if text.startswith("lookup")
               else "observing it failed in your notebook's kernel")
    else:
        why = "nothing was observed (the cell did not run to its end)"
    result = CheckResult(step.title or step.name, step.points, seed=seed, hidden=call.hidden)
    result.zero_reason = why
    return result


_TRANSPOSE_HINT = (" — after a transpose the tensor is no longer contiguous in memory: use .reshape(...) "
                   "or .contiguous().view(...)")


def quiet_error(message: str) -> str:
    """An error of the learner's code as the judge may quote it in class grading: the exception's
    type (a built-in one, else "an exception") and its line number, never its text, which the
    student's code chooses (and could fill with what it saw of the hidden cases)."""
    m = re.match(r"raised ([A-Za-z_][A-Za-z0-9_.]*)", message)
    if m:
        name = m.group(1)
        kind = name if name in _BUILTIN_ERRORS else "an exception"
        lines = re.findall(r"\(line (\d+)", message)
        where = f" (line {lines[-1]})" if lines else ""
        hint = _TRANSPOSE_HINT if "view size is not compatible" in message else ""
        return f"raised {kind}{where}{hint}"
    if message.startswith("expected a function, got "):
        return "expected a function, got something else"
    return message


_BUILTIN_ERRORS = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}


def _quiet_errors(value: Any) -> Any:
    """A record's value with every learner error's text made :func:`quiet_error`."""
    if isinstance(value, dict):
        if value.get("__t__") == "lerr" and isinstance(value.get("msg"), str):
            return {**value, "msg": quiet_error(value["msg"])}
        return {k: _quiet_errors(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_quiet_errors(v) for v in value]
    return value


def hidden_summary(result: Any) -> str:
    """A hidden-case report without details: the points and the names of the sub-parts that fail."""
    head = f"{result.step}: {result.points:g} / {result.max_points:g} points with the hidden cases drawn at grading time"
    if result.passed:
        return head + ": all checks pass."
    lines = [head]
    if result.zero_reason:
        lines.append("  ✗ no points on the hidden cases")
    lines += [f"  ✗ {p.name}" for p in result.parts if not p.passed]
    return "\n".join(lines)


def judge_cell(calls: List[CheckCall], seeds: Mapping[CheckCall, int], obs_dir: Path, grade_id: str,
               shortcuts: Optional[Mapping[int, List[str]]] = None) -> Judged:
    """Judge a test cell's checks. ``shortcuts``: call index -> the forbidden uses found in the
    learner's source for it (:mod:`.static`): such a step earns nothing, whatever was observed."""
    reports, points = [], 0.0
    for i, call in enumerate(calls):
        result = judge_call(call, seeds[call], Path(record_path(str(obs_dir), grade_id, i)))
        found = (shortcuts or {}).get(i)
        if found and result.zero_reason is None:
            result.zero_reason = (f"your {call.subject} uses {', '.join(found)} (seen in its source): this step "
                                  "asks you to build it yourself")
        reports.append(hidden_summary(result) if call.hidden else result.report())
        points = result.points
    return Judged(points, "\n".join(reports))


def judged_outputs(judged: Judged) -> List[Any]:
    """A test cell's outputs as the judge writes them: the report, then the points."""
    from nbformat import NotebookNode

    return [NotebookNode(output_type="stream", name="stdout", text=judged.report + "\n"),
            NotebookNode(output_type="execute_result", execution_count=None, metadata={},
                         data={"text/plain": repr(float(judged.points))})]


def shortcuts_in(nb, calls: Dict[str, List[CheckCall]]) -> Dict[str, Dict[int, List[str]]]:
    """grade_id -> call index -> the forbidden uses in the learner's source (see :mod:`.static`)."""
    from ..checks import steps_by_name
    from .static import forbidden_uses, scope

    steps = steps_by_name()
    found: Dict[str, Dict[int, List[str]]] = {}
    for index, cell in enumerate(nb.cells):
        gid = nbt.grade_id(cell) if nbt.is_test_cell(cell) else None
        if gid not in calls:
            continue
        defs, aliases = scope(nb, index)  # the notebook as this test cell sees it
        for i, call in enumerate(calls[gid]):
            torch_names, library = steps[call.step].forbidden
            if call.subject.isidentifier() and (torch_names or library):
                uses = forbidden_uses(call.subject, defs, aliases, torch_names, library)
                if uses:
                    found.setdefault(gid, {})[i] = uses
    return found


def seeds_for(calls: Dict[str, List[CheckCall]], secret: str, assignment: str) -> Dict[CheckCall, int]:
    return {c: class_seed(secret, assignment, c.step, c.hidden) for cs in calls.values() for c in cs}
