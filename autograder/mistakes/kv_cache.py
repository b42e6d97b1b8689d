"""Known mistakes in notebook 05's graded steps (GroupedQueryAttention, KVCache, kv_cache_bytes):
query heads paired with the wrong K/V heads, a causal mask that ignores the cache, a cache that
grows along the wrong axis or in the wrong order, a size in bytes that leaves out a factor, and
answers that hand the work to mhsa_lib.

Shape letters: B batch, T new tokens, S cached + new positions, D model width, H query heads,
G key/value heads, Dh = D / H.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import Tensor, nn

import mhsa_lib

from ..frame.mistakes import SAME_OUTPUT, catalogue, mistake

# --------------------------------------------------------------------------- GroupedQueryAttention


class BuggyGroupedQueryAttention(nn.Module):
    """A readable GQA with the course's layout; subclasses switch one bug on."""

    tiled = False  # repeat instead of repeat_interleave
    causal_upper_left = False  # tril(T, S) without the offset S - T
    causal_blocks_cache = False  # new queries see only the new keys, causally
    ignores_cache = False  # the cache is never read or written
    caches_repeated = False  # repeat_kv before cache.update: the cache holds H heads, not G
    ignores_causal = False  # causal=True is accepted and never used

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, bias: bool = False):
        super().__init__()
        if d_model % num_heads or num_heads % num_kv_heads:
            raise ValueError(f"expected num_kv_heads | num_heads | d_model, got {num_kv_heads}, {num_heads}, "
                             f"{d_model}")
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
        if self.caches_repeated:
            k, v = self.repeat(k), self.repeat(v)  # (B, H, T, Dh)
        if cache is not None and not self.ignores_cache:
            k, v = cache.update(k, v)  # (B, G, S, Dh)
        s = k.shape[-2]
        if not self.caches_repeated:
            k, v = self.repeat(k), self.repeat(v)  # (B, H, S, Dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.dh)  # (B, H, T, S)
        allowed = torch.ones(t, s, dtype=torch.bool, device=x.device)
        if causal and not self.ignores_causal:
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

    def repeat(self, x: Tensor) -> Tensor:
        """(B, G, S, Dh) -> (B, H, S, Dh): query head j uses K/V head j // (H / G)."""
        n_rep = self.h // self.g
        return x.repeat(1, n_rep, 1, 1) if self.tiled else x.repeat_interleave(n_rep, dim=1)


class GQATiled(BuggyGroupedQueryAttention):
    tiled = True


class GQACausalUpperLeft(BuggyGroupedQueryAttention):
    causal_upper_left = True


class GQACausalBlocksCache(BuggyGroupedQueryAttention):
    causal_blocks_cache = True


class GQAIgnoresCache(BuggyGroupedQueryAttention):
    ignores_cache = True


class GQACachesRepeated(BuggyGroupedQueryAttention):
    """Right outputs, but the cache holds the keys and values after repeat_kv (H heads)."""

    caches_repeated = True


