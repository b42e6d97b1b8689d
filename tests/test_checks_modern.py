"""Notebook 04's modern-block checks (RMSNorm, SwiGLUFeedForward, block_costs): correct solutions
written many ways earn full marks; every known mistake loses points and is named; forbidden
shortcuts, hard-coded answers and broken submissions are reported, never raised."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check
from torch import nn

import mhsa_lib
from autograder import check_block_costs, check_rms_norm, check_swiglu_feed_forward, fallback
from autograder.checks import modern as C
from autograder.mistakes import modern as M

run = run_check


# --------------------------------------------------------------------------- RMSNorm


class RMSNormRsqrt(nn.Module):
    """Correct: rsqrt of the mean of squares, an extra keyword argument."""

    def __init__(self, d_model, eps=1e-6, elementwise_affine=True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RMSNormNormDivSqrtD(nn.Module):
    """Correct: the L2 norm divided by sqrt(D), in float32 inside, cast back."""

    def __init__(self, d_model, eps=1e-6):
        super().__init__()
        self.eps, self.d = eps, d_model
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x):
        ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True) ** 2 / self.d
        return (x / torch.sqrt(ms + self.eps)).to(x.dtype) * self.weight


class RMSNormLoop(nn.Module):
    """Correct: one token at a time, einsum for the sum of squares."""

    def __init__(self, d_model, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        rows = [t / math.sqrt(float(torch.einsum("d,d->", t, t)) / t.numel() + self.eps) for t in flat]
        return torch.stack(rows).reshape(x.shape) * self.weight


RMS_SOLUTIONS = [M.BuggyRMSNorm, RMSNormRsqrt, RMSNormNormDivSqrtD, RMSNormLoop]


@pytest.mark.parametrize("cls", RMS_SOLUTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rms_norm_full_marks_for_correct_solutions(cls, seed, capsys):
    points, report = run(check_rms_norm, cls, capsys, seed=seed)
    assert points == 2.0, report
    assert "All checks pass" in report


def test_rms_norm_hidden_cases(capsys):
    points, report = run(check_rms_norm, RMSNormRsqrt, capsys, hidden=True, seed=5)
    assert points == 2.0 and "all checks pass" in report, report


_RMS_PUBLIC_ANSWER = C._rms_reference(4, 1e-6, C.RMS_PUBLIC_WEIGHT)(C.RMS_PUBLIC_X).detach()


class RMSNormHardCoded(RMSNormRsqrt):
    def forward(self, x):
        return _RMS_PUBLIC_ANSWER.to(x.dtype)


class RMSNormViaLibrary(RMSNormRsqrt):
    def forward(self, x):
        norm = mhsa_lib.RMSNorm(x.shape[-1], self.eps).to(x.dtype)
        norm.weight = self.weight
        return norm(x)


class RMSNormWithBias(RMSNormRsqrt):
    """Correct output (the bias stays 0) but a shift parameter RMSNorm does not have."""

    def __init__(self, d_model, eps=1e-6):
        super().__init__(d_model, eps)
        self.bias = nn.Parameter(torch.zeros(d_model))


_HAS_RMS_NORM = hasattr(F, "rms_norm") and hasattr(nn, "RMSNorm")
class RMSNormViaNN(nn.Module):
    def __init__(self, d_model, eps=1e-6):
        super().__init__()
        self.inner = nn.RMSNorm(d_model, eps=eps)
        self.weight = self.inner.weight

    def forward(self, x):
        return self.inner(x)


_NEEDS_RMS_NORM = pytest.mark.skipif(not _HAS_RMS_NORM, reason="F.rms_norm and nn.RMSNorm arrived in torch 2.4; "
                                     "this torch lacks them, so no learner can call them")
_CALLS_TORCH = [pytest.param(M.RMSNormCallsTorch, "calls torch's rms_norm", marks=_NEEDS_RMS_NORM),
                pytest.param(RMSNormViaNN, "calls torch's rms_norm", marks=_NEEDS_RMS_NORM)]


@pytest.mark.parametrize("cls,words", [
    (M.RMSNormSubtractsMean, "that is LayerNorm"),
    (M.RMSNormEpsOutsideSqrt, "eps goes inside the square root"),
    (M.RMSNormWrongAxis, "over the positions (dim=-2)"),
    (M.RMSNormNoGain, "the gain is not applied"),
    (M.RMSNormNormNotRMS, "root MEAN square"),
    (M.RMSNormNoEps, "you leave eps out"),
    (M.RMSNormNoSqrt, "not by its square root"),
    (M.RMSNormVariance, "the variance's root"),
    (RMSNormViaLibrary, "calls mhsa_lib (RMSNorm"),
    (RMSNormHardCoded, "hard-coded"),
    (RMSNormWithBias, "RMSNorm has no bias"),
] + _CALLS_TORCH)
@pytest.mark.parametrize("seed", [3, 4])
def test_rms_norm_mistakes_lose_points_and_are_named(cls, words, seed, capsys):
    points, report = run(check_rms_norm, cls, capsys, seed=seed)
    assert points < 2.0, report
    assert words in report, report


# --------------------------------------------------------------------------- SwiGLUFeedForward


class SwiGLUFused(nn.Module):
    """Correct: gate and up as one (2F, D) product, split with chunk; SiLU as z·sigmoid(z)."""

    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        w = torch.cat([self.gate_proj.weight, self.up_proj.weight])  # (2F, D)
        gate, up = (x @ w.T).chunk(2, dim=-1)
        return self.down_proj(gate * torch.sigmoid(gate) * up)


class SwiGLUModules(nn.Module):
    """Correct: nn.SiLU as a module, dropout (identity in eval mode), an extra keyword argument."""

    def __init__(self, d_model, d_ff, dropout=0.1):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)
        self.act, self.drop = nn.SiLU(), nn.Dropout(dropout)

    def forward(self, x):
        return self.down_proj(self.drop(self.act(self.gate_proj(x)) * self.up_proj(x)))


class SwiGLUEinsum(nn.Module):
    """Correct: einsum with the layers' weights, SiLU written out with exp."""

    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        g = torch.einsum("...d,fd->...f", x, self.gate_proj.weight)
        u = torch.einsum("...d,fd->...f", x, self.up_proj.weight)
        return torch.einsum("...f,df->...d", g / (1 + torch.exp(-g)) * u, self.down_proj.weight)


