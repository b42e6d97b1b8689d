"""The CrossAttention check (notebook 03): correct modules written differently earn full marks,
in one process and split into probe and judge; each known mistake (keys from the decoder, queries
from the memory, a causal mask over the memory, the padding mask on the query axis, the scale by S
or by D, the mask ignored) loses points and is named; two mistakes at once are named by the
generated variants; a stub earns nothing; the library and torch's multi-head attention are refused."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check
from torch import nn

import mhsa_lib
from autograder import check_cross_attention
from autograder.checks import cross as C
from autograder.mistakes import cross as M

POINTS = C.CROSS_POINTS


class CrossLoop(nn.Module):
    """Correct: a loop over heads, F.scaled_dot_product_attention per head (bool mask, True = attend)."""

    def __init__(self, d_model, num_heads, bias=True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError("d_model must be divisible by num_heads")
        self.h = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model, bias=bias)
                                                                for _ in range(4))

    def forward(self, x, memory, memory_mask=None, return_weights=False):
        dh = x.shape[-1] // self.h
        q, k, v = self.q_proj(x), self.k_proj(memory), self.v_proj(memory)
        outs, ws = [], []
        for i in range(self.h):
            sl = slice(i * dh, (i + 1) * dh)
            s = q[..., sl] @ k[..., sl].transpose(-2, -1) / math.sqrt(dh)  # (B, T, S)
            if memory_mask is not None:
                s = s.masked_fill(~memory_mask[:, 0], float("-inf"))
            w = torch.softmax(s, -1)
            outs.append(w @ v[..., sl])
            ws.append(w)
        out = self.out_proj(torch.cat(outs, -1))
        return (out, torch.stack(ws, 1)) if return_weights else out


class CrossOnLibraryHelpers(nn.Module):
    """Correct: mhsa_lib's split_heads / merge_heads / scaled_dot_product_attention (allowed)."""

    def __init__(self, d_model, num_heads, bias=True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not a multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, memory, memory_mask=None, return_weights=False):
        q = mhsa_lib.split_heads(self.q_proj(x), self.num_heads)
        k = mhsa_lib.split_heads(self.k_proj(memory), self.num_heads)
        v = mhsa_lib.split_heads(self.v_proj(memory), self.num_heads)
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, memory_mask)
        out = self.out_proj(mhsa_lib.merge_heads(out))
        return (out, w) if return_weights else out


@pytest.mark.parametrize("cls", [CrossLoop, CrossOnLibraryHelpers])
@pytest.mark.parametrize("seed", [0, 3])
def test_correct_modules_earn_full_marks(cls, seed, capsys):
    points, report = run_check(check_cross_attention, cls, capsys, seed=seed)
    assert points == POINTS, report
    points, report = run_check(check_cross_attention, cls, capsys, seed=seed, hidden=True)
    assert points == POINTS, report


@pytest.mark.parametrize("mistake", M.CROSS_MISTAKES, ids=lambda m: m.id)
def test_each_mistake_loses_points_and_is_named(mistake, capsys):
    points, report = run_check(check_cross_attention, mistake.fn, capsys, seed=5)
    assert points < POINTS, report
    assert " ".join(mistake.advice.split())[:60] in report, report


def test_two_mistakes_at_once_are_named_by_the_generated_variants(capsys):
    class ScaleBySAndIgnoresMask(M._CrossMistake):
        choices = {"scale": "s", "mask_use": "ignored"}

    points, report = run_check(check_cross_attention, ScaleBySAndIgnoresMask, capsys, seed=2)
    assert points < POINTS, report
    assert "scaled by 1/√S" in report and "memory_mask is never applied" in report, report


def test_variants_are_generated_from_small_axes():
    found = C.variants()
    assert len(found) == len({v.id for v in found}) > 20
    assert found[0].id.count("=") == 1  # one change first


def test_an_inverted_mask_with_a_scale_by_d_is_named(capsys):
    class InvertedAndScaleByD(M._CrossMistake):
        choices = {"scale": "d", "mask_use": "inverted"}

    points, report = run_check(check_cross_attention, InvertedAndScaleByD, capsys, seed=3)
    assert points < POINTS, report
    assert "scaled by 1/√D instead" in report and "True = blocked" in report, report


