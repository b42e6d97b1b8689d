"""Step checks for notebook 01: ``softmax``, ``causal_mask`` and ``scaled_dot_product_attention``.

Each check runs a public case (fixed, readable), random cases drawn at run time (all dimensions
distinct, so a swapped axis shows), invariant probes, and a comparison with ``mhsa_lib``
computed in float64. Sub-parts earn partial credit. When the learner's output matches a known
mistake (:mod:`autograder.mistakes.attention`), the report names it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import Tensor

import mhsa_lib

from .. import variants_attention as V
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
from ..frame.diagnosis import anything, matching_mistake, same_mask, same_pair, same_tensor
from ..frame.registry import step
from ..mistakes import attention as M

# --------------------------------------------------------------------------- softmax

SOFTMAX_POINTS = 3.0
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
SOFTMAX_PICTURE = (
    'x = torch.randn(5, 6, generator=g) * 3\n'
    'yours = fn(x, dim=-1); ref = torch.softmax(x, dim=-1)'
)
SOFTMAX_FORBIDDEN = ("softmax", "_softmax", "log_softmax", "special_softmax", "softmin")
SOFTMAX_PUBLIC_X = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], [-1.0, 0.0, 5.0, 1.0]])
# Slices whose entries spread over hundreds: any shift but the maximum leaves exponents above 88.
SOFTMAX_SPREAD_X = torch.tensor([[-300.0, 0.0, 250.0, 10.0, -40.0, 120.0, 5.0],
                                 [400.0, -150.0, 3.0, 399.0, 60.0, -500.0, 0.5],
                                 [7.0, -9.0, 180.0, -220.0, 95.0, 2.0, -1.0]])


@step("softmax", forbidden=(SOFTMAX_FORBIDDEN, True),
      points=SOFTMAX_POINTS, notebook="01_scaled_dot_product_attention", home="attention", reference=mhsa_lib.softmax, picture=SOFTMAX_PICTURE)
def check_softmax(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``softmax(x, dim=-1)``; print the report, return the points (max 3)."""
    x_pub = SOFTMAX_PUBLIC_X
    expected_pub = mhsa_lib.softmax(x_pub.double(), dim=-1)
    # Every (input, dim, tolerance) the learner's function was called on, with its output: a
    # diagnosis must explain them all. The most telling cases go first (see _diagnose_softmax).
    calls: List[Tuple[Tuple[Tensor, int, float], Any]] = []

    # 1. Public case: the one in the notebook.
    try:
        y_pub = call(fn, x_pub.clone())
    except LearnerError as e:
        result.zero_reason = f"softmax(x) {e}"
        _explain_softmax_error(result, e, x_pub, -1)
        return
    calls.append(((x_pub, -1, 1e-5), y_pub))
    c_pub = compare(y_pub, expected_pub, what="softmax(x)")
    result.add("public case: softmax of a (3, 4) tensor over the last axis", 1.0, c_pub.ok, c_pub.detail)

    # 2. Random shapes and axes.
    n_cases = 10 if hidden else 4
    failures: List[str] = []
    for _ in range(n_cases):
        ndim = int(torch.randint(2, 5, (1,), generator=gen))
        shape = distinct_sizes(gen, ndim)
        dim = int(torch.randint(-ndim, ndim, (1,), generator=gen))
        x = randn(gen, *shape, scale=2.0)
        y = attempt(fn, x.clone(), dim=dim)
        calls.append(((x, dim, 1e-5), y))
        c = compare(y, mhsa_lib.softmax(x.double(), dim=dim), what="output")
        if not c.ok:
            failures.append(f"shape {tuple(shape)}, dim={dim}: {c.detail}")
    result.add(f"{n_cases} random cases (shapes with distinct sizes, every axis)", 1.0, not failures,
               describe_failures(failures))

    # 3. Large logits: offsets of ±1e4 per slice, and slices far apart from each other, along the
    # last axis and along the first; and slices whose entries spread over hundreds (exp of anything
    # above about 88 overflows float32, so only the maximum may be subtracted).
    offsets = torch.tensor([[1e4], [-1e4], [50.0], [3e3]])
    big_fails = []
    for x_big, dim in ((randn(gen, 4, 7, scale=3.0) + offsets, -1), (randn(gen, 4, 7, scale=3.0).T + offsets.T, 0),
                       (SOFTMAX_SPREAD_X, -1)):
        y_big = attempt(fn, x_big.clone(), dim=dim)
        calls.append(((x_big, dim, 2e-3), y_big))
        # float32 holds 1e4 to about 1e-3, so any float32 method carries that much error here.
        c_big = compare(y_big, mhsa_lib.softmax(x_big.double(), dim=dim), what="output", atol=2e-3, rtol=2e-3)
        if not c_big.ok:
            big_fails.append(f"dim={dim}: {c_big.detail}")
    result.add("stable for large logits (slices around +1e4 and -1e4, along the last and the first axis, and "
               "slices spread over hundreds)", 0.5,
               not big_fails, describe_failures(big_fails, 1))

    # 4. float64 in, float64 out, to float64 precision.
    x64 = randn(gen, *distinct_sizes(gen, 3), dtype=torch.float64)
    y64 = attempt(fn, x64.clone(), dim=1)
    calls.append(((x64, 1, 1e-5), y64))
    c64 = compare(y64, mhsa_lib.softmax(x64, dim=1), what="output", dtype=torch.float64, atol=1e-12, rtol=1e-10)
    result.add("float64 input keeps float64 precision", 0.25, c64.ok, c64.detail)

    # 5. A fully masked slice: scores of blocked keys are -inf, and one slice is -inf throughout.
    x_inf = _masked_scores(gen)
    y_inf = attempt(fn, x_inf.clone(), dim=1)
    calls.insert(0, ((x_inf, 1, 1e-5), y_inf))  # the most telling case: first in the search
    c_inf = compare(y_inf, mhsa_lib.softmax(x_inf.double(), dim=1), what="output")
    result.add("-inf entries get 0, and a slice that is all -inf (a query with no allowed key) gives zeros, no NaN",
               0.5, c_inf.ok, c_inf.detail)

    # 6. Invariants: non-negative, sums to 1 along dim, unchanged by adding a constant.
    x_inv = randn(gen, *distinct_sizes(gen, 3))
    inv = _softmax_invariants(fn, x_inv, dim=1, calls=calls)
    result.add("invariants: entries ≥ 0, each slice along dim sums to 1, softmax(x + c) = softmax(x)",
               0.25, not inv, "; ".join(inv))

    # Diagnosis.
    if not result.passed:
        _diagnose_softmax(fn, result, calls, c_pub.ok, gen)
    shortcuts = find_shortcuts(fn, (randn(gen, 3, 5),), SOFTMAX_FORBIDDEN)
    if shortcuts:
        result.zero_reason = (
            f"your softmax calls {', '.join(shortcuts)}: this step asks you to write softmax "
            "yourself from exp, max and sum (torch.softmax is fine in later steps)"
        )
    return


