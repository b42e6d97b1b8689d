"""Autograde a class in parallel: ``python -m autograder autograde [ASSIGNMENT ...]``.

Each submission in ``COURSE/submitted/STUDENT/ASSIGNMENT/`` is graded by a worker process of its
own (:mod:`.worker`: a temporary working copy, restored test cells, a kernel under limits), at
most ``--workers`` at a time. This process alone writes to the gradebook, one submission at a
time as results come in, so there is never a second writer; it also keeps the executed notebook
in ``autograded/`` (for formgrader) and the status and messages in ``grading/``.

A submission is graded again only when its files, the assignment's source, the limits or the
grader changed, unless ``--force``. Its hidden cases are seeded per student and assignment
(:func:`.course.grading_seed`), so a forced re-grade gives the same scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO

from . import course as course_mod
from . import engine

WORKER = Path(__file__).resolve().parent / "worker.py"
#: Bump when grading behaviour changes, so that unchanged submissions are graded again.
GRADER_VERSION = "1"
#: Seconds a worker may take beyond the notebook's total limit (kernel start, copying) before it
#: is stopped.
WORKER_MARGIN = 120
PROBLEM_STATUSES = ("timeout", "kernel-died", "tampered", "unreadable", "empty", "wrong-assignment",
                    "missing", "grader-error")


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


def fingerprint(sub_dir: Path, assignment_dir: Path, limits: engine.Limits, seed: str, guard: bool) -> str:
    h = hashlib.sha256()
    h.update(f"v{GRADER_VERSION}|{json.dumps(limits.to_dict(), sort_keys=True)}|{seed}|{guard}\n".encode())
    _hash_tree(h, Path(sub_dir))
    h.update(b"|source|")
    _hash_tree(h, Path(assignment_dir))
    return h.hexdigest()


def find_jobs(course: Path, names: Sequence[str], students: Optional[Sequence[str]], limits: engine.Limits,
              guard: bool) -> List[Job]:
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
            seed = course_mod.grading_seed(course, sdir.name, name)
            fp = fingerprint(adir, course / "source" / name, limits, seed, guard)
            jobs.append(Job(sdir.name, name, adir, fp, seed))
    return jobs


# --------------------------------------------------------------------------- progress


class Progress:
    """One line of progress on stdout: a bar, counts and an ETA; redrawn in place on a terminal,
    one line per finished submission otherwise (logs, CI)."""

    def __init__(self, total: int, workers: int, stream: Optional[TextIO] = None, enabled: bool = True):
        self.total = total
        self.workers = max(1, workers)
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.done = 0
        self.problems = 0
        self.started = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.Lock()

    @staticmethod
    def _clock(seconds: float) -> str:
        seconds = int(round(max(0.0, seconds)))
        return f"{seconds // 60}:{seconds % 60:02d}"

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        if self.done:
            eta = elapsed / self.done * (self.total - self.done)
            eta_s = self._clock(eta)
        else:
            eta_s = "?"
        running = min(self.workers, self.total - self.done)
        return (f"[{bar}] {self.done}/{self.total} graded, {self.problems} with problems, {running} running, "
                f"elapsed {self._clock(elapsed)}, ETA {eta_s}")

    def update(self, label: str = "", problem: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.problems += bool(problem)
            if not self.enabled:
                return
            if self.tty:
                self.stream.write("\r\x1b[K" + self.line())
                if self.done == self.total:
                    self.stream.write("\n")
            else:
                self.stream.write(self.line() + (f"  {label}" if label else "") + "\n")
            self.stream.flush()


# --------------------------------------------------------------------------- running the workers


class WorkerProcess:
    """A long-lived ``worker.py --serve`` process; one per pool thread. It is replaced when it
    dies or stops answering."""

    def __init__(self, log_dir: Path):
        self.log = open(Path(tempfile.mkstemp(prefix="worker_", suffix=".log", dir=log_dir)[1]), "w+",
                        encoding="utf-8", errors="replace")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
                                     start_new_session=True)

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
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.local = threading.local()
        self.all: List[WorkerProcess] = []
        self.lock = threading.Lock()

    def get(self) -> WorkerProcess:
        w = getattr(self.local, "worker", None)
        if w is None or not w.alive():
            w = WorkerProcess(self.log_dir)
            self.local.worker = w
            with self.lock:
                self.all.append(w)
        return w

    def close(self) -> None:
        for w in self.all:
            if w.alive():
                try:
                    w.proc.stdin.close()
                    w.proc.wait(timeout=10)
                except Exception:
                    pass
            w.stop()
            w.log.close()


def _run_worker(job: Job, course: Path, limits: engine.Limits, guard: bool, tmp_root: Path,
                pool: WorkerPool) -> Dict[str, Any]:
    jdir = Path(tempfile.mkdtemp(prefix=f"job_{job.student}_", dir=tmp_root))
    out_nb = jdir / f"{job.assignment}.ipynb"
    spec = {
        "student": job.student, "assignment": job.assignment, "notebook": f"{job.assignment}.ipynb",
        "submission_dir": str(job.sub_dir.resolve()),
        "source_notebook": str(course_mod.source_notebook(course, job.assignment).resolve()),
        "assignment_dir": str((Path(course) / "source" / job.assignment).resolve()),
        "seed": job.seed, "limits": limits.to_dict(), "guard": guard,
        "out_notebook": str(out_nb), "result": str(jdir / "result.json"), "tmp_root": str(tmp_root),
    }
    (jdir / "job.json").write_text(json.dumps(spec), encoding="utf-8")
    t0 = time.monotonic()
    worker = pool.get()
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


def _zero_steps_from_source(course: Path, assignment: str, why: str) -> List[Dict[str, Any]]:
    import nbformat

    from . import nbgrader_tools as nbt

    src = nbformat.read(str(course_mod.source_notebook(course, assignment)), as_version=4)
    return [{"id": nbt.grade_id(c), "points": 0.0, "max_points": nbt.max_points(c), "passed": False, "message": why}
            for c in src.cells if nbt.is_test_cell(c)]


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


def grade_class(
    course: Path,
    assignments: Optional[Sequence[str]] = None,
    students: Optional[Sequence[str]] = None,
    workers: Optional[int] = None,
    limits: Optional[engine.Limits] = None,
    force: bool = False,
    guard: bool = True,
    stream: Optional[TextIO] = None,
    show_progress: bool = True,
) -> Dict[str, Any]:
    """Grade the class; returns ``{"results": [...], "skipped": [...], "seconds": ...}``."""
    course = Path(course)
    limits = limits or engine.Limits()
    stream = stream or sys.stdout
    problem = course_mod.check_course(course)
    if problem:
        raise RuntimeError(problem)
    known = course_mod.assignments(course)
    names = list(assignments) if assignments else known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise RuntimeError(f"no assignment {unknown[0]!r} in {course}/source (known: {', '.join(known)})")
    workers = max(1, int(workers or os.cpu_count() or 1))
    t0 = time.monotonic()
    jobs = find_jobs(course, names, students, limits, guard)
    writer = GradebookWriter(course)
    todo: List[Job] = []
    skipped: List[Job] = []
    try:
        for job in jobs:
            old = load_result(course, job.student, job.assignment)
            same = (old is not None and old.get("fingerprint") == job.fingerprint
                    and old.get("status") != "grader-error" and writer.has_submission(job.assignment, job.student))
            (skipped if same and not force else todo).append(job)
        print(f"autograde: {len(todo)} submission(s) to grade, {len(skipped)} unchanged "
              f"(--force grades them again), {workers} worker(s)", file=stream)
        progress = Progress(len(todo), workers, stream, enabled=show_progress)
        results: List[Dict[str, Any]] = []
        tmp_root = Path(tempfile.mkdtemp(prefix="mhsa_autograde_"))
        procs = WorkerPool(tmp_root)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_run_worker, job, course, limits, guard, tmp_root, procs): job for job in todo}
                for fut in as_completed(futures):
                    job = futures[fut]
                    try:
                        result = fut.result()
                    except Exception as e:  # the pool itself failed for this one
                        result = {"status": "grader-error", "message": f"{type(e).__name__}: {e}", "steps": [], "notes": []}
                    if not result.get("steps"):
                        result["steps"] = _zero_steps_from_source(course, job.assignment, result.get("message", ""))
                        result["score"] = 0.0
                        result["max_score"] = sum(s["max_points"] for s in result["steps"])
                    result.update(student=job.student, assignment=job.assignment, fingerprint=job.fingerprint,
                                  seed=job.seed, graded_at=time.strftime("%Y-%m-%d %H:%M:%S"))
                    _store(course, job, result)
                    result["gradebook_problems"] = writer.write(course, job, result)
                    results.append(result)
                    label = (f"{job.student}/{job.assignment}: {result.get('score', 0):g}/{result.get('max_score', 0):g}"
                             f" {result['status']}")
                    progress.update(label, problem=result["status"] in PROBLEM_STATUSES)
        finally:
            procs.close()
            shutil.rmtree(tmp_root, ignore_errors=True)
    finally:
        writer.close()
    return {"results": results, "skipped": [(j.student, j.assignment) for j in skipped],
            "seconds": time.monotonic() - t0, "workers": workers}


def _store(course: Path, job: Job, result: Dict[str, Any]) -> None:
    nb = result.pop("_notebook", None)
    result.pop("_jobdir", None)
    dest = Path(course) / "autograded" / job.student / job.assignment
    # The autograded folder: the student's other files, then the graded notebook (formgrader's view).
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for p in job.sub_dir.iterdir():
        if p.is_file() and not p.is_symlink() and p.name != f"{job.assignment}.ipynb" and p.stat().st_size < 50 * 2**20:
            shutil.copyfile(p, dest / p.name)
    if nb:
        shutil.copyfile(nb, dest / f"{job.assignment}.ipynb")
    path = result_path(course, job.student, job.assignment)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def summary_lines(results: List[Dict[str, Any]]) -> List[str]:
    lines = []
    for r in sorted(results, key=lambda r: (r["assignment"], r["student"])):
        msg = r.get("message", "")
        lines.append(f"  {r['student']:<16} {r['assignment']:<34} {r.get('score', 0):>6g} / {r.get('max_score', 0):<4g} "
                     f"{r['status']:<16} {'' if r['status'] == 'ok' else msg[:120]}")
    return lines


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    course_mod.add_course_argument(parser)
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="assignments to grade (default: all)")
    parser.add_argument("--student", action="append", metavar="ID", help="only this student (repeatable)")
    parser.add_argument("--workers", "-j", type=int, default=None, metavar="N",
                        help="submissions graded at once (default: the number of CPU cores)")
    parser.add_argument("--force", action="store_true", help="grade again even what has not changed")
    d = engine.Limits()
    parser.add_argument("--timeout", type=float, default=d.cell_timeout, metavar="SECONDS",
                        help=f"time limit of one cell (default {d.cell_timeout:g})")
    parser.add_argument("--total-timeout", type=float, default=d.total_timeout, metavar="SECONDS",
                        help=f"time limit of a whole notebook (default {d.total_timeout:g})")
    parser.add_argument("--memory-mb", type=int, default=d.memory_mb, metavar="MB",
                        help=f"memory each kernel may allocate (its data segment, not the libraries it maps), "
                             f"0 for none (default {d.memory_mb})")
    parser.add_argument("--max-output", type=int, default=d.max_output_bytes, metavar="CHARS",
                        help=f"output kept per cell (default {d.max_output_bytes})")
    parser.add_argument("--no-guard", action="store_true",
                        help="skip the tampering scan and the in-kernel integrity check")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args) -> int:
    if args.timeout <= 0 or args.total_timeout <= 0:
        print("autograde: --timeout and --total-timeout must be positive", file=sys.stderr)
        return 2
    limits = engine.Limits(cell_timeout=args.timeout, total_timeout=args.total_timeout, memory_mb=args.memory_mb,
                           max_output_bytes=args.max_output)
    try:
        out = grade_class(args.course, args.assignments, args.student, args.workers, limits, force=args.force,
                          guard=not args.no_guard, show_progress=not args.quiet)
    except RuntimeError as e:
        print(f"autograde: {e}", file=sys.stderr)
        return 1
    results = out["results"]
    if results:
        print("autograde: results (student, assignment, score, status, message):")
        for line in summary_lines(results):
            print(line)
    errors = [r for r in results if r["status"] == "grader-error"]
    print(f"autograde: graded {len(results)} submission(s) in {out['seconds']:.1f} s with {out['workers']} worker(s)"
          + (f"; {len(out['skipped'])} unchanged" if out["skipped"] else "")
          + (f"; {len(errors)} grader error(s)" if errors else ""))
    return 1 if errors else 0
