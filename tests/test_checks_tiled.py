"""The notebook-08 checks: full marks for correct solutions written many ways, points lost and
the mistake named for every known mistake of autograder.mistakes.tiled, a tiled loop that forms
the whole (T, S) matrix caught by the memory part, and the shortcuts refused."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check

import mhsa_lib
from autograder import check_online_softmax_merge, check_tiled_attention
from autograder.checks import tiled as C
from autograder.mistakes import tiled as M

SEEDS = [0, 1, 12345]
run = run_check


# --------------------------------------------------------------------------- correct merges


def merge_where(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    safe = torch.where(m == float("-inf"), torch.zeros_like(m), m)
    return m, l1 * torch.exp(m1 - safe) + l2 * torch.exp(m2 - safe)


def merge_logaddexp(m1, l1, m2, l2):
    # Through log-space: log l = logaddexp(m1 + log l1, m2 + log l2) - m.
    m = torch.maximum(m1, m2)
    lse = torch.logaddexp(m1 + torch.log(l1), m2 + torch.log(l2))
    l = torch.where(torch.isfinite(m), torch.exp(lse - m), torch.zeros_like(lse))  # noqa: E741
    return m, torch.nan_to_num(l, nan=0.0)


def merge_by_cases(m1, l1, m2, l2):
    m1, l1, m2, l2 = torch.broadcast_tensors(m1, l1, m2, l2)
    first_bigger = m1 >= m2
    big_m = torch.where(first_bigger, m1, m2)
    big_l = torch.where(first_bigger, l1, l2)
    small_m = torch.where(first_bigger, m2, m1)
    small_l = torch.where(first_bigger, l2, l1)
    factor = torch.exp(small_m - big_m).nan_to_num(nan=0.0)
    return big_m, big_l + small_l * factor


def merge_numpy(m1, l1, m2, l2):
    import numpy as np

    a = [t.detach().numpy() for t in (m1, l1, m2, l2)]
    m = np.maximum(a[0], a[2])
    shift = np.where(np.isfinite(m), m, 0.0).astype(a[0].dtype)
    return torch.from_numpy(m), torch.from_numpy(a[1] * np.exp(a[0] - shift) + a[3] * np.exp(a[2] - shift))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", [merge_where, merge_logaddexp, merge_by_cases, merge_numpy])
def test_merge_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_online_softmax_merge, fn, capsys, seed=seed)
    assert points == 3.0, report
    assert "All checks pass" in report


@pytest.mark.parametrize("fn,words", [
    (M.merge_no_rescale, "rescale each to the common maximum"),
    (M.merge_sign_flipped, "upside down"),
    (M.merge_rescale_first_only, "rescale only l1"),
    (M.merge_empty_nan, "two empty blocks"),
    (M.merge_min, "smaller maximum"),
    (M.merge_relative_to_first, "keep the sum relative to m1"),
    (M.merge_returns_log, "logarithm of the merged sum"),
    (M.merge_returns_l_first, "you return (l, m)"),
    (lambda m1, l1, m2, l2: mhsa_lib.online_softmax_merge(m1, l1, m2, l2), "calls mhsa_lib"),
    (lambda m1, l1, m2, l2: (m1, l1), "values differ"),
])
@pytest.mark.parametrize("seed", [3, 4])
def test_merge_mistakes_lose_points_and_are_named(fn, words, seed, capsys):
    points, report = run(check_online_softmax_merge, fn, capsys, seed=seed)
    assert points < 3.0, report
    assert words in report, report


def test_merge_that_returns_one_tensor_or_raises_is_reported(capsys):
    points, report = run(check_online_softmax_merge, lambda m1, l1, m2, l2: m1, capsys, seed=0)
    assert points == 0.0 and "return the pair (m, l)" in report, report

    def broken(m1, l1, m2, l2):
        raise NotImplementedError()

    points, report = run(check_online_softmax_merge, broken, capsys, seed=0)
    assert points == 0.0 and "not implemented yet" in report, report


# --------------------------------------------------------------------------- correct tiled attention


def tiled_with_merge(q, k, v, block_size, mask=None, causal=False):
    """Uses the merge on (m, l) and rescales the output with the same factors."""
    t, s = q.shape[-2], k.shape[-2]
    m = torch.full(q.shape[:-1] + (1,), float("-inf"), dtype=q.dtype)
    l = torch.zeros_like(m)  # noqa: E741
    acc = torch.zeros(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)
    for start in range(0, s, block_size):
        end = min(start + block_size, s)
        sc = q @ k[..., start:end, :].transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            sc = sc.masked_fill(~mask[..., start:end], float("-inf"))
        if causal:
            key = torch.arange(start, end)
            sc = sc.masked_fill(key[None, :] > torch.arange(t)[:, None] + s - t, float("-inf"))
        bm = sc.amax(-1, keepdim=True)
        bshift = torch.where(torch.isfinite(bm), bm, torch.zeros_like(bm))
        p = torch.exp(sc - bshift)
        m_new, l = mhsa_lib.online_softmax_merge(m, l, bm, p.sum(-1, keepdim=True))  # noqa: E741
        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        acc = acc * torch.exp(m - shift) + (p * torch.exp(bshift - shift)) @ v[..., start:end, :]
        m = m_new
    return acc / l.clamp_min(torch.finfo(l.dtype).tiny) * (l > 0)


def tiled_softmax_blocks(q, k, v, block_size, mask=None, causal=False):
    """Per block: torch.softmax and the block's logsumexp; blocks combined in log space."""
    t, s = q.shape[-2], k.shape[-2]
    lse = None
    out = None
    for start in range(0, s, block_size):
        end = min(start + block_size, s)
        sc = torch.einsum("...td,...sd->...ts", q, k[..., start:end, :]) * q.shape[-1] ** -0.5
        allowed = torch.ones(sc.shape[-2:], dtype=torch.bool)
        if mask is not None:
            allowed = allowed & mask[..., start:end]
        if causal:
            allowed = allowed & (torch.arange(start, end)[None, :] <= torch.arange(t)[:, None] + (s - t))
        sc = sc.masked_fill(~allowed, float("-inf"))
        blk_lse = torch.logsumexp(sc, -1, keepdim=True)
        blk_out = torch.nan_to_num(torch.softmax(sc, -1), nan=0.0) @ v[..., start:end, :]
        if out is None:
            lse, out = blk_lse, blk_out
        else:
            new = torch.logaddexp(lse, blk_lse)
            w_old = torch.nan_to_num(torch.exp(lse - new), nan=0.0)
            w_new = torch.nan_to_num(torch.exp(blk_lse - new), nan=0.0)
            out, lse = out * w_old + blk_out * w_new, new
    return out