def _masked_scores(gen: torch.Generator) -> Tensor:
    """(A, N, C) scores for softmax over dim=1 with -inf entries (blocked keys); the slice [0, :, 0]
    is all -inf, every other slice keeps at least one finite entry."""
    a, n, c = distinct_sizes(gen, 3, 2, 7)
    x = randn(gen, a, n, c, scale=2.0)
    blocked = torch.rand(a, n, c, generator=gen) < 0.4
    blocked[:, 0, :] = False
    blocked[0, :, 0] = True
    return x.masked_fill(blocked, float("-inf"))


def _softmax_invariants(fn: Callable, x: Tensor, dim: int, calls: list) -> List[str]:
    y = attempt(fn, x.clone(), dim=dim)
    calls.append(((x, dim, 1e-5), y))
    if not isinstance(y, Tensor) or y.shape != x.shape:
        return ["output is not a tensor of the input's shape"]
    problems = []
    y = y.detach().double()
    if not bool(torch.isfinite(y).all()):
        return ["output has NaN or inf"]
    if bool((y < 0).any()):
        problems.append("some entries are negative")
    sums = y.sum(dim=dim)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        problems.append(f"slices along dim={dim} sum to values like {float(sums.flatten()[0]):.4g}, not 1")
    x_shift = x.clone() + 7.0
    y_shift = attempt(fn, x_shift.clone(), dim=dim)
    calls.append(((x_shift, dim, 1e-5), y_shift))
    if not close(y_shift, y, atol=1e-5):
        problems.append("adding a constant to x changes the output")
    return problems


def _explain_softmax_error(result: CheckResult, error: Any, x: Tensor, dim: int, calls=()) -> bool:
    """Name what a shape error of the learner's softmax means (consistent with its other
    ``calls``); True if it did."""
    letters = V.Letters({})
    others = [({"x": xx, "dim": d}, str(y) if isinstance(y, LearnerError) else None)
              for (xx, d, _), y in calls if xx is not x]
    text = V.explain_error(str(error), {"x": x, "dim": dim}, letters, _SOFTMAX_SHAPES, V.SOFTMAX_SHAPE_TOKENS,
                           V.softmax_context(x, dim, letters), others)
    if text is None:
        return False
    result.diagnose(f"on softmax(x, dim={dim}) {text}")
    return True


def _softmax_produce(m, case):
    x, dim, tol = case
    return m.fn(x.clone(), dim=dim), tol


def _softmax_same(y, produced) -> bool:
    out, tol = produced
    return same_tensor(y, out, atol=tol, rtol=max(tol, 1e-4))


