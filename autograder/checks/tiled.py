"""Step checks for notebook 08: ``online_softmax_merge`` and ``tiled_attention``.

Each check runs a public case (fixed, readable), random cases drawn at run time, the edge cases
the step is about (empty blocks, fully masked rows, scores far from 0, block sizes that do not
divide S), and compares with ``mhsa_lib`` computed in float64. ``tiled_attention`` is also run
under a counter of the tensors it creates: it must never form the (T, S) score matrix. When the
learner's output matches a known mistake (:mod:`autograder.mistakes.tiled`), the report names it.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

import mhsa_lib

from ..frame import (
    CheckResult,
    LearnerError,
    attempt,
    call,
    compare,
    describe_failures,
    distinct_sizes,
    find_shortcuts,
    matches,
    observe,
    randn,
)
from ..frame.registry import step
from ..mistakes import tiled as M

INF = float("-inf")

# --------------------------------------------------------------------------- online softmax merge

MERGE_POINTS = 3.0
#: The streaming part merges along rows of logits around +STREAM_OFFSET, -STREAM_OFFSET and 0.
STREAM_OFFSET = 1e4

# The public case: four rows; the second block holds the larger maximum in row 0, the first
# block is empty in row 1, the second is empty in row 2, both maxima are equal in row 3.
MERGE_PUBLIC = (
    torch.tensor([1.0, INF, 3.0, 0.5]),  # m1
    torch.tensor([2.0, 0.0, 1.5, 1.0]),  # l1
    torch.tensor([4.0, 2.0, INF, 0.5]),  # m2
    torch.tensor([1.0, 3.0, 0.0, 2.0]),  # l2
)


def _summary(x: Tensor) -> Tuple[Tensor, Tensor]:
    """(max, Σ exp(x - max)) along the last axis; (-inf, 0) for an empty or all -inf slice."""
    if x.shape[-1] == 0:
        return (torch.full(x.shape[:-1], INF, dtype=x.dtype), torch.zeros(x.shape[:-1], dtype=x.dtype))
    m = x.amax(-1)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m, torch.exp(x - shift.unsqueeze(-1)).sum(-1)


def _merge_reference(args: Tuple[Tensor, ...]) -> Tuple[Tensor, Tensor]:
    return mhsa_lib.online_softmax_merge(*(a.double() for a in args))


def _pair(got: Any) -> Tuple[Optional[Any], Optional[Any], str]:
    if isinstance(got, LearnerError):
        return None, None, str(got)
    if isinstance(got, Tensor):
        return None, None, "returned a single tensor; return the pair (m, l)"
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return None, None, f"returned {type(got).__name__}; return the pair (m, l)"
    return got[0], got[1], ""


def _merge_matches(got: Any, ref: Tuple[Tensor, Tensor], dtype=None, atol=1e-5, rtol=1e-4) -> Tuple[bool, str]:
    m, l, err = _pair(got)
    if err:
        return False, err
    for name, x, e in (("m", m, ref[0]), ("l", l, ref[1])):
        c = compare(x, e, what=name, dtype=dtype, atol=atol, rtol=rtol)
        if not c.ok:
            return False, c.detail
    return True, ""


def _random_blocks(gen: torch.Generator, empty: bool = False, broadcast: bool = False) -> Tuple[Tensor, ...]:
    """The summaries (m1, l1, m2, l2) of two blocks of random logits, float32. With ``broadcast``
    the second block is shared along the last leading axis: its summaries have size 1 there."""
    ndim = int(torch.randint(1, 4, (1,), generator=gen))
    lead = distinct_sizes(gen, ndim, 2, 6)
    n1, n2 = (int(n) for n in torch.randint(1, 9, (2,), generator=gen))
    shift = randn(gen, *lead, 1, dtype=torch.float64, scale=4.0)
    x1 = randn(gen, *lead, n1, dtype=torch.float64, scale=3.0) + shift
    if broadcast:  # (..., 1, n2): one second block for every entry of the last leading axis
        x2 = randn(gen, *lead[:-1], 1, n2, dtype=torch.float64, scale=3.0) - shift.mean(dim=-2, keepdim=True)
    else:
        x2 = randn(gen, *lead, n2, dtype=torch.float64, scale=3.0) - shift
    if empty:
        x1.view(-1, n1)[::2] = INF  # some rows of the first block are fully masked
        x2.view(-1, n2)[::3] = INF  # and some of the second: row 0 in both
    return tuple(t.float() for t in (*_summary(x1), *_summary(x2)))


@step("online_softmax_merge", forbidden=((), ("online_softmax_merge", "tiled_attention")),
      points=MERGE_POINTS, notebook="08_attention_without_the_matrix", home="tiled",
      reference=mhsa_lib.online_softmax_merge)
def check_online_softmax_merge(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``online_softmax_merge(m1, l1, m2, l2) -> (m, l)`` (max 3)."""
    seen: List[Tuple[Tuple[Tensor, ...], Any]] = []  # every (inputs, output): a diagnosis must explain them all

    try:
        got_pub = call(fn, *(a.clone() for a in MERGE_PUBLIC))
    except LearnerError as e:
        result.zero_reason = f"online_softmax_merge(m1, l1, m2, l2) {e}"
        return
    seen.append((MERGE_PUBLIC, got_pub))
    ok, detail = _merge_matches(got_pub, _merge_reference(MERGE_PUBLIC))
    result.add("public case: four rows, an empty block (-inf, 0) in two of them", 1.0, ok, detail)

    n = 10 if hidden else 4
    fails = []
    for i in range(n):
        args = _random_blocks(gen, broadcast=i == 0)
        got = attempt(fn, *(a.clone() for a in args))
        seen.append((args, got))
        ok, detail = _merge_matches(got, _merge_reference(args))
        if not ok:
            fails.append(f"m1 of shape {tuple(args[0].shape)}, m2 of shape {tuple(args[2].shape)}: {detail}")
    result.add(f"{n} random cases: the summaries of two blocks of random logits (in one, shapes that broadcast)",
               1.0, not fails,
               describe_failures(fails, 1))

    # Empty blocks: (-inf, 0) is neutral, and two of them give (-inf, 0), never NaN.
    args = _random_blocks(gen, empty=True)
    got = attempt(fn, *(a.clone() for a in args))
    seen.append((args, got))
    ok, detail = _merge_matches(got, _merge_reference(args))
    result.add("empty blocks: (-inf, 0) merges as a neutral element; two of them give (-inf, 0), not NaN",
               0.5, ok, detail)

    # Streaming: fold the merge over the blocks of rows of large logits, from (-inf, 0).
    stream_problem = _streaming(fn, gen)
    result.add("merging block after block from (-inf, 0) gives each row's max and logsumexp, "
               "also for logits around ±1e4", 0.25, not stream_problem, stream_problem)

    args64 = tuple(a.double() for a in _random_blocks(gen))
    got64 = attempt(fn, *(a.clone() for a in args64))
    ok, detail = _merge_matches(got64, _merge_reference(args64), dtype=torch.float64, atol=1e-12, rtol=1e-10)
    result.add("float64 inputs keep float64 precision", 0.25, ok, detail)

    if not result.passed:
        _diagnose_merge(result, seen)
    shortcuts = find_shortcuts(fn, MERGE_PUBLIC, (), forbid_library=("online_softmax_merge", "tiled_attention"))
    if shortcuts:
        result.zero_reason = (f"your online_softmax_merge calls {', '.join(shortcuts)}: this step asks you "
                              "to write the merge yourself")


