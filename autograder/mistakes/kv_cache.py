"""Known mistakes in notebook 05's steps (repeat_kv, GroupedQueryAttention, KVCache,
kv_cache_bytes): MISTAKES.md rows 19, 20 and 21, and a few more seen in practice.

Shape letters: B batch, T new tokens, S cached + new positions, D model width, H query heads,
G key/value heads, Dh = D / H.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import Tensor, nn

import mhsa_lib

from .attention import Mistake

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
    Mistake("repeat-kv-tiled", repeat_kv_tiled, 19, "repeat instead of repeat_interleave"),
    Mistake("repeat-kv-sequence-axis", repeat_kv_sequence_axis, None, "repeats along the positions"),
    Mistake("repeat-kv-no-reshape", repeat_kv_no_reshape, None, "returns (B, G, n_rep, S, Dh)"),
    Mistake("repeat-kv-calls-library", repeat_kv_calls_library, 21, "calls mhsa_lib.repeat_kv"),
]


# --------------------------------------------------------------------------- GroupedQueryAttention


class BuggyGroupedQueryAttention(nn.Module):
    """A readable GQA with the course's layout; subclasses switch one bug on."""

    tiled = False  # repeat instead of repeat_interleave
    causal_upper_left = False  # tril(T, S) without the offset S - T
    causal_blocks_cache = False  # new queries see only the new keys, causally
    ignores_cache = False  # the cache is never read or written

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, bias: bool = False):
        super().__init__()
        if d_model % num_heads or num_heads % num_kv_heads:
            raise ValueError(f"expected num_kv_heads | num_heads | d_model, got {num_kv_heads}, {num_heads}, {d_model}")
        self.h, self.g, self.dh = num_heads, num_kv_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, num_kv_heads * self.dh, bias=bias)
        self.v_proj = nn.Linear(d_model, num_kv_heads * self.dh, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, cache=None, *, causal: bool = False) -> Tensor:
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)  # (B, G, T, Dh)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)  # (B, G, T, Dh)
        if cache is not None and not self.ignores_cache:
            k, v = cache.update(k, v)  # (B, G, S, Dh)
        s = k.shape[-2]
        n_rep = self.h // self.g
        if self.tiled:
            k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
        else:
            k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)  # (B, H, S, Dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.dh)  # (B, H, T, S)
        allowed = torch.ones(t, s, dtype=torch.bool, device=x.device)
        if causal:
            if self.causal_upper_left:
                allowed = torch.ones(t, s, dtype=torch.bool, device=x.device).tril()
            elif self.causal_blocks_cache:
                allowed = torch.cat([torch.zeros(t, s - t, dtype=torch.bool, device=x.device),
                                     torch.ones(t, t, dtype=torch.bool, device=x.device).tril()], dim=1)
            else:
                allowed = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(diagonal=s - t)
        if mask is not None:
            allowed = allowed & mask
        weights = torch.nan_to_num(torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(b, t, d)  # (B, H, T, Dh) -> (B, T, D)
        return self.out_proj(out)


class GQATiled(BuggyGroupedQueryAttention):
    tiled = True


class GQACausalUpperLeft(BuggyGroupedQueryAttention):
    causal_upper_left = True


class GQACausalBlocksCache(BuggyGroupedQueryAttention):
    causal_blocks_cache = True


class GQAIgnoresCache(BuggyGroupedQueryAttention):
    ignores_cache = True


class GQACallsLibrary(BuggyGroupedQueryAttention):
    """Hands the attention to mhsa_lib's attend_heads."""

    def forward(self, x, mask=None, cache=None, *, causal=False):
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        out, _ = mhsa_lib.multihead.attend_heads(q, k, v, mask, causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


GQA_MISTAKES = [
    Mistake("gqa-tiled", GQATiled, 19, "repeat instead of repeat_interleave"),
    Mistake("gqa-causal-upper-left", GQACausalUpperLeft, 20, "causal mask not offset by the cache length"),
    Mistake("gqa-causal-blocks-cache", GQACausalBlocksCache, 20, "new queries cannot see the cached keys"),
    Mistake("gqa-ignores-cache", GQAIgnoresCache, 20, "the cache is not used"),
    Mistake("gqa-calls-library", GQACallsLibrary, 21, "calls mhsa_lib's attend_heads"),
]


# --------------------------------------------------------------------------- KVCache


class BuggyKVCache:
    """A growing cache; subclasses switch one bug on."""

    def __init__(self) -> None:
        self.k: Optional[Tensor] = None
        self.v: Optional[Tensor] = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def join(self, old: Tensor, new: Tensor) -> Tensor:
        return torch.cat([old, new], dim=-2)  # (B, G, S_old, Dh) + (B, G, T, Dh) -> (B, G, S, Dh)

    def update(self, k: Tensor, v: Tensor):
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = self.join(self.k, k), self.join(self.v, v)
        return self.k, self.v

    def reset(self) -> None:
        self.k = self.v = None


class KVCachePrepends(BuggyKVCache):
    def join(self, old, new):
        return torch.cat([new, old], dim=-2)  # newest first


class KVCacheHeadAxis(BuggyKVCache):
    def join(self, old, new):
        return torch.cat([old, new], dim=1)  # along G, not S

    def __len__(self):
        return 0 if self.k is None else self.k.shape[1]


class KVCacheReturnsNew(BuggyKVCache):
    def update(self, k, v):
        super().update(k, v)
        return k, v  # only the new positions


class KVCacheLenCountsUpdates(BuggyKVCache):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __len__(self):
        return self.calls

    def update(self, k, v):
        self.calls += 1
        return super().update(k, v)

    def reset(self):
        super().reset()
        self.calls = 0


class KVCacheSharedState:
    """Lists created once, on the class: every cache shares them."""

    keys: List[Tensor] = []
    values: List[Tensor] = []

    def __len__(self):
        return sum(k.shape[-2] for k in self.keys)

    def update(self, k, v):
        self.keys.append(k)
        self.values.append(v)
        return torch.cat(self.keys, dim=-2), torch.cat(self.values, dim=-2)

    def reset(self):
        self.keys.clear()
        self.values.clear()


class KVCacheCallsLibrary(mhsa_lib.KVCache):
    """mhsa_lib's own cache under another name."""


KV_CACHE_MISTAKES = [
    Mistake("kv-cache-prepends", KVCachePrepends, 20, "new keys/values placed before the cached ones"),
    Mistake("kv-cache-head-axis", KVCacheHeadAxis, 20, "concatenated along the heads, not the positions"),
    Mistake("kv-cache-returns-new", KVCacheReturnsNew, 20, "update returns only the new keys/values"),
    Mistake("kv-cache-len-counts-updates", KVCacheLenCountsUpdates, None, "len counts update calls"),
    Mistake("kv-cache-shared-state", KVCacheSharedState, None, "every cache shares class-level lists"),
    Mistake("kv-cache-calls-library", KVCacheCallsLibrary, 21, "is mhsa_lib.KVCache"),
]


# --------------------------------------------------------------------------- kv_cache_bytes


def kv_cache_bytes_keys_only(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


def kv_cache_bytes_one_layer(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2 * batch_size * seq_len * num_kv_heads * head_dim * bytes_per_element


def kv_cache_bytes_fixed_two_bytes(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * 2


def kv_cache_bytes_counts_elements(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2 * batch_size * seq_len * num_layers * num_kv_heads * head_dim


def kv_cache_bytes_no_batch(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2 * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


def kv_cache_bytes_float(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2.0 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


def kv_cache_bytes_tensor(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    sizes = torch.tensor([2, batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element])
    return sizes.prod()


def kv_cache_bytes_calls_library(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return mhsa_lib.kv_cache_bytes(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element)


KV_CACHE_BYTES_MISTAKES = [
    Mistake("bytes-keys-only", kv_cache_bytes_keys_only, None, "the factor 2 (K and V) missing"),
    Mistake("bytes-one-layer", kv_cache_bytes_one_layer, None, "num_layers missing"),
    Mistake("bytes-fixed-two", kv_cache_bytes_fixed_two_bytes, None, "bytes_per_element ignored (2 assumed)"),
    Mistake("bytes-counts-elements", kv_cache_bytes_counts_elements, None, "counts elements, not bytes"),
    Mistake("bytes-no-batch", kv_cache_bytes_no_batch, None, "batch_size missing"),
    Mistake("bytes-float", kv_cache_bytes_float, None, "returns a float"),
    Mistake("bytes-tensor", kv_cache_bytes_tensor, None, "returns a tensor"),
    Mistake("bytes-calls-library", kv_cache_bytes_calls_library, 21, "calls mhsa_lib.kv_cache_bytes"),
]