def tiled_query_and_key_blocks(q, k, v, block_size, mask=None, causal=False):
    """Tiles the queries too, row block by row block, each with the library's tiled loop written out."""
    t = q.shape[-2]
    rows = []
    for qs in range(0, t, block_size):
        qe = min(qs + block_size, t)
        sub_mask = None
        s = k.shape[-2]
        if mask is not None:
            sub_mask = mask[..., qs:qe, :] if mask.shape[-2] != 1 else mask
        if causal:
            c = torch.arange(s)[None, :] <= torch.arange(qs, qe)[:, None] + (s - t)
            sub_mask = c if sub_mask is None else sub_mask & c
        rows.append(tiled_with_merge(q[..., qs:qe, :], k, v, block_size, sub_mask))
    return torch.cat(rows, dim=-2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", [tiled_with_merge, tiled_softmax_blocks, tiled_query_and_key_blocks])
def test_tiled_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_tiled_attention, fn, capsys, seed=seed)
    assert points == 5.0, report


@pytest.mark.parametrize("check,fn,full", [
    (check_online_softmax_merge, merge_by_cases, 3.0),
    (check_tiled_attention, tiled_softmax_blocks, 5.0),
])
def test_hidden_cases_pass_correct_solutions(check, fn, full, capsys):
    points, report = run(check, fn, capsys, hidden=True, seed=7)
    assert points == full and "with the hidden cases drawn at grading time: all checks pass" in report


def test_the_references_earn_full_marks_apart_from_calling_the_library(capsys):
    points, report = run(check_online_softmax_merge, merge_where, capsys, seed=5)
    assert points == 3.0, report
    points, report = run(check_tiled_attention, mhsa_lib.tiled_attention, capsys, seed=5)
    assert points == 0.0 and "calls mhsa_lib" in report, report


# --------------------------------------------------------------------------- tiled mistakes


def tiled_via_sdpa_alias(q, k, v, block_size, mask=None, causal=False):
    from torch.nn.functional import scaled_dot_product_attention as fused

    return fused(q, k, v, attn_mask=mask, is_causal=causal)