def _streaming(fn: Any, gen: torch.Generator) -> str:
    rows, width = 3, int(torch.randint(9, 20, (1,), generator=gen))
    x = randn(gen, rows, width, dtype=torch.float64, scale=3.0) + torch.tensor([[STREAM_OFFSET], [-STREAM_OFFSET], [0.0]], dtype=torch.float64)
    x = x.float()
    block = int(torch.randint(2, 5, (1,), generator=gen))
    m = torch.full((rows,), INF)
    l = torch.zeros(rows)  # noqa: E741
    for start in range(0, width, block):
        got = attempt(fn, m, l, *_summary(x[:, start:start + block]))
        m_got, l_got, err = _pair(got)
        if err:
            return f"merging block {start // block}: your function {err}"
        if not isinstance(m_got, Tensor) or not isinstance(l_got, Tensor) or m_got.shape != (rows,) or l_got.shape != (rows,):
            return f"merging block {start // block}: expected two tensors of shape ({rows},)"
        m, l = m_got.detach().float(), l_got.detach().float()  # noqa: E741
    xd = x.double()
    if not bool(torch.isfinite(m).all()) or not bool(torch.isfinite(l).all()):
        return "the running (m, l) has NaN or inf after the last block"
    problems = []
    if not torch.allclose(m.double(), xd.amax(-1), atol=1e-2, rtol=0):
        problems.append(f"the running max is {m.tolist()}, expected {xd.amax(-1).tolist()}")
    lse = m.double() + torch.log(l.double())
    if not torch.allclose(lse, torch.logsumexp(xd, -1), atol=2e-2, rtol=0):
        problems.append(f"m + log(l) is {lse.tolist()}, expected logsumexp {torch.logsumexp(xd, -1).tolist()}")
    return "; ".join(problems)


