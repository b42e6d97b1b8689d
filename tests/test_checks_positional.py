"""The sinusoidal encoding check: correct versions written differently earn full marks; every
known mistake loses points and is named; the library shortcut and a hard-coded answer earn 0."""

import math

import pytest
import torch
from conftest import run_check

import mhsa_lib
from autograder.checks.positional import PE_POINTS
from autograder.checks.positional import check_sinusoidal_positional_encoding as check
from autograder.mistakes import positional as M


def run(fn, capsys, **kw):
    return run_check(check, fn, capsys, **kw)


def pe_slices(seq_len, d_model):
    pe = torch.zeros(seq_len, d_model)
    pos = torch.arange(seq_len).float().unsqueeze(1)  # (T, 1)
    div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))  # (D/2,)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def pe_loops(seq_len, d_model):
    rows = []
    for p in range(seq_len):
        row = []
        for j in range(d_model):
            angle = p / 10000 ** (2 * (j // 2) / d_model)
            row.append(math.sin(angle) if j % 2 == 0 else math.cos(angle))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def pe_stack(seq_len, d_model):
    pos = torch.arange(seq_len, dtype=torch.float64)[:, None]
    freq = 1.0 / torch.pow(10000.0, torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angle = pos * freq  # (T, D/2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(seq_len, d_model)  # interleave


@pytest.mark.parametrize("fn", [pe_slices, pe_loops, pe_stack])
@pytest.mark.parametrize("hidden", [False, True])
def test_correct_versions_earn_full_marks(fn, hidden, capsys):
    points, out = run(fn, capsys, hidden=hidden, seed=11)
    assert points == PE_POINTS, out


ADVICE_WORDS = {
    "pe-sin-cos-swapped": "swapped",
    "pe-exponent-per-feature": "share one",
    "pe-frequency-not-inverted": "divide",
    "pe-positions-from-one": "start at 1",
    "pe-concatenated-halves": "interleave",
    "pe-transposed": "(D, T)",
}


@pytest.mark.parametrize("mistake", [m for m in M.PE_MISTAKES if m.by_output], ids=lambda m: m.id)
def test_mistakes_lose_points_and_are_named(mistake, capsys):
    points, out = run(mistake.fn, capsys, seed=5)
    assert points < PE_POINTS
    assert ADVICE_WORDS[mistake.id] in out


def test_shift_probe_catches_unpaired_frequencies(capsys):
    _, out = run(M.pe_exponent_per_feature, capsys, seed=5)
    assert "✗ probe: moving k positions on" in out


def test_library_shortcut_earns_nothing(capsys):
    points, out = run(M.pe_calls_library, capsys, seed=5)
    assert points == 0.0 and "calls mhsa_lib" in out


def test_hard_coded_public_answer(capsys):
    public = pe_slices(4, 6)
    points, out = run(lambda seq_len, d_model: public.clone(), capsys, seed=5)
    assert points <= 1.0 and "hard-coded" in out


def test_not_implemented_and_crashes(capsys):
    def stub(seq_len, d_model):
        raise NotImplementedError()

    points, out = run(stub, capsys)
    assert points == 0.0 and "not implemented yet" in out

    def crash(seq_len, d_model):
        return torch.zeros(seq_len, d_model) + torch.zeros(3)

    points, out = run(crash, capsys, seed=1)
    assert points == 0.0 and "raised RuntimeError" in out


def test_odd_extra_work_is_tolerated(capsys):
    def noisy(seq_len, d_model):
        import sys
        import warnings

        print("computing", file=sys.stderr)
        warnings.warn("careful")
        return pe_slices(seq_len, d_model).double()

    points, out = run(noisy, capsys, seed=2)
    assert points == PE_POINTS, out


# --------------------------------------------------------------------------- generated variants


def _pe_learner(seq_len, d_model, base=10000.0, int_div=False, divide=False, halves=False, cos_first=False):
    """A learner's encoding, written with loops, with the chosen slips."""
    pe = torch.zeros(seq_len, d_model)
    for p in range(seq_len):
        for i in range(d_model // 2):
            expo = (2 * i) // d_model if int_div else 2 * i / d_model
            w = base ** (-expo)
            angle = p / w if divide else p * w
            a, b = (math.cos(angle), math.sin(angle)) if cos_first else (math.sin(angle), math.cos(angle))
            if halves:
                pe[p, i], pe[p, d_model // 2 + i] = a, b
            else:
                pe[p, 2 * i], pe[p, 2 * i + 1] = a, b
    return pe


@pytest.mark.parametrize("slips, words", [
    ({"base": 1000.0}, "base 1000"),
    ({"int_div": True}, "integer division"),
    ({"divide": True}, "divide"),
    ({"halves": True, "cos_first": True}, "sines first"),
    ({"base": 1000.0, "halves": True}, "base 1000"),
])
def test_structural_slips_are_named_from_generated_variants(capsys, slips, words):
    points, report = run(lambda t, d: _pe_learner(t, d, **slips), capsys)
    assert points < 4
    assert words in report, report


def test_a_new_wrong_choice_is_one_axis_entry(capsys, monkeypatch):
    from autograder.checks import positional
    from autograder.frame.variants import Axis

    axes = [Axis(a.name, a.correct, dict(a.wrong)) for a in positional.PE_AXES]
    i = [a.name for a in axes].index("base")
    axes[i] = Axis("base", 10000.0, {**axes[i].wrong, 500.0: "your frequencies use the base 500 (new entry)"})
    monkeypatch.setattr(positional, "PE_AXES", axes)
    _, report = run(lambda t, d: _pe_learner(t, d, base=500.0), capsys)
    assert "base 500 (new entry)" in report


# --------------------------------------------------------------------------- answers as learners write them
# Wrong ones lose points and are named; correct ones, in other styles, earn full marks.


def _pe_pair_index_over_d(seq_len, d_model):
    p = torch.arange(seq_len).float()[:, None]
    w = 10000 ** (-torch.arange(0, d_model // 2).float() / d_model)  # i / D, not 2i / D
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(p * w), torch.cos(p * w)
    return pe


def _pe_over_seq_len(seq_len, d_model):
    p = torch.arange(seq_len).float()[:, None]
    w = 10000 ** (-torch.arange(0, d_model, 2).float() / seq_len)  # divides by T
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(p * w), torch.cos(p * w)
    return pe


def _pe_numpy_tutorial(seq_len, d_model):
    import numpy as np

    pos, i = np.arange(seq_len)[:, None], np.arange(d_model)[None, :]
    angle = pos / np.power(10000, (2 * (i // 2)) / d_model)
    angle[:, 0::2], angle[:, 1::2] = np.sin(angle[:, 0::2]), np.cos(angle[:, 1::2])
    return torch.from_numpy(angle)


def _pe_stacked_exp_log(seq_len, d_model, base=10000.0):
    p = torch.arange(seq_len, dtype=torch.float64)[:, None]
    w = torch.exp(-math.log(base) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    return torch.stack([torch.sin(p * w), torch.cos(p * w)], -1).flatten(1).float()


@pytest.mark.parametrize("answer, full, words", [
    (_pe_pair_index_over_d, False, "exponent is i/D with i the pair index"),
    (_pe_over_seq_len, False, "divides by the number of positions T"),
    (_pe_numpy_tutorial, True, ""),
    (_pe_stacked_exp_log, True, ""),
], ids=lambda a: getattr(a, "__name__", None))
def test_learner_answers(answer, full, words, capsys):
    points, out = run_check(check, answer, capsys, hidden=True, seed=11)
    if full:
        assert points == PE_POINTS, out
    else:
        assert points < PE_POINTS and words in out, out


def test_no_generated_variant_is_the_encoding_itself():
    """A variant equal to the right encoding would name a mistake in a correct answer."""
    from autograder.checks.positional import distinct_variants, pe_variants
    from autograder.frame.compare import matches

    assert len(pe_variants()) > 10
    for t, d in ((4, 6), (9, 12), (23, 4), (3, 40)):  # the check asks for D >= 4 (with D = 2 every frequency is 1)
        ref = mhsa_lib.sinusoidal_positional_encoding(t, d, dtype=torch.float64)
        assert not [m.id for m in distinct_variants([(t, d)]) if matches(m.fn(t, d), ref)], (t, d)


# =========================================================================== rotary embeddings

from autograder.checks.positional import ROPE_POINTS  # noqa: E402
from autograder.checks.positional import check_apply_rotary as check_rope  # noqa: E402


def run_rope(fn, capsys, **kw):
    return run_check(check_rope, fn, capsys, **kw)


def rope_slices(x, offset=0):
    t, dh = x.shape[-2], x.shape[-1]
    pos = torch.arange(offset, offset + t, dtype=torch.float32)[:, None]  # (T, 1)
    omega = 10000.0 ** (-torch.arange(0, dh, 2, dtype=torch.float32) / dh)  # (Dh/2,)
    cos, sin = torch.cos(pos * omega), torch.sin(pos * omega)
    out = torch.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
    return out


def rope_complex(x, offset=0):
    t, dh = x.shape[-2], x.shape[-1]
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], dh // 2, 2).contiguous())
    pos = torch.arange(offset, offset + t, dtype=torch.float64)[:, None]
    freq = 1.0 / 10000 ** (torch.arange(dh // 2, dtype=torch.float64) * 2 / dh)
    return torch.view_as_real(z * torch.exp(1j * pos * freq)).reshape(x.shape).to(x.dtype)


def rope_matrix_loops(x, offset=0):
    """A block-diagonal rotation matrix per position, built with loops."""
    t, dh = x.shape[-2], x.shape[-1]
    rows = []
    for p in range(t):
        r = torch.zeros(dh, dh)
        for i in range(dh // 2):
            a = (offset + p) / 10000 ** (2 * i / dh)
            r[2 * i, 2 * i], r[2 * i, 2 * i + 1] = math.cos(a), -math.sin(a)
            r[2 * i + 1, 2 * i], r[2 * i + 1, 2 * i + 1] = math.sin(a), math.cos(a)
        rows.append(x[..., p, :] @ r.T)
    return torch.stack(rows, dim=-2)


@pytest.mark.parametrize("fn", [rope_slices, rope_complex, rope_matrix_loops])
@pytest.mark.parametrize("hidden", [False, True])
def test_rope_correct_versions_earn_full_marks(fn, hidden, capsys):
    points, out = run_rope(fn, capsys, hidden=hidden, seed=11)
    assert points == ROPE_POINTS, out


ROPE_ADVICE = {
    "rope-angle-sign": "-p·ω_i",
    "rope-frequency-i-over-dh": "i/Dh",
    "rope-frequency-not-inverted": "divide",
    "rope-ignores-offset": "ignore the offset",
    "rope-positions-from-one": "one too late",
    "rope-rotate-half": "rotate_half",
    "rope-frequencies-from-second-pair": "one pair too late",
    "rope-halves-out": "as two halves (torch.cat)",
    "rope-in-place": "back into x in place",
    "rope-length-from-first-axis": "from x.shape[0]",
}


@pytest.mark.parametrize("mistake", [m for m in M.ROPE_MISTAKES if m.by_output], ids=lambda m: m.id)
def test_rope_mistakes_lose_points_and_are_named(mistake, capsys):
    points, out = run_rope(mistake.fn, capsys, seed=5)
    assert points < ROPE_POINTS, out
    assert ROPE_ADVICE[mistake.id] in out, out


def test_rope_cache_probe_catches_an_ignored_offset(capsys):
    _, out = run_rope(M.rope_ignores_offset, capsys, seed=5)
    assert "✗ probe: decoding with a cache" in out
    assert "✓ probes: shape kept" in out  # shifting both is harmless when the offset is ignored


def test_rope_relative_probe_catches_absolute_additions(capsys):
    def add_position(x, offset=0):  # adds a position vector instead of rotating
        return x + torch.arange(offset, offset + x.shape[-2], dtype=x.dtype)[:, None] * 0.1

    points, out = run_rope(add_position, capsys, seed=3)
    assert points <= 1.0, out  # only the cache probe holds: it is consistent with itself
    assert "✗ probes: shape kept" in out and "norm" in out


def test_rope_identity_is_caught(capsys):
    points, out = run_rope(lambda x, offset=0: x.clone(), capsys, seed=3)
    assert points <= 1.0 and "nothing was rotated" in out, out


def test_rope_library_shortcut_earns_nothing(capsys):
    points, out = run_rope(M.rope_calls_library, capsys, seed=5)
    assert points == 0.0 and "calls mhsa_lib" in out


def test_rope_hard_coded_public_answer(capsys):
    public = rope_slices(torch.randn(5, 6, generator=torch.Generator().manual_seed(7)), 2)
    points, out = run_rope(lambda x, offset=0: public.clone(), capsys, seed=5)
    assert points <= 1.0 and "hard-coded" in out


def test_rope_not_implemented_and_in_place_versions(capsys):
    def stub(x, offset=0):
        raise NotImplementedError()

    points, out = run_rope(stub, capsys)
    assert points == 0.0 and "not implemented yet" in out

    def in_place(x, offset=0):  # overwrites its input, returns it: correct values
        y = rope_slices(x, offset)
        x.copy_(y)
        return x

    points, out = run_rope(in_place, capsys, seed=4)
    assert points == ROPE_POINTS, out


def _rope_learner(x, offset=0, sign=1.0, half_exp=False, halves=False, base=10000.0):
    """A learner's rotation with loops over pairs and the chosen slips."""
    t, dh = x.shape[-2], x.shape[-1]
    out = x.clone()
    for i in range(dh // 2):
        w = base ** (-(i if half_exp else 2 * i) / dh)
        a, b = (i, i + dh // 2) if halves else (2 * i, 2 * i + 1)
        for p in range(t):
            th = sign * (offset + p) * w
            xa, xb = x[..., p, a], x[..., p, b]
            out[..., p, a] = xa * math.cos(th) - xb * math.sin(th)
            out[..., p, b] = xa * math.sin(th) + xb * math.cos(th)
    return out


@pytest.mark.parametrize("slips, words", [
    ({"base": 1000.0}, "base 1000"),
    ({"halves": True, "sign": -1.0}, "rotate_half"),
    ({"half_exp": True, "sign": -1.0}, "i/Dh"),
])
def test_rope_structural_slips_are_named_from_generated_variants(capsys, slips, words):
    points, report = run_rope(lambda x, offset=0: _rope_learner(x, offset, **slips), capsys)
    assert points < ROPE_POINTS
    assert words in report, report


def test_rope_hostile_shapes_are_reported_not_raised(capsys):
    def shifty(x, offset=0):  # unrelated shapes that change with the input (and use the global RNG)
        return torch.randn(*([(offset + x.shape[-2]) % 3 + 1] * (x.dim() + offset % 2 - 1)))

    points, out = run_rope(shifty, capsys, seed=2)
    assert points == 0.0, out
    assert "✗ probe: decoding with a cache" in out

    points, out = run_rope(lambda x, offset=0: rope_slices(x, offset).flatten(), capsys, seed=2)
    assert points == 0.0 and "expected the same shape as x" in out, out
