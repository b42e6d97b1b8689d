"""mhsa_lib.modern: RMSNorm and SwiGLUFeedForward against independent references (torch's own
nn.RMSNorm where the installed torch has it, and the formulas written out), the block's new
norm= and ffn= choices, and block_costs against FlopCounterMode on the library's block and the
parameter counts of real modules."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import mhsa_lib
from mhsa_lib.modern import COST_KEYS, RMSNorm, SwiGLUFeedForward, block_costs, swiglu_d_ff


def _rms_formula(x, w, eps):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) / x.shape[-1] + eps) * w


@pytest.mark.parametrize("shape", [(2, 5, 7), (7,), (3, 2, 4, 7)])
def test_rms_norm_is_the_formula(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 1
    norm = RMSNorm(7, eps=1e-3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(7, generator=g, dtype=torch.float64) + 0.5)
    torch.testing.assert_close(norm(x), _rms_formula(x, norm.weight, 1e-3))
    assert dict(norm.named_parameters()).keys() == {"weight"}


@pytest.mark.skipif(not hasattr(nn, "RMSNorm"), reason="torch.nn.RMSNorm arrived in torch 2.4; this torch lacks it")
def test_rms_norm_equals_torchs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 10, generator=g)
    ours, theirs = RMSNorm(10), nn.RMSNorm(10, eps=1e-6)
    with torch.no_grad():
        theirs.weight.copy_(torch.rand(10, generator=g) + 0.5)
        ours.weight.copy_(theirs.weight)
    torch.testing.assert_close(ours(x), theirs(x))


def test_rms_norm_low_precision_and_bad_input():
    x = torch.randn(2, 3, 8)
    norm = RMSNorm(8)
    y = norm(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), norm(x), atol=2e-2, rtol=2e-2)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., D\) with D=d_model=8, got \(2, 3, 5\)"):
        norm(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="eps: expected a positive float, got 0"):
        RMSNorm(8, eps=0)
    with pytest.raises(ValueError, match="d_model: expected a positive int, got 0"):
        RMSNorm(0)


def test_swiglu_is_the_formula_and_position_wise():
    g = torch.Generator().manual_seed(2)
    ffn = SwiGLUFeedForward(6, 10).double()
    x = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    a = x @ ffn.gate_proj.weight.T
    expected = ((a / (1 + torch.exp(-a))) * (x @ ffn.up_proj.weight.T)) @ ffn.down_proj.weight.T
    torch.testing.assert_close(ffn(x), expected)
    torch.testing.assert_close(ffn(x[:, 2]), expected[:, 2])
    assert all(layer.bias is None for layer in (ffn.gate_proj, ffn.up_proj, ffn.down_proj))
    assert SwiGLUFeedForward(6, 10, bias=True).gate_proj.bias.shape == (10,)
    with pytest.raises(ValueError, match="d_ff: expected a positive int, got -1"):
        SwiGLUFeedForward(6, -1)


@pytest.mark.parametrize("d,expected", [(768, 2048), (512, 1368), (4096, 10928), (10, 32)])
def test_swiglu_d_ff_keeps_the_budget_of_a_4d_ffn(d, expected):
    f = swiglu_d_ff(d)
    assert f == expected and f % 8 == 0
    plain = 2 * d * 4 * d
    assert 3 * d * f >= plain and 3 * d * (f - 8) < plain
    assert swiglu_d_ff(4096, 256) == 11008  # Llama-7B's width
    with pytest.raises(ValueError, match="multiple_of: expected a positive int, got 0"):
        swiglu_d_ff(64, 0)


def test_block_defaults_unchanged_and_modern_choices():
    plain = mhsa_lib.TransformerBlock(12, 3, 20)
    assert isinstance(plain.norm1, mhsa_lib.LayerNorm) and isinstance(plain.ffn, mhsa_lib.FeedForward)
    modern = mhsa_lib.TransformerBlock(12, 3, 20, norm="rms", ffn="swiglu", bias=False)
    assert isinstance(modern.norm1, RMSNorm) and isinstance(modern.norm2, RMSNorm) and modern.norm1 is not modern.norm2
    assert isinstance(modern.ffn, SwiGLUFeedForward)
    x = torch.randn(2, 4, 12)
    assert modern(x).shape == (2, 4, 12)
    modern.eval()
    with torch.no_grad():  # pre-norm, sub-layer outputs zeroed: the identity
        modern.attn.out_proj.weight.zero_()
        modern.ffn.down_proj.weight.zero_()
    torch.testing.assert_close(modern(x), x)
    with pytest.raises(ValueError, match=r"norm: expected one of \('layer', 'rms'\), got 'batch'"):
        mhsa_lib.TransformerBlock(12, 3, 20, norm="batch")
    with pytest.raises(ValueError, match=r"ffn: expected one of \('mlp', 'swiglu'\), got 'geglu'"):
        mhsa_lib.TransformerBlock(12, 3, 20, ffn="geglu")


def _measured(block, t):
    """(parameters, FLOPs) of the block's attention projections, attention core and FFN, measured."""
    x = torch.randn(1, t, block.attn.q_proj.in_features)
    with FlopCounterMode(display=False) as counter:
        block(x)
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    projections = sum(flops.get(f"TransformerBlock.attn.{n}", 0) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    return {
        "attn_proj_params": sum(p.numel() for p in block.attn.parameters()),
        "attn_proj_flops": projections,
        "attn_core_flops": flops["TransformerBlock.attn"] - projections,
        "ffn_params": sum(p.numel() for p in block.ffn.parameters()),
        "ffn_flops": flops["TransformerBlock.ffn"],
    }


@pytest.mark.parametrize("d,h,f,t,ffn,bias", [
    (48, 4, 100, 37, "mlp", True),
    (48, 6, 128, 5, "swiglu", False),
    (64, 8, 96, 200, "swiglu", True),
    (30, 5, 70, 64, "mlp", False),
])
def test_block_costs_match_flop_counter_and_real_modules(d, h, f, t, ffn, bias):
    block = mhsa_lib.TransformerBlock(d, h, f, ffn=ffn, bias=bias).eval()
    with torch.no_grad():
        measured = _measured(block, t)
    counted = block_costs(d, h, f, t, ffn=ffn, bias=bias)
    assert tuple(counted) == COST_KEYS
    assert counted == measured
    assert all(type(v) is int for v in counted.values())


def test_block_costs_closed_forms_and_crossover():
    c = block_costs(768, 12, 3072, 1024)
    assert c["attn_core_flops"] == 4 * 1024**2 * 768
    assert c["attn_proj_flops"] == 8 * 1024 * 768**2
    assert c["ffn_flops"] == 4 * 1024 * 768 * 3072
    # the core overtakes the FFN where 4·T²·D > 4·T·D·F, at T = F
    assert block_costs(64, 4, 256, 256)["attn_core_flops"] == block_costs(64, 4, 256, 256)["ffn_flops"]
    assert block_costs(64, 4, 256, 257)["attn_core_flops"] > block_costs(64, 4, 256, 257)["ffn_flops"]


@pytest.mark.parametrize("kwargs,message", [
    ({"d_model": 10, "num_heads": 3}, "d_model: expected a multiple of num_heads=3"),
    ({"seq_len": 0}, "seq_len: expected a positive int, got 0"),
    ({"d_ff": 2.5}, "d_ff: expected a positive int, got 2.5"),
    ({"ffn": "geglu"}, r"ffn: expected one of \('mlp', 'swiglu'\), got 'geglu'"),
    ({"bias": 1}, "bias: expected True or False, got 1"),
])
def test_block_costs_refuses_bad_arguments(kwargs, message):
    args = {"d_model": 64, "num_heads": 4, "d_ff": 256, "seq_len": 32, **kwargs}
    with pytest.raises(ValueError, match=message):
        block_costs(**args)



def test_a_modern_block_does_not_pretend_to_be_torchs_encoder_layer():
    with pytest.raises(ValueError, match="block: expected a block with LayerNorm and a plain FeedForward.*"
                                         "got norm1=RMSNorm, ffn=SwiGLUFeedForward"):
        mhsa_lib.interop.block_to_torch(mhsa_lib.TransformerBlock(12, 3, 20, norm="rms", ffn="swiglu"))
    layer = mhsa_lib.interop.block_to_torch(mhsa_lib.TransformerBlock(12, 3, 20))
    assert isinstance(layer, nn.TransformerEncoderLayer)
