"""Autograde a class in parallel: ``python -m autograder autograde [ASSIGNMENT ...]``.

Each submission in ``COURSE/submitted/STUDENT/ASSIGNMENT/`` (:mod:`.jobs`) is graded by an
executor (:mod:`.executors`): by default a worker process of its own on this machine
(:mod:`.pool`, :mod:`.worker`: a temporary working copy, restored test cells, a kernel under
limits), at most ``--workers`` at a time; with ``--scheduler tcp://HOST:8786`` a task on a Dask
cluster (:mod:`.remote`). A progress bar (:mod:`.progress_bar`) counts the results. This
process alone writes to the gradebook (:mod:`.gradebook`), one submission at a time as results
come in, whichever executor graded them, so there is never a second writer; it also keeps the
executed notebook in ``autograded/`` (for formgrader) and the status and messages in ``grading/``.

Each result is stored by the ordered, crash-safe writes of :mod:`.storing` (result file marked
``pending``, autograded folder swapped in, gradebook committed, result marked ``stored``, CSV
exports regenerated when ``COURSE/exports/`` exists). A submission is graded again only when its
files, the assignment's source, the limits or the grader changed, unless ``--force``, or when its
stored state is not complete and consistent (then it is stored again, or graded again).
``--check`` finds and repairs any divergence between those stores. Its hidden cases are seeded per student and assignment
(:func:`.course.grading_seed`), so a forced re-grade gives the same scores.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, TextIO, Tuple

from . import course as course_mod
from . import engine, runlock, storing
from . import nbgrader_tools as nbt
from . import sandbox as sandbox_mod
from .executors import Executor, ExecutorLost, RunConfig, make_executor
from .gradebook import PROBLEM_STATUSES, GradebookWriter
from .jobs import Job, find_submissions, load_result, shown
from .progress_bar import Progress

__all__ = ["PROBLEM_STATUSES", "add_arguments", "check_class", "grade_class", "main", "summary_lines"]


def _zero_steps_from_source(course: Path, assignment: str, why: str) -> List[Dict[str, Any]]:
    import nbformat

    src = nbformat.read(str(course_mod.source_notebook(course, assignment)), as_version=4)
    return [{"id": nbt.grade_id(c), "points": 0.0, "max_points": nbt.max_points(c), "passed": False, "message": why}
            for c in src.cells if nbt.is_test_cell(c)]


def _check_arguments(course: Path, assignments: Optional[Sequence[str]], sandbox: bool) -> List[str]:
    problem = course_mod.check_course(course)
    if problem:
        raise RuntimeError(problem)
    storing.check_crash_env()
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
    return names


def plan(course: Path, jobs: Sequence[Job], writer: GradebookWriter, force: bool
         ) -> Tuple[List[Job], List[Tuple[Job, Dict[str, Any]]], List[Job]]:
    """(to grade, to store again without grading, unchanged). A submission is unchanged only when
    its stored state is complete and consistent (:func:`.storing.stored_state`: result marked
    stored, autograded notebook in place, gradebook auto scores equal to the result's) for the
    same fingerprint; a result a crash left ``pending`` with its notebook in place is stored again."""
    todo: List[Job] = []
    restore: List[Tuple[Job, Dict[str, Any]]] = []
    skipped: List[Job] = []
    for job in jobs:
        old = load_result(course, job.student, job.assignment)
        if (force or not isinstance(old, dict) or old.get("fingerprint") != job.fingerprint
                or old.get("status") == "grader-error"):
            todo.append(job)
            continue
        try:
            state, _ = storing.stored_state(course, old, writer, job.student, job.assignment)
        except Exception:  # a gradebook that cannot be read now: grade it again, the store says why
            state = "regrade"
        if state == storing.STORED:
            storing.remove_leftovers(course, job.student, job.assignment)  # a stopped run's temporary files
            skipped.append(job)
        elif state == "restore":
            restore.append((job, old))
        else:
            todo.append(job)
    return todo, restore, skipped


def _problem_result(status: str, message: str) -> Dict[str, Any]:
    return {"status": status, "message": message, "steps": [], "notes": []}


def _complete(course: Path, job: Job, result: Dict[str, Any]) -> Dict[str, Any]:
    """The result as it is stored: zero steps from the source where the worker gave none, and
    the submission's identity."""
    if not result.get("steps"):
        try:
            result["steps"] = _zero_steps_from_source(course, job.assignment, result.get("message", ""))
        except Exception as e:
            result["status"] = "grader-error"
            result["message"] = f"the assignment's source notebook cannot be read ({type(e).__name__}: {e})"
            result["steps"] = []
        result["score"] = 0.0
        result["max_score"] = sum(float(s["max_points"] or 0) for s in result["steps"])
    result.update(student=job.student, assignment=job.assignment, fingerprint=job.fingerprint,
                  seed=job.seed, graded_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    return result


def _with_gradebook_view(result: Dict[str, Any], writer: GradebookWriter) -> None:
    """Add what the gradebook now says: its total (the instructor's manual score where one was
    given) and the steps graded by hand."""
    try:
        entry = writer.read(result["assignment"], result["student"])
    except Exception:
        entry = None
    if entry is None:
        return
    result["gradebook_score"] = float(sum(g["score"] or 0.0 for g in entry["grades"].values()))
    result["hand_graded"] = sorted(k for k, g in entry["grades"].items() if g["manual"] is not None)


def _store(course: Path, job: Job, result: Dict[str, Any], writer: GradebookWriter, again: bool = False) -> None:
    """Store one result; a storing failure becomes this submission's ``store_error``."""
    try:
        if again:
            result["gradebook_problems"] = storing.restore(course, job, result, writer)
        else:
            result["gradebook_problems"] = storing.store(course, job, result, writer)
    except storing.StoreError as e:
        result["store_error"] = str(e)
    except Exception as e:  # never the whole run's end: the next run finds what is not stored
        result["store_error"] = f"storing failed: {type(e).__name__}: {e}"
    if "store_error" not in result:  # (else the gradebook still holds an older grade)
        _with_gradebook_view(result, writer)


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
    only: Optional[Set[Tuple[str, str]]] = None,
    wait: bool = False,
    scheduler: Optional[str] = None,
    executor: Optional[Executor] = None,
) -> Dict[str, Any]:
    """Grade the class; returns ``{"results": [...], "restored": [...], "skipped": [...],
    "problems": [(entry, why)], "exports": ExportSync or None, "exports_error": str or None,
    "seconds": ..., "workers": ..., "executor": its description, "dashboard": link or None,
    "stopped": why the run stopped early or None, "not_graded": [(student, assignment)],
    "refused": [(student, assignment, why)] the machine given them could not grade (not stored)}``.
    ``only``: just these (student, assignment) pairs.

    Where the submissions are graded (:mod:`.executors`): on this machine with ``workers``
    processes (default: one per core), or on the Dask cluster of ``scheduler``
    (``"tcp://HOST:8786"``), or by ``executor`` (the caller's, which the caller closes).
    Either way each result is stored here, as it arrives, once per (student, assignment).

    One submission's problem is its own: an unreadable folder, a grader error or a storing error
    (retried first) is that submission's status or ``store_error``; the run goes on and keeps
    everything already stored. An executor that cannot go on (its scheduler went away) stops the
    run: what was stored stays, ``stopped`` says why and ``not_graded`` lists the rest, which the
    next run grades. One run per course at a time (:mod:`.runlock`): another run raises
    :class:`.runlock.CourseBusy`, unless ``wait``."""
    course = Path(course)
    limits = limits or engine.Limits()
    stream = stream or sys.stdout
    if scheduler is not None and executor is not None:
        raise ValueError("grade_class: give scheduler or executor, not both "
                         f"(received scheduler={scheduler!r} and executor={executor!r})")
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"grade_class: executor must be an executors.Executor, got {type(executor).__name__}")
    names = _check_arguments(course, assignments, sandbox)
    workers = max(1, int(workers or os.cpu_count() or 1))
    t0 = time.monotonic()
    own = executor is None
    ex = make_executor(scheduler, workers) if own else executor  # (a scheduler out of reach: an error now)
    try:
        run = runlock.GradingRun(course, wait=wait, stream=stream)  # the lock; a killed run's leftovers removed
    except BaseException:
        if own:
            ex.close()
        raise
    writer = None
    results: List[Dict[str, Any]] = []
    restored: List[Dict[str, Any]] = []
    skipped: List[Job] = []
    problems: List[Any] = []
    exports, exports_error = None, None
    stopped: Optional[str] = None
    not_graded: List[Tuple[str, str]] = []
    refused: List[Tuple[str, str, str]] = []
    try:
        jobs, problems = find_submissions(course, names, students, limits, sandbox)
        if only is not None:
            jobs = [j for j in jobs if (j.student, j.assignment) in only]
        writer = GradebookWriter(course)
        todo, restore, skipped = plan(course, jobs, writer, force)
        print(f"autograde: {len(todo)} submission(s) to grade, {len(skipped)} unchanged "
              f"(--force grades them again), {ex.describe()}"
              + (f"; {len(restore)} graded but not completely stored, stored again" if restore else ""), file=stream)
        if ex.dashboard:
            print(f"autograde: dashboard {ex.dashboard}", file=stream)
        if ex.warning:
            print(f"autograde: WARNING: {ex.warning}", file=stream)
        for job, old in restore:
            _store(course, job, old, writer, again=True)
            restored.append(old)
        direct = [j for j in todo if j.problem is not None]
        for job in direct:
            result = _complete(course, job, _problem_result(*job.problem))
            _store(course, job, result, writer)
            results.append(result)
        graded = [j for j in todo if j.problem is None]
        progress = Progress(len(graded), ex.workers, stream, enabled=show_progress)
        wanted = {(j.student, j.assignment) for j in graded}
        seen: Set[Tuple[str, str]] = set()
        try:
            with closing(ex.run(graded, RunConfig(course, limits, sandbox, run.folder))) as arriving:
                for job, result in arriving:
                    key = (job.student, job.assignment)
                    if key in seen or key not in wanted:
                        continue  # a task that ran twice (a worker lost after it finished): stored once
                    seen.add(key)
                    if result.get("worker_problem"):
                        # The machine that was to grade it could not (no bwrap, other grader code, no
                        # course package): not a grade, so nothing is stored and a grade stored before
                        # stays; the next run grades it.
                        refused.append((job.student, job.assignment, str(result.get("message", ""))[:300]))
                        progress.update(f"{shown(job.student)}/{job.assignment}: NOT graded (the worker could not)",
                                        problem=True)
                        continue
                    result = _complete(course, job, result)
                    _store(course, job, result, writer)
                    results.append(result)
                    label = (f"{shown(job.student)}/{job.assignment}: {result.get('score', 0):g}/"
                             f"{result.get('max_score', 0):g} {result['status']}")
                    progress.update(label, problem=result["status"] in PROBLEM_STATUSES or "store_error" in result)
        except ExecutorLost as e:  # every result that came is stored; the next run grades the rest
            stopped = str(e)
        not_graded = [(j.student, j.assignment) for j in graded if (j.student, j.assignment) not in seen]
        if not_graded and stopped is None:
            stopped = f"the executor ended without a result for {len(not_graded)} submission(s)"
        try:
            exports = storing.retried("regenerating the CSV exports", lambda: storing.sync_exports(course))
        except storing.StoreError as e:
            exports_error = str(e)
    finally:
        if writer is not None:
            writer.close()
        if own:
            ex.close()
        run.close()
    return {"results": results, "restored": restored, "skipped": [(j.student, j.assignment) for j in skipped],
            "problems": problems, "exports": exports, "exports_error": exports_error,
            "seconds": time.monotonic() - t0, "workers": ex.workers, "executor": ex.describe(),
            "dashboard": ex.dashboard, "stopped": stopped, "not_graded": not_graded, "refused": refused,
            "withdrawn": withdrawn(course, names, students, only)}


