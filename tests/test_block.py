"""Tests for mhsa_lib.block: LayerNorm, FeedForward, TransformerBlock."""

import pytest
import torch
import torch.nn.functional as F

from mhsa_lib.attention import causal_mask
from mhsa_lib.block import FeedForward, LayerNorm, TransformerBlock

pytestmark = pytest.mark.usefixtures("torch_seed")

B, T, D, H, FF = 2, 5, 12, 3, 20  # D != F
TOL = dict(atol=1e-5, rtol=1e-5)


def randomise(module, seed=0):
    """Random norm gains/shifts too, so a swapped or missing norm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module


def test_layernorm_matches_functional_and_uses_biased_variance():
    ln = randomise(LayerNorm(D, dtype=torch.float64))
    x = torch.randn(B, T, D, dtype=torch.float64) * 3 + 1
    expected = F.layer_norm(x, (D,), ln.weight, ln.bias, 1e-5)
    assert torch.allclose(ln(x), expected, atol=1e-12)
    unbiased = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + 1e-5)
    assert not torch.allclose(ln(x), unbiased * ln.weight + ln.bias, atol=1e-3)


def test_layernorm_defaults_and_low_precision():
    ln = LayerNorm(D)
    assert torch.equal(ln.weight, torch.ones(D)) and torch.equal(ln.bias, torch.zeros(D))
    x = torch.randn(B, T, D) * 100
    y = ln(x)
    assert torch.allclose(y.mean(-1), torch.zeros(B, T), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(B, T), atol=1e-3)
    half = ln(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), y, atol=5e-2)


@pytest.mark.parametrize("activation, fn", [("relu", F.relu), ("gelu", F.gelu)])
def test_feedforward_matches_formula(activation, fn):
    ffn = FeedForward(D, FF, activation).double()
    assert ffn.fc1.weight.shape == (FF, D) and ffn.fc2.weight.shape == (D, FF)
    x = torch.randn(B, T, D, dtype=torch.float64)
    expected = fn(x @ ffn.fc1.weight.T + ffn.fc1.bias) @ ffn.fc2.weight.T + ffn.fc2.bias
    assert torch.allclose(ffn(x), expected, atol=1e-12)
    linear = (x @ ffn.fc1.weight.T + ffn.fc1.bias) @ ffn.fc2.weight.T + ffn.fc2.bias
    assert not torch.allclose(ffn(x), linear, atol=1e-3)


def manual_block(block, x, mask, placement):
    attn = lambda h: block.attn(h, mask)  # noqa: E731
    if placement == "pre":
        x = x + attn(block.norm1(x))
        return x + block.ffn(block.norm2(x))
    x = block.norm1(x + attn(x))
    return block.norm2(x + block.ffn(x))


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_block_formula_and_placements_differ(placement):
    torch.manual_seed(0)
    block = randomise(TransformerBlock(D, H, FF, placement).double().eval())
    x = torch.randn(B, T, D, dtype=torch.float64)
    mask = causal_mask(T)
    out = block(x, mask)
    assert out.shape == (B, T, D)
    assert torch.allclose(out, manual_block(block, x, mask, placement), atol=1e-12)
    other = "post" if placement == "pre" else "pre"
    assert not torch.allclose(out, manual_block(block, x, mask, other), atol=1e-3)


@pytest.mark.parametrize("placement", ["pre", "post"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_block_reference_equals_fast(placement, activation):
    torch.manual_seed(1)
    block = randomise(TransformerBlock(D, H, FF, placement, activation=activation).eval(), 1)
    x = torch.randn(B, T, D)
    mask = torch.rand(B, 1, T) > 0.3  # (B, 1, S) key padding style, may empty a row
    ref = [block(x, mask), block(x, causal=True)]
    block.backend = "fast"
    assert block.attn.backend == "fast"
    torch.testing.assert_close(block(x, mask), ref[0], **TOL)
    torch.testing.assert_close(block(x, causal=True), ref[1], **TOL)


def test_dropout_only_in_training():
    torch.manual_seed(2)
    block = TransformerBlock(D, H, FF, "pre", 0.5)
    plain = TransformerBlock(D, H, FF, "pre", 0.0)
    plain.load_state_dict(block.state_dict())
    x = torch.randn(B, T, D)
    block.eval()
    plain.eval()
    torch.testing.assert_close(block(x), plain(x), **TOL)
    torch.testing.assert_close(block(x), block(x), **TOL)
    block.train()
    assert not torch.allclose(block(x), plain(x), atol=1e-3)


def manual_block_train(block, x, mask=None):
    """The block in training mode, written out, drawing dropout masks in the block's order:
    the attention output, the FFN's hidden activation (inside ``ffn``), the FFN output."""
    if block.norm_placement == "pre":
        x = x + block.dropout(block.attn(block.norm1(x), mask))
        return x + block.dropout(block.ffn(block.norm2(x)))
    x = block.norm1(x + block.dropout(block.attn(x, mask)))
    return block.norm2(x + block.dropout(block.ffn(x)))


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_dropout_in_training_matches_formula_with_the_same_rng(placement):
    block = randomise(TransformerBlock(D, H, FF, placement, 0.3).double().train(), 4)
    x = torch.randn(B, T, D, dtype=torch.float64)
    mask = causal_mask(T)
    torch.manual_seed(11)
    out = block(x, mask)
    torch.manual_seed(11)
    assert torch.allclose(out, manual_block_train(block, x, mask), atol=1e-12)


