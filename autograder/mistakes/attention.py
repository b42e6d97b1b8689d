"""Known mistakes in notebook 01's steps (softmax, causal_mask, scaled_dot_product_attention).

Each is a small, runnable, wrong implementation, written the way learners write it. The checks
in :mod:`autograder.checks.attention` recognise a learner's output by matching it against these,
and tests/test_checks_attention.py proves every one of them loses points and is named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Mistake:
    """A buggy implementation, the MISTAKES.md row it stands for, and the words its diagnosis uses."""

    id: str
    fn: Callable
    row: Optional[int]
    message: str


# --------------------------------------------------------------------------- softmax


def softmax_wrong_axis(x: Tensor, dim: int = -1) -> Tensor:
    other = 0 if (dim % x.ndim) != 0 else x.ndim - 1
    e = torch.exp(x - x.amax(dim=other, keepdim=True))
    return e / e.sum(dim=other, keepdim=True)


def softmax_ignores_dim(x: Tensor, dim: int = -1) -> Tensor:
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def softmax_no_max_subtraction(x: Tensor, dim: int = -1) -> Tensor:
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_global_max(x: Tensor, dim: int = -1) -> Tensor:
    e = torch.exp(x - x.max())
    return e / e.sum(dim=dim, keepdim=True)


def softmax_global_sum(x: Tensor, dim: int = -1) -> Tensor:
    e = torch.exp(x - x.max())
    return e / e.sum()


def softmax_calls_torch(x: Tensor, dim: int = -1) -> Tensor:
    return torch.softmax(x, dim=dim)


SOFTMAX_MISTAKES = [
    Mistake("softmax-wrong-axis", softmax_wrong_axis, 1,
            "you normalise over the wrong axis: each slice along `dim` must sum to 1"),
    Mistake("softmax-ignores-dim", softmax_ignores_dim, 1,
            "you always normalise over the last axis and ignore the `dim` argument"),
    Mistake("softmax-no-max", softmax_no_max_subtraction, 2,
            "no max-subtraction: exp overflows to inf on large logits and inf/inf gives NaN"),
    Mistake("softmax-global-max", softmax_global_max, None,
            "you subtract the maximum of the whole tensor, not of each slice"),
    Mistake("softmax-global-sum", softmax_global_sum, 1,
            "you divide by the sum of the whole tensor, not of each slice along `dim`"),
    Mistake("softmax-calls-torch", softmax_calls_torch, 21,
            "calls torch's softmax, which this step asks you to write yourself"),
]


# --------------------------------------------------------------------------- causal mask


def _ij(t: int, s: int) -> Tuple[Tensor, Tensor]:
    return torch.arange(t).unsqueeze(-1), torch.arange(s).unsqueeze(0)


def causal_mask_diagonal_blocked(seq_len_q: int, seq_len_k: Optional[int] = None) -> Tensor:
    s = seq_len_q if seq_len_k is None else seq_len_k
    i, j = _ij(seq_len_q, s)
    return j < i + (s - seq_len_q)


def causal_mask_one_ahead(seq_len_q: int, seq_len_k: Optional[int] = None) -> Tensor:
    s = seq_len_q if seq_len_k is None else seq_len_k
    i, j = _ij(seq_len_q, s)
    return j <= i + (s - seq_len_q) + 1


def causal_mask_upper_left(seq_len_q: int, seq_len_k: Optional[int] = None) -> Tensor:
    s = seq_len_q if seq_len_k is None else seq_len_k
    return torch.ones(seq_len_q, s, dtype=torch.bool).tril()


def causal_mask_inverted(seq_len_q: int, seq_len_k: Optional[int] = None) -> Tensor:
    s = seq_len_q if seq_len_k is None else seq_len_k
    i, j = _ij(seq_len_q, s)
    return j > i + (s - seq_len_q)


def causal_mask_float(seq_len_q: int, seq_len_k: Optional[int] = None) -> Tensor:
    s = seq_len_q if seq_len_k is None else seq_len_k
    i, j = _ij(seq_len_q, s)
    return (j <= i + (s - seq_len_q)).float()


def causal_mask_additive(seq_len_q: int, seq_len_k: Optional[int] = None) -> Tensor:
    s = seq_len_q if seq_len_k is None else seq_len_k
    i, j = _ij(seq_len_q, s)
    return torch.zeros(seq_len_q, s).masked_fill(j > i + (s - seq_len_q), float("-inf"))


CAUSAL_MASK_MISTAKES = [
    Mistake("causal-diagonal-blocked", causal_mask_diagonal_blocked, 9,
            "off by one: each query must also see its own position (the diagonal)"),
    Mistake("causal-one-ahead", causal_mask_one_ahead, 9,
            "off by one: each query sees one future position"),
    Mistake("causal-upper-left", causal_mask_upper_left, 9,
            "aligned to the upper left when S > T"),
    Mistake("causal-inverted", causal_mask_inverted, 6,
            "polarity inverted: True must mean 'may attend'"),
    Mistake("causal-float", causal_mask_float, None, "returns a float 0/1 mask instead of a bool mask"),
    Mistake("causal-additive", causal_mask_additive, None,
            "returns an additive 0/-inf mask instead of a bool mask"),
]


# --------------------------------------------------------------------------- attention


def _attend(q, k, v, mask=None, *, scale=None, softmax_dim=-1, fill=float("-inf"),
            invert=False, after_softmax=False, use_mask=True):
    """The one template the attention mistakes below vary."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None and use_mask and invert:
        mask = ~mask
    if mask is not None and use_mask and not after_softmax:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask is not None and use_mask and after_softmax:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def attention_no_scale(q, k, v, mask=None):
    return _attend(q, k, v, mask, scale=1.0)


