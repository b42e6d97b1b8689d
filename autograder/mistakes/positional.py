"""Known mistakes in the sinusoidal positional encoding and rotary embeddings (notebook 07).

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


# --------------------------------------------------------------------------- rotary embeddings


def _rotate(x: Tensor, offset: int = 0, *, sign: float = 1.0, exponent: str = "2i/Dh", layout: str = "pairs",
            start: int = 0, use_offset: bool = True, base: float = 10000.0) -> Tensor:
    """A rotary embedding with the chosen slips: (…, T, Dh) rotated pairwise by sign · p · ω_i."""
    t, dh = x.shape[-2], x.shape[-1]
    first = (offset if use_offset else 0) + start
    pos = torch.arange(first, first + t, dtype=torch.float64)[:, None]  # (T, 1)
    i = torch.arange(dh // 2, dtype=torch.float64)
    e = {"2i/Dh": 2 * i / dh, "i/Dh": i / dh, "-2i/Dh": -2 * i / dh, "(2i+2)/Dh": (2 * i + 2) / dh}[exponent]
    angle = sign * pos * base ** (-e)  # (T, Dh/2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    xd = x.double()
    if layout == "pairs":
        a, b = xd[..., 0::2], xd[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    if layout == "pairs, halves out":  # the right pairs, the results put back as two halves
        a, b = xd[..., 0::2], xd[..., 1::2]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    a, b = xd[..., : dh // 2], xd[..., dh // 2:]  # rotate_half: i pairs with i + Dh/2
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def rope_angle_sign(x: Tensor, offset: int = 0) -> Tensor:
    """Rotates by -p·ω_i (the sine's sign flipped)."""
    return _rotate(x, offset, sign=-1.0)


def rope_frequency_i_over_dh(x: Tensor, offset: int = 0) -> Tensor:
    """ω_i = 10000^(-i/Dh) instead of 10000^(-2i/Dh)."""
    return _rotate(x, offset, exponent="i/Dh")


def rope_frequency_not_inverted(x: Tensor, offset: int = 0) -> Tensor:
    """ω_i = 10000^(2i/Dh): the frequencies grow instead of falling."""
    return _rotate(x, offset, exponent="-2i/Dh")


def rope_ignores_offset(x: Tensor, offset: int = 0) -> Tensor:
    """Positions always 0 … T-1: the offset (the cache length when decoding) is ignored."""
    return _rotate(x, offset, use_offset=False)


def rope_positions_from_one(x: Tensor, offset: int = 0) -> Tensor:
    """Positions offset+1 … offset+T."""
    return _rotate(x, offset, start=1)


def rope_rotate_half(x: Tensor, offset: int = 0) -> Tensor:
    """GPT-NeoX / Llama layout: feature i pairs with i + Dh/2."""
    return _rotate(x, offset, layout="halves")


def rope_frequencies_from_second_pair(x: Tensor, offset: int = 0) -> Tensor:
    """ω_i = 10000^(-(2i+2)/Dh): the exponents start at the second pair's (arange(2, Dh + 2, 2))."""
    return _rotate(x, offset, exponent="(2i+2)/Dh")


def rope_halves_out(x: Tensor, offset: int = 0) -> Tensor:
    """Pairs (2i, 2i+1) rotated, then torch.cat'ed as two halves instead of interleaved."""
    return _rotate(x, offset, layout="pairs, halves out")


def rope_in_place(x: Tensor, offset: int = 0) -> Tensor:
    """The even features overwritten in place before the odd ones are computed from them."""
    x = x.clone()  # the learner's own x: a mistake must not change the caller's tensor
    t, dh = x.shape[-2], x.shape[-1]
    pos = torch.arange(offset, offset + t, dtype=torch.float64)[:, None]
    angle = pos * 10000.0 ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]  # views of x
    x[..., 0::2] = a * cos - b * sin
    x[..., 1::2] = a * sin + b * cos  # a is already the rotated even features
    return x


def rope_length_from_first_axis(x: Tensor, offset: int = 0) -> Tensor:
    """The number of positions taken from x.shape[0] (len(x)), not x.shape[-2]."""
    n, t, dh = x.shape[0], x.shape[-2], x.shape[-1]
    pos = torch.arange(offset, offset + n, dtype=torch.float64)[:, None]
    angle = (pos * 10000.0 ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh))[:t]
    cos, sin = torch.cos(angle), torch.sin(angle)
    xd = x.double()
    a, b = xd[..., 0::2], xd[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def rope_calls_library(x: Tensor, offset: int = 0) -> Tensor:
    import mhsa_lib

    return mhsa_lib.apply_rotary(x, offset)


ROPE_MISTAKES = [
    mistake('rope-angle-sign', rope_angle_sign,
            'you rotate by -p·ω_i: the course rotates counter-clockwise, out[2i] = x[2i] cos θ - x[2i+1] sin θ, '
            'out[2i+1] = x[2i] sin θ + x[2i+1] cos θ (the scores still depend only on the offset, but the numbers '
            'are those of the opposite convention).'),
    mistake('rope-frequency-i-over-dh', rope_frequency_i_over_dh,
            'your frequencies use i/Dh: pair i turns at ω_i = 10000^(-2i/Dh) (2i, the index of its first feature, '
            'over the head width), as in the sinusoidal encoding.'),
    mistake('rope-frequency-not-inverted', rope_frequency_not_inverted,
            'you multiply the position by 10000^(2i/Dh): the frequencies must fall from 1 to about 1/10000, so divide.'),
    mistake('rope-ignores-offset', rope_ignores_offset,
            'you ignore the offset: row t is at position offset + t. When decoding with a cache of S keys, the new '
            'token is at position S, not 0.'),
    mistake('rope-positions-from-one', rope_positions_from_one,
            'your positions start one too late: row t is at position offset + t (row 0 of offset 0 is not rotated).'),
    mistake('rope-rotate-half', rope_rotate_half,
            'you pair feature i with i + Dh/2 (the rotate_half layout of GPT-NeoX and Llama): a valid convention, '
            'but the course pairs adjacent features (2i, 2i+1), as the sinusoidal encoding does.'),
    mistake('rope-frequencies-from-second-pair', rope_frequencies_from_second_pair,
            'your frequencies start one pair too late: pair i turns at ω_i = 10000^(-2i/Dh), so pair 0 turns at '
            'ω_0 = 1 (the exponents are torch.arange(0, Dh, 2) / Dh, starting at 0).'),
    mistake('rope-halves-out', rope_halves_out,
            'you rotate the right pairs (2i, 2i+1) but put the results back as two halves (torch.cat): each rotated '
            'pair must stay adjacent, interleaved, out[..., 0::2] and out[..., 1::2] (torch.stack([...], '
            'dim=-1).flatten(-2)).'),
    mistake('rope-in-place', rope_in_place,
            'you write the rotated features back into x in place: x[..., 0::2] = ... overwrites the even features, '
            'and x[..., 0::2] is a view, so the odd ones are then computed from the rotated values. Build a new '
            'tensor (torch.stack, or out = torch.empty_like(x)) and leave x unchanged.'),
    mistake('rope-length-from-first-axis', rope_length_from_first_axis,
            'you take the number of positions from x.shape[0] (or len(x)): x is (…, T, Dh) with any leading axes, '
            'so T = x.shape[-2].'),
    mistake('rope-calls-library', rope_calls_library, 'Calls mhsa_lib.', flags=[SAME_OUTPUT]),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(PE_MISTAKES, ROPE_MISTAKES)