def _diagnose_merge(result: CheckResult, seen) -> None:
    for args, got in seen:
        _, _, err = _pair(got)
        if err:
            result.diagnose(f"on m1 of shape {tuple(args[0].shape)} your function {err}.")
            return
    # Exactly first; then on the rows where some block is not empty, since how two empty blocks
    # merge, (-inf, 0) or NaN, is a separate slip that a mistake in the rescaling does not decide.
    for nonempty_only in (False, True):
        for mistake in M.MERGE_MISTAKES:
            if mistake.by_output and all(_merge_fits(mistake, args, got, nonempty_only) for args, got in seen):
                result.diagnose(mistake.advice)
                return
    m, l, _ = _pair(seen[0][1])
    if isinstance(m, Tensor) and m.shape == (4,) and not matches(m, _merge_reference(MERGE_PUBLIC)[0]):
        result.diagnose("your m is not the larger of the two maxima: m = torch.maximum(m1, m2).")


def _merge_fits(mistake, args: Tuple[Tensor, ...], got: Any, nonempty_only: bool) -> bool:
    """Does the learner's (m, l) on ``args`` equal the mistake's (on every row, or on the rows
    where at least one of the two blocks is not empty)?"""
    m, l, _ = _pair(got)  # noqa: E741
    m_m, m_l = mistake.fn(*args)
    if not nonempty_only:
        return matches(m, m_m) and matches(l, m_l)
    if not (isinstance(m, Tensor) and isinstance(l, Tensor)):
        return False
    try:
        keep = torch.isfinite(torch.maximum(args[0], args[2])).expand(m_m.shape)
        if tuple(m.shape) != tuple(m_m.shape) or tuple(l.shape) != tuple(m_l.shape) or not bool(keep.any()):
            return False
        return matches(m[keep], m_m[keep]) and matches(l[keep], m_l[keep])
    except Exception:  # noqa: BLE001 - whatever the learner's tensors do, no diagnosis, no raise
        return False


# --------------------------------------------------------------------------- tiled attention

TILED_POINTS = 5.0
#: "Yours vs expected": the output (T=6 queries, Dv=5) of causal attention over S=10 keys in blocks
#: of 4, 4 and 2 (the causal mask aligned to the lower right).
TILED_PICTURE = (
    'q = torch.randn(6, 4, generator=g); k = torch.randn(10, 4, generator=g); v = torch.randn(10, 5, generator=g)\n'
    'ref = mhsa_lib.tiled_attention(q, k, v, 4, causal=True)\n'
    'yours = fn(q.clone(), k.clone(), v.clone(), 4, causal=True)\n'
    "axes = ('query', 'output feature')"
)
TILED_FORBIDDEN = (
    "scaled_dot_product_attention",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "multi_head_attention_forward",
)
# mhsa_lib's attention in every form; its merge (the earlier step), softmax and masks are fine.
TILED_LIBRARY = ("tiled_attention", "scaled_dot_product_attention", "_reference_attention", "_fast_attention",
                 "reference_backend", "fast_backend", "attend_heads", "MultiHeadAttention",
                 "FusedMultiHeadAttention", "GroupedQueryAttention", "TransformerBlock")