def _diagnose_softmax(fn, result: CheckResult, calls, public_ok: bool, gen) -> None:
    # A call that raised: what the error means, from the shapes of its input.
    for (x, dim, _), y in calls:
        if isinstance(y, LearnerError):
            if _explain_softmax_error(result, y, x, dim, calls):
                return
            result.diagnose(f"on an input of shape {tuple(x.shape)} with dim={dim} your softmax {y}.")
            return
    seen = [(case, y) for case, y in calls if isinstance(y, Tensor)]
    bad = [(x, dim) for (x, dim, tol), y in seen
           if not close(y, mhsa_lib.softmax(x.double(), dim=dim), atol=tol, rtol=max(tol, 1e-4))]
    dim = next((d for x, d in bad if d != -1), bad[0][1] if bad else -1)
    # The known mistakes, then every structural variant, each reproducing all the outputs.
    found = matching_mistake(seen, (m for m in M.SOFTMAX_MISTAKES if m.id in _SOFTMAX_BY_OUTPUT), _softmax_produce,
                             same=_softmax_same, usable=anything)
    found = found or matching_mistake(seen, V.softmax_variants(), _softmax_produce, same=_softmax_same,
                                      usable=anything)
    if found is not None:
        result.diagnose(found.advice.format(dim=dim) + ("" if found.advice.endswith(".") else "."))
        return
    if public_ok and bad and V.hard_coded(fn, gen, (SOFTMAX_PUBLIC_X,), lambda x: mhsa_lib.softmax(x.double(), -1),
                                          lambda y, e, tol: close(y, e, atol=tol, rtol=tol)):
        result.diagnose(V.HARD_CODED)
        return
    # What is true of the outputs, said as what it is.
    for (x, d, _), y in seen:
        if y.shape != x.shape:
            result.diagnose(f"your output has shape {tuple(y.shape)} for an input of shape {tuple(x.shape)}: softmax "
                            "keeps the shape of its input.")
            return
    # Which axis the slices sum to 1 over comes first: a wrong axis is the cause, NaN may only follow from it.
    for (x, d, _), y in seen:
        yd = y.detach().double()
        if y.shape != x.shape or not bool(torch.isfinite(yd).all()):
            continue
        if not bool(torch.isinf(x).any()) and abs(float(yd.sum()) - 1.0) < 1e-4 and yd.numel() > x.shape[d % x.ndim]:
            result.diagnose(f"your whole output sums to 1, all slices together; each slice along dim={d} must sum "
                            "to 1 on its own.")
            return
        sums = [yd.sum(a) for a in range(x.ndim)]
        axes = [a for a, t in enumerate(sums) if torch.allclose(t, torch.ones_like(t), atol=1e-4)]
        if axes and (d % x.ndim) not in axes:
            result.diagnose(f"your output sums to 1 over axis {axes[0]}, but softmax(x, dim={d}) must sum to 1 "
                            f"along dim={d}.")
            return
    for (x, d, _), y in seen:
        yd = y.detach().double()
        if y.shape != x.shape:
            continue
        if bool(torch.isinf(x).any()) and not bool(torch.isfinite(yd).all()):
            result.diagnose("your output has NaN where a slice of the input is all -inf; the notebook asks for "
                            "zeros there (where the maximum is not finite subtract 0, where the sum is 0 divide by 1).")
            return
        if float(x.abs().max()) > 1e3 and not bool(torch.isfinite(yd).all()):
            result.diagnose("your output has NaN or inf for large logits (slices around ±1e4): exp overflows or "
                            "underflows there unless each slice is shifted by its own maximum along dim.")
            return


#: The hand-written softmax mistakes the output search tries first (the variants follow).
_SOFTMAX_BY_OUTPUT = ("softmax-ignores-dim", "softmax-wrong-axis", "softmax-global-sum", "softmax-no-max",
                      "softmax-global-max", "softmax-shift-by-min")
_SOFTMAX_SHAPES = V.softmax_shape_candidates()


# --------------------------------------------------------------------------- causal mask

CAUSAL_MASK_POINTS = 2.0
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
CAUSAL_MASK_PICTURE = (
    'yours = fn(5, 7); ref = mhsa_lib.causal_mask(5, 7)'
)


@step("causal_mask", forbidden=((), True),
      points=CAUSAL_MASK_POINTS, notebook="01_scaled_dot_product_attention", home="attention", reference=mhsa_lib.causal_mask, picture=CAUSAL_MASK_PICTURE)
