"""Known mistakes in notebook 00's warm-up ``pairwise_scores(q, k)``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..frame.mistakes import catalogue, mistake


def pairwise_scores_swapped(q: Tensor, k: Tensor) -> Tensor:
    return k @ q.transpose(-2, -1)  # (B, S, T): scores[b, j, i]


def pairwise_scores_elementwise(q: Tensor, k: Tensor) -> Tensor:
    return (q * k).sum(-1)  # only works when T == S, and pairs i with i only


def pairwise_scores_hard_coded(q: Tensor, k: Tensor) -> Tensor:
    # The public case's answer, typed in from the notebook's printed output.
    return torch.tensor([[[1.0, 2.0, 5.0], [0.0, -1.0, -1.0]]])


PAIRWISE_MISTAKES = [
    mistake('pairwise-swapped', pairwise_scores_swapped,
            'you computed K Qᵀ, whose entry [b, j, i] pairs key j with query i: the scores must be (B, T, S), query rows and key columns: q @ k.transpose(-2, -1).'),
    mistake('pairwise-elementwise', pairwise_scores_elementwise,
            "you multiplied q and k elementwise, which pairs query i only with key i; every query must meet every key: q @ k.transpose(-2, -1), or einsum('btd,bsd->bts', q, k)."),
    mistake('pairwise-hard-coded', pairwise_scores_hard_coded,
            "your function returns the public case's answer whatever the input: it seems hard-coded. Compute it from q and k."),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(PAIRWISE_MISTAKES)
