"""The nbgrader pipeline end to end on notebook 01, in a temporary course folder:
generate_assignment, two submissions (one correct, one with a bug in a single step), autograde,
export. The correct one earns full marks; the buggy one loses exactly the points of the broken
step, and the self-check predicts nbgrader's points step by step."""

from __future__ import annotations

import csv
import shutil

import nbformat
import pytest

from autograder.grading import nbgrader_tools as nbt
from autograder.grading.selfcheck import check_notebook
from conftest import SOLUTIONS

NAME = "01_scaled_dot_product_attention"
BROKEN_ANSWER = "scaled_dot_product_attention"  # grade_id of the answer cell given a bug
BROKEN_TEST = "check_scaled_dot_product_attention"  # grade_id of its test cell
# Softmax over the wrong axis (the queries): the classic bug. Nothing graded later depends on
# this function, so only its own step may lose points.
BUGGY_BODY = '''\
d_k = q.shape[-1]
scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T, S)
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf"))
weights = softmax(scores, dim=-2)  # bug: each column sums to 1 instead of each row
return weights @ v, weights
'''
SEED = "20240611"  # the grading seed: hidden cases are the same for nbgrader and the self-check


def submission(learner, source, replace=None):
    """The learner release with every stub filled in with the source's solution code of the same
    grade_id (or with ``replace[grade_id]``)."""
    replace = replace or {}
    regions = {nbt.grade_id(c): nbt.solution_regions(nbt.cell_source(c)) for c in source.cells if nbt.is_solution(c)}
    nb = nbformat.from_dict(learner)
    filled = 0
    for cell in nb.cells:
        if nbt.is_solution(cell):
            gid = nbt.grade_id(cell)
            code = [replace[gid]] if gid in replace else regions[gid]
            cell.source = nbt.fill_stubs(nbt.cell_source(cell), code)
            filled += 1
    assert filled == len(regions)
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    nbt.write_course_config(root, execute_timeout=120)
    src_path = root / "source" / NAME / f"{NAME}.ipynb"
    src_path.parent.mkdir(parents=True)
    shutil.copy(SOLUTIONS / f"{NAME}.ipynb", src_path)
    nbt.run_nbgrader(["generate_assignment", NAME, "--force"], root)
    assert (root / "gradebook.db").exists()

    source = nbformat.read(str(src_path), as_version=4)
    learner = nbformat.read(str(root / "release" / NAME / f"{NAME}.ipynb"), as_version=4)
    assert BROKEN_ANSWER in {nbt.grade_id(c) for c in learner.cells if nbt.is_solution(c)}
    subs = {
        "alice": submission(learner, source),
        "bob": submission(learner, source, replace={BROKEN_ANSWER: BUGGY_BODY}),
    }
    for student, nb in subs.items():
        path = root / "submitted" / student / NAME / f"{NAME}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, str(path))

    env = {"MHSA_GRADING_SEED": SEED}
    nbt.run_nbgrader(["autograde", NAME, "--force"], root, env=env, timeout=300)
    nbt.run_nbgrader(["export"], root)
    with open(root / "grades.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}

    from nbgrader.api import Gradebook

    cells = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for student in subs:
            snb = gb.find_submission_notebook(NAME, NAME, student)
            cells[student] = {g.name: (g.score, g.max_score) for g in snb.grades}
    return {"root": root, "rows": rows, "cells": cells, "learner": learner, "source": source}


@pytest.mark.slow
def test_release_has_stubs_and_no_solutions(graded):
    learner = graded["learner"]
    text = nbformat.writes(learner)
    for marker in nbt.SOURCE_MARKERS:
        assert marker not in text
    assert all("YOUR CODE HERE" in nbt.cell_source(c) for c in learner.cells if nbt.is_solution(c))


@pytest.mark.slow
def test_correct_submission_gets_full_marks(graded):
    row = graded["rows"]["alice"]
    assert float(row["max_score"]) > 0
    assert float(row["raw_score"]) == float(row["max_score"])
    assert float(row["score"]) == float(row["max_score"])
    assert all(score == top for score, top in graded["cells"]["alice"].values())


@pytest.mark.slow
def test_buggy_submission_loses_exactly_its_broken_step(graded):
    row = graded["rows"]["bob"]
    bob = graded["cells"]["bob"]
    got, top = bob[BROKEN_TEST]
    assert got < top, f"the bug in {BROKEN_ANSWER} was not caught ({got}/{top})"
    others = {k: v for k, v in bob.items() if k != BROKEN_TEST}
    assert others and all(score == top_ for score, top_ in others.values()), others
    assert float(row["max_score"]) == float(graded["rows"]["alice"]["max_score"])
    assert float(row["score"]) == pytest.approx(float(row["max_score"]) - (top - got))


@pytest.mark.slow
def test_self_check_predicts_nbgrader_step_by_step(graded, monkeypatch):
    monkeypatch.setenv("MHSA_GRADING_SEED", SEED)
    path = graded["root"] / "submitted" / "bob" / NAME / f"{NAME}.ipynb"
    report = check_notebook(path, cell_timeout=120, total_timeout=600)
    predicted = {s.id: (round(s.points, 6), round(s.max_points, 6)) for s in report.steps}
    actual = {k: (round(a, 6), round(b, 6)) for k, (a, b) in graded["cells"]["bob"].items()}
    assert predicted == actual
    assert report.score == pytest.approx(float(graded["rows"]["bob"]["score"]))
