"""Known mistakes in cross-attention (notebook 03): keys and values taken from the decoder's own
input (self-attention instead of cross-attention), queries taken from the memory (the output comes
back (B, S, D)), a causal mask laid over the memory, the padding mask applied along the query axis
instead of the memory's, the scores scaled by the memory's length S or by the model width D, the
memory mask ignored, the heads merged without their transpose, the values taken from the decoder
while the keys come from the memory, and the softmax taken over the queries.

Each mistake is a small class with the course's layout (q_proj, k_proj, v_proj, out_proj) and the
step's forward ``(x, memory, memory_mask=None, return_weights=False)``, written the way the bug is
usually written.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..frame.mistakes import catalogue, mistake


def _split(x: Tensor, h: int) -> Tensor:
    b, t, d = x.shape
    return x.view(b, t, h, d // h).transpose(1, 2)  # (B, T, D) -> (B, H, T, Dh)


def _merge(x: Tensor, transpose: bool = True) -> Tensor:
    b, h, t, dh = x.shape
    if not transpose:  # (B, H, T, Dh) reshaped as it lies: heads and positions mixed up
        return x.reshape(b, t, h * dh)
    return x.transpose(1, 2).reshape(b, t, h * dh)  # (B, H, T, Dh) -> (B, T, D)


def cross_attention(x: Tensor, memory: Tensor, mask: Optional[Tensor], layers, h: int, *,
                    queries: str = "x", keys: str = "memory", scale: str = "dh", mask_use: str = "as given",
                    merge: str = "transpose", empty_rows: str = "zero", values: str = "keys",
                    softmax_dim: int = -1):
    """Cross-attention with one structural choice per keyword, the correct one by default.

    ``layers``: (q_proj, k_proj, v_proj, out_proj), callables; ``queries`` / ``keys``: which sequence
    the queries / the keys and values come from (``"x"`` or ``"memory"``); ``scale``: what the scores
    are divided by the square root of (``"dh"``, ``"d"``, ``"s"`` the key length, ``"none"``);
    ``mask_use``: ``"as given"``, ``"ignored"``, ``"inverted"`` (True read as
    blocked), ``"causal"`` (the given mask and a causal one
    over the (T, S) scores, aligned to the upper left), ``"query axis"`` (a (B, 1, 1, S) mask read
    as (B, 1, S, 1): with T ≠ S it does not broadcast against the (B, H, T, S) scores, and torch
    raises); ``merge``: ``"transpose"`` or ``"reshape"`` (the heads merged without moving H next
    to Dh); ``empty_rows``: what a query whose memory positions are all masked gets, ``"zero"``
    weights or ``"nan"`` (a bare softmax over -inf scores); ``values``: ``"keys"`` (from the keys'
    source) or ``"x"`` (v_proj on the decoder's input while the keys come from memory: with
    T ≠ S, weights @ v cannot multiply); ``softmax_dim``: the axis of the scores the softmax
    normalises, -1 (the memory's positions) or -2 (the queries).
    Returns (out, weights)."""
    q_proj, k_proj, v_proj, out_proj = layers
    src_q = x if queries == "x" else memory
    src_kv = memory if keys == "memory" else x
    src_v = src_kv if values == "keys" else x
    q, k, v = _split(q_proj(src_q), h), _split(k_proj(src_kv), h), _split(v_proj(src_v), h)  # (B, H, ·, Dh)
    width = {"dh": q.shape[-1], "d": q.shape[-1] * h, "s": k.shape[-2], "none": 1}[scale]
    scores = q @ k.transpose(-2, -1) / math.sqrt(width)  # (B, H, T, S)
    t, s = scores.shape[-2:]
    allowed = None if mask_use == "ignored" else mask
    if mask_use == "causal":
        causal = torch.ones(t, s, dtype=torch.bool, device=scores.device).tril()
        allowed = causal if allowed is None else allowed & causal
    if mask_use == "inverted" and allowed is not None:
        allowed = ~allowed  # True read as blocked: torch.nn.MultiheadAttention's polarity
    if mask_use == "query axis" and allowed is not None:
        allowed = allowed.transpose(-2, -1)  # (B, 1, 1, S) -> (B, 1, S, 1): broadcasts only if S == T
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim)
    weights = weights if empty_rows == "nan" else torch.nan_to_num(weights)
    return out_proj(_merge(weights @ v, transpose=merge == "transpose")), weights


class _CrossMistake(nn.Module):
    """The course's layout; ``choices`` says which wrong turn its forward takes."""

    choices: dict = {}

    def __init__(self, d_model: int, num_heads: int, bias: bool = True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not a multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, memory, memory_mask=None, return_weights=False, *, empty_rows="zero"):
        layers = (self.q_proj, self.k_proj, self.v_proj, self.out_proj)
        out, weights = cross_attention(x, memory, memory_mask, layers, self.num_heads, empty_rows=empty_rows,
                                       **self.choices)
        return (out, weights) if return_weights else out


class CrossKeysFromDecoder(_CrossMistake):
    """k = self.k_proj(x), v = self.v_proj(x): self-attention over the decoder's input."""

    choices = {"keys": "x"}


class CrossQueriesFromMemory(_CrossMistake):
    """q = self.q_proj(memory): the output has the memory's length, (B, S, D)."""

    choices = {"queries": "memory"}


class CrossCausalOnMemory(_CrossMistake):
    """A causal mask over the (T, S) scores, as in self-attention."""

    choices = {"mask_use": "causal"}


class CrossMaskOnQueryAxis(_CrossMistake):
    """The padding mask transposed onto the query axis."""

    choices = {"mask_use": "query axis"}


class CrossScaleByMemoryLength(_CrossMistake):
    """scores / sqrt(S), the number of memory positions."""

    choices = {"scale": "s"}


class CrossScaleByModelWidth(_CrossMistake):
    """scores / sqrt(D) instead of sqrt(Dh)."""

    choices = {"scale": "d"}


class CrossIgnoresMask(_CrossMistake):
    """memory_mask accepted and never used."""

    choices = {"mask_use": "ignored"}


class CrossMergeWithoutTranspose(_CrossMistake):
    """out.reshape(B, T, D) straight from (B, H, T, Dh), without transpose(1, 2)."""

    choices = {"merge": "reshape"}


class CrossValuesFromDecoder(_CrossMistake):
    """k = self.k_proj(memory) but v = self.v_proj(x): runs only when T == S."""

    choices = {"values": "x"}


class CrossSoftmaxOverQueries(_CrossMistake):
    """softmax(scores, dim=-2): each memory position's weights sum to 1 over the queries."""

    choices = {"softmax_dim": -2}


CROSS_MISTAKES = [
    mistake("cross_keys_from_decoder", CrossKeysFromDecoder,
            "Your keys and values come from x, the decoder's own input: that is self-attention. In "
            "cross-attention only the queries come from x; k_proj and v_proj read memory (B, S, D), "
            "so each decoder position can look at the encoder's output."),
    mistake("cross_queries_from_memory", CrossQueriesFromMemory,
            "Your queries come from memory, so the output has one row per memory position, (B, S, D). "
            "The queries come from x (B, T, D): the decoder asks, the memory answers, and the output "
            "has the decoder's shape (B, T, D)."),
    mistake("cross_causal_on_memory", CrossCausalOnMemory,
            "Your forward lays a causal mask over the (T, S) scores. The memory is the encoder's output "
            "for a source sequence that is known in full before decoding starts: decoder position t may "
            "read every source position. Use only memory_mask (padding); the decoder's own future is "
            "hidden by its self-attention's causal mask."),
    mistake("cross_mask_on_query_axis", CrossMaskOnQueryAxis,
            "Your forward fails only when it is given memory_mask: the padding mask (B, 1, 1, S) is over "
            "the memory's positions, the last axis of the (B, H, T, S) scores, and broadcasts against them "
            "as it is. Read or built along the query axis, as (B, 1, S, 1) or over T positions, it cannot "
            "fit when T ≠ S. Do not transpose it."),
    mistake("cross_scale_by_memory_length", CrossScaleByMemoryLength,
            "Your scores are divided by √S, the memory's length. The scale is 1/√Dh, the per-head width "
            "of a query and a key, whatever the lengths of the two sequences."),
    mistake("cross_scale_by_model_width", CrossScaleByModelWidth,
            "Your scores are divided by √D, the model width. Each head's dot products are over Dh = D / H "
            "features: scale by 1/√Dh."),
    mistake("cross_merge_without_transpose", CrossMergeWithoutTranspose,
            "Your forward merges the heads by reshaping (B, H, T, Dh) straight to (B, T, D): without "
            "transpose(1, 2) first, the reshape mixes heads and positions. Move H next to Dh, "
            "out.transpose(1, 2).reshape(B, T, D) (or mhsa_lib.merge_heads), before out_proj."),
    mistake("cross_values_from_decoder", CrossValuesFromDecoder,
            "Your values come from x, the decoder's input, while your keys come from memory: v_proj reads "
            "memory too, like k_proj. The weights (B, H, T, S) average the S memory positions' values; with "
            "values from x, (B, H, T, Dh), they cannot even multiply when T ≠ S."),
    mistake("cross_softmax_over_queries", CrossSoftmaxOverQueries,
            "Your softmax runs over the queries (dim=-2): each memory position's weights then sum to 1 over the "
            "decoder's positions. Each query's weights over the memory positions must sum to 1: softmax over "
            "the last axis of the (B, H, T, S) scores, dim=-1."),
    mistake("cross_ignores_mask", CrossIgnoresMask,
            "Your forward accepts memory_mask but never uses it: the padding positions of the memory still "
            "get weight. Fill the blocked scores with -inf before the softmax."),
]

CATALOGUE = catalogue(CROSS_MISTAKES)
