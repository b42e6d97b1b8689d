"""Accelerator tests: the same modules on CUDA / MPS against a float64 CPU reference.

Each test skips with a reason when its device is absent. Set MHSA_TEST_CPU_AS_DEVICE=1 to run
them on the CPU as well (to check the tests themselves on a machine without a GPU).

Low-precision outputs are judged the way PyTorch's own attention tests judge them: the fast
path's error against a float64 reference may be at most a few times the error of the naive
(reference) path computed in the same low-precision dtype, since that is what the dtype allows.
"""

import os

import pytest
import torch

from mhsa_lib import (
    FusedMultiHeadAttention,
    GroupedQueryAttention,
    KVCache,
    MultiHeadAttention,
    StaticKVCache,
    TransformerBlock,
    padding_mask,
)

pytestmark = pytest.mark.usefixtures("torch_seed")

HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
DEVICES = [
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]),
    pytest.param("mps", marks=pytest.mark.skipif(not HAS_MPS, reason="no MPS device")),
    pytest.param("cpu", marks=pytest.mark.skipif(
        os.environ.get("MHSA_TEST_CPU_AS_DEVICE") != "1", reason="CPU run of device tests not requested (MHSA_TEST_CPU_AS_DEVICE=1)")),
]
LOW_PRECISION = {"cuda": [torch.float16, torch.bfloat16], "mps": [torch.float16], "cpu": [torch.bfloat16]}
B, T, D, H, G, FF = 2, 33, 64, 8, 2, 96
FUDGE = 4.0  # allowed ratio of fast-path error to same-dtype naive error


def modules(seed=0):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(D, H).eval()
    return {
        "mha": mha,
        "fused": FusedMultiHeadAttention.from_separate(mha).eval(),
        "gqa": GroupedQueryAttention(D, H, G, bias=True).eval(),
        "pre": TransformerBlock(D, H, FF, "pre", activation="gelu").eval(),
        "post": TransformerBlock(D, H, FF, "post").eval(),
    }


def run(module, x, backend):
    module.backend = backend
    with torch.no_grad():
        return module(x, causal=True)


def run_with(module, backend, x, **kwargs):
    module.backend = backend
    with torch.no_grad():
        return module(x, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["mha", "fused", "gqa", "pre", "post"])
@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_float32_on_device_matches_cpu_float64(device, name, backend):
    module = modules()[name]
    x = torch.randn(B, T, D)
    expected = run(module.double(), x.double(), "reference")
    got = run(module.float().to(device), x.to(device), backend)
    assert got.device.type == device and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu().double(), expected, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["mha", "gqa", "pre"])
def test_low_precision_within_same_dtype_naive_error(device, name):
    for dtype in LOW_PRECISION[device]:
        module = modules(1)[name]
        x = torch.randn(B, T, D)
        expected = run(module.double(), x.double(), "reference")
        low = module.to(device, dtype)
        naive = run(low, x.to(device, dtype), "reference").cpu().double()
        fast = run(low, x.to(device, dtype), "fast").cpu().double()
        assert not torch.isnan(fast).any(), dtype
        naive_err = (naive - expected).abs().max().item()
        fast_err = (fast - expected).abs().max().item()
        assert naive_err > 0, dtype  # the comparison is meaningful only if the dtype rounds
        assert fast_err <= FUDGE * naive_err + 1e-3, (dtype, fast_err, naive_err)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_cache_decoding_on_device(device, backend):
    gqa = modules()["gqa"].to(device)
    gqa.backend = backend
    x = torch.randn(B, T, D, device=device)
    cache = KVCache()
    with torch.no_grad():
        full = gqa(x, causal=True)
        steps = [gqa(x[:, :20], cache=cache, causal=True)]
        steps += [gqa(x[:, t:t + 1], cache=cache, causal=True) for t in range(20, T)]
    assert cache.k.device.type == device and len(cache) == T
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_on_device_match_cpu(device):
    block = modules()["pre"].train()
    x = torch.randn(B, T, D)
    grads = []
    for dev, backend in (("cpu", "reference"), (device, "fast")):
        block.to(dev).zero_grad()
        block.backend = backend
        xd = x.to(dev).requires_grad_()
        block(xd, causal=True).square().mean().backward()
        grads.append((xd.grad.cpu(), block.attn.q_proj.weight.grad.cpu()))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_static_cache_decoding_on_device(device):
    """The pre-allocated cache lives on the device, and decoding with it equals full attention."""
    gqa = modules()["gqa"].to(device)
    gqa.backend = "fast"
    x = torch.randn(B, T, D, device=device)
    cache = StaticKVCache(B, G, T, D // H, device=device, dtype=torch.float32)
    with torch.no_grad():
        full = gqa(x, causal=True)
        steps = [gqa(x[:, :7], cache=cache, causal=True)]
        steps += [gqa(x[:, t:t + 2], cache=cache, causal=True) for t in range(7, T, 2)]
    assert cache.k.device.type == device and len(cache) == T
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_padding_and_cross_attention_on_device(device):
    """A padding mask built on the device, fully masked rows (no NaN) and cross-attention: fast
    path on the device against the reference path on the CPU in float64."""
    mha = modules()["mha"]
    x, memory = torch.randn(B, T, D), torch.randn(B, 5, D)
    lengths = [T, 0]  # the second sequence is all padding: every row of it is fully masked
    expected = {
        "pad": run_with(mha.double(), "reference", x.double(), mask=padding_mask(lengths, T)),
        "cross": run_with(mha, "reference", x.double(), kv=memory.double()),
    }
    mha.float().to(device)
    got = {
        "pad": run_with(mha, "fast", x.to(device), mask=padding_mask(torch.tensor(lengths, device=device), T)),
        "cross": run_with(mha, "fast", x.to(device), kv=memory.to(device)),
    }
    for key in expected:
        assert got[key].device.type == device and not torch.isnan(got[key]).any(), key
        torch.testing.assert_close(got[key].cpu().double(), expected[key], atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_weights_from_the_device_draw(device):
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is not installed here")
    matplotlib.use("Agg")
    from mhsa_lib.viz import attention_heatmap, difference_map

    mha = modules()["mha"].to(device)
    with torch.no_grad():
        _, weights = mha(torch.randn(1, 6, D, device=device), return_weights=True, causal=True)
    assert weights.device.type == device
    fig = attention_heatmap(weights, head=1)
    assert len(fig.axes) >= 1
    assert len(difference_map(weights, weights.cpu()).axes) >= 3
