"""Grading a whole class: throughput, the grader's memory, and a killed run resumed.

Builds a course with notebook 01 (``solutions/01_scaled_dot_product_attention.ipynb``) in a
temporary folder and a class of N submissions of it, a mix: correct, partly wrong, blank (the
learner's release as handed out), one that prints megabytes (64 MB of output from a cell outside
the tests) and one whose first cell raises. Then

1. grades the class with ``python -m autograder autograde -j W`` (W = the cores), in a process of
   its own: submissions per minute, and that process's peak memory (its own resident-set
   high-water mark, not its workers' or kernels'; goal: under 500 MiB, whatever the
   submissions print);
2. grades an identical copy of the course (the same grading seed), kills that grader with SIGKILL
   once about half of the class is graded, checks that no process of the killed run is left a
   few seconds later, grades again (without ``--force``: only what is missing), and compares the
   gradebook's scores (``export``) with those of the uninterrupted run: they must be the same.

    .venv/bin/python benchmarks/bench_class.py [--n 200] [--workers W] [--json OUT] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

NAME = "01_scaled_dot_product_attention"
KINDS = ("correct", "partly wrong", "blank", "prints megabytes", "errors")
PRINTS = "for _ in range(64):\n    print('x' * 2**20)  # 64 MB of output in all\n"
RAISES = "raise ValueError('this submission fails in its first cell')\n"
WRONG = [
    {"softmax": "e = x.exp()\nreturn e / e.sum(dim=dim, keepdim=True)  # not stable for large x\n"},
    {"answer_why_scale": 'return "a"\n', "answer_steps_order": "return [1, 2, 3]\n"},
    {"causal_mask": "k = seq_len_q if seq_len_k is None else seq_len_k\n"
                    "return torch.ones(seq_len_q, k, dtype=torch.bool, device=device).triu(1)\n"},
]
#: The grader, in a process of its own, reporting its own peak resident set (KiB) when it ends.
GRADER = ("import resource, sys; from autograder.__main__ import main; rc = main(sys.argv[1:]); "
          "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
          "sys.exit(rc)")


def kind_of(i: int, n: int) -> str:
    """Submission i of n: one that prints megabytes, one that raises, then blank, partly wrong and
    correct ones in the proportions 1:2:7."""
    if i == 0:
        return "prints megabytes"
    if i == 1:
        return "errors"
    r = i % 10
    return "blank" if r == 2 else "partly wrong" if r in (3, 6) else "correct"


def make_class(course: Path, n: int) -> Dict[str, str]:
    import nbformat
    from conftest import fill_submission, insert_after

    from autograder.grading import course as course_mod

    src = nbformat.read(str(course_mod.source_notebook(course, NAME)), as_version=4)
    learner = nbformat.read(str(course / "release" / NAME / f"{NAME}.ipynb"), as_version=4)
    kinds = {}
    for i in range(n):
        kind = kind_of(i, n)
        if kind == "blank":
            nb = nbformat.from_dict(learner)
        elif kind == "partly wrong":
            nb = fill_submission(learner, src, WRONG[i % len(WRONG)])
        else:
            nb = fill_submission(learner, src)
        if kind == "prints megabytes":
            nb = insert_after(nb, "softmax", PRINTS)
        if kind == "errors":
            first = nb.cells[0].get("id") or "0"
            nb.cells[0]["id"] = first
            nb = insert_after(nb, first, RAISES)
        student = f"student{i:03d}"
        p = course / "submitted" / student / NAME / f"{NAME}.ipynb"
        p.parent.mkdir(parents=True)
        nbformat.write(nb, str(p))
        kinds[student] = kind
    return kinds


def grader(course: Path, workers: int, extra: List[str] = ()) -> List[str]:
    return [sys.executable, "-c", GRADER, "autograde", "--course", str(course), "-j", str(workers), "--quiet",
            *extra]


def peak_of(stderr: str) -> float:
    for line in stderr.splitlines():
        if line.startswith("PEAK_RSS_KIB"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"the grader did not report its peak memory: {stderr[-2000:]}")


def scores(course: Path) -> Dict[str, Dict[str, str]]:
    """student -> the gradebook's row (each step's score, the total, the grader's status), through
    ``export``."""
    from autograder.grading import export

    export.export(course)
    with open(course / "exports" / f"{NAME}.csv", newline="", encoding="utf-8") as f:
        return {row.pop("student_id"): row for row in csv.DictReader(f)}


def _points(row):
    """The scores of a gradebook row (every step and the total), without the status."""
    return None if row is None else {k: v for k, v in row.items() if k != "status"}


def explain(a: Path, b: Path, student: str) -> List[str]:
    """How a student's steps differ between the two runs, with the first line of each message."""
    from autograder.grading.jobs import load_result

    ra, rb = load_result(a, student, NAME) or {}, load_result(b, student, NAME) or {}
    steps_b = {st["id"]: st for st in rb.get("steps", [])}
    out = [f"status {ra.get('status')} / {rb.get('status')}"]
    for st in ra.get("steps", []):
        other = steps_b.get(st["id"], {})
        if st.get("points") != other.get("points"):
            first = lambda m: next((l for l in str(m or "").splitlines() if l.strip()), "")[:160]  # noqa: E731
            out.append(f"{st['id']}: {st.get('points')} ({first(st.get('message'))}) / {other.get('points')} "
                       f"({first(other.get('message'))})")
    return out


