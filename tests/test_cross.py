"""mhsa_lib.cross: cross-attention is multi-head attention with keys and values from the memory
(same numbers as MultiHeadAttention(kv=memory) and as torch.nn.MultiheadAttention(x, memory,
memory)), its shapes with T ≠ S, the padding mask over the memory, the absence of a causal mask,
clear errors, and the pre-norm DecoderBlock."""

import pytest
import torch
from torch import nn

import mhsa_lib
from mhsa_lib import CrossAttention, DecoderBlock, MultiHeadAttention


def _pair(b=2, t=3, s=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, d, generator=g), torch.randn(b, s, d, generator=g)


def test_shapes_with_t_different_from_s():
    torch.manual_seed(0)
    ca = CrossAttention(8, 2).eval()
    x, memory = _pair()
    out, weights = ca(x, memory, return_weights=True)
    assert out.shape == (2, 3, 8) and weights.shape == (2, 2, 3, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 3))


def test_equals_multi_head_attention_with_kv_and_torch():
    torch.manual_seed(1)
    ca = CrossAttention(8, 2).eval()
    mha = MultiHeadAttention(8, 2).eval()
    mha.load_state_dict(ca.state_dict())
    x, memory = _pair(seed=1)
    mask = mhsa_lib.padding_mask(torch.tensor([5, 2]), 5)[:, None]  # (B, 1, 1, S)
    assert torch.allclose(ca(x, memory, mask), mha(x, mask, kv=memory), atol=1e-6)
    torch_mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([ca.q_proj.weight, ca.k_proj.weight, ca.v_proj.weight]))
        torch_mha.in_proj_bias.copy_(torch.cat([ca.q_proj.bias, ca.k_proj.bias, ca.v_proj.bias]))
        torch_mha.out_proj.load_state_dict(ca.out_proj.state_dict())
        expected, _ = torch_mha(x, memory, memory, key_padding_mask=~mask[:, 0, 0])  # True = padding there
    assert torch.allclose(ca(x, memory, mask), expected, atol=1e-5)


def test_padding_hides_memory_positions_and_there_is_no_causal_mask():
    torch.manual_seed(2)
    ca = CrossAttention(8, 4).eval()
    x, memory = _pair(seed=2)
    mask = mhsa_lib.padding_mask(torch.tensor([5, 3]), 5)[:, None]
    changed = memory.clone()
    changed[1, 3:] += 5.0
    with torch.no_grad():
        assert torch.allclose(ca(x, memory, mask), ca(x, changed, mask), atol=1e-6)
        _, w = ca(x, memory, mask, return_weights=True)
        assert w[1, ..., 3:].abs().max() == 0
        # The first decoder position reads the last memory position: no causal mask across sequences.
        _, w = ca(x, memory, return_weights=True)
        assert (w[:, :, 0, -1] > 0).all()
        # The memory is a set: permuting its positions changes nothing.
        perm = torch.tensor([4, 2, 0, 1, 3])
        assert torch.allclose(ca(x, memory), ca(x, memory[:, perm]), atol=1e-6)


@pytest.mark.parametrize("call,words", [
    (lambda ca, x, m: ca(x, m[..., :4]), "memory: expected a 3-D tensor (B, T, D) with D=d_model=8, got shape (2, 5, 4)"),
    (lambda ca, x, m: ca(x, m[:1]), "kv: expected batch size B=2 like x, got shape (1, 5, 8)"),
    (lambda ca, x, m: ca(x, m, torch.ones(2, 1, 1, 4, dtype=torch.bool)), "mask"),
    (lambda ca, x, m: ca(x[0], m), "x: expected a 3-D tensor"),
])
def test_bad_input_is_a_clear_error(call, words):
    ca = CrossAttention(8, 2)
    x, memory = _pair()
    with pytest.raises(ValueError) as e:
        call(ca, x, memory)
    assert words in str(e.value)


def test_constructor_errors():
    with pytest.raises(ValueError, match="num_heads"):
        CrossAttention(10, 3)


def test_decoder_block_causal_within_the_decoder_and_padding_over_the_memory():
    torch.manual_seed(3)
    block = DecoderBlock(8, 2, 16).eval()
    x, memory = _pair(t=4, s=6, seed=3)
    causal = mhsa_lib.causal_mask(4)
    pad = mhsa_lib.padding_mask(torch.tensor([6, 4]), 6)[:, None]
    with torch.no_grad():
        y = block(x, memory, causal, pad)
        assert y.shape == x.shape
        x2 = x.clone()
        x2[:, 2:] += 1.0  # the decoder's future
        assert torch.allclose(block(x2, memory, causal, pad)[:, :2], y[:, :2], atol=1e-6)
        m2 = memory.clone()
        m2[1, 4:] -= 2.0  # padding of sequence 1
        assert torch.allclose(block(x, m2, causal, pad), y, atol=1e-6)
        m3 = memory.clone()
        m3[0, -1] += 1.0  # a real memory position reaches every decoder position
        assert not torch.allclose(block(x, m3, causal, pad)[0, 0], y[0, 0], atol=1e-6)


def test_decoder_block_is_pre_norm_with_three_residual_branches():
    torch.manual_seed(4)
    block = DecoderBlock(8, 2, 16).eval()
    x, memory = _pair(seed=4)
    causal = mhsa_lib.causal_mask(3)
    with torch.no_grad():
        h = x + block.self_attn(block.norm1(x), causal)
        h = h + block.cross_attn(block.norm2(h), memory)
        expected = h + block.ffn(block.norm3(h))
        assert torch.allclose(block(x, memory, causal), expected, atol=1e-6)