def test_stub_earns_nothing(capsys):
    class Stub(nn.Module):
        def __init__(self, d_model, num_heads, bias=True):
            super().__init__()
            if d_model % num_heads:
                raise ValueError("no")
            self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model) for _ in range(4))

        def forward(self, x, memory, memory_mask=None, return_weights=False):
            raise NotImplementedError

    points, report = run_check(check_cross_attention, Stub, capsys, seed=0)
    assert points == 0.0 and "not implemented" in report, report


def test_library_and_torch_are_refused(capsys):
    class ViaLibrary(CrossOnLibraryHelpers):
        def forward(self, x, memory, memory_mask=None, return_weights=False):
            ref = mhsa_lib.CrossAttention(x.shape[-1], self.num_heads).to(x.dtype)
            ref.load_state_dict(self.state_dict())
            return ref(x, memory, memory_mask, return_weights)

    class ViaTorch(CrossOnLibraryHelpers):
        def forward(self, x, memory, memory_mask=None, return_weights=False):
            d = x.shape[-1]
            w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
            pad = None if memory_mask is None else ~memory_mask[:, 0, 0]
            out, weights = F.multi_head_attention_forward(
                x.transpose(0, 1), memory.transpose(0, 1), memory.transpose(0, 1), d, self.num_heads, w, b,
                None, None, False, 0.0, self.out_proj.weight, self.out_proj.bias, training=False,
                key_padding_mask=pad, need_weights=True, average_attn_weights=False)
            return (out.transpose(0, 1), weights) if return_weights else out.transpose(0, 1)

    points, report = run_check(check_cross_attention, ViaLibrary, capsys, seed=0)
    assert points == 0.0 and "CrossAttention" in report, report
    points, report = run_check(check_cross_attention, ViaTorch, capsys, seed=0)
    assert points == 0.0 and "multi_head_attention_forward" in report, report


def test_a_shape_error_is_said_in_the_courses_letters(capsys):
    class ViewWithT(CrossOnLibraryHelpers):
        def forward(self, x, memory, memory_mask=None, return_weights=False):
            b, t, d = x.shape
            k = self.k_proj(memory).view(b, t, self.num_heads, -1)  # the memory has S positions, not T
            return k

    points, report = run_check(check_cross_attention, ViewWithT, capsys, seed=1)
    assert points == 0.0 or points < POINTS, report
    assert "your forward" in report, report


@pytest.mark.parametrize("forward", [
    lambda self, x, memory, memory_mask=None, return_weights=False: memory,  # the memory back, (B, S, D)
    lambda self, x, memory, memory_mask=None, return_weights=False: "out",  # not a tensor
    lambda self, x, memory, memory_mask=None, return_weights=False: torch.zeros(1, 3, 4),  # hard-coded
    lambda self, x, *args, **kwargs: self.out_proj(x),  # ignores the memory altogether
], ids=["memory back", "a string", "hard-coded", "ignores memory"])
def test_hostile_or_empty_answers_get_a_result_not_an_exception(forward, capsys):
    Hostile = type("Hostile", (CrossOnLibraryHelpers,), {"forward": forward})
    points, report = run_check(check_cross_attention, Hostile, capsys, seed=0)
    assert points <= 0.5, report  # the structure part at most


def test_a_mistake_whose_fully_masked_queries_give_nan_is_still_named(capsys):
    """Without a guard on its softmax, an inverted mask blocks every position of an unpadded memory
    and its queries come out NaN: the variants are matched with the same NaN rows."""

    class InvertedBareSoftmax(M._CrossMistake):
        choices = {"mask_use": "inverted"}

        def forward(self, x, memory, memory_mask=None, return_weights=False):
            return super().forward(x, memory, memory_mask, return_weights, empty_rows="nan")

    points, report = run_check(check_cross_attention, InvertedBareSoftmax, capsys, seed=4)
    assert points < POINTS, report
    assert "NaN" in report and "True = blocked" in report, report
