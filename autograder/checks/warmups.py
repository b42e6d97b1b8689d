"""Step checks for notebook 00's warm-ups: ``pairwise_scores(q, k)`` = Q Kᵀ per batch element."""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import torch
from torch import Tensor

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
    randn,
)
from ..frame.diagnosis import anything, matching_mistake, same_tensor
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
    calls: List[Tuple[Tuple[Tensor, Tensor], Any]] = []  # every ((q, k), output), for the diagnosis
    try:
        got = call(fn, PAIRWISE_PUBLIC_Q.clone(), PAIRWISE_PUBLIC_K.clone())
    except LearnerError as e:
        result.zero_reason = f"pairwise_scores(q, k) {e}"
        # The public sizes repeat (T = D): say what the error means on a case whose sizes all differ.
        b, t, s, d = distinct_sizes(gen, 4)
        q, k = randn(gen, b, t, d), randn(gen, b, s, d)
        again = attempt(fn, q.clone(), k.clone())
        tried = [((PAIRWISE_PUBLIC_Q, PAIRWISE_PUBLIC_K), e), ((q, k), again)]
        if not (isinstance(again, LearnerError) and _explain_error(result, again, (q, k), tried)):
            _explain_error(result, e, (PAIRWISE_PUBLIC_Q, PAIRWISE_PUBLIC_K), tried)
        return
    calls.append(((PAIRWISE_PUBLIC_Q, PAIRWISE_PUBLIC_K), got))
    c = compare(got, _expected(PAIRWISE_PUBLIC_Q, PAIRWISE_PUBLIC_K), what="scores")
    result.add("public case: B=1, T=2, S=3, D=2", 1.0, c.ok, c.detail)
    public_ok = c.ok

    fails: List[str] = []
    for i in range(8 if hidden else 4):
        b, t, s, d = distinct_sizes(gen, 4)
        q, k = randn(gen, b, t, d), randn(gen, b, s, d)
        got = attempt(fn, q.clone(), k.clone())
        calls.insert(i, ((q, k), got))  # (distinct sizes tell more apart: before the public case)
        if isinstance(got, LearnerError):
            fails.append(f"q {tuple(q.shape)}, k {tuple(k.shape)}: {got}")
            continue
        c = compare(got, _expected(q, k), what="scores")
        if not c.ok:
            fails.append(f"q {tuple(q.shape)}, k {tuple(k.shape)}: {c.detail}")
    result.add("random cases (B, T, S, D all different)", 0.75, not fails, describe_failures(fails, 1))

    q, k = randn(gen, 2, 3, 4, dtype=torch.float64), randn(gen, 2, 5, 4, dtype=torch.float64)
    got = attempt(fn, q, k)
    calls.append(((q, k), got))
    c = compare(got, _expected(q, k), what="scores", dtype=torch.float64, atol=1e-12, rtol=1e-10)
    result.add("float64 inputs keep float64", 0.25, c.ok, c.detail)

    if not result.passed:
        _diagnose(fn, result, calls, public_ok, gen)
    return


def _explain_error(result: CheckResult, error: Any, case: Tuple[Tensor, Tensor], calls) -> bool:
    """Name what a shape error of the learner's function means on ``case`` (consistent with the
    learner's other ``calls``); True if it did."""
    q, k = case
    letters = V.Letters({"B": q.shape[0], "T": q.shape[1], "S": k.shape[1], "D": q.shape[2]}) if q.ndim == 3 \
        else V.Letters({})
    others = [({"q": c[0], "k": c[1]}, str(y) if isinstance(y, LearnerError) else None) for c, y in calls
              if c is not case]
    text = V.explain_error(str(error), {"q": q, "k": k}, letters, _SHAPES, V.PAIRWISE_SHAPE_TOKENS,
                           V.pairwise_context(q, k, letters), others)
    if text is None:
        return False
    result.diagnose(text[:1].upper() + text[1:])
    return True


def _produce(m, case):
    return m.fn(*case)


def _diagnose(fn: Callable, result: CheckResult, calls, public_ok: bool, gen: torch.Generator) -> None:
    for case, got in calls:
        if isinstance(got, LearnerError):
            if not _explain_error(result, got, case, calls):
                result.diagnose(f"on q {tuple(case[0].shape)}, k {tuple(case[1].shape)} your function {got}.")
            break
    seen = [(case, got) for case, got in calls if isinstance(got, Tensor)]
    bad = [(case, got) for case, got in seen if not close(got, _expected(*case))]
    if not bad:
        return
    found = matching_mistake(seen, (m for m in M.PAIRWISE_MISTAKES if m.id in _BY_OUTPUT), _produce,
                             same=same_tensor, usable=anything)
    found = found or matching_mistake(seen, V.pairwise_variants(), _produce, same=same_tensor, usable=anything)
    if found is not None:
        result.diagnose(found.advice + ("" if found.advice.endswith(".") else "."))
        return
    if public_ok and V.hard_coded(fn, gen, (PAIRWISE_PUBLIC_Q, PAIRWISE_PUBLIC_K), _expected,
                                  lambda y, e, tol: close(y, e, atol=tol, rtol=tol)):
        result.diagnose(M.CATALOGUE["pairwise-hard-coded"].advice)
        return
    # What is true of the outputs, said as what it is.
    (q, k), got = bad[0]
    want = _expected(q, k)
    if tuple(got.shape) != tuple(want.shape):
        result.diagnose(f"on q {tuple(q.shape)} and k {tuple(k.shape)} your scores have shape {tuple(got.shape)}; "
                        f"they must be (B, T, S) = {tuple(want.shape)}.")


#: The hand-written mistakes the output search tries first (the variants follow).
_BY_OUTPUT = ("pairwise-swapped", "pairwise-elementwise")
_SHAPES = V.pairwise_shape_candidates()