SWIGLU_SOLUTIONS = [M.BuggySwiGLU, SwiGLUFused, SwiGLUModules, SwiGLUEinsum]


@pytest.mark.parametrize("cls", SWIGLU_SOLUTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_swiglu_full_marks_for_correct_solutions(cls, seed, capsys):
    points, report = run(check_swiglu_feed_forward, cls, capsys, seed=seed)
    assert points == 2.0, report
    assert "All checks pass" in report


def test_swiglu_hidden_cases(capsys):
    points, report = run(check_swiglu_feed_forward, SwiGLUEinsum, capsys, hidden=True, seed=5)
    assert points == 2.0 and "all checks pass" in report, report


class SwiGLUViaLibrary(SwiGLUModules):
    def forward(self, x):
        ref = mhsa_lib.SwiGLUFeedForward(x.shape[-1], self.up_proj.out_features).to(x.dtype)
        ref.load_state_dict({k: v for k, v in self.state_dict().items()})
        return ref(x)


class SwiGLUWithBiases(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d_model, d_ff), nn.Linear(d_model, d_ff)
        self.down_proj = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@pytest.mark.parametrize("cls,words", [
    (M.SwiGLUSwapped, "gate and up are swapped"),
    (M.SwiGLUSiluOnProduct, "SiLU to the product"),
    (M.SwiGLUGelu, "that is GeGLU"),
    (M.SwiGLUSigmoid, "bare sigmoid"),
    (M.SwiGLUNoDown, "without down_proj"),
    (M.SwiGLURelu, "that is ReGLU"),
    (M.SwiGLUSum, "you add the two branches"),
    (M.SwiGLUSiluOnBoth, "SiLU to the up branch too"),
    (SwiGLUViaLibrary, "calls mhsa_lib (SwiGLUFeedForward"),
    (SwiGLUWithBiases, "has a bias"),
])
@pytest.mark.parametrize("seed", [3, 4])
def test_swiglu_mistakes_lose_points_and_are_named(cls, words, seed, capsys):
    points, report = run(check_swiglu_feed_forward, cls, capsys, seed=seed)
    assert points < 2.0, report
    assert words in report, report


# --------------------------------------------------------------------------- block_costs


def costs_plain(d_model, num_heads, d_ff, seq_len):
    """Correct: written out."""
    d, f, t = d_model, d_ff, seq_len
    return {"attn_proj_params": 4 * (d * d + d), "attn_proj_flops": 4 * 2 * t * d * d,
            "attn_core_flops": 2 * 2 * t * t * d, "ffn_params": d * f + f + f * d + d,
            "ffn_flops": 2 * 2 * t * d * f}


def costs_from_matmuls(d_model, num_heads, d_ff, seq_len):
    """Correct: a helper per matrix product (m, k) @ (k, n) = 2·m·k·n FLOPs, per head for the core,
    extra keys and an ordered dict."""
    def mm(m, k, n):
        return 2 * m * k * n

    dh = d_model // num_heads
    core = num_heads * (mm(seq_len, dh, seq_len) + mm(seq_len, seq_len, dh))
    linear = [(d_model, d_model)] * 4
    return dict(
        attn_proj_params=sum(i * o + o for i, o in linear),
        attn_proj_flops=sum(mm(seq_len, i, o) for i, o in linear),
        attn_core_flops=core,
        ffn_params=(d_model + 1) * d_ff + (d_ff + 1) * d_model,
        ffn_flops=mm(seq_len, d_model, d_ff) + mm(seq_len, d_ff, d_model),
        total_flops=0,
    )


def costs_from_modules(d_model, num_heads, d_ff, seq_len):
    """Correct: counts the parameters of real torch modules."""
    attn = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(4))
    ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
    return {"attn_proj_params": sum(p.numel() for p in attn.parameters()),
            "attn_proj_flops": 8 * seq_len * d_model**2, "attn_core_flops": 4 * seq_len**2 * d_model,
            "ffn_params": sum(p.numel() for p in ffn.parameters()), "ffn_flops": 4 * seq_len * d_model * d_ff}


