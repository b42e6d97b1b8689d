"""Use the learner's function where its check passes, the step's reference where it does not yet.

Later cells of a notebook call ``fallback(step, fn)`` so that one stuck step never blocks the
rest of the notebook, and they say so.
"""

from __future__ import annotations

from typing import Callable

from .registry import get, status


def fallback(step: str, fn: Callable) -> Callable:
    """Return ``fn`` if it passes the check of ``step``, else the reference, with a note saying so.

    The latest check of this very object is reused; otherwise the check runs quietly now.
    """
    s = get(step)
    passed, points, max_points = status(s, fn)
    if passed:
        return fn
    print(
        f"Note: your {step} does not pass its check yet ({points:g}/{max_points:g} points), "
        f"so the cells below use {s.reference_name} instead. "
        "Once yours passes, rerun from here to use your own."
    )
    return s.reference
