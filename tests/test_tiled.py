"""mhsa_lib.tiled: the online softmax merge and tiled attention against PyTorch and the library's
own attention (float64 and float32, block sizes that do and do not divide S, masks, causal with
S > T, fully masked rows), and the memory counter."""

import math

import pytest
import torch
import torch.nn.functional as F

import mhsa_lib
from mhsa_lib import largest_intermediate, online_softmax_merge, tiled_attention

pytestmark = pytest.mark.usefixtures("torch_seed")

INF = float("-inf")


def _qkv(*lead, t=5, s=7, dk=6, dv=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def mk(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    return mk(*lead, t, dk), mk(*lead, s, dk), mk(*lead, s, dv)


def _summary(x):
    """(max, Σ exp(x - max)) along the last axis, (-inf, 0) for an empty or all -inf slice."""
    if x.shape[-1] == 0:
        return torch.full(x.shape[:-1], INF, dtype=x.dtype), torch.zeros(x.shape[:-1], dtype=x.dtype)
    m = x.amax(-1)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m, torch.exp(x - shift.unsqueeze(-1)).sum(-1)


# --------------------------------------------------------------------------- the merge


@pytest.mark.parametrize("seed", range(5))
def test_merging_block_summaries_gives_the_whole_rows(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 23, generator=g, dtype=torch.float64) * 5
    cut = int(torch.randint(0, 24, (1,), generator=g))
    m, l = online_softmax_merge(*_summary(x[..., :cut]), *_summary(x[..., cut:]))
    torch.testing.assert_close(m, x.amax(-1))
    torch.testing.assert_close(m + torch.log(l), torch.logsumexp(x, -1))


@pytest.mark.parametrize("block", [1, 2, 5, 7, 23, 40])
def test_folding_the_merge_over_blocks_is_logsumexp(block):
    x = torch.randn(6, 23, dtype=torch.float64) * 3
    x[0, :11] = INF  # a row that starts fully masked
    x[1] = INF  # a row that stays fully masked
    m = torch.full((6,), INF, dtype=torch.float64)
    l = torch.zeros(6, dtype=torch.float64)  # noqa: E741
    for start in range(0, 23, block):
        m, l = online_softmax_merge(m, l, *_summary(x[:, start:start + block]))  # noqa: E741
    assert m[1] == INF and l[1] == 0 and not torch.isnan(l).any()
    torch.testing.assert_close((m + torch.log(l))[[0, 2, 3, 4, 5]], torch.logsumexp(x, -1)[[0, 2, 3, 4, 5]])


def test_merge_is_symmetric_broadcasts_and_handles_empty_blocks():
    m1, l1 = torch.tensor([1.0, INF, 3.0, INF]), torch.tensor([2.0, 0.0, 1.5, 0.0])
    m2, l2 = torch.tensor([4.0, 2.0, INF, INF]), torch.tensor([1.0, 3.0, 0.0, 0.0])
    m, l = online_softmax_merge(m1, l1, m2, l2)
    m_r, l_r = online_softmax_merge(m2, l2, m1, l1)
    assert torch.equal(m, m_r) and torch.allclose(l, l_r)
    torch.testing.assert_close(m, torch.tensor([4.0, 2.0, 3.0, INF]))
    torch.testing.assert_close(l, torch.tensor([2.0 * math.exp(-3.0) + 1.0, 3.0, 1.5, 0.0]))
    mb, lb = online_softmax_merge(torch.zeros(3, 1), torch.ones(3, 1), torch.zeros(4), torch.ones(4))
    assert mb.shape == lb.shape == (3, 4) and torch.allclose(lb, torch.full((3, 4), 2.0))


def test_merge_does_not_overflow_for_large_maxima():
    m, l = online_softmax_merge(torch.tensor([1e4]), torch.tensor([1.0]), torch.tensor([-1e4]), torch.tensor([2.0]))
    assert torch.equal(m, torch.tensor([1e4])) and torch.equal(l, torch.tensor([1.0]))


def test_merge_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"l2: expected a floating-point torch.Tensor, got a tensor of dtype torch.int64"):
        online_softmax_merge(torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"m1: expected a floating-point torch.Tensor, got float"):
        online_softmax_merge(0.0, torch.ones(2), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"expected shapes that broadcast together, got \(2,\), \(2,\), \(3,\)"):
        online_softmax_merge(torch.zeros(2), torch.ones(2), torch.zeros(3), torch.ones(3))


# --------------------------------------------------------------------------- tiled attention


def _random_mask(shape, seed, empty_row=True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < 0.5
    if empty_row:
        mask[..., 1, :] = False
    return mask


@pytest.mark.parametrize("dtype,tol", [(torch.float64, dict(atol=1e-12, rtol=1e-10)),
                                       (torch.float32, dict(atol=2e-6, rtol=1e-5))])
@pytest.mark.parametrize("seed", range(4))
def test_tiled_matches_the_library_and_pytorch_for_random_block_sizes(dtype, tol, seed):
    g = torch.Generator().manual_seed(100 + seed)
    t, s = (int(n) for n in torch.randint(1, 40, (2,), generator=g))
    q, k, v = _qkv(2, 3, t=t, s=s, dk=8, dv=5, dtype=dtype, seed=seed)
    for block in sorted({1, int(torch.randint(1, s + 1, (1,), generator=g)), max(1, s - 1), s, s + 3}):
        out = tiled_attention(q, k, v, block)
        assert out.dtype == dtype and out.shape == (2, 3, t, 5)
        torch.testing.assert_close(out, mhsa_lib.scaled_dot_product_attention(q, k, v)[0], **tol)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), **tol)


