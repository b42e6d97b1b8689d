"""Tests for mhsa_lib.multihead: attend_heads, MultiHeadAttention, FusedMultiHeadAttention."""

import math

import pytest
import torch
import torch.nn.functional as F

import mhsa_lib
from mhsa_lib import attention
from mhsa_lib.attention import causal_mask, padding_mask
from mhsa_lib.multihead import (
    HAS_ENABLE_GQA,
    FusedMultiHeadAttention,
    MultiHeadAttention,
    attend_heads,
    attention_heads,
    attention_heads_loop,
)

pytestmark = pytest.mark.usefixtures("torch_seed")

B, T, S, D, H = 2, 5, 7, 12, 3  # all distinct; Dh = 4
TOL = dict(atol=1e-5, rtol=1e-5)


def make_mha(seed=0, bias=True, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    return MultiHeadAttention(D, H, bias, dtype=dtype, **kw).eval()


def naive_mha(mha, x, kv=None, mask=None):
    """One head at a time, straight from the paper, in float64."""
    kv = x if kv is None else kv
    dh = D // H
    heads = []
    for h in range(H):
        rows = slice(h * dh, (h + 1) * dh)
        q = x @ mha.q_proj.weight[rows].T + mha.q_proj.bias[rows]
        k = kv @ mha.k_proj.weight[rows].T + mha.k_proj.bias[rows]
        v = kv @ mha.v_proj.weight[rows].T + mha.v_proj.bias[rows]
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v)
    return torch.cat(heads, dim=-1) @ mha.out_proj.weight.T + mha.out_proj.bias


def test_matches_naive_per_head_loop():
    mha = make_mha(dtype=torch.float64)
    x = torch.randn(B, T, D, dtype=torch.float64)
    mask = causal_mask(T)
    out, weights = mha(x, mask, return_weights=True)
    assert out.shape == (B, T, D) and weights.shape == (B, H, T, T)
    assert torch.allclose(out, naive_mha(mha, x, mask=mask), atol=1e-10)
    assert torch.allclose(weights.sum(-1), torch.ones(B, H, T, dtype=torch.float64))


def test_output_projection_and_scale_matter():
    # guards against a missing out_proj or a 1/sqrt(D) scale: both change the result
    mha = make_mha(dtype=torch.float64)
    with torch.no_grad():
        mha.q_proj.weight.mul_(8)  # unit-scale logits so the scale shows
    x = torch.randn(B, T, D, dtype=torch.float64)
    out, weights = mha(x, return_weights=True)
    q = mha.q_proj(x).view(B, T, H, D // H).transpose(1, 2)
    k = mha.k_proj(x).view(B, T, H, D // H).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), dim=-1)
    wrong = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), dim=-1)
    assert torch.allclose(weights, expected, atol=1e-10)
    assert not torch.allclose(weights, wrong, atol=1e-3)


MASKS = {
    "none": lambda: None,
    "causal": lambda: causal_mask(T),
    "padding": lambda: padding_mask([3, 5], T).unsqueeze(1),  # (B, 1, 1, S)
    "padding_3d": lambda: padding_mask([3, 0], T),  # (B, 1, S), sequence 1 fully masked
    "per_head": lambda: torch.rand(B, H, T, T, generator=torch.Generator().manual_seed(1)) > 0.3,
}


@pytest.mark.parametrize("mask_name", sorted(MASKS))
@pytest.mark.parametrize("causal", [False, True])
def test_reference_equals_fast(mask_name, causal):
    mha = make_mha()
    x = torch.randn(B, T, D)
    mask = MASKS[mask_name]()
    ref = mha(x, mask, causal=causal)
    mha.backend = "fast"
    fast = mha(x, mask, causal=causal)
    assert not torch.isnan(fast).any()
    torch.testing.assert_close(fast, ref, **TOL)


def test_return_weights_with_fast_backend_uses_reference():
    mha = make_mha(backend="fast")
    x = torch.randn(B, T, D)
    out, weights = mha(x, causal_mask(T), return_weights=True)
    assert weights is not None and weights.shape == (B, H, T, T)
    torch.testing.assert_close(out, mha(x, causal_mask(T)), **TOL)


