"""Autograding speed: serial ``nbgrader autograde`` against ``python -m autograder autograde``.

Builds a course folder for notebook 01 in a temporary folder, makes N correct submissions (the
learner release with the solutions filled in), then grades them twice in one run, on the same
machine, with the same seed: once with ``nbgrader autograde`` (serial, as nbgrader does), once
with the course's grader and W workers. Prints both times, their ratio (goal: at most 0.6 with 2
workers), and the grader's own cost per submission beyond executing the notebook.

    .venv/bin/python benchmarks/bench_grading.py [--submissions 20] [--workers 2]
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

    def make_course(where: Path) -> Path:
        course.build(where, sol)
        src = nbformat.read(str(course.source_notebook(where, NAME)), as_version=4)
        learner = nbformat.read(str(where / "release" / NAME / f"{NAME}.ipynb"), as_version=4)
        nb = fill_submission(learner, src)
        for i in range(args.submissions):
            p = where / "submitted" / f"student{i:02d}" / NAME / f"{NAME}.ipynb"
            p.parent.mkdir(parents=True)
            nbformat.write(nb, str(p))
        return where

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"nbgrader {nbgrader.__version__}")
    a = make_course(tmp / "with_nbgrader")
    b = make_course(tmp / "with_grader")

    t0 = time.monotonic()
    nbt.run_nbgrader(["autograde", NAME, "--force"], a, timeout=3600, env={"MHSA_GRADING_SEED": "1"})
    t_nbgrader = time.monotonic() - t0
    print(f"nbgrader autograde (serial): {args.submissions} submissions in {t_nbgrader:.1f} s "
          f"({t_nbgrader / args.submissions:.2f} s each)")

    limits = engine.Limits(cell_timeout=300, total_timeout=1800)
    t0 = time.monotonic()
    out = autograde.grade_class(b, workers=args.workers, limits=limits, force=True, stream=io.StringIO(),
                                show_progress=False)
    t_grader = time.monotonic() - t0
    results = out["results"]
    bad = [r for r in results if r["status"] != "ok" or r["score"] != r["max_score"]]
    execs = [r["exec_seconds"] for r in results]
    walls = [r["wall_seconds"] for r in results]
    in_worker = statistics.mean(w - e for w, e in zip(walls, execs))
    beyond = (t_grader * args.workers - sum(execs)) / len(results)
    print(f"autograder autograde ({args.workers} workers): {len(results)} submissions in {t_grader:.1f} s "
          f"({t_grader / len(results):.2f} s each)" + (f"; {len(bad)} NOT full marks" if bad else ", all full marks"))
    print(f"ratio: {t_grader / t_nbgrader:.2f} (goal: at most 0.6)")
    print(f"executing one notebook (kernel start + cells + integrity checks): mean {statistics.mean(execs):.2f} s")
    print(f"grader overhead per submission beyond executing the notebook: {in_worker:.2f} s in the worker "
          f"(copy, restore, scan, write), {beyond:.2f} s counting everything (worker-slot time minus execution)")
    if args.keep:
        print(f"course folders kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