def check_causal_mask(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``causal_mask(seq_len_q, seq_len_k=None)``; print the report, return the points (max 2)."""

    calls: List[Tuple[tuple, Any]] = []  # every (arguments, output), for the diagnosis
    try:
        m_pub = call(fn, 4, 4)
    except LearnerError as e:
        result.zero_reason = f"causal_mask(4, 4) {e}"
        return
    calls.append(((4, 4), m_pub))
    ok, detail = _mask_matches(m_pub, mhsa_lib.causal_mask(4, 4))
    result.add("public case: causal_mask(4, 4) is the lower triangle, diagonal included", 1.0, ok, detail)

    # S > T: decoding with a cache; the last query sees every key.
    shapes = [(2, 5), (1, 6)] + ([(3, 8), (4, 9)] if hidden else [])
    fails = []
    for t, s in shapes:
        m = attempt(fn, t, s)
        calls.insert(len(calls) - 1, ((t, s), m))  # (S > T tells more mistakes apart: before the public case)
        ok, detail = _mask_matches(m, mhsa_lib.causal_mask(t, s))
        if not ok:
            fails.append(f"causal_mask({t}, {s}): {detail}")
    result.add("S > T (decoding with a cache): aligned to the lower right", 0.5, not fails, describe_failures(fails))

    fails = []
    for _ in range(6 if hidden else 3):
        t, s = sorted(distinct_sizes(gen, 2, 1, 12))
        for args in ((t, s), (s,)):
            m = attempt(fn, *args)
            calls.append((args, m))
            ok, detail = _mask_matches(m, mhsa_lib.causal_mask(*args))
            if not ok:
                fails.append(f"causal_mask{args}: {detail}")
    result.add("random sizes, and seq_len_k defaulting to seq_len_q", 0.25, not fails, describe_failures(fails))

    is_bool = isinstance(m_pub, Tensor) and m_pub.dtype == torch.bool
    result.add("dtype is torch.bool (True = may attend)", 0.25, is_bool,
               "" if is_bool else f"got {getattr(m_pub, 'dtype', type(m_pub).__name__)}")

    if not result.passed:
        _diagnose_causal(result, calls)
    shortcuts = find_shortcuts(fn, (3, 5), ())
    if shortcuts:
        result.zero_reason = f"your causal_mask calls {', '.join(shortcuts)}: build the mask yourself (torch.tril or arange comparisons)"
    return


def _as_bool_mask(m: Any) -> Optional[Tensor]:
    """Read a learner's mask as 'True = may attend', whatever its dtype, for fair partial credit."""
    if not isinstance(m, Tensor):
        return None
    if m.dtype == torch.bool:
        return m
    if m.dtype.is_floating_point and bool(torch.isinf(m).any()):
        return m == 0  # additive mask: 0 = allowed, -inf = blocked
    return m != 0


def _mask_matches(m: Any, expected: Tensor) -> Tuple[bool, str]:
    if isinstance(m, LearnerError):
        return False, str(m)
    b = _as_bool_mask(m)
    if b is None:
        return False, f"returned {type(m).__name__}, expected a tensor"
    if tuple(b.shape) != tuple(expected.shape):
        return False, f"shape {tuple(b.shape)}, expected (T, S) = {tuple(expected.shape)}"
    if not torch.equal(b.cpu(), expected):
        return False, f"got\n{_grid(b)}\n      expected\n{_grid(expected)}"
    return True, ""


def _grid(m: Tensor) -> str:
    return "\n".join("        " + " ".join("1" if v else "." for v in row) for row in m.tolist())


def _diagnose_causal(result: CheckResult, calls) -> None:
    raised = [(args, m) for args, m in calls if isinstance(m, LearnerError)]
    if raised and all(len(args) == 1 for args, _ in raised) and any(len(args) == 2 for args, _ in calls) and all(
            not isinstance(m, LearnerError) for args, m in calls if len(args) == 2):
        args, error = raised[0]
        result.diagnose(f"your function fails only when seq_len_k is left out (causal_mask{args} {error}): it "
                        "defaults to seq_len_q, `if seq_len_k is None: seq_len_k = seq_len_q`.")
    elif raised:
        args, error = raised[0]
        result.diagnose(f"causal_mask{args} {error}.")
    seen = [(args, m) for args, m in calls if isinstance(m, Tensor)]
    if not seen:
        return

    def produce(mistake, args):
        return mistake.fn(*args)

    found = matching_mistake(seen, (M.CATALOGUE[i] for i in _CAUSAL_BY_OUTPUT), produce, same=same_mask,
                             usable=anything)
    found = found or matching_mistake(seen, V.causal_variants(), produce, same=same_mask, usable=anything)
    if found is not None:
        result.diagnose(found.advice + ("" if found.advice.endswith(".") else "."))
        return
    public = mhsa_lib.causal_mask(4, 4)
    m0 = next((m for a, m in seen if a == (4, 4)), None)
    if m0 is not None and _mask_matches(m0, public)[0]:
        if any(a != (4, 4) and _mask_matches(m, public)[0] for a, m in seen):
            result.diagnose("your function returns the public case's mask, causal_mask(4, 4), for other sizes too: "
                            "the answer seems hard-coded. Build it from seq_len_q and seq_len_k.")
            return
    # What is true of the outputs, said as what it is.
    raw = seen[0][1]
    if raw.dtype != torch.bool:
        result.diagnose(f"your mask has dtype {raw.dtype}; this course's masks are bool (True = may attend).")
    for args, m in seen:
        t = args[0]
        s = args[-1]
        if tuple(m.shape) != (t, s):
            result.diagnose(f"causal_mask{args} has shape {tuple(m.shape)}: a mask is (T, S) = ({t}, {s}).")
            return


# --------------------------------------------------------------------------- attention

ATTENTION_POINTS = 5.0
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
ATTENTION_PICTURE = (
    'q = torch.randn(5, 4, generator=g); k = torch.randn(6, 4, generator=g); v = torch.randn(6, 3, generator=g)\n'
    'yours = fn(q, k, v)[1]; ref = mhsa_lib.scaled_dot_product_attention(q, k, v)[1]'
)
ATTENTION_FORBIDDEN = (
    "scaled_dot_product_attention",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "multi_head_attention_forward",
)

# mhsa_lib's attention and everything built on it; its softmax and masks (earlier steps) are fine.
ATTENTION_LIBRARY = ("scaled_dot_product_attention", "_reference_attention", "_fast_attention",
                     "attend_heads", "MultiHeadAttention", "FusedMultiHeadAttention",
                     "GroupedQueryAttention", "TransformerBlock")

# The public case: B=1, T=2 queries, S=3 keys, Dk=4, Dv=2.
ATTN_PUBLIC_Q = torch.tensor([[[1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, -1.0]]])
ATTN_PUBLIC_K = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0]]])
ATTN_PUBLIC_V = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 3.0]]])


