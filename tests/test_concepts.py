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


# --------------------------------------------------------------------------- balance of the bank

import itertools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

from conftest import NOTEBOOKS, SOLUTIONS  # noqa: E402

#: How far above chance any strategy that ignores the question may score, over the whole bank.
MARGIN = 0.05
CHOICES = {qid: q for qid, q in QUESTIONS.items() if q.kind == "choice"}


def _question_cells(folder):
    """qid -> (the markdown cell's options, the answer function's docstring options, its source),
    from the notebooks in ``folder``: what a learner reads."""
    found = {}
    for path in sorted(folder.glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts = ["".join(c["source"]) for c in cells]
        for i, text in enumerate(texts):
            m = re.fullmatch(r'check_concept\("([^"]+)", (answer_\w+)\)', text.strip())
            if not m or m.group(1) not in CHOICES:
                continue
            answer_cell = next(j for j in range(i - 1, -1, -1) if f"def {m.group(2)}(" in texts[j])
            md_cell = next(j for j in range(answer_cell - 1, -1, -1)
                           if cells[j]["cell_type"] == "markdown" and re.search(r"(?m)^(- \*\*)?\(a\)", texts[j]))
            found[m.group(1)] = (_markdown_options(texts[md_cell]), _docstring_options(texts[answer_cell]),
                                 texts[answer_cell])
    return found


def _markdown_options(text):
    options, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^(?:- \*\*)?\(([a-z])\)(?:\*\*)? (.*)$", line)
        if m:
            current = m.group(1)
            options[current] = m.group(2).strip()
        elif current and line.startswith(" ") and line.strip():
            options[current] += " " + line.strip()
        else:
            current = None
    return options


def _docstring_options(source):
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"(?m)^\s+\(([a-z])\) (.*)$", source)}


SOLUTION_CELLS = _question_cells(SOLUTIONS)
LEARNER_CELLS = _question_cells(NOTEBOOKS)


def _expected_score(pick):
    """The expected share of the bank's points earned by a strategy: ``pick(qid, options)``
    returns the letters it chooses among (at random, so a tie counts its share)."""
    total = sum(q.points for q in CHOICES.values())
    earned = 0.0
    for qid, q in CHOICES.items():
        chosen = pick(qid, q.options)
        earned += q.points * (q.answer in chosen) / len(chosen)
    return earned / total


def _chance():
    return sum(q.points / len(q.options) for q in CHOICES.values()) / sum(q.points for q in CHOICES.values())


def _by_length(texts, best):
    lengths = {k: len(v) for k, v in texts.items()}
    top = best(lengths.values())
    return [k for k, n in lengths.items() if n == top]


def _wording(source):
    """qid -> letter -> the text a strategy measures: the bank's labels, or the notebook's wording."""
    if source == "labels":
        return {qid: q.options for qid, q in CHOICES.items()}
    index = 0 if source == "markdown" else 1
    return {qid: SOLUTION_CELLS[qid][index] for qid in CHOICES}


def test_every_choice_question_is_asked_in_a_notebook():
    assert set(SOLUTION_CELLS) == set(CHOICES)


@pytest.mark.parametrize("letter", "abcd")
def test_no_position_strategy_beats_chance(letter):
    score = _expected_score(lambda qid, options: [letter] if letter in options else list(options))
    assert score <= _chance() + MARGIN, f"always ({letter}) scores {score:.1%}, chance is {_chance():.1%}"


@pytest.mark.parametrize("source", ["labels", "markdown", "docstring"])
@pytest.mark.parametrize("strategy", ["longest", "shortest"])
def test_no_length_strategy_beats_chance(source, strategy):
    texts = _wording(source)
    best = max if strategy == "longest" else min
    score = _expected_score(lambda qid, options: _by_length(texts[qid], best))
    assert score <= _chance() + MARGIN, f"the {strategy} option ({source}) scores {score:.1%}, chance {_chance():.1%}"


