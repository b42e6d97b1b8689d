"""Naming a known mistake from the learner's outputs: the one search every check shares."""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from torch import Tensor

from .compare import matches
from .errors import LearnerError
from .mistakes import Mistake
from .results import CheckResult


def matching_mistake(seen: Sequence[Tuple[Any, Any]], mistakes: Iterable[Mistake],
                     produce: Callable[[Mistake, Any], Any], *, atol: float = 1e-5,
                     rtol: float = 1e-4) -> Optional[Mistake]:
    """The first mistake (of those recognisable by their outputs) whose ``produce(mistake, case)``
    equals the learner's output on every case of ``seen`` — ``(case, learner output)`` pairs —
    where the learner returned a tensor; None if none does or no output is a tensor."""
    outputs: List[Tuple[Any, Tensor]] = [(case, y) for case, y in seen if isinstance(y, Tensor)]
    if not outputs:
        return None
    for m in mistakes:
        if not m.by_output:
            continue  # same outputs as a correct answer: another probe catches it
        try:
            if all(matches(y, produce(m, case), atol=atol, rtol=rtol) for case, y in outputs):
                return m
        except Exception:  # a mistake that cannot run on this case explains nothing
            continue
    return None


def diagnose_by_output(result: CheckResult, seen: Sequence[Tuple[Any, Any]], mistakes: Iterable[Mistake],
                       produce: Callable[[Mistake, Any], Any], *, atol: float = 1e-5, rtol: float = 1e-4,
                       prefix: str = "", what: str = "your function") -> bool:
    """Name the matching mistake in ``result`` (its advice); with no tensor output at all, name the
    learner's first error instead. True if something was named."""
    if not any(isinstance(y, Tensor) for _, y in seen):
        for _, y in seen:
            if isinstance(y, LearnerError):
                result.diagnose(f"{prefix}{what} {y}.")
                return True
        return False
    m = matching_mistake(seen, mistakes, produce, atol=atol, rtol=rtol)
    if m is not None:
        result.diagnose(prefix + m.advice)
        return True
    return False
