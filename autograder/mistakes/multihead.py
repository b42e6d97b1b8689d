"""Known mistakes in per-head attention (notebook 02) and the MultiHeadAttention module
(notebook 03): the wrong scale (1/√D instead of 1/√Dh), a split or merge without the transpose,
weights used as x @ W, a mask that is not passed on, heads that all use head 0's weights, a
missing output projection, and handing the work to torch's own multi-head attention.

The module mistakes are small classes with the course's fixed layout (q_proj, k_proj, v_proj,
out_proj), each written the way the bug is usually written.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..frame.mistakes import SAME_OUTPUT, catalogue, mistake
from .heads import merge_heads_no_transpose, split_heads_view_no_transpose


def _split(x: Tensor, h: int) -> Tensor:
    b, t, d = x.shape
    return x.view(b, t, h, d // h).transpose(1, 2)  # (B, T, D) -> (B, H, T, Dh)


def _merge(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)  # (B, H, T, Dh) -> (B, T, D)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], scale: float, keys_first: bool = False):
    # (B, H, T, S); with keys_first, K Qᵀ: one row per key (square only when S = T)
    scores = (k @ q.transpose(-2, -1) if keys_first else q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1))
    return weights @ v, weights


# --------------------------------------------------------------------------- notebook 02


def heads_attention_template(x, w_q, w_k, w_v, num_heads, mask=None, *, scale_width=None,
                             split=_split, transpose_weights=False, use_mask=True):
    if transpose_weights:
        q, k, v = x @ w_q, x @ w_k, x @ w_v  # x W instead of x Wᵀ
    else:
        q, k, v = x @ w_q.T, x @ w_k.T, x @ w_v.T  # (B, T, D)
    q, k, v = (split(t, num_heads) for t in (q, k, v))  # (B, H, T, Dh)
    width = q.shape[-1] if scale_width is None else scale_width
    return _attend(q, k, v, mask if use_mask else None, 1.0 / math.sqrt(width))[0]


def heads_attention_scale_by_model_width(x, w_q, w_k, w_v, num_heads, mask=None):
    return heads_attention_template(x, w_q, w_k, w_v, num_heads, mask, scale_width=x.shape[-1])


def heads_attention_split_no_transpose(x, w_q, w_k, w_v, num_heads, mask=None):
    return heads_attention_template(x, w_q, w_k, w_v, num_heads, mask, split=split_heads_view_no_transpose)


def heads_attention_weights_transposed(x, w_q, w_k, w_v, num_heads, mask=None):
    return heads_attention_template(x, w_q, w_k, w_v, num_heads, mask, transpose_weights=True)


def heads_attention_ignores_mask(x, w_q, w_k, w_v, num_heads, mask=None):
    return heads_attention_template(x, w_q, w_k, w_v, num_heads, mask, use_mask=False)


def heads_attention_inverted_mask(x, w_q, w_k, w_v, num_heads, mask=None):
    """Reads the mask as True = blocked (torch.nn.MultiheadAttention's polarity)."""
    return heads_attention_template(x, w_q, w_k, w_v, num_heads, None if mask is None else mask.logical_not())


def heads_loop_shared_weights(x, w_q: Sequence[Tensor], w_k, w_v, mask=None):
    """Every head uses head 0's weights."""
    return heads_loop_template(x, [w_q[0]] * len(w_q), [w_k[0]] * len(w_k), [w_v[0]] * len(w_v), mask)


def heads_loop_template(x, w_q, w_k, w_v, mask=None, *, scale_width=None):
    outs = []
    for wq, wk, wv in zip(w_q, w_k, w_v):
        q, k, v = x @ wq.T, x @ wk.T, x @ wv.T  # (B, T, Dh)
        width = q.shape[-1] if scale_width is None else scale_width
        outs.append(_attend(q, k, v, mask, 1.0 / math.sqrt(width))[0])
    return torch.stack(outs, dim=1)  # (B, H, T, Dh)


def heads_loop_scale_by_model_width(x, w_q, w_k, w_v, mask=None):
    return heads_loop_template(x, w_q, w_k, w_v, mask, scale_width=x.shape[-1])


def heads_loop_concatenated(x, w_q, w_k, w_v, mask=None):
    """Returns (B, T, H·Dh), the heads already concatenated, instead of (B, H, T, Dh)."""
    return _merge(heads_loop_template(x, w_q, w_k, w_v, mask))


HEADS_ATTENTION_MISTAKES = [
    mistake('heads-scale-model-width', heads_attention_scale_by_model_width,
            "you scale by 1/√D, the model width; each head scales by its own width: 1/√Dh = 1/√(D / H). "
            "(With GPT-2-like small weights this bug hides inside loose tolerances; it makes every head's "
            "softmax too flat.)"),
    mistake('heads-split-no-transpose', heads_attention_split_no_transpose,
            "your split reshapes (B, T, D) straight to (B, H, T, Dh): each 'head' then mixes features of "
            "different positions. Reshape to (B, T, H, Dh), then transpose(1, 2)."),
    mistake('heads-weights-transposed', heads_attention_weights_transposed,
            "you computed x @ W; weights follow nn.Linear's layout (out, in), so a projection is x @ W.T "
            "(rows of W are output features; head h owns rows [h·Dh, (h+1)·Dh))."),
    mistake('heads-ignores-mask', heads_attention_ignores_mask,
            "the mask is not passed on to the attention: with a causal mask, queries still see the future."),
    mistake('heads-inverted-mask', heads_attention_inverted_mask,
            "the mask's polarity is inverted: you block the keys where the mask is True, but True means 'may "
            "attend' (block where it is False, masked_fill(~mask, -inf)); torch.nn.MultiheadAttention uses the "
            "opposite convention."),
]

HEADS_LOOP_MISTAKES = [
    mistake('loop-scale-model-width', heads_loop_scale_by_model_width,
            "you scale by 1/√D, the model width; each head scales by its own width: 1/√Dh, the width of q_h "
            "(q_h.shape[-1])."),
    mistake('loop-shared-weights', heads_loop_shared_weights,
            "every head uses the same weights (head 0's): each head h must use its own w_q[h], w_k[h], w_v[h]."),
    mistake('loop-concatenated', heads_loop_concatenated,
            "you return the heads already concatenated, (B, T, H·Dh); this step returns them stacked, "
            "(B, H, T, Dh): torch.stack(outputs, dim=1)."),
]


# --------------------------------------------------------------------------- notebook 03


class BuggyMultiHeadAttention(nn.Module):
    """A readable MHA with the course's layout; subclasses switch one bug on."""

    scale_by_model_width = False
    split_no_transpose = False
    merge_no_transpose = False
    skip_out_proj = False
    ignore_mask = False
    keys_times_queries = False

    def __init__(self, d_model: int, num_heads: int, bias: bool = True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model: expected a multiple of num_heads={num_heads}, got {d_model}")
        self.d_model, self.num_heads = d_model, num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, return_weights: bool = False):
        split = split_heads_view_no_transpose if self.split_no_transpose else _split
        q, k, v = (split(p(x), self.num_heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        width = self.d_model if self.scale_by_model_width else q.shape[-1]
        heads, weights = _attend(q, k, v, None if self.ignore_mask else mask, 1.0 / math.sqrt(width),
                                 keys_first=self.keys_times_queries)
        merged = merge_heads_no_transpose(heads) if self.merge_no_transpose else _merge(heads)
        out = merged if self.skip_out_proj else self.out_proj(merged)
        return (out, weights) if return_weights else out


class MHANoOutputProjection(BuggyMultiHeadAttention):
    skip_out_proj = True


class MHAMaskNotPassed(BuggyMultiHeadAttention):
    ignore_mask = True


class MHAScaleByModelWidth(BuggyMultiHeadAttention):
    scale_by_model_width = True


class MHASplitNoTranspose(BuggyMultiHeadAttention):
    split_no_transpose = True


class MHAMergeNoTranspose(BuggyMultiHeadAttention):
    merge_no_transpose = True


class MHAKeysByQueries(BuggyMultiHeadAttention):
    """Scores K Qᵀ: one row per key."""
    keys_times_queries = True


class MHACallsTorch(BuggyMultiHeadAttention):
    """Hands the work to torch's own multi-head attention."""

    def forward(self, x, mask=None, return_weights=False):
        xt = x.transpose(0, 1)  # (T, B, D), torch's default layout
        in_w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        in_b = None if self.q_proj.bias is None else torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        out, w = F.multi_head_attention_forward(
            xt, xt, xt, self.d_model, self.num_heads, in_w, in_b, None, None, False, 0.0,
            self.out_proj.weight, self.out_proj.bias, training=False,
            attn_mask=None if mask is None else ~mask.expand(x.shape[0], self.num_heads, x.shape[1], x.shape[1]).reshape(-1, x.shape[1], x.shape[1]),
            need_weights=True, average_attn_weights=False,
        )
        out = out.transpose(0, 1)
        return (out, w) if return_weights else out


class MHAHeadsShareHeadZero(BuggyMultiHeadAttention):
    """Every head takes head 0's slice of each projection: the head loop slices rows [0, Dh) of
    W_q, W_k and W_v (and their biases) whatever the head."""

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, return_weights: bool = False):
        dh = self.d_model // self.num_heads
        heads = []
        for _ in range(self.num_heads):
            q, k, v = (F.linear(x, p.weight[:dh], None if p.bias is None else p.bias[:dh]).unsqueeze(1)
                       for p in (self.q_proj, self.k_proj, self.v_proj))  # (B, 1, T, Dh): head 0's rows
            heads.append(_attend(q, k, v, mask, 1.0 / math.sqrt(dh)))
        out = self.out_proj(_merge(torch.cat([o for o, _ in heads], dim=1)))  # (B, H, T, Dh) -> (B, T, D)
        weights = torch.cat([w for _, w in heads], dim=1)  # (B, H, T, T)
        return (out, weights) if return_weights else out


MHA_MISTAKES = [
    mistake('mha-no-out-proj', MHANoOutputProjection,
            "the output projection is missing: after merging the heads, apply self.out_proj (W^O), which "
            "mixes what the heads found."),
    mistake('mha-keys-by-queries', MHAKeysByQueries,
            "your scores are K Qᵀ (k @ q.transpose(-2, -1)), one row per key: the scores are Q Kᵀ, "
            "q @ k.transpose(-2, -1), one row per query, so that the softmax over the last axis weighs the keys."),
    mistake('mha-mask-not-passed', MHAMaskNotPassed,
            "the mask is not passed through to the attention: forward(x, mask) gives the same output as "
            "forward(x)."),
    mistake('mha-scale-model-width', MHAScaleByModelWidth,
            "you scale by 1/√D (the model width); each head scales by 1/√Dh = 1/√(D / H), its own width."),
    mistake('mha-split-no-transpose', MHASplitNoTranspose,
            "your split reshapes (B, T, D) straight to (B, H, T, Dh): reshape to (B, T, H, Dh) then "
            "transpose(1, 2)."),
    mistake('mha-merge-no-transpose', MHAMergeNoTranspose,
            "your merge reshapes (B, H, T, Dh) to (B, T, D) without transposing back: transpose(1, 2) first, "
            "then reshape."),
    mistake('mha-heads-share-head-zero', MHAHeadsShareHeadZero,
            "every head uses head 0's slice of the projections: head h must take its own rows "
            "[h·Dh, (h+1)·Dh) of W_q, W_k and W_v (the features [h·Dh, (h+1)·Dh) of q, k and v), "
            "so that each head computes its own attention."),
    mistake('mha-calls-torch', MHACallsTorch,
            "calls torch's multi-head attention.", flags=[SAME_OUTPUT]),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(HEADS_ATTENTION_MISTAKES, HEADS_LOOP_MISTAKES, MHA_MISTAKES)
