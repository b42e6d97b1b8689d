"""How long every step check takes on a correct answer, on a busy machine.

    python benchmarks/bench_checks.py                    # two busy processes, every check, pinned threads
    python benchmarks/bench_checks.py --compare          # also without the check's thread pinning
    python benchmarks/bench_checks.py --busy 0 --steps softmax,01.why_scale --repeats 1 --out r.json

A test cell runs one check; the goal is that every check takes under 0.5 s, also while other
processes compete for the cores (a learner's other kernels, a class grading run). This script
starts ``--busy`` processes that each run matrix products (on one thread each by default, so that
two of them take the two cores of the course's reference machine; ``--busy-threads 0`` gives them
torch's default, every core), then runs
every registered step check on a correct answer: the reference solutions of ``solutions/`` (each
notebook's answer cells, defined as the notebook defines them, see :func:`solution_definitions`),
the right answer of each checkpoint, and, for the capstone, an untrained model of the notebook's
configuration (the check's work, evaluating held-out sequences, is the same; it earns no points). Each check runs once cold (first call, lazy imports included), then ``--repeats``
times; it prints the median and the worst warm time, and the ratio of the worst (cold included)
to the goal.

``--compare`` runs each check a second time with the registry's thread pinning switched off
(torch's own thread count), interleaved with the pinned runs, to show what the pinning saves.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import bench_common as bc  # noqa: E402

#: Seconds one check may take in a test cell.
GOAL_S = 0.5


# --------------------------------------------------------------------------- the busy processes


def _busy(stop: Any, size: int, threads: int) -> None:  # pragma: no cover - runs in a child process
    import torch

    if threads:
        torch.set_num_threads(threads)
    a = torch.randn(size, size)
    while not stop.is_set():
        a = (a @ a).tanh_()


@contextmanager
def busy_processes(n: int, threads: int = 1, size: int = 384) -> Iterator[List[Any]]:
    """``n`` processes that keep the cores busy with matrix products, each on ``threads``
    threads (0: torch's default, every core), stopped and joined on exit."""
    if n < 0:
        raise ValueError(f"busy: expected a count >= 0, got {n}")
    if threads < 0:
        raise ValueError(f"busy threads: expected a count >= 0 (0: torch's default), got {threads}")
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_busy, args=(stop, size, threads), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        if procs:
            time.sleep(1.0)  # let them start and load torch before anything is measured
        yield procs
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


# --------------------------------------------------------------------------- what is checked


def solution_definitions(path: Path) -> Dict[str, Any]:
    """The namespace a solution notebook's definitions make, without running its experiments:
    its answer cells (the reference solutions) in full, and from its other code cells only the
    imports, functions, classes and UPPER_CASE constants (the broken code notebook 06 repairs,
    the capstone's CONFIG). Test cells and checkpoint answers are left out."""
    import ast

    import nbformat

    from autograder.grading import nbgrader_tools as nbt

    nb = nbformat.read(str(path), as_version=4)
    ns: Dict[str, Any] = {"__name__": "__main__"}
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or nbt.is_test_cell(cell) or (nbt.grade_id(cell) or "").startswith("answer_"):
            continue
        tree = ast.parse(nbt.cell_source(cell))
        if not nbt.is_solution(cell):
            tree.body = [n for n in tree.body if isinstance(n, keep) or _is_constant(n)]
        exec(compile(tree, f"{path.name}, cell {index}", "exec"), ns)
    return ns


def _is_constant(node: Any) -> bool:
    """``NAME = <literals, or dict(...) of literals>`` (a configuration), or ``Name =
    fallback("step", name)`` (a later answer's use of an earlier one): cheap and self-contained."""
    import ast

    if not (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets)):
        return False
    value = node.value
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "fallback"
            and all(isinstance(a, (ast.Constant, ast.Name)) for a in value.args)):
        return True
    if not all(t.id.isupper() for t in node.targets):
        return False
    for sub in ast.walk(node.value):
        if isinstance(sub, ast.Call) and not (isinstance(sub.func, ast.Name) and sub.func.id == "dict"):
            return False
        if isinstance(sub, (ast.Name, ast.Attribute)) and not (isinstance(sub, ast.Name) and sub.id == "dict"):
            return False
    return True


