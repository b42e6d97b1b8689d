"""Tests for mhsa_lib.heads: split_heads, merge_heads, repeat_kv."""

import pytest
import torch

from mhsa_lib.heads import merge_heads, repeat_kv, split_heads

pytestmark = pytest.mark.usefixtures("torch_seed")


def test_split_heads_shape_and_layout():
    x = torch.randn(2, 5, 12)  # B=2, T=5, D=12
    out = split_heads(x, 3)  # H=3, Dh=4
    assert out.shape == (2, 3, 5, 4)
    for h in range(3):
        # head h owns features [h*Dh, (h+1)*Dh), the nn.MultiheadAttention layout
        assert torch.equal(out[:, h], x[:, :, h * 4:(h + 1) * 4])


def test_split_heads_is_not_a_plain_view():
    # the classic bug: x.view(B, H, T, Dh) without transposing mixes time steps into heads
    x = torch.randn(2, 5, 12)
    assert not torch.equal(split_heads(x, 3), x.view(2, 3, 5, 4))


def test_merge_inverts_split():
    x = torch.randn(3, 7, 20)
    assert torch.equal(merge_heads(split_heads(x, 4)), x)
    y = torch.randn(3, 4, 7, 5)
    assert torch.equal(split_heads(merge_heads(y), 4), y)


def test_merge_heads_layout():
    y = torch.randn(2, 3, 5, 4)  # B, H, T, Dh
    out = merge_heads(y)
    assert out.shape == (2, 5, 12)
    assert torch.equal(out[:, :, 4:8], y[:, 1])


def test_repeat_kv_interleaves():
    x = torch.arange(2.0).view(1, 2, 1, 1).expand(1, 2, 3, 4)  # G=2 heads filled with 0, 1
    out = repeat_kv(x, 3)
    assert out.shape == (1, 6, 3, 4)
    assert out[0, :, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]  # repeat_interleave, not repeat
    assert torch.equal(out, torch.repeat_interleave(x, 3, dim=1))
    assert repeat_kv(x, 1) is x


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: split_heads(torch.randn(2, 5, 12), 5), r"num_heads: expected a divisor of .*D=12.*got 5"),
        (lambda: split_heads(torch.randn(5, 12), 3), r"x: expected a 3-D tensor \(B, T, D\), got shape \(5, 12\)"),
        (lambda: split_heads(torch.randn(2, 5, 12), 0), r"num_heads: expected a positive int, got 0"),
        (lambda: merge_heads(torch.randn(2, 5, 12)), r"x: expected a 4-D tensor \(B, H, T, Dh\), got shape \(2, 5, 12\)"),
        (lambda: repeat_kv(torch.randn(1, 2, 3, 4), 0), r"n_rep: expected a positive int, got 0"),
        (lambda: repeat_kv(torch.randn(2, 3, 4), 2), r"x: expected a 4-D tensor \(B, G, S, Dh\)"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
