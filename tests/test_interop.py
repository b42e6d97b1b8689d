"""Tests for mhsa_lib.interop: weights and masks to and from torch.nn modules."""

import pytest
import torch
from torch import nn

from mhsa_lib.attention import causal_mask, padding_mask
from mhsa_lib.block import TransformerBlock
from mhsa_lib.interop import (
    block_from_torch,
    block_to_torch,
    key_padding_mask_from_torch,
    key_padding_mask_to_torch,
    load_block_from_torch,
    load_block_into_torch,
    load_mha_from_torch,
    load_mha_into_torch,
    mask_from_torch,
    mask_to_torch,
    mha_from_torch,
    mha_to_torch,
)
from mhsa_lib.multihead import FusedMultiHeadAttention, MultiHeadAttention

pytestmark = pytest.mark.usefixtures("torch_seed")

B, T, D, H, FF = 3, 6, 16, 4, 24
TOL = dict(atol=1e-5, rtol=1e-5)
LENGTHS = [6, 4, 1]


def randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def torch_mha_out(torch_mha, x, mask=None, kpm=None):
    out, _ = torch_mha(x, x, x, attn_mask=mask, key_padding_mask=kpm, need_weights=False)
    return out


def test_mask_conversions():
    ours = causal_mask(T)
    assert torch.equal(mask_to_torch(ours), ~ours)
    assert torch.equal(mask_from_torch(~ours), ours)
    additive = torch.zeros(T, T).masked_fill(~ours, float("-inf"))
    assert torch.equal(mask_from_torch(additive), ours)
    kpm = key_padding_mask_to_torch(padding_mask(LENGTHS, T))  # (B, 1, S) -> (B, S)
    assert kpm.shape == (B, T) and kpm[1].tolist() == [False] * 4 + [True] * 2
    back = key_padding_mask_from_torch(kpm)
    assert back.shape == (B, 1, 1, T) and torch.equal(back[:, 0], padding_mask(LENGTHS, T))


@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding", "both"])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_mha_from_torch_equals_torch(mask_kind, fused, backend):
    torch.manual_seed(0)
    torch_mha = randomise(nn.MultiheadAttention(D, H, batch_first=True)).eval()
    ours = mha_from_torch(torch_mha, fused=fused, backend=backend).eval()
    assert isinstance(ours, FusedMultiHeadAttention if fused else MultiHeadAttention)
    x = torch.randn(B, T, D)
    causal = causal_mask(T) if mask_kind in ("causal", "both") else None
    pad = padding_mask(LENGTHS, T) if mask_kind in ("padding", "both") else None  # (B, 1, S)
    expected = torch_mha_out(
        torch_mha, x,
        None if causal is None else mask_to_torch(causal),
        None if pad is None else key_padding_mask_to_torch(pad),
    )
    mask = causal if pad is None else (pad if causal is None else pad & causal)
    torch.testing.assert_close(ours(x, mask), expected, **TOL)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_mha_to_torch_equals_ours(fused, bias):
    torch.manual_seed(1)
    cls = FusedMultiHeadAttention if fused else MultiHeadAttention
    ours = randomise(cls(D, H, bias), 1).eval()
    torch_mha = mha_to_torch(ours).eval()
    assert torch_mha.batch_first and (torch_mha.in_proj_bias is not None) == bias
    x = torch.randn(B, T, D)
    mask = causal_mask(T)
    torch.testing.assert_close(torch_mha_out(torch_mha, x, mask_to_torch(mask)), ours(x, mask), **TOL)
    # and the weights round-trip exactly
    again = load_mha_from_torch(cls(D, H, bias), torch_mha)
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), again.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_in_proj_layout_is_q_k_v():
    torch_mha = randomise(nn.MultiheadAttention(D, H))
    ours = load_mha_from_torch(MultiHeadAttention(D, H), torch_mha)
    assert torch.equal(ours.k_proj.weight, torch_mha.in_proj_weight[D:2 * D])
    assert torch.equal(ours.v_proj.bias, torch_mha.in_proj_bias[2 * D:])
    mod = load_mha_into_torch(nn.MultiheadAttention(D, H), ours)
    assert torch.equal(mod.in_proj_weight, torch_mha.in_proj_weight)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_block_from_torch_equals_encoder_layer(norm_first, activation):
    torch.manual_seed(2)
    layer = randomise(nn.TransformerEncoderLayer(
        D, H, FF, dropout=0.1, activation=activation, batch_first=True, norm_first=norm_first
    ), 2).eval()
    block = block_from_torch(layer).eval()
    assert block.norm_placement == ("pre" if norm_first else "post")
    assert block.ffn.activation == activation and block.dropout.p == 0.1
    x = torch.randn(B, T, D)
    causal = causal_mask(T)
    for backend in ("reference", "fast"):
        block.backend = backend
        torch.testing.assert_close(block(x), layer(x), **TOL)
        torch.testing.assert_close(block(x, causal), layer(x, src_mask=mask_to_torch(causal)), **TOL)
        pad = padding_mask(LENGTHS, T)  # (B, 1, S)
        theirs = layer(x, src_key_padding_mask=key_padding_mask_to_torch(pad))
        # torch's fused inference path returns zeros at padded query positions: compare real ones
        real = pad[:, 0, :, None]  # (B, T, 1)
        torch.testing.assert_close(block(x, pad) * real, theirs * real, **TOL)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_block_to_torch_equals_block(placement):
    torch.manual_seed(3)
    block = randomise(TransformerBlock(D, H, FF, placement, activation="gelu"), 3).eval()
    layer = block_to_torch(block).eval()
    assert layer.norm_first == (placement == "pre") and layer.self_attn.batch_first
    x = torch.randn(B, T, D)
    causal = causal_mask(T)
    torch.testing.assert_close(layer(x, src_mask=mask_to_torch(causal)), block(x, causal), **TOL)
    fresh = load_block_from_torch(TransformerBlock(D, H, FF, placement, activation="gelu"), layer)
    for p1, p2 in zip(block.parameters(), fresh.parameters()):
        assert torch.equal(p1, p2)