def test_dropout_applies_to_the_feed_forward_output():
    """Attention contributes nothing and the FFN keeps its hidden units, so x_out - x is the FFN
    branch after the block's dropout: each entry 0 or FFN(LN2(x)) / (1 - p), many of them 0."""
    p = 0.5
    block = randomise(TransformerBlock(D, H, FF, "pre", p).double().train(), 5)
    with torch.no_grad():
        block.attn.out_proj.weight.zero_()
        block.attn.out_proj.bias.zero_()
    block.ffn.dropout.p = 0.0
    x = torch.randn(4, 16, D, dtype=torch.float64)
    branch = block(x) - x
    full = block.ffn(block.norm2(x))  # no dropout inside, so this is the undropped branch
    dropped = branch == 0
    assert torch.allclose(branch[~dropped], full[~dropped] / (1 - p), atol=1e-10)
    assert 0.3 < dropped.double().mean().item() < 0.7, "the FFN output is not dropped out"


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_return_weights_gives_the_weights_of_the_attention_sub_layer(placement):
    block = randomise(TransformerBlock(D, H, FF, placement).double().eval(), 6)
    x = torch.randn(B, T, D, dtype=torch.float64)
    mask = causal_mask(T)
    out, weights = block(x, mask, return_weights=True)
    assert torch.allclose(out, block(x, mask), atol=1e-12)
    attn_input = block.norm1(x) if placement == "pre" else x  # pre-norm: after norm1
    _, expected = block.attn(attn_input, mask, return_weights=True)
    assert weights.shape == (B, H, T, T) and torch.allclose(weights, expected, atol=1e-12)
    block.backend = "fast"  # the weights come from the reference path, the output agrees
    out_fast, weights_fast = block(x, causal=True, return_weights=True)
    torch.testing.assert_close(out_fast, block(x, causal=True))
    assert torch.allclose(weights_fast, block.attn(attn_input, causal=True, return_weights=True)[1])


def test_feedforward_activation_is_resolved_once_and_settable():
    ffn = FeedForward(D, FF, "relu").double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    relu_out = ffn(x)
    ffn.activation = "gelu"
    assert ffn.activation == "gelu" and "activation='gelu'" in repr(ffn)
    assert torch.allclose(ffn(x), ffn.fc2(F.gelu(ffn.fc1(x))), atol=1e-12)
    assert not torch.allclose(ffn(x), relu_out, atol=1e-6)
    with pytest.raises(ValueError, match=r"activation: expected one of \('relu', 'gelu'\), got 'swish'"):
        ffn.activation = "swish"
    assert ffn.activation == "gelu"  # a rejected name changes nothing


def test_causal_block_ignores_future():
    block = TransformerBlock(D, H, FF, "post").eval()
    x = torch.randn(B, T, D)
    x2 = x.clone()
    x2[:, 4] += 1.0
    torch.testing.assert_close(block(x2, causal=True)[:, :4], block(x, causal=True)[:, :4], **TOL)


def test_gradcheck_reference_block():
    torch.manual_seed(3)
    for placement in ("pre", "post"):
        block = randomise(TransformerBlock(6, 2, 7, placement, activation="gelu").double().eval(), 3)
        x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: block(x, causal=True), (x,))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: TransformerBlock(D, H, FF, "middle"), r"norm_placement: expected one of \('pre', 'post'\), got 'middle'"),
        (lambda: TransformerBlock(D, H, FF, dropout=1.5), r"dropout: expected a probability in \[0, 1\), got 1.5"),
        (lambda: TransformerBlock(D, 5, FF), r"d_model: expected a multiple of num_heads=5 .*got d_model=12"),
        (lambda: FeedForward(D, FF, "tanh"), r"activation: expected one of \('relu', 'gelu'\), got 'tanh'"),
        (lambda: LayerNorm(D)(torch.randn(B, T, D + 1)), r"x: expected shape \(\.\.\., D\) with D=d_model=12, got \(2, 5, 13\)"),
        (lambda: LayerNorm(0), r"d_model: expected a positive int, got 0"),
        (lambda: TransformerBlock(D, H, FF)(torch.randn(T, D)), r"x: expected a 3-D tensor \(B, T, D\)"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
