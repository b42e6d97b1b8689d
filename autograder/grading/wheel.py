"""``python -m autograder wheel``: the course's packages (``mhsa_lib`` and ``autograder``) as one
wheel, ``mhsa_course-VERSION-py3-none-any.whl``, with what the notebooks need as its
dependencies (torch, NumPy, matplotlib). An instructor puts it where the class can reach it (a
web server, a shared folder, a package index) and releases the notebooks with ``--package`` set
to it, so that each notebook's set-up cell installs the course wherever it is opened.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(out: Path, root: Path = ROOT, timeout: float = 600) -> Path:
    """Build the wheel into ``out``; returns its path."""
    root = Path(root)
    if not (root / "pyproject.toml").is_file():
        raise RuntimeError(f"no pyproject.toml in {root}: build the wheel from the course's repository")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("mhsa_course-*.whl"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out),
                           str(root)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"pip wheel failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-2000:]}")
    made = sorted(out.glob("mhsa_course-*.whl"), key=lambda p: p.stat().st_mtime)
    fresh = [p for p in made if p not in before] or made
    if not fresh:
        raise RuntimeError(f"pip wheel made no mhsa_course wheel in {out}")
    return fresh[-1]


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, default=Path("dist"), metavar="DIR",
                        help="where the wheel goes (default: ./dist)")


def main(args) -> int:
    try:
        path = build_wheel(args.out)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"wheel: {e}", file=sys.stderr)
        return 1
    print(f"wheel: {path}")
    print("wheel: release the notebooks with `./course build --course DIR --package URL-OR-PATH-OF-THIS-WHEEL` "
          "(or a folder / index URL that serves it) so that each notebook installs the course where it is opened")
    return 0
