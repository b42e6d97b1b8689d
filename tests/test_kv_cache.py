"""Tests for mhsa_lib.kv_cache: repeat_kv, GroupedQueryAttention, KVCache, kv_cache_bytes."""

import pytest
import torch

import mhsa_lib.attention as attention
from mhsa_lib import heads
from mhsa_lib.attention import causal_mask
from mhsa_lib.kv_cache import (
    GroupedQueryAttention,
    KVCache,
    StaticKVCache,
    kv_cache_bytes,
    repeat_kv,
)
from mhsa_lib.multihead import MultiHeadAttention

pytestmark = pytest.mark.usefixtures("torch_seed")

B, T, D, H = 2, 9, 24, 6  # Dh = 4
TOL = dict(atol=1e-5, rtol=1e-5)


def make_gqa(g, seed=0, bias=False, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    return GroupedQueryAttention(D, H, g, bias, dtype=dtype, **kw).eval()


def as_mha(gqa):
    """The equivalent MHA: K/V weights of head g copied to query heads g*n_rep … (g+1)*n_rep-1."""
    n_rep, dh = H // gqa.num_kv_heads, D // H
    bias = gqa.q_proj.bias is not None
    mha = MultiHeadAttention(D, H, bias, dtype=gqa.q_proj.weight.dtype).eval()
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(gqa.num_kv_heads, dh, D)  # (G*Dh, D) -> (G, Dh, D)
            getattr(mha, name).weight.copy_(w.repeat_interleave(n_rep, dim=0).reshape(D, D))
            if bias:
                b = getattr(gqa, name).bias.view(gqa.num_kv_heads, dh)
                getattr(mha, name).bias.copy_(b.repeat_interleave(n_rep, dim=0).reshape(D))
    return mha


def test_repeat_kv_is_the_heads_function():
    assert repeat_kv is heads.repeat_kv


def test_shapes():
    gqa = make_gqa(2)
    assert gqa.k_proj.weight.shape == (2 * 4, D) and gqa.q_proj.weight.shape == (D, D)
    assert gqa.q_proj.bias is None
    out, w = gqa(torch.randn(B, T, D), return_weights=True)
    assert out.shape == (B, T, D) and w.shape == (B, H, T, T)


@pytest.mark.parametrize("bias", [False, True])
def test_g_equals_h_is_mha(bias):
    gqa = make_gqa(H, bias=bias)
    mha = as_mha(gqa)
    assert torch.equal(mha.k_proj.weight, gqa.k_proj.weight)
    x = torch.randn(B, T, D)
    for backend in ("reference", "fast"):
        gqa.backend = mha.backend = backend
        torch.testing.assert_close(gqa(x, causal_mask(T)), mha(x, causal_mask(T)), **TOL)


@pytest.mark.parametrize("bias", [False, True])
def test_same_parameters_as_mha_when_g_equals_h(bias):
    """GQA and MHA share one frame: the same parameter names, shapes and initial values."""
    torch.manual_seed(3)
    gqa = GroupedQueryAttention(D, H, H, bias)
    torch.manual_seed(3)
    mha = MultiHeadAttention(D, H, bias)
    assert list(gqa.state_dict()) == list(mha.state_dict())
    names = ["q_proj", "k_proj", "v_proj", "out_proj"]
    assert list(gqa.state_dict()) == [f"{n}.{p}" for n in names for p in (["weight", "bias"] if bias else ["weight"])]
    for (name, a), (_, b) in zip(gqa.state_dict().items(), mha.state_dict().items()):
        assert torch.equal(a, b), name
    assert (gqa.num_kv_heads, mha.num_kv_heads, gqa.head_dim) == (H, H, D // H)


@pytest.mark.parametrize("g", [1, 2, 3])  # 1 is MQA
def test_shared_heads_equal_mha_with_interleaved_weights(g):
    gqa = make_gqa(g, bias=True, dtype=torch.float64)
    mha = as_mha(gqa)
    x = torch.randn(B, T, D, dtype=torch.float64)
    assert torch.allclose(gqa(x, causal=True), mha(x, causal=True), atol=1e-10)
    # `repeat` instead of `repeat_interleave` pairs query heads with the wrong K/V heads
    if g > 1:
        wrong = MultiHeadAttention(D, H, dtype=torch.float64).eval()
        wrong.load_state_dict(mha.state_dict())
        with torch.no_grad():
            for name in ("k_proj", "v_proj"):
                w = getattr(gqa, name).weight.view(g, D // H, D).repeat(H // g, 1, 1)
                getattr(wrong, name).weight.copy_(w.reshape(D, D))
                b = getattr(gqa, name).bias.view(g, D // H).repeat(H // g, 1)
                getattr(wrong, name).bias.copy_(b.reshape(D))
        assert not torch.allclose(gqa(x, causal=True), wrong(x, causal=True), atol=1e-3)


@pytest.mark.parametrize("g", [1, 2, H])
def test_reference_equals_fast(g):
    gqa = make_gqa(g)
    x = torch.randn(B, T, D)
    masks = [None, torch.rand(B, 1, T) > 0.3, torch.rand(B, H, T, T) > 0.5]
    for mask in masks:
        for causal in (False, True):
            gqa.backend = "reference"
            ref = gqa(x, mask, causal=causal)
            gqa.backend = "fast"
            torch.testing.assert_close(gqa(x, mask, causal=causal), ref, **TOL)


def test_enable_gqa_equals_explicit_repetition(monkeypatch):
    gqa = make_gqa(2, backend="fast")
    x = torch.randn(B, T, D)
    with_flag = [gqa(x), gqa(x, causal=True)]
    monkeypatch.setattr(attention, "HAS_ENABLE_GQA", False)  # the torch < 2.5 path (fast backend)
    torch.testing.assert_close(gqa(x), with_flag[0], **TOL)
    torch.testing.assert_close(gqa(x, causal=True), with_flag[1], **TOL)


def decode(gqa, x, chunks, cache):
    outs, start = [], 0
    for n in chunks:
        outs.append(gqa(x[:, start:start + n], cache=cache, causal=True))
        start += n
    assert len(cache) == start
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("g", [1, 3, H])
@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("chunks", [[1] * T, [4, 1, 1, 3], [5, 4]], ids=["steps", "prompt+steps", "prompt+chunk"])
@pytest.mark.parametrize("static", [False, True])
def test_cache_equals_no_cache(g, backend, chunks, static):
    gqa = make_gqa(g, backend=backend)
    x = torch.randn(B, T, D)
    full = gqa(x, causal=True)
    cache = StaticKVCache(B, g, T + 2, D // H) if static else KVCache()
    torch.testing.assert_close(decode(gqa, x, chunks, cache), full, **TOL)


def test_cache_with_padding_mask_covers_cached_keys():
    gqa = make_gqa(2)
    x = torch.randn(B, T, D)
    keep = torch.ones(B, 1, T, dtype=torch.bool)
    keep[1, 0, 1] = False  # sequence 1 never attends to position 1
    full = gqa(x, keep, causal=True)
    cache = KVCache()
    first = gqa(x[:, :5], keep[..., :5], cache, causal=True)
    rest = gqa(x[:, 5:], keep, cache, causal=True)  # mask over S = 5 cached + 4 new
    torch.testing.assert_close(torch.cat([first, rest], 1), full, **TOL)


def test_causal_ignores_future_and_cache_without_causal_differs():
    gqa = make_gqa(3)
    x = torch.randn(B, T, D)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(B, T - 6, D)
    torch.testing.assert_close(gqa(x2, causal=True)[:, :6], gqa(x, causal=True)[:, :6], **TOL)
    # a prompt fed through the cache without causal=True sees its own future: not equal
    out = gqa(x[:, :4], cache=KVCache())
    assert not torch.allclose(out, gqa(x, causal=True)[:, :4], atol=1e-4)


def test_kv_cache_bookkeeping():
    cache = KVCache()
    assert len(cache) == 0 and cache.k is None
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    cache.update(k, v)
    k_all, v_all = cache.update(k[:, :, :1] + 1, v[:, :, :1] + 1)
    assert len(cache) == 4 and k_all.shape == (1, 2, 4, 4)
    assert torch.equal(k_all[:, :, :3], k) and torch.equal(v_all[:, :, 3], v[:, :, 0] + 1)
    cache.reset()
    assert len(cache) == 0
    static = StaticKVCache(1, 2, 5, 4)
    static.update(k, v)
    k_all, _ = static.update(k[:, :, :2], v[:, :, :2])
    assert len(static) == 5 and torch.equal(k_all[:, :, 3:], k[:, :, :2])
    with pytest.raises(ValueError, match=r"k: expected at most 0 new positions \(max_seq_len=5, 5 cached\), got 1"):
        static.update(k[:, :, :1], v[:, :, :1])
    static.reset()
    assert len(static) == 0 and static.update(k, v)[0].shape == (1, 2, 3, 4)


def test_gradcheck_reference_gqa():
    gqa = GroupedQueryAttention(8, 4, 2, bias=True).double()
    x = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: gqa(x, causal=True), (x,))


def test_kv_cache_bytes():
    assert kv_cache_bytes(1, 4096, 32, 8, 128) == 512 * 2**20
    assert kv_cache_bytes(1, 4096, 32, 32, 128) == 2 * 2**30
    assert kv_cache_bytes(2, 10, 3, 4, 5, bytes_per_element=4) == 2 * 2 * 10 * 3 * 4 * 5 * 4
    cache = StaticKVCache(2, 4, 10, 5)  # float32, one layer
    assert cache.k_buffer.numel() * 4 * 2 == kv_cache_bytes(2, 10, 1, 4, 5, 4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: GroupedQueryAttention(D, H, 4), r"num_heads: expected a multiple of num_kv_heads=4 .*got num_heads=6"),
        (lambda: GroupedQueryAttention(D, 5, 5), r"d_model: expected a multiple of num_heads=5 .*got d_model=24"),
        (lambda: GroupedQueryAttention(D, H, 0), r"num_kv_heads: expected a positive int, got 0"),
        (lambda: make_gqa(2)(torch.randn(B, T)), r"x: expected a 3-D tensor \(B, T, D\) with D=d_model=24, got shape \(2, 9\)"),
        (lambda: make_gqa(2)(torch.randn(B, T, D), torch.ones(T, T, dtype=torch.int64)), r"mask: expected dtype torch.bool .*got torch.int64"),
        (lambda: kv_cache_bytes(1, -1, 1, 1, 1), r"seq_len: expected a non-negative int, got -1"),
        (lambda: kv_cache_bytes(1, 1, 1, 1, 1, 0), r"bytes_per_element: expected a positive int, got 0"),
        (lambda: KVCache().update(torch.randn(1, 2, 3), torch.randn(1, 2, 3)), r"k: expected a 4-D tensor \(B, G, T, Dh\), got \(1, 2, 3\)"),
        (lambda: KVCache().update(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 2, 4)), r"v: expected the shape of k \(1, 2, 3, 4\), got \(1, 2, 2, 4\)"),
        (lambda: StaticKVCache(1, 2, 5, 4).update(torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4)), r"k: expected \(B, G, T, Dh\) = \(1, 2, T, 4\) to match the cache, got \(1, 3, 1, 4\)"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cache_mask_shape_error_counts_cached_keys():
    gqa = make_gqa(2)
    cache = KVCache()
    gqa(torch.randn(B, 3, D), cache=cache)
    with pytest.raises(ValueError, match=r"mask: expected a shape broadcastable to \(B, H, T, S\) = \(2, 6, 1, 4\).*got \(1, 2\)"):
        gqa(torch.randn(B, 1, D), torch.ones(1, 2, dtype=torch.bool), cache)
    assert len(cache) == 3  # the failed call left the cache unchanged


def test_cache_mask_device_error_leaves_the_cache_unchanged():
    gqa = make_gqa(2)
    cache = KVCache()
    gqa(torch.randn(B, 3, D), cache=cache)
    with pytest.raises(ValueError, match=r"mask: expected device cpu like q, got meta"):
        gqa(torch.randn(B, 1, D), torch.ones(1, 4, dtype=torch.bool, device="meta"), cache)
    assert len(cache) == 3