def graded_count(course: Path) -> int:
    folder = course / "grading"
    return sum(1 for _ in folder.glob(f"*/{NAME}.json")) if folder.is_dir() else 0


def leftover_processes(grader_pid: int, course: Path) -> List[str]:
    """Processes that name the course's run folders or were started as the killed grader's workers."""
    top = str(course / ".grading_tmp")
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if top in cmd or f"--serve --parent {grader_pid}" in cmd:
            out.append(f"{p}: {cmd[:160]}")
    return out


def run(n: int, workers: int, keep: bool = False, out=print) -> dict:
    from autograder.grading import course as course_mod

    if n < 1:
        raise ValueError(f"bench_class: --n must be at least 1, got {n}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_class_"))
    try:
        sol = tmp / "solutions"
        sol.mkdir()
        shutil.copy(ROOT / "solutions" / f"{NAME}.ipynb", sol / f"{NAME}.ipynb")
        if (ROOT / "solutions" / "data").is_dir():
            shutil.copytree(ROOT / "solutions" / "data", sol / "data")
        a = tmp / "course_whole"
        course_mod.build(a, sol, only=[NAME])
        kinds = make_class(a, n)
        b = tmp / "course_killed"
        shutil.copytree(a, b, symlinks=True)  # the same grading seed: the same hidden cases

        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out(f"grading {n} submissions with {workers} worker(s) ...")
        t0 = time.monotonic()
        whole = subprocess.run(grader(a, workers), cwd=str(ROOT), env=env, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        if whole.returncode != 0:
            raise RuntimeError(f"the uninterrupted run failed ({whole.returncode}): {whole.stdout[-2000:]}"
                               f"{whole.stderr[-2000:]}")
        peak = peak_of(whole.stderr)

        out("grading the copy, killing the grader midway ...")
        half = max(1, n // 2)
        killed = subprocess.Popen(grader(b, workers), cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        while killed.poll() is None and graded_count(b) < half:
            time.sleep(0.2)
        done_when_killed = graded_count(b)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        deadline = time.monotonic() + 5
        left = leftover_processes(killed.pid, b)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = leftover_processes(killed.pid, b)
        resumed = subprocess.run(grader(b, workers), cwd=str(ROOT), env=env, capture_output=True, text=True)
        if resumed.returncode != 0:
            raise RuntimeError(f"the resumed run failed ({resumed.returncode}): {resumed.stdout[-2000:]}"
                               f"{resumed.stderr[-2000:]}")
        whole_scores, resumed_scores = scores(a), scores(b)
        differ = sorted(s for s in set(whole_scores) | set(resumed_scores)
                        if _points(whole_scores.get(s)) != _points(resumed_scores.get(s)))
        result = {
            "n": n, "workers": workers, "kinds": sorted(set(kinds.values()), key=KINDS.index),
            "seconds": round(seconds, 1), "submissions_per_minute": round(n / seconds * 60, 2),
            "peak_rss_mib": round(peak, 1), "killed_after": done_when_killed,
            "leftover_processes_after_kill": left,
            "leftover_folders_after_resume": sorted(p.name for p in (b / ".grading_tmp").glob("*"))
            if (b / ".grading_tmp").is_dir() else [],
            "resumed_scores_match": not differ and len(whole_scores) == n, "scores_differ": differ,
            "differences": {s: explain(a, b, s) for s in differ[:10]},
            "statuses": {k: sum(1 for v in whole_scores.values() if v["status"] == k)
                         for k in sorted({v["status"] for v in whole_scores.values()})},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        if keep:
            result["kept"] = str(tmp)
        return result
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="submissions in the class (default 200)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="-j of the grader (default: the cores)")
    ap.add_argument("--json", metavar="OUT", help="also write the numbers as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary course folders")
    args = ap.parse_args(argv)
    if args.n < 1 or args.workers < 1:
        ap.error(f"--n and --workers must be at least 1, got --n {args.n} --workers {args.workers}")
    r = run(args.n, args.workers, keep=args.keep)
    print(f"class of {r['n']} ({', '.join(r['kinds'])}), {r['workers']} worker(s), {r['machine']}")
    print(f"  {r['seconds']:.1f} s: {r['submissions_per_minute']:.1f} submissions per minute; statuses {r['statuses']}")
    print(f"  the grader process's peak memory: {r['peak_rss_mib']:.0f} MiB "
          f"({'under' if r['peak_rss_mib'] < 500 else 'NOT under'} 500 MiB)")
    print(f"  killed with SIGKILL after {r['killed_after']} graded; processes left 5 s later: "
          f"{len(r['leftover_processes_after_kill'])}; resumed: scores "
          f"{'the same as' if r['resumed_scores_match'] else 'DIFFERENT from'} the uninterrupted run"
          + (f" ({', '.join(r['scores_differ'][:5])})" if r["scores_differ"] else ""))
    for student, lines in r["differences"].items():
        print(f"    {student}: " + "; ".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1), encoding="utf-8")
    ok = (r["resumed_scores_match"] and not r["leftover_processes_after_kill"] and r["peak_rss_mib"] < 500
          and not r["leftover_folders_after_resume"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