@step("scaled_dot_product_attention", forbidden=(ATTENTION_FORBIDDEN, ATTENTION_LIBRARY),
      points=ATTENTION_POINTS, notebook="01_scaled_dot_product_attention", home="attention", reference=mhsa_lib.scaled_dot_product_attention, picture=ATTENTION_PICTURE, isolate=("softmax",))
def check_scaled_dot_product_attention(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``scaled_dot_product_attention(q, k, v, mask=None) -> (out, weights)`` (max 5)."""

    q, k, v = ATTN_PUBLIC_Q, ATTN_PUBLIC_K, ATTN_PUBLIC_V
    ref_pub = _reference(q, k, v, None)
    # Every ((q, k, v, mask), output): a diagnosis must explain them all (the most telling first).
    calls: List[Tuple[tuple, Any]] = []
    try:
        got_pub = call(fn, q.clone(), k.clone(), v.clone())
    except LearnerError as e:
        result.zero_reason = f"scaled_dot_product_attention(q, k, v) {e}"
        # Its sizes repeat (T = Dv): say what the error means on a case whose sizes all differ.
        q3, k3, v3 = _random_qkv(gen, rank=3)
        again = attempt(fn, q3.clone(), k3.clone(), v3.clone())
        tried = [((q, k, v, None), e), ((q3, k3, v3, None), again)]
        if not (isinstance(again, LearnerError) and _explain_attention_error(result, again, tried[1][0], tried)):
            _explain_attention_error(result, e, tried[0][0], tried)
        return
    calls.append(((q, k, v, None), got_pub))
    ok, detail = _pair_matches(got_pub, ref_pub)
    result.add("public case: T=2 queries, S=3 keys, d_k=4, no mask", 1.0, ok, detail)
    public_ok = ok

    # Random cases without a mask, of rank 2, 3 and 4.
    n = 6 if hidden else 3
    shape_fails, value_fails = [], []
    for i in range(n):
        q, k, v = _random_qkv(gen, rank=4 if i % 3 == 0 else 3 if i % 3 == 1 else 2)
        got = attempt(fn, q.clone(), k.clone(), v.clone())
        calls.insert(i, ((q, k, v, None), got))
        ref = _reference(q, k, v, None)
        sok, sdetail = _pair_shapes(got, ref)
        if not sok:
            shape_fails.append(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: {sdetail}")
            continue
        ok, detail = _pair_matches(got, ref)
        if not ok:
            value_fails.append(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: {detail}")
    result.add("returns (out, weights) with shapes (..., T, Dv) and (..., T, S)", 0.5, not shape_fails,
               describe_failures(shape_fails, 1))
    result.add(f"{n} random cases without a mask (T, S, d_k, Dv all different; 2-D to 4-D)", 1.0,
               not shape_fails and not value_fails, describe_failures(value_fails or shape_fails, 1))

    # Masks: causal with S > T (lower right), padding (B, 1, S), and random patterns.
    mask_fails = []
    kinds = ("causal", "padding", "random") + (("causal", "padding", "random") if hidden else ())
    for i, kind in enumerate(kinds):
        q, k, v = _random_qkv(gen, rank=3 + i % 2, s_greater=True)
        mask = _random_mask(gen, kind, q, k, allow_empty=False)
        got = attempt(fn, q.clone(), k.clone(), v.clone(), mask.clone())
        calls.insert(i, ((q, k, v, mask), got))
        ok, detail = _pair_matches(got, _reference(q, k, v, mask))
        if not ok:
            mask_fails.append(f"{kind} mask {tuple(mask.shape)}: {detail}")
    result.add("masks: causal with S > T, padding (B, 1, S), random patterns", 1.0, not mask_fails,
               describe_failures(mask_fails, 1))

    # A query with no allowed key gives output 0 and weights 0, never NaN.
    q, k, v = _random_qkv(gen, rank=3)
    empty_mask = _random_mask(gen, "random", q, k, allow_empty=True)
    got_empty = attempt(fn, q.clone(), k.clone(), v.clone(), empty_mask.clone())
    calls.insert(0, ((q, k, v, empty_mask), got_empty))  # the most telling case: first in the search
    ok, detail = _pair_matches(got_empty, _reference(q, k, v, empty_mask))
    result.add("a fully masked row gives output 0 and weights 0 (no NaN)", 0.5, ok, detail)

    # Invariants: rows sum to 1 over the keys; masked keys cannot change the output.
    inv = _attention_invariants(fn, gen, calls)
    result.add("invariants: weights ≥ 0 and rows sum to 1 over the keys; out = weights @ v; "
               "changing a masked key or value changes nothing", 0.5, not inv, "; ".join(inv))

    q, k, v = (x.double() for x in _random_qkv(gen, rank=3))
    got64 = attempt(fn, q.clone(), k.clone(), v.clone())
    calls.append(((q, k, v, None), got64))
    ok, detail = _pair_matches(got64, _reference(q, k, v, None), dtype=torch.float64, atol=1e-12, rtol=1e-10)
    result.add("float64 inputs keep float64 precision", 0.5, ok, detail)

    if not result.passed:
        _diagnose_attention(fn, result, calls, public_ok, gen)
    sq, sk, sv = _random_qkv(gen, rank=3)
    shortcuts = find_shortcuts(fn, (sq, sk, sv, mhsa_lib.causal_mask(sq.shape[-2], sk.shape[-2])),
                               ATTENTION_FORBIDDEN, forbid_library=ATTENTION_LIBRARY)
    if shortcuts:
        result.zero_reason = (
            f"your function calls {', '.join(shortcuts)}: this step asks you to write attention "
            "yourself (torch.softmax or your own softmax are fine)"
        )
    return


def _reference(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    out, weights = mhsa_lib.scaled_dot_product_attention(q.double(), k.double(), v.double(), mask)
    return out, weights


def _random_qkv(gen: torch.Generator, rank: int, s_greater: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    b, h, t, s, dk, dv = distinct_sizes(gen, 6, 2, 9)
    if s_greater and s < t:
        t, s = s, t
    lead = {2: (), 3: (b,), 4: (b, h)}[rank]
    return randn(gen, *lead, t, dk), randn(gen, *lead, s, dk), randn(gen, *lead, s, dv)


def _random_mask(gen: torch.Generator, kind: str, q: Tensor, k: Tensor, allow_empty: bool) -> Tensor:
    t, s = q.shape[-2], k.shape[-2]
    if kind == "causal":
        return mhsa_lib.causal_mask(t, s)  # (T, S), broadcasts over the batch
    if kind == "padding":
        lengths = torch.randint(1, s + 1, (q.shape[0],), generator=gen)
        lengths[0] = s - 1  # at least one sequence is padded
        mask = mhsa_lib.padding_mask(lengths, s)  # (B, 1, S)
        return mask.unsqueeze(1) if q.ndim == 4 else mask  # (B, 1, 1, S) for (B, H, T, S) scores
    mask = torch.rand(q.shape[:-2] + (t, s), generator=gen) < 0.6
    mask[..., 0, 0] = False
    mask[..., 0, 1] = True
    if allow_empty:
        mask[..., 1, :] = False  # query 1 may attend to nothing
    else:
        mask[..., :, -1] = True  # every query has at least one key
    return mask


def _unpack(got: Any) -> Tuple[Optional[Any], Optional[Any], str]:
    if isinstance(got, LearnerError):
        return None, None, str(got)
    if isinstance(got, Tensor):
        return None, None, "returned a single tensor; return the pair (out, weights)"
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return None, None, f"returned {type(got).__name__}; return the pair (out, weights)"
    return got[0], got[1], ""


def _pair_shapes(got: Any, ref: Tuple[Tensor, Tensor]) -> Tuple[bool, str]:
    out, w, err = _unpack(got)
    if err:
        return False, err
    for name, x, e in (("out", out, ref[0]), ("weights", w, ref[1])):
        if not isinstance(x, Tensor):
            return False, f"{name} is {type(x).__name__}, expected a tensor"
        if tuple(x.shape) != tuple(e.shape):
            return False, f"{name} has shape {tuple(x.shape)}, expected {tuple(e.shape)}"
    return True, ""


def _pair_matches(got: Any, ref: Tuple[Tensor, Tensor], dtype=None, atol=1e-5, rtol=1e-4) -> Tuple[bool, str]:
    out, w, err = _unpack(got)
    if err:
        return False, err
    for name, x, e in (("weights", w, ref[1]), ("out", out, ref[0])):
        c = compare(x, e, what=name, dtype=dtype, atol=atol, rtol=rtol)
        if not c.ok:
            return False, c.detail
    return True, ""


def _attention_invariants(fn: Callable, gen: torch.Generator, calls: list) -> List[str]:
    q, k, v = _random_qkv(gen, rank=3, s_greater=True)
    mask = mhsa_lib.causal_mask(q.shape[-2], k.shape[-2])
    got = attempt(fn, q.clone(), k.clone(), v.clone(), mask)
    calls.append(((q, k, v, mask), got))
    out, w, err = _unpack(got)
    if err or not isinstance(out, Tensor) or not isinstance(w, Tensor):
        return [err or "no (out, weights) tensors to probe"]
    expected_shape = q.shape[:-1] + (k.shape[-2],)  # (B, T, S)
    if w.shape != expected_shape or out.shape != q.shape[:-1] + (v.shape[-1],):
        return [f"weights have shape {tuple(w.shape)} and out {tuple(out.shape)}, expected (B, T, S) = "
                f"{tuple(expected_shape)} and (B, T, Dv)"]
    problems = []
    wd, od = w.detach().double(), out.detach().double()
    if not bool(torch.isfinite(wd).all()):
        return ["weights have NaN or inf"]
    if bool((wd < -1e-6).any()):
        problems.append("some weights are negative")
    sums = wd.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        problems.append("rows of the weights do not sum to 1 over the keys")
    if od.shape == (wd @ v.double()).shape and not torch.allclose(od, wd @ v.double(), atol=1e-4, rtol=1e-3):
        problems.append("out is not weights @ v")
    # Change the keys and values at the last position, which only the last query may see.
    k2, v2 = k.clone(), v.clone()
    k2[..., -1, :] += 5.0
    v2[..., -1, :] -= 5.0
    got2 = attempt(fn, q.clone(), k2.clone(), v2.clone(), mask)
    calls.append(((q, k2, v2, mask), got2))
    out2, _, err2 = _unpack(got2)
    if err2 or not isinstance(out2, Tensor) or out2.shape != out.shape:
        problems.append("second call failed")
    elif not torch.allclose(out2[..., :-1, :].double(), od[..., :-1, :], atol=1e-5):
        problems.append("a key/value that the causal mask hides from earlier queries still changes their output")
    return problems


def _attention_inputs(case: tuple) -> dict:
    q, k, v, mask = case
    return {"q": q, "k": k, "v": v} if mask is None else {"q": q, "k": k, "v": v, "mask": mask}


def _explain_attention_error(result: CheckResult, error: Any, case: tuple, calls=()) -> bool:
    """Name what a shape error of the learner's attention means on ``case`` (and is consistent
    with the learner's other ``calls``); True if it did."""
    q, k, v, mask = case
    letters = V.attention_letters(q, k, v)
    others = [(_attention_inputs(c), str(got) if isinstance(got, LearnerError) else None)
              for c, got in calls if c is not case]
    text = V.explain_error(str(error), _attention_inputs(case), letters, _ATTENTION_SHAPES,
                           V.ATTENTION_SHAPE_TOKENS, V.attention_shape_context(q, k, v, mask, letters), others)
    if text is None:
        return False
    result.diagnose(text[:1].upper() + text[1:])
    return True


def _attention_produce(m, case):
    q, k, v, mask = case
    return m.fn(q, k, v, mask)


def _diagnose_attention(fn, result: CheckResult, calls, public_ok: bool, gen) -> None:
    # A call that raised: what the error means, from the shapes of its inputs.
    for case, got in calls:
        if isinstance(got, LearnerError):
            if not _explain_attention_error(result, got, case, calls):
                q, k, v, _ = case
                result.diagnose(f"on q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} your function {got}.")
            break
    seen = [(case, tuple(got)) for case, got in calls
            if isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(x, Tensor) for x in got)]
    if not seen:
        for case, got in calls:
            _, _, err = _unpack(got)
            if err and not isinstance(got, LearnerError):
                result.diagnose(f"your function {err}.")
                return
        return
    bad = [(case, got) for case, got in seen if not _pair_matches(got, _reference(*case))[0]]
    if not bad:
        return
    context = V.attention_context(*bad[0][0][:3])
    found = matching_mistake(seen, (M.CATALOGUE[i] for i in _ATTENTION_BY_OUTPUT), _attention_produce,
                             same=same_pair, usable=anything)
    found = found or matching_mistake(seen, V.attention_variants(), _attention_produce, same=same_pair,
                                      usable=anything)
    if found is not None:
        advice = found.advice.format(**context)
        result.diagnose(advice + ("" if advice.endswith(".") else "."))
        return
    if public_ok and V.hard_coded(fn, gen, (ATTN_PUBLIC_Q, ATTN_PUBLIC_K, ATTN_PUBLIC_V),
                                  lambda q, k, v: _reference(q, k, v, None),
                                  lambda y, e, tol: _pair_matches(y, e, atol=tol, rtol=tol)[0]):
        result.diagnose(V.HARD_CODED)
        return
    _describe_attention_outputs(result, bad, calls)