@pytest.mark.parametrize("fn", [costs_plain, costs_from_matmuls, costs_from_modules])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_costs_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_block_costs, fn, capsys, seed=seed)
    assert points == 2.0, report
    assert "All checks pass" in report


def test_block_costs_hidden_cases(capsys):
    points, report = run(check_block_costs, costs_from_matmuls, capsys, hidden=True, seed=5)
    assert points == 2.0 and "all checks pass" in report, report


_COSTS_PUBLIC = mhsa_lib.block_costs(*C.COSTS_PUBLIC_ARGS)


def costs_hard_coded(d_model, num_heads, d_ff, seq_len):
    return dict(_COSTS_PUBLIC)


def costs_floats(d_model, num_heads, d_ff, seq_len):
    return {k: float(v) for k, v in costs_plain(d_model, num_heads, d_ff, seq_len).items()}


def costs_via_library(d_model, num_heads, d_ff, seq_len):
    return mhsa_lib.block_costs(d_model, num_heads, d_ff, seq_len)


def costs_missing_key(d_model, num_heads, d_ff, seq_len):
    c = costs_plain(d_model, num_heads, d_ff, seq_len)
    del c["attn_core_flops"]
    return c


@pytest.mark.parametrize("fn,words", [(m.fn, m.advice[:40]) for m in M.BLOCK_COSTS_MISTAKES] + [
    (costs_hard_coded, "hard-coded"),
    (costs_floats, "returned attn_proj_params: float"),
    (costs_via_library, "calls mhsa_lib (block_costs"),
    (costs_missing_key, "the dict lacks attn_core_flops"),
])
@pytest.mark.parametrize("seed", [3, 4])
def test_block_costs_mistakes_lose_points_and_are_named(fn, words, seed, capsys):
    points, report = run(check_block_costs, fn, capsys, seed=seed)
    assert points < 2.0, report
    assert words in report, report


