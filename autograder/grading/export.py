"""Grades as CSV, read from the gradebook: ``python -m autograder export``.

``COURSE/exports/ASSIGNMENT.csv``: one row per student of the gradebook, one column per graded
cell (in notebook order), then ``score``, ``max_score``, the grader's ``status`` and
``graded_by_instructor`` (the cells whose score an instructor set in formgrader, separated by
``;``); a student without a submission has empty step cells and the status ``no submission``.
``COURSE/exports/course.csv``: one row per student, one column per assignment, then ``total`` and
``max_total``. The gradebook stays the source of truth: a manual score given in formgrader is
what these files hold, in the cell and in the totals.
"""

from __future__ import annotations

import csv
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from . import course as course_mod
from . import runlock
from .jobs import load_result


def _fmt(x: Optional[float]) -> str:
    return "" if x is None else f"{float(x):g}"


@contextmanager
def _replacing(path: Path) -> Iterator:
    """Write ``path`` whole or not at all: into a hidden file beside it, renamed over it at the
    end (a reader never sees half a file; a failed write leaves the old one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export(course: Path, out_dir: Optional[Path] = None) -> List[Path]:
    from nbgrader.api import Gradebook

    course = Path(course)
    out_dir = Path(out_dir) if out_dir else course / "exports"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    totals: Dict[str, Dict[str, float]] = {}
    maxima: Dict[str, float] = {}
    with Gradebook(course_mod.db_url(course)) as gb:
        students = sorted(s.id for s in gb.students)
        for assignment in sorted(gb.assignments, key=lambda a: a.name):
            cells = {}
            for nb in assignment.notebooks:
                for gc in nb.grade_cells:
                    cells[gc.name] = gc.max_score
            steps = course_mod.step_order(course, assignment.name, list(cells))
            maxima[assignment.name] = float(sum(cells.values()))
            subs = {s.student.id: s for s in assignment.submissions}
            path = out_dir / f"{assignment.name}.csv"
            with _replacing(path) as f:
                w = csv.writer(f)
                w.writerow(["student_id", *steps, "score", "max_score", "status", "graded_by_instructor"])
                for student in students:
                    sub = subs.get(student)
                    if sub is None:
                        w.writerow([student, *[""] * len(steps), "0", _fmt(maxima[assignment.name]), "no submission", ""])
                        totals.setdefault(student, {})[assignment.name] = 0.0
                        continue
                    all_grades = [g for snb in sub.notebooks for g in snb.grades]
                    grades = {g.name: g.score for g in all_grades}  # the instructor's score where set
                    manual = [s for s in steps if any(g.name == s and g.manual_score is not None for g in all_grades)]
                    score = float(sum(v or 0.0 for v in grades.values()))
                    result = load_result(course, student, assignment.name) or {}
                    w.writerow([student, *[_fmt(grades.get(s)) for s in steps], _fmt(score),
                                _fmt(maxima[assignment.name]), result.get("status", "graded by nbgrader"),
                                ";".join(manual)])
                    totals.setdefault(student, {})[assignment.name] = score
            written.append(path)
    names = sorted(maxima)
    path = out_dir / "course.csv"
    with _replacing(path) as f:
        w = csv.writer(f)
        w.writerow(["student_id", *names, "total", "max_total"])
        top = sum(maxima.values())
        for student in students:
            row = totals.get(student, {})
            w.writerow([student, *[_fmt(row.get(n, 0.0)) for n in names], _fmt(sum(row.values())), _fmt(top)])
    written.append(path)
    return written


def add_arguments(parser) -> None:
    course_mod.add_course_argument(parser)
    parser.add_argument("--to", type=Path, default=None, metavar="DIR", help="where the CSV files go (default: COURSE/exports)")
    parser.add_argument("--wait", action="store_true",
                        help="if a grading run is writing this course's grades, wait for it instead of stopping at once")


def main(args) -> int:
    problem = course_mod.check_course(args.course)
    if problem:
        print(f"export: {problem}", file=sys.stderr)
        return 1
    warning = course_mod.config_warning(args.course)
    if warning:
        print(f"export: warning: {warning}", file=sys.stderr)
    # The course's grading lock: a run that is storing grades (and regenerating these files) is
    # not read half way, and two writers never write one file.
    try:
        with runlock.course_lock(args.course, wait=args.wait, stream=sys.stderr):
            written = export(args.course, args.to)
    except runlock.CourseBusy as e:
        print(f"export: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"export: wrote {path}")
    return 0
