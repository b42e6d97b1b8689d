"""Known mistakes in the sinusoidal positional encoding (notebook 07).

Each is a runnable, wrong ``sinusoidal_positional_encoding(seq_len, d_model)`` written the way
it is usually written; :mod:`autograder.checks.positional` names the one a learner's output
matches, and tests/test_checks_positional.py proves each loses points.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..frame.mistakes import SAME_OUTPUT, catalogue, mistake


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
    mistake('pe-sin-cos-swapped', pe_sin_cos_swapped,
            'sin and cos are swapped: even features (0, 2, 4, …) hold the sine, odd features the cosine, so position 0 is [0, 1, 0, 1, …].'),
    mistake('pe-exponent-per-feature', pe_exponent_per_feature,
            'feature j uses the frequency 1/10000^(j/D): each feature gets its own frequency. Features 2i and 2i+1 share one, 1/10000^(2i/D) (use j // 2, or torch.arange(0, D, 2)), so that each (sin, cos) pair is a point on one circle.'),
    mistake('pe-frequency-not-inverted', pe_frequency_not_inverted,
            'you multiply the position by 10000^(2i/D): the frequencies must fall from 1 to about 1/10000, so divide: p / 10000^(2i/D).'),
    mistake('pe-positions-from-one', pe_positions_from_one,
            'your positions start at 1: the first token is position 0, so row 0 is [0, 1, 0, 1, …] (torch.arange(seq_len)).'),
    mistake('pe-concatenated-halves', pe_concatenated_halves,
            'you put all the sines first and all the cosines after ([sin | cos]); the course (and the paper) interleave them: feature 2i is sin, 2i+1 is cos.'),
    mistake('pe-transposed', pe_transposed,
            'your output is (D, T): rows are positions, columns features, (T, D).'),
    mistake('pe-calls-library', pe_calls_library,
            'Calls mhsa_lib.', flags=[SAME_OUTPUT]),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(PE_MISTAKES)
