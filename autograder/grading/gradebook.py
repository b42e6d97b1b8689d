"""The one writer of the gradebook during a grading run: the parent process records each
graded submission as its result comes in (the workers never touch the database, so there are
no SQLite lock errors), and flags those with a problem status. A submission's scores and flag are
committed together at the ``gradebook-commit`` point of the storing path (:mod:`.storing`, which
also retries a write that fails, e.g. while formgrader holds the database); nbgrader commits the
student and submission rows on their own before that, which the storing path allows for (a
submission row without the result's scores is found by :meth:`differs` and stored again)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import course as course_mod
from .jobs import Job
from .storing import crash_point

#: Statuses flagged in the gradebook, for a person to look at.
PROBLEM_STATUSES = ("timeout", "kernel-died", "unreadable", "empty", "wrong-assignment",
                    "missing", "grader-error")


class GradebookWriter:
    """The one writer of the gradebook during a run."""

    def __init__(self, course: Path):
        from nbgrader.api import Gradebook

        self.gb = Gradebook(course_mod.db_url(course))

    def close(self) -> None:
        self.gb.close()

    def has_submission(self, assignment: str, student: str) -> bool:
        from nbgrader.api import MissingEntry

        try:
            self.gb.find_submission(assignment, student)
            return True
        except MissingEntry:
            return False

    def read(self, assignment: str, student: str) -> Optional[Dict[str, Any]]:
        """What the gradebook holds for one submission: ``{"grades": {step: {"auto", "manual",
        "score", "max"}}, "flagged": bool}``, or None when it has no such submission."""
        from nbgrader.api import MissingEntry

        try:
            snb = self.gb.find_submission_notebook(assignment, assignment, student)
        except MissingEntry:
            return None
        grades = {g.name: {"auto": g.auto_score, "manual": g.manual_score, "score": g.score, "max": g.max_score}
                  for g in snb.grades}
        return {"grades": grades, "flagged": bool(snb.flagged)}

    def differs(self, result: Dict[str, Any]) -> Optional[str]:
        """None when the gradebook holds the result's auto scores and problem flag, else how it
        differs (steps the gradebook does not know are left out: they were reported when stored)."""
        entry = self.read(result["assignment"], result["student"])
        if entry is None:
            return "no submission in the gradebook"
        grades = entry["grades"]
        for step in result.get("steps", []):
            if step.get("id") not in grades:
                continue
            auto = grades[step["id"]]["auto"]
            if auto is None or abs(float(auto) - float(step.get("points", 0.0))) > 1e-9:
                return (f"step {step['id']!r}: the gradebook's auto score is {auto}, "
                        f"the result's {float(step.get('points', 0.0)):g}")
        flag = result.get("status") in PROBLEM_STATUSES
        if entry["flagged"] != flag:
            return f"the gradebook's problem flag is {entry['flagged']}, the result's status is {result.get('status')!r}"
        return None

    def submissions(self, assignments: Sequence[str]) -> List[Tuple[str, str]]:
        """(student, assignment) of every submission of these assignments in the gradebook."""
        from nbgrader.api import MissingEntry

        found = []
        for name in assignments:
            try:
                a = self.gb.find_assignment(name)
            except MissingEntry:
                continue
            found += [(s.student.id, name) for s in a.submissions]
        return sorted(found)

    def write(self, course: Path, job: Job, result: Dict[str, Any]) -> List[str]:
        """Record one graded submission: its student and submission rows (nbgrader commits them),
        then its auto scores and problem flag in one commit (a manual score is the instructor's and
        stays). Returns problems (cells the gradebook
        does not know). An error rolls the transaction back and is raised (the storing path
        retries, :mod:`.storing`)."""
        from nbgrader.api import MissingEntry

        problems: List[str] = []
        gb = self.gb
        try:
            gb.update_or_create_student(job.student)
            kwargs = {}
            ts = job.sub_dir / "timestamp.txt"
            try:
                text = ts.read_text(encoding="utf-8", errors="replace").strip() if ts.is_file() else ""
            except OSError:
                text = ""
            if text:
                kwargs["timestamp"] = text
            try:
                with warnings.catch_warnings():
                    # nbgrader's add_submission trips SQLAlchemy's autoflush warnings; harmless.
                    warnings.simplefilter("ignore")
                    gb.update_or_create_submission(job.assignment, job.student, **kwargs)
            except Exception:
                gb.db.rollback()
                gb.update_or_create_submission(job.assignment, job.student)
            snb = gb.find_submission_notebook(job.assignment, job.assignment, job.student)
            for step in result["steps"]:
                try:
                    grade = gb.find_grade(step["id"], job.assignment, job.assignment, job.student)
                except MissingEntry:
                    problems.append(f"step {step['id']!r} is not in the gradebook")
                    continue
                grade.auto_score = float(step["points"])
                grade.needs_manual_grade = grade.manual_score is not None
            snb.flagged = result["status"] in PROBLEM_STATUSES
            crash_point("gradebook-commit")
            gb.db.commit()
            return problems
        except BaseException:
            gb.db.rollback()
            raise