def attention_scale_by_dk(q, k, v, mask=None):
    return _attend(q, k, v, mask, scale=1.0 / q.shape[-1])


def attention_scale_by_model_width(q, k, v, mask=None):
    # With (B, H, T, Dh) inputs: 1/√(H·Dh) = 1/√D, the model width, instead of 1/√Dh.
    heads = q.shape[-3] if q.ndim >= 4 else 1
    return _attend(q, k, v, mask, scale=1.0 / math.sqrt(heads * q.shape[-1]))


def attention_softmax_over_queries(q, k, v, mask=None):
    return _attend(q, k, v, mask, softmax_dim=-2)


def attention_mask_inverted(q, k, v, mask=None):
    return _attend(q, k, v, mask, invert=True)


def attention_mask_after_softmax(q, k, v, mask=None):
    return _attend(q, k, v, mask, after_softmax=True)


def attention_masked_row_nan(q, k, v, mask=None):
    return _attend(q, k, v, mask)  # torch.softmax of an all -inf row is NaN


def attention_large_negative_fill(q, k, v, mask=None):
    return _attend(q, k, v, mask, fill=-1e9)  # an all-blocked row becomes uniform, not 0


def attention_ignores_mask(q, k, v, mask=None):
    return _attend(q, k, v, mask, use_mask=False)


def attention_calls_sdpa(q, k, v, mask=None):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out, _attend(q, k, v, mask)[1]


ATTENTION_MISTAKES = [
    Mistake("attention-no-scale", attention_no_scale, 3, "no 1/√d_k scale"),
    Mistake("attention-scale-dk", attention_scale_by_dk, 4, "scaled by 1/d_k instead of 1/√d_k"),
    Mistake("attention-scale-model-width", attention_scale_by_model_width, 5,
            "scaled by 1/√D (the model width H·Dh) instead of 1/√Dh"),
    Mistake("attention-softmax-queries", attention_softmax_over_queries, 1,
            "softmax over the queries instead of the keys"),
    Mistake("attention-mask-inverted", attention_mask_inverted, 6, "mask polarity inverted"),
    Mistake("attention-mask-after-softmax", attention_mask_after_softmax, 7,
            "mask applied after the softmax"),
    Mistake("attention-masked-row-nan", attention_masked_row_nan, 8, "a fully masked row gives NaN"),
    Mistake("attention-large-negative-fill", attention_large_negative_fill, 8,
            "a fully masked row gives uniform weights instead of 0"),
    Mistake("attention-ignores-mask", attention_ignores_mask, None, "the mask is ignored"),
    Mistake("attention-calls-sdpa", attention_calls_sdpa, 21,
            "calls F.scaled_dot_product_attention"),
]
