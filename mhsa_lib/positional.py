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

Rotary position embeddings (RoPE, Su et al. 2021) put the same rotation inside attention: instead
of adding a vector to the token, :func:`apply_rotary` rotates the feature pair ``(2i, 2i+1)`` of
each query and key at position ``p`` by the angle ``p · ω_i`` (``ω_i = base^(-2i/Dh)``, the
sinusoidal frequencies over the head width). A rotation by ``a`` dotted with a rotation by ``b``
is a rotation by ``b - a``, so the score ``q_rot[p] · k_rot[s]`` depends on the offset ``s - p``
only. This pairs adjacent features (the paper's and the course's layout); GPT-NeoX and Llama's
``rotate_half`` code pairs feature ``i`` with ``i + Dh/2`` instead: the same idea on a permuted
layout, whose numbers differ.

ALiBi (Press et al. 2022) adds no vector at all: :func:`alibi_bias` is a (H, T, S) bias
``-m_h · (distance to the key)`` added to the scores, one slope ``m_h`` per head.
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor, nn

from ._validate import check_positive_int

__all__ = ["sinusoidal_positional_encoding", "shift_matrix", "LearnedPositionalEmbedding", "apply_rotary",
           "alibi_slopes", "alibi_bias"]

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


def _check_base(base: object) -> None:
    if not isinstance(base, (int, float)) or isinstance(base, bool) or not base > 1:
        raise ValueError(f"base: expected a number greater than 1, got {base!r}")


def apply_rotary(x: Tensor, offset: int = 0, *, base: float = BASE) -> Tensor:
    """Rotary position embedding of queries or keys ``x`` (..., T, Dh) at positions offset … offset+T-1.

    Feature pair ``(2i, 2i+1)`` of row ``t`` is rotated by the angle ``(offset + t) · ω_i`` with
    ``ω_i = base^(-2i/Dh)``::

        out[..., t, 2i]   = x[..., t, 2i] · cos θ - x[..., t, 2i+1] · sin θ
        out[..., t, 2i+1] = x[..., t, 2i] · sin θ + x[..., t, 2i+1] · cos θ

    Apply it to queries and keys (never to values) before the scores. With a KV cache holding S
    keys (already rotated when they were cached), the next token is at position S: ``offset=S``.

    Args:
        x: (..., T, Dh) floating tensor, Dh even.
        offset: the position of row 0 (an int >= 0).
        base: the frequencies are base^(-2i/Dh) (keyword-only; 10000 as in the sinusoidal encoding).

    Returns:
        A new tensor of ``x``'s shape and dtype (angles computed in float64).

    Raises:
        ValueError: if ``x`` is not a floating tensor of >= 2 dims with an even last dim, ``offset``
            is not an int >= 0, or ``base`` is not > 1.
    """
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x: expected a floating tensor (..., T, Dh), got {got}")
    if x.shape[-1] % 2:
        raise ValueError(f"x: expected an even last dim Dh (feature pairs), got shape {tuple(x.shape)}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError(f"offset: expected an int >= 0, got {offset!r}")
    _check_base(base)
    t, dh = x.shape[-2], x.shape[-1]
    position = torch.arange(offset, offset + t, dtype=torch.float64, device=x.device).unsqueeze(1)  # (T, 1)
    omega = _frequencies(dh, base, x.device, torch.float64)[0::2]  # (Dh/2,)
    angle = position * omega  # (T, Dh/2)
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]  # (..., T, Dh/2) each
    out = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)  # (..., T, Dh/2, 2)
    return out.flatten(-2)  # interleave back: (..., T, Dh)


def alibi_slopes(num_heads: int) -> Tensor:
    """(H,) ALiBi's per-head slopes: the geometric sequence 2^(-8/H), 2^(-16/H), …, 2^(-8).

    (The paper's recipe for a power-of-two H; for other H this same formula is used, a simplification.)
    """
    check_positive_int("num_heads", num_heads)
    return 2.0 ** (-8.0 * torch.arange(1, num_heads + 1, dtype=torch.float64) / num_heads)


def alibi_bias(num_heads: int, seq_len_q: int, seq_len_k: Union[int, None] = None, *,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """(H, T, S) ALiBi bias to add to the attention scores: ``-m_h · |q_pos - k_pos|``.

    Queries are aligned with the end of the keys (query t sits at key position S - T + t, as the
    course's causal masks are), so a cache-sized S works. Combined with a causal mask only the
    keys at or before the query count; the bias grows linearly with the distance for every length,
    which is why ALiBi extrapolates to sequences longer than those trained on.
    """
    check_positive_int("num_heads", num_heads)
    check_positive_int("seq_len_q", seq_len_q)
    seq_len_k = seq_len_q if seq_len_k is None else seq_len_k
    check_positive_int("seq_len_k", seq_len_k)
    if seq_len_k < seq_len_q:
        raise ValueError(f"seq_len_k: expected at least seq_len_q={seq_len_q}, got {seq_len_k}")
    q_pos = torch.arange(seq_len_k - seq_len_q, seq_len_k, dtype=torch.float64)[:, None]  # (T, 1)
    k_pos = torch.arange(seq_len_k, dtype=torch.float64)[None, :]  # (1, S)
    distance = (q_pos - k_pos).abs()  # (T, S)
    return (-alibi_slopes(num_heads)[:, None, None] * distance).to(dtype)  # (H, T, S)
