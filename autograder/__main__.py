"""The course's command line: ``python -m autograder COMMAND ...`` (``./course COMMAND ...``).

Each command is a module with ``add_arguments(parser)`` and ``main(args) -> exit code``;
adding one is a line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

#: name -> (module under autograder.grading, one-line help)
COMMANDS = {
    "check": ("selfcheck", "run one of your notebooks and see the points of each graded step"),
    "release": ("release", "generate the learner notebooks in notebooks/ from solutions/ with nbgrader"),
    "build": ("course", "create or update an nbgrader course folder (source, release, gradebook) from solutions/"),
    "collect": ("collect", "bring submissions (nbgrader folders, an LMS folder or zip) into the course folder"),
    "autograde": ("autograde", "grade a class's submissions in parallel, under limits, into the gradebook"),
    "feedback": ("feedback", "write each student's HTML feedback and a plain-text summary"),
    "export": ("export", "write the grades as CSV: one file per assignment and one for the course"),
    "progress": ("progress", "check all of your notebooks and see your progress through the course"),
    "wheel": ("wheel", "build the course's packages into one wheel, for notebooks opened outside the course"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autograder",
        description="Self-check notebooks and build the course's nbgrader releases.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            mod = importlib.import_module(f"autograder.grading.{module}")
        except ImportError as e:  # one broken command must not take the others down
            p.set_defaults(_main=_unavailable(name, e))
            continue
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def _unavailable(name, error):
    def run(args) -> int:
        print(f"{name}: unavailable ({type(error).__name__}: {error})", file=sys.stderr)
        return 1

    return run


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
