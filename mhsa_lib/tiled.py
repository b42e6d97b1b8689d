"""Attention without the (T, S) matrix: online softmax and tiled attention (taught in notebook 08).

Shape letters (see the package docstring): T query length, S key length, Dk query/key width,
Dv value width, ``...`` any leading batch dimensions.

A softmax over a row of scores needs two numbers about the whole row: its maximum ``m`` (the
shift that keeps ``exp`` from overflowing) and the sum ``l = Σ exp(x - m)``. Both can be built
one block of the row at a time: the summaries ``(m1, l1)`` and ``(m2, l2)`` of two blocks merge
into the summary of both (:func:`online_softmax_merge`). Tiled attention
(:func:`tiled_attention`) walks over the keys in blocks, keeps for each query a running
``(m, l)`` and a running weighted sum of the values, and rescales both whenever the running
maximum grows; it never holds more than ``(..., T, block_size)`` scores at once, so its extra
memory grows as T, not T·S. This is the idea behind the flash and memory-efficient kernels of
``F.scaled_dot_product_attention`` (the library's ``backend="fast"``).

:func:`largest_intermediate` measures what that means: the largest tensor any torch operation
creates while a function runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from ._validate import broadcast_shapes, check_mask, check_positive_int, check_qkv
from ._validate import scores_shape as _scores_shape

__all__ = ["online_softmax_merge", "tiled_attention", "largest_intermediate", "Intermediate"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_state(name: str, x: object) -> None:
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
        got = f"a tensor of dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a floating-point torch.Tensor, got {got}")


def online_softmax_merge(m1: Tensor, l1: Tensor, m2: Tensor, l2: Tensor) -> Tuple[Tensor, Tensor]:
    """Merge the softmax summaries of two blocks of logits into the summary of both.

    The summary of a block of logits ``x`` is ``(m, l)``: ``m = max(x)`` and
    ``l = Σ exp(x - m)``. An empty block, or one whose logits are all ``-inf`` (every key
    masked), has the summary ``(-inf, 0)``, which merges with anything as a neutral element.
    The merged summary is

        m = max(m1, m2),   l = l1 · exp(m1 - m) + l2 · exp(m2 - m),

    each sum rescaled from its own maximum to the common one (a factor <= 1, so nothing
    overflows). Where both maxima are ``-inf`` the result is ``(-inf, 0)``, not NaN.

    Args:
        m1, l1: the summary of the first block; tensors of any shape (one summary per entry).
        m2, l2: the summary of the second block; shapes broadcast with ``m1`` and ``l1``.

    Returns:
        ``(m, l)`` of the broadcast shape. ``m + log(l)`` is the logsumexp of both blocks.
    """
    for name, x in (("m1", m1), ("l1", l1), ("m2", m2), ("l2", l2)):
        _check_state(name, x)
    try:
        broadcast_shapes(m1.shape, l1.shape, m2.shape, l2.shape)  # not torch's: it imports sympy the first time
    except RuntimeError:
        raise ValueError(
            f"m1, l1, m2, l2: expected shapes that broadcast together, got {tuple(m1.shape)}, "
            f"{tuple(l1.shape)}, {tuple(m2.shape)} and {tuple(l2.shape)}"
        ) from None
    m = torch.maximum(m1, m2)
    # Where m is -inf both blocks are empty: shift by 0 so that exp(-inf - 0) = 0, never NaN.
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    l = l1 * torch.exp(m1 - shift) + l2 * torch.exp(m2 - shift)  # noqa: E741 (the paper's l)
    return m, l


def tiled_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_size: int,
    mask: Optional[Tensor] = None,
    *,
    causal: bool = False,
) -> Tensor:
    """softmax(Q Kᵀ / √d_k) V computed over blocks of keys, never forming the (T, S) scores.

    For each block of at most ``block_size`` keys: the scores of every query against the block
    (..., T, block), masked; the running maximum ``m`` grows to include the block's; the running
    sum ``l`` and the running output ``acc`` are rescaled by ``exp(m_old - m_new)`` and the
    block's ``exp(scores - m_new)`` (and its weighted values) are added. At the end
    ``out = acc / l``. The result equals :func:`mhsa_lib.scaled_dot_product_attention`'s output
    up to rounding; a query with no allowed key gives 0.

    Args:
        q: (..., T, Dk) queries.
        k: (..., S, Dk) keys.
        v: (..., S, Dv) values.
        block_size: keys per block (a positive int; the last block may be shorter).
        mask: optional bool tensor broadcastable to (..., T, S); ``True`` = may attend.
        causal: also block future keys, aligned to the lower right (query ``i`` sees keys
            ``0 … S - T + i``), as :func:`mhsa_lib.causal_mask`.

    Returns:
        out (..., T, Dv), the dtype of ``q`` (float16/bfloat16 are computed in float32).
    """
    check_qkv(q, k, v)
    check_positive_int("block_size", block_size)
    if not isinstance(causal, bool):
        raise ValueError(f"causal: expected a bool, got {causal!r}")
    if mask is not None:
        check_mask(mask, _scores_shape(q, k), device=q.device)
    dtype = q.dtype
    if dtype in _LOW_PRECISION:
        q, k, v = q.float(), k.float(), v.float()
    t, s = q.shape[-2], k.shape[-2]
    lead = broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scale = 1.0 / math.sqrt(q.shape[-1])
    m = torch.full(lead + (t, 1), float("-inf"), dtype=q.dtype, device=q.device)  # running max
    l = torch.zeros(lead + (t, 1), dtype=q.dtype, device=q.device)  # noqa: E741 (running sum)
    acc = torch.zeros(lead + (t, v.shape[-1]), dtype=q.dtype, device=q.device)  # running output
    query = torch.arange(t, device=q.device).unsqueeze(-1)  # (T, 1)
    for start in range(0, s, block_size):
        stop = min(start + block_size, s)
        k_blk, v_blk = k[..., start:stop, :], v[..., start:stop, :]  # (..., Bk, Dk), (..., Bk, Dv)
        scores = (q @ k_blk.transpose(-2, -1)) * scale  # (..., T, Bk): one block of the scores
        allowed = None
        if mask is not None:
            allowed = mask if mask.shape[-1] == 1 else mask[..., start:stop]  # (..., T or 1, Bk)
        if causal:
            key = torch.arange(start, stop, device=q.device).unsqueeze(0)  # (1, Bk) absolute index
            lower_right = key <= query + (s - t)  # (T, Bk)
            allowed = lower_right if allowed is None else allowed & lower_right
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))  # (..., T, 1)
        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        rescale = torch.exp(m - shift)  # exp(m_old - m_new) <= 1; 0 while nothing was seen
        p = torch.exp(scores - shift)  # (..., T, Bk) unnormalised weights of this block
        l = l * rescale + p.sum(dim=-1, keepdim=True)  # noqa: E741
        acc = acc * rescale + p @ v_blk  # (..., T, Bk) @ (..., Bk, Dv) -> (..., T, Dv)
        m = m_new
    out = acc / torch.where(l > 0, l, torch.ones_like(l))  # l == 0: no allowed key, out 0
    return out.to(dtype)


# --------------------------------------------------------------------------- measuring memory


@dataclass(frozen=True)
class Intermediate:
    """The largest tensor created during a call: its shape, elements, bytes and the operation."""

    shape: Tuple[int, ...]
    numel: int
    nbytes: int
    op: str


class _Largest(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.best: Optional[Intermediate] = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):
                size = t.numel() * t.element_size()
                if self.best is None or size > self.best.nbytes:
                    self.best = Intermediate(tuple(t.shape), t.numel(), size, str(func.overloadpacket.__name__))
        return out


def largest_intermediate(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Tuple[Any, Intermediate]:
    """Run ``fn(*args, **kwargs)`` and report the largest tensor any torch operation created.

    Every tensor an operation returns is counted (views included, as the size they show), the
    inputs themselves are not. It measures what the code asks for, on any device, unlike
    ``tracemalloc`` (which does not see torch's allocations); it does not sum tensors alive
    at the same time.

    Returns:
        ``(result, Intermediate)``; ``Intermediate(shape=(), numel=0, nbytes=0, op="")`` when
        no operation ran.
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    mode = _Largest()
    with mode:
        result = fn(*args, **kwargs)
    return result, mode.best or Intermediate((), 0, 0, "")