# The public case: T=4 queries, S=6 keys, Dk=3, Dv=2, block_size=4 (a block of 4, then one of 2).
TILED_PUBLIC_Q = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0], [-1.0, 1.0, 0.5], [0.5, 0.5, -2.0]])
TILED_PUBLIC_K = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, -1.0, 1.0],
                               [2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [-1.0, 0.0, -1.0]])
TILED_PUBLIC_V = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 3.0], [-1.0, 1.0], [0.5, 0.5], [3.0, -2.0]])
TILED_PUBLIC_BLOCK = 4

# The memory probe: T = S = 128 keys in blocks of 16; the (T, S) matrix has 16384 entries.
MEMORY_T, MEMORY_BLOCK, MEMORY_D = 128, 16, 8
MEMORY_LIMIT = MEMORY_T * MEMORY_T // 4
#: The stability part: every score near +LARGE_SCORE, then near -LARGE_SCORE.
LARGE_SCORE = 300.0


def _tiled_reference(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], causal: bool) -> Tensor:
    q, k, v = q.double(), k.double(), v.double()
    if causal:
        lower_right = mhsa_lib.causal_mask(q.shape[-2], k.shape[-2])
        mask = lower_right if mask is None else mask & lower_right
    return mhsa_lib.scaled_dot_product_attention(q, k, v, mask)[0]


def _call_tiled(fn: Any, q: Tensor, k: Tensor, v: Tensor, block: int, mask: Optional[Tensor] = None,
                causal: bool = False) -> Any:
    args: tuple = (q.clone(), k.clone(), v.clone(), block) + ((mask.clone(),) if mask is not None else ())
    return attempt(fn, *args, **({"causal": True} if causal else {}))


def _block_sizes(gen: torch.Generator, s: int) -> int:
    """A block size that does not divide S where S allows, else any: 1, < S, S, or > S."""
    choices = [b for b in range(2, s) if s % b] or [1, s, s + 2]
    return choices[int(torch.randint(0, len(choices), (1,), generator=gen))]


