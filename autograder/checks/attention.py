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
    matches,
    randn,
)
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


@step("softmax", forbidden=(SOFTMAX_FORBIDDEN, True),
      points=SOFTMAX_POINTS, notebook="01_scaled_dot_product_attention", home="attention", reference=mhsa_lib.softmax, picture=SOFTMAX_PICTURE)
def check_softmax(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``softmax(x, dim=-1)``; print the report, return the points (max 3)."""
    x_pub = SOFTMAX_PUBLIC_X
    expected_pub = mhsa_lib.softmax(x_pub.double(), dim=-1)

    # 1. Public case: the one in the notebook.
    try:
        y_pub = call(fn, x_pub.clone())
    except LearnerError as e:
        result.zero_reason = f"softmax(x) {e}"
        return
    c_pub = compare(y_pub, expected_pub, what="softmax(x)")
    result.add("public case: softmax of a (3, 4) tensor over the last axis", 1.0, c_pub.ok, c_pub.detail)

    # 2. Random shapes and axes.
    n_cases = 10 if hidden else 4
    failures: List[str] = []
    first_bad: Optional[Tuple[Tensor, int, Any]] = None
    seen = [(x_pub, -1, y_pub)]  # every (input, dim, output): a diagnosis must explain them all
    for _ in range(n_cases):
        ndim = int(torch.randint(2, 5, (1,), generator=gen))
        shape = distinct_sizes(gen, ndim)
        dim = int(torch.randint(-ndim, ndim, (1,), generator=gen))
        x = randn(gen, *shape, scale=2.0)
        y = attempt(fn, x.clone(), dim=dim)
        seen.append((x, dim, y))
        c = compare(y, mhsa_lib.softmax(x.double(), dim=dim), what="output")
        if not c.ok:
            failures.append(f"shape {tuple(shape)}, dim={dim}: {c.detail}")
            first_bad = first_bad or (x, dim, y)
    result.add(f"{n_cases} random cases (shapes with distinct sizes, every axis)", 1.0, not failures,
               describe_failures(failures))

    # 3. Large logits: offsets of ±1e4 per row, and rows far apart from each other.
    x_big = randn(gen, 4, 7, scale=3.0) + torch.tensor([[1e4], [-1e4], [50.0], [3e3]])
    y_big = attempt(fn, x_big.clone(), dim=-1)
    # float32 holds 1e4 to about 1e-3, so any float32 method carries that much error here.
    c_big = compare(y_big, mhsa_lib.softmax(x_big.double(), dim=-1), what="output", atol=2e-3, rtol=2e-3)
    result.add("stable for large logits (rows around +1e4 and -1e4)", 0.5, c_big.ok, c_big.detail)

    # 4. float64 in, float64 out, to float64 precision.
    x64 = randn(gen, *distinct_sizes(gen, 3), dtype=torch.float64)
    y64 = attempt(fn, x64.clone(), dim=1)
    c64 = compare(y64, mhsa_lib.softmax(x64, dim=1), what="output", dtype=torch.float64, atol=1e-12, rtol=1e-10)
    result.add("float64 input keeps float64 precision", 0.25, c64.ok, c64.detail)

    # 5. Invariants: non-negative, sums to 1 along dim, unchanged by adding a constant.
    x_inv = randn(gen, *distinct_sizes(gen, 3))
    inv = _softmax_invariants(fn, x_inv, dim=1)
    result.add("invariants: entries ≥ 0, each slice along dim sums to 1, softmax(x + c) = softmax(x)",
               0.25, not inv, "; ".join(inv))

    # Diagnosis.
    if not result.passed:
        _diagnose_softmax(fn, result, first_bad, seen, (x_big, y_big), c_pub.ok and bool(failures), gen)
    shortcuts = find_shortcuts(fn, (randn(gen, 3, 5),), SOFTMAX_FORBIDDEN)
    if shortcuts:
        result.zero_reason = (
            f"your softmax calls {', '.join(shortcuts)}: this step asks you to write softmax "
            "yourself from exp, max and sum (torch.softmax is fine in later steps)"
        )
    return


def _softmax_invariants(fn: Callable, x: Tensor, dim: int) -> List[str]:
    y = attempt(fn, x.clone(), dim=dim)
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
    y_shift = attempt(fn, x.clone() + 7.0, dim=dim)
    if not close(y_shift, y, atol=1e-5):
        problems.append("adding a constant to x changes the output")
    return problems


def _diagnose_softmax(fn, result: CheckResult, first_bad, seen, big, public_ok_random_bad: bool, gen) -> None:
    if first_bad is not None:
        x, dim, y = first_bad
        if isinstance(y, Tensor) and y.shape == x.shape:
            for mistake in (M.CATALOGUE[i] for i in ("softmax-ignores-dim", "softmax-wrong-axis", "softmax-global-sum")):
                if all(matches(yy, mistake.fn(xx.double(), dim=d)) for xx, d, yy in seen):
                    result.diagnose(mistake.advice.format(dim=dim))
                    break
            else:
                sums = [y.detach().double().sum(a) for a in range(x.ndim)]
                axes = [a for a, t in enumerate(sums) if torch.allclose(t, torch.ones_like(t), atol=1e-4)]
                if axes and (dim % x.ndim) not in axes:
                    result.diagnose(f"your output sums to 1 over axis {axes[0]}, but softmax(x, dim={dim}) must sum to 1 along dim={dim}.")
        elif isinstance(y, Tensor):
            result.diagnose(
                f"your output has shape {tuple(y.shape)} for an input of shape {tuple(x.shape)}: softmax keeps the "
                "shape; did you forget keepdim=True when taking the max or the sum?"
            )
        elif isinstance(y, LearnerError):
            result.diagnose(f"on an input of shape {tuple(x.shape)} with dim={dim} your softmax {y}.")
    x_big, y_big = big
    if isinstance(y_big, Tensor) and y_big.shape == x_big.shape and not close(
        y_big, mhsa_lib.softmax(x_big.double(), dim=-1), atol=2e-3, rtol=2e-3
    ):
        # Run the mistakes in float32, as the learner's code ran, so NaN lands where theirs does.
        if matches(y_big, M.softmax_no_max_subtraction(x_big, dim=-1), atol=2e-3, rtol=2e-3):
            result.diagnose(M.CATALOGUE["softmax-no-max"].advice)
        elif matches(y_big, M.softmax_global_max(x_big, dim=-1), atol=2e-3, rtol=2e-3):
            result.diagnose(M.CATALOGUE["softmax-global-max"].advice)
        elif not bool(torch.isfinite(y_big).all()):
            result.diagnose("your output has NaN or inf for large logits: subtract the maximum of "
                            "each slice along `dim` before exp (x.amax(dim, keepdim=True)).")
    if public_ok_random_bad:
        y = attempt(fn, randn(gen, *SOFTMAX_PUBLIC_X.shape, scale=3.0))
        if close(y, mhsa_lib.softmax(SOFTMAX_PUBLIC_X.double(), dim=-1)):
            result.diagnose(_HARD_CODED)



_HARD_CODED = (
    "your function returns the public case's expected output whatever the input: the answer "
    "seems hard-coded. Compute it from the input."
)




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

    try:
        m_pub = call(fn, 4, 4)
    except LearnerError as e:
        result.zero_reason = f"causal_mask(4, 4) {e}"
        return
    ok, detail = _mask_matches(m_pub, mhsa_lib.causal_mask(4, 4))
    result.add("public case: causal_mask(4, 4) is the lower triangle, diagonal included", 1.0, ok, detail)

    # S > T: decoding with a cache; the last query sees every key.
    shapes = [(2, 5), (1, 6)] + ([(3, 8), (4, 9)] if hidden else [])
    fails = []
    for t, s in shapes:
        ok, detail = _mask_matches(attempt(fn, t, s), mhsa_lib.causal_mask(t, s))
        if not ok:
            fails.append(f"causal_mask({t}, {s}): {detail}")
    result.add("S > T (decoding with a cache): aligned to the lower right", 0.5, not fails, describe_failures(fails))

    fails = []
    for _ in range(6 if hidden else 3):
        t, s = sorted(distinct_sizes(gen, 2, 1, 12))
        for args in ((t, s), (s,)):
            ok, detail = _mask_matches(attempt(fn, *args), mhsa_lib.causal_mask(*args))
            if not ok:
                fails.append(f"causal_mask{args}: {detail}")
    result.add("random sizes, and seq_len_k defaulting to seq_len_q", 0.25, not fails, describe_failures(fails))

    is_bool = isinstance(m_pub, Tensor) and m_pub.dtype == torch.bool
    result.add("dtype is torch.bool (True = may attend)", 0.25, is_bool,
               "" if is_bool else f"got {getattr(m_pub, 'dtype', type(m_pub).__name__)}")

    if not result.passed:
        _diagnose_causal(fn, result)
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


def _diagnose_causal(fn, result: CheckResult) -> None:
    t, s = 3, 6
    got = _as_bool_mask(attempt(fn, t, s))
    raw = attempt(fn, t, s)
    if isinstance(raw, Tensor) and raw.dtype != torch.bool:
        if raw.dtype.is_floating_point and bool(torch.isinf(raw).any()):
            result.diagnose(M.CATALOGUE["causal-additive"].advice)
        else:
            result.diagnose(M.CATALOGUE["causal-float"].advice)
    if got is None or got.shape != (t, s):
        return
    for mistake in (M.CATALOGUE[i] for i in _CAUSAL_SHAPES):
        if torch.equal(got.cpu(), mistake.fn(t, s)):
            result.diagnose(mistake.advice)
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
    try:
        got_pub = call(fn, q.clone(), k.clone(), v.clone())
    except LearnerError as e:
        result.zero_reason = f"scaled_dot_product_attention(q, k, v) {e}"
        return
    ok, detail = _pair_matches(got_pub, ref_pub)
    result.add("public case: T=2 queries, S=3 keys, d_k=4, no mask", 1.0, ok, detail)
    public_ok = ok

    # Random cases without a mask, of rank 2, 3 and 4; the first 4-D one feeds the diagnosis.
    n = 6 if hidden else 3
    shape_fails, value_fails = [], []
    probe = None
    for i in range(n):
        q, k, v = _random_qkv(gen, rank=4 if i % 3 == 0 else 3 if i % 3 == 1 else 2)
        got = attempt(fn, q.clone(), k.clone(), v.clone())
        ref = _reference(q, k, v, None)
        probe = probe or (q, k, v, None, got, ref)
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
    mask_probe = None
    kinds = ("causal", "padding", "random") + (("causal", "padding", "random") if hidden else ())
    for i, kind in enumerate(kinds):
        q, k, v = _random_qkv(gen, rank=3 + i % 2, s_greater=True)
        mask = _random_mask(gen, kind, q, k, allow_empty=False)
        got = attempt(fn, q.clone(), k.clone(), v.clone(), mask.clone())
        ref = _reference(q, k, v, mask)
        mask_probe = mask_probe or (q, k, v, mask, got, ref)
        ok, detail = _pair_matches(got, ref)
        if not ok:
            mask_fails.append(f"{kind} mask {tuple(mask.shape)}: {detail}")
    result.add("masks: causal with S > T, padding (B, 1, S), random patterns", 1.0, not mask_fails,
               describe_failures(mask_fails, 1))

    # A query with no allowed key gives output 0 and weights 0, never NaN.
    q, k, v = _random_qkv(gen, rank=3)
    empty_mask = _random_mask(gen, "random", q, k, allow_empty=True)
    got_empty = attempt(fn, q.clone(), k.clone(), v.clone(), empty_mask.clone())
    ok, detail = _pair_matches(got_empty, _reference(q, k, v, empty_mask))
    result.add("a fully masked row gives output 0 and weights 0 (no NaN)", 0.5, ok, detail)

    # Invariants: rows sum to 1 over the keys; masked keys cannot change the output.
    inv = _attention_invariants(fn, gen)
    result.add("invariants: weights ≥ 0 and rows sum to 1 over the keys; out = weights @ v; "
               "changing a masked key or value changes nothing", 0.5, not inv, "; ".join(inv))

    q, k, v = (x.double() for x in _random_qkv(gen, rank=3))
    got64 = attempt(fn, q.clone(), k.clone(), v.clone())
    ok, detail = _pair_matches(got64, _reference(q, k, v, None), dtype=torch.float64, atol=1e-12, rtol=1e-10)
    result.add("float64 inputs keep float64 precision", 0.5, ok, detail)

    if not result.passed:
        _diagnose_attention(fn, result, probe, mask_probe, (q, k, v, empty_mask, got_empty),
                            public_ok and bool(value_fails or mask_fails), gen)
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


def _attention_invariants(fn: Callable, gen: torch.Generator) -> List[str]:
    q, k, v = _random_qkv(gen, rank=3, s_greater=True)
    mask = mhsa_lib.causal_mask(q.shape[-2], k.shape[-2])
    out, w, err = _unpack(attempt(fn, q.clone(), k.clone(), v.clone(), mask))
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
    out2, _, err2 = _unpack(attempt(fn, q.clone(), k2, v2, mask))
    if err2 or not isinstance(out2, Tensor) or out2.shape != out.shape:
        problems.append("second call failed")
    elif not torch.allclose(out2[..., :-1, :].double(), od[..., :-1, :], atol=1e-5):
        problems.append("a key/value that the causal mask hides from earlier queries still changes their output")
    return problems


def _diagnose_attention(fn, result: CheckResult, probe, mask_probe, empty_probe, public_ok_random_bad, gen) -> None:
    if probe is not None:
        q, k, v, _, got, ref = probe
        out, w, err = _unpack(got)
        if err:
            result.diagnose(f"on q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} your function {err}.")
        elif isinstance(w, Tensor) and w.shape == ref[1].shape and isinstance(out, Tensor):
            _diagnose_scores(result, q, k, v, out, w, ref)
    if mask_probe is not None:
        q, k, v, mask, got, ref = mask_probe
        out, w, err = _unpack(got)
        if not err and isinstance(out, Tensor) and isinstance(w, Tensor) and not close(w, ref[1]):
            for mistake in M.ATTENTION_MISTAKES:
                if mistake.id in _MASK_MISTAKE_IDS:
                    m_out, m_w = mistake.fn(q.double(), k.double(), v.double(), mask)
                    if close(w, m_w) and close(out, m_out):
                        result.diagnose(mistake.advice)
                        break
    q, k, v, mask, got = empty_probe
    out, w, err = _unpack(got)
    if not err and isinstance(out, Tensor) and isinstance(w, Tensor) and out.shape[-2] > 1 and w.shape[-1] == mask.shape[-1]:
        row_out, row_w = out[..., 1, :].detach(), w[..., 1, :].detach()
        if not bool(torch.isfinite(row_out).all()) or not bool(torch.isfinite(row_w).all()):
            result.diagnose(M.CATALOGUE["attention-masked-row-nan"].advice)
        elif torch.allclose(row_w.double(), torch.full_like(row_w.double(), 1.0 / w.shape[-1]), atol=1e-4):
            result.diagnose(M.CATALOGUE["attention-large-negative-fill"].advice)
    if public_ok_random_bad:
        q = randn(gen, *ATTN_PUBLIC_Q.shape)
        out, w, err = _unpack(attempt(fn, q, randn(gen, *ATTN_PUBLIC_K.shape), randn(gen, *ATTN_PUBLIC_V.shape)))
        ref = _reference(ATTN_PUBLIC_Q, ATTN_PUBLIC_K, ATTN_PUBLIC_V, None)
        if not err and close(out, ref[0]):
            result.diagnose(_HARD_CODED)


def _diagnose_scores(result: CheckResult, q, k, v, out, w, ref) -> None:
    wd = w.detach().double()
    if close(wd, ref[1]):
        if not close(out, ref[0]):
            if close(out, wd @ v.double()):
                return
            result.diagnose("your weights are right but your output is not: out = weights @ v, the weighted sum of the values.")
        return
    if not bool(torch.isfinite(wd).all()):
        return
    row_sums, col_sums = wd.sum(-1), wd.sum(-2)
    if torch.allclose(col_sums, torch.ones_like(col_sums), atol=1e-4) and not torch.allclose(
        row_sums, torch.ones_like(row_sums), atol=1e-4
    ):
        result.diagnose(M.CATALOGUE["attention-softmax-queries"].advice)
        return
    if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4):
        result.diagnose("the rows of your weights do not sum to 1 over the keys: apply softmax to the scores over the last axis (dim=-1).")
        return
    scale = _fitted_scale(q, k, wd)
    if scale is None:
        return
    dk = q.shape[-1]
    candidates = [
        (1.0, "attention-no-scale"),
        (1.0 / dk, "attention-scale-dk"),
    ]
    if q.ndim >= 4:
        candidates.append((1.0 / math.sqrt(q.shape[-3] * dk), "attention-scale-model-width"))
    for value, mid in candidates:
        if abs(scale - value) <= 0.02 * value:
            result.diagnose(M.CATALOGUE[mid].advice.format(dk=dk, scale=scale, heads=q.shape[-3] if q.ndim >= 4 else 1,
                                                          D=(q.shape[-3] if q.ndim >= 4 else 1) * dk))
            return
    named = {
        f"1/√S = 1/√{k.shape[-2]} (S is the number of keys)": 1.0 / math.sqrt(k.shape[-2]),
        f"1/√T = 1/√{q.shape[-2]} (T is the number of queries)": 1.0 / math.sqrt(q.shape[-2]),
        f"1/√Dv = 1/√{v.shape[-1]} (Dv is the width of the values)": 1.0 / math.sqrt(v.shape[-1]),
    }
    for label, value in named.items():
        if abs(scale - value) <= 0.02 * value:
            result.diagnose(f"your scores are scaled by {label}; scale by 1/√d_k = 1/√{dk}, the width of the queries and keys (q.shape[-1]).")
            return
    if abs(scale - 1.0 / math.sqrt(dk)) > 0.02 / math.sqrt(dk):
        result.diagnose(f"your weights behave like softmax(c · QKᵀ) with c ≈ {scale:.4g}; expected c = 1/√d_k = {1 / math.sqrt(dk):.4g}.")


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


# The causal-mask mistakes recognised by which positions they let through (the dtype ones are
# recognised by their dtype).
_CAUSAL_SHAPES = ("causal-diagonal-blocked", "causal-one-ahead", "causal-upper-left", "causal-inverted")

_MASK_MISTAKE_IDS = ("attention-mask-inverted", "attention-mask-after-softmax", "attention-ignores-mask")

