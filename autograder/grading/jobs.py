"""What there is to grade: one :class:`Job` per submission (a student's folder for an
assignment), with the fingerprint that says whether it changed since it was last graded, and
where each job's result is kept (``COURSE/grading/STUDENT/ASSIGNMENT.json`` and the executed
notebook in ``COURSE/autograded/``, written by :mod:`.storing`). A folder that cannot be read is
that submission's problem (a job with a status), never the run's.

A submission is graded again only when its files, the assignment's source, the limits, the seed
or the grader changed (:data:`GRADER_VERSION`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
    #: (status, message) when the submission cannot be graded at all (a folder that cannot be
    #: read, is a file, loops): it is stored with that status and zero points, never sent to a worker.
    problem: Optional[Tuple[str, str]] = None


def shown(name: str) -> str:
    """A file name as it can be printed and stored (undecodable bytes and control characters
    escaped)."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def odd_name(name: str) -> Optional[str]:
    """Why a folder's name cannot be a student's id or an assignment's, else None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8 text"
    if not name.strip() or any(not c.isprintable() for c in name):
        return "its name is blank or has control characters"
    return None


def result_path(course: Path, student: str, assignment: str) -> Path:
    return Path(course) / "grading" / student / f"{assignment}.json"


def load_result(course: Path, student: str, assignment: str) -> Optional[Dict[str, Any]]:
    p = result_path(course, student, assignment)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _list_dir(folder: Path) -> List[os.DirEntry]:
    """The entries of ``folder`` (raises OSError when it cannot be listed)."""
    with os.scandir(folder) as it:
        return list(it)


def _hash_tree(h, folder: Path, top: bool = True) -> None:
    """Hash a folder's files (names, sizes, contents; links as links). Raises OSError naming the
    part that cannot be read."""
    if top and not folder.is_dir():
        h.update(b"<none>")
        return
    for entry in sorted(_list_dir(folder), key=lambda e: e.name):
        if entry.name.startswith(".ipynb_checkpoints"):
            continue
        p = Path(entry.path)
        rel = entry.name.encode("utf-8", "surrogateescape")
        if entry.is_symlink():
            h.update(b"L:" + rel + b":" + os.fsencode(os.readlink(p)) + b"\n")
        elif entry.is_dir(follow_symlinks=False):
            h.update(b"D:" + rel + b"\n")
            _hash_tree(h, p, top=False)
        elif entry.is_file(follow_symlinks=False):
            h.update(b"F:" + rel + f":{entry.stat(follow_symlinks=False).st_size}\n".encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)


def fingerprint(sub_dir: Path, assignment_dir: Path, limits: Limits, seed: str, sandbox: bool) -> str:
    h = hashlib.sha256()
    # Numbers as floats: --timeout 20 on the command line and Limits(cell_timeout=20) are one limit.
    lim = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
           for k, v in limits.to_dict().items()}
    h.update(f"v{GRADER_VERSION}|{json.dumps(lim, sort_keys=True)}|{seed}|{bool(sandbox)}\n".encode())
    _hash_tree(h, Path(sub_dir))
    h.update(b"|source|")
    _hash_tree(h, Path(assignment_dir))
    return h.hexdigest()


def find_jobs(course: Path, names: Sequence[str], students: Optional[Sequence[str]], limits: Limits,
              sandbox: bool) -> List[Job]:
    return find_submissions(course, names, students, limits, sandbox)[0]


def _folder_problem(path: Path, what: str) -> Optional[str]:
    """None when ``path`` is a folder that can be listed, else why not (a message for people)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"{what} is a link to nothing"
        return f"{what} vanished while the run looked at it"
    except OSError as e:
        return f"{what} cannot be read ({type(e).__name__}: {e.strerror or e})"
    if not stat_mod.S_ISDIR(st.st_mode):
        return f"{what} is a file, not a folder"
    try:
        _list_dir(path)
    except OSError as e:
        return f"{what} cannot be read ({type(e).__name__}: {e.strerror or e})"
    return None


def find_submissions(course: Path, names: Sequence[str], students: Optional[Sequence[str]], limits: Limits,
                     sandbox: bool) -> Tuple[List[Job], List[Tuple[str, str]]]:
    """The jobs of ``COURSE/submitted/``, and the problems of entries that are no submission of a
    known student: ``(entry, why)`` (a file or an unreadable folder where a student's folder
    should be, an odd name). A submission folder that exists but cannot be graded (unreadable, a
    file, a link loop, files that cannot be read) is a job with a ``problem``."""
    course = Path(course)
    sub_root = course / "submitted"
    jobs: List[Job] = []
    problems: List[Tuple[str, str]] = []
    if not os.path.lexists(sub_root):
        return jobs, problems
    try:
        entries = sorted(_list_dir(sub_root), key=lambda e: e.name)
    except OSError as e:
        raise RuntimeError(f"{sub_root} cannot be read ({type(e).__name__}: {e.strerror or e})") from None
    seeds = {name: course_mod.grading_seed(course, name) for name in names}
    for entry in entries:
        student = entry.name
        if student.startswith(".") or (students and student not in students):
            continue
        label = f"submitted/{shown(student)}"
        why = odd_name(student)
        if why:
            problems.append((label, f"not graded: {why}; rename the folder"))
            continue
        sdir = sub_root / student
        why = _folder_problem(sdir, label)
        if why:
            problems.append((label, f"not graded: {why}"))
            continue
        for name in names:
            adir = sdir / name
            if not os.path.lexists(adir):
                continue
            seed = seeds[name]
            why = _folder_problem(adir, f"submitted/{shown(student)}/{name}")
            problem = None
            if why is None:
                try:
                    fp = fingerprint(adir, course / "source" / name, limits, seed, sandbox)
                except OSError as e:
                    what = str(e.filename or "")
                    try:
                        what = Path(what).relative_to(adir).as_posix()
                    except ValueError:
                        pass
                    what = f"submitted/{shown(student)}/{name}" + (f": {shown(what)}" if what else "")
                    why = f"{what} cannot be read ({type(e).__name__}: {e.strerror or e})"
            if why is not None:
                problem = ("unreadable", why + "; nothing was graded")
                fp = hashlib.sha256(f"v{GRADER_VERSION}|problem|{why}|{seed}".encode()).hexdigest()
            jobs.append(Job(student, name, adir, fp, seed, problem))
    return jobs, problems
