"""mhsa_lib.model: TinyTransformer (shapes, positions, the attention maps its forward pass really
uses) and the toy batches, against computations written out here."""

import math

import pytest
import torch

import mhsa_lib
from mhsa_lib.model import TinyTransformer, reversal_batch, sorting_batch

pytestmark = pytest.mark.usefixtures("torch_seed")

V, D, H, FF, L, T = 11, 16, 4, 32, 2, 9


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "none"])
def test_tiny_transformer_shapes_and_maps(positional):
    torch.manual_seed(0)
    model = mhsa_lib.TinyTransformer(V, D, H, FF, L, T, positional=positional).eval()
    tokens = torch.randint(0, V, (3, T))
    logits = model(tokens)
    assert logits.shape == (3, T, V)
    maps = model.attention_maps(tokens)
    assert len(maps) == L and all(m.shape == (3, H, T, T) for m in maps)
    assert torch.allclose(maps[0].sum(-1), torch.ones(3, H, T), atol=1e-5)
    # Without positions the model is permutation-equivariant; with them it is not.
    perm = torch.randperm(T)
    equivariant = torch.allclose(model(tokens[:, perm]), logits[:, perm], atol=1e-5)
    assert equivariant == (positional == "none")


def _randomise(model, seed=1):
    """Random values for every parameter, the LayerNorm gains and shifts included, so that a map
    computed without a block's norm1 (or with the wrong input) differs from the real one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _weights(attn, h, mask=None):
    """The (B, H, T, T) softmax weights of ``attn`` on input ``h``, written out per head."""
    dh = attn.d_model // attn.num_heads
    maps = []
    for i in range(attn.num_heads):
        rows = slice(i * dh, (i + 1) * dh)
        q = h @ attn.q_proj.weight[rows].T + attn.q_proj.bias[rows]
        k = h @ attn.k_proj.weight[rows].T + attn.k_proj.bias[rows]
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        maps.append(torch.softmax(scores, dim=-1))
    return torch.stack(maps, dim=1)


@pytest.mark.parametrize("masked", [False, True])
def test_attention_maps_are_the_weights_the_forward_pass_uses(masked):
    model = _randomise(TinyTransformer(V, D, H, FF, L, T, positional="learned").double().eval())
    tokens = torch.randint(0, V, (2, T))
    mask = mhsa_lib.causal_mask(T) if masked else None
    maps = model.attention_maps(tokens, mask)
    x = model.embed(tokens) + model.pos.weight[:T]  # (B, T, D), the blocks' input
    for layer, block in enumerate(model.blocks):
        expected = _weights(block.attn, _layer_norm(x, block.norm1), mask)  # pre-norm: on norm1(x)
        assert torch.allclose(maps[layer], expected, atol=1e-10), f"layer {layer}"
        without_norm = _weights(block.attn, x, mask)
        assert not torch.allclose(maps[layer], without_norm, atol=1e-3)
        x = block(x, mask)  # the residual stream the next layer sees
    assert torch.allclose(model(tokens, mask), model.head(model.norm(x)), atol=1e-10)


def test_attention_maps_do_not_change_the_model_output():
    model = _randomise(TinyTransformer(V, D, H, FF, L, T).eval())
    tokens = torch.randint(0, V, (2, T))
    before = model(tokens)
    maps = model.attention_maps(tokens)
    assert all(not m.requires_grad for m in maps)
    torch.testing.assert_close(model(tokens), before)


def test_toy_batches():
    g = torch.Generator().manual_seed(0)
    x, y = sorting_batch(4, 6, 10, g)
    assert x.shape == y.shape == (4, 6) and x.dtype == torch.long
    assert 0 <= int(x.min()) and int(x.max()) < 10
    for row, target in zip(x.tolist(), y.tolist()):
        assert target == sorted(row)  # the t-th smallest token, repeats kept
    x, y = reversal_batch(4, 6, 10, g)
    for row, target in zip(x.tolist(), y.tolist()):
        assert target == [row[6 - 1 - t] for t in range(6)]  # target[t] = input[T-1-t]
    # the same generator state gives the same batch; the batches are not constant
    x1, _ = reversal_batch(4, 6, 10, torch.Generator().manual_seed(3))
    x2, _ = reversal_batch(4, 6, 10, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and len(set(x1.flatten().tolist())) > 1
