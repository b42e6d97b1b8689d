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