def _random_case(gen: torch.Generator, rank: int, s_greater: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    b, h, t, s, dk, dv = distinct_sizes(gen, 6, 2, 12)
    if s_greater and s < t:
        t, s = s, t
    lead = {2: (), 3: (b,), 4: (b, h)}[rank]
    return randn(gen, *lead, t, dk), randn(gen, *lead, s, dk), randn(gen, *lead, s, dv)


def _mask_for(gen: torch.Generator, kind: str, q: Tensor, k: Tensor, empty_row: bool) -> Tensor:
    t, s = q.shape[-2], k.shape[-2]
    if kind == "padding":
        lengths = torch.randint(1, s + 1, (q.shape[0],), generator=gen)
        lengths[0] = max(1, s - 3)
        mask = mhsa_lib.padding_mask(lengths, s)  # (B, 1, S)
        return mask.unsqueeze(1) if q.ndim == 4 else mask
    mask = torch.rand(q.shape[:-2] + (t, s), generator=gen) < 0.6
    if empty_row:
        mask[..., 1, :] = False  # query 1 may attend to nothing
    else:
        mask[..., :, 0] = True  # every query has at least one key
    return mask


@step("tiled_attention", forbidden=(TILED_FORBIDDEN, TILED_LIBRARY),
      points=TILED_POINTS, notebook="08_attention_without_the_matrix", home="tiled",
      reference=mhsa_lib.tiled_attention, isolate=("online_softmax_merge",), picture=TILED_PICTURE)
def check_tiled_attention(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``tiled_attention(q, k, v, block_size, mask=None, causal=False) -> out`` (max 5)."""
    seen: List[Tuple[tuple, bool, Any]] = []  # ((q, k, v, block, mask), causal, output) for the diagnosis

    q, k, v, block = TILED_PUBLIC_Q, TILED_PUBLIC_K, TILED_PUBLIC_V, TILED_PUBLIC_BLOCK
    try:
        got = call(fn, q.clone(), k.clone(), v.clone(), block)
    except LearnerError as e:
        result.zero_reason = f"tiled_attention(q, k, v, block_size={block}) {e}"
        return
    seen.append(((q, k, v, block, None), False, got))
    c = compare(got, _tiled_reference(q, k, v, None, False), what="out")
    result.add(f"public case: T=4 queries, S=6 keys, block_size={block} (blocks of 4 and 2 keys)", 1.0, c.ok, c.detail)

    n = 6 if hidden else 3
    fails = []
    for i in range(n):
        q, k, v = _random_case(gen, rank=(4, 3, 2)[i % 3])
        block = _block_sizes(gen, k.shape[-2]) if i % 2 == 0 else int(torch.randint(1, k.shape[-2] + 3, (1,), generator=gen))
        got = _call_tiled(fn, q, k, v, block)
        seen.append(((q, k, v, block, None), False, got))
        c = compare(got, _tiled_reference(q, k, v, None, False), what="out")
        if not c.ok:
            fails.append(f"q {tuple(q.shape)}, k {tuple(k.shape)}, block_size={block}: {c.detail}")
    result.add(f"{n} random cases without a mask (block sizes that do not divide S among them; 2-D to 4-D)",
               1.0, not fails, describe_failures(fails, 1))

    fails = []
    kinds = ("causal", "random", "padding", "random+causal") + (("causal", "padding", "random+causal") if hidden else ())
    for i, kind in enumerate(kinds):
        q, k, v = _random_case(gen, rank=3 + i % 2, s_greater=True)
        block = _block_sizes(gen, k.shape[-2])
        mask = None if kind == "causal" else _mask_for(gen, kind.split("+")[0], q, k, empty_row=False)
        causal = "causal" in kind
        got = _call_tiled(fn, q, k, v, block, mask, causal)
        seen.append(((q, k, v, block, mask), causal, got))
        c = compare(got, _tiled_reference(q, k, v, mask, causal), what="out")
        if not c.ok:
            fails.append(f"{kind} (T={q.shape[-2]}, S={k.shape[-2]}, block_size={block}): {c.detail}")
    result.add("masks: causal=True with S > T (lower right), random and padding masks, a mask with causal=True",
               1.0, not fails, describe_failures(fails, 1))

    q, k, v = _random_case(gen, rank=3, s_greater=True)
    block = _block_sizes(gen, k.shape[-2])
    mask = _mask_for(gen, "random", q, k, empty_row=True)
    got = _call_tiled(fn, q, k, v, block, mask)
    seen.append(((q, k, v, block, mask), False, got))
    c = compare(got, _tiled_reference(q, k, v, mask, False), what="out")
    result.add("a query with no allowed key gives output 0 (no NaN)", 0.5, c.ok, c.detail)

    fails = []
    for sign in (1.0, -1.0):
        q, k, v = _large_scores(gen, sign)
        block = _block_sizes(gen, k.shape[-2])
        got = _call_tiled(fn, q, k, v, block)
        seen.append(((q, k, v, block, None), False, got))
        c = compare(got, _tiled_reference(q, k, v, None, False), what="out", atol=2e-3, rtol=2e-3)
        if not c.ok:
            fails.append(f"scores around {sign * LARGE_SCORE:+.0f}: {c.detail}")
    result.add(f"stable for scores far from 0 (around +{LARGE_SCORE:.0f} and -{LARGE_SCORE:.0f})", 0.5, not fails, describe_failures(fails))

    q, k, v = (x.double() for x in _random_case(gen, rank=3))
    block = _block_sizes(gen, k.shape[-2])
    got = _call_tiled(fn, q, k, v, block)
    c = compare(got, _tiled_reference(q, k, v, None, False), what="out", dtype=torch.float64, atol=1e-12, rtol=1e-10)
    result.add("float64 inputs keep float64 precision", 0.25, c.ok, c.detail)

    q, k, v = (randn(gen, 1, MEMORY_T, MEMORY_D) for _ in range(3))
    try:
        numel, shape, out = observe("largest tensor", _largest_tensor, fn, q, k, v, MEMORY_BLOCK)
        c = compare(out, _tiled_reference(q, k, v, None, False), what="out")
        memory_detail = "" if c.ok else f"(T = S = {MEMORY_T}, block_size = {MEMORY_BLOCK}) {c.detail}"
        if not memory_detail and int(numel) >= MEMORY_LIMIT:
            memory_detail = (
                f"your function creates a tensor of shape {tuple(shape)} ({int(numel)} entries): the whole (T, S) "
                f"matrix has {MEMORY_T * MEMORY_T}; one block of scores has T·block_size = {MEMORY_T * MEMORY_BLOCK}")
    except (LearnerError, TypeError, ValueError) as e:
        memory_detail = f"your function {e}" if isinstance(e, LearnerError) else "no output to measure"
    result.add(f"never forms the (T, S) matrix: with T = S = {MEMORY_T} and block_size = {MEMORY_BLOCK}, the right "
               f"output and no tensor created with {MEMORY_LIMIT} entries or more", 0.75, not memory_detail, memory_detail)

    if not result.passed:
        _diagnose_tiled(result, seen)
    sq, sk, sv = _random_case(gen, rank=3, s_greater=True)
    shortcuts = find_shortcuts(fn, (sq, sk, sv, 3, mhsa_lib.causal_mask(sq.shape[-2], sk.shape[-2])),
                               TILED_FORBIDDEN, forbid_library=TILED_LIBRARY)
    if shortcuts:
        result.zero_reason = (f"your function calls {', '.join(shortcuts)}: this step asks you to write the "
                              "tiled loop yourself (torch.softmax, torch.exp and your merge are fine)")


def _large_scores(gen: torch.Generator, sign: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Inputs whose scores all lie near sign · LARGE_SCORE, spread by a few units: exp of them over/underflows."""
    b, t, s, dk, dv = distinct_sizes(gen, 5, 2, 12)
    a = randn(gen, dk, dtype=torch.float64)
    a = a / a.norm()
    k = a * (1.0 + 0.02 * torch.rand(b, s, 1, generator=gen, dtype=torch.float64))  # (B, S, Dk)
    k = k + 1e-3 * randn(gen, b, s, dk, dtype=torch.float64)
    q = (sign * LARGE_SCORE * math.sqrt(dk)) * a.expand(b, t, dk)  # (B, T, Dk)
    return q.float(), k.float(), randn(gen, b, s, dv)


class _LargestReturned(TorchFunctionMode):
    """The largest tensor any torch function or tensor method returns while the mode is on.

    Torch-level, unlike ``mhsa_lib.largest_intermediate``'s dispatch mode, whose first use in a
    process imports torch._dynamo (one to several seconds in a fresh kernel, which would land in
    this check's cell); a (T, S) score matrix is the result of a torch call (a product, einsum,
    a factory function, a method) whichever way the learner writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.shape = 0, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor) and t.numel() > self.numel:
                self.numel, self.shape = t.numel(), [int(n) for n in t.shape]
        return out


def _largest_tensor(fn: Any, q: Tensor, k: Tensor, v: Tensor, block: int) -> list:
    """[entries, shape, output]: the largest tensor any torch call returns while ``fn`` runs,
    and what ``fn`` returned (a tensor, else None)."""
    mode = _LargestReturned()
    with mode:
        out = fn(q, k, v, block)
    return [mode.numel, mode.shape, out.detach() if isinstance(out, Tensor) else None]


def _diagnose_tiled(result: CheckResult, seen) -> None:
    for (q, k, v, block, mask), causal, got in seen:
        if isinstance(got, LearnerError):
            where = f"q {tuple(q.shape)}, k {tuple(k.shape)}, block_size={block}" + (", causal=True" if causal else "")
            result.diagnose(f"on {where} your function {got}.")
            return
    for mistake in M.TILED_MISTAKES:
        if not mistake.by_output:
            continue
        fits = True
        for (q, k, v, block, mask), causal, got in seen:
            expected = mistake.fn(q, k, v, block, mask, causal)
            if not matches(got, expected, atol=2e-3, rtol=2e-3):
                fits = False
                break
        if fits:
            result.diagnose(mistake.advice)
            return
    for (q, k, v, block, mask), causal, got in seen:
        if isinstance(got, Tensor) and got.shape != _tiled_reference(q, k, v, mask, causal).shape:
            result.diagnose(f"your output has shape {tuple(got.shape)} for q {tuple(q.shape)} and v {tuple(v.shape)}: "
                            "expected (..., T, Dv), one row per query.")
            return