def test_gradcheck_against_torch_weights():
    torch_mha = nn.MultiheadAttention(4, 2, batch_first=True).double()
    ours = mha_from_torch(torch_mha)
    x = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ours(x, causal=True), (x,))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: load_mha_from_torch(MultiHeadAttention(D, H), nn.MultiheadAttention(D, 2)), r"torch_mha: expected embed_dim=16, num_heads=4, got embed_dim=16, num_heads=2"),
        (lambda: load_mha_from_torch(MultiHeadAttention(D, H), nn.MultiheadAttention(D, H, bias=False)), r"torch_mha: expected bias=True like the module, got bias=False"),
        (lambda: load_mha_from_torch(MultiHeadAttention(D, H), nn.MultiheadAttention(D, H, kdim=8)), r"torch_mha: expected kdim == vdim == embed_dim"),
        (lambda: load_block_from_torch(TransformerBlock(D, H, FF, "pre"), nn.TransformerEncoderLayer(D, H, FF, norm_first=False)), r"layer: expected norm_first=True for norm_placement='pre', got norm_first=False"),
        (lambda: load_block_from_torch(TransformerBlock(D, H, FF), nn.TransformerEncoderLayer(D, H, FF, activation="gelu", norm_first=True)), r"layer: expected activation 'relu', got 'gelu'"),
        (lambda: load_block_from_torch(TransformerBlock(D, H, FF), nn.TransformerEncoderLayer(D, H, 8, norm_first=True)), r"layer: expected linear1 of shape \(F, D\) = \(24, 16\), got \(8, 16\)"),
        (lambda: mask_to_torch(torch.ones(2, 2)), r"mask: expected a bool tensor \(True = may attend\), got torch.float32"),
        (lambda: mask_from_torch(torch.full((2, 2), 0.5)), r"attn_mask: expected a float mask of only 0 \(allowed\) and -inf"),
        (lambda: key_padding_mask_to_torch(torch.ones(2, 3, 4, dtype=torch.bool)), r"mask: expected a per-key mask .*got shape \(2, 3, 4\)"),
        (lambda: key_padding_mask_from_torch(torch.ones(2, 3, 4, dtype=torch.bool)), r"key_padding_mask: expected a 2-D tensor \(B, S\), got \(2, 3, 4\)"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_load_into_torch_returns_same_object():
    block = TransformerBlock(D, H, FF)
    layer = nn.TransformerEncoderLayer(D, H, FF, batch_first=True, norm_first=True)
    assert load_block_into_torch(layer, block) is layer
    assert torch.equal(layer.linear2.weight, block.ffn.fc2.weight)
