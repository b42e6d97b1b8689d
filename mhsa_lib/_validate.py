"""Argument checks shared by every module of ``mhsa_lib`` (private).

Each check raises ``ValueError`` with one message shape: ``"<argument>: expected <what was
expected>, got <what came>"``, so that a learner sees which argument is wrong and how to fix it.
This module imports nothing from the rest of the package.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "check_positive_int",
    "check_count",
    "check_choice",
    "check_dropout",
    "check_floating",
    "check_dim",
    "check_tensor",
    "check_input",
    "check_heads",
    "check_qkv",
    "check_mask",
    "heads_mask",
]


def _is_int(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


def check_positive_int(name: str, n: object) -> None:
    """``n`` is an int >= 1 (a bool is not an int here)."""
    if not _is_int(n) or n < 1:
        raise ValueError(f"{name}: expected a positive int, got {n!r}")


def check_count(name: str, n: object) -> None:
    """``n`` is an int >= 0 (a length or a size that may be empty)."""
    if not _is_int(n) or n < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {n!r}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices`` (a backend, an activation, a norm placement, ...)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")


def check_dropout(p: object, name: str = "dropout") -> None:
    """``p`` is a probability in [0, 1)."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1), got {p!r}")


def check_floating(name: str, x: object) -> None:
    """``x`` is a floating-point tensor."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")


def check_dim(name: str, dim: object, ndim: int) -> None:
    """``dim`` is a valid axis of an ``ndim``-D tensor (negative axes count from the end)."""
    size = max(ndim, 1)
    if not _is_int(dim) or not -size <= dim < size:
        raise ValueError(
            f"{name}: expected an axis in [-{size}, {size - 1}] for a {ndim}-D input, got {dim!r}"
        )


def check_tensor(name: str, x: object, ndim: int, shape: str) -> None:
    """``x`` is a tensor with ``ndim`` dimensions; ``shape`` names them, e.g. ``"(B, T, D)"``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor {shape}, got shape {tuple(x.shape)}")


def check_input(name: str, x: object, d_model: int) -> None:
    """``x`` is a (B, T, D) tensor with D = ``d_model`` (a module's input)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor (B, T, D), got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != d_model:
        hint = "; add a batch axis with x.unsqueeze(0)" if x.ndim == 2 else ""
        raise ValueError(
            f"{name}: expected a 3-D tensor (B, T, D) with D=d_model={d_model}, "
            f"got shape {tuple(x.shape)}{hint}"
        )


def check_heads(d_model: object, num_heads: object, num_kv_heads: object = None) -> None:
    """Sizes of an attention module: D a multiple of H, and H a multiple of G if given."""
    check_positive_int("d_model", d_model)
    check_positive_int("num_heads", num_heads)
    if num_kv_heads is not None:
        check_positive_int("num_kv_heads", num_kv_heads)
    if d_model % num_heads != 0:
        raise ValueError(
            f"d_model: expected a multiple of num_heads={num_heads} (each head gets "
            f"d_model / num_heads features), got d_model={d_model}"
        )
    if num_kv_heads is not None and num_heads % num_kv_heads != 0:
        raise ValueError(
            f"num_heads: expected a multiple of num_kv_heads={num_kv_heads} (each key/value "
            f"head serves num_heads / num_kv_heads query heads), got num_heads={num_heads}"
        )


def check_qkv(q: object, k: object, v: object, *, shared_kv_heads: bool = False) -> None:
    """Queries (..., T, Dk), keys (..., S, Dk) and values (..., S, Dv) that fit together.

    With ``shared_kv_heads`` the inputs are (B, H, T, Dh) and (B, G, S, Dh) and the head axes
    (checked by the caller) need not broadcast.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_floating(name, x)
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
    lead = [x.shape[:-3] if shared_kv_heads else x.shape[:-2] for x in (q, k, v)]
    try:
        broadcast_shapes(*lead)
    except RuntimeError:
        raise ValueError(
            f"q, k, v: expected leading (batch) dimensions that broadcast, got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        ) from None


def broadcast_shapes(*shapes) -> Tuple[int, ...]:
    """The shape ``shapes`` broadcast to, by NumPy's rules; RuntimeError if they do not (as
    ``torch.broadcast_shapes``, which imports sympy on its first call: seconds in a fresh kernel)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(-ndim, 0):
        sizes = {int(s[axis]) for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def scores_shape(q: Tensor, k: Tensor) -> Tuple[int, ...]:
    """(..., T, S): the shape of the attention scores of ``q`` (..., T, Dk) and ``k`` (..., S, Dk)."""
    return tuple(broadcast_shapes(q.shape[:-2], k.shape[:-2])) + (q.shape[-2], k.shape[-2])


def check_mask(
    mask: object,
    shape: Tuple[int, ...],
    *,
    device: Optional[torch.device] = None,
    shape_name: str = "the scores (..., T, S)",
    hint: str = "",
    given: Optional[Tuple[int, ...]] = None,
) -> None:
    """``mask`` is a bool tensor (``True`` = may attend) that broadcasts to ``shape``.

    Args:
        mask: what the caller passed.
        shape: the shape of the scores it masks.
        device: the device it must be on (that of the queries), or ``None`` not to check.
        shape_name, hint: how the message names ``shape``, and what it adds after it.
        given: the shape to report (if the caller reshaped the mask), default ``mask.shape``.
    """
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask: expected a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(
            f"mask: expected dtype torch.bool (True = may attend), got {mask.dtype}; "
            f"for a 0/1 mask use mask.bool(), for an additive 0/-inf mask use mask == 0"
        )
    if device is not None and mask.device != device:
        raise ValueError(f"mask: expected device {device} like q, got {mask.device}")
    shape = tuple(shape)
    try:
        ok = mask.ndim <= len(shape) and tuple(broadcast_shapes(mask.shape, shape)) == shape
    except RuntimeError:
        ok = False
    if not ok:
        given = tuple(mask.shape) if given is None else given
        raise ValueError(
            f"mask: expected a shape broadcastable to {shape_name} = {shape}{hint}, got {given}"
        )


def heads_mask(
    mask: object,
    shape: Tuple[int, int, int, int],
    device: Optional[torch.device] = None,
) -> Tensor:
    """Check a mask for (B, H, T, S) scores; a 3-D (B, T, S) or (B, 1, S) one gets a head axis.

    Returns:
        The mask, (B, 1, T, S) if it was 3-D, otherwise as given.
    """
    given = tuple(mask.shape) if isinstance(mask, Tensor) else None
    if isinstance(mask, Tensor) and mask.ndim == 3:
        mask = mask.unsqueeze(1)  # (B, T, S) -> (B, 1, T, S): the same mask for every head
    check_mask(
        mask, shape, device=device, shape_name="(B, H, T, S)",
        hint=" (or a 3-D (B, T, S))", given=given,
    )
    return mask
