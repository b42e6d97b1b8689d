"""Scaled dot-product attention: softmax, masks and the attention core (taught in notebook 01).

Shape letters (see the package docstring): B batch, T query length, S key length,
Dk query/key width (d_k), Dv value width, ``...`` any leading batch dimensions.

Mask convention: a boolean tensor, ``True`` = "this query may attend to this key" (the
convention of ``torch.nn.functional.scaled_dot_product_attention``; ``torch.nn.MultiheadAttention``
uses the opposite). A query row with no allowed key gives output 0 and weights 0, never NaN.

Two interchangeable paths compute the same function:

* ``backend="reference"``: the formula as written on the board,
  ``softmax(Q Kᵀ / √d_k) V``; it materialises the (T, S) weights and returns them.
* ``backend="fast"``: PyTorch's fused ``F.scaled_dot_product_attention`` (flash / memory-efficient
  kernels where available); it never materialises the weights, so it returns ``None`` for them.

Both live in one table, :data:`ATTENTION_BACKENDS` (name -> function, one signature), used by
:func:`scaled_dot_product_attention` here and by :func:`mhsa_lib.multihead.attend_heads`.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validate import check_choice, check_count, check_dim, check_floating, check_mask, check_qkv
from ._validate import scores_shape as _scores_shape
from .heads import repeat_kv

__all__ = [
    "ATTENTION_BACKENDS",
    "BACKENDS",
    "HAS_ENABLE_GQA",
    "get_backend",
    "softmax",
    "causal_mask",
    "padding_mask",
    "scaled_dot_product_attention",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# F.scaled_dot_product_attention learned enable_gqa (shared K/V heads without a copy) in 2.5.
_TORCH_VERSION = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
HAS_ENABLE_GQA = _TORCH_VERSION >= (2, 5)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Numerically stable softmax of ``x`` along ``dim``.

    Subtracting the maximum before ``exp`` changes nothing mathematically
    (``softmax(x) = softmax(x - c)``) but keeps ``exp`` from overflowing on large logits.
    A slice whose entries are all ``-inf`` (a fully masked row) gives zeros, not NaN.
    float16/bfloat16 inputs are computed in float32 and cast back.

    Args:
        x: any shape, floating point.
        dim: the axis to normalise over (each slice along it sums to 1).

    Returns:
        A tensor of the same shape and dtype as ``x``.
    """
    check_floating("x", x)
    check_dim("dim", dim, x.ndim)
    work = x.float() if x.dtype in _LOW_PRECISION else x
    x_max = work.amax(dim=dim, keepdim=True)
    # A slice of all -inf has max -inf, and -inf - (-inf) is NaN: shift such slices by 0 instead.
    x_max = torch.where(torch.isfinite(x_max), x_max, torch.zeros_like(x_max))
    e = torch.exp(work - x_max)
    total = e.sum(dim=dim, keepdim=True)
    # total is 0 only where every entry was -inf; dividing by 1 there leaves zeros.
    out = e / torch.where(total > 0, total, torch.ones_like(total))
    return out.to(x.dtype)


def causal_mask(
    seq_len_q: int,
    seq_len_k: Optional[int] = None,
    *,
    device: Union[torch.device, str, None] = None,
) -> Tensor:
    """Boolean causal mask of shape (T, S), ``True`` = may attend.

    Aligned to the lower right: query ``i`` sits at absolute position ``S - T + i`` and may
    attend to keys ``0 … S - T + i``. With ``S == T`` that is the usual lower triangle; with
    ``S > T`` (decoding with a KV cache) the last query sees every key.

    Args:
        seq_len_q: T, the number of queries.
        seq_len_k: S, the number of keys (default: T).
        device: where to build the mask (use your inputs' device).
    """
    seq_len_k = seq_len_q if seq_len_k is None else seq_len_k
    check_count("seq_len_q", seq_len_q)
    check_count("seq_len_k", seq_len_k)
    i = torch.arange(seq_len_q, device=device).unsqueeze(-1)  # (T, 1) query index
    j = torch.arange(seq_len_k, device=device).unsqueeze(0)  # (1, S) key index
    return j <= i + (seq_len_k - seq_len_q)  # (T, S)


