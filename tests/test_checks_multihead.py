"""Per-head attention (notebook 02) and MultiHeadAttention (notebook 03): correct solutions
written many ways earn full marks (lazy layers included); the known mistakes (the wrong scale, a
split or merge without the transpose, weights used as x @ W, a mask not passed on, heads that all
use head 0's weights, a missing output projection, calling torch's or the library's multi-head
attention) lose points and are named."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check
from torch import nn

import mhsa_lib
from autograder import (
    check_attention_heads,
    check_attention_heads_loop,
    check_multi_head_attention,
)
from autograder.mistakes import multihead as M

run = run_check


# --------------------------------------------------------------------------- notebook 02


def heads_vectorised(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (mhsa_lib.split_heads(x @ w.T, num_heads) for w in (w_q, w_k, w_v))
    return mhsa_lib.scaled_dot_product_attention(q, k, v, mask)[0]


def heads_einsum(x, w_q, w_k, w_v, num_heads, mask=None):
    b, t, d = x.shape
    dh = d // num_heads
    q, k, v = (torch.einsum("btd,hed->bhte", x, w.view(num_heads, dh, d)) for w in (w_q, w_k, w_v))
    scores = torch.einsum("bhte,bhse->bhts", q, k) / math.sqrt(dh)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhts,bhse->bhte", torch.softmax(scores, -1), v)


def heads_via_linear(x, w_q, w_k, w_v, num_heads, mask=None):
    b, t, d = x.shape
    q, k, v = (F.linear(x, w).reshape(b, t, num_heads, -1).transpose(1, 2) for w in (w_q, w_k, w_v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # allowed here
    return out


def loop_plain(x, w_q, w_k, w_v, mask=None):
    outs = []
    for wq, wk, wv in zip(w_q, w_k, w_v):
        q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
        outs.append(mhsa_lib.scaled_dot_product_attention(q, k, v, mask)[0])
    return torch.stack(outs, dim=1)


def loop_softmax(x, w_q, w_k, w_v, mask=None):
    heads = []
    for h in range(len(w_q)):
        q, k, v = F.linear(x, w_q[h]), F.linear(x, w_k[h]), F.linear(x, w_v[h])
        s = q @ k.mT * q.shape[-1] ** -0.5
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        heads.append(torch.softmax(s, dim=-1) @ v)
    return torch.stack(heads, 1)


def loop_via_vectorised(x, w_q, w_k, w_v, mask=None):
    return heads_vectorised(x, torch.cat(w_q), torch.cat(w_k), torch.cat(w_v), len(w_q), mask)


@pytest.mark.parametrize("fn", [heads_vectorised, heads_einsum, heads_via_linear])
@pytest.mark.parametrize("seed", [0, 1])
def test_attention_heads_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_attention_heads, fn, capsys, seed=seed)
    assert points == 3.0, report


@pytest.mark.parametrize("fn", [loop_plain, loop_softmax, loop_via_vectorised])
@pytest.mark.parametrize("seed", [0, 1])
def test_attention_heads_loop_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_attention_heads_loop, fn, capsys, seed=seed)
    assert points == 3.0, report


def _heads_mask_as_blocked(x, w_q, w_k, w_v, num_heads, mask=None):
    """A learner's heads with the mask read as True = blocked, the scores filled where it is True."""
    b, t, d = x.shape
    q, k, v = (torch.einsum("btd,ed->bte", x, w).view(b, t, num_heads, -1).permute(0, 2, 1, 3) for w in (w_q, w_k, w_v))
    s = torch.einsum("bhtd,bhsd->bhts", q, k) / q.shape[-1] ** 0.5
    if mask is not None:
        s = torch.where(mask, torch.full_like(s, float("-inf")), s)
    return torch.nan_to_num(s.softmax(-1)) @ v


