"""Positional information: the sinusoidal encoding and learned position embeddings (notebook 07).

Shape letters (see the package docstring): T sequence length (positions 0 … T-1), D model width.

Self-attention without positions is permutation-equivariant: shuffle the tokens and the
outputs are shuffled the same way, so "the cat sat" and "sat the cat" look alike. Adding a
vector that depends on the position to each token's embedding breaks the symmetry.

The encoding of "Attention Is All You Need" (section 3.5) gives feature pair ``(2i, 2i+1)``
the frequency ``ω_i = 1 / 10000^(2i/D)``::

    PE[p, 2i]   = sin(p · ω_i)
    PE[p, 2i+1] = cos(p · ω_i)

Each pair is a point on a circle turning at its own speed, so moving ``k`` positions on is a
rotation of every pair by the angle ``k · ω_i``: ``PE[p + k] = PE[p] @ shift_matrix(k, D).T``
for every ``p``. The map depends on ``k`` only, which is what lets a model learn "look k tokens
back" once for every position.
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor, nn

from ._validate import check_positive_int

__all__ = ["sinusoidal_positional_encoding", "shift_matrix", "LearnedPositionalEmbedding"]

#: The base of the frequencies in the original Transformer.
BASE = 10000.0


def _frequencies(d_model: int, base: float, device, dtype) -> Tensor:
    """(D,) the angular frequency of each feature: ω_i for both features 2i and 2i+1."""
    pair = torch.arange(d_model, device=device, dtype=dtype) // 2  # (D,) i for features 2i, 2i+1
    return torch.exp(-(2 * pair / d_model) * math.log(base))  # 1 / base^(2i/D)


def sinusoidal_positional_encoding(
    seq_len: int,
    d_model: int,
    *,
    base: float = BASE,
    device: Union[torch.device, str, None] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The sinusoidal positional encoding of positions 0 … T-1.

    Args:
        seq_len: T, the number of positions.
        d_model: D, the model width (an odd D leaves the last feature a sine without its cosine).
        base: the frequencies are 1 / base^(2i/D) (10000 in the paper; keyword-only).
        device, dtype: where and in which floating dtype to build it (computed in float64).

    Returns:
        (T, D): even features ``sin(p / base^(2i/D))``, odd features ``cos(p / base^(2i/D))``.

    Raises:
        ValueError: if ``seq_len`` or ``d_model`` is not a positive int, or ``base`` is not > 1.
    """
    check_positive_int("seq_len", seq_len)
    check_positive_int("d_model", d_model)
    if not isinstance(base, (int, float)) or isinstance(base, bool) or not base > 1:
        raise ValueError(f"base: expected a number greater than 1, got {base!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype: expected a floating-point torch dtype, got {dtype!r}")
    position = torch.arange(seq_len, dtype=torch.float64, device=device).unsqueeze(1)  # (T, 1)
    omega = _frequencies(d_model, base, device, torch.float64)  # (D,)
    angle = position * omega  # (T, 1) * (D,) -> (T, D)
    even = torch.arange(d_model, device=device) % 2 == 0  # (D,) True for the sine features
    pe = torch.where(even, torch.sin(angle), torch.cos(angle))  # (T, D)
    return pe.to(dtype)


def shift_matrix(
    shift: int,
    d_model: int,
    *,
    base: float = BASE,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The (D, D) linear map that moves the encoding ``shift`` positions on.

    ``sinusoidal_positional_encoding(T, D)[p + shift] == pe[p] @ shift_matrix(shift, D).T``:
    block-diagonal, one 2×2 rotation by ``shift · ω_i`` per feature pair (an odd D's last
    feature, a lone sine, has no such map; D must be even).
    """
    if not isinstance(shift, int) or isinstance(shift, bool):
        raise ValueError(f"shift: expected an int, got {shift!r}")
    check_positive_int("d_model", d_model)
    if d_model % 2:
        raise ValueError(f"d_model: expected an even width (sine/cosine pairs), got {d_model}")
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    omega = _frequencies(d_model, base, None, torch.float64)[0::2]  # (D/2,)
    c, s = torch.cos(shift * omega), torch.sin(shift * omega)
    i = torch.arange(0, d_model, 2)
    # sin(a + b) = sin a cos b + cos a sin b;  cos(a + b) = cos a cos b - sin a sin b
    m[i, i], m[i, i + 1] = c, s
    m[i + 1, i], m[i + 1, i + 1] = -s, c
    return m.to(dtype)


class LearnedPositionalEmbedding(nn.Module):
    """A learned vector per position (GPT-2's ``wpe``): an ``nn.Embedding(max_len, D)``.

    Unlike the sinusoidal encoding it has parameters, and it knows nothing about positions at
    or beyond ``max_len``.

    Args:
        max_len: the number of positions it can encode.
        d_model: D.

    Attributes:
        weight: (max_len, D), initialised N(0, 0.02²) as in GPT-2.
    """

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        check_positive_int("max_len", max_len)
        check_positive_int("d_model", d_model)
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    def forward(self, seq_len: int) -> Tensor:
        """(T, D): the vectors of positions 0 … T-1."""
        check_positive_int("seq_len", seq_len)
        if seq_len > self.max_len:
            raise ValueError(f"seq_len: expected at most max_len={self.max_len}, got {seq_len}")
        return self.weight[:seq_len]

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.weight.shape[1]}"