@pytest.mark.parametrize("fn,words", [
    (M.tiled_no_rescale, "multiply both by exp(m_old - m_new)"),
    (M.tiled_rescale_sign_flipped, "upside down"),
    (M.tiled_max_starts_at_zero, "starts at 0 instead of -inf"),
    (M.tiled_drops_last_block, "last, shorter block is skipped"),
    (M.tiled_block_off_by_one, "off by one at the block boundaries"),
    (M.tiled_causal_per_block, "restarts in every block"),
    (M.tiled_causal_upper_left, "upper left"),
    (M.tiled_masked_row_nan, "gives NaN"),
    (M.tiled_no_scale, "no 1/√d_k scale"),
    (M.tiled_ignores_mask, "with no mask"),
    (M.tiled_inverted_mask, "True = blocked"),
    (M.tiled_softmax_per_block, "separate softmax in each block"),
    (M.tiled_scale_by_value_width, "1/√Dv"),
    (M.tiled_never_divides, "never divide by the running sum"),
    (M.tiled_full_matrix, "never forms the (T, S) matrix"),
    (M.tiled_calls_sdpa, "scaled_dot_product_attention"),
    (tiled_via_sdpa_alias, "calls torch's"),
])
@pytest.mark.parametrize("seed", [3, 4])
def test_tiled_mistakes_lose_points_and_are_named(fn, words, seed, capsys):
    points, report = run(check_tiled_attention, fn, capsys, seed=seed)
    assert points < 5.0, report
    assert words in report, report


def test_the_full_matrix_loses_only_the_memory_part(capsys):
    points, report = run(check_tiled_attention, M.tiled_full_matrix, capsys, seed=2)
    assert points == 5.0 - 0.75, report
    assert f"({C.MEMORY_T * C.MEMORY_T} entries)" in report, report


def test_every_tiled_mistake_differs_from_the_reference_on_the_checks_cases():
    """Each by-output mistake really changes some output the check looks at (else it is no test)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = C._random_case(gen, rank=3, s_greater=True)
    cases = [(q, k, v, 4, None, True), (q, k, v, 3, C._mask_for(gen, "random", q, k, empty_row=True), False)]
    cases += [(*C._large_scores(gen, -1.0), 5, None, False), (q, k, v, 4, None, False)]
    for mistake in M.TILED_MISTAKES:
        if not mistake.by_output:
            continue
        differs = any(not torch.allclose(torch.nan_to_num(mistake.fn(*c), nan=1e9).double(),
                                         C._tiled_reference(c[0], c[1], c[2], c[4], c[5]), atol=1e-3)
                      for c in cases)
        assert differs, mistake.id


def test_tiled_raising_or_wrong_shape_is_reported(capsys):
    points, report = run(check_tiled_attention, lambda q, k, v, block_size, mask=None, causal=False: q, capsys, seed=0)
    assert points < 5.0 and "(..., T, Dv)" in report, report

    def no_causal(q, k, v, block_size, mask=None):
        return F.scaled_dot_product_attention(q, k, v)

    points, report = run(check_tiled_attention, no_causal, capsys, seed=0)
    assert points == 0.0, report


@pytest.mark.parametrize("fn", [lambda q, k, v, block_size, mask=None, causal=False: None,
                                lambda q, k, v, block_size, mask=None, causal=False: torch.zeros(3)])
def test_an_output_that_is_no_answer_earns_nothing_for_its_small_memory(fn, capsys):
    points, report = run(check_tiled_attention, fn, capsys, seed=1)
    assert points == 0.0, report


def _masked(scores, mask, causal):
    t, s = scores.shape[-2:]
    if causal:
        lower_right = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
        mask = lower_right if mask is None else mask & lower_right
    return scores if mask is None else scores.masked_fill(~mask, float("-inf"))


def _full_by_einsum(q, k, v, block_size, mask=None, causal=False):
    scores = _masked(torch.einsum("...td,...sd->...ts", q, k) / math.sqrt(q.shape[-1]), mask, causal)
    return torch.nan_to_num(torch.softmax(scores, dim=-1)) @ v


def _full_by_filling(q, k, v, block_size, mask=None, causal=False):
    """The blocks' scores written into one preallocated (T, S) matrix."""
    t, s = q.shape[-2], k.shape[-2]
    scores = torch.full(q.shape[:-2] + (t, s), float("-inf"), dtype=q.dtype)
    for start in range(0, s, block_size):
        scores[..., start:start + block_size] = q @ k[..., start:start + block_size, :].transpose(-2, -1)
    scores = _masked(scores / math.sqrt(q.shape[-1]), mask, causal)
    return torch.nan_to_num(torch.softmax(scores, dim=-1)) @ v


@pytest.mark.parametrize("fn", [_full_by_einsum, _full_by_filling])
def test_the_whole_matrix_is_seen_however_it_is_made(fn, capsys):
    points, report = run(check_tiled_attention, fn, capsys, seed=1)
    assert points == 5.0 - 0.75, report
    assert f"({C.MEMORY_T * C.MEMORY_T} entries)" in report, report


def test_the_memory_part_does_not_import_dynamo_into_a_fresh_kernel():
    """A dispatch mode's first use imports torch._dynamo (seconds in a fresh kernel): the check
    measures at the torch level, so notebook 08's first tiled check stays quick."""
    import subprocess
    import sys

    code = ("import io, contextlib, sys, mhsa_lib, autograder\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    autograder.check_tiled_attention(lambda q, k, v, b, mask=None, causal=False: q)\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout
