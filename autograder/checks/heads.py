"""Step checks for ``split_heads`` (notebook 02) and ``merge_heads`` (notebook 03).

Shapes: (B, T, D) <-> (B, H, T, Dh) with D = H·Dh; head h owns features [h·Dh, (h+1)·Dh).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import Tensor

import mhsa_lib

from ..core import (
    CheckResult,
    LearnerError,
    attempt,
    call,
    close,
    compare,
    describe_failures,
    distinct_sizes,
    draw_seed,
    find_shortcuts,
    finish,
    matches,
    randn,
)
from ..mistakes import heads as M

SPLIT_POINTS = 3.0
MERGE_POINTS = 2.0
HEADS_LIBRARY = ("split_heads", "merge_heads")

# Public cases: numbers that show where each feature lands. (B=1, T=2, D=6), H=3.
SPLIT_PUBLIC_X = torch.arange(12, dtype=torch.float32).reshape(1, 2, 6)
SPLIT_PUBLIC_H = 3
# (B=1, H=3, T=2, Dh=2) for merge_heads.
MERGE_PUBLIC_X = torch.arange(12, dtype=torch.float32).reshape(1, 3, 2, 2)


def _bthd(gen: torch.Generator) -> Tuple[int, int, int, int]:
    b, t, h, dh = distinct_sizes(gen, 4, 2, 7)
    return b, t, h, dh


def check_split_heads(fn: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Check ``split_heads(x, num_heads)``: (B, T, D) -> (B, H, T, D/H) (max 3)."""
    seed = draw_seed("split_heads", seed, hidden)
    result = CheckResult("split_heads", SPLIT_POINTS, seed=seed, hidden=hidden, fn_id=id(fn))
    gen = torch.Generator().manual_seed(seed)
    try:
        got = call(fn, SPLIT_PUBLIC_X.clone(), SPLIT_PUBLIC_H)
    except LearnerError as e:
        result.zero_reason = f"split_heads(x, 3) {e}"
        return finish(result, quiet)
    c_pub = compare(got, mhsa_lib.split_heads(SPLIT_PUBLIC_X, SPLIT_PUBLIC_H), what="split_heads(x, 3)")
    result.add("public case: x of shape (B=1, T=2, D=6) holding 0…11, H=3", 1.0, c_pub.ok,
               c_pub.detail + (f"\n      yours: {got.tolist()}" if not c_pub.ok and isinstance(got, Tensor) else ""))
    seen: List[Tuple[Tuple, Any]] = [((SPLIT_PUBLIC_X, SPLIT_PUBLIC_H), got)]

    fails = []
    for _ in range(8 if hidden else 4):
        b, t, h, dh = _bthd(gen)
        x = randn(gen, b, t, h * dh)
        y = attempt(fn, x.clone(), h)
        seen.append(((x, h), y))
        c = compare(y, mhsa_lib.split_heads(x, h), what="output")
        if not c.ok:
            fails.append(f"x (B={b}, T={t}, D={h * dh}), num_heads={h}: {c.detail}")
    result.add("random cases (B, T, H, Dh all different)", 1.0, not fails, describe_failures(fails, 1))

    b, t, h, dh = _bthd(gen)
    x = randn(gen, b, t, h * dh, dtype=torch.float64)
    y = attempt(fn, x.clone(), h)
    problems = []
    if isinstance(y, Tensor) and tuple(y.shape) == (b, h, t, dh):
        for head in range(h):
            if not close(y[:, head], x[..., head * dh : (head + 1) * dh], atol=0, rtol=0):
                problems.append(f"head {head} does not hold features [{head * dh}, {(head + 1) * dh}) of each position")
                break
        if not problems and not torch.equal(mhsa_lib.merge_heads(y), x):
            problems.append("merge_heads(split_heads(x)) is not x")
    else:
        problems.append(f"expected a (B, H, T, Dh) = {(b, h, t, dh)} tensor, got {_describe(y)}")
    result.add("invariant: head h holds features [h·Dh, (h+1)·Dh) of every position (float64, exact)",
               1.0, not problems, "; ".join(problems))

    if not result.passed:
        _diagnose(result, seen, M.SPLIT_HEADS_MISTAKES, _SPLIT_ADVICE, lambda m, args: m.fn(*args))
        if c_pub.ok and fails and close(attempt(fn, randn(gen, 1, 2, 6), 3), mhsa_lib.split_heads(SPLIT_PUBLIC_X, 3)):
            result.diagnose(HARD_CODED)
    shortcuts = find_shortcuts(fn, (randn(gen, 2, 3, 8), 4), (), forbid_library=HEADS_LIBRARY)
    if shortcuts:
        result.zero_reason = f"your split_heads calls {', '.join(shortcuts)}: write it with view/reshape and transpose"
    return finish(result, quiet)