def _untrained_model(config: tuple) -> Any:
    import torch

    import mhsa_lib

    torch.manual_seed(0)
    return mhsa_lib.TinyTransformer(**dict(config)).eval()


def correct_answers(solutions: Path = ROOT / "solutions") -> Dict[str, Callable[[], Any]]:
    """step name -> a function returning a correct answer for its check: the solution notebooks'
    own function or class of that name, the right letters of each checkpoint, and for the
    capstone an untrained ``mhsa_lib.TinyTransformer`` with the notebook's CONFIG (the solution's
    own model class needs the notebook's earlier cells to be run)."""
    import matplotlib

    matplotlib.use("Agg")  # the notebooks import pyplot; nothing is drawn here
    from autograder import checks  # noqa: F401 - registers every step
    from autograder.checks.questions import QUESTIONS
    from autograder.frame.registry import steps

    defined: Dict[str, Dict[str, Any]] = {}  # notebook -> its namespace (a later notebook may import a name)
    for path in sorted(Path(solutions).glob("*.ipynb")):
        ns = defined[path.stem] = solution_definitions(path)
        if "CONFIG" in ns and "SortingTransformer" in ns:
            ns["_capstone"] = partial(_untrained_model, tuple(ns["CONFIG"].items()))
    answers: Dict[str, Callable[[], Any]] = {}
    for s in steps():
        ns = defined.get(s.notebook, {})
        if s.kind == "checkpoint":
            answers[s.name] = lambda answer=QUESTIONS[s.name].answer: (lambda: answer)
        elif s.name == "capstone" and "_capstone" in ns:
            answers[s.name] = ns["_capstone"]
        elif s.name in ns:
            answers[s.name] = lambda obj=ns[s.name]: obj
    return answers


@contextmanager
def pinning(on: bool) -> Iterator[None]:
    """The registry's thread pinning as shipped (``on``), or switched off for a comparison."""
    from autograder.frame.registry import Step

    if on:
        yield
        return
    pinned = Step._run
    Step._run = lambda self, subject, mode, record, strict=False: self._run_pinned(subject, mode, record, strict)
    try:
        yield
    finally:
        Step._run = pinned


def time_check(name: str, make: Callable[[], Any], repeats: int, pinned: bool = True) -> Dict[str, Any]:
    """Cold and warm times of step ``name``'s check on ``make()``, and its points."""
    from autograder.frame.registry import get

    step = get(name)
    times, points = [], None
    with pinning(pinned):
        for _ in range(1 + repeats):
            subject = make()
            start = time.perf_counter()
            points = step.check(subject, quiet=True)
            times.append(time.perf_counter() - start)
    warm = times[1:] or times
    return {"step": name, "kind": step.kind, "notebook": step.notebook[:2], "points": points,
            "max_points": step.points, "cold_s": times[0], "median_s": statistics.median(warm),
            "max_s": max(warm), "worst_s": max(times), "pinned": pinned}


# --------------------------------------------------------------------------- the run


