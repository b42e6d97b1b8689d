"""The one writer of the gradebook during a grading run: the parent process records each
graded submission as its result comes in (the workers never touch the database, so there are
no SQLite lock errors), and flags those with a problem status."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Dict, List

from . import course as course_mod
from .jobs import Job

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

    def write(self, course: Path, job: Job, result: Dict[str, Any]) -> List[str]:
        """Record one graded submission; returns problems (cells the gradebook does not know)."""
        from nbgrader.api import MissingEntry

        problems: List[str] = []
        for attempt in range(5):
            try:
                gb = self.gb
                gb.update_or_create_student(job.student)
                kwargs = {}
                ts = job.sub_dir / "timestamp.txt"
                if ts.is_file():
                    text = ts.read_text(encoding="utf-8", errors="replace").strip()
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
                gb.db.commit()
                return problems
            except Exception as e:  # a formgrader holding the database for a moment
                self.gb.db.rollback()
                if "locked" not in str(e).lower() or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
        return problems
