"""The probe half of class grading, as it runs in the student's kernel (inside the sandbox).

The grader replaces each test cell with a call of :func:`probe_cell` that it writes itself (see
:mod:`.judging`): for every check of the cell, the learner's object is looked up, the step's
probe observes it on the inputs the grader's seed chooses, and the observations are saved as
plain data (no pickle) where the grader said. Nothing here decides a score, prints a report or
returns a value: the grader judges the files outside the student's code. Whatever the student's
code does to this module can only change what is written into the student's own files, which
the judge reads as untrusted data.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Callable, Sequence, Tuple

#: (step name, a function returning the learner's object, seed, hidden, where to save)
Item = Tuple[str, Callable[[], Any], int, bool, str]


def probe_cell(items: Sequence[Item]) -> None:
    """Observe each item and save its record; a failure is written beside it as ``.error``."""
    from ..checks import steps_by_name

    for name, subject, seed, hidden, path in items:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            obj = subject()
        except BaseException as e:  # the name is missing, or was never defined
            out.with_suffix(".error").write_text(f"lookup {type(e).__name__}", encoding="utf-8")
            continue
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                result, record = steps_by_name()[name].record(obj, seed=seed, hidden=hidden)
            record.save(out)
            if not result.passed:  # a hint for drawing pictures only (the judge decides the points)
                out.with_suffix(".failed").write_text("", encoding="utf-8")
        except BaseException as e:  # never let a probe stop the notebook (but let it be interrupted)
            out.with_suffix(".error").write_text(f"probe {type(e).__name__}", encoding="utf-8")
            if isinstance(e, KeyboardInterrupt):
                raise