def withdrawn(course: Path, names: Sequence[str], students: Optional[Sequence[str]] = None,
              only: Optional[Set[Tuple[str, str]]] = None) -> List[Tuple[str, str]]:
    """(student, assignment) graded earlier whose submission folder is no longer in
    ``submitted/``: their grades stay in the gradebook (nothing graded is dropped in silence),
    and each run names them."""
    found: List[Tuple[str, str]] = []
    root = Path(course) / "grading"
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return found
    for folder in folders:
        student = folder.name
        if students and student not in students:
            continue
        for name in names:
            if only is not None and (student, name) not in only:
                continue
            if (folder / f"{name}.json").is_file() and not os.path.lexists(Path(course) / "submitted" / student / name):
                found.append((student, name))
    return found


def _score_text(r: Dict[str, Any]) -> str:
    """The gradebook's total where the run could read it back (manual scores included), else the
    auto score; with the steps graded by hand."""
    total = r.get("gradebook_score", r.get("score", 0))
    text = f"{total:>6g} / {r.get('max_score', 0):<4g}"
    hand = r.get("hand_graded") or []
    if hand:
        text += f" ({len(hand)} step{'s' if len(hand) != 1 else ''} graded by hand; auto {r.get('score', 0):g})"
    return text


def summary_lines(results: List[Dict[str, Any]]) -> List[str]:
    lines = []
    for r in sorted(results, key=lambda r: (r["assignment"], r["student"])):
        msg = r.get("message", "")
        if "store_error" in r:
            status, msg = "NOT STORED", r["store_error"]
        else:
            status = r["status"]
        lines.append(f"  {shown(r['student']):<16} {r['assignment']:<34} {_score_text(r)} "
                     f"{status:<16} {'' if status == 'ok' else msg[:160]}")
    return lines