class GQAIgnoresCausalFlag(BuggyGroupedQueryAttention):
    ignores_causal = True


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
    mistake("gqa-tiled", GQATiled,
            "query head j is paired with K/V head j % G: you tile the K/V heads (.repeat). Query head j "
            "uses K/V head j // (H / G): repeat_interleave(H // G, dim=1), or your repeat_kv. (With "
            "G = H or G = 1 both give the same result, which is why the bug hides there.)"),
    mistake("gqa-causal-upper-left", GQACausalUpperLeft,
            "your causal mask is aligned to the upper left: with a cache, the T new queries sit at "
            "absolute positions S - T … S - 1, so query i may see keys 0 … S - T + i. Build "
            "tril(diagonal=S - T) on the (T, S) scores (mhsa_lib.causal_mask(T, S)); "
            "F.scaled_dot_product_attention(is_causal=True) aligns to the upper left and is wrong here."),
    mistake("gqa-causal-blocks-cache", GQACausalBlocksCache,
            "with a cache your new queries do not see the cached keys: the causal mask must allow every "
            "cached position (they are all in the past), tril(diagonal=S - T) on (T, S)."),
    mistake("gqa-ignores-causal", GQAIgnoresCausalFlag,
            "causal=True changes nothing: every query still sees the future keys. With causal=True block key j "
            "for new query i where j > S - T + i: tril(diagonal=S - T) on the (T, S) scores "
            "(mhsa_lib.causal_mask(T, S)), combined with any mask given."),
    mistake("gqa-ignores-cache", GQAIgnoresCache,
            "the cache is not used: append the new keys and values with k, v = cache.update(k, v) and "
            "attend over everything it returns."),
    # The outputs are right: what the cache holds after decoding tells ({h}, {g}: H and G there).
    mistake("gqa-caches-repeated", GQACachesRepeated,
            "the cache holds the keys after repeat_kv: H = {h} heads instead of G = {g}, so GQA saves no "
            "memory; cache before repeating: k, v = cache.update(k, v) on the G-head keys and values, "
            "then repeat_kv what it returns.",
            flags=[SAME_OUTPUT]),
    mistake("gqa-calls-library", GQACallsLibrary,
            "Calls mhsa_lib's attend_heads.", flags=[SAME_OUTPUT]),
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
    mistake("kv-cache-prepends", KVCachePrepends,
            "you put the new keys/values before the cached ones: the cache must stay in time order, "
            "oldest first: torch.cat([self.k, k], dim=-2)."),
    mistake("kv-cache-head-axis", KVCacheHeadAxis,
            "you concatenate along the heads (dim=1): the cache grows along the sequence axis, dim=-2 "
            "of (B, G, S, Dh)."),
    mistake("kv-cache-returns-new", KVCacheReturnsNew,
            "update returns only the new keys/values: it must return everything cached so far (old and "
            "new), which is what the attention attends over."),
    # update returns the right pairs: the bookkeeping part (len after the updates) tells.
    mistake("kv-cache-len-counts-updates", KVCacheLenCountsUpdates,
            "len counts the update calls: it must count the cached positions S, k.shape[-2].",
            flags=[SAME_OUTPUT]),
    # One cache alone returns the right pairs: the bookkeeping part (a second cache) tells.
    mistake("kv-cache-shared-state", KVCacheSharedState,
            "every cache shares lists created on the class: create the storage in __init__, with self.",
            flags=[SAME_OUTPUT]),
    mistake("kv-cache-calls-library", KVCacheCallsLibrary,
            "Is mhsa_lib.KVCache.", flags=[SAME_OUTPUT]),
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
    mistake("bytes-keys-only", kv_cache_bytes_keys_only,
            "your result is half the right one: the cache stores keys AND values, so count "
            "2 · B · S · layers · G · Dh · bytes_per_element."),
    mistake("bytes-one-layer", kv_cache_bytes_one_layer,
            "your result is the size of one layer's cache: every layer keeps its own keys and values, "
            "so multiply by num_layers."),
    mistake("bytes-fixed-two", kv_cache_bytes_fixed_two_bytes,
            "you assume 2 bytes per element: use the bytes_per_element argument (4 for float32, 1 for int8)."),
    mistake("bytes-counts-elements", kv_cache_bytes_counts_elements,
            "you count elements, not bytes: multiply by bytes_per_element."),
    mistake("bytes-no-batch", kv_cache_bytes_no_batch,
            "your result leaves out batch_size: each sequence in the batch has its own cache."),
    mistake("bytes-float", kv_cache_bytes_float,
            "Returns a float.", flags=[SAME_OUTPUT]),
    mistake("bytes-tensor", kv_cache_bytes_tensor,
            "Returns a tensor.", flags=[SAME_OUTPUT]),
    mistake("bytes-calls-library", kv_cache_bytes_calls_library,
            "Calls mhsa_lib.kv_cache_bytes.", flags=[SAME_OUTPUT]),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(GQA_MISTAKES, KV_CACHE_MISTAKES, KV_CACHE_BYTES_MISTAKES)
