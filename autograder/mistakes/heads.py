"""Known mistakes in splitting, merging and repeating heads (notebooks 02, 03 and 05): the axes
not swapped, features interleaved across heads, key/value heads tiled instead of interleaved."""

from __future__ import annotations

from torch import Tensor

import mhsa_lib

from ..frame.mistakes import SAME_OUTPUT, catalogue, mistake


def split_heads_view_no_transpose(x: Tensor, num_heads: int) -> Tensor:
    b, t, d = x.shape
    return x.reshape(b, num_heads, t, d // num_heads)  # right shape, features of all positions mixed


def split_heads_no_transpose(x: Tensor, num_heads: int) -> Tensor:
    b, t, d = x.shape
    return x.reshape(b, t, num_heads, d // num_heads)  # (B, T, H, Dh): the axes not swapped


def split_heads_interleaved(x: Tensor, num_heads: int) -> Tensor:
    b, t, d = x.shape
    # Head h takes every H-th feature instead of the block [h·Dh, (h+1)·Dh).
    return x.reshape(b, t, d // num_heads, num_heads).permute(0, 3, 1, 2)


def split_heads_positions_last(x: Tensor, num_heads: int) -> Tensor:
    b, t, d = x.shape
    # The positions moved behind the features: (B, H, Dh, T), each head's matrix transposed.
    return x.reshape(b, t, num_heads, -1).movedim(1, -1)


def merge_heads_no_transpose(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.reshape(b, t, h * dh)  # right shape, positions and heads mixed


def merge_heads_interleaved(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, t, h * dh)  # features ordered (Dh, H) instead of (H, Dh)


def merge_heads_sum(x: Tensor) -> Tensor:
    return x.sum(1)  # (B, T, Dh): heads added, not concatenated


SPLIT_HEADS_MISTAKES = [
    mistake('split-view-no-transpose', split_heads_view_no_transpose,
            "you reshaped (B, T, D) straight to (B, H, T, Dh): the shape is right but each 'head' now mixes features of different positions. Reshape to (B, T, H, Dh) first, then swap the T and H axes: x.view(B, T, H, Dh).transpose(1, 2)."),
    mistake('split-no-transpose', split_heads_no_transpose,
            'your output is (B, T, H, Dh): the heads must come before the positions, (B, H, T, Dh). Add .transpose(1, 2) after the reshape.'),
    mistake('split-positions-last', split_heads_positions_last,
            "your output is (B, H, Dh, T): the heads come first, but each head's positions and features are swapped (a head is a (T, Dh) matrix, one row per position). After the reshape to (B, T, H, Dh) swap only the T and H axes: transpose(1, 2), or permute(0, 2, 1, 3)."),
    mistake('split-interleaved', split_heads_interleaved,
            'head h takes every H-th feature; it must own the contiguous block [h·Dh, (h+1)·Dh). Reshape to (B, T, H, Dh) (H before Dh), not (B, T, Dh, H).'),
]

MERGE_HEADS_MISTAKES = [
    mistake('merge-no-transpose', merge_heads_no_transpose,
            'you reshaped (B, H, T, Dh) to (B, T, D) without transposing back: the shape is right but positions and heads are mixed. Swap H and T first: x.transpose(1, 2).reshape(B, T, H * Dh) (reshape, or .contiguous().view, since the transpose makes the tensor non-contiguous).'),
    mistake('merge-interleaved', merge_heads_interleaved,
            "your features come out ordered (Dh, H): head h's features must land in the contiguous block [h·Dh, (h+1)·Dh). Transpose to (B, T, H, Dh), then reshape."),
    mistake('merge-sum', merge_heads_sum,
            'you added the heads together: merging concatenates them, (B, T, H·Dh); the output projection W^O mixes them afterwards.'),
]


# --------------------------------------------------------------------------- repeat_kv


def repeat_kv_tiled(x: Tensor, n_rep: int) -> Tensor:
    """``repeat`` tiles the whole set of heads: query head j gets K/V head j % G, not j // n_rep."""
    return x.repeat(1, n_rep, 1, 1)


def repeat_kv_sequence_axis(x: Tensor, n_rep: int) -> Tensor:
    return x.repeat_interleave(n_rep, dim=2)  # (B, G, S·n_rep, Dh): copies along the positions


def repeat_kv_no_reshape(x: Tensor, n_rep: int) -> Tensor:
    b, g, s, dh = x.shape
    return x[:, :, None].expand(b, g, n_rep, s, dh)  # (B, G, n_rep, S, Dh): the reshape forgotten


def repeat_kv_calls_library(x: Tensor, n_rep: int) -> Tensor:
    return mhsa_lib.repeat_kv(x, n_rep)


REPEAT_KV_MISTAKES = [
    mistake('repeat-kv-tiled', repeat_kv_tiled,
            'you tile the whole set of heads (x.repeat(1, n_rep, 1, 1) gives heads 0, 1, …, 0, 1, …): query head j then uses K/V head j % G. The copies of one K/V head must sit next to each other, so that query head j uses head j // n_rep: x.repeat_interleave(n_rep, dim=1).'),
    mistake('repeat-kv-sequence-axis', repeat_kv_sequence_axis,
            'you repeat along the positions (dim=2), which makes the sequence longer: repeat along the heads, dim=1.'),
    mistake('repeat-kv-no-reshape', repeat_kv_no_reshape,
            'you return (B, G, n_rep, S, Dh): after the expand, reshape to (B, G·n_rep, S, Dh).'),
    mistake('repeat-kv-calls-library', repeat_kv_calls_library,
            'Calls mhsa_lib.repeat_kv.', flags=[SAME_OUTPUT]),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(SPLIT_HEADS_MISTAKES, MERGE_HEADS_MISTAKES, REPEAT_KV_MISTAKES)
