"""What there is to grade: one :class:`Job` per submission (a student's folder for an
assignment), with the fingerprint that says whether it changed since it was last graded, and
where each job's result is kept (``COURSE/grading/STUDENT/ASSIGNMENT.json`` and the executed
notebook in ``COURSE/autograded/``).

A submission is graded again only when its files, the assignment's source, the limits, the seed
or the grader changed (:data:`GRADER_VERSION`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from . import course as course_mod
from .engine import Limits

#: Bump when grading behaviour changes, so that unchanged submissions are graded again.
GRADER_VERSION = "2"  # 2: scores judged outside the student's code, hidden cases per class


@dataclass
class Job:
    student: str
    assignment: str
    sub_dir: Path
    fingerprint: str
    seed: str


def result_path(course: Path, student: str, assignment: str) -> Path:
    return Path(course) / "grading" / student / f"{assignment}.json"


def load_result(course: Path, student: str, assignment: str) -> Optional[Dict[str, Any]]:
    p = result_path(course, student, assignment)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _hash_tree(h, folder: Path) -> None:
    if not folder.is_dir():
        h.update(b"<none>")
        return
    for p in sorted(folder.rglob("*")):
        if ".ipynb_checkpoints" in p.parts:
            continue
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            h.update(f"L:{rel}:{os.readlink(p)}\n".encode())
        elif p.is_file():
            h.update(f"F:{rel}:{p.stat().st_size}\n".encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)


def fingerprint(sub_dir: Path, assignment_dir: Path, limits: Limits, seed: str, sandbox: bool) -> str:
    h = hashlib.sha256()
    h.update(f"v{GRADER_VERSION}|{json.dumps(limits.to_dict(), sort_keys=True)}|{seed}|{sandbox}\n".encode())
    _hash_tree(h, Path(sub_dir))
    h.update(b"|source|")
    _hash_tree(h, Path(assignment_dir))
    return h.hexdigest()


def find_jobs(course: Path, names: Sequence[str], students: Optional[Sequence[str]], limits: Limits,
              sandbox: bool) -> List[Job]:
    course = Path(course)
    sub_root = course / "submitted"
    jobs: List[Job] = []
    if not sub_root.is_dir():
        return jobs
    for sdir in sorted(p for p in sub_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if students and sdir.name not in students:
            continue
        for name in names:
            adir = sdir / name
            if not adir.is_dir():
                continue
            seed = course_mod.grading_seed(course, name)
            fp = fingerprint(adir, course / "source" / name, limits, seed, sandbox)
            jobs.append(Job(sdir.name, name, adir, fp, seed))
    return jobs


def store_result(course: Path, job: Job, result: Dict[str, Any]) -> None:
    """Keep a job's result: the autograded folder (the student's other files, then the graded
    notebook: formgrader's view) and the JSON result (the notebook's path and the job's
    temporary folder taken out of it)."""
    nb = result.pop("_notebook", None)
    result.pop("_jobdir", None)
    dest = Path(course) / "autograded" / job.student / job.assignment
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for p in job.sub_dir.iterdir():
        if p.is_file() and not p.is_symlink() and p.name != f"{job.assignment}.ipynb" and p.stat().st_size < 50 * 2**20:
            shutil.copyfile(p, dest / p.name)
    if nb:
        shutil.copyfile(nb, dest / f"{job.assignment}.ipynb")
    else:  # nothing ran: a stand-in, so that formgrader lists (and flags) the submission too
        course_mod.write_standin_notebook(course, job.assignment, dest / f"{job.assignment}.ipynb",
                                          result.get("status", ""), result.get("message", ""))
    path = result_path(course, job.student, job.assignment)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
