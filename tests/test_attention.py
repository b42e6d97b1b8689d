"""mhsa_lib.attention: softmax, masks and scaled dot-product attention against PyTorch."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import cpu_matmul_supports

import mhsa_lib
from mhsa_lib import attention, causal_mask, padding_mask, scaled_dot_product_attention, softmax

pytestmark = pytest.mark.usefixtures("torch_seed")

TOL = dict(atol=1e-5, rtol=1e-5)


def _qkv(*lead, t=5, s=7, dk=6, dv=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    def mk(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    return mk(*lead, t, dk), mk(*lead, s, dk), mk(*lead, s, dv)


# --------------------------------------------------------------------------- softmax


@pytest.mark.parametrize("dim", [0, 1, -1, -2])
def test_softmax_matches_torch(dim):
    x = torch.randn(3, 4, 5)
    torch.testing.assert_close(softmax(x, dim=dim), torch.softmax(x, dim=dim), **TOL)


def test_softmax_is_stable_for_large_logits():
    x = torch.tensor([[1e4, 1e4 + 1.0, 1e4 - 2.0], [-1e4, -1e4 + 3.0, -1e4], [1e38, 0.0, -1e38]])
    y = softmax(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, torch.softmax(x.double(), -1).float(), **TOL)


def test_softmax_of_all_minus_inf_row_is_zero():
    x = torch.tensor([[float("-inf")] * 3, [0.0, float("-inf"), 0.0]])
    y = softmax(x)
    assert torch.equal(y[0], torch.zeros(3))
    torch.testing.assert_close(y[1], torch.tensor([0.5, 0.0, 0.5]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_softmax_low_precision_keeps_dtype(dtype):
    x = torch.randn(4, 9)
    y = softmax(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), torch.softmax(x, -1), atol=1e-2, rtol=1e-2)


def test_softmax_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"x: expected a floating-point tensor, got dtype torch.int64"):
        softmax(torch.arange(3))
    with pytest.raises(ValueError, match=r"dim: expected an axis in \[-2, 1\] for a 2-D input, got 2"):
        softmax(torch.randn(2, 3), dim=2)
    with pytest.raises(ValueError, match=r"x: expected a torch.Tensor, got list"):
        softmax([1.0, 2.0])


# --------------------------------------------------------------------------- masks


def test_causal_mask_square_is_lower_triangle():
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())


@pytest.mark.parametrize("t,s", [(1, 6), (2, 5), (3, 3), (4, 9)])
def test_causal_mask_is_aligned_to_lower_right(t, s):
    m = causal_mask(t, s)
    assert m.shape == (t, s) and m.dtype == torch.bool
    for i in range(t):
        assert m[i].sum() == s - t + i + 1  # query i sits at absolute position S - T + i
    assert m[-1].all()


def test_causal_mask_errors():
    with pytest.raises(ValueError, match=r"seq_len_k: expected a non-negative int, got -1"):
        causal_mask(3, -1)


def test_padding_mask_from_lengths():
    m = padding_mask(torch.tensor([2, 4, 0]), 4)
    assert m.shape == (3, 1, 4) and m.dtype == torch.bool
    assert m[:, 0].tolist() == [[True, True, False, False], [True] * 4, [False] * 4]
    assert padding_mask([1, 3]).shape == (2, 1, 3)


def test_padding_mask_errors():
    with pytest.raises(ValueError, match=r"lengths: expected values <= seq_len=3, got \[1, 5\]"):
        padding_mask([1, 5], 3)
    with pytest.raises(ValueError, match=r"lengths: expected a 1-D tensor"):
        padding_mask(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"lengths: expected values >= 0"):
        padding_mask([-1, 2])


# --------------------------------------------------------------------------- attention


def _torch_sdpa(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("backend", mhsa_lib.BACKENDS)
@pytest.mark.parametrize("lead", [(), (2,), (2, 3), (2, 1, 3)])
def test_attention_matches_torch_without_mask(backend, lead):
    q, k, v = _qkv(*lead)
    out, weights = scaled_dot_product_attention(q, k, v, backend=backend)
    torch.testing.assert_close(out, _torch_sdpa(q, k, v), **TOL)
    if backend == "reference":
        assert weights.shape == lead + (5, 7)
        torch.testing.assert_close(weights.sum(-1), torch.ones(lead + (5,)), **TOL)
    else:
        assert weights is None


def _masks():
    lengths = torch.tensor([7, 3])
    g = torch.Generator().manual_seed(1)
    random = torch.rand(2, 3, 5, 7, generator=g) < 0.5
    random[..., -1] = True
    return {
        "causal_lower_right": causal_mask(5, 7),
        "padding": padding_mask(lengths, 7).unsqueeze(1),  # (B, 1, 1, S)
        "random": random,
        "causal_and_padding": causal_mask(5, 7) & padding_mask(lengths, 7).unsqueeze(1),
    }


@pytest.mark.parametrize("backend", mhsa_lib.BACKENDS)
@pytest.mark.parametrize("name", list(_masks()))
def test_attention_matches_torch_with_masks(backend, name):
    q, k, v = _qkv(2, 3)
    mask = _masks()[name]
    out, _ = scaled_dot_product_attention(q, k, v, mask, backend=backend)
    torch.testing.assert_close(out, _torch_sdpa(q, k, v, mask), **TOL)


@pytest.mark.parametrize("backend", mhsa_lib.BACKENDS)
def test_fully_masked_rows_give_zero_not_nan(backend):
    q, k, v = _qkv(2, 3)
    mask = causal_mask(5, 7).expand(2, 3, 5, 7).clone()
    mask[0, 1, 2] = False
    mask[1, :, 0] = False
    q.requires_grad_(True)
    out, weights = scaled_dot_product_attention(q, k, v, mask, backend=backend)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 1, 2], torch.zeros(3)) and torch.equal(out[1, :, 0], torch.zeros(3, 3))
    if weights is not None:
        assert torch.equal(weights[0, 1, 2], torch.zeros(7))
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    # Rows that do have keys are untouched.
    keep = mask.any(-1)
    torch.testing.assert_close(out[keep], _torch_sdpa(q.detach(), k, v, mask)[keep], **TOL)


def test_reference_and_fast_paths_agree_in_float32():
    q, k, v = _qkv(4, 2, t=9, s=11, dk=8, dv=8)
    mask = causal_mask(9, 11)
    ref, _ = scaled_dot_product_attention(q, k, v, mask, backend="reference")
    fast, _ = scaled_dot_product_attention(q, k, v, mask, backend="fast")
    torch.testing.assert_close(ref, fast, **TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_within_naive_error(dtype):
    if not cpu_matmul_supports(dtype):
        pytest.skip(f"torch {torch.__version__} has no {dtype} matmul on the CPU")
    q, k, v = _qkv(2, 3, dk=16, dv=16)
    exact, _ = scaled_dot_product_attention(q.double(), k.double(), v.double())
    ours, _ = scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    naive = torch.softmax(q.to(dtype) @ k.to(dtype).transpose(-2, -1) / 4.0, -1) @ v.to(dtype)
    assert ours.dtype == dtype
    err_ours = (ours.double() - exact).abs().max()
    err_naive = (naive.double() - exact).abs().max()
    assert err_ours <= 2 * err_naive + 1e-3


def test_weights_rows_sum_to_one_and_scale_is_one_over_sqrt_dk():
    q, k, v = _qkv(3, dk=16)
    _, weights = scaled_dot_product_attention(q, k, v)
    expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(16), -1)
    torch.testing.assert_close(weights, expected, **TOL)


def test_gradcheck_reference_path_float64():
    q, k, v = _qkv(2, t=3, s=4, dk=2, dv=3, dtype=torch.float64)
    mask = causal_mask(3, 4)
    mask = mask.clone()
    mask[0] = False  # a fully masked row must have a well-defined (zero) gradient too
    inputs = tuple(x.requires_grad_(True) for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask)[0], inputs)
    assert torch.autograd.gradcheck(lambda x: softmax(x, dim=0), (torch.randn(3, 4, dtype=torch.float64, requires_grad=True),))


def test_attention_errors_name_the_argument():
    q, k, v = _qkv(2)
    cases = [
        ((q, k[..., :5], v), r"k: expected last dimension Dk=6 to match q \(2, 5, 6\), got shape \(2, 7, 5\)"),
        ((q, k, v[:, :6]), r"v: expected S=7 rows to match k \(2, 7, 6\), got shape \(2, 6, 3\)"),
        ((q[0, 0], k, v), r"q: expected at least 2 dimensions \(\.\.\., length, width\), got shape \(6,\)"),
        ((q, k.double(), v), r"k: expected dtype torch.float32 like q, got torch.float64"),
        ((q.long(), k, v), r"q: expected a floating-point tensor, got dtype torch.int64"),
        ((q, k[:1].expand(3, 7, 6), v), r"q, k, v: expected leading \(batch\) dimensions that broadcast"),
    ]
    for args, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            scaled_dot_product_attention(*args)


def test_mask_errors_name_the_argument():
    q, k, v = _qkv(2)
    with pytest.raises(ValueError, match=r"mask: expected dtype torch.bool \(True = may attend\), got torch.float32"):
        scaled_dot_product_attention(q, k, v, causal_mask(5, 7).float())
    with pytest.raises(ValueError, match=r"mask: expected a shape broadcastable to the scores \(\.\.\., T, S\) = \(2, 5, 7\), got \(7, 5\)"):
        scaled_dot_product_attention(q, k, v, causal_mask(7, 5))
    with pytest.raises(ValueError, match=r"mask: expected a shape broadcastable .* got \(3, 5, 7\)"):
        scaled_dot_product_attention(q, k, v, torch.ones(3, 5, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"backend: expected one of \('reference', 'fast'\), got 'flash'"):
        scaled_dot_product_attention(q, k, v, backend="flash")


# --------------------------------------------------------------------------- the backend table


def _independent(q, k, v, mask, causal, kv_repeats):
    """What every backend must compute, from torch's own attention: K/V heads repeated by
    hand, the causal block aligned to the lower right, a row with no key giving 0."""
    k = k.repeat_interleave(kv_repeats, dim=-3)
    v = v.repeat_interleave(kv_repeats, dim=-3)
    t, s = q.shape[-2], k.shape[-2]
    allowed = torch.ones(t, s, dtype=torch.bool)
    if causal:
        allowed = torch.arange(s)[None, :] <= torch.arange(t)[:, None] + (s - t)
    if mask is not None:
        allowed = allowed & mask
    has_key = allowed.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~has_key)
    return out.masked_fill(~has_key, 0.0)


TABLE_CASES = {  # name: (H, G, T, S, mask or None)
    "plain": (3, 3, 5, 7, None),
    "square": (3, 3, 6, 6, None),
    "gqa": (6, 2, 5, 5, None),
    "mqa": (4, 1, 5, 8, None),
    "padding": (3, 3, 5, 7, padding_mask([7, 2], 7).unsqueeze(1)),
    "gqa_random": (6, 3, 5, 7, torch.rand(2, 6, 5, 7, generator=torch.Generator().manual_seed(4)) < 0.6),
    "empty_row": (2, 1, 4, 4, torch.tensor([True, True, False, True])[:, None].expand(4, 4)),
}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", sorted(TABLE_CASES))
@pytest.mark.parametrize("name", sorted(attention.ATTENTION_BACKENDS))
def test_every_backend_matches_an_independent_computation(name, case, causal):
    h, g, t, s, mask = TABLE_CASES[case]
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(2, h, t, 4, generator=gen)
    k, v = torch.randn(2, g, s, 4, generator=gen), torch.randn(2, g, s, 3, generator=gen)
    backend = attention.ATTENTION_BACKENDS[name]
    out, weights = backend(q, k, v, mask, causal, h // g)
    expected = _independent(q, k, v, mask, causal, h // g)
    assert out.shape == (2, h, t, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, **TOL)
    if weights is not None:  # a backend that forms the weights: they give the output
        assert weights.shape == (2, h, t, s)
        torch.testing.assert_close(weights @ v.repeat_interleave(h // g, dim=1), out, **TOL)
    assert (weights is None) == (name == "fast")


def test_backend_table_is_what_the_functions_use():
    assert mhsa_lib.BACKENDS == tuple(attention.ATTENTION_BACKENDS) == ("reference", "fast")
    for name, fn in attention.ATTENTION_BACKENDS.items():
        assert attention.get_backend(name) is fn
    q, k, v = _qkv(2, 3)
    calls = []

    def spy(*args):
        calls.append(args[4:])
        return attention.reference_backend(*args)

    table = dict(attention.ATTENTION_BACKENDS, reference=spy)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention, "ATTENTION_BACKENDS", table)
        scaled_dot_product_attention(q, k, v)
        mhsa_lib.attend_heads(q, k, v, causal=True)
    assert calls == [(False, 1), (True, 1)]


@pytest.mark.parametrize("bad", ["flash", "Reference", "", None, 3])
def test_bad_backend_names_are_rejected_naming_the_argument(bad):
    q, k, v = _qkv(2, 3)
    pattern = r"backend: expected one of \('reference', 'fast'\), got " + re.escape(repr(bad))
    calls = [
        lambda: attention.get_backend(bad),
        lambda: scaled_dot_product_attention(q, k, v, backend=bad),
        lambda: mhsa_lib.attend_heads(q, k, v, backend=bad),
        lambda: mhsa_lib.MultiHeadAttention(12, 3, backend=bad),
        lambda: mhsa_lib.GroupedQueryAttention(12, 3, 1, backend=bad),
        lambda: mhsa_lib.TransformerBlock(12, 3, 20, backend=bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=pattern):
            call()
