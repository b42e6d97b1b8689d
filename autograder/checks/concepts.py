"""Conceptual checkpoints: multiple choice and ordering questions, graded with feedback per option.

The questions' wording lives in the notebooks; the bank in :mod:`autograder.checks.questions`
holds, for each question id, the options' short labels, the answer, and what to tell a learner
who picks each wrong option (the checkpoint version of naming the mistake).

A learner answers by writing a small function that returns the answer (a letter, or a list of
letters for an ordering), so an unanswered question raises ``NotImplementedError`` inside the
check rather than stopping the notebook.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, List, Optional

from ..frame import CheckResult, LearnerError, call
from ..frame.registry import Step, get, register
from .questions import QUESTIONS, Question

NOTEBOOKS = {
    "00": "00_orientation", "01": "01_scaled_dot_product_attention", "02": "02_multiple_heads",
    "03": "03_concat_and_output_projection", "04": "04_transformer_block",
    "05": "05_kv_cache_and_head_sharing", "06": "06_debugging_transformer_blocks",
    "07": "07_capstone_tiny_transformer", "08": "08_attention_without_the_matrix",
}


def check_concept(question_id: str, fn: Callable[[], object], *, quiet: bool = False, **_ignored) -> float:
    """Grade the answer that ``fn()`` returns to checkpoint ``question_id``; print feedback."""
    if question_id not in QUESTIONS:
        raise ValueError(f"question_id: expected one of {sorted(QUESTIONS)}, got {question_id!r}")
    return get(question_id).check(fn, quiet=quiet)


def _grade(q: Question, fn: Any, result: CheckResult, gen: Any, hidden: bool) -> None:
    result.seed = None  # a checkpoint draws no random cases: nothing to see again with a seed
    try:
        given = call(fn)
    except LearnerError as e:
        result.zero_reason = f"your answer function {e}"
        return
    if q.kind == "choice":
        _grade_choice(q, given, result)
    else:
        _grade_order(q, given, result)


def _normalise_letter(given: object) -> Optional[str]:
    if isinstance(given, str) and len(given.strip().strip("()").strip()) == 1:
        return given.strip().strip("()").strip().lower()
    return None


def _grade_choice(q: Question, given: object, result: CheckResult) -> None:
    letter = _normalise_letter(given)
    if letter is None or letter not in q.options:
        result.zero_reason = (
            f"answer with one letter out of {', '.join(sorted(q.options))}; you returned {given!r}"
        )
        return
    right = letter == q.answer
    result.add(f"you chose ({letter}) {q.options[letter]}", 1.0, right)
    if right:
        result.note(q.explanation)
    else:
        result.diagnose(q.feedback.get(letter, "not quite: reread the section above and try again."))


def _grade_order(q: Question, given: object, result: CheckResult) -> None:
    if isinstance(given, str):
        seq: List[str] = [c.lower() for c in given if not c.isspace() and c not in ",-> "]
    elif isinstance(given, (list, tuple)):
        seq = [str(c).strip().lower() for c in given]
    else:
        seq = []
    if sorted(seq) != sorted(q.answer):
        result.zero_reason = (
            f"answer with each of the letters {', '.join(sorted(q.options))} exactly once, "
            f"in order (e.g. \"{''.join(sorted(q.options))}\"); you returned {given!r}"
        )
        return
    rank = {c: i for i, c in enumerate(seq)}
    pairs = [(a, b) for i, a in enumerate(q.answer) for b in q.answer[i + 1 :]]
    wrong = [(a, b) for a, b in pairs if rank[a] > rank[b]]
    n_right = len(pairs) - len(wrong)
    # Partial credit: the share of pairs in the right relative order, for an order that keeps
    # every critical precedence; one that breaks any of them earns nothing.
    broken = [(a, b, why) for a, b, why in q.critical if rank[a] > rank[b]]
    if n_right:
        result.add(f"{n_right} of {len(pairs)} pairs of steps in the right order", n_right, True)
    if wrong:
        listed = "; ".join(f"{q.options[a]} should come before {q.options[b]}" for a, b in wrong)
        result.add(f"{len(wrong)} of {len(pairs)} pairs the wrong way round", len(wrong), False, listed)
    else:
        result.note(q.explanation)
    if broken:
        a, b, _ = broken[0]
        result.zero_reason = (f"\"{q.options[b]}\" comes before \"{q.options[a]}\": this order breaks a step the "
                              "notebook insists on, so it earns no partial credit")
        for _, _, why in broken:
            result.diagnose(why[0].upper() + why[1:] + ".")


def checkpoint(question_id: str, q: Question) -> Step:
    """The step that grades checkpoint ``question_id`` (not registered: see below)."""
    return Step(name=question_id, title=f"checkpoint {question_id}", points=q.points, body=partial(_grade, q),
                notebook=NOTEBOOKS.get(question_id[:2], ""), home=None, kind="checkpoint",
                check_name="check_concept", check_module=__name__)


for _qid, _q in QUESTIONS.items():
    register(checkpoint(_qid, _q))