def _describe_attention_outputs(result: CheckResult, bad, calls) -> None:
    """No known mistake reproduces the outputs: say what is true of them (observations, not causes)."""
    for (q, k, v, mask), (out, w) in bad:
        ref = _reference(q, k, v, mask)
        if w.shape != ref[1].shape or out.shape != ref[0].shape:
            continue
        wd = w.detach().double()
        if mask is not None:
            empty = ~mask.expand(ref[1].shape).any(-1)  # the queries with no allowed key
            if bool(empty.any()):
                rows_w = wd[empty]
                if not bool(torch.isfinite(rows_w).all()) or not bool(torch.isfinite(out.detach().double()[empty]).all()):
                    result.diagnose("the query with no allowed key gets NaN in its weights or output; it must "
                                    "get weights 0 and output 0.")
                    return
                if torch.allclose(rows_w, torch.full_like(rows_w, 1.0 / w.shape[-1]), atol=1e-4):
                    result.diagnose("the query with no allowed key gets uniform weights 1/S (the mean of the "
                                    "values); it must get weights 0 and output 0.")
                    return
            continue
        if close(wd, ref[1]):
            if not close(out, ref[0]) and not close(out, wd @ v.double()):
                result.diagnose("your weights are right but your output is not: out = weights @ v, the weighted "
                                "sum of the values.")
                return
            continue
        if not bool(torch.isfinite(wd).all()):
            continue
        row_sums, col_sums = wd.sum(-1), wd.sum(-2)
        if torch.allclose(col_sums, torch.ones_like(col_sums), atol=1e-4) and not torch.allclose(
                row_sums, torch.ones_like(row_sums), atol=1e-4):
            result.diagnose("the columns of your weights sum to 1 over the queries, the rows (one per query) do "
                            "not: each query's row of weights must sum to 1 over the keys.")
            return
        if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4):
            result.diagnose(f"the rows of your weights sum to values like {float(row_sums.flatten()[0]):.4g} on a "
                            "case without a mask; each query's row must sum to 1 over the keys.")
            return
        scale = _fitted_scale(q, k, wd)
        dk = q.shape[-1]
        if scale is not None and abs(scale - 1.0 / math.sqrt(dk)) > 0.02 / math.sqrt(dk):
            result.diagnose(f"your weights behave like softmax(c · QKᵀ) with c ≈ {scale:.4g}; expected "
                            f"c = 1/√d_k = {1 / math.sqrt(dk):.4g}.")
            return
    unmasked = [(case, got) for case, got in calls if case[3] is None]
    if unmasked and all(_pair_matches(got, _reference(*case))[0] for case, got in unmasked):
        result.diagnose("your results are right without a mask but not with one.")


