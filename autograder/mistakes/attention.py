"""Known mistakes in notebook 01's steps (softmax, causal_mask, scaled_dot_product_attention).

Each is a small, runnable, wrong implementation, written the way learners write it. The checks
in :mod:`autograder.checks.attention` recognise a learner's output by matching it against these,
and tests/test_checks_attention.py proves every one of them loses points and is named.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..frame.mistakes import SAME_OUTPUT, catalogue, mistake

# --------------------------------------------------------------------------- softmax


# Each mistake differs from a right softmax in one respect only: like a right one, it gives zeros
# for a slice that is all -inf (where the maximum is not finite it subtracts 0, where the sum is 0
# it divides by 1).


def _finite(m: Tensor) -> Tensor:
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def _divide(e: Tensor, total: Tensor) -> Tensor:
    return e / torch.where(total > 0, total, torch.ones_like(total))


def softmax_wrong_axis(x: Tensor, dim: int = -1) -> Tensor:
    other = 0 if (dim % x.ndim) != 0 else x.ndim - 1
    e = torch.exp(x - _finite(x.amax(dim=other, keepdim=True)))
    return _divide(e, e.sum(dim=other, keepdim=True))


def softmax_ignores_dim(x: Tensor, dim: int = -1) -> Tensor:
    e = torch.exp(x - _finite(x.amax(dim=-1, keepdim=True)))
    return _divide(e, e.sum(dim=-1, keepdim=True))


def softmax_no_max_subtraction(x: Tensor, dim: int = -1) -> Tensor:
    e = torch.exp(x)
    return _divide(e, e.sum(dim=dim, keepdim=True))


def softmax_global_max(x: Tensor, dim: int = -1) -> Tensor:
    e = torch.exp(x - _finite(x.max()))
    return _divide(e, e.sum(dim=dim, keepdim=True))


def softmax_global_sum(x: Tensor, dim: int = -1) -> Tensor:
    e = torch.exp(x - _finite(x.max()))
    return _divide(e, e.sum())


def softmax_shift_by_min(x: Tensor, dim: int = -1) -> Tensor:
    """Shifts each slice by its minimum: every exponent is then >= 0, and a large spread overflows."""
    e = torch.exp(x - _finite(x.amin(dim=dim, keepdim=True)))
    return _divide(e, e.sum(dim=dim, keepdim=True))


def softmax_calls_torch(x: Tensor, dim: int = -1) -> Tensor:
    return torch.softmax(x, dim=dim)


SOFTMAX_MISTAKES = [
    mistake('softmax-wrong-axis', softmax_wrong_axis,
            'you normalise over the wrong axis: with dim={dim}, every slice along axis {dim} must sum to 1. Use dim in both the max and the sum (with keepdim=True).'),
    mistake('softmax-ignores-dim', softmax_ignores_dim,
            'you always normalise over the last axis and ignore the `dim` argument: softmax(x, dim={dim}) must normalise along axis {dim}.'),
    mistake('softmax-no-max', softmax_no_max_subtraction,
            'no max-subtraction: on large logits exp(x) overflows to inf and inf/inf gives NaN. Subtract x.amax(dim, keepdim=True) before exp: softmax(x) = softmax(x - c).'),
    mistake('softmax-global-max', softmax_global_max,
            'you subtract the maximum of the whole tensor; a row far below it underflows to exp(...) = 0 everywhere and 0/0 gives NaN. Subtract the maximum of each slice along `dim` (x.amax(dim, keepdim=True)).'),
    mistake('softmax-global-sum', softmax_global_sum,
            'you divide by the sum over the whole tensor; divide by the sum along `dim` (keepdim=True), so that each slice sums to 1.'),
    mistake('softmax-shift-by-min', softmax_shift_by_min,
            'you subtract the minimum of each slice, not its maximum: every exponent x - min is then >= 0, and on a '
            'large spread exp overflows to inf (inf/inf = NaN). Subtract x.amax(dim, keepdim=True), so that every '
            'exponent is <= 0 and the largest is exactly 0.'),
    mistake('softmax-calls-torch', softmax_calls_torch,
            "Calls torch's softmax, which this step asks you to write yourself.", flags=[SAME_OUTPUT]),
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
    mistake('causal-diagonal-blocked', causal_mask_diagonal_blocked,
            'off by one: your mask blocks the diagonal, but each query may attend to its own position (use <=, or torch.tril with diagonal=0).'),
    mistake('causal-one-ahead', causal_mask_one_ahead,
            'off by one: each query may also see the next position, so the future leaks in. Query i may see keys up to its own position only.'),
    mistake('causal-upper-left', causal_mask_upper_left,
            'aligned to the upper left when S > T: with a cache, query i sits at absolute position S - T + i, so the last query must see every key (torch.tril(..., diagonal=S - T)).'),
    mistake('causal-inverted', causal_mask_inverted,
            "polarity inverted: in this course True means 'may attend', so the lower triangle must be True (torch.nn.MultiheadAttention uses the opposite convention)."),
    mistake('causal-float', causal_mask_float,
            'return a bool tensor (True = may attend), not 0/1 numbers: masked_fill and F.scaled_dot_product_attention read a float mask as values to add to the scores.'),
    mistake('causal-additive', causal_mask_additive,
            "you return an additive 0/-inf mask; this course's masks are bool (True = may attend). Return the comparison itself, e.g. j <= i + (S - T)."),
]


# --------------------------------------------------------------------------- attention


def _attend(q, k, v, mask=None, *, scale=None, softmax_dim=-1, fill=float("-inf"),
            invert=False, after_softmax=False, use_mask=True, empty_nan=False):
    """The one template the attention mistakes below vary, each in one respect only (a query with
    no allowed key gets weights 0, except in the mistake that gives it NaN)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None and use_mask and invert:
        mask = ~mask
    if mask is not None and use_mask and not after_softmax:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask is not None and use_mask and after_softmax:
        weights = weights.masked_fill(~mask, 0.0)
    if not empty_nan:
        weights = torch.nan_to_num(weights, nan=0.0)
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
    return _attend(q, k, v, mask, empty_nan=True)  # torch.softmax of an all -inf row is NaN


