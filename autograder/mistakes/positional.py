"""Known mistakes in the sinusoidal positional encoding (notebook 07).

Each is a runnable, wrong ``sinusoidal_positional_encoding(seq_len, d_model)`` written the way
it is usually written; :mod:`autograder.checks.positional` names the one a learner's output
matches, and tests/test_checks_positional.py proves each loses points.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .attention import Mistake


def _angles(seq_len: int, d_model: int, *, exponent=lambda j, d: 2 * (j // 2) / d, start: int = 0,
            invert: bool = True, base: float = 10000.0) -> Tensor:
    pos = torch.arange(start, start + seq_len, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    j = torch.arange(d_model, dtype=torch.float64)
    e = exponent(j, d_model)  # (D,)
    freq = base ** (-e) if invert else base ** e
    return pos * freq  # (T, D)


def _interleave(angle: Tensor, sin_even: bool = True) -> Tensor:
    even = torch.arange(angle.shape[1]) % 2 == 0
    first, second = (torch.sin, torch.cos) if sin_even else (torch.cos, torch.sin)
    return torch.where(even, first(angle), second(angle))


def pe_sin_cos_swapped(seq_len: int, d_model: int) -> Tensor:
    """cos on the even features, sin on the odd ones."""
    return _interleave(_angles(seq_len, d_model), sin_even=False)


def pe_exponent_per_feature(seq_len: int, d_model: int) -> Tensor:
    """Feature j uses 10000^(j/D): each feature its own frequency, so sin and cos never pair up."""
    return _interleave(_angles(seq_len, d_model, exponent=lambda j, d: j / d))


def pe_frequency_not_inverted(seq_len: int, d_model: int) -> Tensor:
    """pos * 10000^(2i/D) instead of pos / 10000^(2i/D)."""
    return _interleave(_angles(seq_len, d_model, invert=False))


def pe_positions_from_one(seq_len: int, d_model: int) -> Tensor:
    """Positions 1 … T instead of 0 … T-1."""
    return _interleave(_angles(seq_len, d_model, start=1))


def pe_concatenated_halves(seq_len: int, d_model: int) -> Tensor:
    """[sin of every frequency | cos of every frequency] instead of interleaved pairs."""
    half = d_model // 2
    pos = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)
    freq = torch.exp(-torch.arange(half, dtype=torch.float64) * 2 / d_model * math.log(10000.0))
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=1)


def pe_transposed(seq_len: int, d_model: int) -> Tensor:
    """(D, T) instead of (T, D)."""
    return _interleave(_angles(seq_len, d_model)).T.contiguous()


def pe_calls_library(seq_len: int, d_model: int) -> Tensor:
    import mhsa_lib

    return mhsa_lib.sinusoidal_positional_encoding(seq_len, d_model)


PE_MISTAKES = [
    Mistake("pe-sin-cos-swapped", pe_sin_cos_swapped, None, "sin and cos swapped"),
    Mistake("pe-exponent-per-feature", pe_exponent_per_feature, None, "exponent j/D instead of 2i/D"),
    Mistake("pe-frequency-not-inverted", pe_frequency_not_inverted, None, "multiplies by 10000^(2i/D)"),
    Mistake("pe-positions-from-one", pe_positions_from_one, None, "positions start at 1"),
    Mistake("pe-concatenated-halves", pe_concatenated_halves, None, "sin half then cos half"),
    Mistake("pe-transposed", pe_transposed, None, "returns (D, T)"),
    Mistake("pe-calls-library", pe_calls_library, 21, "calls mhsa_lib"),
]