def test_the_strategies_themselves_are_measured_right():
    """The measure above catches a biased bank: with every answer moved to (b), always-(b) wins."""
    biased = {qid: q.answer for qid, q in CHOICES.items()}
    assert _expected_score(lambda qid, options: [biased[qid]]) == 1.0
    assert abs(sum(_expected_score(lambda qid, o, x=x: [x]) for x in "abcd") - 1.0) < 1e-9
    ties = {"x": {"a": "same", "b": "same", "c": "longer one"}}
    assert _by_length(ties["x"], min) == ["a", "b"]


@pytest.mark.parametrize("qid", sorted(CHOICES))
def test_notebooks_show_the_banks_options_and_answer(qid):
    q = CHOICES[qid]
    markdown_options, doc_options, source = SOLUTION_CELLS[qid]
    assert list(markdown_options) == list(q.options) == list(doc_options)
    assert doc_options == q.options, f"{qid}: the answer function's docstring should list the bank's labels"
    m = re.search(r'### BEGIN SOLUTION\s+return "([a-z])"', source)
    assert m and m.group(1) == q.answer, f"{qid}: the solution returns {m and m.group(1)!r}, the bank says {q.answer!r}"
    # The learner's copy shows the same options (the release is made from the solutions).
    assert LEARNER_CELLS[qid][:2] == (markdown_options, doc_options)


# --------------------------------------------------------------------------- ordering: critical steps

ORDERS = {qid: q for qid, q in QUESTIONS.items() if q.kind == "order"}


@pytest.mark.parametrize("qid", sorted(ORDERS))
def test_ordering_questions_declare_critical_steps_consistent_with_the_answer(qid):
    q = ORDERS[qid]
    assert q.critical, f"{qid}: declare the precedences the notebook insists on"
    for a, b, why in q.critical:
        assert q.answer.index(a) < q.answer.index(b) and why.strip()


def _swap(order, a, b):
    return order.translate(str.maketrans({a: b, b: a}))


@pytest.mark.parametrize("qid", sorted(ORDERS))
def test_an_order_that_breaks_a_critical_step_earns_nothing(qid, capsys):
    q = ORDERS[qid]
    for a, b, why in q.critical:
        warned = _swap(q.answer, a, b)
        assert check_concept(qid, lambda: warned) == 0.0, (qid, warned)
        out = capsys.readouterr().out.replace("\n    ", " ")
        assert why[:30].lower() in out.lower() and "random cases" not in out


@pytest.mark.parametrize("qid", sorted(ORDERS))
def test_partial_credit_over_every_permutation(qid):
    """Every order: nothing if it breaks a critical step, else the share of pairs in order."""
    q = ORDERS[qid]
    pairs = [(a, b) for i, a in enumerate(q.answer) for b in q.answer[i + 1:]]
    for perm in itertools.permutations(q.answer):
        order = "".join(perm)
        rank = {c: i for i, c in enumerate(order)}
        if any(rank[a] > rank[b] for a, b, _ in q.critical):
            expected = 0.0
        else:
            n_right = sum(rank[a] < rank[b] for a, b in pairs)
            expected = min(q.points, round(q.points * n_right / len(pairs), 2))
        assert check_concept(qid, lambda: order, quiet=True) == expected, order


def test_mask_after_softmax_earns_nothing(capsys):
    """Notebook 01 warns against it in so many words: no partial credit for it."""
    q = QUESTIONS["01.steps_order"]
    mask, softmax = (next(k for k, v in q.options.items() if word in v) for word in ("−∞", "softmax"))
    right = q.answer
    warned = right.replace(mask, "").replace(softmax, softmax + mask)
    assert warned != right
    assert check_concept("01.steps_order", lambda: warned) == 0.0
    assert "before the softmax" in capsys.readouterr().out
    # An order that only moves an item the notebook does not insist on keeps partial credit.
    first, second = right[0], right[1]
    assert 0 < check_concept("01.steps_order", lambda: second + first + right[2:], quiet=True) < q.points