def _fitted_scale(q: Tensor, k: Tensor, w: Tensor) -> Optional[float]:
    """Estimate c such that w ≈ softmax(c · QKᵀ), from log-weights (None if that does not fit)."""
    if bool((w <= 0).any()):
        return None
    s = (q.double() @ k.double().transpose(-2, -1))
    lw = torch.log(w)
    s_c = s - s.mean(-1, keepdim=True)
    lw_c = lw - lw.mean(-1, keepdim=True)
    denom = float((s_c * s_c).sum())
    if denom == 0:
        return None
    c = float((s_c * lw_c).sum()) / denom
    if not torch.allclose(lw_c, c * s_c, atol=1e-3 * max(1.0, abs(c) * float(s_c.abs().max()))):
        return None
    return c


#: The hand-written causal-mask mistakes the output search tries first (the variants follow).
_CAUSAL_BY_OUTPUT = ("causal-diagonal-blocked", "causal-one-ahead", "causal-upper-left", "causal-inverted",
                     "causal-float", "causal-additive")

#: The hand-written attention mistakes the output search tries first (the variants follow).
_ATTENTION_BY_OUTPUT = ("attention-no-scale", "attention-scale-dk", "attention-scale-model-width",
                        "attention-softmax-queries", "attention-mask-inverted", "attention-mask-after-softmax",
                        "attention-masked-row-nan", "attention-large-negative-fill", "attention-ignores-mask")
_ATTENTION_SHAPES = V.attention_shape_candidates()

