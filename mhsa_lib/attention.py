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
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BACKENDS",
    "softmax",
    "causal_mask",
    "padding_mask",
    "scaled_dot_product_attention",
]

BACKENDS = ("reference", "fast")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


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
    _check_floating("x", x)
    _check_dim("dim", dim, x.ndim)
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
    _check_count("seq_len_q", seq_len_q)
    _check_count("seq_len_k", seq_len_k)
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
    _check_count("seq_len", seq_len)
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
    _check_qkv(q, k, v)
    if mask is not None:
        _check_mask(mask, q, k)
    if backend == "reference":
        return _reference_attention(q, k, v, mask)
    if backend == "fast":
        return _fast_attention(q, k, v, mask), None
    raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


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


# --- argument checks: every error names the argument, what came and what was expected ---


def _check_floating(name: str, x: object) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")


def _check_dim(name: str, dim: int, ndim: int) -> None:
    if not isinstance(dim, int) or isinstance(dim, bool) or not -max(ndim, 1) <= dim < max(ndim, 1):
        raise ValueError(
            f"{name}: expected an axis in [-{max(ndim, 1)}, {max(ndim, 1) - 1}] for a "
            f"{ndim}-D input, got {dim!r}"
        )


def _check_count(name: str, n: object) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {n!r}")


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_floating(name, x)
        if x.ndim < 2:
            raise ValueError(
                f"{name}: expected at least 2 dimensions (..., length, width), "
                f"got shape {tuple(x.shape)}"
            )
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype:
            raise ValueError(f"{name}: expected dtype {q.dtype} like q, got {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} like q, got {x.device}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"k: expected last dimension Dk={q.shape[-1]} to match q {tuple(q.shape)}, "
            f"got shape {tuple(k.shape)}"
        )
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"v: expected S={k.shape[-2]} rows to match k {tuple(k.shape)}, "
            f"got shape {tuple(v.shape)}"
        )
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"q, k, v: expected leading (batch) dimensions that broadcast, got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        ) from None


def _check_mask(mask: object, q: Tensor, k: Tensor) -> None:
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask: expected a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(
            f"mask: expected dtype torch.bool (True = may attend), got {mask.dtype}; "
            f"for a 0/1 mask use mask.bool(), for an additive 0/-inf mask use mask == 0"
        )
    if mask.device != q.device:
        raise ValueError(f"mask: expected device {q.device} like q, got {mask.device}")
    scores_shape = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
    try:
        ok = torch.broadcast_shapes(mask.shape, scores_shape) == scores_shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"mask: expected a shape broadcastable to the scores (..., T, S) = "
            f"{tuple(scores_shape)}, got {tuple(mask.shape)}"
        )
