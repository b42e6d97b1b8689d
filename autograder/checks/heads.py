"""Step checks for ``split_heads`` (notebook 02) and ``merge_heads`` (notebook 03).

Shapes: (B, T, D) <-> (B, H, T, Dh) with D = H·Dh; head h owns features [h·Dh, (h+1)·Dh).
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import torch
from torch import Tensor

import mhsa_lib

from ..frame import (
    CheckResult,
    LearnerError,
    attempt,
    call,
    close,
    compare,
    describe_failures,
    distinct_sizes,
    find_shortcuts,
    randn,
)
from ..frame.registry import step
from ..mistakes import heads as M
from . import variants_modules as V

SPLIT_POINTS = 3.0
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
SPLIT_PICTURE = (
    'x = torch.arange(24.0).reshape(1, 4, 6)\n'
    'yours = fn(x, 2)[0].flatten(0, 1); ref = mhsa_lib.split_heads(x, 2)[0].flatten(0, 1)\n'
    "axes = ('row (head, position)', 'feature')"
)
MERGE_POINTS = 2.0
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
MERGE_PICTURE = (
    'x = torch.arange(24.0).reshape(1, 2, 4, 3)\n'
    'yours = fn(x)[0]; ref = mhsa_lib.merge_heads(x)[0]\n'
    "axes = ('position', 'feature')"
)
HEADS_LIBRARY = ("split_heads", "merge_heads")

# Public cases: numbers that show where each feature lands. (B=1, T=2, D=6), H=3.
SPLIT_PUBLIC_X = torch.arange(12, dtype=torch.float32).reshape(1, 2, 6)
SPLIT_PUBLIC_H = 3
# (B=1, H=3, T=2, Dh=2) for merge_heads.
MERGE_PUBLIC_X = torch.arange(12, dtype=torch.float32).reshape(1, 3, 2, 2)


def _bthd(gen: torch.Generator) -> Tuple[int, int, int, int]:
    b, t, h, dh = distinct_sizes(gen, 4, 2, 7)
    return b, t, h, dh


@step("split_heads", forbidden=((), HEADS_LIBRARY),
      points=SPLIT_POINTS, notebook="02_multiple_heads", home="heads", reference=mhsa_lib.split_heads, picture=SPLIT_PICTURE)
def check_split_heads(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``split_heads(x, num_heads)``: (B, T, D) -> (B, H, T, D/H) (max 3)."""
    try:
        got = call(fn, SPLIT_PUBLIC_X.clone(), SPLIT_PUBLIC_H)
    except LearnerError as e:
        result.zero_reason = f"split_heads(x, 3) {V.with_explanation(e, _split_sizes((SPLIT_PUBLIC_X, 3)))}"
        return
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
        problems.append(f"expected a (B, H, T, Dh) = {(b, h, t, dh)} tensor, got {describe_output(y)}")
    result.add("invariant: head h holds features [h·Dh, (h+1)·Dh) of every position (float64, exact)",
               1.0, not problems, "; ".join(problems))

    if not result.passed:
        _diagnose(result, seen, M.SPLIT_HEADS_MISTAKES, V.split_variants, _split_sizes)
        if c_pub.ok and fails and close(attempt(fn, randn(gen, 1, 2, 6), 3), mhsa_lib.split_heads(SPLIT_PUBLIC_X, 3)):
            result.diagnose(HARD_CODED)
    shortcuts = find_shortcuts(fn, (randn(gen, 2, 3, 8), 4), (), forbid_library=HEADS_LIBRARY)
    if shortcuts:
        result.zero_reason = f"your split_heads calls {', '.join(shortcuts)}: write it with view/reshape and transpose"
    return


@step("merge_heads", forbidden=((), HEADS_LIBRARY),
      points=MERGE_POINTS, notebook="03_concat_and_output_projection", home="heads", reference=mhsa_lib.merge_heads, picture=MERGE_PICTURE)
