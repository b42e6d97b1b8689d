"""Naming a known mistake from the learner's outputs: the one search every check shares."""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .compare import matches
from .errors import LearnerError
from .mistakes import Mistake
from .results import CheckResult

#: ``same(learner output, mistake output) -> bool``
Same = Callable[[Any, Any], bool]


def is_tensor(y: Any) -> bool:
    return isinstance(y, Tensor)


def anything(y: Any) -> bool:
    return True


def same_tensor(y: Any, out: Any, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Values equal within tolerance, NaN for NaN and inf for inf (shapes must agree)."""
    return matches(y, out, atol=atol, rtol=rtol)


def same_pair(y: Any, out: Any, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """A result of two tensors (``(out, weights)``) equal to a mistake's tuple of two, each within tolerance."""
    return (isinstance(y, (tuple, list)) and len(y) == 2 and isinstance(out, tuple)
            and same_tensor(y[0], out[0], atol, rtol) and same_tensor(y[1], out[1], atol, rtol))


def same_mask(y: Any, out: Any) -> bool:
    """A mask equal to a mistake's: same dtype, same shape, same entries (floats within isclose)."""
    if not isinstance(y, Tensor) or not isinstance(out, Tensor):
        return False
    if y.dtype != out.dtype or tuple(y.shape) != tuple(out.shape):
        return False
    a, b = y.detach().cpu(), out.detach().cpu()
    if a.dtype.is_floating_point:
        return bool(torch.isclose(a.double(), b.double(), equal_nan=True).all())
    return bool(torch.equal(a, b))


def matching_mistake(seen: Sequence[Tuple[Any, Any]], mistakes: Iterable[Mistake],
                     produce: Callable[[Mistake, Any], Any], *, atol: float = 1e-5, rtol: float = 1e-4,
                     same: Optional[Same] = None, usable: Callable[[Any], bool] = is_tensor,
                     cheapest_first: bool = False) -> Optional[Mistake]:
    """The first mistake (of those recognisable by their outputs) whose ``produce(mistake, case)``
    is ``same`` as the learner's output on every case of ``seen`` — ``(case, learner output)``
    pairs — whose output is ``usable``; None if none does or no output is usable.

    ``same`` defaults to :func:`same_tensor` with ``atol``/``rtol`` (a single tensor); pass
    :func:`same_pair` for a pair of tensors, :func:`same_mask` for a bool mask, or any
    ``same(yours, mistake's)``. ``usable`` defaults to tensors (a learner's error or other object
    is left out); :func:`anything` keeps every output, so that one the comparator rejects rules a
    mistake out. The cases are tried in ``seen``'s order (put the most telling first: most
    mistakes fail on it and cost one run), or smallest output first with ``cheapest_first``; a
    mistake stops at its first difference. A mistake that raises on a case explains nothing."""
    if not callable(produce):
        raise TypeError(f"produce must be callable (mistake, case) -> output, got {type(produce).__name__}")
    if same is None:
        def same(y: Any, out: Any) -> bool:
            return same_tensor(y, out, atol, rtol)
    outputs: List[Tuple[Any, Any]] = [(case, y) for case, y in seen if usable(y)]
    if cheapest_first:
        outputs.sort(key=lambda cy: cy[1].numel() if isinstance(cy[1], Tensor) else 0)
    if not outputs:
        return None
    for m in mistakes:
        if not m.by_output:
            continue  # same outputs as a correct answer: another probe catches it
        try:
            if all(same(y, produce(m, case)) for case, y in outputs):
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