def test_causal_flag_equals_explicit_mask_and_ignores_the_future():
    mha = make_mha()
    x = torch.randn(B, T, D)
    out = mha(x, causal=True)
    torch.testing.assert_close(out, mha(x, causal_mask(T)), **TOL)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(B, T - 3, D)  # change the future of positions 0..2
    for backend in ("reference", "fast"):
        mha.backend = backend
        assert torch.allclose(mha(x2, causal=True)[:, :3], out[:, :3], **TOL)
        assert not torch.allclose(mha(x2, causal=True)[:, 3:], out[:, 3:], **TOL)


def test_mask_reaches_the_attention():
    mha = make_mha()
    x = torch.randn(B, T, D)
    mask = padding_mask([3, 4], T).unsqueeze(1)  # keys >= length are padding
    out = mha(x, mask)
    x2 = x.clone()
    x2[0, 3:] += 5.0  # change only padded positions of sequence 0
    assert torch.allclose(mha(x2, mask)[0, :3], out[0, :3], **TOL)
    assert not torch.allclose(mha(x)[0, :3], out[0, :3], **TOL)


def test_fully_masked_row_gives_bias_not_nan():
    mha = make_mha()
    x = torch.randn(B, T, D)
    mask = torch.ones(T, T, dtype=torch.bool)
    mask[2] = False
    for backend in ("reference", "fast"):
        mha.backend = backend
        out = mha(x, mask)
        assert not torch.isnan(out).any()
        torch.testing.assert_close(out[:, 2], mha.out_proj.bias.expand(B, D), **TOL)


def test_permutation_equivariance_without_mask():
    mha = make_mha()
    x = torch.randn(B, T, D)
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(3))
    for backend in ("reference", "fast"):
        mha.backend = backend
        torch.testing.assert_close(mha(x[:, perm]), mha(x)[:, perm], **TOL)


def test_cross_attention_matches_naive():
    mha = make_mha(dtype=torch.float64)
    x = torch.randn(B, T, D, dtype=torch.float64)
    kv = torch.randn(B, S, D, dtype=torch.float64)
    mask = torch.rand(B, T, S) > 0.4  # 3-D: (B, T, S), shared by the heads
    mask[..., 0] = True  # every query sees a key (the naive loop gives NaN otherwise)
    out, weights = mha(x, mask, return_weights=True, kv=kv)
    assert weights.shape == (B, H, T, S)
    assert torch.allclose(out, naive_mha(mha, x, kv=kv, mask=mask), atol=1e-10)


@pytest.mark.parametrize("bias", [True, False])
def test_fused_equals_separate_both_ways(bias):
    mha = make_mha(bias=bias)
    x, kv = torch.randn(B, T, D), torch.randn(B, S, D)
    fused = FusedMultiHeadAttention.from_separate(mha)
    assert fused.qkv_proj.weight.shape == (3 * D, D)
    assert torch.equal(fused.qkv_proj.weight[D:2 * D], mha.k_proj.weight)
    for backend in ("reference", "fast"):
        mha.backend = fused.backend = backend
        torch.testing.assert_close(fused(x, causal_mask(T)), mha(x, causal_mask(T)), **TOL)
        torch.testing.assert_close(fused(x, kv=kv), mha(x, kv=kv), **TOL)
    torch.manual_seed(5)
    fused2 = FusedMultiHeadAttention(D, H, bias).eval()
    back = fused2.to_separate()
    assert isinstance(back, MultiHeadAttention)
    torch.testing.assert_close(back(x), fused2(x), **TOL)


def test_gradcheck_reference_path():
    mha = make_mha(dtype=torch.float64)
    x = torch.randn(2, 3, D, dtype=torch.float64, requires_grad=True)
    mask = causal_mask(3)
    assert torch.autograd.gradcheck(lambda x: mha(x, mask), (x,))
    fused = FusedMultiHeadAttention.from_separate(mha)
    kv = torch.randn(2, 4, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, kv: fused(x, kv=kv), (x, kv))


