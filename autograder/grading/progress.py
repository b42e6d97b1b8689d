"""Self-study progress: ``python -m autograder progress`` (``./course progress``).

Checks every notebook in ``notebooks/`` the way ``./course check`` does (each in a fresh kernel,
the files only read), a few at a time, and prints one table for the whole course: steps passed
and points per notebook, the written parts your instructor grades (pending or still blank), the
totals, and the next thing to do (the first step, in course order, that does not pass yet, with the
first line of its check's report, or else the first written part still blank).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .release import DEFAULT_NOTEBOOKS
from .selfcheck import DEFAULT_CELL_TIMEOUT, DEFAULT_TOTAL_TIMEOUT, score_line


@dataclass
class Row:
    notebook: Path
    steps: List[Dict[str, Any]] = field(default_factory=list)
    error: Optional[str] = None
    #: The written parts: {"id", "points", "state"} with state "pending" or "blank".
    written: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(1 for s in self.steps if s["passed"])

    @property
    def points(self) -> float:
        return round(sum(s["points"] for s in self.steps), 6)

    @property
    def max_points(self) -> float:
        """The auto-graded points there are."""
        return round(sum(s["max_points"] for s in self.steps), 6)

    @property
    def instructor_points(self) -> float:
        return round(sum(float(w["points"]) for w in self.written), 6)

    @property
    def blank(self) -> List[Dict[str, Any]]:
        return [w for w in self.written if w.get("state") != "pending"]

    @property
    def state(self) -> str:
        if self.error:
            return "cannot run"
        if not self.steps or self.passed == len(self.steps):
            return "written part blank" if self.blank else "done"
        untouched = ("not implemented", "no trained model yet")  # what an untouched step reports
        if self.points == 0 and all(any(u in s["message"] for u in untouched) for s in self.steps):
            return "not started"
        return "in progress"


def check_one(path: Path, timeout: float, total_timeout: float) -> Row:
    cmd = [sys.executable, "-m", "autograder", "check", str(path), "--json",
           "--timeout", str(timeout), "--total-timeout", str(total_timeout)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=total_timeout + 180,
                              cwd=str(Path(__file__).resolve().parents[2]))
    except subprocess.TimeoutExpired:
        return Row(path, error=f"the check did not finish within {total_timeout + 180:g} s")
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        return Row(path, error=(lines[-1] if lines else f"the check exited with {proc.returncode}"))
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Row(path, error="the check printed no result")
    return Row(path, steps=data.get("steps", []), written=data.get("written", []))


def course_progress(notebooks: Path, workers: int = 2, timeout: float = DEFAULT_CELL_TIMEOUT,
                    total_timeout: float = DEFAULT_TOTAL_TIMEOUT) -> List[Row]:
    paths = sorted(Path(notebooks).glob("*.ipynb"))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda p: check_one(p, timeout, total_timeout), paths))


def next_step(rows: List[Row]) -> str:
    for row in rows:
        if row.error:
            return f"{row.notebook}: fix the notebook first ({row.error})"
        for s in row.steps:
            if not s["passed"]:
                first = next((l.strip() for l in s["message"].splitlines() if l.strip()), "")
                # The report's own first line repeats the points: show the first specific line.
                lines = [l.strip() for l in s["message"].splitlines() if l.strip()]
                detail = next((l for l in lines[1:] if l.startswith(("✗", "x ", "Diagnosis", "not "))), first)
                return (f"{row.notebook}: step {s['id']} ({s['points']:g} / {s['max_points']:g} points)"
                        + (f": {detail}" if detail else "")
                        + f"\n  (see all its steps with `./course check {row.notebook}`)")
        for w in row.blank:
            return (f"{row.notebook}: the written part {w['id']} ({float(w['points']):g} points, graded by your "
                    "instructor) is still blank: write your answer in its cell")
    pending = sum(r.instructor_points for r in rows)
    if pending:
        return (f"every auto-graded step of every notebook passes and every written part is filled in; "
                f"{pending:g} points of written parts await your instructor's grading.")
    return "every step of every notebook passes. Well done!"


def format_progress(rows: List[Row], notebooks: Path) -> str:
    width = max([len(r.notebook.stem) for r in rows] + [8])
    lines = [f"Course progress ({notebooks})", "",
             f"  {'notebook':<{width}}  {'steps passed':>12}  {'points':>13}  {'written parts':<26}  state"]
    for r in rows:
        if r.error:
            lines.append(f"  {r.notebook.stem:<{width}}  {'-':>12}  {'-':>13}  {'-':<26}  cannot run: {r.error}")
            continue
        lines.append(f"  {r.notebook.stem:<{width}}  {f'{r.passed} / {len(r.steps)}':>12}  "
                     f"{f'{r.points:g} / {r.max_points:g}':>13}  {written_cell(r):<26}  {r.state}")
    steps = sum(len(r.steps) for r in rows)
    passed = sum(r.passed for r in rows)
    total = score_line(round(sum(r.points for r in rows), 6), round(sum(r.max_points for r in rows), 6),
                       round(sum(r.instructor_points for r in rows), 6))
    lines += ["", f"Total: {passed} / {steps} steps pass, {total}", "", "Next: " + next_step(rows)]
    return "\n".join(lines)


def written_cell(row: Row) -> str:
    """The written parts of a notebook in a few words: "-" when it has none."""
    if not row.written:
        return "-"
    blank = row.blank
    points = f"{row.instructor_points:g} pt"
    if not blank:
        return f"{points}, pending grading"
    return f"{points}, {len(blank)} of {len(row.written)} blank"


def add_arguments(parser) -> None:
    parser.add_argument("--notebooks", type=Path, default=DEFAULT_NOTEBOOKS, metavar="DIR",
                        help="your notebooks (default: notebooks/)")
    parser.add_argument("--workers", "-j", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                        help="notebooks checked at once (default: 2, or 1 on a one-core machine)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_CELL_TIMEOUT, metavar="SECONDS",
                        help=f"time limit for one cell (default {DEFAULT_CELL_TIMEOUT})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def main(args) -> int:
    if not Path(args.notebooks).is_dir():
        print(f"progress: {args.notebooks} is not a folder", file=sys.stderr)
        return 1
    rows = course_progress(args.notebooks, args.workers, args.timeout)
    if not rows:
        print(f"progress: no notebooks in {args.notebooks}")
        return 1
    if args.json:
        print(json.dumps({"notebooks": [{"notebook": str(r.notebook), "state": r.state, "error": r.error,
                                         "passed": r.passed, "steps": len(r.steps), "points": r.points,
                                         "max_points": r.max_points, "instructor_points": r.instructor_points,
                                         "total_points": round(r.max_points + r.instructor_points, 6),
                                         "written": r.written} for r in rows],
                          "next": next_step(rows)}, ensure_ascii=False))
    else:
        print(format_progress(rows, args.notebooks))
    return 0