def run(busy: int = 2, repeats: int = 3, only: Optional[Sequence[str]] = None, compare: bool = False,
        busy_threads: int = 1) -> dict:
    import torch

    answers = correct_answers()
    if only:
        unknown = sorted(set(only) - set(answers))
        if unknown:
            raise ValueError(f"steps: expected names among {sorted(answers)}, got unknown {unknown}")
        answers = {k: v for k, v in answers.items() if k in only}
    rows: List[dict] = []
    started = time.perf_counter()
    load_before = _load_average()
    with busy_processes(busy, busy_threads):
        for name, make in answers.items():
            rows.append(time_check(name, make, repeats, pinned=True))
            if compare:
                rows.append(time_check(name, make, repeats, pinned=False))
    pinned_rows = [r for r in rows if r["pinned"]]
    worst = max(pinned_rows, key=lambda r: r["worst_s"]) if pinned_rows else None
    return {
        "goal_s": GOAL_S, "busy_processes": busy, "busy_threads": busy_threads, "repeats": repeats,
        "cpu_count": os.cpu_count(), "load_average": [load_before, _load_average()],
        "torch_threads": torch.get_num_threads(), "seconds": time.perf_counter() - started,
        "rows": rows,
        "goals": [bc.goal(f"worst check time / {GOAL_S} s goal" + (f" ({worst['step']})" if worst else ""),
                          (worst["worst_s"] / GOAL_S) if worst else None, "<=", 1.0,
                          f"{busy} busy processes, {os.cpu_count()} cores")],
        "not_correct": [r["step"] for r in pinned_rows if r["points"] != r["max_points"] and r["step"] != "capstone"],
        "missing": sorted(set(_all_steps()) - set(answers)) if not only else [],
    }


def _load_average() -> Optional[float]:
    """The one-minute load average (other people's work on a shared machine), if known."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _all_steps() -> List[str]:
    from autograder.frame.registry import steps

    return [s.name for s in steps()]


def print_report(result: dict) -> None:
    threads = result["busy_threads"] or "torch's default"
    print(f"Every step check on a correct answer, {result['busy_processes']} busy process(es) ({threads} thread(s) "
          f"each) on {result['cpu_count']} core(s), {result['repeats']} warm run(s) each (goal: under "
          f"{result['goal_s']:g} s); load average {result['load_average'][0]} before, "
          f"{result['load_average'][1]} after\n")
    headers = ["step", "nb", "threads", "points", "cold", "median", "worst warm", "worst / goal", "verdict"]
    table = []
    for r in result["rows"]:
        ratio = r["worst_s"] / result["goal_s"]
        table.append([r["step"], r["notebook"], "1 (pinned)" if r["pinned"] else "torch's",
                      f"{r['points']:g}/{r['max_points']:g}", bc.fmt_ms(r["cold_s"]), bc.fmt_ms(r["median_s"]),
                      bc.fmt_ms(r["max_s"]), f"{ratio:.2f}", "ok" if ratio <= 1 else "SLOW"])
    bc.print_table(headers, table)
    pinned = [r for r in result["rows"] if r["pinned"]]
    slow = [r["step"] for r in pinned if r["worst_s"] > result["goal_s"]]
    print(f"\n  {len(pinned) - len(slow)} of {len(pinned)} checks under {result['goal_s']:g} s"
          + (f"; over: {', '.join(slow)}" if slow else "") + f" ({result['seconds']:.0f} s in all)")
    if result.get("missing"):
        print(f"  (no correct answer found for: {', '.join(result['missing'])})")
    if result["not_correct"]:
        print(f"  (not full marks on the correct answer: {', '.join(result['not_correct'])})")
    bc.print_goals(result["goals"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy processes competing for the cores (default 2)")
    parser.add_argument("--busy-threads", type=int, default=1,
                        help="threads of each busy process (default 1: each takes one core; 0: torch's default)")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs of each check after the cold one")
    parser.add_argument("--steps", default="", help="comma-separated step names (default: every step)")
    parser.add_argument("--compare", action="store_true", help="also run each check without thread pinning")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if min(args.busy, args.repeats, args.busy_threads) < 0:
        parser.error(f"--busy, --busy-threads and --repeats must be >= 0, got {args.busy}, {args.busy_threads} "
                     f"and {args.repeats}")
    try:
        result = run(args.busy, args.repeats, [s for s in args.steps.split(",") if s] or None, args.compare,
                     args.busy_threads)
    except ValueError as e:
        parser.error(str(e))
    print_report(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
