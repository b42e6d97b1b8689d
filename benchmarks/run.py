"""Run the course's benchmarks and print side-by-side tables with ratios against the goals.

    python benchmarks/run.py                         # quick: core + decoding + memory, under a minute on 2 cores
    python benchmarks/run.py --full                  # every group, every CPU shape causal and not, 1 and 2 threads (tens of minutes)
    python benchmarks/run.py --groups notebooks      # one group (comma-separated list)
    python benchmarks/run.py --threads 1,2 --out results.json
    python benchmarks/run.py --full --groups core --threads 2 --shapes 1x16x2048x64 --causal no   # the goal shape
    python benchmarks/run.py --device cuda --groups core,decoding,memory --out gpu.json   # on a GPU machine
    python benchmarks/run.py --smoke --dtypes bf16,fp16   # the GPU's dtypes, tried on the CPU

Groups:
  core       attention core and modules: mhsa_lib reference and fast paths, SDPA,
             nn.MultiheadAttention (same weights), NumPy; time, FLOP/s, peak extra memory
  decoding   incremental decoding with and without the KV cache, MHA / GQA / MQA; tokens/s,
             KV-cache bytes
  memory     extra memory of MultiHeadAttention against T, reference and fast paths: forward
             peak and what autograd saves for backward, and how they grow (T^2 or T)
  notebooks  wall time of every solution notebook run top to bottom, kernel start included
  grading    serial nbgrader autograde vs the parallel grader (benchmarks/bench_grading.py)
  cluster    class grading with the local executor and with 1 and 2 Dask workers on this machine:
             submissions per minute, CPU seconds per submission, the grader's overhead beyond the
             notebooks, Dask's overhead at 2 workers (benchmarks/bench_cluster.py; needs
             dask[distributed])

Default groups: core,decoding,memory in quick mode, all six with --full. With --device cuda the core
group runs every shape in bf16, fp16 and fp32 whatever the mode (GPU calls take milliseconds);
``--dtypes`` chooses others (the decoding and memory groups take the first). ``--smoke`` runs tiny shapes
with one repeat (the test suite uses it to check the output format; its numbers mean nothing).
Every figure is a median over repeats with the candidates interleaved, so ratios measured in
one run are meaningful on a shared machine even when absolute times are not.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the bench_* modules sit next to this file

import bench_common as bc  # noqa: E402

GROUPS = ("core", "decoding", "memory", "notebooks", "grading", "cluster")
QUICK_GROUPS = ("core", "decoding", "memory")
SCHEMA = 1


def _group_core(config: bc.Config) -> dict:
    return importlib.import_module("bench_core").run(config)


def _group_decoding(config: bc.Config) -> dict:
    return importlib.import_module("bench_decoding").run(config)


def _group_memory(config: bc.Config) -> dict:
    return importlib.import_module("bench_memory").run(config)


def _group_notebooks(config: bc.Config) -> dict:
    return importlib.import_module("bench_notebooks").run(config)


def _group_grading(config: bc.Config) -> dict:
    """Delegates to ``benchmarks/bench_grading.py``, imported only when this group runs.

    Its ``run(...)`` if it has one (the keyword arguments it names among config, mode, quick,
    full, smoke and device are filled in); else its ``main`` as its own command line would call
    it, with no options (``main(argv)`` if it takes them), its printed output kept in the
    results. Smoke mode skips ``main``: grading 20 submissions is no smoke test.
    """
    if not (HERE / "bench_grading.py").exists():
        return {"status": "skipped", "reason": "benchmarks/bench_grading.py is not present"}
    module = importlib.import_module("bench_grading")
    if hasattr(module, "run"):
        fn = module.run
        params = inspect.signature(fn).parameters
        offered = {"config": config, "mode": config.mode, "quick": config.mode != "full",
                   "full": config.mode == "full", "smoke": config.mode == "smoke", "device": config.device}
        if len(params) == 1 and not any(p in offered for p in params):
            result = fn(config)
        else:
            result = fn(**{k: v for k, v in offered.items() if k in params})
        return result if isinstance(result, dict) else {"returned": result}
    if not hasattr(module, "main"):
        return {"status": "skipped", "reason": "benchmarks/bench_grading.py has neither run() nor main()"}
    if config.mode == "smoke":
        return {"status": "skipped", "reason": "smoke mode: run --groups grading without --smoke"}
    takes_argv = len(inspect.signature(module.main).parameters) > 0
    saved_argv, captured = sys.argv, io.StringIO()
    sys.argv = [str(HERE / "bench_grading.py")]
    try:
        with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
            code = module.main([]) if takes_argv else module.main()
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = saved_argv
    ok = code in (None, 0)
    return {"status": "ok" if ok else "error", "exit_code": code, "output": captured.getvalue(),
            **({} if ok else {"reason": f"bench_grading.main() exited with {code!r}"})}


def _group_cluster(config: bc.Config) -> dict:
    """``benchmarks/bench_cluster.py``, imported only when this group runs: skipped in smoke mode
    and, saying why, where dask[distributed] or the grader's Dask executor is missing."""
    return importlib.import_module("bench_cluster").run_group(config)


