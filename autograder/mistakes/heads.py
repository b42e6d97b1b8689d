"""Known mistakes in splitting and merging heads (notebooks 02 and 03; MISTAKES.md rows 10, 11)."""

from __future__ import annotations

from torch import Tensor

from .attention import Mistake


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


def merge_heads_no_transpose(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.reshape(b, t, h * dh)  # right shape, positions and heads mixed


def merge_heads_interleaved(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, t, h * dh)  # features ordered (Dh, H) instead of (H, Dh)


def merge_heads_sum(x: Tensor) -> Tensor:
    return x.sum(1)  # (B, T, Dh): heads added, not concatenated


SPLIT_HEADS_MISTAKES = [
    Mistake("split-view-no-transpose", split_heads_view_no_transpose, 10,
            "view(B, H, T, Dh) straight from (B, T, D), no transpose"),
    Mistake("split-no-transpose", split_heads_no_transpose, 10, "returns (B, T, H, Dh): no transpose"),
    Mistake("split-interleaved", split_heads_interleaved, None, "heads take interleaved features"),
]

MERGE_HEADS_MISTAKES = [
    Mistake("merge-no-transpose", merge_heads_no_transpose, 11,
            "reshapes (B, H, T, Dh) to (B, T, D) without transposing back"),
    Mistake("merge-interleaved", merge_heads_interleaved, None, "features of the heads interleaved"),
    Mistake("merge-sum", merge_heads_sum, None, "sums the heads instead of concatenating"),
]
