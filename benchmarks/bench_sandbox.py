"""What a sandbox costs per start: ``python -c pass`` outside and inside the sandbox of
``autograder/grading/sandbox.py`` (bwrap, limits and, as root, a memory cgroup), interleaved,
medians side by side.

    .venv/bin/python benchmarks/bench_sandbox.py [--repeat 20]

Nothing here asserts a speed; the goal (at most 0.3 s more per start) is checked by reading it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from autograder.grading import sandbox  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    ok, why = sandbox.check_sandbox()
    if not ok:
        raise SystemExit(f"bench_sandbox: {why}")
    argv = [sys.executable, "-c", "pass"]
    outside, inside = [], []
    memory = "?"
    with tempfile.TemporaryDirectory() as scratch:
        spec = sandbox.SandboxSpec(scratch=scratch)
        for _ in range(args.repeat):  # interleaved, so that drift hits both alike
            t = time.perf_counter()
            subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
            outside.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = sandbox.run(spec, argv, timeout=60)
            inside.append(time.perf_counter() - t)
            assert r.returncode == 0, r
            memory = r.memory
    o, i = statistics.median(outside), statistics.median(inside)
    print(f"python -c pass, median of {args.repeat} interleaved runs (memory limit: {memory}, uid {spec.uid})")
    print(f"{'outside':>10} {'sandbox':>10} {'overhead':>10}")
    print(f"{o * 1000:8.1f}ms {i * 1000:8.1f}ms {(i - o) * 1000:8.1f}ms")


if __name__ == "__main__":
    main()
