"""The notebook-00 warm-up check (pairwise_scores) and the fallback helper."""

import pytest
import torch
from conftest import run_check

import mhsa_lib
from autograder import check_pairwise_scores, check_softmax, fallback
from autograder.checks import warmups as C
from autograder.mistakes import warmups as M

run = run_check


@pytest.fixture(autouse=True)
def _one_thread():
    """The checks' tensors are tiny: one thread each, so a busy machine's other processes cannot
    slow them down by contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# --------------------------------------------------------------------------- diagnoses of variants
# Learner-style wrong implementations (written as learners write them, not by the generator):
# each loses points and is named; correct ones get no diagnosis.


def ps_k_dot_T(q, k):
    return q @ k.T


def ps_mm(q, k):
    return torch.mm(q, k.t())


def ps_scaled(q, k):
    return torch.einsum("btd,bsd->bts", q, k) / q.size(-1) ** 0.5


def ps_self(q, k):
    return torch.bmm(q, q.transpose(1, 2))


def ps_transpose_0_1(q, k):
    return torch.matmul(q, k.transpose(0, 1))


_PUBLIC_ANSWER = (C.PAIRWISE_PUBLIC_Q @ C.PAIRWISE_PUBLIC_K.transpose(-2, -1))


def ps_hard_coded_on_values(q, k):
    if torch.equal(q, C.PAIRWISE_PUBLIC_Q) and torch.equal(k, C.PAIRWISE_PUBLIC_K):
        return _PUBLIC_ANSWER.clone()
    return q.sum(-1, keepdim=True) * k.sum(-1).unsqueeze(1)  # whatever else


@pytest.mark.parametrize("fn,words,never", [
    (ps_k_dot_T, "`k.T` on a (B, S, D) tensor reverses all its axes, giving (D, S, B)", "raised RuntimeError"),
    (ps_mm, "`torch.mm` and `.t()` take only 2-D matrices", "raised RuntimeError"),
    (ps_scaled, "divide by √D", "hard-coded"),
    (ps_self, "its own transpose", "hard-coded"),
    (ps_transpose_0_1, "`k.transpose(0, 1)` on a (B, S, D) tensor gives (S, B, D)", "raised RuntimeError"),
    (ps_hard_coded_on_values, "hard-coded", "K Qᵀ"),
])
@pytest.mark.parametrize("seed", [0, 5])
def test_variants_are_named(fn, words, never, seed, capsys):
    points, report = run(check_pairwise_scores, fn, capsys, seed=seed)
    assert points < 2.0, report
    assert words in report, report
    assert never not in report.partition("Diagnosis:")[2], report


@pytest.mark.parametrize("fn", [lambda q, k: torch.einsum("btd,bsd->bts", q, k), lambda q, k: q.matmul(k.mT)])
def test_correct_solutions_get_no_diagnosis(fn, capsys):
    points, report = run(check_pairwise_scores, fn, capsys, seed=3)
    assert points == 2.0 and "Diagnosis" not in report, report


def test_shape_messages_are_read_in_course_letters():
    from autograder import variants_attention as V

    letters = V.Letters({"B": 2, "T": 3, "S": 5, "D": 4})
    q, k = torch.zeros(2, 3, 4), torch.zeros(2, 5, 4)
    text = V.explain_error("raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (3x4 and 5x4) (line 2: x)",
                           {"q": q, "k": k}, letters, [], {}, {})
    assert text.startswith("with q (B, T, D), k (B, S, D) (B=2, T=3, S=5, D=4): ") and "(T, D)" in text, text
    assert "the last size of the left (D) must equal the first size of the right (S)" in text
    text = V.explain_error("raised IndexError: Dimension out of range (expected to be in range of [-2, 1], but got 2)",
                           {"q": q, "k": k}, letters, [], {}, {})
    assert "axis 2 of a tensor that has only 2 axes" in text, text
    assert V.explain_error("raised ZeroDivisionError: division by zero (line 1)", {"q": q}, letters, [], {}, {}) is None
    assert V.explain_error("not implemented yet", {"q": q}, letters, [], {}, {}) is None
    assert V.Letters({"T": 3, "Dv": 3}).shape((3, 7)) == "(3, 7)"  # a size two axes share keeps its number


def test_diagnosis_timing(capsys):
    """Prints how long the check takes on wrong answers, diagnosis search included (single thread;
    read with -s). No assertion on time: the numbers depend on the machine."""
    import time

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lines = []
        for fn in (ps_k_dot_T, ps_scaled, ps_hard_coded_on_values, lambda q, k: q[..., :1] * 0):
            start = time.perf_counter()
            check_pairwise_scores.step.run(fn, seed=1)
            lines.append(f"pairwise_scores {getattr(fn, '__name__', '?'):<28} {1000 * (time.perf_counter() - start):7.1f} ms")
    finally:
        torch.set_num_threads(threads)
    with capsys.disabled():
        print("\n" + "\n".join(lines))


# --------------------------------------------------------------------------- answers as learners write them


@pytest.mark.parametrize("answer, full, words", [
    (lambda q, k: k @ q.transpose(-2, -1), False, "you computed K Qᵀ"),
    (lambda q, k: torch.einsum("btd,bsd->bts", q, k), True, ""),
    (lambda q, k: torch.bmm(q, k.permute(0, 2, 1)), True, ""),
], ids=["k-at-q-transposed", "einsum", "bmm-permute"])
def test_pairwise_scores_learner_answers(answer, full, words, capsys):
    points, out = run(check_pairwise_scores, answer, capsys, hidden=True, seed=11)
    if full:
        assert points == check_pairwise_scores.step.points, out
    else:
        assert points < check_pairwise_scores.step.points and words in out, out