def check_class(course: Path, assignments: Optional[Sequence[str]] = None, repair: bool = True,
                workers: Optional[int] = None, limits: Optional[engine.Limits] = None, sandbox: bool = True,
                stream: Optional[TextIO] = None, students: Optional[Sequence[str]] = None, wait: bool = False,
                scheduler: Optional[str] = None) -> Tuple[List[storing.Finding], List[str]]:
    """``autograde --check``: find every divergence between the result files, the gradebook (auto
    scores and flags; manual scores are the instructor's and stay), the autograded notebooks and
    the CSV exports, and (with ``repair``) repair it: temporary leftovers removed, complete results
    stored again, the others graded again, the exports regenerated. Returns (findings, what was
    not repaired). ``scheduler``: grade what needs it on that Dask cluster (as :func:`grade_class`)."""
    course = Path(course)
    stream = stream or sys.stdout
    names = _check_arguments(course, assignments, sandbox and repair)
    writer = GradebookWriter(course)
    try:
        findings = storing.audit(course, names, writer, students)
    finally:
        writer.close()
    left: List[str] = []
    if not repair or not findings:
        return findings, [f"{f.where}: {f.why}" for f in findings] if not repair else []
    with runlock.course_lock(course, wait=wait, stream=stream):  # no grading run writes meanwhile
        for f in findings:
            if f.action == "remove":
                path = course / f.where
                if f.student is not None:
                    storing.remove_leftovers(course, f.student, f.assignment)
                elif path.parent.name == runlock.TMP_NAME:
                    runlock.clean_leftovers(course)  # their processes first; no live run owns one now
                elif path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
    pairs = {(f.student, f.assignment) for f in findings if f.action in ("restore", "regrade")}
    out: Dict[str, Any] = {}
    if pairs:  # a grading run of its own: it takes the lock itself
        out = grade_class(course, names, workers=workers, limits=limits, sandbox=sandbox, stream=stream,
                          show_progress=False, only=pairs, wait=wait, scheduler=scheduler)
        if out.get("stopped"):
            left.append(f"the grading run stopped: {out['stopped']}")
    with runlock.course_lock(course, wait=wait, stream=stream):
        try:
            storing.sync_exports(course)
        except Exception as e:
            left.append(f"exports: could not be regenerated ({type(e).__name__}: {e})")
    for r in out.get("results", []) + out.get("restored", []):
        if "store_error" in r:
            left.append(f"{r['student']}/{r['assignment']}: {r['store_error']}")
    writer = GradebookWriter(course)
    try:
        after = storing.audit(course, names, writer, students)
    finally:
        writer.close()
    left += [f"{f.where}: {f.why}" for f in after]
    return findings, sorted(set(left))


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    course_mod.add_course_argument(parser)
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="assignments to grade (default: all)")
    parser.add_argument("--student", action="append", metavar="ID", help="only this student (repeatable)")
    parser.add_argument("--workers", "-j", type=int, default=None, metavar="N",
                        help="submissions graded at once on this machine (default: the number of CPU cores)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="grade on the Dask cluster of this scheduler (tcp://HOST:8786; every worker needs the "
                             "course's wheel with its extra cluster and bwrap) instead of on this machine; results "
                             "are stored here")
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
    parser.add_argument("--check", action="store_true",
                        help="grade nothing new: find and repair every divergence between the result files, the "
                             "gradebook's auto scores, the autograded notebooks and the CSV exports (submissions "
                             "whose stores cannot be repaired otherwise are graded again); exit code 1 when "
                             "something was wrong")
    parser.add_argument("--dry-run", action="store_true", help="with --check: only report, change nothing")
    parser.add_argument("--wait", action="store_true",
                        help="if another run is grading this course, wait for it instead of stopping at once")


def _limits(args) -> engine.Limits:
    return engine.Limits(cell_timeout=args.timeout, total_timeout=args.total_timeout, memory_mb=args.memory_mb,
                         max_output_bytes=args.max_output)


def main_check(args) -> int:
    repair = not args.dry_run
    try:
        findings, left = check_class(args.course, args.assignments, repair=repair, workers=args.workers,
                                     limits=_limits(args), sandbox=not args.no_sandbox, students=args.student,
                                     wait=args.wait, scheduler=args.scheduler)
    except RuntimeError as e:
        print(f"autograde: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    if not findings:
        print("autograde --check: result files, gradebook, autograded notebooks and exports agree")
        return 0
    print(f"autograde --check: found {len(findings)} divergence(s):")
    for f in findings:
        doing = {"restore": "store the complete result again", "regrade": "grade the submission again",
                 "remove": "remove it", "export": "regenerate the exports", "report": "nothing (left as it is)"}[f.action]
        print(f"  {shown(f.where)}: {f.why} -> {'would ' if not repair else ''}{doing}")
    if not repair:
        print("autograde --check: nothing changed (--dry-run)")
    elif left:
        print(f"autograde --check: {len(left)} NOT repaired:")
        for line in left:
            print(f"  {shown(line)}")
    else:
        print("autograde --check: repaired; the stores agree now")
    return 1


#: What an interrupted run (Ctrl-C) says instead of a traceback.
INTERRUPTED = ("autograde: interrupted (Ctrl-C): every result stored before stays stored, one that was being "
               "stored is completed or graded again by the next run; submissions still being graded on a Dask cluster finish there and are "
               "discarded; run the same command again to grade the rest")


def main(args) -> int:
    if args.timeout <= 0 or args.total_timeout <= 0:
        print("autograde: --timeout and --total-timeout must be positive", file=sys.stderr)
        return 2
    if args.dry_run and not args.check:
        print("autograde: --dry-run goes with --check (received --dry-run alone)", file=sys.stderr)
        return 2
    if args.check:
        if args.force:
            print("autograde: --check and --force do not go together (--check grades only what needs it)",
                  file=sys.stderr)
            return 2
        return main_check(args)
    try:
        out = grade_class(args.course, args.assignments, args.student, args.workers, _limits(args), force=args.force,
                          sandbox=not args.no_sandbox, show_progress=not args.quiet, wait=args.wait,
                          scheduler=args.scheduler)
    except RuntimeError as e:
        print(f"autograde: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return report(out)


def report(out: Dict[str, Any], stream: Optional[TextIO] = None) -> int:
    """Print a run's summary; the exit code: 1 when a submission had a grader error or could not
    be stored, a folder could not be graded, or the exports could not be regenerated."""
    stream = stream or sys.stdout
    results = out["results"] + out.get("restored", [])
    if results:
        print("autograde: results (student, assignment, score in the gradebook, status, message):", file=stream)
        for line in summary_lines(results):
            print(line, file=stream)
    gone = out.get("withdrawn") or []
    if gone:
        shown_gone = ", ".join(f"{shown(s)}/{a}" for s, a in gone[:10]) + (" ..." if len(gone) > 10 else "")
        print(f"autograde: {len(gone)} submission(s) graded before are no longer in submitted/ ({shown_gone}); "
              "their grades stay in the gradebook and the exports: put the folder back to grade it again, or remove "
              "the grade in the gradebook", file=stream)
    for entry, why in out.get("problems", []):
        print(f"autograde: {entry}: {why}", file=stream)
    errors = [r for r in results if r["status"] == "grader-error"]
    unstored = [r for r in results if "store_error" in r]
    not_graded = out.get("not_graded") or []
    refused = out.get("refused") or []
    if refused:
        print(f"autograde: {len(refused)} submission(s) NOT graded because the machine given them could not grade "
              "(nothing stored for them; an earlier grade stays): fix the workers and run the same command again",
              file=stream)
        for student, assignment, why in refused[:20]:
            print(f"  {shown(student)}/{assignment}: {why}", file=stream)
        if len(refused) > 20:
            print(f"  ... and {len(refused) - 20} more", file=stream)
    if out.get("stopped"):
        print(f"autograde: the run STOPPED early: {out['stopped']}; every result that came back is stored; "
              f"{len(not_graded)} submission(s) were not graded: run the same command again to grade them", file=stream)
    if out.get("exports_error"):
        print(f"autograde: {out['exports_error']} (`autograde --check` repairs them)", file=stream)
    elif out.get("exports") is not None and out["exports"].written:
        print(f"autograde: exports regenerated: {', '.join(out['exports'].written)}", file=stream)
    restored = out.get("restored", [])
    print(f"autograde: graded {len(out['results'])} submission(s) in {out['seconds']:.1f} s with "
          f"{out.get('executor') or str(out['workers']) + ' worker(s)'}"
          + (f"; {len(restored)} stored again" if restored else "")
          + (f"; {len(out['skipped'])} unchanged" if out["skipped"] else "")
          + (f"; {len(errors)} grader error(s)" if errors else "")
          + (f"; {len(unstored)} NOT stored (the next run stores them)" if unstored else "")
          + (f"; {len(out.get('problems', []))} folder(s) not graded" if out.get("problems") else "")
          + (f"; STOPPED with {len(not_graded)} not graded" if out.get("stopped") else "")
          + (f"; {len(refused)} NOT graded (the workers could not)" if refused else ""), file=stream)
    return 1 if (errors or unstored or out.get("problems") or out.get("exports_error") or out.get("stopped")
                 or refused) else 0