def padding_mask(
    lengths: Union[Tensor, Sequence[int]],
    seq_len: Optional[int] = None,
    *,
    device: Union[torch.device, str, None] = None,
) -> Tensor:
    """Key-padding mask of shape (B, 1, S) from the real length of each sequence.

    Key ``j`` of sequence ``b`` is allowed when ``j < lengths[b]``. The middle axis of size 1
    broadcasts over the T queries; add one more axis (``mask.unsqueeze(1)``) for (B, H, T, S).

    Args:
        lengths: (B,) integers in ``0 … S``.
        seq_len: S (default: the largest length).
        device: where to build the mask (default: the device of ``lengths`` if it is a tensor).
    """
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(list(lengths), dtype=torch.long, device=device)
    elif device is not None:
        lengths = lengths.to(device)
    if lengths.ndim != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths: expected a 1-D tensor or sequence of integers (B,), "
            f"got shape {tuple(lengths.shape)} and dtype {lengths.dtype}"
        )
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"lengths: expected values >= 0, got {lengths.tolist()}")
    if seq_len is None:
        seq_len = int(lengths.max()) if lengths.numel() else 0
    check_count("seq_len", seq_len)
    if lengths.numel() and int(lengths.max()) > seq_len:
        raise ValueError(
            f"lengths: expected values <= seq_len={seq_len}, got {lengths.tolist()}"
        )
    j = torch.arange(seq_len, device=lengths.device)  # (S,)
    return (j.unsqueeze(0) < lengths.unsqueeze(-1)).unsqueeze(1)  # (B, 1, S)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor] = None,
    *,
    backend: str = "reference",
) -> Tuple[Tensor, Optional[Tensor]]:
    """Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V.

    In the notation of Xiao & Zhu's "Foundations of Large Language Models" this is
    Att_qkv(Q, K, V) = Softmax(Q Kᵀ / √d + Mask) V, with their additive mask of 0 / -inf
    written here as a boolean mask.

    Args:
        q: (..., T, Dk) queries.
        k: (..., S, Dk) keys.
        v: (..., S, Dv) values.
        mask: optional bool tensor broadcastable to (..., T, S); ``True`` = may attend.
        backend: ``"reference"`` (readable, returns the weights) or ``"fast"``
            (``F.scaled_dot_product_attention``; returns ``None`` for the weights).

    Returns:
        ``(out, weights)``: out (..., T, Dv); weights (..., T, S), each row summing to 1 over
        the keys (0 for a row with no allowed key), or ``None`` with ``backend="fast"``.

    Raises:
        ValueError: on shapes, dtypes, devices or a backend that do not fit, naming the argument.
    """
    check_qkv(q, k, v)
    if mask is not None:
        check_mask(mask, _scores_shape(q, k), device=q.device)
    return get_backend(backend)(q, k, v, mask, False, 1)


# --- the backends: one table, one signature -------------------------------------------------

#: The signature every backend shares: ``fn(q, k, v, mask, causal, kv_repeats) -> (out, weights)``.
AttentionBackend = Callable[
    [Tensor, Tensor, Tensor, Optional[Tensor], bool, int], Tuple[Tensor, Optional[Tensor]]
]


