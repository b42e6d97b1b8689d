"""Comparing a learner's tensors with the expected ones, saying why they differ."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .calls import short_repr
from .observe import Opaque, kind_of


@dataclass
class Comparison:
    ok: bool
    detail: str


def compare(
    actual: Any,
    expected: Tensor,
    *,
    what: str = "output",
    atol: float = 1e-5,
    rtol: float = 1e-4,
    dtype: Optional[torch.dtype] = None,
) -> Comparison:
    """Is ``actual`` a tensor of ``expected``'s shape (and dtype) with close values? Says why not."""
    if not isinstance(actual, Tensor):
        if isinstance(actual, Opaque):  # not plain data: the same words in a probe and in a judge
            return Comparison(False, f"{what} is a {kind_of(actual)}, expected a tensor")
        return Comparison(False, f"{what} is {type(actual).__name__} {short_repr(actual)}, expected a tensor")
    if tuple(actual.shape) != tuple(expected.shape):
        return Comparison(False, f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if dtype is not None and actual.dtype != dtype:
        return Comparison(False, f"{what} has dtype {actual.dtype}, expected {dtype} (the input's dtype)")
    if not actual.dtype.is_floating_point and expected.dtype.is_floating_point:
        return Comparison(False, f"{what} has dtype {actual.dtype}, expected a floating-point tensor")
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    bad = ~torch.isfinite(a) & torch.isfinite(e)
    if bool(bad.any()):
        n_nan = int(torch.isnan(a).sum())
        n_inf = int(torch.isinf(a).sum())
        return Comparison(False, f"{what} has {n_nan} NaN and {n_inf} inf values where the expected values are finite")
    if a.numel() == 0 or torch.allclose(a, e, atol=atol, rtol=rtol, equal_nan=True):
        return Comparison(True, "")
    err = (a - e).abs()
    idx = _unravel(int(torch.argmax(err.nan_to_num(0))), err.shape)
    return Comparison(
        False,
        f"{what} values differ: largest difference {float(err.nan_to_num(0).max()):.3g} at index {idx} "
        f"(yours {float(a[idx]):.6g}, expected {float(e[idx]):.6g})",
    )


def _unravel(flat: int, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The index in ``shape`` of the ``flat``-th element (``torch.unravel_index`` needs torch 2.2)."""
    idx = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        idx.append(i)
    return tuple(reversed(idx))


def close(actual: Any, expected: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Quiet yes/no version of :func:`compare`, for matching known mistakes."""
    return compare(actual, expected, atol=atol, rtol=rtol).ok


def matches(actual: Any, candidate: Any, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Does ``actual`` equal a known mistake's output, NaN for NaN and inf for inf?"""
    if not isinstance(actual, Tensor) or not isinstance(candidate, Tensor):
        return False
    if tuple(actual.shape) != tuple(candidate.shape) or not actual.dtype.is_floating_point:
        return False
    a = actual.detach().to("cpu", torch.float64)
    c = candidate.detach().to("cpu", torch.float64)
    return bool(torch.isclose(a, c, atol=atol, rtol=rtol, equal_nan=True).all())


def describe_failures(failures: List[str], limit: int = 2) -> str:
    shown = "; ".join(failures[:limit])
    more = len(failures) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


def format_shape(shape: Sequence[int], letters: str) -> str:
    return "(" + ", ".join(f"{l}={n}" for l, n in zip(letters.split(), shape)) + ")"


def isclose_scalar(a: float, b: float, rel: float = 0.03) -> bool:
    return math.isfinite(a) and abs(a - b) <= rel * abs(b)
