"""The worker processes of a grading run: long-lived ``worker.py --serve`` processes, one per
pool thread, each grading one submission at a time in a kernel of its own (:mod:`.worker`).
A worker that dies or stops answering is replaced; a submission it did not finish gets a
``grader-error`` result, never a silent zero. A worker dies with the grader, however the grader
ends (:mod:`.lifeline`), and takes its sandbox or kernel with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import course as course_mod
from . import lifeline
from .engine import Limits
from .jobs import Job

WORKER = Path(__file__).resolve().parent / "worker.py"
#: Worker slots on one machine (a root grader's sandboxes run as uid ``sandbox.BASE_UID + slot``),
#: shared by every grading run there through the slot locks in SLOT_DIR.
SLOTS = 64


def _slot_dir() -> Path:
    """The machine's one folder of slot locks, whatever the grader's ``TMPDIR``: two graders that
    saw two folders (two Dask workers each with a ``TMPDIR`` of its own, a service with a private
    ``/tmp``) would claim the same slot, and their sandboxes would share one uid and its process
    limit. ``/run/lock`` (the system's folder for locks, never private to a service) where it is
    there, else ``/tmp`` itself."""
    for top in ("/run/lock", "/tmp"):
        if os.path.isdir(top):
            return Path(top) / "mhsa-sandbox-slots"
    return Path(tempfile.gettempdir()) / "mhsa-sandbox-slots"  # pragma: no cover - neither exists


SLOT_DIR = _slot_dir()
#: Seconds a worker may take beyond the notebook's total limit before it is stopped: more than the
#: 120 s its sandbox may run past that limit (the runner's and the kernel's start), so that a
#: sandbox stopped at its own limit is still read back and judged (a status, not a grader error).
WORKER_MARGIN = 180


def claim_slot(slot_dir: Path, taken: Sequence[int] = ()) -> Tuple[int, Optional[int]]:
    """A worker slot no other grading run on this machine uses now (another course's run, or
    another Dask worker's task, at the same time), and the descriptor that holds it (close it to
    free the slot; None when nothing is held). Each slot's sandboxes run as a uid of their own
    (:mod:`.sandbox`), whose process limit (RLIMIT_NPROC counts per uid) must not be shared with
    strangers. A slot is held with ``flock`` on ``slot_dir/N.lock``, so a killed run's slots are
    free again at once. ``taken``: the caller's slots already held. A grader that is not root
    runs every sandbox as itself: the number only counts there (the lowest not in ``taken``)."""
    import fcntl

    if os.geteuid() == 0:
        try:
            slot_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for k in range(SLOTS):
                if k in taken:
                    continue
                fd = os.open(slot_dir / f"{k}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                return k, fd
        except OSError:
            pass  # no place for the slot locks: numbered within this run, as below
    return next(i for i in range(len(taken) + 1) if i not in taken), None


class WorkerProcess:
    """A long-lived ``worker.py --serve`` process; one per pool thread. It is replaced when it
    dies or stops answering."""

    def __init__(self, log_dir: Path):
        fd, self.log_path = tempfile.mkstemp(prefix="worker_", suffix=".log", dir=log_dir)
        self.log = os.fdopen(fd, "w+", encoding="utf-8", errors="replace")
        # It dies with the grader, even one killed with SIGKILL (:mod:`.lifeline`): with the pool
        # thread that starts it, which lives until the run ends.
        self.proc = subprocess.Popen([sys.executable, str(WORKER), "--serve", "--parent", str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1, start_new_session=True,
                                     preexec_fn=lifeline.preexec_die_with_parent())

    def run(self, job_file: Path, timeout: float) -> Optional[str]:
        """None when the job finished, else why not (the process is then stopped)."""
        import select

        try:
            self.proc.stdin.write(f"{job_file}\n")
            self.proc.stdin.flush()
        except OSError:
            self.stop()
            return "the grader's worker process was not running"
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                return f"the grader stopped working on this submission after {timeout:g} s"
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 5.0))
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    code = self.proc.poll()
                    self.stop()
                    return f"the grader's worker process exited ({code}) without a result"
                if line.strip() == f"done {job_file}":
                    return None

    def log_tail(self) -> str:
        try:
            self.log.flush()
            self.log.seek(0)
            return self.log.read()[-2000:]
        except (OSError, ValueError):
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """End it: asked to (its standard input closed), then stopped; its log closed."""
        if self.alive():
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except Exception:
                pass
        self.stop()
        self.log.close()

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except Exception:
                pass


class WorkerPool:
    def __init__(self, log_dir: Path, slot_dir: Optional[Path] = None):
        self.log_dir = log_dir
        self.local = threading.local()
        self.all: List[WorkerProcess] = []
        self.lock = threading.Lock()
        self.slot_dir = Path(slot_dir) if slot_dir is not None else SLOT_DIR
        self.slots: List[int] = []
        self._slot_fds: List[int] = []

    def _claim_slot(self) -> int:
        """A worker slot no other grading run on this machine uses now (:func:`claim_slot`)."""
        k, fd = claim_slot(self.slot_dir, self.slots)
        if fd is not None:
            self._slot_fds.append(fd)
        self.slots.append(k)
        return k

    def get(self) -> WorkerProcess:
        w = getattr(self.local, "worker", None)
        if w is None or not w.alive():
            w = WorkerProcess(self.log_dir)
            # The thread's slot: its sandboxes run as a uid of their own (see .sandbox).
            if not hasattr(self.local, "slot"):
                with self.lock:
                    self.local.slot = self._claim_slot()
            w.slot = self.local.slot
            self.local.worker = w
            with self.lock:
                self.all.append(w)
        return w

    def close(self) -> None:
        for w in self.all:
            w.close()
        for fd in self._slot_fds:
            os.close(fd)  # the slots are free again
        self._slot_fds = []


def run_worker(job: Job, course: Path, limits: Limits, sandbox: bool, tmp_root: Path,
               pool: WorkerPool) -> Dict[str, Any]:
    """Grade ``job`` in one of ``pool``'s workers; its result, with ``_notebook`` (the executed
    notebook, in the job's folder under ``tmp_root``) and the seconds it took."""
    jdir = Path(tempfile.mkdtemp(prefix=f"job_{job.student[:40]}_", dir=tmp_root))  # ids up to a folder name long
    out_nb = jdir / f"{job.assignment}.ipynb"
    spec = {
        "student": job.student, "assignment": job.assignment, "notebook": f"{job.assignment}.ipynb",
        "submission_dir": str(job.sub_dir.resolve()),
        "source_notebook": str(course_mod.source_notebook(course, job.assignment).resolve()),
        "assignment_dir": str((Path(course) / "source" / job.assignment).resolve()),
        "seed": job.seed, "limits": limits.to_dict(), "no_sandbox": not sandbox,
        "out_notebook": str(out_nb), "result": str(jdir / "result.json"), "tmp_root": str(tmp_root),
    }
    t0 = time.monotonic()
    worker = pool.get()
    spec["slot"] = getattr(worker, "slot", 0)
    (jdir / "job.json").write_text(json.dumps(spec), encoding="utf-8")
    failed = worker.run(jdir / "job.json", limits.total_timeout + WORKER_MARGIN)
    wall = time.monotonic() - t0
    try:
        result = json.loads((jdir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = {"status": "grader-error", "message": failed or "the grader's worker wrote no result",
                  "notes": [], "steps": [], "log": worker.log_tail()}
    result["wall_seconds"] = wall
    result["_notebook"] = str(out_nb) if out_nb.exists() else None
    result["_jobdir"] = str(jdir)
    return result
