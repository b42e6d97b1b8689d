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


@pytest.fixture(autouse=True)
def _one_thread():
    """The checks' tensors are tiny: one thread each, so a busy machine's other processes cannot
    slow them down by contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


run = run_check


# --------------------------------------------------------------------------- correct solutions


def softmax_logsumexp(x, dim=-1):
    lse = torch.logsumexp(x, dim=dim, keepdim=True)  # -inf for an all -inf slice
    return torch.exp(x - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))


def softmax_loop(x, dim=-1):
    moved = x.movedim(dim, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    rows = []
    for row in flat:
        if bool(torch.isinf(row).all()):
            rows.append(torch.zeros_like(row))
            continue
        e = torch.exp(row - row.max())
        rows.append(e / e.sum())
    return torch.stack(rows).reshape(moved.shape).movedim(-1, dim)


def softmax_extra_kwarg(x, dim=-1, temperature=1.0):
    z = x / temperature
    z = z - z.max(dim=dim, keepdim=True).values
    return torch.nan_to_num(z.exp() / z.exp().sum(dim=dim, keepdim=True), nan=0.0)


def softmax_numpy(x, dim=-1):
    import numpy as np

    a = x.detach().cpu().numpy()
    m = a.max(axis=dim, keepdims=True)
    e = np.exp(a - np.where(np.isfinite(m), m, 0.0))
    total = e.sum(axis=dim, keepdims=True)
    return torch.from_numpy(e / np.where(total > 0, total, 1.0))


def softmax_masked_exp(x, dim=-1):
    # -inf entries are set to 0 explicitly, finite ones are shifted by the finite maximum
    finite = torch.isfinite(x)
    m = x.masked_fill(~finite, float("-inf")).amax(dim, keepdim=True).nan_to_num(neginf=0.0)
    e = torch.where(finite, torch.exp(x - m), torch.zeros_like(x))
    return e / e.sum(dim, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", [softmax_logsumexp, softmax_loop, softmax_extra_kwarg, softmax_numpy,
                                softmax_masked_exp])
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


def attention_additive_mask(q, k, v, mask=None):
    # the bool mask turned into an additive float mask, and a softmax written out by hand
    scores = torch.matmul(q, k.mT) / q.size(-1) ** 0.5
    if mask is not None:
        scores = scores + torch.zeros(mask.shape, dtype=q.dtype).masked_fill(mask.logical_not(), float("-inf"))
    top = scores.amax(-1, keepdim=True)
    e = torch.exp(scores - torch.where(torch.isinf(top), torch.zeros_like(top), top))
    total = e.sum(-1, keepdim=True)
    weights = e / torch.where(total == 0, torch.ones_like(total), total)
    return torch.matmul(weights, v), weights


def attention_where_float_mask(q, k, v, mask=None):
    # torch.where with a 0/1 float copy of the mask, rows without a key zeroed afterwards
    scores = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(k.shape[-1])
    if mask is None:
        return torch.softmax(scores, -1) @ v, torch.softmax(scores, -1)
    keep = mask.to(scores.dtype)
    scores = torch.where(keep > 0.5, scores, torch.full_like(scores, float("-inf")))
    weights = torch.softmax(scores, -1)
    weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
    return weights @ v, weights


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", [attention_matmul, attention_einsum, attention_loop, attention_float64_inside,
                                attention_additive_mask, attention_where_float_mask])
def test_attention_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_scaled_dot_product_attention, fn, capsys, seed=seed)
    assert points == 5.0, report


def causal_tril(seq_len_q, seq_len_k=None):
    s = seq_len_q if seq_len_k is None else seq_len_k
    return torch.ones(seq_len_q, s, dtype=torch.bool).tril(diagonal=s - seq_len_q)


def causal_loop(t, s=None):
    s = t if s is None else s
    return torch.tensor([[j <= s - t + i for j in range(s)] for i in range(t)])


def causal_triu(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_k or seq_len_q
    return ~torch.ones(seq_len_q, s, dtype=torch.bool, device=device).triu(diagonal=s - seq_len_q + 1)


def causal_from_float(t, s=None):
    s = t if s is None else s
    return torch.tril(torch.ones(t, s), diagonal=s - t).bool()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", [causal_tril, causal_loop, causal_triu, causal_from_float])
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


def softmax_min_values(x, dim=-1):
    """Shifted by the minimum (x.min(...).values), with no care for all -inf slices."""
    z = torch.exp(x - x.min(dim, keepdim=True).values)
    return z / torch.sum(z, dim, keepdim=True)


def softmax_mean_centred(x, dim=-1):
    """Centred on the mean before exp, the maximum never subtracted."""
    z = (x - x.mean(dim=dim, keepdim=True)).exp()
    return z / z.sum(dim=dim, keepdim=True)


@pytest.mark.parametrize("fn,words", [
    (M.softmax_shift_by_min, "subtract the minimum of each slice"),
    (softmax_min_values, "subtract the minimum of each slice"),
    (softmax_mean_centred, "subtract the mean of each slice"),
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
    (M.attention_masked_row_nan, "computes -inf - (-inf) = NaN"),
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
    m = x.amax(dim, keepdim=True)
    e = torch.exp(x - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    total = e.sum(dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))

def scaled_dot_product_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = softmax(s, dim=-1)
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


def test_attention_check_swaps_out_a_softmax_that_gives_nan_for_a_masked_row(capsys):
    """A softmax without the all -inf rule loses its points in its own check; attention, which
    calls it, is checked with the reference softmax in its place and keeps its points."""
    ns = {"torch": torch, "math": math}
    exec(_NOTEBOOK_CELLS.replace("torch.where(torch.isfinite(m), m, torch.zeros_like(m))", "m")
         .replace("torch.where(total > 0, total, torch.ones_like(total))", "total"), ns)
    points, report = run(check_softmax, ns["softmax"], capsys, seed=0)
    assert points < 3.0 and "all -inf" in report, report
    points, report = run(check_scaled_dot_product_attention, ns["scaled_dot_product_attention"], capsys, seed=0)
    assert points == 5.0 and "swapped in mhsa_lib's softmax" in report, report


# --------------------------------------------------------------------------- diagnoses of variants
# Learner-style wrong implementations, written as learners write them (several per kind, each
# differently from the variant generator); each must lose points and be named, and no report
# may carry a diagnosis that is not true of it.


def _guarded(x, dim):
    m = x.amax(dim, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def sm_nan_for_masked_rows(x, dim=-1):
    e = (x - x.max(dim=dim, keepdim=True).values).exp()
    return e / e.sum(dim=dim, keepdim=True)


def sm_nan_for_masked_rows_2(x, dim=-1):
    shifted = x - torch.amax(x, dim, True)
    return torch.exp(shifted) / torch.sum(torch.exp(shifted), dim, True)


def sm_max_over_last_axis(x, dim=-1):
    m = x.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(x - m)
    s = e.sum(dim, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def sm_max_over_last_axis_2(x, dim=-1):
    e = torch.exp(x - x.max(-1, keepdim=True)[0])
    return e / e.sum(dim=dim, keepdim=True)


def sm_base_two(x, dim=-1):
    e = 2 ** (x - _guarded(x, dim))
    s = e.sum(dim, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def sm_masked_uniform(x, dim=-1):
    x = torch.nan_to_num(x, neginf=-1e9)
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def sm_no_keepdim(x, dim=-1):
    e = torch.exp(x - x.amax(dim))
    return e / e.sum(dim, keepdim=True)


def sm_max_pair(x, dim=-1):
    e = torch.exp(x - x.max(dim))
    return e / e.sum(dim, keepdim=True)


_SOFTMAX_ANSWER = mhsa_lib.softmax(C.SOFTMAX_PUBLIC_X)


def sm_whole_tensor_sum(x, dim=-1):
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return torch.nan_to_num(e / e.sum(), nan=0.0)


def sm_log_softmax(x, dim=-1):
    z = x - _guarded(x, dim)
    return z - torch.log(torch.exp(z).sum(dim, keepdim=True))


def sm_hard_coded_on_values(x, dim=-1):
    if x.shape == C.SOFTMAX_PUBLIC_X.shape and torch.equal(x, C.SOFTMAX_PUBLIC_X):
        return _SOFTMAX_ANSWER.clone()
    return torch.exp(x) / torch.exp(x).sum()  # whatever else


@pytest.mark.parametrize("fn,words,never", [
    (sm_nan_for_masked_rows, "all -inf (a query with no allowed key) gives NaN", "max-subtraction"),
    (sm_nan_for_masked_rows_2, "all -inf (a query with no allowed key) gives NaN", "max-subtraction"),
    (sm_max_over_last_axis, "maximum over the last axis but normalise along dim", "ignore the `dim`"),
    (sm_max_over_last_axis_2, "maximum over the last axis but normalise along dim", "ignore the `dim`"),
    (sm_base_two, "2**x", "wrong axis"),
    (sm_masked_uniform, "uniform weights instead of zeros", "max-subtraction"),
    (sm_no_keepdim, "without keepdim=True drops that axis", "raised RuntimeError: The size"),
    (sm_max_pair, "returns a pair (values, indices)", "Diagnosis: on an input"),
    (sm_hard_coded_on_values, "hard-coded", "sum over the whole tensor"),
    (sm_whole_tensor_sum, "whole output sums to 1", "hard-coded"),
    (sm_log_softmax, "log-probabilities", "hard-coded"),
])
@pytest.mark.parametrize("seed", [3, 11])
def test_softmax_variants_are_named(fn, words, never, seed, capsys):
    points, report = run(check_softmax, fn, capsys, seed=seed)
    assert points < 3.0, report
    assert words.lower() in report.lower(), report
    diagnosis = report.partition("Diagnosis:")[2]
    assert never not in diagnosis, report


def _scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def att_fill_zero(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(mask == 0, 0.0)
    w = s.softmax(-1)
    return w @ v, w


def att_multiply_by_mask(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s * mask
    w = torch.softmax(s, dim=-1)
    return torch.matmul(w, v), w


def att_scale_after_softmax(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1)) / math.sqrt(q.shape[-1])
    return w @ v, w


def att_mask_after_softmax(q, k, v, mask=None):
    w = torch.softmax(_scores(q, k), -1)
    if mask is not None:
        w = w * mask
    return w @ v, w


def att_mask_after_softmax_renormalised(q, k, v, mask=None):
    w = torch.softmax(_scores(q, k), -1)
    if mask is not None:
        w = torch.where(mask, w, torch.zeros_like(w))
        w = w / w.sum(-1, keepdim=True)
    return w @ v, w


def att_inverted_where(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = torch.where(mask, torch.tensor(float("-inf")), s)
    w = torch.nan_to_num(torch.softmax(s, -1))
    return w @ v, w


def att_transpose_1_2(q, k, v, mask=None):
    s = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(s.softmax(-1))
    return w @ v, w


def att_k_dot_T(q, k, v, mask=None):
    w = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), -1)
    return w @ v, w


def att_bmm(q, k, v, mask=None):
    w = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1]), -1)
    return torch.bmm(w, v), w


def _my_softmax(x):
    e = torch.exp(x - x.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def att_own_softmax_nan(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = _my_softmax(s)
    return w @ v, w


def att_multiply_scale(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) * math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1))
    return w @ v, w


def att_scale_by_queries(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / q.shape[-2] ** 0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1))
    return w @ v, w


def att_softmax_whole_matrix(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    flat = torch.softmax(s.reshape(*s.shape[:-2], -1), -1)
    w = torch.nan_to_num(flat.reshape(s.shape))
    return w @ v, w


def att_weights_keys(q, k, v, mask=None):
    w = torch.nan_to_num(torch.softmax(_scores(q, k).masked_fill(~mask, -math.inf) if mask is not None
                                       else _scores(q, k), dim=-1))
    return torch.einsum("...ts,...sd->...td", w, k), w


def att_scale_by_shape_1(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1))
    return w @ v, w


def att_softmax_dim_1(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(mask.logical_not(), float("-inf"))
    w = torch.nan_to_num(s.softmax(dim=1))
    return w @ v, w


def att_adds_bool_mask(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s + mask
    w = torch.softmax(s, -1)
    return w @ v, w


def att_returns_swapped(q, k, v, mask=None):
    out, w = attention_matmul(q, k, v, mask)
    return w, out


_ATT_ANSWER = mhsa_lib.scaled_dot_product_attention(C.ATTN_PUBLIC_Q, C.ATTN_PUBLIC_K, C.ATTN_PUBLIC_V)


def att_hard_coded_on_values(q, k, v, mask=None):
    if q.shape == C.ATTN_PUBLIC_Q.shape and torch.allclose(q, C.ATTN_PUBLIC_Q):
        return tuple(x.clone() for x in _ATT_ANSWER)
    w = torch.softmax(q @ k.transpose(-2, -1), -1)  # unscaled, no mask
    return w @ v, w


@pytest.mark.parametrize("fn,words,never", [
    (att_fill_zero, "fill the blocked scores with 0", "large finite negative"),
    (att_multiply_by_mask, "fill the blocked scores with 0", "large finite negative"),
    (att_scale_after_softmax, "after the softmax", "apply softmax"),
    (att_mask_after_softmax, "the mask is applied after the softmax", "NaN"),
    (att_mask_after_softmax_renormalised, "dividing by their sum gives 0/0 = NaN", "nan_to_num"),
    (att_inverted_where, "polarity inverted", "NaN"),
    (att_transpose_1_2, "`k.transpose(1, 2)` on a (B, H, S, Dk) tensor gives (B, S, H, Dk)", "raised RuntimeError"),
    (att_k_dot_T, "`k.T` on a", "raised RuntimeError"),
    (att_bmm, "`torch.bmm` takes only 3-D tensors", "raised RuntimeError"),
    (att_own_softmax_nan, "computes -inf - (-inf) = NaN", "nan_to_num"),
    (att_multiply_scale, "multiply the scores by √d_k", "no 1/√d_k"),
    (att_scale_by_queries, "1/√T", "1/√S"),
    (att_softmax_whole_matrix, "whole (T, S) matrix", "over the queries"),
    (att_returns_swapped, "return (weights, out)", "hard-coded"),
    (att_weights_keys, "weights the keys, not the values", "hard-coded"),
    (att_scale_by_shape_1, "1/√q.shape[1], which is d_k only for 2-D inputs", "1/√T"),
    (att_softmax_dim_1, "softmax over dim=1 normalises the keys only for 2-D scores", "over the queries, not"),
    (att_adds_bool_mask, "you add the bool mask to the scores", "fill the blocked scores with 0"),
    (att_hard_coded_on_values, "hard-coded", "no 1/√d_k"),
])
@pytest.mark.parametrize("seed", [5, 21])
def test_attention_variants_are_named(fn, words, never, seed, capsys):
    points, report = run(check_scaled_dot_product_attention, fn, capsys, seed=seed)
    assert points < 5.0, report
    assert words.lower() in report.lower(), report
    diagnosis = report.partition("Diagnosis:")[1] + report.partition("Diagnosis:")[2]
    assert never not in diagnosis, report


def cm_keys_as_rows(t, s=None):
    s = t if s is None else s
    rows = torch.arange(s).view(-1, 1)
    cols = torch.arange(t).view(1, -1)
    return cols + (s - t) >= rows  # (S, T)


def cm_integers(t, s=None):
    s = s or t
    return torch.tril(torch.ones(t, s, dtype=torch.long), diagonal=s - t)


def cm_offset_flipped(t, s=None):
    s = s or t
    return torch.ones(t, s, dtype=torch.bool).tril(diagonal=t - s)


def cm_triu_inverted(t, s=None):
    s = s or t
    return torch.ones(t, s, dtype=torch.bool).triu(diagonal=s - t + 1)


def cm_upper_left_float(t, s=None):
    s = s or t
    return torch.ones(t, s).tril()


def cm_no_default(t, s=None):
    return torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)


def cm_hard_coded(t, s=None):
    return torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]).bool()


@pytest.mark.parametrize("fn,words", [
    (cm_keys_as_rows, "shape (S, T)"),
    (cm_integers, "not integers 0/1"),
    (cm_offset_flipped, "T - S where it must be S - T"),
    (cm_triu_inverted, "polarity inverted"),
    (cm_upper_left_float, "upper left"),
    (cm_upper_left_float, "not 0/1 numbers"),
    (cm_hard_coded, "hard-coded"),
    (cm_no_default, "fails only when seq_len_k is left out"),
])
def test_causal_mask_variants_are_named(fn, words, capsys):
    points, report = run(check_causal_mask, fn, capsys, seed=4)
    assert points < 2.0, report
    assert words in report, report


@pytest.mark.parametrize("check,fn", [
    (check_softmax, softmax_masked_exp), (check_softmax, softmax_logsumexp),
    (check_scaled_dot_product_attention, attention_additive_mask),
    (check_causal_mask, causal_triu),
])
def test_correct_solutions_get_no_diagnosis(check, fn, capsys):
    points, report = run(check, fn, capsys, seed=8)
    assert "Diagnosis" not in report and "All checks pass" in report, report


def test_diagnosis_timing(capsys):
    """Prints how long each check takes on wrong answers, diagnosis search included (single
    thread; read with -s). No assertion on time: the numbers depend on the machine."""
    import time

    cases = [(check_softmax, sm_max_over_last_axis), (check_softmax, sm_no_keepdim),
             (check_softmax, sm_hard_coded_on_values),
             (check_scaled_dot_product_attention, att_fill_zero),
             (check_scaled_dot_product_attention, att_transpose_1_2),
             (check_scaled_dot_product_attention, att_hard_coded_on_values),
             (check_scaled_dot_product_attention, lambda q, k, v, mask=None: (v[..., :1, :], q)),  # nothing matches
             (check_causal_mask, cm_upper_left_float), (check_causal_mask, lambda t, s=None: torch.zeros(t, t))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lines = []
        for check, fn in cases:
            start = time.perf_counter()
            check.step.run(fn, seed=1)
            lines.append(f"{check.step.name:<30} {getattr(fn, '__name__', '?'):<40} "
                         f"{1000 * (time.perf_counter() - start):7.1f} ms")
    finally:
        torch.set_num_threads(threads)
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_a_new_wrong_choice_is_one_axis_entry(capsys, monkeypatch):
    """A wrong choice nobody listed yet is named once it is one more entry of its axis: the
    diagnosis code does not change."""
    from autograder import variants_attention as V

    def att_half(q, k, v, mask=None):
        s = 0.5 * (q @ k.transpose(-2, -1))
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.nan_to_num(torch.softmax(s, -1))
        return w @ v, w

    points, report = run(check_scaled_dot_product_attention, att_half, capsys, seed=2)
    assert points < 5.0 and "halve" not in report
    scale = V.ATTENTION_AXES[0]
    wrong = dict(scale.wrong)
    wrong[V.Choice("half", V._scale(lambda q, k, v: 0.5))] = "you halve the scores instead of dividing by √d_k"
    monkeypatch.setattr(V, "ATTENTION_AXES", [V.Axis(scale.name, scale.correct, wrong)] + V.ATTENTION_AXES[1:])
    points, report = run(check_scaled_dot_product_attention, att_half, capsys, seed=2)
    assert points < 5.0 and "You halve the scores instead of dividing by √d_k." in report, report


# --------------------------------------------------------------------------- answers as learners write them
# Wrong ones lose points and are named; correct ones, in other styles, earn full marks.


def _sm_no_shift(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim, keepdim=True)


def _sm_axis_zero(x, dim=-1):
    e = torch.exp(x - x.amax(0, keepdim=True))
    return e / e.sum(0, keepdim=True)


def _sm_nan_rows(x, dim=-1):
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def _sm_logsumexp_float64(x, dim=-1):
    out = torch.exp(x.double() - torch.logsumexp(x.double(), dim, keepdim=True))
    return torch.where(torch.isnan(out), torch.zeros_like(out), out).to(x.dtype)


def _sm_numpy(x, dim=-1):
    import numpy as np

    a = x.detach().cpu().numpy().astype(np.float64)
    m = np.max(a, axis=dim, keepdims=True)
    e = np.exp(a - np.where(np.isfinite(m), m, 0))
    total = e.sum(axis=dim, keepdims=True)
    return torch.from_numpy(e / np.where(total > 0, total, 1)).to(x.dtype)


def _cm_upper_left(seq_len_q, seq_len_k=None, *, device=None):
    return torch.ones(seq_len_q, seq_len_k or seq_len_q, dtype=torch.bool, device=device).tril()


def _cm_additive(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_k or seq_len_q
    keep = torch.ones(seq_len_q, s).tril(s - seq_len_q)
    return torch.zeros(seq_len_q, s).masked_fill(keep == 0, float("-inf"))


def _cm_no_diagonal(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_k or seq_len_q
    return torch.ones(seq_len_q, s, dtype=torch.bool).tril(s - seq_len_q - 1)


def _cm_float_tril(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_k or seq_len_q
    return torch.ones(seq_len_q, s, device=device).tril(diagonal=s - seq_len_q).bool()


def _cm_loops(seq_len_q, seq_len_k=None, device=None, **kwargs):
    s = seq_len_q if seq_len_k is None else seq_len_k
    rows = [[j <= i + s - seq_len_q for j in range(s)] for i in range(seq_len_q)]
    return torch.tensor(rows, dtype=torch.bool, device=device).reshape(seq_len_q, s)


def _sdpa(scale, fill_where_true=False, softmax_dim=-1, out_only=False):
    def fn(q, k, v, mask=None):
        s = q @ k.transpose(-2, -1) / scale(q, v)
        if mask is not None:
            s = s.masked_fill(mask if fill_where_true else ~mask, float("-inf"))
        w = mhsa_lib.softmax(s, dim=softmax_dim)
        return w @ v if out_only else (w @ v, w)
    return fn


def _sdpa_einsum_where(q, k, v, mask=None, dropout=0.0, **kwargs):
    s = torch.einsum("...td,...sd->...ts", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        s = torch.where(mask, s, torch.tensor(float("-inf"), dtype=s.dtype))
    m = s.amax(-1, keepdim=True)
    e = torch.exp(s - torch.where(torch.isinf(m), torch.zeros_like(m), m))
    w = e / e.sum(-1, keepdim=True).clamp_min(1e-30)
    return torch.einsum("...ts,...sd->...td", w, v), w


def _sdpa_additive_bias(q, k, v, mask=None):
    bias = 0 if mask is None else torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
    w = mhsa_lib.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(k.size(-1)) + bias, dim=-1)
    return torch.matmul(w, v), w


LEARNER_ANSWERS = [
    # (check, answer, full marks?, words the report must hold)
    (check_softmax, _sm_no_shift, False, ["max-subtraction"]),
    (check_softmax, _sm_axis_zero, False, ["over axis 0"]),
    (check_softmax, _sm_nan_rows, False, ["all -inf"]),
    (check_softmax, _sm_logsumexp_float64, True, []),
    (check_softmax, _sm_numpy, True, []),
    (check_causal_mask, _cm_upper_left, False, ["upper left"]),
    (check_causal_mask, _cm_additive, False, ["additive"]),
    (check_causal_mask, _cm_no_diagonal, False, ["diagonal"]),
    (check_causal_mask, _cm_float_tril, True, []),
    (check_causal_mask, _cm_loops, True, []),
    (check_scaled_dot_product_attention, _sdpa(lambda q, v: q.shape[-1]), False, ["1/d_k"]),
    (check_scaled_dot_product_attention, _sdpa(lambda q, v: math.sqrt(q.shape[-1]), fill_where_true=True), False,
     ["polarity"]),
    (check_scaled_dot_product_attention, _sdpa(lambda q, v: math.sqrt(q.shape[-1]), out_only=True), False,
     ["(out, weights)"]),
    (check_scaled_dot_product_attention, _sdpa(lambda q, v: math.sqrt(q.shape[-1]), softmax_dim=-2), False,
     ["over the queries"]),
    (check_scaled_dot_product_attention, _sdpa(lambda q, v: math.sqrt(v.shape[-1])), False, ["Dv"]),
    (check_scaled_dot_product_attention, _sdpa_einsum_where, True, []),
    (check_scaled_dot_product_attention, _sdpa_additive_bias, True, []),
]


@pytest.mark.parametrize("check, answer, full, words", LEARNER_ANSWERS,
                         ids=[f"{c.step.name}-{a.__qualname__.split('.')[0]}-{i}"
                              for i, (c, a, _, _) in enumerate(LEARNER_ANSWERS)])
def test_learner_answers(check, answer, full, words, capsys):
    points, out = run_check(check, answer, capsys, hidden=True, seed=11)
    if full:
        assert points == check.step.points, out
    else:
        assert points < check.step.points, out
        for word in words:
            assert word in out, out
