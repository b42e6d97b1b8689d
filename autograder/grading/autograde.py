"""Autograde a class in parallel: ``python -m autograder autograde [ASSIGNMENT ...]``.

Each submission in ``COURSE/submitted/STUDENT/ASSIGNMENT/`` (:mod:`.jobs`) is graded by a worker
process of its own (:mod:`.pool`, :mod:`.worker`: a temporary working copy, restored test cells,
a kernel under limits), at most ``--workers`` at a time, with a progress bar
(:mod:`.progress_bar`). This process alone writes to the gradebook (:mod:`.gradebook`), one
submission at a time as results come in, so there is never a second writer; it also keeps the
executed notebook in ``autograded/`` (for formgrader) and the status and messages in ``grading/``.

A submission is graded again only when its files, the assignment's source, the limits or the
grader changed, unless ``--force``. Its hidden cases are seeded per student and assignment
(:func:`.course.grading_seed`), so a forced re-grade gives the same scores.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO

from . import course as course_mod
from . import engine, runlock
from . import nbgrader_tools as nbt
from . import sandbox as sandbox_mod
from .gradebook import PROBLEM_STATUSES, GradebookWriter
from .jobs import Job, find_jobs, load_result, store_result
from .pool import WorkerPool, run_worker
from .progress_bar import Progress

__all__ = ["PROBLEM_STATUSES", "add_arguments", "grade_class", "main", "summary_lines"]


def _zero_steps_from_source(course: Path, assignment: str, why: str) -> List[Dict[str, Any]]:
    import nbformat

    src = nbformat.read(str(course_mod.source_notebook(course, assignment)), as_version=4)
    return [{"id": nbt.grade_id(c), "points": 0.0, "max_points": nbt.max_points(c), "passed": False, "message": why}
            for c in src.cells if nbt.is_test_cell(c)]


def grade_class(
    course: Path,
    assignments: Optional[Sequence[str]] = None,
    students: Optional[Sequence[str]] = None,
    workers: Optional[int] = None,
    limits: Optional[engine.Limits] = None,
    force: bool = False,
    sandbox: bool = True,
    stream: Optional[TextIO] = None,
    show_progress: bool = True,
    wait: bool = False,
) -> Dict[str, Any]:
    """Grade the class; returns ``{"results": [...], "skipped": [...], "seconds": ...}``. One run per
    course at a time (:mod:`.runlock`): another run raises :class:`.runlock.CourseBusy`, unless
    ``wait``."""
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
    if sandbox:
        ok, why = sandbox_mod.check_sandbox()
        if not ok:
            raise RuntimeError(f"{why}; class grading runs every submission in that sandbox (pass --no-sandbox "
                               "to grade without it, knowing that students' code can then reach your files)")
    workers = max(1, int(workers or os.cpu_count() or 1))
    t0 = time.monotonic()
    run = runlock.GradingRun(course, wait=wait, stream=stream)  # the lock; a killed run's leftovers removed
    writer = None
    todo: List[Job] = []
    skipped: List[Job] = []
    try:
        jobs = find_jobs(course, names, students, limits, sandbox)
        writer = GradebookWriter(course)
        for job in jobs:
            old = load_result(course, job.student, job.assignment)
            same = (old is not None and old.get("fingerprint") == job.fingerprint
                    and old.get("status") != "grader-error" and writer.has_submission(job.assignment, job.student))
            (skipped if same and not force else todo).append(job)
        print(f"autograde: {len(todo)} submission(s) to grade, {len(skipped)} unchanged "
              f"(--force grades them again), {workers} worker(s)", file=stream)
        progress = Progress(len(todo), workers, stream, enabled=show_progress)
        results: List[Dict[str, Any]] = []
        tmp_root = run.folder
        procs = WorkerPool(tmp_root)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(run_worker, job, course, limits, sandbox, tmp_root, procs): job for job in todo}
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
                    store_result(course, job, result)
                    result["gradebook_problems"] = writer.write(course, job, result)
                    results.append(result)
                    label = (f"{job.student}/{job.assignment}: {result.get('score', 0):g}/{result.get('max_score', 0):g}"
                             f" {result['status']}")
                    progress.update(label, problem=result["status"] in PROBLEM_STATUSES)
        finally:
            procs.close()
    finally:
        if writer is not None:
            writer.close()
        run.close()
    return {"results": results, "skipped": [(j.student, j.assignment) for j in skipped],
            "seconds": time.monotonic() - t0, "workers": workers}


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
    parser.add_argument("--no-sandbox", action="store_true",
                        help="run students' code without the bubblewrap sandbox (recorded in every result and "
                             "in the feedback); only for code you trust")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--wait", action="store_true",
                        help="if another run is grading this course, wait for it instead of stopping at once")


def main(args) -> int:
    if args.timeout <= 0 or args.total_timeout <= 0:
        print("autograde: --timeout and --total-timeout must be positive", file=sys.stderr)
        return 2
    limits = engine.Limits(cell_timeout=args.timeout, total_timeout=args.total_timeout, memory_mb=args.memory_mb,
                           max_output_bytes=args.max_output)
    try:
        out = grade_class(args.course, args.assignments, args.student, args.workers, limits, force=args.force,
                          sandbox=not args.no_sandbox, show_progress=not args.quiet, wait=args.wait)
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