class _Tee(io.TextIOBase):
    """Writes to several streams at once (the terminal and a capture)."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


RUNNERS: Dict[str, Callable[[bc.Config], dict]] = {
    "core": _group_core,
    "decoding": _group_decoding,
    "memory": _group_memory,
    "notebooks": _group_notebooks,
    "grading": _group_grading,
    "cluster": _group_cluster,
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmarks of the course, the library and the grader, with ratios against the goals.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--groups", help=f"comma-separated, from {','.join(GROUPS)} "
                                         f"(default: {','.join(QUICK_GROUPS)}; all with --full)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="about a minute (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="all shapes, more repeats")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help="tiny shapes, one repeat: checks that everything runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtypes", help="comma-separated, e.g. bf16,fp16,fp32 (default: bf16,fp16,fp32 "
                                         "on cuda, fp32 on the CPU)")
    parser.add_argument("--threads", default=None,
                        help="CPU thread counts, comma-separated (default: 2 quick, 1,2 full)")
    parser.add_argument("--repeats", type=int, help="repeats per measurement (default: by mode and device)")
    parser.add_argument("--shapes", help="core group: (B, H, T, Dh) shapes to run instead of the mode's, "
                                         "e.g. 1x16x2048x64 (each causal and not)")
    parser.add_argument("--causal", choices=("both", "no", "yes"), default="both",
                        help="with --shapes: run them not causal, causal or both (default)")
    parser.add_argument("--out", type=Path, help="write every number to this JSON file")
    args = parser.parse_args(argv)
    args.mode = args.mode or "quick"
    if args.shapes:
        try:
            args.shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
            assert all(len(s) == 4 for s in args.shapes)
        except (ValueError, AssertionError):
            parser.error(f"--shapes: expected BxHxTxDh[,BxHxTxDh...], got {args.shapes!r}")
    if args.dtypes:
        try:
            args.dtypes = bc.parse_dtypes(args.dtypes)
        except ValueError as e:
            parser.error(f"--dtypes: {e}")
    if args.groups:
        args.groups = [g.strip() for g in args.groups.split(",") if g.strip()]
        unknown = [g for g in args.groups if g not in GROUPS]
        if unknown:
            parser.error(f"--groups: unknown {unknown}, expected some of {list(GROUPS)}")
    else:
        args.groups = list(GROUPS if args.mode == "full" else QUICK_GROUPS)
    if args.threads:
        try:
            args.threads = [int(n) for n in args.threads.split(",")]
        except ValueError:
            parser.error(f"--threads: expected integers like 1,2, got {args.threads!r}")
    else:
        args.threads = [1, 2] if args.mode == "full" else [2]
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    config = bc.Config(mode=args.mode, device=args.device, threads=args.threads, repeats=args.repeats,
                       shapes=args.shapes, dtypes=args.dtypes,
                       causal={"both": (False, True), "no": (False,), "yes": (True,)}[args.causal])
    env = bc.environment(config)
    print(f"benchmarks ({config.mode}, {config.device}): torch {env['torch']}, numpy {env['numpy']}, "
          f"python {env['python']}, {env['cpu']} ({env['cpu_count']} CPUs)"
          + (f", {env['gpu']}" if "gpu" in env else "") + f", groups {','.join(args.groups)}")
    results = {"schema": SCHEMA, "environment": env,
               "command": "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "groups": {}}
    for name in args.groups:
        print(f"\n===== {name} =====")
        started = time.perf_counter()
        try:
            outcome = RUNNERS[name](config)
            outcome.setdefault("status", "ok")
        except Exception as e:  # noqa: BLE001 - one broken group must not lose the others
            traceback.print_exc()
            outcome = {"status": "error", "reason": f"{type(e).__name__}: {e}"}
        outcome["seconds"] = round(time.perf_counter() - started, 2)
        if outcome["status"] != "ok":
            print(f"{name}: {outcome['status']}: {outcome.get('reason', '')}")
        results["groups"][name] = outcome
        if args.out:  # after every group, so an interrupted run keeps what it measured
            args.out.write_text(json.dumps(results, indent=1, default=str))
    print("\n===== summary =====")
    for name, outcome in results["groups"].items():
        print(f"  {name}: {outcome['status']} in {outcome['seconds']:.0f} s")
        for g in outcome.get("goals", []):
            if g["target"] is not None:
                print("    " + bc.describe_goal(g) + (f"  ({g['where']})" if g.get("where") else ""))
    if args.out:
        print(f"\nresults written to {args.out}")
    return results


if __name__ == "__main__":
    # exit 1 when a group failed (a skipped one is fine), so scripted runs notice
    sys.exit(0 if all(g["status"] != "error" for g in main()["groups"].values()) else 1)
