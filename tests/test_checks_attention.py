"""The notebook-01 checks: full marks for correct solutions written many ways, points lost and
the mistake named for every known mistake of autograder.mistakes.attention, and no crash or
stderr output whatever the learner's code does."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check

import mhsa_lib
from autograder import check_causal_mask, check_scaled_dot_product_attention, check_softmax
from autograder.checks import attention as C
from autograder.mistakes import attention as M

SEEDS = [0, 1, 12345]


run = run_check


# --------------------------------------------------------------------------- correct solutions


def softmax_logsumexp(x, dim=-1):
    return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))


def softmax_loop(x, dim=-1):
    moved = x.movedim(dim, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    rows = []
    for row in flat:
        e = torch.exp(row - row.max())
        rows.append(e / e.sum())
    return torch.stack(rows).reshape(moved.shape).movedim(-1, dim)


def softmax_extra_kwarg(x, dim=-1, temperature=1.0):
    z = x / temperature
    z = z - z.max(dim=dim, keepdim=True).values
    return z.exp() / z.exp().sum(dim=dim, keepdim=True)


def softmax_numpy(x, dim=-1):
    import numpy as np

    a = x.detach().cpu().numpy()
    e = np.exp(a - a.max(axis=dim, keepdims=True))
    return torch.from_numpy(e / e.sum(axis=dim, keepdims=True))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", [softmax_logsumexp, softmax_loop, softmax_extra_kwarg, softmax_numpy])
def test_softmax_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_softmax, fn, capsys, seed=seed)
    assert points == 3.0, report
    assert "All checks pass" in report


def attention_matmul(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    return weights @ v, weights


def attention_einsum(q, k, v, mask=None, dropout=0.0):
    scores = torch.einsum("...td,...sd->...ts", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
    scores = scores - scores.amax(-1, keepdim=True)
    e = scores.exp()
    if mask is not None:
        e = e * mask  # rows with no key become all 0
    total = e.sum(-1, keepdim=True)
    weights = e / total.clamp_min(torch.finfo(e.dtype).tiny)
    return torch.einsum("...ts,...sd->...td", weights, v), weights


def attention_loop(q, k, v, mask=None):
    t, s = q.shape[-2], k.shape[-2]
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    q, k, v = q.expand(lead + q.shape[-2:]), k.expand(lead + k.shape[-2:]), v.expand(lead + v.shape[-2:])
    full = torch.ones(lead + (t, s), dtype=torch.bool) if mask is None else mask.expand(lead + (t, s))
    outs, ws = [], []
    for i in range(t):
        sc = (q[..., i : i + 1, :] @ k.transpose(-2, -1)).squeeze(-2) / math.sqrt(q.shape[-1])
        allowed = full[..., i, :]
        sc = sc.masked_fill(~allowed, float("-inf"))
        w = torch.softmax(sc, -1).masked_fill(~allowed.any(-1, keepdim=True), 0.0)
        ws.append(w)
        outs.append((w.unsqueeze(-2) @ v).squeeze(-2))
    return torch.stack(outs, -2), torch.stack(ws, -2)


def attention_float64_inside(q, k, v, mask=None):
    out, w = attention_matmul(q.double(), k.double(), v.double(), mask)
    return out.to(q.dtype), w.to(q.dtype)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", [attention_matmul, attention_einsum, attention_loop, attention_float64_inside])
def test_attention_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_scaled_dot_product_attention, fn, capsys, seed=seed)
    assert points == 5.0, report


def causal_tril(seq_len_q, seq_len_k=None):
    s = seq_len_q if seq_len_k is None else seq_len_k
    return torch.ones(seq_len_q, s, dtype=torch.bool).tril(diagonal=s - seq_len_q)


def causal_loop(t, s=None):
    s = t if s is None else s
    return torch.tensor([[j <= s - t + i for j in range(s)] for i in range(t)])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", [causal_tril, causal_loop])
def test_causal_mask_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_causal_mask, fn, capsys, seed=seed)
    assert points == 2.0, report


@pytest.mark.parametrize("check,fn,full", [
    (check_softmax, softmax_logsumexp, 3.0),
    (check_causal_mask, causal_tril, 2.0),
    (check_scaled_dot_product_attention, attention_einsum, 5.0),
])
def test_hidden_cases_pass_correct_solutions(check, fn, full, capsys):
    points, report = run(check, fn, capsys, hidden=True, seed=7)
    assert points == full and "with the hidden cases drawn at grading time: all checks pass" in report


# --------------------------------------------------------------------------- mistakes


_PUBLIC_SOFTMAX_ANSWER = mhsa_lib.softmax(C.SOFTMAX_PUBLIC_X)


def hard_coded_softmax(x, dim=-1):
    return _PUBLIC_SOFTMAX_ANSWER.clone()


def softmax_via_alias(x, dim=-1):
    from torch.nn.functional import softmax as s

    return s(x, dim)


@pytest.mark.parametrize("fn,words", [
    (M.softmax_wrong_axis, "wrong axis"),
    (M.softmax_ignores_dim, "ignore the `dim` argument"),
    (M.softmax_no_max_subtraction, "no max-subtraction"),
    (M.softmax_global_max, "maximum of the whole tensor"),
    (M.softmax_global_sum, "sum over the whole tensor"),
    (M.softmax_calls_torch, "calls torch's softmax"),
    (softmax_via_alias, "calls torch's softmax"),
    (lambda x, dim=-1: mhsa_lib.softmax(x, dim), "calls mhsa_lib"),
    (hard_coded_softmax, "hard-coded"),
])
@pytest.mark.parametrize("seed", [3, 4])
def test_softmax_mistakes_lose_points_and_are_named(fn, words, seed, capsys):
    points, report = run(check_softmax, fn, capsys, seed=seed)
    assert points < 3.0, report
    assert words in report, report


_PUBLIC_ATTENTION_ANSWER = mhsa_lib.scaled_dot_product_attention(C.ATTN_PUBLIC_Q, C.ATTN_PUBLIC_K, C.ATTN_PUBLIC_V)


def hard_coded_attention(q, k, v, mask=None):
    return tuple(x.clone() for x in _PUBLIC_ATTENTION_ANSWER)


def attention_sdpa_alias(q, k, v, mask=None):
    from torch.nn.functional import scaled_dot_product_attention as fused

    return fused(q, k, v, attn_mask=mask), attention_matmul(q, k, v, mask)[1]


def attention_via_nn_mha(q, k, v, mask=None):
    out, w = attention_matmul(q, k, v, mask)
    _ = F.multi_head_attention_forward  # referenced, not called: must not count
    return out, w


@pytest.mark.parametrize("fn,words", [
    (M.attention_no_scale, "no 1/√d_k scale"),
    (M.attention_scale_by_dk, "1/d_k"),
    (M.attention_scale_by_model_width, "model width"),
    (M.attention_softmax_over_queries, "over the queries, not the keys"),
    (M.attention_mask_inverted, "polarity inverted"),
    (M.attention_mask_after_softmax, "after the softmax"),
    (M.attention_masked_row_nan, "gives NaN"),
    (M.attention_large_negative_fill, "uniform weights"),
    (M.attention_ignores_mask, "not used"),
    (M.attention_calls_sdpa, "scaled_dot_product_attention"),
    (attention_sdpa_alias, "calls torch's scaled_dot_product_attention"),
    (lambda q, k, v, mask=None: mhsa_lib.scaled_dot_product_attention(q, k, v, mask), "calls mhsa_lib"),
    (hard_coded_attention, "hard-coded"),
])
@pytest.mark.parametrize("seed", [5, 6])
def test_attention_mistakes_lose_points_and_are_named(fn, words, seed, capsys):
    points, report = run(check_scaled_dot_product_attention, fn, capsys, seed=seed)
    assert points < 5.0, report
    assert words in report, report


def test_referencing_a_forbidden_function_without_calling_it_is_fine(capsys):
    points, report = run(check_scaled_dot_product_attention, attention_via_nn_mha, capsys, seed=0)
    assert points == 5.0, report


def test_scale_diagnosis_names_other_wrong_scales(capsys):
    def scale_by_keys(q, k, v, mask=None):
        w = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(k.shape[-2])).masked_fill(
            ~mask if mask is not None else torch.zeros((), dtype=torch.bool), float("-inf")), -1)
        return torch.nan_to_num(w) @ v, torch.nan_to_num(w)

    points, report = run(check_scaled_dot_product_attention, scale_by_keys, capsys, seed=2)
    assert points < 5.0
    assert "1/√S" in report


@pytest.mark.parametrize("fn,words", [
    (M.causal_mask_diagonal_blocked, "blocks the diagonal"),
    (M.causal_mask_one_ahead, "next position"),
    (M.causal_mask_upper_left, "upper left"),
    (M.causal_mask_inverted, "polarity inverted"),
    (M.causal_mask_float, "bool tensor"),
    (M.causal_mask_additive, "additive 0/-inf"),
    (lambda t, s=None: mhsa_lib.causal_mask(t, s), "calls mhsa_lib"),
    (lambda t, s=None: torch.ones(4, 4, dtype=torch.bool).tril(), "public case"),
])
def test_causal_mask_mistakes_lose_points_and_are_named(fn, words, capsys):
    points, report = run(check_causal_mask, fn, capsys, seed=1)
    assert points < 2.0, report
    assert words in report, report


def test_every_mistake_in_the_module_is_caught(capsys):
    """No buggy variant in autograder.mistakes.attention earns full marks."""
    for mistake in M.SOFTMAX_MISTAKES:
        assert run(check_softmax, mistake.fn, capsys, seed=9)[0] < 3.0, mistake.id
    for mistake in M.CAUSAL_MASK_MISTAKES:
        assert run(check_causal_mask, mistake.fn, capsys, seed=9)[0] < 2.0, mistake.id
    for mistake in M.ATTENTION_MISTAKES:
        assert run(check_scaled_dot_product_attention, mistake.fn, capsys, seed=9)[0] < 5.0, mistake.id


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("fn,words", [
    (lambda x, dim=-1: (_ for _ in ()).throw(NotImplementedError()), "not implemented yet"),
    (lambda x, dim=-1: 1 / 0, "raised ZeroDivisionError"),
    (lambda x, dim=-1: None, "NoneType"),
    (lambda x, dim=-1: x.tolist(), "list"),
    (lambda x, dim=-1: exit(3), "raised SystemExit"),
    (42, "expected a function"),
])
def test_broken_submissions_are_reported_not_raised(fn, words, capsys):
    points, report = run(check_softmax, fn, capsys, seed=0)
    assert points == 0.0
    assert words in report, report


def test_prints_and_warnings_inside_learner_code_never_reach_stderr(capsys):
    import sys
    import warnings

    def noisy(x, dim=-1):
        print("debug print")
        print("to stderr", file=sys.stderr)
        warnings.warn("a warning from learner code")
        return softmax_logsumexp(x, dim)

    points, report = run(check_softmax, noisy, capsys, seed=0)
    assert points == 3.0
    assert "debug print" not in report


def test_endless_loop_is_stopped(capsys, monkeypatch):
    from autograder.frame import calls

    monkeypatch.setattr(calls, "CALL_TIME_LIMIT", 0.3)

    def spin(x, dim=-1):
        while True:
            pass

    result = check_softmax.step.run(spin, seed=0)
    assert result.points == 0.0
    assert "did not finish" in result.zero_reason


def test_grading_seed_makes_hidden_cases_deterministic(monkeypatch):
    from autograder.core import draw_seed

    monkeypatch.setenv("MHSA_GRADING_SEED", "student-a")
    a1, a2 = draw_seed("softmax", hidden=True), draw_seed("softmax", hidden=True)
    monkeypatch.setenv("MHSA_GRADING_SEED", "student-b")
    b = draw_seed("softmax", hidden=True)
    assert a1 == a2 and a1 != b
    assert draw_seed("softmax", seed=11) == 11


_NOTEBOOK_CELLS = '''
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)

def scaled_dot_product_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(softmax(s, dim=-1))
    return w @ v, w
'''


def _notebook_namespace(softmax_axis):
    """A learner's notebook namespace, where attention calls the learner's own softmax."""
    namespace = {"torch": torch, "math": math}
    exec(_NOTEBOOK_CELLS.replace("amax(dim", f"amax({softmax_axis}").replace("sum(dim", f"sum({softmax_axis}"), namespace)
    return namespace


def test_attention_check_swaps_out_a_failing_softmax_and_says_so(capsys):
    ns = _notebook_namespace(softmax_axis=0)  # a softmax over the wrong axis
    wrong_softmax = ns["softmax"]
    points, report = run(check_scaled_dot_product_attention, ns["scaled_dot_product_attention"], capsys, seed=0)
    assert points == 5.0, report
    assert "swapped in mhsa_lib's softmax" in report
    assert ns["softmax"] is wrong_softmax  # the learner's namespace is restored
    assert run(check_softmax, wrong_softmax, capsys, seed=0)[0] < 3.0  # the mistake costs points once


def test_attention_check_keeps_a_passing_softmax(capsys):
    ns = _notebook_namespace(softmax_axis="dim")
    points, report = run(check_scaled_dot_product_attention, ns["scaled_dot_product_attention"], capsys, seed=0)
    assert points == 5.0 and "swapped" not in report