def test_block_costs_two_mistakes_at_once_are_both_named(capsys):
    def two(d_model, num_heads, d_ff, seq_len):
        c = M.costs_core_linear(d_model, num_heads, d_ff, seq_len)
        c.update({k: M.costs_no_biases(d_model, num_heads, d_ff, seq_len)[k] for k in ("attn_proj_params", "ffn_params")})
        return c

    points, report = run(check_block_costs, two, capsys, seed=0)
    assert points < 1.0
    assert "linearly with T" in report and "leave the biases out" in report, report


# --------------------------------------------------------------------------- every mistake, robustness


def test_every_mistake_in_the_module_is_tested_above():
    tested = set()
    for name in ("test_rms_norm_mistakes_lose_points_and_are_named", "test_swiglu_mistakes_lose_points_and_are_named",
                 "test_block_costs_mistakes_lose_points_and_are_named"):
        marks = [m for m in globals()[name].pytestmark if m.name == "parametrize" and "," in m.args[0]]
        tested |= {(case.values if hasattr(case, "values") else case)[0] for case in marks[0].args[1]}
    for mistake in M.RMS_NORM_MISTAKES + M.SWIGLU_MISTAKES + M.BLOCK_COSTS_MISTAKES:
        assert mistake.fn in tested, mistake.id


class _NotYet(nn.Module):
    def __init__(self, *args, **kw):
        raise NotImplementedError()


class _ForwardNotYet(nn.Module):
    """__init__ done, forward still the release's stub."""

    def __init__(self, *args, **kw):
        super().__init__()
        inner = (M.BuggyRMSNorm if len(args) == 1 else M.BuggySwiGLU)(*args, **kw)
        for name, module in inner.named_children():
            setattr(self, name, module)
        for name, p in inner.named_parameters(recurse=False):
            setattr(self, name, p)

    def forward(self, *args, **kw):
        raise NotImplementedError()


def _costs_not_yet(d_model, num_heads, d_ff, seq_len):
    raise NotImplementedError()


@pytest.mark.parametrize("check,cls,words", [
    (check_rms_norm, _NotYet, "not implemented yet"),
    (check_rms_norm, _ForwardNotYet, "not implemented yet"),
    (check_swiglu_feed_forward, _NotYet, "not implemented yet"),
    (check_swiglu_feed_forward, _ForwardNotYet, "not implemented yet"),
    (check_block_costs, _costs_not_yet, "not implemented yet"),
    (check_rms_norm, lambda *a, **k: None, "expected an nn.Module"),
    (check_swiglu_feed_forward, 42, "expected a function"),
    (check_block_costs, 42, "expected a function"),
    (check_block_costs, lambda *a: [1, 2, 3], "returned a list"),
])
def test_broken_submissions_are_reported_not_raised(check, cls, words, capsys):
    points, report = run(check, cls, capsys, seed=0)
    assert points == 0.0
    assert words in report, report


@pytest.mark.parametrize("check,cls", [(check_rms_norm, RMSNormRsqrt), (check_swiglu_feed_forward, SwiGLUModules),
                                       (check_block_costs, costs_plain)])
def test_checks_leave_the_global_random_state_alone(check, cls):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check(cls, seed=0, quiet=True)
    assert torch.equal(torch.rand(3), expected)


def test_fallback_uses_the_learners_answer_only_when_it_passes(capsys):
    assert fallback("RMSNorm", RMSNormRsqrt) is RMSNormRsqrt
    assert fallback("SwiGLUFeedForward", M.SwiGLUSwapped) is mhsa_lib.SwiGLUFeedForward
    assert fallback("block_costs", M.costs_mac_as_one) is mhsa_lib.block_costs
    assert "mhsa_lib.SwiGLUFeedForward instead" in capsys.readouterr().out


def test_a_gain_kept_as_a_plain_tensor_is_told_to_be_a_parameter(capsys):
    class PlainGain(nn.Module):
        def __init__(self, d_model, eps=1e-6):
            super().__init__()
            self.eps, self.weight = eps, torch.ones(d_model)

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    points, report = run(check_rms_norm, PlainGain, capsys, seed=0)
    assert points < 2.0, report
    assert "a plain tensor attribute is not trained, wrap it in nn.Parameter" in " ".join(report.split()), report
