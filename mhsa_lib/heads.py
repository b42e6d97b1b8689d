"""Splitting the model width into heads and merging it back (taught in notebooks 02 and 03).

Shape letters (see the package docstring): B batch, T length, D model width, H heads,
Dh = D / H per-head width, G key/value heads.

Head ``h`` owns features ``[h·Dh, (h+1)·Dh)`` of each projection, the layout of
``torch.nn.MultiheadAttention``. Splitting is a reshape *and a transpose*; merging undoes both::

    (B, T, D) --view--> (B, T, H, Dh) --transpose(1, 2)--> (B, H, T, Dh)      split_heads
    (B, H, T, Dh) --transpose(1, 2)--> (B, T, H, Dh) --reshape--> (B, T, D)   merge_heads

``repeat_kv`` lives here too because it is the same kind of reshape along the head axis; it is
taught with head sharing in notebook 05 and exported from ``mhsa_lib.kv_cache`` as well.
"""

from __future__ import annotations

from torch import Tensor

from ._validate import check_positive_int, check_tensor

__all__ = ["split_heads", "merge_heads", "repeat_kv"]


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """Split the last axis into ``num_heads`` heads and move the head axis before the time axis.

    Args:
        x: (B, T, D) tensor.
        num_heads: H, which must divide D.

    Returns:
        (B, H, T, Dh) with Dh = D / H; ``out[b, h]`` is ``x[b, :, h*Dh:(h+1)*Dh]``. A view of
        ``x`` (no copy).

    Raises:
        ValueError: if ``x`` is not a 3-D tensor or ``num_heads`` is not a positive divisor of D.
    """
    check_tensor("x", x, 3, "(B, T, D)")
    check_positive_int("num_heads", num_heads)
    batch, length, width = x.shape
    if width % num_heads != 0:
        raise ValueError(
            f"num_heads: expected a divisor of the last dimension D={width} of x, got {num_heads}"
        )
    head_dim = width // num_heads
    x = x.view(batch, length, num_heads, head_dim)  # (B, T, D) -> (B, T, H, Dh)
    return x.transpose(1, 2)  # (B, T, H, Dh) -> (B, H, T, Dh)


def merge_heads(x: Tensor) -> Tensor:
    """Concatenate the heads back into one feature axis (the inverse of :func:`split_heads`).

    Args:
        x: (B, H, T, Dh) tensor.

    Returns:
        (B, T, H*Dh); features ``[h·Dh, (h+1)·Dh)`` come from head ``h``.

    Raises:
        ValueError: if ``x`` is not a 4-D tensor.
    """
    check_tensor("x", x, 4, "(B, H, T, Dh)")
    batch, num_heads, length, head_dim = x.shape
    x = x.transpose(1, 2)  # (B, H, T, Dh) -> (B, T, H, Dh)
    return x.reshape(batch, length, num_heads * head_dim)  # (B, T, H, Dh) -> (B, T, H*Dh)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Repeat each key/value head ``n_rep`` times so that G heads serve H = G·n_rep query heads.

    Query head ``j`` uses key/value head ``j // n_rep``: the copies of one head sit next to each
    other (``repeat_interleave``), e.g. G = 2, n_rep = 3 gives heads ``[0, 0, 0, 1, 1, 1]``,
    not ``[0, 1, 0, 1, 0, 1]`` (which ``repeat`` would give).

    Args:
        x: (B, G, S, Dh) keys or values.
        n_rep: H / G, a positive int.

    Returns:
        (B, G*n_rep, S, Dh). With ``n_rep == 1`` this is ``x`` itself.

    Raises:
        ValueError: if ``x`` is not a 4-D tensor or ``n_rep`` is not a positive int.
    """
    check_tensor("x", x, 4, "(B, G, S, Dh)")
    check_positive_int("n_rep", n_rep)
    if n_rep == 1:
        return x
    batch, kv_heads, length, head_dim = x.shape
    # A broadcast view first (no copy), then one reshape that makes the copies adjacent.
    x = x[:, :, None].expand(batch, kv_heads, n_rep, length, head_dim)  # (B, G, n_rep, S, Dh)
    return x.reshape(batch, kv_heads * n_rep, length, head_dim)  # -> (B, G*n_rep, S, Dh)