@pytest.mark.parametrize("fn,words", [
    (M.heads_attention_scale_by_model_width, "1/√D, the model width"),
    (M.heads_attention_split_no_transpose, "straight to (B, H, T, Dh)"),
    (M.heads_attention_weights_transposed, "x @ W.T"),
    (M.heads_attention_ignores_mask, "mask is not passed"),
    (M.heads_attention_inverted_mask, "polarity is inverted"),
    (lambda *a, **kw: _heads_mask_as_blocked(*a, **kw), "polarity is inverted"),
])
def test_attention_heads_mistakes(fn, words, capsys):
    points, report = run(check_attention_heads, fn, capsys, seed=4)
    assert points < 3.0, report
    assert words in report, report


@pytest.mark.parametrize("fn,words", [
    (M.heads_loop_scale_by_model_width, "1/√D, the model width"),
    (M.heads_loop_shared_weights, "same weights"),
    (M.heads_loop_concatenated, "already concatenated"),
])
def test_attention_heads_loop_mistakes(fn, words, capsys):
    points, report = run(check_attention_heads_loop, fn, capsys, seed=4)
    assert points < 3.0, report
    assert words in report, report


def test_heads_checks_forbid_torch_multihead(capsys):
    def via_torch(x, w_q, w_k, w_v, num_heads, mask=None):
        F.multi_head_attention_forward(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), x.shape[-1],
                                       num_heads, torch.cat([w_q, w_k, w_v]), None, None, None, False, 0.0,
                                       torch.eye(x.shape[-1]), None, training=False, need_weights=False)
        return heads_vectorised(x, w_q, w_k, w_v, num_heads, mask)

    points, report = run(check_attention_heads, via_torch, capsys, seed=0)
    assert points == 0.0 and "multi_head_attention_forward" in report


# --------------------------------------------------------------------------- notebook 03: module


class MHALoop(nn.Module):
    """Correct, written as a loop over heads with torch.softmax."""

    def __init__(self, d_model, num_heads, bias=True):
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError("d_model must be divisible by num_heads")
        self.h = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model, bias=bias) for _ in range(4))

    def forward(self, x, mask=None, return_weights=False):
        dh = x.shape[-1] // self.h
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        outs, ws = [], []
        for i in range(self.h):
            sl = slice(i * dh, (i + 1) * dh)
            s = q[..., sl] @ k[..., sl].transpose(-2, -1) / math.sqrt(dh)  # (B, T, T)
            if mask is not None:
                m = mask if mask.ndim < 4 else mask[:, 0]
                s = s.masked_fill(~m, float("-inf"))
            w = torch.nan_to_num(torch.softmax(s, -1))
            ws.append(w)
            outs.append(w @ v[..., sl])
        out = self.out_proj(torch.cat(outs, -1))
        return (out, torch.stack(ws, 1)) if return_weights else out