def check_merge_heads(fn: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Check ``merge_heads(x)``: (B, H, T, Dh) -> (B, T, H·Dh), the inverse of split_heads (max 2)."""
    seed = draw_seed("merge_heads", seed, hidden)
    result = CheckResult("merge_heads", MERGE_POINTS, seed=seed, hidden=hidden, fn_id=id(fn))
    gen = torch.Generator().manual_seed(seed)
    try:
        got = call(fn, MERGE_PUBLIC_X.clone())
    except LearnerError as e:
        result.zero_reason = f"merge_heads(x) {e}"
        return finish(result, quiet)
    c_pub = compare(got, mhsa_lib.merge_heads(MERGE_PUBLIC_X), what="merge_heads(x)")
    result.add("public case: x of shape (B=1, H=3, T=2, Dh=2) holding 0…11", 1.0, c_pub.ok,
               c_pub.detail + (f"\n      yours: {got.tolist()}" if not c_pub.ok and isinstance(got, Tensor) else ""))
    seen: List[Tuple[Tuple, Any]] = [((MERGE_PUBLIC_X,), got)]

    fails = []
    for _ in range(8 if hidden else 4):
        b, t, h, dh = _bthd(gen)
        x = randn(gen, b, h, t, dh)
        y = attempt(fn, x.clone())
        seen.append(((x,), y))
        c = compare(y, mhsa_lib.merge_heads(x), what="output")
        if not c.ok:
            fails.append(f"x (B={b}, H={h}, T={t}, Dh={dh}): {c.detail}")
    result.add("random cases (B, H, T, Dh all different)", 0.5, not fails, describe_failures(fails, 1))

    b, t, h, dh = _bthd(gen)
    x = randn(gen, b, t, h * dh, dtype=torch.float64)
    y = attempt(fn, mhsa_lib.split_heads(x, h))
    ok = isinstance(y, Tensor) and tuple(y.shape) == tuple(x.shape) and torch.equal(y, x)
    result.add("invariant: merge_heads(split_heads(x)) == x (float64, exact)", 0.5, ok,
               "" if ok else f"got {_describe(y)} back, not x")

    if not result.passed:
        _diagnose(result, seen, M.MERGE_HEADS_MISTAKES, _MERGE_ADVICE, lambda m, args: m.fn(*args))
        if c_pub.ok and fails and close(attempt(fn, randn(gen, 1, 3, 2, 2)), mhsa_lib.merge_heads(MERGE_PUBLIC_X)):
            result.diagnose(HARD_CODED)
    shortcuts = find_shortcuts(fn, (randn(gen, 2, 4, 3, 5),), (), forbid_library=HEADS_LIBRARY)
    if shortcuts:
        result.zero_reason = f"your merge_heads calls {', '.join(shortcuts)}: write it with transpose and reshape"
    return finish(result, quiet)


def _describe(y: Any) -> str:
    if isinstance(y, Tensor):
        return f"a tensor of shape {tuple(y.shape)}"
    if isinstance(y, LearnerError):
        return f"an error ({y})"
    return type(y).__name__


def _diagnose(result: CheckResult, seen, mistakes, advice, run_mistake: Callable) -> None:
    """Name the first known mistake whose outputs equal the learner's on every case seen."""
    outputs = [(args, y) for args, y in seen if isinstance(y, Tensor)]
    if not outputs:
        for args, y in seen:
            if isinstance(y, LearnerError):
                result.diagnose(f"your function {y}.")
                return
        return
    for mistake in mistakes:
        try:
            if all(matches(y, run_mistake(mistake, args), atol=1e-4) for args, y in outputs):
                result.diagnose(advice[mistake.id])
                return
        except Exception:
            continue


HARD_CODED = (
    "your function returns the public case's answer whatever the input: it seems hard-coded. "
    "Compute it from the input."
)

_SPLIT_ADVICE = {
    "split-view-no-transpose": "you reshaped (B, T, D) straight to (B, H, T, Dh): the shape is "
    "right but each 'head' now mixes features of different positions. Reshape to (B, T, H, Dh) "
    "first, then swap the T and H axes: x.view(B, T, H, Dh).transpose(1, 2).",
    "split-no-transpose": "your output is (B, T, H, Dh): the heads must come before the positions, "
    "(B, H, T, Dh). Add .transpose(1, 2) after the reshape.",
    "split-interleaved": "head h takes every H-th feature; it must own the contiguous block "
    "[h·Dh, (h+1)·Dh). Reshape to (B, T, H, Dh) (H before Dh), not (B, T, Dh, H).",
}

_MERGE_ADVICE = {
    "merge-no-transpose": "you reshaped (B, H, T, Dh) to (B, T, D) without transposing back: the "
    "shape is right but positions and heads are mixed. Swap H and T first: "
    "x.transpose(1, 2).reshape(B, T, H * Dh) (reshape, or .contiguous().view, since the transpose "
    "makes the tensor non-contiguous).",
    "merge-interleaved": "your features come out ordered (Dh, H): head h's features must land in "
    "the contiguous block [h·Dh, (h+1)·Dh). Transpose to (B, T, H, Dh), then reshape.",
    "merge-sum": "you added the heads together: merging concatenates them, (B, T, H·Dh); the "
    "output projection W^O mixes them afterwards.",
}
