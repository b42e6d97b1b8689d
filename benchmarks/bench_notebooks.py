"""The "notebooks" group: wall time of every solution notebook, executed top to bottom.

Each notebook in ``solutions/`` runs through the self-check (``autograder check``): a fresh
kernel of this interpreter, started inside the timing, every cell in order, then the graded
steps scored. The notebooks run one after another, never in parallel, so they do not slow
each other down.

Also the time of each step check inside the kernel: the wall time of each graded test cell (the
check on the public case and, in these instructor notebooks, the hidden cases too, as at grading
time), measured around the cell's execution, so the kernel's round trip of a few milliseconds is
included.

Goals: at most 60 s per notebook, 180 s for the capstone (07), the whole course under 8 minutes,
each step check under 1 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence

import bench_common as bc

SOLUTIONS = bc.ROOT / "solutions"
NOTEBOOK_GOAL_S = 60.0
CAPSTONE_GOAL_S = 180.0
COURSE_GOAL_S = 8 * 60.0
STEP_GOAL_S = 1.0
CAPSTONE_PREFIX = "07"


def discover(folder: Path = SOLUTIONS) -> List[Path]:
    """The solution notebooks, in course order (their names start with the number)."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def goal_for(path: Path) -> float:
    return CAPSTONE_GOAL_S if path.name.startswith(CAPSTONE_PREFIX) else NOTEBOOK_GOAL_S


def time_notebook(path: Path, cell_timeout: float = 300, total_timeout: float = 900) -> dict:
    """Run one notebook and time it, kernel start included."""
    from autograder.grading.selfcheck import NotebookUnusable, check_notebook

    started = time.perf_counter()
    try:
        report = check_notebook(path, cell_timeout=cell_timeout, total_timeout=total_timeout)
    except NotebookUnusable as e:
        return {"notebook": path.name, "seconds": time.perf_counter() - started, "goal_s": goal_for(path),
                "status": "error", "reason": str(e)}
    seconds = time.perf_counter() - started
    failed = [s.id for s in report.steps if not s.passed]
    status = "ok"
    if report.stopped_early or report.errors or failed:
        status = "problems"
    return {
        "notebook": path.name, "seconds": seconds, "goal_s": goal_for(path), "status": status,
        "score": report.score, "max_score": report.max_score, "cell_errors": [list(e) for e in report.errors],
        "failed_steps": failed, "stopped_early": report.stopped_early, "step_seconds": dict(report.step_seconds),
    }


def run_notebooks(paths: Sequence[Path], course_goal_s: Optional[float] = COURSE_GOAL_S) -> dict:
    rows = []
    for path in paths:
        print(f"  running {path.name} ...", flush=True)
        rows.append(time_notebook(path))
    total = sum(r["seconds"] for r in rows)
    table = []
    for r in rows:
        score = f"{r['score']:g}/{r['max_score']:g}" if "score" in r else "-"
        note = "" if r["status"] == "ok" else r.get("reason") or (
            f"errors {r['cell_errors']}" if r.get("cell_errors") else
            f"failed {r['failed_steps']}" if r.get("failed_steps") else r.get("stopped_early") or r["status"])
        table.append([r["notebook"], f"{r['seconds']:.1f}", f"{r['goal_s']:.0f}",
                      f"{r['seconds'] / r['goal_s']:.2f}", score, note[:60]])
    table.append(["whole course", f"{total:.1f}", f"{course_goal_s:.0f}" if course_goal_s else "-",
                  f"{total / course_goal_s:.2f}" if course_goal_s else "-", "", ""])
    print()
    bc.print_table(["notebook", "seconds", "goal s", "x goal", "score", "note"], table)
    goals = [bc.goal(f"{r['notebook']} seconds / goal", r["seconds"] / r["goal_s"], "<=", 1.0)
             for r in rows]
    if course_goal_s:
        names = ", ".join(r["notebook"][:2] for r in rows)
        goals.append(bc.goal("whole course seconds / 8 minutes", total / course_goal_s, "<=", 1.0,
                             f"notebooks {names} ({len(rows)} found)"))
    steps = sorted(((t, r["notebook"], gid) for r in rows for gid, t in r.get("step_seconds", {}).items()),
                   reverse=True)
    if steps:
        print(f"\n  step checks, in-kernel seconds (the slowest 8 of {len(steps)}; goal: each under {STEP_GOAL_S:g} s):")
        bc.print_table(["step", "notebook", "seconds"], [[gid, nb, f"{t:.3f}"] for t, nb, gid in steps[:8]],
                       indent="    ")
        slowest, nb, gid = steps[0]
        goals.append(bc.goal("slowest step check seconds / 1 s", slowest / STEP_GOAL_S, "<=", 1.0,
                             f"{gid} in {nb}; {len(steps)} step checks"))
    bc.print_goals(goals)
    return {"rows": rows, "total_s": total, "goals": goals}


def run(config: bc.Config) -> dict:
    paths = discover()
    if config.mode == "smoke":
        paths = paths[:1]
    if not paths:
        return {"status": "skipped", "reason": f"no notebooks in {SOLUTIONS}"}
    print(f"{len(paths)} solution notebooks: {', '.join(p.name for p in paths)}")
    return run_notebooks(paths, COURSE_GOAL_S if config.mode != "smoke" else None)