def attention_large_negative_fill(q, k, v, mask=None):
    return _attend(q, k, v, mask, fill=-1e9)  # an all-blocked row becomes uniform, not 0


def attention_ignores_mask(q, k, v, mask=None):
    return _attend(q, k, v, mask, use_mask=False)


def attention_calls_sdpa(q, k, v, mask=None):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out, _attend(q, k, v, mask)[1]


ATTENTION_MISTAKES = [
    mistake('attention-no-scale', attention_no_scale,
            'no 1/√d_k scale: your weights are softmax(QKᵀ). Divide the scores by √d_k = √{dk}, or the softmax saturates as d_k grows.'),
    mistake('attention-scale-dk', attention_scale_by_dk,
            "you scale by 1/d_k = 1/{dk}; the scale is 1/√d_k = 1/√{dk}. It keeps the scores' variance near 1 when q and k have unit variance."),
    mistake('attention-scale-model-width', attention_scale_by_model_width,
            'you scale by 1/√D = 1/√{D} (the model width H·Dh = {heads}·{dk}); each head scales by its own width: 1/√Dh = 1/√{dk} = 1/√q.shape[-1].'),
    mistake('attention-softmax-queries', attention_softmax_over_queries,
            "your weights sum to 1 over the queries, not the keys: softmax over dim=-1 (each query's row of weights sums to 1)."),
    mistake('attention-mask-inverted', attention_mask_inverted,
            "mask polarity inverted: True means 'may attend', so block the positions where the mask is False (masked_fill(~mask, -inf)). torch.nn.MultiheadAttention uses the opposite convention."),
    mistake('attention-mask-after-softmax', attention_mask_after_softmax,
            'the mask is applied after the softmax: the blocked weights are zeroed but the rows no longer sum to 1. Fill the blocked scores with -inf before the softmax.'),
    mistake('attention-masked-row-nan', attention_masked_row_nan,
            'the weights of a query with no allowed key are NaN: every score of its row is -inf, and a softmax of such a row computes -inf - (-inf) = NaN, as torch.softmax does (zeroing the blocked weights after a softmax and dividing by their sum gives 0/0 = NaN there too). Use a softmax that gives zeros for an all -inf row, as your softmax of section 2 must (where the maximum is not finite subtract 0, where the sum is 0 divide by 1).'),
    mistake('attention-large-negative-fill', attention_large_negative_fill,
            'a fully masked row gives uniform weights (the mean of all values) instead of 0: filling with a large negative number instead of -inf makes a row with no allowed key attend everywhere. Such a row must give weights 0 and output 0.'),
    mistake('attention-ignores-mask', attention_ignores_mask,
            'your output is what attention gives with no mask at all: the mask argument is not used.'),
    mistake('attention-calls-sdpa', attention_calls_sdpa,
            'Calls F.scaled_dot_product_attention.', flags=[SAME_OUTPUT]),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(SOFTMAX_MISTAKES, CAUSAL_MASK_MISTAKES, ATTENTION_MISTAKES)
