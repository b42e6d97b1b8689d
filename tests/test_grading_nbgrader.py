"""The nbgrader pipeline end to end, in a temporary course folder, for every notebook with graded
code: generate_assignment, two submissions (one correct, one with a bug in a single step),
autograde, export. The correct one earns full marks on every autograded step; the buggy one loses
points on exactly its broken step (the checks isolate later steps from it), and the self-check
predicts nbgrader's points step by step."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass

import nbformat
import pytest
from conftest import SOLUTIONS

from autograder.grading import nbgrader_tools as nbt
from autograder.grading.selfcheck import check_notebook


@dataclass(frozen=True)
class Case:
    name: str  # the assignment (notebook stem)
    broken_answer: str  # grade_id of the answer cell given a bug
    broken_test: str  # grade_id of its test cell
    old: str  # a line of the solution code ...
    new: str  # ... and what the bug makes of it


CASES = [
    # Softmax over the wrong axis (the queries): the classic bug.
    Case("01_scaled_dot_product_attention", "scaled_dot_product_attention", "check_scaled_dot_product_attention",
         "softmax(scores, dim=-1)", "softmax(scores, dim=-2)"),
    # Split without the transpose ; attention_heads, which calls it, must not pay.
    Case("02_multiple_heads", "split_heads", "check_split_heads",
         "return x.transpose(1, 2)", "return x.reshape(batch, num_heads, length, head_dim)"),
    # Merge without transposing back; MultiHeadAttention, which calls it, must not pay.
    Case("03_concat_and_output_projection", "merge_heads", "check_merge_heads",
         "x = x.transpose(1, 2)", "pass"),
    # The unbiased variance; the block, which uses LayerNorm, must not pay.
    Case("04_transformer_block", "LayerNorm", "check_layer_norm", "unbiased=False", "unbiased=True"),
    # repeat instead of repeat_interleave.
    Case("05_kv_cache_and_head_sharing", "repeat_kv", "check_repeat_kv",
         "x = x[:, :, None].expand(batch, kv_heads, n_rep, length, head_dim)",
         "x = x[:, None].expand(batch, n_rep, kv_heads, length, head_dim)"),
    # The repaired merge of incident 2 still forgets the transpose.
    Case("06_debugging_transformer_blocks", "fixed_attention", "check_fixed_attention",
         "return x.transpose(1, 2).reshape(b, t, h * dh)", "return x.reshape(b, t, h * dh)"),
    # Sine and cosine swapped in the positional encoding; the capstone model must not pay.
    Case("07_capstone_tiny_transformer", "sinusoidal_positional_encoding",
         "check_sinusoidal_positional_encoding",
         "pe[:, 0::2] = torch.sin(angle)  # even features", "pe[:, 0::2] = torch.cos(angle)"),
]
CASES = [c for c in CASES if (SOLUTIONS / f"{c.name}.ipynb").exists()]
SEED = "20240611"  # the grading seed: hidden cases are the same for nbgrader and the self-check


def submission(learner, source, bug=None):
    """The learner release with every stub filled in with the source's solution code of the same
    grade_id; ``bug`` (a Case) changes one line of one answer."""
    regions = {nbt.grade_id(c): nbt.solution_regions(nbt.cell_source(c)) for c in source.cells if nbt.is_solution(c)}
    nb = nbformat.from_dict(learner)
    filled = 0
    for cell in nb.cells:
        if nbt.is_solution(cell) and cell.cell_type == "code":
            gid = nbt.grade_id(cell)
            code = regions[gid]
            if bug is not None and gid == bug.broken_answer:
                assert any(bug.old in part for part in code), f"{bug.old!r} is not in {gid}'s solution"
                code = [part.replace(bug.old, bug.new) for part in code]
            cell.source = nbt.fill_stubs(nbt.cell_source(cell), code)
            filled += 1
        elif nbt.is_solution(cell):  # a written answer, for a person to grade
            cell.source = "An answer written by the student."
    assert filled == sum(1 for c in source.cells if nbt.is_solution(c) and c.cell_type == "code")
    return nb


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name[:2])
def graded(request, tmp_path_factory):
    case = request.param
    name = case.name
    root = tmp_path_factory.mktemp("course")
    nbt.write_course_config(root, execute_timeout=120)
    src_path = root / "source" / name / f"{name}.ipynb"
    src_path.parent.mkdir(parents=True)
    shutil.copy(SOLUTIONS / f"{name}.ipynb", src_path)
    nbt.run_nbgrader(["generate_assignment", name, "--force"], root)
    assert (root / "gradebook.db").exists()

    source = nbformat.read(str(src_path), as_version=4)
    learner = nbformat.read(str(root / "release" / name / f"{name}.ipynb"), as_version=4)
    assert case.broken_answer in {nbt.grade_id(c) for c in learner.cells if nbt.is_solution(c)}
    subs = {"alice": submission(learner, source), "bob": submission(learner, source, bug=case)}
    for student, nb in subs.items():
        path = root / "submitted" / student / name / f"{name}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, str(path))

    env = {"MHSA_GRADING_SEED": SEED}
    nbt.run_nbgrader(["autograde", name, "--force"], root, env=env, timeout=300)
    nbt.run_nbgrader(["export"], root)
    with open(root / "grades.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}

    from nbgrader.api import Gradebook

    cells, manual = {}, set()
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for student in subs:
            snb = gb.find_submission_notebook(name, name, student)
            cells[student] = {g.name: (g.score, g.max_score) for g in snb.grades if g.auto_score is not None}
            manual |= {g.name for g in snb.grades if g.auto_score is None}
    return {"case": case, "root": root, "rows": rows, "cells": cells, "manual": manual,
            "learner": learner, "source": source}


@pytest.mark.slow
def test_release_has_stubs_and_no_solutions(graded):
    learner = graded["learner"]
    text = nbformat.writes(learner)
    for marker in nbt.SOURCE_MARKERS:
        assert marker not in text
    assert all("YOUR CODE HERE" in nbt.cell_source(c) for c in learner.cells
               if nbt.is_solution(c) and c.cell_type == "code")


@pytest.mark.slow
def test_correct_submission_gets_full_marks(graded):
    alice = graded["cells"]["alice"]
    assert alice and all(score == top for score, top in alice.values()), alice
    row = graded["rows"]["alice"]
    assert float(row["max_score"]) >= sum(top for _, top in alice.values())
    if not graded["manual"]:  # written answers wait for a person
        assert float(row["score"]) == float(row["max_score"])


@pytest.mark.slow
def test_buggy_submission_loses_points_on_its_broken_step_only(graded):
    case, bob = graded["case"], graded["cells"]["bob"]
    got, top = bob[case.broken_test]
    assert got < top, f"the bug in {case.broken_answer} was not caught ({got}/{top})"
    others = {k: v for k, v in bob.items() if k != case.broken_test}
    assert others and all(score == top_ for score, top_ in others.values()), others
    alice_score, bob_score = float(graded["rows"]["alice"]["score"]), float(graded["rows"]["bob"]["score"])
    assert bob_score == pytest.approx(alice_score - (top - got))


@pytest.mark.slow
def test_self_check_predicts_nbgrader_step_by_step(graded, monkeypatch):
    monkeypatch.setenv("MHSA_GRADING_SEED", SEED)
    name = graded["case"].name
    path = graded["root"] / "submitted" / "bob" / name / f"{name}.ipynb"
    report = check_notebook(path, cell_timeout=120, total_timeout=600)
    predicted = {s.id: (round(s.points, 6), round(s.max_points, 6)) for s in report.steps}
    actual = {k: (round(a, 6), round(b, 6)) for k, (a, b) in graded["cells"]["bob"].items()}
    assert predicted == actual
