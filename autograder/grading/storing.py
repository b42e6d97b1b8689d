"""Storing one graded submission, crash-safe: an explicit, ordered sequence of writes after which
the result file, the autograded notebook, the gradebook and the CSV exports never disagree in a
way the next run cannot see and repair.

The sequence (:func:`store`), each write named by a point of :data:`CRASH_POINTS`:

1. ``autograded-temp``: the student's other files and the executed notebook are copied into a
   temporary sibling of ``autograded/STUDENT/ASSIGNMENT`` (``.ASSIGNMENT.new-*``);
2. ``result-pending``: ``grading/STUDENT/ASSIGNMENT.json`` is written atomically (temporary file,
   fsync, rename) with ``"state": "pending"`` and the SHA-256 of the executed notebook;
3. ``autograded-swap`` and ``autograded-swap-half``: the old autograded folder is renamed aside,
   the temporary one renamed into its place, the old one removed;
4. ``gradebook-commit``: the auto scores and the problem flag are committed to the gradebook
   together (nbgrader has committed the student and submission rows just before; a row without
   the result's scores is found like any other difference); manual scores are the instructor's
   and stay;
5. ``result-stored``: the result file is rewritten atomically with ``"state": "stored"``;
6. ``exports`` and ``exports-half`` (once per run, after the last submission): when
   ``COURSE/exports/`` exists, the CSV files are regenerated in a temporary folder and each one
   that differs is renamed over the old one.

A submission counts as stored (:func:`stored_state`) only when its result says ``stored``, its
autograded notebook has the recorded hash and the gradebook holds exactly the result's auto
scores and flag. Whatever a crash interrupts is therefore found by the next run: a ``pending``
result whose notebook is in place is stored again without grading (gradebook, then the mark),
anything else is graded again; everything already stored is left alone.

The test hook: with ``MHSA_GRADING_CRASH_AT=POINT`` (a name of :data:`CRASH_POINTS`) the grading
process kills itself with SIGKILL when it reaches that point, so that a test can crash the grader
at every write in turn (``tests/test_grading_store.py``).
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import course as course_mod
from . import runlock
from .jobs import Job, result_path

#: Environment variable of the test hook: the grader kills itself at this point.
CRASH_ENV = "MHSA_GRADING_CRASH_AT"
#: Every write on the storing path, in order (the process is killed just before the named write;
#: the ``-half`` points lie between the two renames of one swap).
CRASH_POINTS = (
    "autograded-temp",
    "result-pending",
    "autograded-swap",
    "autograded-swap-half",
    "gradebook-commit",
    "result-stored",
    "exports",
    "exports-half",
)
#: Seconds to wait before each new attempt of a write that failed (a gradebook locked by
#: formgrader for a moment, a full disk being cleared); then the failure is the submission's.
RETRY_DELAYS = (0.2, 0.5, 1.0)
#: Files of the student larger than this are not copied into the autograded folder.
MAX_COPY_BYTES = 50 * 2**20

PENDING = "pending"
STORED = "stored"


class StoreError(Exception):
    """A write of the storing path failed after its retries."""


def check_crash_env() -> None:
    """Refuse an unknown point in :data:`CRASH_ENV` (a typo would silently test nothing)."""
    value = os.environ.get(CRASH_ENV)
    if value and value not in CRASH_POINTS:
        raise RuntimeError(f"{CRASH_ENV}={value!r} is not a point of the storing path "
                           f"(expected one of: {', '.join(CRASH_POINTS)})")


def crash_point(name: str) -> None:
    """The test hook: SIGKILL this process when :data:`CRASH_ENV` names this point."""
    if name not in CRASH_POINTS:
        raise ValueError(f"crash_point: {name!r} is not in CRASH_POINTS")
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def retried(what: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, tried again after each of :data:`RETRY_DELAYS` when it raises; then
    :class:`StoreError` naming ``what`` and the last error."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return fn()
        except Exception as e:  # OSError, sqlite's "database is locked", ...
            if delay is None:
                raise StoreError(f"{what} failed after {len(RETRY_DELAYS) + 1} attempts: {type(e).__name__}: {e}") from e
            time.sleep(delay)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- files


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Dict[str, Any]) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=1, ensure_ascii=False))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


#: Keys of a result file left out of its checksum: the storing mark, which changes once stored,
#: and the checksum itself.
_UNSUMMED = ("state", "result_sha256")


def result_sha256(result: Dict[str, Any]) -> str:
    """Checksum of a result's content as it is written (every key but :data:`_UNSUMMED`), so that a
    result file altered by hand (a step's points, the status) is told from the one the grader wrote."""
    body = {k: v for k, v in result.items() if k not in _UNSUMMED and not k.startswith("_")}
    text = json.dumps(json.loads(json.dumps(body, ensure_ascii=False)), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> Optional[str]:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def autograded_dir(course: Path, student: str, assignment: str) -> Path:
    return Path(course) / "autograded" / student / assignment


def leftovers(course: Path, student: str, assignment: str) -> List[Path]:
    """Temporary siblings a crash left next to the autograded folder, and result temp files."""
    found: List[Path] = []
    parent = Path(course) / "autograded" / student
    for prefix in (f".{assignment}.new-", f".{assignment}.old-"):
        found += sorted(parent.glob(f"{prefix}*")) if parent.is_dir() else []
    rparent = result_path(course, student, assignment).parent
    if rparent.is_dir():
        found += sorted(rparent.glob(f".{assignment}.json.*.tmp"))
        old_tmp = rparent / f"{assignment}.tmp"  # the name an older grader used
        if old_tmp.exists():
            found.append(old_tmp)
    return found


def remove_leftovers(course: Path, student: str, assignment: str) -> List[Path]:
    gone = []
    for p in leftovers(course, student, assignment):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                continue
        gone.append(p)
    return gone


def _fill_temp_dir(job: Job, notebook: Optional[str], temp: Path, course: Path, result: Dict[str, Any]) -> None:
    temp.mkdir(parents=True)
    try:
        entries = list(os.scandir(job.sub_dir))
    except OSError:
        entries = []
    for entry in entries:
        try:
            if (entry.is_file(follow_symlinks=False) and entry.name != f"{job.assignment}.ipynb"
                    and entry.stat(follow_symlinks=False).st_size < MAX_COPY_BYTES):
                shutil.copyfile(entry.path, temp / entry.name)
        except OSError:
            continue  # a file the student's folder lost or hides: not part of formgrader's view
    if notebook:
        shutil.copyfile(notebook, temp / f"{job.assignment}.ipynb")
    else:  # nothing ran: a stand-in, so that formgrader lists (and flags) the submission too
        course_mod.write_standin_notebook(course, job.assignment, temp / f"{job.assignment}.ipynb",
                                          result.get("status", ""), result.get("message", ""))


def _swap_in(temp: Path, dest: Path) -> None:
    """Put ``temp`` in the place of ``dest`` by renames (the old folder is moved aside first)."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(dest, old)
    crash_point("autograded-swap-half")
    os.rename(temp, dest)
    _fsync_dir(dest.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


# --------------------------------------------------------------------------- the sequence


def store(course: Path, job: Job, result: Dict[str, Any], writer) -> List[str]:
    """Store one graded ``result`` (with ``_notebook``: the executed notebook, or None) by the
    ordered writes of this module; returns the gradebook's problems (steps it does not know).
    Raises :class:`StoreError` when a write keeps failing: what is written so far is then found
    by the next run (a ``pending`` result, or an older ``stored`` one whose fingerprint differs)."""
    course = Path(course)
    nb = result.pop("_notebook", None)
    result.pop("_jobdir", None)
    dest = autograded_dir(course, job.student, job.assignment)
    remove_leftovers(course, job.student, job.assignment)
    temp = dest.parent / f".{dest.name}.new-{os.getpid()}-{time.monotonic_ns()}"

    crash_point("autograded-temp")

    def fill():
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
        _fill_temp_dir(job, nb, temp, course, result)

    try:
        retried("writing the autograded notebook", fill)
        result["notebook_sha256"] = file_sha256(temp / f"{job.assignment}.ipynb")  # graded, or the stand-in
        result["state"] = PENDING
        result["result_sha256"] = result_sha256(result)
        path = result_path(course, job.student, job.assignment)
        crash_point("result-pending")
        retried("writing the result file", lambda: write_json_atomic(path, result))
        crash_point("autograded-swap")
        retried("putting the autograded folder in place", lambda: _swap_in(temp, dest) if temp.exists() else None)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return finish_store(course, job, result, writer)


def restore(course: Path, job: Job, result: Dict[str, Any], writer) -> List[str]:
    """Store a ``pending`` result whose autograded notebook is in place again (after a crash):
    the temporary leftovers go, then the gradebook and the mark are written."""
    remove_leftovers(course, job.student, job.assignment)
    return finish_store(course, job, result, writer)


def finish_store(course: Path, job: Job, result: Dict[str, Any], writer) -> List[str]:
    """The last writes of :func:`store` (gradebook, then the ``stored`` mark); also what stores a
    ``pending`` result again after a crash."""
    problems = retried("writing the gradebook", lambda: writer.write(course, job, result))
    result["state"] = STORED
    result["result_sha256"] = result_sha256(result)
    path = result_path(course, job.student, job.assignment)
    crash_point("result-stored")
    retried("marking the result stored", lambda: write_json_atomic(path, result))
    return problems


# --------------------------------------------------------------------------- what is stored


def notebook_matches(course: Path, result: Dict[str, Any]) -> Optional[str]:
    """None when the autograded notebook is the one the result recorded, else how it differs."""
    student, assignment = result.get("student"), result.get("assignment")
    if "notebook_sha256" not in result:
        return "the result records no autograded notebook (written by an older grader)"
    want = result["notebook_sha256"]
    nb = autograded_dir(course, student, assignment) / f"{assignment}.ipynb"
    if want is None:
        return None
    got = file_sha256(nb)
    if got is None:
        return f"autograded/{student}/{assignment}/{assignment}.ipynb is missing"
    if got != want:
        return f"autograded/{student}/{assignment}/{assignment}.ipynb is not the graded one"
    return None


def result_problem(result: Any, student: str, assignment: str) -> Optional[str]:
    """None when ``result`` is a well-formed result of this submission, else what is wrong."""
    if not isinstance(result, dict):
        return "the result file is not a JSON object"
    if result.get("student") != student or result.get("assignment") != assignment:
        return "the result file belongs to another submission"
    steps = result.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) and "id" in s and "points" in s for s in steps):
        return "the result file has no valid steps"
    try:
        [float(s["points"]) for s in steps]
    except (TypeError, ValueError):
        return "the result file has steps without numeric points"
    return None


def stored_state(course: Path, result: Optional[Dict[str, Any]], writer, student: str,
                 assignment: str) -> Tuple[str, str]:
    """How complete a submission's stored state is: ``("stored", "")`` when every store agrees;
    ``("restore", why)`` when a ``pending`` result only lacks its gradebook writes and mark;
    ``("regrade", why)`` when it must be graded again. ``writer``: the run's
    :class:`.gradebook.GradebookWriter`."""
    if result is None:
        return "regrade", "no readable result file"
    bad = result_problem(result, student, assignment)
    if bad:
        return "regrade", bad
    if result.get("state") not in (PENDING, STORED):
        return "regrade", "the result file has no storing state (written by an older grader)"
    if "result_sha256" not in result:
        return "regrade", "the result file records no checksum (written by an older grader)"
    if result["result_sha256"] != result_sha256(result):
        return "regrade", "the result file was altered after it was stored (its checksum differs)"
    why = notebook_matches(course, result)
    if why:
        return "regrade", why
    if result["state"] == PENDING:
        return "restore", "the result was not marked stored (a run stopped while storing it)"
    why = writer.differs(result)
    if why:
        return "restore", why
    return STORED, ""


# --------------------------------------------------------------------------- exports


def exports_dir(course: Path) -> Path:
    return Path(course) / "exports"


@dataclass
class ExportSync:
    differing: List[str] = field(default_factory=list)
    written: List[str] = field(default_factory=list)


def sync_exports(course: Path, dry_run: bool = False) -> ExportSync:
    """When ``COURSE/exports/`` exists: regenerate the CSV files (``export.export``) in a
    temporary folder and rename each one that differs (or is missing) into place."""
    from . import export

    course = Path(course)
    out = exports_dir(course)
    sync = ExportSync()
    if not out.is_dir():
        return sync
    if not dry_run:
        for old in course.glob(".exports.*"):  # a stopped run's
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".exports.", dir=str(course)) as tmp:
        fresh = export.export(course, Path(tmp))
        changed = [p for p in fresh if not (out / p.name).is_file()
                   or not filecmp.cmp(p, out / p.name, shallow=False)]
        sync.differing = [p.name for p in changed]
        if dry_run or not changed:
            return sync
        crash_point("exports")
        for i, p in enumerate(changed):
            if i == 1:
                crash_point("exports-half")
            os.replace(p, out / p.name)
            sync.written.append(p.name)
        _fsync_dir(out)
    return sync


# --------------------------------------------------------------------------- the check


@dataclass
class Finding:
    """One divergence between the stores: ``action`` is ``restore`` (write the gradebook and the
    mark from a complete result), ``regrade``, ``remove`` (a crash's temporary file or folder),
    ``export`` (a CSV file that differs from the gradebook) or ``report`` (nothing can be done
    here: said, left as it is)."""

    where: str
    why: str
    action: str
    student: Optional[str] = None
    assignment: Optional[str] = None


def _keys(course: Path, names: List[str], writer) -> List[Tuple[str, str]]:
    keys = set(writer.submissions(names))
    for top in ("grading", "autograded"):
        root = Path(course) / top
        if not root.is_dir():
            continue
        for sdir in root.iterdir():
            if sdir.name.startswith(".") or not sdir.is_dir():
                continue
            for name in names:
                if (top == "grading" and (sdir / f"{name}.json").exists()) or (
                        top == "autograded" and (sdir / name).exists()):
                    keys.add((sdir.name, name))
                if leftovers(course, sdir.name, name):
                    keys.add((sdir.name, name))
    return sorted(keys)


def audit(course: Path, names: List[str], writer, students: Optional[List[str]] = None) -> List[Finding]:
    """Every divergence between the result files, the gradebook's auto scores and flags, the
    autograded notebooks and the CSV exports of these assignments (of these students only, when
    given; nothing is changed)."""
    from .jobs import load_result

    course = Path(course)
    found: List[Finding] = []
    for p in sorted(course.glob(".exports.*")):
        found.append(Finding(p.name, "a temporary export folder left by a stopped run", "remove"))
    for p in runlock.stale_folders(course):
        found.append(Finding(str(p.relative_to(course)), "a temporary folder left by a stopped grading run", "remove"))
    for student, assignment in _keys(course, names, writer):
        if students and student not in students:
            continue
        where = f"{student}/{assignment}"
        for p in leftovers(course, student, assignment):
            found.append(Finding(str(p.relative_to(course)), "a temporary file left by a stopped run", "remove",
                                 student, assignment))
        path = result_path(course, student, assignment)
        result = load_result(course, student, assignment)
        has_result = path.exists()
        has_autograded = autograded_dir(course, student, assignment).exists()
        if not has_result and not has_autograded:
            continue  # in the gradebook only (graded by nbgrader itself or by hand): not this grader's
        state, why = stored_state(course, result, writer, student, assignment)
        if state == STORED:
            continue
        if not has_result:
            why = "the result file is missing"
        elif result is None:
            why = "the result file cannot be read as JSON"
        submitted = (course / "submitted" / student / assignment).is_dir()
        if state == "regrade" and not submitted:
            found.append(Finding(where, why + "; its submission is no longer in submitted/, so it cannot be graded "
                                 "again (left as it is)", "report", student, assignment))
        else:
            found.append(Finding(where, why, state, student, assignment))
    for name in sync_exports(course, dry_run=True).differing:
        found.append(Finding(f"exports/{name}", "differs from the gradebook", "export"))
    return found
