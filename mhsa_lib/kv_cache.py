"""Head sharing (MQA / GQA) and the KV cache for incremental decoding (notebook 05).

Shape letters (see the package docstring): B batch, T new (query) tokens, S cached + new
keys, D model width, H query heads, G key/value heads, Dh = D / H per-head width.

Head sharing: H query heads, G key/value heads, each K/V head serving H / G query heads::

    MHA   (G = H)    q: 0 1 2 3 4 5      k/v: 0 1 2 3 4 5
    GQA   (G = 2)    q: 0 1 2 3 4 5      k/v: 0 0 0 1 1 1     query head j uses K/V head j // (H/G)
    MQA   (G = 1)    q: 0 1 2 3 4 5      k/v: 0 0 0 0 0 0

Fewer K/V heads means a smaller KV cache: during generation each layer stores the keys and
values of every past token, 2 · B · S · G · Dh numbers per layer (:func:`kv_cache_bytes`).

Incremental decoding: feed the prompt once, then one (or a few) new tokens at a time; each call
appends the new keys/values to the cache and attends over everything cached. With
``causal=True`` the mask is aligned to the lower right (new query ``i`` sits at absolute position
``S - T + i``), so the outputs equal full causal attention over the whole sequence.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ._validate import check_count, check_positive_int
from .heads import repeat_kv
from .multihead import _MultiHeadBase

__all__ = ["repeat_kv", "GroupedQueryAttention", "KVCache", "StaticKVCache", "kv_cache_bytes"]


class KVCache:
    """The keys and values of the tokens seen so far, for one attention layer.

    Grows along the sequence axis: each :meth:`update` appends T new positions and returns
    everything cached. Use one cache per layer and per generated batch; :meth:`reset` to reuse.

    Attributes:
        k, v: (B, G, S, Dh) cached keys and values, or ``None`` before the first update.
    """

    def __init__(self) -> None:
        self.k: Optional[Tensor] = None
        self.v: Optional[Tensor] = None

    def __len__(self) -> int:
        """S, the number of cached positions."""
        return 0 if self.k is None else self.k.shape[-2]

    def update(self, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        """Append new keys and values; return all of them.

        Args:
            k, v: (B, G, T, Dh) keys and values of the T new tokens.

        Returns:
            ``(k, v)``, each (B, G, S, Dh) with S = previous length + T, oldest first.

        Raises:
            ValueError: if ``k``/``v`` are not 4-D, differ in shape, or do not match the cache
                in B, G, Dh, dtype or device.
        """
        _check_kv(k, v)
        if self.k is None:
            self.k, self.v = k, v
        else:
            _check_matches_cache(k, self.k)
            # (B, G, S_old, Dh) + (B, G, T, Dh) -> (B, G, S, Dh), S = S_old + T
            self.k = torch.cat([self.k, k], dim=-2)
            self.v = torch.cat([self.v, v], dim=-2)  # same for the values
        return self.k, self.v

    def reset(self) -> None:
        """Forget everything cached."""
        self.k = self.v = None

    def __repr__(self) -> str:
        shape = None if self.k is None else tuple(self.k.shape)
        return f"{type(self).__name__}(len={len(self)}, shape={shape})"


class StaticKVCache(KVCache):
    """A KV cache pre-allocated for at most ``max_seq_len`` positions, written in place.

    No reallocation while decoding (the growing cache copies everything on each step), and a
    fixed memory footprint of :func:`kv_cache_bytes` per layer, known before generation starts.

    Args:
        batch_size: B.
        num_kv_heads: G.
        max_seq_len: the most positions it can hold (prompt plus generated tokens).
        head_dim: Dh.
        device, dtype: of the buffers (keyword-only); must match the keys and values.

    Raises:
        ValueError: on non-positive sizes; :meth:`update` raises when the cache would overflow.
    """

    def __init__(
        self,
        batch_size: int,
        num_kv_heads: int,
        max_seq_len: int,
        head_dim: int,
        *,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        for name, n in (("batch_size", batch_size), ("num_kv_heads", num_kv_heads),
                        ("max_seq_len", max_seq_len), ("head_dim", head_dim)):
            check_positive_int(name, n)
        shape = (batch_size, num_kv_heads, max_seq_len, head_dim)  # (B, G, S_max, Dh)
        self.k_buffer = torch.zeros(shape, device=device, dtype=dtype)
        self.v_buffer = torch.zeros(shape, device=device, dtype=dtype)
        self.max_seq_len = max_seq_len
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def update(self, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        """Write T new positions after the cached ones; return views of the filled part.

        Args:
            k, v: (B, G, T, Dh), matching the buffers in B, G, Dh, dtype and device.

        Returns:
            ``(k, v)``, each (B, G, S, Dh) views into the buffers, S = previous length + T.
        """
        _check_kv(k, v)
        _check_matches_cache(k, self.k_buffer)
        end = self.length + k.shape[-2]
        if end > self.max_seq_len:
            raise ValueError(
                f"k: expected at most {self.max_seq_len - self.length} new positions "
                f"(max_seq_len={self.max_seq_len}, {self.length} cached), got {k.shape[-2]}"
            )
        self.k_buffer[:, :, self.length:end] = k  # positions [length, end) of (B, G, S_max, Dh)
        self.v_buffer[:, :, self.length:end] = v
        self.length = end
        self.k = self.k_buffer[:, :, :end]  # (B, G, S, Dh) view, no copy
        self.v = self.v_buffer[:, :, :end]
        return self.k, self.v

    def reset(self) -> None:
        """Forget everything cached (the buffers stay allocated)."""
        super().reset()
        self.length = 0


class GroupedQueryAttention(_MultiHeadBase):
    """Attention with H query heads sharing G key/value heads, and an optional KV cache.

    G = H is multi-head attention, G = 1 multi-query attention (MQA); anything between is
    grouped-query attention (GQA). Query head ``j`` uses key/value head ``j // (H / G)``.

    Args:
        d_model: D.
        num_heads: H; must divide D.
        num_kv_heads: G; must divide H.
        bias: whether the projections have biases (most GQA models have none).
        backend: ``"reference"`` or ``"fast"`` (keyword-only, settable later); the fast path
            shares K/V heads without a copy (``enable_gqa``) when torch has it.
        device, dtype: where and in which dtype to create the parameters.

    Attributes:
        q_proj: ``nn.Linear(D, D)``.
        k_proj, v_proj: ``nn.Linear(D, G*Dh)``; K/V head ``g`` owns output features
            ``[g·Dh, (g+1)·Dh)``.
        out_proj: ``nn.Linear(D, D)``.

    Raises:
        ValueError: if H does not divide D, G does not divide H, or on an unknown backend.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_kv_heads: int,
        bias: bool = False,
        *,
        backend: str = "reference",
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(d_model, num_heads, num_kv_heads, backend=backend)
        self._separate_projections(bias, device, dtype)

    def forward(
        self,
        x: Tensor,
        mask: Optional[Tensor] = None,
        cache: Optional[KVCache] = None,
        *,
        causal: bool = False,
        return_weights: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Attend from the T new tokens to the cached and new tokens.

        Args:
            x: (B, T, D) the new tokens.
            mask: optional bool tensor, ``True`` = may attend, broadcastable to (B, H, T, S)
                where S = len(cache) + T (a 3-D mask is read as (B, T, S) or (B, 1, S)).
            cache: optional :class:`KVCache`; the new keys/values are appended to it and the
                queries attend to everything it then holds.
            causal: block future keys; lower-right aligned, so it stays right with a cache.
            return_weights: also return the (B, H, T, S) weights (reference path).

        Returns:
            out (B, T, D), or ``(out, weights)`` if ``return_weights``.

        Raises:
            ValueError: if ``x`` is not (B, T, D) or the mask does not fit.
        """
        return self._attend(x, mask, cache=cache, causal=causal, return_weights=return_weights)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, "
            f"num_kv_heads={self.num_kv_heads}, backend={self.backend!r}"
        )


def kv_cache_bytes(
    batch_size: int,
    seq_len: int,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    bytes_per_element: int = 2,
) -> int:
    """Memory of a full KV cache: keys and values for every layer, head and position.

    ``2 (K and V) · B · S · layers · G · Dh · bytes_per_element``; e.g. 32 layers, G = 8,
    Dh = 128, S = 4096, B = 1 in bf16 (2 bytes) is 512 MiB, and 2 GiB with G = 32 (plain MHA).

    Args:
        batch_size: B.
        seq_len: S, cached positions per sequence.
        num_layers: the number of attention layers (one cache each).
        num_kv_heads: G.
        head_dim: Dh.
        bytes_per_element: 2 for float16/bfloat16, 4 for float32.

    Returns:
        The size in bytes, an int.

    Raises:
        ValueError: if any argument is not a non-negative int (bytes_per_element: positive).
    """
    sizes = {"batch_size": batch_size, "seq_len": seq_len, "num_layers": num_layers,
             "num_kv_heads": num_kv_heads, "head_dim": head_dim}
    for name, n in sizes.items():
        check_count(name, n)
    check_positive_int("bytes_per_element", bytes_per_element)
    return 2 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


def _check_kv(k: object, v: object) -> None:
    for name, x in (("k", k), ("v", v)):
        if not isinstance(x, Tensor) or x.ndim != 4:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a 4-D tensor (B, G, T, Dh), got {got}")
    if v.shape != k.shape:
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")


def _check_matches_cache(k: Tensor, cached: Tensor) -> None:
    b, g, _, dh = cached.shape
    if (k.shape[0], k.shape[1], k.shape[3]) != (b, g, dh):
        raise ValueError(
            f"k: expected (B, G, T, Dh) = ({b}, {g}, T, {dh}) to match the cache, "
            f"got {tuple(k.shape)}"
        )
    if k.dtype != cached.dtype or k.device != cached.device:
        raise ValueError(
            f"k: expected dtype {cached.dtype} on {cached.device} like the cache, "
            f"got {k.dtype} on {k.device}"
        )