def _reference_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]
) -> Tuple[Tensor, Tensor]:
    scale = 1.0 / math.sqrt(q.shape[-1])  # 1/√d_k keeps the scores' variance near 1
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T, Dk) @ (..., Dk, S) -> (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # blocked keys get weight exactly 0
    weights = softmax(scores, dim=-1)  # (..., T, S), rows sum to 1 over the keys
    out = weights @ v  # (..., T, S) @ (..., S, Dv) -> (..., T, Dv)
    return out, weights


def _fast_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tensor:
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    # The fused kernels give NaN for a query with no allowed key. Let such rows attend
    # everywhere (finite, no NaN in the backward pass either), then zero their output.
    # (No early exit when every row has a key: testing that would sync the GPU.)
    has_key = mask.any(dim=-1, keepdim=True)  # (..., T, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~has_key)
    return out.masked_fill(~has_key, 0.0)


def _shared(x: Tensor, kv_repeats: int) -> Tensor:
    """Keys or values (B, G, S, ·) repeated to (B, H, S, ·); any tensor as is when kv_repeats == 1."""
    return x if kv_repeats == 1 else repeat_kv(x, kv_repeats)


def _with_causal(mask: Optional[Tensor], q: Tensor, k: Tensor) -> Tensor:
    """``mask`` combined with the lower-right aligned causal mask (T, S)."""
    lower_right = causal_mask(q.shape[-2], k.shape[-2], device=q.device)  # (T, S)
    return lower_right if mask is None else mask & lower_right


def reference_backend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor],
    causal: bool,
    kv_repeats: int,
) -> Tuple[Tensor, Tensor]:
    """The formula as written: ``softmax(Q Kᵀ / √d_k) V``, with the (..., H, T, S) weights.

    Args (shared by every backend, already checked by the caller):
        q: (..., H, T, Dk) queries (any leading dimensions when ``kv_repeats == 1``).
        k, v: (..., G, S, Dk) and (..., G, S, Dv); with ``kv_repeats > 1`` they are 4-D
            (B, G, S, ·) and H = G · kv_repeats: query head ``j`` uses K/V head ``j // kv_repeats``.
            With ``kv_repeats == 1`` the leading dimensions broadcast with those of ``q``.
        mask: ``None`` or a bool tensor broadcastable to (..., H, T, S), ``True`` = may attend.
        causal: also block future keys, aligned to the lower right.
        kv_repeats: H / G, 1 when every query head has its own key/value head.

    Returns:
        ``(out, weights)``: out (..., H, T, Dv), weights (..., H, T, S) (``None`` for a backend
        that does not form them).
    """
    if causal:
        mask = _with_causal(mask, q, k)
    k = _shared(k, kv_repeats)  # (B, G, S, Dh) -> (B, H, S, Dh), head j uses K/V head j // n_rep
    v = _shared(v, kv_repeats)
    return _reference_attention(q, k, v, mask)


def fast_backend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor],
    causal: bool,
    kv_repeats: int,
) -> Tuple[Tensor, None]:
    """PyTorch's fused ``F.scaled_dot_product_attention``; the weights are never formed (``None``).

    Same arguments as :func:`reference_backend`. Without a mask it uses PyTorch's own causal
    flag where both alignments agree (S == T), so the kernels skip the masked half, and shares
    K/V heads without a copy (``enable_gqa``) where torch has it.
    """
    q_len, k_len = q.shape[-2], k.shape[-2]
    if mask is None and (not causal or q_len == k_len):
        if kv_repeats > 1 and HAS_ENABLE_GQA:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        else:
            k, v = _shared(k, kv_repeats), _shared(v, kv_repeats)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return out, None
    if causal:
        mask = _with_causal(mask, q, k)
    k = _shared(k, kv_repeats)  # (B, G, S, Dh) -> (B, H, S, Dh)
    v = _shared(v, kv_repeats)
    return _fast_attention(q, k, v, mask), None


#: Every attention backend by name; all share the signature of :func:`reference_backend`.
ATTENTION_BACKENDS: Dict[str, AttentionBackend] = {
    "reference": reference_backend,
    "fast": fast_backend,
}

#: The backend names, in the order of :data:`ATTENTION_BACKENDS`.
BACKENDS = tuple(ATTENTION_BACKENDS)


def get_backend(name: object, argname: str = "backend") -> AttentionBackend:
    """The backend function called ``name``.

    Raises:
        ValueError: naming ``argname``, what came and the allowed names, for an unknown name.
    """
    check_choice(argname, name, BACKENDS)
    return ATTENTION_BACKENDS[name]