def check_merge_heads(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``merge_heads(x)``: (B, H, T, Dh) -> (B, T, H·Dh), the inverse of split_heads (max 2)."""
    try:
        got = call(fn, MERGE_PUBLIC_X.clone())
    except LearnerError as e:
        result.zero_reason = f"merge_heads(x) {V.with_explanation(e, _merge_sizes((MERGE_PUBLIC_X,)))}"
        return
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
               "" if ok else f"got {describe_output(y)} back, not x")

    if not result.passed:
        _diagnose(result, seen, M.MERGE_HEADS_MISTAKES, V.merge_variants, _merge_sizes)
        if c_pub.ok and fails and close(attempt(fn, randn(gen, 1, 3, 2, 2)), mhsa_lib.merge_heads(MERGE_PUBLIC_X)):
            result.diagnose(HARD_CODED)
    shortcuts = find_shortcuts(fn, (randn(gen, 2, 4, 3, 5),), (), forbid_library=HEADS_LIBRARY)
    if shortcuts:
        result.zero_reason = f"your merge_heads calls {', '.join(shortcuts)}: write it with transpose and reshape"
    return


def describe_output(y: Any) -> str:
    if isinstance(y, Tensor):
        return f"a tensor of shape {tuple(y.shape)}"
    if isinstance(y, LearnerError):
        return f"an error ({y})"
    return type(y).__name__


def _diagnose(result: CheckResult, seen, mistakes, variants: Callable, sizes_of: Callable) -> None:
    """Name the first known mistake, then the first generated variant, whose outputs equal the
    learner's on every case seen; or the learner's shape error in the course's letters."""
    def run(m, args):
        return m.fn(*args)

    V.diagnose_search(result, seen, mistakes, variants, run, run, sizes_of=sizes_of, atol=1e-4)


def _split_sizes(args) -> dict:
    x, h = args
    b, t, d = x.shape
    return {"B": b, "T": t, "D": d, "H": h, "Dh": d // h}


def _merge_sizes(args) -> dict:
    b, h, t, dh = args[0].shape
    return {"B": b, "H": h, "T": t, "Dh": dh, "D": h * dh}


def _repeat_sizes(args) -> dict:
    x, n_rep = args
    b, g, s, dh = x.shape
    return {"B": b, "G": g, "S": s, "Dh": dh, "n_rep": n_rep, "H": g * n_rep}


HARD_CODED = (
    "your function returns the public case's answer whatever the input: it seems hard-coded. "
    "Compute it from the input."
)




REPEAT_KV_POINTS = 2.0
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
REPEAT_PICTURE = (
    'x = torch.arange(24.0).reshape(1, 2, 4, 3)\n'
    'yours = fn(x, 2)[0].flatten(0, 1); ref = mhsa_lib.repeat_kv(x, 2)[0].flatten(0, 1)\n'
    "axes = ('row (head, position)', 'feature')"
)
REPEAT_KV_LIBRARY = ("repeat_kv", "attend_heads")


# --------------------------------------------------------------------------- repeat_kv

# Public case: (B=1, G=2, S=3, Dh=2) holding 0…11, n_rep=3: heads [0, 0, 0, 1, 1, 1].
REPEAT_PUBLIC_X = torch.arange(12, dtype=torch.float32).reshape(1, 2, 3, 2)
REPEAT_PUBLIC_N = 3


@step("repeat_kv", forbidden=((), REPEAT_KV_LIBRARY),
      points=REPEAT_KV_POINTS, notebook="05_kv_cache_and_head_sharing", home="heads", reference=mhsa_lib.repeat_kv, picture=REPEAT_PICTURE)
def check_repeat_kv(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``repeat_kv(x, n_rep)``: (B, G, S, Dh) -> (B, G·n_rep, S, Dh), head j = K/V head j // n_rep (max 2)."""
    try:
        got = call(fn, REPEAT_PUBLIC_X.clone(), REPEAT_PUBLIC_N)
    except LearnerError as e:
        result.zero_reason = f"repeat_kv(x, 3) {V.with_explanation(e, _repeat_sizes((REPEAT_PUBLIC_X, 3)))}"
        return
    c_pub = compare(got, mhsa_lib.repeat_kv(REPEAT_PUBLIC_X, REPEAT_PUBLIC_N), what="repeat_kv(x, 3)")
    result.add("public case: x (B=1, G=2, S=3, Dh=2) holding 0…11, n_rep=3 gives heads [0, 0, 0, 1, 1, 1]",
               0.5, c_pub.ok, c_pub.detail + _head_map(got, REPEAT_PUBLIC_X, REPEAT_PUBLIC_N))
    seen: List[Tuple[Tuple, Any]] = [((REPEAT_PUBLIC_X, REPEAT_PUBLIC_N), got)]

    fails = []
    for _ in range(6 if hidden else 3):
        b, g, s, dh = distinct_sizes(gen, 4, 2, 7)
        n_rep = int(torch.randint(2, 5, (1,), generator=gen))
        x = randn(gen, b, g, s, dh)
        y = attempt(fn, x.clone(), n_rep)
        seen.append(((x, n_rep), y))
        c = compare(y, mhsa_lib.repeat_kv(x, n_rep), what="output")
        if not c.ok:
            fails.append(f"x (B={b}, G={g}, S={s}, Dh={dh}), n_rep={n_rep}: {c.detail}")
    result.add("random cases (B, G, S, Dh all different, n_rep from 2 to 4)", 0.75, not fails,
               describe_failures(fails, 1))

    x = randn(gen, 2, 3, 4, 5)
    y = attempt(fn, x.clone(), 1)
    ok = isinstance(y, Tensor) and tuple(y.shape) == tuple(x.shape) and torch.equal(y, x)
    result.add("n_rep=1 returns x unchanged", 0.25, ok,
               "" if ok else f"got {y if isinstance(y, LearnerError) else describe_output(y)}, expected x itself")

    b, g, s, dh = distinct_sizes(gen, 4, 2, 7)
    x = randn(gen, b, g, s, dh, dtype=torch.float64)
    y = attempt(fn, x.clone(), 3)
    problems = []
    if isinstance(y, Tensor) and tuple(y.shape) == (b, 3 * g, s, dh):
        for j in range(3 * g):
            if not torch.equal(y[:, j], x[:, j // 3]):
                problems.append(f"query head {j} should hold K/V head {j} // 3 = {j // 3}"
                                + _which_head(y[:, j], x))
                break
    else:
        problems.append(f"expected (B, G·n_rep, S, Dh) = {(b, 3 * g, s, dh)}, got {describe_output(y)}")
    result.add("invariant: query head j holds K/V head j // n_rep exactly (float64, n_rep=3)", 0.5,
               not problems, "; ".join(problems))

    if not result.passed:
        _diagnose(result, seen, M.REPEAT_KV_MISTAKES, V.repeat_variants, _repeat_sizes)
        if c_pub.ok and fails and close(attempt(fn, randn(gen, 1, 2, 3, 2), 3), got):
            result.diagnose(HARD_CODED)
    shortcuts = find_shortcuts(fn, (randn(gen, 2, 3, 4, 5), 2), (), forbid_library=REPEAT_KV_LIBRARY)
    if shortcuts:
        result.zero_reason = (f"your repeat_kv calls {', '.join(shortcuts)}: write it with "
                              "repeat_interleave, or expand and reshape")
    return


def _which_head(head: Tensor, x: Tensor) -> str:
    for i in range(x.shape[1]):
        if torch.equal(head, x[:, i]):
            return f", yours holds K/V head {i}"
    return ", yours holds none of them"


def _head_map(y: Any, x: Tensor, n_rep: int) -> str:
    """For the public case: which K/V head each of the learner's query heads holds."""
    if not isinstance(y, Tensor) or y.ndim != 4 or tuple(y.shape[2:]) != tuple(x.shape[2:]):
        return ""
    heads = []
    for j in range(y.shape[1]):
        found = [i for i in range(x.shape[1]) if torch.equal(y[:, j].float(), x[:, i])]
        heads.append(str(found[0]) if found else "?")
    expected = [str(j // n_rep) for j in range(x.shape[1] * n_rep)]
    return "" if heads == expected else f"\n      your heads hold K/V heads [{', '.join(heads)}], expected [{', '.join(expected)}]"