@pytest.mark.parametrize("block", [1, 3, 4, 9, 50])
@pytest.mark.parametrize("t,s", [(6, 6), (4, 9), (9, 9), (1, 7)])
def test_tiled_causal_is_aligned_to_the_lower_right(block, t, s):
    q, k, v = _qkv(2, t=t, s=s, dtype=torch.float64)
    expected = mhsa_lib.scaled_dot_product_attention(q, k, v, mhsa_lib.causal_mask(t, s))[0]
    torch.testing.assert_close(tiled_attention(q, k, v, block, causal=True), expected)
    if t == s:
        torch.testing.assert_close(tiled_attention(q.float(), k.float(), v.float(), block, causal=True),
                                   F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True),
                                   atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("block", [1, 2, 5, 11])
def test_tiled_masks_fully_masked_rows_and_mask_with_causal(block):
    q, k, v = _qkv(2, 3, t=6, s=11, dtype=torch.float64)
    mask = _random_mask((2, 3, 6, 11), seed=block)
    ref = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)[0]
    out = tiled_attention(q, k, v, block, mask)
    torch.testing.assert_close(out, ref)
    assert torch.equal(out[..., 1, :], torch.zeros_like(out[..., 1, :]))
    both = mask & mhsa_lib.causal_mask(6, 11)
    torch.testing.assert_close(tiled_attention(q, k, v, block, mask, causal=True),
                               mhsa_lib.scaled_dot_product_attention(q, k, v, both)[0])
    lengths = torch.tensor([11, 4])
    pad = mhsa_lib.padding_mask(lengths, 11).unsqueeze(1)  # (B, 1, 1, S)
    torch.testing.assert_close(tiled_attention(q, k, v, block, pad),
                               mhsa_lib.scaled_dot_product_attention(q, k, v, pad)[0])
    column = torch.tensor([True, False, True, True, False, True]).view(6, 1)  # (T, 1): broadcast over S
    torch.testing.assert_close(tiled_attention(q, k, v, block, column),
                               mhsa_lib.scaled_dot_product_attention(q, k, v, column)[0])


def test_tiled_broadcasts_leading_axes_and_is_stable_for_large_scores():
    q, k, v = _qkv(3, t=4, s=9, dtype=torch.float64)
    k1, v1 = k[:1], v[:1]  # (1, S, ·) broadcast over the batch
    torch.testing.assert_close(tiled_attention(q, k1, v1, 4), mhsa_lib.scaled_dot_product_attention(q, k1, v1)[0])
    big = tiled_attention(q.float() * 300, k.float(), v.float(), 2)
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big.double(), mhsa_lib.scaled_dot_product_attention(q * 300, k, v)[0], atol=1e-4, rtol=1e-4)
    # Every score near -1000: a running max that starts at 0 instead of -inf underflows here.
    a = torch.randn(6, dtype=torch.float64)
    kk = a.expand(9, 6) + 0.01 * torch.randn(9, 6, dtype=torch.float64)
    qq = (-1000 * math.sqrt(6) / a.dot(a)) * a.expand(4, 6)
    torch.testing.assert_close(tiled_attention(qq.float(), kk.float(), v[0].float(), 3).double(),
                               mhsa_lib.scaled_dot_product_attention(qq, kk, v[0])[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tiled_low_precision_keeps_the_dtype(dtype):
    q, k, v = _qkv(2, t=5, s=8)
    out = tiled_attention(q.to(dtype), k.to(dtype), v.to(dtype), 3)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), F.scaled_dot_product_attention(q, k, v), atol=2e-2, rtol=2e-2)


def test_tiled_gradients_match():
    q, k, v = (x.requires_grad_() for x in _qkv(2, t=4, s=7, dtype=torch.float64))
    tiled_attention(q, k, v, 3).square().sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    mhsa_lib.scaled_dot_product_attention(q, k, v)[0].square().sum().backward()
    for a, b in zip(grads, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(a, b)


def test_tiled_errors_name_the_argument():
    q, k, v = _qkv(t=4, s=6)
    for bad in (0, -2, 2.0, True, None):
        with pytest.raises(ValueError, match=r"block_size: expected a positive int, got"):
            tiled_attention(q, k, v, bad)
    with pytest.raises(ValueError, match=r"causal: expected a bool, got 1"):
        tiled_attention(q, k, v, 2, causal=1)
    with pytest.raises(ValueError, match=r"mask"):
        tiled_attention(q, k, v, 2, torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"k"):
        tiled_attention(q, k[..., :3], v, 2)


# --------------------------------------------------------------------------- memory


@pytest.mark.parametrize("t", [64, 128, 256])
def test_tiled_never_creates_a_tensor_of_t_by_s(t):
    q, k, v = _qkv(1, t=t, s=t, dk=8, dv=8)
    _, ref = largest_intermediate(mhsa_lib.scaled_dot_product_attention, q, k, v)
    assert ref.numel >= t * t and ref.shape[-2:] == (t, t)
    out, tiled = largest_intermediate(tiled_attention, q, k, v, 16, causal=True)
    assert tiled.numel == t * 16 and tiled.nbytes == 4 * t * 16, tiled  # one block of scores
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=2e-6, rtol=1e-5)


def test_largest_intermediate_counts_outputs_not_inputs():
    x = torch.randn(50, 50)
    result, biggest = largest_intermediate(lambda a: a.sum(), x)
    assert biggest.numel == 1 and biggest.op == "sum" and torch.isclose(result, x.sum())
    _, nothing = largest_intermediate(lambda: 3)
    assert nothing.numel == 0 and nothing.shape == ()
    _, outer = largest_intermediate(torch.outer, torch.ones(7), torch.ones(9, dtype=torch.float64))
    assert outer.shape == (7, 9) and outer.nbytes == 7 * 9 * 8
    with pytest.raises(ValueError, match=r"fn: expected a callable, got int"):
        largest_intermediate(3)
