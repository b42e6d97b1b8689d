"""Step checks for notebook 00's warm-ups: ``pairwise_scores(q, k)`` = Q Kᵀ per batch element."""

from __future__ import annotations

from typing import Any, Callable, List

import torch

from ..frame import CheckResult, LearnerError, call, close, compare, describe_failures, distinct_sizes, randn
from ..frame.registry import step
from ..mistakes import warmups as M

PAIRWISE_POINTS = 2.0
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
PAIRWISE_PICTURE = (
    'q = torch.randn(1, 5, 3, generator=g); k = torch.randn(1, 6, 3, generator=g)\n'
    'yours = fn(q, k); ref = q @ k.transpose(-2, -1)'
)
# The public case: B=1, T=2 queries, S=3 keys, D=2.
PAIRWISE_PUBLIC_Q = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]])
PAIRWISE_PUBLIC_K = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 1.0]]])


def _expected(q, k):
    return q.double() @ k.double().transpose(-2, -1)  # (B, T, D) @ (B, D, S) -> (B, T, S)


@step("pairwise_scores", points=PAIRWISE_POINTS, notebook="00_orientation", home=None, kind="warmup", reference=_expected, reference_name="the reference q @ k.transpose(-2, -1)", picture=PAIRWISE_PICTURE)
def check_pairwise_scores(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``pairwise_scores(q, k)``: q (B, T, D), k (B, S, D) -> (B, T, S) dot products (max 2)."""
    try:
        got = call(fn, PAIRWISE_PUBLIC_Q.clone(), PAIRWISE_PUBLIC_K.clone())
    except LearnerError as e:
        result.zero_reason = f"pairwise_scores(q, k) {e}"
        _diagnose_error(fn, result)
        return
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
                result.diagnose(mistake.advice)
                break
        else:
            if public_ok and close(got, _expected(PAIRWISE_PUBLIC_Q, PAIRWISE_PUBLIC_K)):
                result.diagnose(M.CATALOGUE["pairwise-hard-coded"].advice)
    return


def _diagnose_error(fn: Callable, result: CheckResult) -> None:
    """The public case raised: try sizes where the usual wrong formulas run, and name them."""
    q, k = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)  # T == S
    try:
        got = call(fn, q, k)
    except LearnerError:
        got = None
    if got is not None and close(got, M.pairwise_scores_elementwise(q, k)):
        result.diagnose(M.CATALOGUE["pairwise-elementwise"].advice)
        return
    q, k = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 4, 4, dtype=torch.float64)  # S == D
    try:
        got = call(fn, q, k)
    except LearnerError:
        return
    if close(got, q @ k):
        result.diagnose(_NO_TRANSPOSE)


_NO_TRANSPOSE = 'q @ k multiplies (B, T, D) by (B, S, D): the inner sizes D and S do not match. Transpose the last two axes of k first: q @ k.transpose(-2, -1).'
