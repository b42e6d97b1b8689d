"""The notebook-00 warm-up check (pairwise_scores) and the fallback helper."""

import pytest
import torch
from conftest import run_check

import mhsa_lib
from autograder import check_pairwise_scores, check_softmax, fallback
from autograder.mistakes import warmups as M

run = run_check


@pytest.mark.parametrize("fn", [
    lambda q, k: q @ k.transpose(-2, -1),
    lambda q, k: torch.einsum("btd,bsd->bts", q, k),
    lambda q, k: torch.bmm(q, k.mT),
    lambda q, k: (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1),  # broadcasting, no matmul
])
@pytest.mark.parametrize("seed", [0, 1])
def test_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_pairwise_scores, fn, capsys, seed=seed)
    assert points == 2.0, report


@pytest.mark.parametrize("fn,words", [
    (M.pairwise_scores_swapped, "K Qᵀ"),
    (M.pairwise_scores_elementwise, "elementwise"),
    (M.pairwise_scores_hard_coded, "hard-coded"),
    (lambda q, k: q @ k, "Transpose the last two axes of k"),
])
def test_mistakes_lose_points_and_are_named(fn, words, capsys):
    points, report = run(check_pairwise_scores, fn, capsys, seed=0)
    assert points < 2.0, report
    assert words in report, report


def test_fallback_uses_the_learners_function_once_it_passes(capsys):
    def mine(q, k):
        return torch.einsum("btd,bsd->bts", q, k)
    assert fallback("pairwise_scores", mine) is mine
    assert capsys.readouterr().out == ""


def test_fallback_uses_the_reference_and_says_so_when_the_step_fails(capsys):
    def unfinished(x, dim=-1):
        raise NotImplementedError()

    chosen = fallback("softmax", unfinished)
    out = capsys.readouterr().out
    assert chosen is mhsa_lib.softmax
    assert "does not pass its check yet" in out and "mhsa_lib.softmax" in out


def test_fallback_rechecks_a_redefined_function(capsys):
    def softmax(x, dim=-1):
        raise NotImplementedError()

    check_softmax(softmax, quiet=True)
    assert fallback("softmax", softmax) is mhsa_lib.softmax

    def softmax(x, dim=-1):  # the learner fixes it and reruns the cell
        m = x.amax(dim, keepdim=True)
        e = torch.exp(x - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
        total = e.sum(dim, keepdim=True)
        return e / torch.where(total > 0, total, torch.ones_like(total))

    assert fallback("softmax", softmax) is softmax


def test_fallback_rejects_an_unknown_step():
    with pytest.raises(ValueError, match=r"step: expected one of .*got 'sofmax'"):
        fallback("sofmax", lambda x: x)