def test_fast_gradients_match_reference():
    mha = make_mha()
    x = torch.randn(B, T, D, requires_grad=True)
    grads = []
    for backend in ("reference", "fast"):
        mha.backend = backend
        mha.zero_grad()
        (g,) = torch.autograd.grad(mha(x, causal=True).square().sum(), x)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_attend_heads_causal_is_lower_right_with_s_greater_than_t():
    q = torch.randn(B, H, T, 4)
    k, v = torch.randn(B, H, S, 4), torch.randn(B, H, S, 4)
    out, w = attend_heads(q, k, v, causal=True)
    assert torch.equal(w[0, 0] > 0, causal_mask(T, S))  # last query sees all S keys
    expected, _ = attention.scaled_dot_product_attention(q, k, v, causal_mask(T, S))
    torch.testing.assert_close(out, expected, **TOL)
    fast, none = attend_heads(q, k, v, causal=True, backend="fast")
    assert none is None
    torch.testing.assert_close(fast, expected, **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_attend_heads_shared_kv_equals_explicit_repetition(causal):
    q = torch.randn(B, 6, T, 4)
    k, v = torch.randn(B, 2, T, 4), torch.randn(B, 2, T, 4)  # G=2 serves H=6
    rk, rv = torch.repeat_interleave(k, 3, dim=1), torch.repeat_interleave(v, 3, dim=1)
    mask = causal_mask(T) if causal else None
    expected, _ = attention.scaled_dot_product_attention(q, rk, rv, mask)
    for backend in ("reference", "fast"):  # fast uses enable_gqa when torch has it
        out, _ = attend_heads(q, k, v, causal=causal, backend=backend)
        torch.testing.assert_close(out, expected, **TOL)


def test_has_enable_gqa_says_whether_this_torch_accepts_it():
    q = torch.randn(1, 4, 3, 2)
    k = v = torch.randn(1, 2, 3, 2)  # 2 key/value heads for 4 query heads
    try:
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    except TypeError:  # torch < 2.5: no such keyword
        accepted = False
    else:
        accepted = True
        expected = F.scaled_dot_product_attention(
            q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1))
        torch.testing.assert_close(out, expected, **TOL)
    assert HAS_ENABLE_GQA is accepted
    assert HAS_ENABLE_GQA is attention.HAS_ENABLE_GQA  # the flag the fast backend reads


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: MultiHeadAttention(10, 3), r"d_model: expected a multiple of num_heads=3.*got d_model=10"),
        (lambda: MultiHeadAttention(12, 0), r"num_heads: expected a positive int, got 0"),
        (lambda: MultiHeadAttention(12, 3, backend="flash"), r"backend: expected one of .*got 'flash'"),
        (lambda: make_mha()(torch.randn(T, D)), r"x: expected a 3-D tensor \(B, T, D\) with D=d_model=12, got shape \(5, 12\); add a batch"),
        (lambda: make_mha()(torch.randn(B, T, 8)), r"x: expected .*D=d_model=12, got shape \(2, 5, 8\)"),
        (lambda: make_mha()(torch.randn(B, T, D), torch.ones(T, T)), r"mask: expected dtype torch.bool.*got torch.float32"),
        (lambda: make_mha()(torch.randn(B, T, D), torch.ones(T, T + 1, dtype=torch.bool)), r"mask: expected a shape broadcastable to \(B, H, T, S\) = \(2, 3, 5, 5\).*got \(5, 6\)"),
        (lambda: make_mha()(torch.randn(B, T, D), kv=torch.randn(3, S, D)), r"kv: expected batch size B=2 like x, got shape \(3, 7, 12\)"),
        (lambda: attend_heads(torch.randn(1, 3, 2, 4), torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4)), r"k, v: expected a number of heads G that divides H=3"),
        (lambda: attend_heads(torch.randn(3, 2, 4), torch.randn(1, 3, 2, 4), torch.randn(1, 3, 2, 4)), r"q: expected a 4-D tensor \(B, H, T, Dh\), got \(3, 2, 4\)"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- attention_heads


def _heads_weights(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, dtype=dtype)
    ws = [torch.randn(D, D, generator=g, dtype=dtype) / D ** 0.5 for _ in range(3)]
    return x, ws


def _torch_heads(x, w_q, w_k, w_v, num_heads, mask=None):
    """Independently: project, reshape to (B, H, T, Dh) by hand, torch's own attention."""
    b, t, _ = x.shape

    def heads(w):
        y = F.linear(x, w)  # (B, T, D)
        return y.reshape(b, t, num_heads, -1).permute(0, 2, 1, 3)  # (B, H, T, Dh)

    return F.scaled_dot_product_attention(heads(w_q), heads(w_k), heads(w_v), attn_mask=mask)


HEADS_MASKS = {
    "none": lambda: None,
    "causal": lambda: causal_mask(T),
    "padding": lambda: padding_mask([3, 5], T).unsqueeze(1),  # (B, 1, 1, T)
    "per_head": lambda: (torch.rand(B, H, T, T, generator=torch.Generator().manual_seed(2)) > 0.4)
    | torch.eye(T, dtype=torch.bool),  # every query keeps a key
}


@pytest.mark.parametrize("mask_name", sorted(HEADS_MASKS))
def test_attention_heads_matches_torch(mask_name):
    x, ws = _heads_weights()
    mask = HEADS_MASKS[mask_name]()
    out = attention_heads(x, *ws, H, mask)
    assert out.shape == (B, H, T, D // H)
    assert torch.allclose(out, _torch_heads(x, *ws, H, mask), atol=1e-10)
    assert mhsa_lib.attention_heads is attention_heads


@pytest.mark.parametrize("mask_name", sorted(HEADS_MASKS))
def test_attention_heads_loop_matches_torch_and_the_stacked_version(mask_name):
    x, ws = _heads_weights(1)
    dh = D // H
    per_head = [[w[h * dh:(h + 1) * dh] for h in range(H)] for w in ws]  # H x (Dh, D) each
    mask = HEADS_MASKS[mask_name]()
    out = attention_heads_loop(x, *per_head, mask)
    assert out.shape == (B, H, T, dh)
    assert torch.allclose(out, _torch_heads(x, *ws, H, mask), atol=1e-10)
    assert torch.equal(out, attention_heads(x, *ws, H, mask))
    # head 1 on its own (a list of one matrix each) is head 1 of the whole
    per_head_mask = mask is not None and mask.ndim == 4 and mask.shape[1] == H
    one = attention_heads_loop(x, *([w[1]] for w in per_head), mask[:, 1:2] if per_head_mask else mask)
    assert torch.allclose(one[:, 0], out[:, 1], atol=1e-10)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: attention_heads(torch.randn(T, D), *[torch.randn(D, D)] * 3, H), r"x: expected a 3-D tensor \(B, T, D\), got shape \(5, 12\)"),
        (lambda: attention_heads(torch.randn(B, T, D), torch.randn(D, 8), torch.randn(D, D), torch.randn(D, D), H), r"w_q: expected \(D, D\) with D=12 like x \(2, 5, 12\), got shape \(12, 8\)"),
        (lambda: attention_heads(torch.randn(B, T, D), torch.randn(D, D), torch.randn(D), torch.randn(D, D), H), r"w_k: expected a 2-D tensor \(D, D\), got shape \(12,\)"),
        (lambda: attention_heads(torch.randn(B, T, D), *[torch.randn(D, D)] * 3, 5), r"num_heads: expected a divisor of the last dimension D=12 of x, got 5"),
        (lambda: attention_heads_loop(torch.randn(B, T, D), [], [], []), r"w_q: expected a non-empty list of per-head \(Dh, D\) tensors"),
        (lambda: attention_heads_loop(torch.randn(B, T, D), [torch.randn(4, D)] * 3, [torch.randn(4, D)] * 2, [torch.randn(4, D)] * 3), r"w_k: expected 3 heads like w_q, got 2"),
        (lambda: attention_heads_loop(torch.randn(B, T, D), [torch.randn(4, D), torch.randn(3, D)], [torch.randn(4, D)] * 2, [torch.randn(4, D)] * 2), r"w_q\[1\]: expected shape \(4, 12\) like w_q\[0\], got \(3, 12\)"),
        (lambda: attention_heads_loop(torch.randn(B, T, D), torch.randn(3, 4, D), [torch.randn(4, D)] * 3, [torch.randn(4, D)] * 3), r"w_q: expected a non-empty list .*got a tensor \(3, 4, 12\)"),
    ],
)
def test_attention_heads_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
