"""One submission graded on another machine (a Dask worker, :mod:`.executors`): the payload the
instructor's side builds, and the task function a worker runs.

The payload carries everything as bytes, never a path of the instructor's machine: the
submission's files (regular files only, each at most :data:`.worker.MAX_COPY_BYTES`, as a local
working copy gets them; links, special files and larger files are named in its notes), the
assignment's source notebook and data files, the limits, the grading seed, the no-sandbox flag
and the grader's version. The worker needs the course's wheel installed (``mhsa-course``, with
the extra ``cluster``): :func:`grade_task` is found by its module's name.

On the worker, :func:`grade_task` checks that its grader is the run's (:func:`grader_version`)
and that the sandbox starts (unless the run is ``--no-sandbox``), writes the bytes into a fresh
scratch folder under the worker's own local directory, claims a sandbox slot machine-wide
(:func:`.pool.claim_slot`), grades in a child process (``worker.py --serve``, one per worker
thread, kept for the next task as a local run keeps its workers; with the same time limit, and
replaced when it dies or runs past it) and returns the result and the executed notebook's bytes.
It writes nothing outside that scratch folder, which it removes (the child process's log is a
file without a name). Whatever fails is the result's
``grader-error``, never a raised exception and never a student's zero.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional

from . import course as course_mod
from . import pool as pool_mod
from . import worker as worker_mod
from .engine import Limits
from .jobs import GRADER_VERSION, Job

#: The payload's layout; a worker refuses a payload of another layout.
PAYLOAD_FORMAT = 1
#: A submission's files sent to a worker in all (each file is also capped, as locally); files past
#: this are named in the notes and not sent.
MAX_PAYLOAD_BYTES = 256 * 2**20
DISTRIBUTION = "mhsa-course"

__all__ = ["MAX_PAYLOAD_BYTES", "PAYLOAD_FORMAT", "build_payload", "grade_task", "grader_version", "stop_grading_process"]


@functools.lru_cache(maxsize=None)
def grader_version() -> str:
    """The installed grader: the distribution's version, :data:`.jobs.GRADER_VERSION` and a hash
    of the course's Python code (``autograder/`` and ``mhsa_lib/``), so that a worker with other
    code under the same version number is found out, e.g. ``mhsa-course 0.1.0 (grader 2, code
    0123456789ab)``."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            dist = version(DISTRIBUTION)
        except PackageNotFoundError:
            dist = "(not installed)"
    except ImportError:  # pragma: no cover - Python 3.9 has importlib.metadata
        dist = "(unknown)"
    h = hashlib.sha256()
    top = Path(__file__).resolve().parents[2]
    for package in ("autograder", "mhsa_lib"):
        root = top / package
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            h.update(path.relative_to(top).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return f"{DISTRIBUTION} {dist} (grader {GRADER_VERSION}, code {h.hexdigest()[:12]})"


# --------------------------------------------------------------------------- the instructor's side


def build_payload(job: Job, course: Path, limits: Limits, sandbox: bool,
                  version: Optional[str] = None) -> Dict[str, Any]:
    """What a worker needs to grade ``job``, as bytes and plain values (no path of ``course``).
    Raises OSError when a file cannot be read (that submission's grader error)."""
    if not isinstance(job, Job):
        raise TypeError(f"build_payload: job must be a jobs.Job, got {type(job).__name__}")
    if not isinstance(limits, Limits):
        raise TypeError(f"build_payload: limits must be an engine.Limits, got {type(limits).__name__}")
    nb_name = f"{job.assignment}.ipynb"
    notes: List[str] = []
    files: Dict[str, bytes] = {}
    total = 0
    for rel, path in worker_mod.submission_files(Path(job.sub_dir), skip_names=(nb_name,), notes=notes):
        size = path.stat().st_size
        if total + size > MAX_PAYLOAD_BYTES:
            notes.append(f"{rel}: not copied (the submission's files pass {MAX_PAYLOAD_BYTES // 2**20} MB in all)")
            continue
        files[rel.as_posix()] = path.read_bytes()
        total += size
    nb_path = Path(job.sub_dir) / nb_name
    # The notebook as the local worker reads it: a regular file (a link is not the student's notebook)
    notebook = nb_path.read_bytes() if nb_path.is_file() and not nb_path.is_symlink() else None
    src_dir = Path(course) / "source" / job.assignment
    src_files = {rel.as_posix(): path.read_bytes() for rel, path in worker_mod.submission_files(
        src_dir, skip_names=tuple(p.name for p in src_dir.glob("*.ipynb")))}
    return {
        "format": PAYLOAD_FORMAT, "grader_version": version or grader_version(),
        "student": job.student, "assignment": job.assignment, "notebook_name": nb_name,
        "notebook": notebook, "files": files, "copy_notes": notes,
        "source_notebook": course_mod.source_notebook(course, job.assignment).read_bytes(),
        "source_files": src_files,
        "seed": job.seed, "limits": limits.to_dict(), "no_sandbox": not sandbox,
    }


# --------------------------------------------------------------------------- the worker's side


def _error(message: str, **extra: Any) -> Dict[str, Any]:
    return {"result": {"status": "grader-error", "message": message, "steps": [], "notes": [], **extra},
            "notebook": None}


def _refusal(message: str) -> Dict[str, Any]:
    """This worker cannot grade at all (its environment, not the submission): no result to store."""
    return _error(message, worker_problem=True)


def _host() -> str:
    try:
        return socket.gethostname()
    except OSError:  # pragma: no cover
        return "?"


def _local_dir() -> str:
    """The Dask worker's own local directory (its ``--local-directory``), else the temporary one."""
    try:
        from distributed import get_worker

        return str(get_worker().local_directory)
    except Exception:  # not in a Dask worker (a test, a direct call), or no distributed here
        return tempfile.gettempdir()


_SANDBOX_OK = False
_THREAD = threading.local()  # this worker thread's grading process


def _grading_process() -> "pool_mod.WorkerProcess":
    """This thread's ``worker.py --serve`` process (it dies with the Dask worker), started anew
    when it is not running; its log is unlinked at once (read back through its descriptor)."""
    proc = getattr(_THREAD, "proc", None)
    if proc is not None and proc.alive():
        return proc
    if proc is not None:
        proc.close()
    proc = pool_mod.WorkerProcess(Path(_local_dir()))
    try:
        os.unlink(proc.log_path)
    except OSError:
        pass
    _THREAD.proc = proc
    return proc


def _sandbox_problem() -> Optional[str]:
    """None when bwrap starts a sandbox on this worker, else why not (checked until it works once)."""
    global _SANDBOX_OK
    if _SANDBOX_OK:
        return None
    from . import sandbox

    ok, why = sandbox.check_sandbox()
    if ok:
        _SANDBOX_OK = True
        return None
    return why or "bwrap cannot start a sandbox"


def _safe_rel(rel: Any) -> PurePosixPath:
    """A relative path inside the scratch folder, or ValueError."""
    p = PurePosixPath(str(rel))
    if not str(rel) or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or "\0" in str(rel):
        raise ValueError(f"a payload file name that is not a plain relative path: {str(rel)[:200]!r}")
    return p


def _write_tree(dest: Path, files: Dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = dest.joinpath(*_safe_rel(rel).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as f:
            f.write(bytes(data))


def grade_task(payload: Dict[str, Any]) -> Dict[str, Any]:
    """Grade one payload (:func:`build_payload`) here; ``{"result": result dict, "notebook": the
    executed notebook's bytes or None}``. Never raises: a failure is the result's grader error."""
    host = _host()
    try:
        return _grade_task(payload, host)
    except Exception as e:  # the grader's own failure: reported, never a student's zero in silence
        return _error(f"the grader failed on the Dask worker {host}: {type(e).__name__}: {e}",
                      trace=traceback.format_exc()[-4000:])


def _grade_task(payload: Dict[str, Any], host: str) -> Dict[str, Any]:
    if not isinstance(payload, dict) or payload.get("format") != PAYLOAD_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        return _refusal(f"the Dask worker {host} received a payload of format {got!r}; it reads format {PAYLOAD_FORMAT}")
    mine, needed = grader_version(), str(payload.get("grader_version"))
    if mine != needed:
        return _refusal(f"the Dask worker {host} has {mine}, the run needs {needed}: install the course's wheel of "
                      "this run on every worker (`pip install mhsa_course-....whl[cluster]`)")
    no_sandbox = bool(payload.get("no_sandbox"))
    if not no_sandbox:
        why = _sandbox_problem()
        if why is not None:
            return _refusal(f"the Dask worker {host} cannot start the bubblewrap sandbox (bwrap): {why}; nothing was "
                          "graded there (install bwrap on every worker, or grade the whole run with --no-sandbox)")
    t0 = time.monotonic()
    limits = Limits(**payload.get("limits") or {})
    nb_name = str(payload["notebook_name"])
    _safe_rel(nb_name)
    scratch = Path(tempfile.mkdtemp(prefix="mhsa-task-", dir=_local_dir()))
    slot_fd = None
    try:
        sub_dir, src_dir, out_dir = scratch / "submission", scratch / "source", scratch / "out"
        for d in (sub_dir, src_dir, out_dir):
            d.mkdir()
        _write_tree(sub_dir, payload.get("files") or {})
        if payload.get("notebook") is not None:
            (sub_dir / nb_name).write_bytes(bytes(payload["notebook"]))
        _write_tree(src_dir, payload.get("source_files") or {})
        (src_dir / nb_name).write_bytes(bytes(payload["source_notebook"]))
        out_nb = out_dir / nb_name
        slot, slot_fd = pool_mod.claim_slot(pool_mod.SLOT_DIR)
        spec = {
            "student": payload.get("student"), "assignment": payload.get("assignment"), "notebook": nb_name,
            "submission_dir": str(sub_dir), "source_notebook": str(src_dir / nb_name), "assignment_dir": str(src_dir),
            "seed": payload.get("seed"), "limits": limits.to_dict(), "no_sandbox": no_sandbox,
            "copy_notes": [str(n) for n in payload.get("copy_notes") or []],
            "out_notebook": str(out_nb), "result": str(scratch / "result.json"), "tmp_root": str(scratch),
            "slot": slot,
        }
        (scratch / "job.json").write_text(json.dumps(spec), encoding="utf-8")
        # In a child process, as locally: a crash of the grading code cannot take the Dask worker down.
        proc = _grading_process()
        failed = proc.run(scratch / "job.json", limits.total_timeout + pool_mod.WORKER_MARGIN)
        try:
            result = json.loads((scratch / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            result = {"status": "grader-error", "notes": [], "steps": [], "log": proc.log_tail(),
                      "message": f"on the Dask worker {host}: {failed or 'the grading process wrote no result'}"}
        result["wall_seconds"] = time.monotonic() - t0
        notebook = out_nb.read_bytes() if out_nb.is_file() else None
        return {"result": result, "notebook": notebook}
    finally:
        if slot_fd is not None:
            os.close(slot_fd)  # the slot is free again
        shutil.rmtree(scratch, ignore_errors=True)


def stop_grading_process() -> None:
    """End this thread's grading process, if it has one (the next task starts another)."""
    proc = getattr(_THREAD, "proc", None)
    _THREAD.proc = None
    if proc is not None:
        proc.close()


