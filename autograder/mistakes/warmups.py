"""Known mistakes in notebook 00's warm-up ``pairwise_scores(q, k)``."""

from __future__ import annotations

from torch import Tensor

from .attention import Mistake


def pairwise_scores_swapped(q: Tensor, k: Tensor) -> Tensor:
    return k @ q.transpose(-2, -1)  # (B, S, T): scores[b, j, i]


def pairwise_scores_elementwise(q: Tensor, k: Tensor) -> Tensor:
    return (q * k).sum(-1)  # only works when T == S, and pairs i with i only


def pairwise_scores_hard_coded(q: Tensor, k: Tensor) -> Tensor:
    from ..checks.warmups import PAIRWISE_PUBLIC_Q, PAIRWISE_PUBLIC_K

    return PAIRWISE_PUBLIC_Q @ PAIRWISE_PUBLIC_K.transpose(-2, -1)


PAIRWISE_MISTAKES = [
    Mistake("pairwise-swapped", pairwise_scores_swapped, None, "computes K Qᵀ instead of Q Kᵀ"),
    Mistake("pairwise-elementwise", pairwise_scores_elementwise, None,
            "multiplies elementwise instead of all pairs"),
    Mistake("pairwise-hard-coded", pairwise_scores_hard_coded, 22, "hard-codes the public answer"),
]
