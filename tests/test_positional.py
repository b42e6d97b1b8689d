"""mhsa_lib.positional: the sinusoidal encoding's values and its shift property, learned
position embeddings, and errors that name the argument (TinyTransformer: tests/test_model.py)."""

import math

import pytest
import torch

from mhsa_lib.positional import LearnedPositionalEmbedding, shift_matrix, sinusoidal_positional_encoding

pytestmark = pytest.mark.usefixtures("torch_seed")


def test_values_match_the_formula():
    t, d = 7, 10
    pe = sinusoidal_positional_encoding(t, d, dtype=torch.float64)
    assert pe.shape == (t, d) and pe.dtype == torch.float64
    for p in range(t):
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)


def test_default_dtype_float32_and_odd_width():
    pe = sinusoidal_positional_encoding(5, 7)
    assert pe.dtype == torch.float32 and pe.shape == (5, 7)
    # the lone last feature of an odd width is a sine of frequency 1/10000^(6/7)
    assert pe[3, 6].item() == pytest.approx(math.sin(3 / 10000 ** (6 / 7)), abs=1e-6)


def test_prefix_does_not_depend_on_length():
    assert torch.equal(sinusoidal_positional_encoding(5, 8), sinusoidal_positional_encoding(20, 8)[:5])


@pytest.mark.parametrize("k", [1, 3, 11])
def test_shift_is_a_fixed_rotation(k):
    d = 12
    pe = sinusoidal_positional_encoding(40, d, dtype=torch.float64)
    m = shift_matrix(k, d)
    assert torch.allclose(pe[:-k] @ m.T, pe[k:], atol=1e-10)
    assert torch.allclose(m @ m.T, torch.eye(d, dtype=torch.float64), atol=1e-12)  # a rotation


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: sinusoidal_positional_encoding(0, 4), "seq_len"),
        (lambda: sinusoidal_positional_encoding(4, 2.0), "d_model"),
        (lambda: sinusoidal_positional_encoding(4, 4, base=1), "base"),
        (lambda: sinusoidal_positional_encoding(4, 4, dtype=torch.int64), "dtype"),
        (lambda: shift_matrix(1, 5), "d_model"),
        (lambda: LearnedPositionalEmbedding(4, 8)(5), "seq_len"),
    ],
)
def test_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_learned_embedding():
    emb = LearnedPositionalEmbedding(10, 6)
    assert emb(4).shape == (4, 6)
    assert [n for n, _ in emb.named_parameters()] == ["weight"]


# --------------------------------------------------------------------------- rotary and ALiBi


def _rotary_complex(x, offset=0, base=10000.0):
    """An independent formulation: pairs (2i, 2i+1) as complex numbers times e^{i p ω_i}."""
    t, dh = x.shape[-2], x.shape[-1]
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], dh // 2, 2).contiguous())  # (..., T, Dh/2)
    p = torch.arange(offset, offset + t, dtype=torch.float64)[:, None]
    omega = torch.tensor([base ** (-2 * i / dh) for i in range(dh // 2)], dtype=torch.float64)
    z = z * torch.polar(torch.ones_like(p * omega), p * omega)
    return torch.view_as_real(z).reshape(x.shape)


@pytest.mark.parametrize("shape, offset", [((5, 8), 0), ((2, 3, 7, 16), 4), ((1, 9, 2), 100)])
def test_rotary_matches_complex_multiplication(shape, offset):
    from mhsa_lib.positional import apply_rotary

    x = torch.randn(*shape, dtype=torch.float64)
    got = apply_rotary(x, offset)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, _rotary_complex(x, offset), atol=1e-12, rtol=0)
    torch.testing.assert_close(apply_rotary(x, offset, base=500.0), _rotary_complex(x, offset, 500.0), atol=1e-12, rtol=0)


def test_rotary_scores_depend_on_the_offset_only_and_norms_are_kept():
    from mhsa_lib.positional import apply_rotary

    q, k = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    s0 = apply_rotary(q) @ apply_rotary(k).T
    s7 = apply_rotary(q, 7) @ apply_rotary(k, 7).T
    torch.testing.assert_close(s0, s7)
    assert not torch.allclose(s0, q @ k.T)
    torch.testing.assert_close(apply_rotary(q).norm(dim=-1), q.norm(dim=-1))
    # one position: row t of a full rotation is the row alone rotated at offset t
    torch.testing.assert_close(apply_rotary(q)[3:4], apply_rotary(q[3:4], 3))


def test_rotary_errors_name_the_argument():
    from mhsa_lib.positional import apply_rotary

    with pytest.raises(ValueError, match=r"^x: expected an even last dim"):
        apply_rotary(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"^x: expected a floating tensor"):
        apply_rotary(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^offset: expected an int >= 0, got -1$"):
        apply_rotary(torch.randn(3, 4), -1)
    with pytest.raises(ValueError, match=r"^base: expected a number greater than 1"):
        apply_rotary(torch.randn(3, 4), base=1)


def test_alibi_bias_values():
    from mhsa_lib.positional import alibi_bias, alibi_slopes

    slopes = alibi_slopes(8)
    assert slopes[0].item() == pytest.approx(2 ** -1) and slopes[-1].item() == pytest.approx(2 ** -8)
    b = alibi_bias(2, 3, 5, dtype=torch.float64)  # queries at key positions 2, 3, 4
    assert b.shape == (2, 3, 5)
    m = alibi_slopes(2)
    for h in range(2):
        for t in range(3):
            for s in range(5):
                assert b[h, t, s].item() == pytest.approx(-m[h].item() * abs(2 + t - s))
    with pytest.raises(ValueError, match=r"^seq_len_k: expected at least seq_len_q=4, got 2$"):
        alibi_bias(1, 4, 2)
    with pytest.raises(ValueError, match=r"^num_heads: expected a positive int, got 0$"):
        alibi_bias(0, 4)
