"""Autograding speed: serial ``nbgrader autograde`` against ``python -m autograder autograde``.

Builds course folders for notebook 01 in a temporary folder with N correct submissions in all
(the learner release with the solutions filled in), then grades them with both, interleaved in
one run on the same machine (round by round: nbgrader on half the class, the course's grader on
the other half's copy, then the same again the other way round), so that a busy moment costs
both alike: ``nbgrader autograde`` serial, as nbgrader does, and the course's grader with W
workers, each submission in its sandbox and judged outside the student's code. Prints both
times, their ratio (goal: at most 0.5 with 2 workers), and the grader's own cost per submission
beyond executing the notebook.

    .venv/bin/python benchmarks/bench_grading.py [--submissions 20] [--workers 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

NAME = "01_scaled_dot_product_attention"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submissions", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (the class split between them)")
    ap.add_argument("--no-sandbox", action="store_true", help="grade without the sandbox (to see its cost)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary course folders")
    args = ap.parse_args()

    import nbformat
    import nbgrader
    from conftest import fill_submission

    from autograder.grading import autograde, course, engine
    from autograder.grading import nbgrader_tools as nbt

    tmp = Path(tempfile.mkdtemp(prefix="bench_grading_"))
    sol = tmp / "solutions"
    sol.mkdir()
    shutil.copy(ROOT / "solutions" / f"{NAME}.ipynb", sol / f"{NAME}.ipynb")
    if (ROOT / "solutions" / "data").is_dir():
        shutil.copytree(ROOT / "solutions" / "data", sol / "data")

    def make_course(where: Path, n: int) -> Path:
        course.build(where, sol)
        src = nbformat.read(str(course.source_notebook(where, NAME)), as_version=4)
        learner = nbformat.read(str(where / "release" / NAME / f"{NAME}.ipynb"), as_version=4)
        nb = fill_submission(learner, src)
        for i in range(n):
            p = where / "submitted" / f"student{i:02d}" / NAME / f"{NAME}.ipynb"
            p.parent.mkdir(parents=True)
            nbformat.write(nb, str(p))
        return where

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"nbgrader {nbgrader.__version__}")
    rounds = max(1, args.rounds)
    sizes = [args.submissions // rounds + (1 if r < args.submissions % rounds else 0) for r in range(rounds)]
    limits = engine.Limits(cell_timeout=300, total_timeout=1800)
    t_nbgrader = t_grader = 0.0
    results = []
    for r, n in enumerate(sizes):
        a = make_course(tmp / f"nbgrader_{r}", n)
        b = make_course(tmp / f"grader_{r}", n)

        def with_nbgrader() -> float:
            t0 = time.monotonic()
            nbt.run_nbgrader(["autograde", NAME, "--force"], a, timeout=3600, env={"MHSA_GRADING_SEED": "1"})
            return time.monotonic() - t0

        def with_grader() -> float:
            t0 = time.monotonic()
            out = autograde.grade_class(b, workers=args.workers, limits=limits, force=True, stream=io.StringIO(),
                                        show_progress=False, sandbox=not args.no_sandbox)
            results.extend(out["results"])
            return time.monotonic() - t0

        first, second = (with_nbgrader, with_grader) if r % 2 == 0 else (with_grader, with_nbgrader)
        x, y = first(), second()
        t_nbgrader += x if first is with_nbgrader else y
        t_grader += y if first is with_nbgrader else x
    print(f"nbgrader autograde (serial): {args.submissions} submissions in {t_nbgrader:.1f} s "
          f"({t_nbgrader / args.submissions:.2f} s each)")
    bad = [r for r in results if r["status"] != "ok" or r["score"] != r["max_score"]]
    execs = [r["exec_seconds"] for r in results]
    walls = [r["wall_seconds"] for r in results]
    in_worker = statistics.mean(w - e for w, e in zip(walls, execs))
    beyond = (t_grader * args.workers - sum(execs)) / len(results)
    sandboxed = all(r.get("sandbox") for r in results)
    print(f"autograder autograde ({args.workers} workers, {'in the sandbox' if sandboxed else 'WITHOUT the sandbox'}, "
          f"judged outside): {len(results)} submissions in {t_grader:.1f} s ({t_grader / len(results):.2f} s each)"
          + (f"; {len(bad)} NOT full marks" if bad else ", all full marks"))
    ratio = t_grader / t_nbgrader
    print(f"ratio: {ratio:.2f} (goal: at most 0.5) {'met' if ratio <= 0.5 else 'NOT met'}; {rounds} interleaved rounds")
    print(f"executing one notebook (sandbox, kernel start, cells): mean {statistics.mean(execs):.2f} s")
    print(f"grader overhead per submission beyond executing the notebook: {in_worker:.2f} s in the worker "
          f"(copy, restore, read back, judge, write), {beyond:.2f} s counting everything (worker-slot time minus "
          "execution)")
    if args.keep:
        print(f"course folders kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