class MHAEinsumFast(nn.Module):
    """Correct: einsum projections, F.scaled_dot_product_attention unless weights are asked for."""

    def __init__(self, d_model, num_heads, bias=True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias)
        self.k_proj = nn.Linear(d_model, d_model, bias)
        self.v_proj = nn.Linear(d_model, d_model, bias)
        self.out_proj = nn.Linear(d_model, d_model, bias)

    def forward(self, x, mask=None, return_weights=False):
        b, t, d = x.shape
        q, k, v = (p(x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        if return_weights:
            out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        else:
            out, w = F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
        out = self.out_proj(out.transpose(1, 2).reshape(b, t, d))
        return (out, w) if return_weights else out


class MHALazy(nn.Module):
    """Correct, d2l style: nn.LazyLinear layers that learn their input width from the first call."""

    def __init__(self, d_model, num_heads, bias=True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError("d_model must be divisible by num_heads")
        self.num_heads = num_heads
        self.q_proj = nn.LazyLinear(d_model, bias=bias)
        self.k_proj = nn.LazyLinear(d_model, bias=bias)
        self.v_proj = nn.LazyLinear(d_model, bias=bias)
        self.out_proj = nn.LazyLinear(d_model, bias=bias)

    def transpose_qkv(self, x):
        x = x.reshape(x.shape[0], x.shape[1], self.num_heads, -1)  # (B, T, H, Dh)
        return x.permute(0, 2, 1, 3)  # (B, H, T, Dh)

    def forward(self, x, mask=None, return_weights=False):
        q, k, v = (self.transpose_qkv(p(x)) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        out = self.out_proj(out.permute(0, 2, 1, 3).reshape(x.shape))
        return (out, w) if return_weights else out


@pytest.mark.parametrize("cls", [M.BuggyMultiHeadAttention, MHALoop, MHAEinsumFast, MHALazy])
@pytest.mark.parametrize("seed", [0, 1])
def test_mha_full_marks_for_correct_solutions(cls, seed, capsys):
    points, report = run(check_multi_head_attention, cls, capsys, seed=seed)
    assert points == 6.0, report


def test_mha_hidden_cases(capsys):
    assert run(check_multi_head_attention, MHALoop, capsys, hidden=True, seed=3)[0] == 6.0


@pytest.mark.parametrize("cls,words", [
    (M.MHANoOutputProjection, "output projection is missing"),
    (M.MHAMaskNotPassed, "mask is not passed through"),
    (M.MHAScaleByModelWidth, "1/√D"),
    (M.MHASplitNoTranspose, "straight to (B, H, T, Dh)"),
    (M.MHAMergeNoTranspose, "without transposing"),
    (M.MHAHeadsShareHeadZero, "head 0's slice"),
    (M.MHACallsTorch, "multi_head_attention_forward"),
])
def test_mha_mistakes_lose_points_and_are_named(cls, words, capsys):
    points, report = run(check_multi_head_attention, cls, capsys, seed=2)
    assert points < 6.0, report
    assert words in report, report


def test_mha_heads_sharing_head_zero_fail_the_head_probe(capsys):
    points, report = run(check_multi_head_attention, M.MHAHeadsShareHeadZero, capsys, seed=0)
    assert "✗ probes" in report and "does not use its own slice" in report, report
    assert M.CATALOGUE["mha-heads-share-head-zero"].advice in report, report


def test_mha_wrapping_the_library_module_is_caught(capsys):
    class Wrapper(nn.Module):
        def __init__(self, d_model, num_heads, bias=True):
            super().__init__()
            self.inner = mhsa_lib.MultiHeadAttention(d_model, num_heads, bias=bias)
            self.q_proj, self.k_proj = self.inner.q_proj, self.inner.k_proj
            self.v_proj, self.out_proj = self.inner.v_proj, self.inner.out_proj

        def forward(self, x, mask=None, return_weights=False):
            return self.inner(x, mask, return_weights=return_weights)

    points, report = run(check_multi_head_attention, Wrapper, capsys, seed=0)
    assert points == 0.0 and "calls mhsa_lib" in report


def test_mha_unfinished_class_reports_not_implemented(capsys):
    class MultiHeadAttention(nn.Module):
        def __init__(self, d_model, num_heads, bias=True):
            raise NotImplementedError()

    points, report = run(check_multi_head_attention, MultiHeadAttention, capsys, seed=0)
    assert points == 0.0 and "not implemented yet" in report


def test_mha_check_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_multi_head_attention(MHALoop, seed=0, quiet=True)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- generated variants
# Mistakes no hand-written mutant models, named from the generated variants
# (autograder/checks/variants_modules.py) in the learner's terms.


def heads_einsum_head_zero(x, w_q, w_k, w_v, num_heads, mask=None):
    """Every head uses head 0's rows: the per-head view of W takes [0] for all heads."""
    b, t, d = x.shape
    dh = d // num_heads
    q, k, v = (torch.einsum("btd,ed->bte", x, w.view(num_heads, dh, d)[0]).unsqueeze(1).expand(-1, num_heads, -1, -1)
               for w in (w_q, w_k, w_v))
    return mhsa_lib.scaled_dot_product_attention(q, k, v, mask)[0]


def heads_softmax_over_queries_model_scale(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (mhsa_lib.split_heads(F.linear(x, w), num_heads) for w in (w_q, w_k, w_v))
    s = q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-2) @ v


def heads_full_matrix_per_head(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (torch.stack([x @ w.T] * num_heads, dim=1) for w in (w_q, w_k, w_v))  # (B, H, T, D)
    return mhsa_lib.scaled_dot_product_attention(q, k, v, mask)[0]


def loop_untransposed(x, w_q, w_k, w_v, mask=None):
    return torch.stack([mhsa_lib.scaled_dot_product_attention(x @ wq, x @ wk, x @ wv, mask)[0]
                        for wq, wk, wv in zip(w_q, w_k, w_v)], dim=1)


def loop_unscaled(x, w_q, w_k, w_v, mask=None):
    outs = []
    for wq, wk, wv in zip(w_q, w_k, w_v):
        s = (x @ wq.T) @ (x @ wk.T).transpose(-2, -1)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        outs.append(torch.softmax(s, -1) @ (x @ wv.T))
    return torch.stack(outs, 1)


@pytest.mark.parametrize("check,fn,words", [
    (check_attention_heads, heads_einsum_head_zero, "every head uses head 0's slice"),
    (check_attention_heads, heads_softmax_over_queries_model_scale, "1/√D, the model width"),
    (check_attention_heads, heads_softmax_over_queries_model_scale, "softmax runs over the queries"),
    (check_attention_heads_loop, loop_untransposed, "Diagnosis: your attention_heads_loop failed on these shapes: "
                                                    "a matrix product of (B·T=42, D=12) by (Dh=4, D=12) failed"),
    (check_attention_heads_loop, loop_untransposed, "is applied as x @ W.T"),
    (check_attention_heads_loop, loop_unscaled, "you do not scale the scores"),
    (check_attention_heads, heads_full_matrix_per_head, "every head uses the same full matrix"),
])
def test_heads_variants_are_named(check, fn, words, capsys):
    points, report = run(check, fn, capsys, seed=4)
    assert points < 3.0, report
    assert words.lower() in report.lower(), report


class _MHAStyle(nn.Module):
    """A learner's MultiHeadAttention written with F.linear on the layers' weights; subclasses
    change one thing."""

    def __init__(self, d_model, num_heads, bias=True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError("d_model must be divisible by num_heads")
        self.h, self.dh = num_heads, d_model // num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model, bias=bias)
                                                                for _ in range(4))

    def project(self, layer, x):
        return F.linear(x, layer.weight, layer.bias)

    def split(self, t):
        b, n, d = t.shape
        return t.view(b, n, self.h, self.dh).transpose(1, 2)

    def merge(self, t):
        b, h, n, dh = t.shape
        return t.transpose(1, 2).reshape(b, n, h * dh)

    def out(self, o):
        return self.out_proj(self.merge(o))

    def returned_weights(self, w):
        return w

    def forward(self, x, mask=None, return_weights=False):
        q, k, v = (self.split(self.project(layer, x)) for layer in (self.q_proj, self.k_proj, self.v_proj))
        s = q @ k.transpose(-2, -1) / math.sqrt(self.dh)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, -1)
        y = self.out(w @ v)
        return (y, self.returned_weights(w)) if return_weights else y


class MHASplitAndMergeWithoutTranspose(_MHAStyle):
    def split(self, t):
        b, n, d = t.shape
        return t.reshape(b, self.h, n, self.dh)

    def merge(self, t):
        b, h, n, dh = t.shape
        return t.reshape(b, n, h * dh)


class MHAOutputPerHead(_MHAStyle):
    def out(self, o):  # each head through its own (Dh, Dh) block of W^O
        w = self.out_proj.weight
        parts = [o[:, i] @ w[i * self.dh:(i + 1) * self.dh, i * self.dh:(i + 1) * self.dh].T for i in range(self.h)]
        return torch.cat(parts, dim=-1) + self.out_proj.bias


class MHAAveragedWeights(_MHAStyle):
    def returned_weights(self, w):
        return w.mean(dim=1)


class MHAWeightsUntransposed(_MHAStyle):
    def project(self, layer, x):
        return x @ layer.weight + layer.bias


class MHAKeysFirstEinsum(_MHAStyle):
    """Scores written with einsum, keys as rows."""

    def forward(self, x, mask=None, return_weights=False):
        q, k, v = (self.split(self.project(layer, x)) for layer in (self.q_proj, self.k_proj, self.v_proj))
        s = torch.einsum("bhsd,bhtd->bhst", k, q) * self.dh ** -0.5
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, -1)
        y = self.out(w @ v)
        return (y, w) if return_weights else y


class MHAFusedHeadZero(_MHAStyle):
    """Fused QKV built from head 0's rows of each projection, repeated for every head."""

    def forward(self, x, mask=None, return_weights=False):
        rows = slice(0, self.dh)
        w = torch.cat([layer.weight[rows].repeat(self.h, 1) for layer in (self.q_proj, self.k_proj, self.v_proj)])
        bias = torch.cat([layer.bias[rows].repeat(self.h) for layer in (self.q_proj, self.k_proj, self.v_proj)])
        q, k, v = (self.split(t) for t in F.linear(x, w, bias).chunk(3, dim=-1))
        out, weights = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        y = self.out_proj(self.merge(out))
        return (y, weights) if return_weights else y


@pytest.mark.parametrize("cls,words", [
    (MHASplitAndMergeWithoutTranspose, "split (B, T, D) straight into (B, H, T, Dh) without the transpose"),
    (MHASplitAndMergeWithoutTranspose, "merge (B, H, T, Dh) into (B, T, D) without transposing back"),
    (MHAOutputPerHead, "output projection per head"),
    (MHAAveragedWeights, "averaged over the heads"),
    (MHAWeightsUntransposed, "x @ W.T"),
    (MHAFusedHeadZero, "every head uses head 0's weights"),
    (M.MHAKeysByQueries, "your scores are K Qᵀ"),
    (MHAKeysFirstEinsum, "your scores are K Qᵀ"),
])
def test_mha_variants_are_named(cls, words, capsys):
    points, report = run(check_multi_head_attention, cls, capsys, seed=1)
    assert points < 6.0, report
    assert words.lower() in report.lower(), report


def test_mha_correct_style_gets_full_marks_and_no_diagnosis(capsys):
    points, report = run(check_multi_head_attention, _MHAStyle, capsys, seed=5)
    assert points == 6.0 and "Diagnosis" not in report, report


# --------------------------------------------------------------------------- answers as learners write them
# Wrong ones lose points and are named; correct ones, in other styles, earn full marks.


def _loop_scaled_by_model_width(x, w_q, w_k, w_v, mask=None):
    outs = []
    for a, b, c in zip(w_q, w_k, w_v):
        s = (x @ a.T) @ (x @ b.T).transpose(-2, -1) / math.sqrt(x.shape[-1])
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        outs.append(torch.softmax(s, -1) @ (x @ c.T))
    return torch.stack(outs, 1)


def _loop_float64_einsum(x, w_q, w_k, w_v, mask=None, **kwargs):
    heads = []
    for h in range(len(w_q)):
        q = torch.einsum("btd,ed->bte", x.double(), w_q[h].double())
        k = torch.einsum("btd,ed->bte", x.double(), w_k[h].double())
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, x.double() @ w_v[h].double().T, mask)
        heads.append(out.to(x.dtype))
    return torch.stack(heads, 1)


def _heads_untransposed(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (mhsa_lib.split_heads(x @ w, num_heads) for w in (w_q, w_k, w_v))
    return mhsa_lib.scaled_dot_product_attention(q, k, v, mask)[0]


def _heads_f_linear(x, w_q, w_k, w_v, num_heads, mask=None):
    def split(t):
        return t.view(*t.shape[:-1], num_heads, -1).transpose(-3, -2)
    q, k, v = split(F.linear(x, w_q)), split(F.linear(x, w_k)), split(F.linear(x, w_v))
    return mhsa_lib.scaled_dot_product_attention(q, k, v, mask)[0]


class _MHANoOutProj(nn.Module):
    def __init__(self, d_model, num_heads, bias=True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model: expected a multiple of num_heads, got {d_model}")
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model, bias=bias)
                                                                for _ in range(4))

    def forward(self, x, mask=None, return_weights=False):
        q, k, v = (mhsa_lib.split_heads(p(x), self.num_heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        out = mhsa_lib.merge_heads(out)
        return (out, w) if return_weights else out


class _MHALazy(_MHANoOutProj):
    def __init__(self, d_model, num_heads, bias=True):
        super().__init__(d_model, num_heads, bias)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.LazyLinear(d_model, bias=bias) for _ in range(4))

    def forward(self, x, mask=None, return_weights=False):
        out, w = super().forward(x, mask, return_weights=True)
        out = self.out_proj(out)
        return (out, w) if return_weights else out


LEARNER_ANSWERS = [
    # (check, answer, full marks?, words the report must hold)
    (check_attention_heads_loop, _loop_scaled_by_model_width, False, ["1/√D, the model width"]),
    (check_attention_heads_loop, _loop_float64_einsum, True, []),
    (check_attention_heads, _heads_untransposed, False, ["x @ W.T"]),
    (check_attention_heads, _heads_f_linear, True, []),
    (check_multi_head_attention, _MHANoOutProj, False, ["output projection is missing"]),
    (check_multi_head_attention, _MHALazy, True, []),
]


@pytest.mark.parametrize("check, answer, full, words", LEARNER_ANSWERS,
                         ids=[f"{c.step.name}-{i}" for i, (c, _, _, _) in enumerate(LEARNER_ANSWERS)])
def test_learner_answers(check, answer, full, words, capsys):
    points, out = run(check, answer, capsys, hidden=True, seed=11)
    if full:
        assert points == check.step.points, out
    else:
        assert points < check.step.points, out
        for word in words:
            assert word in out, out


class _Conv1D(nn.Module):
    """GPT-2's layer: the weight stored (in, out), applied as x @ W + b."""

    def __init__(self, n_in, n_out, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y if self.bias is None else y + self.bias


def _fused_attention(layer):
    class Fused(nn.Module):
        """One fused projection for q, k and v (nanoGPT's c_attn, GPT-2's Conv1D c_attn)."""

        def __init__(self, d_model, num_heads, bias=True, dropout=0.0):
            super().__init__()
            if d_model % num_heads:
                raise ValueError(f"d_model: expected a multiple of num_heads, got {d_model}")
            self.n_head = num_heads
            self.c_attn = layer(d_model, 3 * d_model, bias=bias)
            self.c_proj = layer(d_model, d_model, bias=bias)

        def forward(self, x, mask=None, return_weights=False, **kwargs):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
            y, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
            y = self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
            return (y, w) if return_weights else y
    return Fused


@pytest.mark.parametrize("layer", [nn.Linear, _Conv1D], ids=["nanoGPT-Linear", "GPT-2-Conv1D"])
def test_fused_projection_is_graded_on_its_outputs(layer, capsys):
    """A fused q/k/v projection takes the reference weights by its rows, so every part but the
    structure (which asks for q_proj, k_proj, v_proj, out_proj by name) passes, head probe included."""
    points, out = run(check_multi_head_attention, _fused_attention(layer), capsys, hidden=True, seed=4)
    assert out.count("✗") == 1 and "✗ structure" in out, out
    assert "q_proj is NoneType" in out and "still have biases" not in out, out
    assert points > check_multi_head_attention.step.points * 0.85, out


def test_fused_projection_with_a_wrong_split_is_still_caught(capsys):
    class Swapped(_fused_attention(nn.Linear)):
        def forward(self, x, mask=None, return_weights=False, **kwargs):
            B, T, C = x.size()
            k, q, v = self.c_attn(x).split(C, dim=2)  # q and k taken from each other's rows
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
            y, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
            y = self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
            return (y, w) if return_weights else y
    points, out = run(check_multi_head_attention, Swapped, capsys, hidden=True, seed=4)
    assert points < check_multi_head_attention.step.points * 0.5, out
