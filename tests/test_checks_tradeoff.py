"""Notebook 03's trade-off table check (head_tradeoff): correct solutions written several ways earn
full marks; every known mistake loses points and is named; an unknown mistake gets the formula of
the wrong column; shortcuts, hard-coded answers and broken submissions are reported, never raised."""

import math

import pytest
import torch
from conftest import run_check
from torch import nn

import mhsa_lib
from autograder import check_head_tradeoff, fallback
from autograder.checks import tradeoff as C
from autograder.mistakes import tradeoff as M

run = run_check
POINTS = C.HEAD_TRADEOFF_POINTS


# --------------------------------------------------------------------------- correct, written differently


def tradeoff_plain(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """Correct: the closed forms, written out."""
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    table = []
    for h in n_heads_options:
        if d_model % h != 0:
            raise ValueError(f"n_heads={h} does not divide d_model={d_model}")
        dh = d_model // h
        table.append({"n_heads": h, "d_head": dh, "params": 4 * (d_model * d_model + d_model),
                      "flops": 8 * seq_len * d_model**2 + 4 * seq_len**2 * d_model,
                      "score_rank_bound": min(dh, seq_len),
                      "kv_cache_bytes": 2 * batch * seq_len * d_model * bytes_per_value})
    return table


def tradeoff_per_matmul(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """Correct: a helper per product (m, k) @ (k, n), per head for the core; divmod to check; an extra key
    and a tuple of rows."""
    def mm(m, k, n):
        return 2 * m * k * n

    for name, n in (("seq_len", seq_len), ("batch", batch), ("bytes_per_value", bytes_per_value)):
        if n < 1:
            raise ValueError(f"{name}: expected >= 1, got {n}")
    rows = []
    for h in n_heads_options:
        dh, rest = divmod(d_model, h)
        if rest:
            raise ValueError(f"n_heads_options: {h} heads leave {rest} of d_model={d_model} features over")
        core = h * (mm(seq_len, dh, seq_len) + mm(seq_len, seq_len, dh))
        rows.append(dict(n_heads=h, d_head=dh, params=4 * (d_model + 1) * d_model,
                         flops=4 * mm(seq_len, d_model, d_model) + core,
                         score_rank_bound=dh if dh < seq_len else seq_len,
                         kv_cache_bytes=batch * seq_len * h * dh * 2 * bytes_per_value,
                         per_head_core=core // h))
    return tuple(rows)


def tradeoff_measured(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """Correct: parameters counted on real nn.Linear layers (small D only in these tests), the KV cache
    as the numel of the (B, H, T, Dh) key and value tensors, math.prod."""
    if not seq_len > 0:
        raise ValueError("seq_len: expected a positive int, got %r" % (seq_len,))
    bad = [h for h in n_heads_options if d_model % h]
    if bad:
        raise ValueError(f"n_heads_options: {bad} do not divide d_model={d_model}")
    linears = nn.ModuleList(nn.Linear(d_model, d_model, device="meta") for _ in range(4))
    params = sum(p.numel() for p in linears.parameters())
    out = []
    for h in n_heads_options:
        shape = (batch, h, seq_len, d_model // h)
        out.append({"n_heads": h, "d_head": shape[-1], "params": params,
                    "flops": 2 * (4 * seq_len * d_model * d_model + 2 * h * seq_len * seq_len * shape[-1]),
                    "score_rank_bound": min(shape[-1], seq_len),
                    "kv_cache_bytes": 2 * math.prod(shape) * bytes_per_value})
    return out


@pytest.mark.parametrize("fn", [tradeoff_plain, tradeoff_per_matmul, tradeoff_measured])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_head_tradeoff, fn, capsys, seed=seed)
    assert points == POINTS, report
    assert "All checks pass" in report


def test_hidden_cases(capsys):
    points, report = run(check_head_tradeoff, tradeoff_per_matmul, capsys, hidden=True, seed=5)
    assert points == POINTS and "all checks pass" in report, report


def test_random_cases_put_t_between_the_head_widths_and_the_batch_above_one():
    """Otherwise a rank bound without its cap T, or a count that ignores the batch, would pass."""
    for seed in range(40):
        d, heads, t, batch, nbytes = C._case(torch.Generator().manual_seed(seed), seed)
        widths = [d // h for h in heads]
        assert all(d % h == 0 for h in heads) and heads.count(1) == 1 and len(set(heads)) == 5
        assert min(widths) < t < max(widths), (d, heads, t)
        assert batch > 1 and nbytes in (1, 2, 4)


# --------------------------------------------------------------------------- mistakes


_PUBLIC = mhsa_lib.head_tradeoff(*C.TRADEOFF_PUBLIC_ARGS)


def tradeoff_hard_coded(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    if d_model % max(n_heads_options) or seq_len < 1:
        raise ValueError(f"n_heads_options or seq_len: got {n_heads_options}, {seq_len}")
    return [dict(r) for r in _PUBLIC]


def tradeoff_via_library(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    return mhsa_lib.head_tradeoff(d_model, n_heads_options, seq_len, batch, bytes_per_value)


def tradeoff_floats(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    return [{k: float(v) for k, v in row.items()} for row in tradeoff_plain(d_model, n_heads_options, seq_len,
                                                                            batch, bytes_per_value)]


def tradeoff_assert_validation(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    assert seq_len > 0 and all(d_model % h == 0 for h in n_heads_options), "bad sizes"
    return tradeoff_plain(d_model, n_heads_options, seq_len, batch, bytes_per_value)


def tradeoff_message_without_h(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    if any(d_model % h for h in n_heads_options):
        raise ValueError("d_model must be divisible by the number of heads")
    return tradeoff_plain(d_model, n_heads_options, seq_len, batch, bytes_per_value)


def tradeoff_sorted_rows(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    return tradeoff_plain(d_model, sorted(n_heads_options), seq_len, batch, bytes_per_value)


def tradeoff_dict_by_h(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    return {row["n_heads"]: row for row in tradeoff_plain(d_model, n_heads_options, seq_len, batch, bytes_per_value)}


def tradeoff_flops_core_quadratic_in_d(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """An unknown mistake: the core counted as 4·T·D²."""
    rows = tradeoff_plain(d_model, n_heads_options, seq_len, batch, bytes_per_value)
    for r in rows:
        r["flops"] = 8 * seq_len * d_model**2 + 4 * seq_len * d_model**2
    return rows


@pytest.mark.parametrize("fn,words", [(m.fn, m.advice[:40]) for m in M.TRADEOFF_MISTAKES] + [
    (tradeoff_hard_coded, "hard-coded"),
    (tradeoff_via_library, "calls mhsa_lib (head_tradeoff"),
    (tradeoff_floats, "returned n_heads: float"),
    (tradeoff_assert_validation, "expected a ValueError"),
    (tradeoff_message_without_h, "should name the bad number of heads, 7"),
    (tradeoff_sorted_rows, "in the order given"),
    (tradeoff_dict_by_h, "returned a dict, expected a list"),
    (tradeoff_flops_core_quadratic_in_d, "your flops values match no mistake the check knows"),
])
@pytest.mark.parametrize("seed", [3, 4])
def test_mistakes_lose_points_and_are_named(fn, words, seed, capsys):
    points, report = run(check_head_tradeoff, fn, capsys, seed=seed)
    assert points < POINTS, report
    assert words in report, report


def test_the_unknown_mistake_gets_the_formula(capsys):
    _, report = run(check_head_tradeoff, tradeoff_flops_core_quadratic_in_d, capsys, seed=0)
    assert C.FORMULAS["flops"] in report, report


def test_two_mistakes_at_once_are_both_named(capsys):
    def two(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
        rows = M.tradeoff_no_biases(d_model, n_heads_options, seq_len, batch, bytes_per_value)
        for row, other in zip(rows, M.tradeoff_kv_keys_only(d_model, n_heads_options, seq_len, batch,
                                                             bytes_per_value)):
            row["kv_cache_bytes"] = other["kv_cache_bytes"]
        return rows

    points, report = run(check_head_tradeoff, two, capsys, seed=0)
    assert points < POINTS
    assert "leave the biases out" in report and "count the keys only" in report, report


def test_every_mistake_in_the_module_is_tested_above():
    marks = [m for m in test_mistakes_lose_points_and_are_named.pytestmark
             if m.name == "parametrize" and "," in m.args[0]]
    tested = {(case.values if hasattr(case, "values") else case)[0] for case in marks[0].args[1]}
    for mistake in M.TRADEOFF_MISTAKES:
        assert mistake.fn in tested, mistake.id


def test_at_least_three_mistakes_are_named_by_their_outputs():
    assert len([m for m in M.TRADEOFF_MISTAKES if m.by_output]) >= 3
    assert len({m.id for m in M.TRADEOFF_MISTAKES}) == len(M.TRADEOFF_MISTAKES)


# --------------------------------------------------------------------------- robustness


def _not_yet(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    raise NotImplementedError()


@pytest.mark.parametrize("fn,words", [
    (_not_yet, "not implemented yet"),
    (42, "expected a function"),
    (lambda d, hs, *a, **k: list(hs), "row 0 is of type int, expected a dict"),
    (lambda *a, **k: [1, 2, 3], "returned 3 rows, expected 5"),
    (lambda *a, **k: None, "returned a NoneType"),
])
def test_broken_submissions_are_reported_not_raised(fn, words, capsys):
    points, report = run(check_head_tradeoff, fn, capsys, seed=0)
    assert points == 0.0
    assert words in report, report


def test_the_check_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_head_tradeoff(tradeoff_plain, seed=0, quiet=True)
    assert torch.equal(torch.rand(3), expected)


def test_fallback_uses_the_learners_answer_only_when_it_passes(capsys):
    assert fallback("head_tradeoff", tradeoff_plain) is tradeoff_plain
    assert fallback("head_tradeoff", M.tradeoff_no_biases) is mhsa_lib.head_tradeoff
    assert "mhsa_lib.head_tradeoff instead" in capsys.readouterr().out
