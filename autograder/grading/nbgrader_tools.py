"""What the course's grading tools share about nbgrader: cell metadata, scoring a test cell the
way nbgrader does, and running nbgrader's command line in a course folder.

Only the standard library and nbformat are imported here, so the command line starts fast.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

#: The kernel every course notebook names; ``nbgrader autograde`` fails on any other.
KERNEL_NAME = "python3"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL_NAME}

#: What ``nbgrader generate_assignment`` puts where a solution was (ClearSolutions' python stub).
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"

#: Region markers of an nbgrader source notebook; none may survive into a learner's notebook.
SOURCE_MARKERS = (
    "BEGIN SOLUTION",
    "END SOLUTION",
    "BEGIN HIDDEN TESTS",
    "END HIDDEN TESTS",
    "BEGIN MARK SCHEME",
    "END MARK SCHEME",
)


# --------------------------------------------------------------------------- cell metadata


def nbgrader_meta(cell: Mapping[str, Any]) -> Dict[str, Any]:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def grade_id(cell: Mapping[str, Any]) -> Optional[str]:
    return nbgrader_meta(cell).get("grade_id")


def is_grade(cell: Mapping[str, Any]) -> bool:
    return bool(nbgrader_meta(cell).get("grade", False))


def is_solution(cell: Mapping[str, Any]) -> bool:
    return bool(nbgrader_meta(cell).get("solution", False))


def is_test_cell(cell: Mapping[str, Any]) -> bool:
    """An autograded test cell: a code cell with points that is not itself an answer."""
    return cell.get("cell_type") == "code" and is_grade(cell) and not is_solution(cell)


def max_points(cell: Mapping[str, Any]) -> float:
    return float(nbgrader_meta(cell).get("points", 0) or 0)


def cell_source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


# --------------------------------------------------------------------------- scoring a cell


@dataclass
class CellScore:
    points: float
    max_points: float
    reason: str  # "error" | "stderr" | "partial" | "full"
    note: str = ""  # set when the cell's value is one nbgrader reads in a surprising way


def _text_plain(output: Mapping[str, Any]) -> str:
    data = output.get("data", {}).get("text/plain", "")
    return "".join(data) if isinstance(data, list) else str(data)


def score_test_cell(cell: Mapping[str, Any]) -> CellScore:
    """The points of an executed test cell, as ``nbgrader.utils.determine_grade`` computes them.

    The first output that decides wins, in output order: an error or anything on stderr gives 0;
    an ``execute_result`` whose text is a number is the partial credit; otherwise full marks.
    Where nbgrader 0.9 itself does something odd — a negative number or NaN gives full marks,
    a number above the maximum makes ``autograde`` fail — the score is clamped to [0, max]
    (NaN counts as 0) and ``note`` says why; the course's checks never return such values.
    """
    top = max_points(cell)
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "error" or (kind == "stream" and output.get("name") == "stderr"):
            return CellScore(0.0, top, "error" if kind == "error" else "stderr")
        if kind == "execute_result":
            text = _text_plain(output)
            try:
                value = float(text)
            except ValueError:
                # nbgrader gives full marks to a value it cannot read as a number (None, True,
                # a tensor...); only a plain number counts as partial credit.
                return CellScore(top, top, "full")
            if value != value:
                return CellScore(0.0, top, "partial", note="the cell's value is NaN, not a number of points")
            if value < 0:
                return CellScore(0.0, top, "partial", note=f"the cell's value {text} is negative")
            if value > top:
                return CellScore(top, top, "partial", note=f"the cell's value {text} is above the step's {top:g} points")
            return CellScore(value, top, "partial")
    return CellScore(top, top, "full")


# --------------------------------------------------------------------------- running nbgrader


def tool_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment for nbgrader and its helpers (alembic, jupyter): this interpreter's bin/
    first on PATH, so the course's own environment wins over any other installation."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)  # not resolved: a venv's python is a symlink
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if extra:
        env.update(extra)
    return env


def tools_on_path() -> None:
    """Put this interpreter's bin/ first on this process's PATH, where nbgrader finds alembic."""
    bindir = str(Path(sys.executable).parent)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if not parts or parts[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir] + [p for p in parts if p and p != bindir])


class NbgraderError(RuntimeError):
    """An nbgrader command failed; the message holds its command line and the end of its log."""


def run_nbgrader(
    args: Sequence[str],
    course_dir: Path,
    timeout: float = 600,
    env: Optional[Mapping[str, str]] = None,
) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course_dir`` (which holds its nbgrader_config.py)."""
    exe = Path(sys.executable).parent / "nbgrader"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "nbgrader"]
    cmd += list(args)
    try:
        proc = subprocess.run(
            cmd,
            cwd=str(course_dir),
            env=tool_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise NbgraderError(f"`nbgrader {' '.join(args)}` ran past {timeout:g} s") from e
    if proc.returncode != 0:
        raise NbgraderError(
            f"`nbgrader {' '.join(args)}` exited with {proc.returncode}:\n" + _tail(proc.stdout)
        )
    return proc


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


#: What ``nbgrader generate_feedback`` says in a course folder built here, instead of running.
FEEDBACK_REFUSAL = (
    "nbgrader generate_feedback is switched off in this course folder: it would replace the course's "
    "feedback in feedback/STUDENT/ASSIGNMENT/ with pages that show the hidden tests' source. Write the "
    "feedback with `./course feedback --course DIR` (or `python -m autograder feedback --course DIR`), then "
    "hand it out with `nbgrader release_feedback ASSIGNMENT` as usual."
)

_CONFIG_HEAD = """\
# nbgrader's settings for this course folder, written by `python -m autograder build`.
# Every path is relative to this file's folder, so the folder can be moved or copied.
import os

c = get_config()  # noqa: F821
try:
    _here = os.path.dirname(os.path.abspath(__file__))
except NameError:  # read by something other than traitlets' config loader
    _here = os.getcwd()
"""

_CONFIG_REFUSE_FEEDBACK = """
# `nbgrader generate_feedback` (and formgrader's "generate feedback") would overwrite the course's
# feedback pages with nbgrader's, which show the hidden tests' source: it stops here, before
# touching anything. Delete these lines only if you accept that students see the hidden tests.
from nbconvert.exporters import HTMLExporter as _HTMLExporter


class CourseFeedbackOnly(_HTMLExporter):
    message = {message!r}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from nbgrader.converters.base import NbGraderException

        self.log.error(self.message)
        raise NbGraderException(self.message)


c.GenerateFeedback.exporter_class = CourseFeedbackOnly
"""


def write_course_config(
    course_dir: Path,
    course_id: str = "mhsa_course",
    db: bool = True,
    execute_timeout: Optional[int] = None,
    extra: Iterable[str] = (),
    refuse_generate_feedback: bool = True,
) -> Path:
    """Write ``nbgrader_config.py`` for a course folder rooted at ``course_dir``.

    Paths are computed from the config file's own folder when nbgrader reads it (never written
    as absolute paths), so a moved or copied course folder keeps working. With ``db``, the
    gradebook is ``course_dir/gradebook.db``. Settings in this file beat the command line
    (``c.Execute.timeout`` over ``--ExecutePreprocessor.timeout``), so everything a grading run
    depends on is set here. With ``refuse_generate_feedback``, ``nbgrader generate_feedback``
    stops with :data:`FEEDBACK_REFUSAL` instead of overwriting the course's feedback.
    """
    course_dir = Path(course_dir)
    if not isinstance(course_id, str) or not course_id.isidentifier():
        raise ValueError(f"course_id must be a plain name (letters, digits, _), got {course_id!r}")
    course_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        _CONFIG_HEAD,
        "c.CourseDirectory.root = _here",
        f"c.CourseDirectory.course_id = {course_id!r}",
        # A test cell the instructor deleted by mistake is restored from the gradebook
        # instead of leaving the step 'needs manual grading'.
        "c.OverwriteCells.add_missing_cells = True",
    ]
    if db:
        lines.append("c.CourseDirectory.db_url = 'sqlite:///' + os.path.join(_here, 'gradebook.db')")
    if execute_timeout is not None:
        lines.append(f"c.Execute.timeout = {int(execute_timeout)}")
    lines.extend(extra)
    if refuse_generate_feedback:
        lines.append(_CONFIG_REFUSE_FEEDBACK.format(message=FEEDBACK_REFUSAL))
    path = course_dir / "nbgrader_config.py"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def solution_regions(source: str) -> List[str]:
    """The code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a cell's source, one
    string per region (markers and their lines excluded)."""
    regions: List[str] = []
    current: Optional[List[str]] = None
    for line in source.splitlines():
        if "BEGIN SOLUTION" in line:
            current = []
        elif "END SOLUTION" in line:
            if current is not None:
                regions.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return regions


def fill_stubs(release_source: str, regions: Sequence[str]) -> str:
    """Put solution code back where ``generate_assignment`` left its stubs: the k-th
    ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` pair becomes the k-th region,
    indented like the stub (the regions keep their own relative indentation)."""
    lines = release_source.splitlines()
    out: List[str] = []
    k = 0
    i = 0
    stub_head, stub_tail = CODE_STUB.splitlines()
    while i < len(lines):
        line = lines[i]
        if (
            line.strip() == stub_head
            and i + 1 < len(lines)
            and lines[i + 1].strip() == stub_tail
            and k < len(regions)
        ):
            indent = line[: len(line) - len(line.lstrip())]
            body = textwrap.dedent(regions[k])
            out.extend(indent + l if l.strip() else l for l in body.splitlines())
            k += 1
            i += 2
            continue
        out.append(line)
        i += 1
    if k != len(regions):
        raise ValueError(f"found {k} code stubs for {len(regions)} solution regions")
    text = "\n".join(out)
    return text + ("\n" if release_source.endswith("\n") else "")


# --------------------------------------------------------------------------- restoring cells


def strip_hidden(source: str) -> str:
    """A test cell's source as the student sees it: hidden-test regions removed, as nbgrader's
    ClearHiddenTests does."""
    out, hidden = [], False
    for line in source.splitlines():
        if "BEGIN HIDDEN TESTS" in line:
            hidden = True
        elif "END HIDDEN TESTS" in line:
            hidden = False
        elif not hidden:
            out.append(line)
    return "\n".join(out)


def _locked_only(cell) -> bool:
    m = nbgrader_meta(cell)
    return bool(m.get("locked")) and not m.get("solution") and not m.get("grade")


def restore(nb, source) -> Tuple[Any, List[str]]:
    """The submission with every cell the student may not change taken from ``source``.
    Returns the notebook (changed in place) and notes on what was restored."""
    from nbformat import NotebookNode

    notes: List[str] = []
    src_cells = list(source.cells)
    src_by_id = {}
    for i, c in enumerate(src_cells):
        gid = grade_id(c)
        if gid and nbgrader_meta(c):
            src_by_id[gid] = (i, c)
    seen = set()
    out = []
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        gid = meta.get("grade_id") if meta else None
        if meta and (gid not in src_by_id or gid in seen):
            # A grade cell the instructor never wrote (or a copy of one): an ordinary cell now.
            if meta.get("grade") or meta.get("solution"):
                notes.append(f"cell {gid!r} is not one of the assignment's graded cells (or a duplicate); it is not graded")
            del cell.metadata["nbgrader"]
            out.append(cell)
            continue
        if not meta:
            out.append(cell)
            continue
        seen.add(gid)
        s = src_by_id[gid][1]
        if is_test_cell(s) or _locked_only(s):
            if is_test_cell(s) and strip_hidden(cell_source(cell)).strip() != strip_hidden(cell_source(s)).strip():
                notes.append(f"test cell {gid!r} was edited; it was graded as the instructor wrote it")
            if is_grade(s) and max_points(cell) != max_points(s):
                notes.append(f"the points of {gid!r} were changed to {max_points(cell):g}; "
                             f"it is worth {max_points(s):g}")
            new = copy.deepcopy(s)
            if new.cell_type == "code":
                new.outputs = []
                new.execution_count = None
            out.append(new)
        else:
            if is_grade(s) and max_points(cell) != max_points(s):
                notes.append(f"the points of {gid!r} were changed to {max_points(cell):g}; "
                             f"it is worth {max_points(s):g}")
            cell.metadata["nbgrader"] = copy.deepcopy(s.metadata["nbgrader"])
            if cell.cell_type != s.cell_type:
                notes.append(f"cell {gid!r} was turned into a {cell.cell_type} cell; it is graded as {s.cell_type}")
                cell = NotebookNode(copy.deepcopy(dict(s, source=cell_source(cell))))
            out.append(cell)
    # Test cells the student deleted go back after the nearest preceding graded cell.
    for i, s in enumerate(src_cells):
        gid = grade_id(s)
        if not gid or gid in seen or not is_test_cell(s):
            continue
        before = {grade_id(c) for c in src_cells[:i] if grade_id(c)}
        pos = 0
        for j, c in enumerate(out):
            if grade_id(c) in before:
                pos = j + 1
        new = copy.deepcopy(s)
        new.outputs = []
        new.execution_count = None
        out.insert(pos, new)
        seen.add(gid)
        notes.append(f"test cell {gid!r} was missing; it was put back from the instructor's copy")
    for cell in out:
        if cell.get("cell_type") == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.cells = out
    spec = nb.metadata.get("kernelspec", {})
    if not isinstance(spec, dict) or spec.get("name") != KERNEL_NAME:
        name = spec.get("name") if isinstance(spec, dict) else spec
        notes.append(f"kernelspec {name!r} replaced by {KERNEL_NAME!r}")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb, notes
