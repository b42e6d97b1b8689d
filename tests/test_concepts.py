"""Checkpoint questions: the bank is consistent, right answers earn the points, wrong ones get
their own feedback, ordering earns partial credit, and bad answers are reported, not raised."""

import pytest

from autograder import check_concept
from autograder.checks.concepts import Question
from autograder.checks.questions import QUESTIONS


@pytest.mark.parametrize("qid", sorted(QUESTIONS))
def test_bank_entry_is_consistent(qid):
    q = QUESTIONS[qid]
    assert q.kind in ("choice", "order")
    assert q.explanation.strip()
    assert q.points > 0
    if q.kind == "choice":
        assert q.answer in q.options
        wrong = set(q.options) - {q.answer}
        assert wrong <= set(q.feedback), f"{qid}: every wrong option needs feedback, missing {wrong - set(q.feedback)}"
    else:
        assert sorted(q.answer) == sorted(q.options) and len(q.answer) >= 3


@pytest.mark.parametrize("qid", sorted(QUESTIONS))
def test_right_answer_full_marks_wrong_answer_less(qid, capsys):
    q = QUESTIONS[qid]
    assert check_concept(qid, lambda: q.answer) == float(q.points)
    wrong = next(o for o in q.options if o != q.answer) if q.kind == "choice" else q.answer[::-1]
    points = check_concept(qid, lambda: wrong)
    out = capsys.readouterr()
    assert points < q.points
    assert out.err == ""
    if q.kind == "choice":
        assert q.feedback[wrong][:40] in out.out.replace("\n    ", " ")


def test_order_partial_credit(capsys):
    from autograder.checks.concepts import checkpoint

    step = checkpoint("xx.order", Question(kind="order", options={"a": "first", "b": "second", "c": "third"},
                                           answer="abc", explanation="a then b then c", points=3))
    assert step.check(lambda: "abc") == 3.0
    assert step.check(lambda: ["a", "c", "b"]) == 2.0  # 2 of 3 pairs in order
    assert step.check(lambda: "cba") == 0.0
    assert "second should come before third" in capsys.readouterr().out


@pytest.mark.parametrize("answer,words", [
    (None, "answer with one letter"),
    ("ab", "answer with one letter"),
    ("z", "answer with one letter"),
])
def test_malformed_choice_answers_are_reported(answer, words, capsys):
    qid = next(k for k, q in QUESTIONS.items() if q.kind == "choice")
    assert check_concept(qid, lambda: answer) == 0.0
    assert words in capsys.readouterr().out


def test_unanswered_question_says_not_implemented(capsys):
    qid = sorted(QUESTIONS)[0]

    def answer():
        raise NotImplementedError()

    assert check_concept(qid, answer) == 0.0
    assert "not implemented yet" in capsys.readouterr().out


def test_letters_are_case_and_paren_insensitive():
    qid = next(k for k, q in QUESTIONS.items() if q.kind == "choice")
    q = QUESTIONS[qid]
    assert check_concept(qid, lambda: f"({q.answer.upper()})", quiet=True) == float(q.points)


def test_unknown_question_id_is_a_clear_error():
    with pytest.raises(ValueError, match=r"question_id: expected one of .* got 'nope'"):
        check_concept("nope", lambda: "a")
