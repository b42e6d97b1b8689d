"""Step checks for notebook 00's warm-ups: ``pairwise_scores(q, k)`` = Q Kᵀ per batch element."""

from __future__ import annotations

from typing import Callable, List, Optional

import torch

from ..core import CheckResult, LearnerError, call, close, compare, describe_failures, distinct_sizes, draw_seed, finish, randn
from ..mistakes import warmups as M

PAIRWISE_POINTS = 2.0
# The public case: B=1, T=2 queries, S=3 keys, D=2.
PAIRWISE_PUBLIC_Q = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]])
PAIRWISE_PUBLIC_K = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 1.0]]])


def _expected(q, k):
    return q.double() @ k.double().transpose(-2, -1)  # (B, T, D) @ (B, D, S) -> (B, T, S)


def check_pairwise_scores(fn: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Check ``pairwise_scores(q, k)``: q (B, T, D), k (B, S, D) -> (B, T, S) dot products (max 2)."""
    seed = draw_seed("pairwise_scores", seed, hidden)
    result = CheckResult("pairwise_scores", PAIRWISE_POINTS, seed=seed, hidden=hidden, fn_id=id(fn))
    gen = torch.Generator().manual_seed(seed)
    try:
        got = call(fn, PAIRWISE_PUBLIC_Q.clone(), PAIRWISE_PUBLIC_K.clone())
    except LearnerError as e:
        result.zero_reason = f"pairwise_scores(q, k) {e}"
        _diagnose_error(fn, result)
        return finish(result, quiet)
    c = compare(got, _expected(PAIRWISE_PUBLIC_Q, PAIRWISE_PUBLIC_K), what="scores")
    result.add("public case: B=1, T=2, S=3, D=2", 1.0, c.ok, c.detail)
    public_ok = c.ok

    fails: List[str] = []
    first_bad = None
    for _ in range(8 if hidden else 4):
        b, t, s, d = distinct_sizes(gen, 4)
        q, k = randn(gen, b, t, d), randn(gen, b, s, d)
        try:
            got = call(fn, q.clone(), k.clone())
        except LearnerError as e:
            got = None
            fails.append(f"q {tuple(q.shape)}, k {tuple(k.shape)}: {e}")
            continue
        c = compare(got, _expected(q, k), what="scores")
        if not c.ok:
            fails.append(f"q {tuple(q.shape)}, k {tuple(k.shape)}: {c.detail}")
            first_bad = first_bad or (q, k, got)
    result.add("random cases (B, T, S, D all different)", 0.75, not fails, describe_failures(fails, 1))

    q, k = randn(gen, 2, 3, 4, dtype=torch.float64), randn(gen, 2, 5, 4, dtype=torch.float64)
    try:
        c = compare(call(fn, q, k), _expected(q, k), what="scores", dtype=torch.float64, atol=1e-12, rtol=1e-10)
    except LearnerError as e:
        c = type(c)(False, str(e))
    result.add("float64 inputs keep float64", 0.25, c.ok, c.detail)

    if first_bad is not None:
        q, k, got = first_bad
        for mistake in M.PAIRWISE_MISTAKES:
            try:
                wrong = mistake.fn(q.double(), k.double())
            except Exception:
                continue
            if close(got, wrong):
                result.diagnose(_ADVICE[mistake.id])
                break
        else:
            if public_ok and close(got, _expected(PAIRWISE_PUBLIC_Q, PAIRWISE_PUBLIC_K)):
                result.diagnose(_ADVICE["pairwise-hard-coded"])
    return finish(result, quiet)


def _diagnose_error(fn: Callable, result: CheckResult) -> None:
    """The public case raised: try sizes where the usual wrong formulas run, and name them."""
    q, k = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)  # T == S
    try:
        got = call(fn, q, k)
    except LearnerError:
        got = None
    if got is not None and close(got, M.pairwise_scores_elementwise(q, k)):
        result.diagnose(_ADVICE["pairwise-elementwise"])
        return
    q, k = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 4, 4, dtype=torch.float64)  # S == D
    try:
        got = call(fn, q, k)
    except LearnerError:
        return
    if close(got, q @ k):
        result.diagnose(_ADVICE["pairwise-no-transpose"])


_ADVICE = {
    "pairwise-no-transpose": "q @ k multiplies (B, T, D) by (B, S, D): the inner sizes D and S do "
    "not match. Transpose the last two axes of k first: q @ k.transpose(-2, -1).",
    "pairwise-swapped": "you computed K Qᵀ, whose entry [b, j, i] pairs key j with query i: the "
    "scores must be (B, T, S), query rows and key columns: q @ k.transpose(-2, -1).",
    "pairwise-elementwise": "you multiplied q and k elementwise, which pairs query i only with key i; "
    "every query must meet every key: q @ k.transpose(-2, -1), or einsum('btd,bsd->bts', q, k).",
    "pairwise-hard-coded": "your function returns the public case's answer whatever the input: it "
    "seems hard-coded. Compute it from q and k.",
}
