"""Notebook 03's cross-attention section against its executed solution: every number its text
states is what the cells print (the (T, S) weights' shape, rows summing to 1, zero weight on the
padded memory positions, the first query reading the last source position, both masks of the
decoder block at work), the points the table promises, and the time the notebook takes."""

from __future__ import annotations

import re
import time

import nbformat
import pytest
from conftest import SOLUTIONS, executed_notebook

from autograder.checks import cross as C
from autograder.checks.questions import QUESTIONS

NAME = "03_concat_and_output_projection"
PATH = SOLUTIONS / f"{NAME}.ipynb"


@pytest.fixture(scope="module")
def executed():
    start = time.perf_counter()
    report = executed_notebook(PATH)
    return report, time.perf_counter() - start


def _printed(report) -> str:
    return "".join(o.get("text", "") for cell in report.executed.cells for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream")


def _text() -> str:
    cells = nbformat.read(str(PATH), as_version=4).cells
    return " ".join(" ".join(c.source for c in cells if c.cell_type == "markdown").split())


def test_the_text_states_the_numbers_asserted_below():
    """If the wording changes, the assertions below must change with it."""
    text = _text()
    for phrase in ("two decoder sequences of `T = 4` positions attends to two memories of `S = 6` positions",
                   "the second memory has only 4 real positions", "4 rows (the queries) by 6 columns",
                   "Every row sums to 1, the two padded columns of the second sequence are exactly 0",
                   "the first target position reads the last source position",
                   "| `CrossAttention` | queries from `x` `(B, T, D)`",
                   "| 5 |", "| eight checkpoints |", "weights and masks | 9 |",
                   "The check uses `T ≠ S` in every case"):
        assert phrase in text, phrase


def test_the_text_describes_the_check_and_questions_as_they_are():
    """The points and every option of the two checkpoints, as the notebook words them."""
    assert C.CROSS_POINTS == 5
    plain = _text().replace("`", "").replace("**", "")
    for qid in ("03.cross_weights_shape", "03.cross_no_causal"):
        for letter, label in QUESTIONS[qid].options.items():
            assert f"({letter}) {label}" in plain, (qid, letter)


@pytest.mark.slow
def test_the_cross_attention_picture_is_as_stated(executed):
    printed = _printed(executed[0])
    assert "out (2, 4, 16) | weights (2, 4, 4, 6)" in printed, printed[-2000:]
    assert "rows sum to 1: True" in printed
    assert "weight on the padded memory positions: 0.000" in printed
    smallest = float(re.search(r"smallest weight of query 0 on the last real memory position: ([\d.]+) > 0",
                               printed).group(1))
    assert smallest > 0


@pytest.mark.slow
def test_the_decoder_block_masks_are_as_stated(executed):
    printed = _printed(executed[0])
    assert "decoder block: (2, 4, 16) + memory (2, 6, 16) -> (2, 4, 16)" in printed
    assert "outputs of targets 0-1 unchanged when targets 2-3 change: True" in printed
    assert "outputs unchanged when the memory's padding changes: True" in printed


@pytest.mark.slow
def test_full_marks_as_the_table_says_and_within_a_minute(executed):
    report, seconds = executed
    assert report.errors == [] and report.stopped_early is None
    points = {s.id: s.max_points for s in report.steps}
    assert points["check_cross_attention"] == 5
    assert points["checkpoint_cross_weights_shape"] == points["checkpoint_cross_no_causal"] == 1
    assert sum(p for k, p in points.items() if k.startswith("checkpoint_")) == 9
    assert report.score == report.max_score
    assert seconds < 60, f"notebook 03 took {seconds:.0f} s; it must run in at most 60 s"
