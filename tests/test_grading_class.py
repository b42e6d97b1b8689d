"""A whole class graded end to end on notebook 00, in a temporary course folder: build, collect
(an LMS zip and an nbgrader folder), parallel autograde of correct, buggy and hostile
submissions, the gradebook, re-grading, feedback and export.

Every bad submission must finish with a clear status, lose only what it should, and leave every
other student's grade and files alone. One graded class is shared by all tests of this module.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import sqlite3
import zipfile

import nbformat
import pytest
from conftest import NOTEBOOKS, SOLUTIONS, fill_submission, find_cell, insert_after, run_cli, set_source

from autograder.grading import autograde, collect, course, engine
from autograder.grading import nbgrader_tools as nbt

# Every test here shares one graded class: nbgrader and a kernel per submission (minutes).
pytestmark = pytest.mark.slow

NAME = "00_orientation"
FILE = f"{NAME}.ipynb"
STEPS = {"checkpoint_fallback": 1, "checkpoint_einsum_reading": 1, "checkpoint_batched_matmul": 1,
         "check_pairwise_scores": 2}
LIMITS = engine.Limits(cell_timeout=8, total_timeout=90, memory_mb=3000, max_output_bytes=200_000)
BUGGY_PAIRWISE = "return 2 * (q @ k.transpose(-2, -1))  # bug: twice the scores\n"
HIDDEN_CALL = "check_pairwise_scores(pairwise_scores, hidden=True)"

FULL = dict(STEPS)


def _with(**points):
    out = dict(FULL)
    out.update(points)
    return out


def _delete(nb, key):
    i, _ = find_cell(nb, key)
    del nb.cells[i]
    return nb


# Each case: (what the submission is, expected points per step or None when the step may be
# partial, expected status). A callable makes the notebook from (learner, source).
def make_cases(learner, source):
    ok = lambda **r: fill_submission(learner, source, r or None)  # noqa: E731
    other = (NOTEBOOKS / "01_scaled_dot_product_attention.ipynb").read_bytes()
    cases = {}

    cases["alice"] = (ok(), FULL, "ok")
    cases["bob"] = (ok(pairwise_scores=BUGGY_PAIRWISE), _with(check_pairwise_scores="partial"), "ok")
    nb = ok()
    set_source(nb, "pairwise_scores", "while True:\n    pass\n\n" + nbt.cell_source(find_cell(nb, "pairwise_scores")[1]))
    cases["carol_loop_in_solution"] = (nb, _with(check_pairwise_scores=0), "cell-timeout")
    cases["dave_loop_elsewhere"] = (set_source(ok(), "nb00-code-04", "while True:\n    pass\n"), FULL, "cell-timeout")
    bomb = "huge = [0] * (10 ** 11)  # 800 GB of pointers\n"
    cases["erin_memory_bomb"] = (set_source(ok(), "nb00-code-04", bomb), FULL, "ok")
    cases["frank_sys_exit"] = (set_source(ok(), "nb00-code-04", "import sys\nsys.exit(3)\n"), FULL, "ok")
    cases["grace_os_exit"] = (set_source(ok(), "nb00-code-15", "import os\nos._exit(1)\n"),
                              _with(checkpoint_einsum_reading=0, checkpoint_batched_matmul=0, check_pairwise_scores=0),
                              "kernel-died")
    cases["heidi_killed_kernel"] = (set_source(ok(), "nb00-code-13", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"),
                                    _with(checkpoint_einsum_reading=0, checkpoint_batched_matmul=0, check_pairwise_scores=0),
                                    "kernel-died")
    nb = ok(pairwise_scores=BUGGY_PAIRWISE)
    set_source(nb, "check_pairwise_scores", "2.0")
    cases["ivan_edited_test_cell"] = (nb, _with(check_pairwise_scores="partial"), "ok")
    nb = ok()
    _delete(nb, "checkpoint_batched_matmul")
    _delete(nb, "answer_einsum_reading")
    cases["judy_deleted_cells"] = (nb, _with(checkpoint_einsum_reading=0), "ok")
    from autograder.checks.questions import QUESTIONS

    wrong = next(letter for letter in "abcd" if letter != QUESTIONS["00.batched_matmul"].answer)
    nb = ok(answer_batched_matmul=f'return "{wrong}"\n')
    find_cell(nb, "checkpoint_fallback")[1].metadata["nbgrader"]["points"] = 100
    cases["mallory_changed_points"] = (nb, _with(checkpoint_batched_matmul=0), "ok")
    nb = ok()
    nb.metadata["kernelspec"] = {"name": "julia-1.9", "display_name": "Julia 1.9", "language": "julia"}
    cases["niaj_kernelspec"] = (nb, FULL, "ok")
    warn = "import sys, warnings\nprint('careful: deprecated', file=sys.stderr)\nwarnings.warn('an old API')\n"
    nb = ok(pairwise_scores="import warnings\nwarnings.warn('matmul ahead')\nreturn q @ k.transpose(-2, -1)\n")
    cases["olivia_stderr"] = (set_source(nb, "nb00-code-04", warn), FULL, "ok")
    cases["peggy_megabytes"] = (set_source(ok(), "nb00-code-04", "for _ in range(60):\n    print('x' * 100_000)\n"),
                                FULL, "ok")
    patch = ("import torch\ntorch.allclose = lambda *a, **k: True\n"
             "check_concept = lambda *a, **k: 1.0\n")
    # Scores are judged outside the student's code: patching the checks changes nothing, neither
    # for right answers (full marks) nor for a wrong one (the same partial credit as bob's).
    cases["rupert_patches_checks"] = (insert_after(ok(), "nb00-code-02", patch), FULL, "ok")
    sneaky = ('exec("import autograder.core as c; c.compare = lambda *a, **k: c.Comparison(True, \'\')")\n'
              + BUGGY_PAIRWISE)
    cases["sybil_patches_at_run_time"] = (ok(pairwise_scores=sneaky), _with(check_pairwise_scores="partial"), "ok")
    intrude = (
        "import os\n"
        "for path in ['../../../gradebook.db', '../../alice/00_orientation/00_orientation.ipynb',\n"
        "             '../../../source/00_orientation/00_orientation.ipynb']:\n"
        "    try:\n"
        "        with open(path, 'r+b') as f:\n"
        "            f.write(b'garbage')\n"
        "    except OSError as e:\n"
        "        print('could not write', path)\n"
    )
    cases["trent_intruder"] = (set_source(ok(), "nb00-code-04", intrude), FULL, "ok")
    cases["victor_invalid_json"] = (b'{"cells": [ this is not json', {k: 0 for k in STEPS}, "unreadable")
    cases["walter_empty_file"] = (b"", {k: 0 for k in STEPS}, "empty")
    cases["xena_other_assignment"] = (other, {k: 0 for k in STEPS}, "wrong-assignment")
    return cases


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("class")
    sol = tmp / "solutions"
    sol.mkdir()
    shutil.copy(SOLUTIONS / FILE, sol / FILE)
    if (SOLUTIONS / "data").is_dir():
        shutil.copytree(SOLUTIONS / "data", sol / "data")
    root = tmp / "course"
    course.build(root, sol)
    source = nbformat.read(str(course.source_notebook(root, NAME)), as_version=4)
    learner = nbformat.read(str(root / "release" / NAME / FILE), as_version=4)
    cases = make_cases(learner, source)

    # alice and bob hand in through an LMS zip (bob twice: the later, buggy attempt counts).
    lms = tmp / "lms.zip"
    with zipfile.ZipFile(lms, "w") as z:
        for student, stamp in (("alice", "2024-05-01-10-00-00"), ("bob", "2024-05-02-09-00-00")):
            z.writestr(f"{NAME}_{student}_attempt_{stamp}_{FILE}", nbformat.writes(cases[student][0]))
        z.writestr(f"{NAME}_bob_attempt_2024-05-01-08-00-00_{FILE}", nbformat.writes(fill_submission(learner, source)))
        z.writestr("README.txt", "exported by the LMS")
        z.writestr(f"{NAME}_mallet_attempt_2024-05-01-10-00-00_essay.docx", b"not a notebook")
        z.writestr("../escape.ipynb", b"{}")
    zip_report = collect.collect(root, lms)

    # Everybody else: nbgrader's submitted/ layout, handed over as a folder.
    folder = tmp / "incoming"
    for student, (nb, _, _) in cases.items():
        if student in ("alice", "bob"):
            continue
        path = folder / student / NAME / FILE
        path.parent.mkdir(parents=True)
        path.write_bytes(nb if isinstance(nb, bytes) else nbformat.writes(nb).encode())
    (folder / "yvonne_missing" / NAME).mkdir(parents=True)
    (folder / "yvonne_missing" / NAME / "notes.txt").write_text("I forgot the notebook")
    (folder / "zoe" / "99_unknown").mkdir(parents=True)
    folder_report = collect.collect(root, folder)

    alice_file = root / "submitted" / "alice" / NAME / FILE
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / "submitted").rglob("*") if p.is_file()}
    before_source = hashlib.sha256(course.source_notebook(root, NAME).read_bytes()).hexdigest()
    out = io.StringIO()
    run = autograde.grade_class(root, workers=2, limits=LIMITS, stream=out)
    results = {r["student"]: r for r in run["results"]}
    return {"root": root, "cases": cases, "results": results, "run": run, "progress": out.getvalue(),
            "zip_report": zip_report, "folder_report": folder_report, "before": before,
            "before_source": before_source, "alice_file": alice_file, "tmp": tmp}


def _points(result):
    return {s["id"]: s["points"] for s in result["steps"]}


# --------------------------------------------------------------------------- collect


def test_collect_from_lms_zip_reports_what_it_could_not_match(graded):
    rep = graded["zip_report"]
    assert set(rep.collected) == {("alice", NAME), ("bob", NAME)}
    unmatched = dict(rep.unmatched)
    assert "README.txt" in unmatched
    assert any("essay.docx" in name for name in unmatched)
    assert any("escape" in name for name in unmatched)
    assert any("older attempt" in n for n in rep.notes)
    assert (graded["root"] / "submitted" / "bob" / NAME / "timestamp.txt").read_text().strip() == "2024-05-02 09:00:00"


def test_collect_from_nbgrader_folder(graded):
    rep = graded["folder_report"]
    assert ("carol_loop_in_solution", NAME) in rep.collected
    assert ("yvonne_missing", NAME) in rep.collected
    assert any(name.startswith("zoe/99_unknown") for name, _ in rep.unmatched)


# --------------------------------------------------------------------------- grades


def test_every_submission_is_graded_once(graded):
    expected = set(graded["cases"]) | {"yvonne_missing"}
    assert set(graded["results"]) == expected
    assert len(graded["run"]["results"]) == len(expected)


@pytest.mark.parametrize("student", [
    "alice", "bob", "carol_loop_in_solution", "dave_loop_elsewhere", "erin_memory_bomb", "frank_sys_exit",
    "grace_os_exit", "heidi_killed_kernel", "ivan_edited_test_cell", "judy_deleted_cells", "mallory_changed_points",
    "niaj_kernelspec", "olivia_stderr", "peggy_megabytes", "rupert_patches_checks", "sybil_patches_at_run_time",
    "trent_intruder", "victor_invalid_json", "walter_empty_file", "xena_other_assignment",
])
def test_scores_and_status_per_student(graded, student):
    _, want, status = graded["cases"][student]
    r = graded["results"][student]
    got = _points(r)
    assert set(got) == set(STEPS), got
    assert r["status"] == status, (r["status"], r["message"], r["notes"])
    assert r["message"]
    for step, value in want.items():
        if value == "partial":
            assert 0 <= got[step] < STEPS[step], (step, got[step])
        else:
            assert got[step] == pytest.approx(value), (step, got[step], r["message"], r["steps"])
    assert r["max_score"] == pytest.approx(sum(STEPS.values()))


def test_missing_notebook_is_reported(graded):
    r = graded["results"]["yvonne_missing"]
    assert r["status"] == "missing"
    assert f"no {FILE}" in r["message"]
    assert all(p == 0 for p in _points(r).values())


def test_messages_say_what_happened(graded):
    res = graded["results"]
    assert any("edited" in n for n in res["ivan_edited_test_cell"]["notes"])
    assert any("was missing" in n for n in res["judy_deleted_cells"]["notes"])
    assert any("points" in n and "100" in n for n in res["mallory_changed_points"]["notes"])
    assert any("julia-1.9" in n for n in res["niaj_kernelspec"]["notes"])
    assert any("cut" in n for n in res["peggy_megabytes"]["notes"])
    assert _points(res["sybil_patches_at_run_time"]) == _points(res["bob"])  # the same code, the same score
    assert "invalid JSON" in res["victor_invalid_json"]["message"]
    assert "empty" in res["walter_empty_file"]["message"]
    assert "another assignment" in res["xena_other_assignment"]["message"]
    assert "died" in res["grace_os_exit"]["message"]
    assert "time limit" in res["dave_loop_elsewhere"]["message"]


def test_a_hang_costs_one_limit(graded):
    for student in ("carol_loop_in_solution", "dave_loop_elsewhere"):
        r = graded["results"][student]
        assert r["exec_seconds"] < LIMITS.cell_timeout + 25, (student, r["exec_seconds"])


def test_gradebook_holds_every_result_and_is_consistent(graded):
    from nbgrader.api import Gradebook

    root = graded["root"]
    con = sqlite3.connect(str(root / "gradebook.db"))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with Gradebook(course.db_url(root)) as gb:
        assert {s.id for s in gb.students} == set(graded["results"])
        for student, r in graded["results"].items():
            sub = gb.find_submission_notebook(NAME, NAME, student)
            cells = {g.name: (g.auto_score, g.max_score, g.needs_manual_grade) for g in sub.grades}
            assert set(cells) == set(STEPS)
            for step in r["steps"]:
                score, top, manual = cells[step["id"]]
                assert score == pytest.approx(step["points"]) and top == STEPS[step["id"]] and not manual
            assert sub.flagged == (r["status"] in autograde.PROBLEM_STATUSES)


def test_nobody_elses_files_or_the_sources_changed(graded):
    root = graded["root"]
    for path, digest in graded["before"].items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
    assert hashlib.sha256(course.source_notebook(root, NAME).read_bytes()).hexdigest() == graded["before_source"]
    assert not (root / "submitted" / "trent_intruder" / NAME / "escape").exists()


def test_autograded_notebooks_for_formgrader(graded):
    root = graded["root"]
    for student in ("alice", "peggy_megabytes", "ivan_edited_test_cell"):
        path = root / "autograded" / student / NAME / FILE
        assert path.is_file()
        assert path.stat().st_size < 3_000_000
        nb = nbformat.read(str(path), as_version=4)
        _, test = find_cell(nb, "check_pairwise_scores")
        assert HIDDEN_CALL in nbt.cell_source(test)  # the instructor's test cell, restored
        assert nb.metadata["kernelspec"]["name"] == "python3"


def test_progress_bar_counts_and_eta(graded):
    text = graded["progress"]
    total = len(graded["results"])
    assert f"{total}/{total} graded" in text
    assert "ETA" in text and "with problems" in text


# --------------------------------------------------------------------------- re-grading


def test_unchanged_submissions_are_not_graded_again(graded):
    root = graded["root"]
    out = io.StringIO()
    run = autograde.grade_class(root, workers=2, limits=LIMITS, stream=out, show_progress=False)
    assert run["results"] == []
    assert len(run["skipped"]) == len(graded["results"])


def test_forced_regrade_gives_identical_scores(graded):
    root = graded["root"]
    who = ["alice", "bob", "ivan_edited_test_cell", "sybil_patches_at_run_time", "victor_invalid_json"]
    run = autograde.grade_class(root, students=who, workers=2, limits=LIMITS, force=True,
                                stream=io.StringIO(), show_progress=False)
    again = {r["student"]: r for r in run["results"]}
    assert set(again) == set(who)
    for student in who:
        assert _points(again[student]) == _points(graded["results"][student]), student
        assert again[student]["status"] == graded["results"][student]["status"]
    # One seed for the whole class (identical code scores identically), the same on every re-grade.
    assert again["alice"]["seed"] == graded["results"]["alice"]["seed"] == graded["results"]["bob"]["seed"]


def test_cli_autograde_reports_unknown_assignment(graded):
    proc = run_cli("autograde", "--course", graded["root"], "99_nope", timeout=120)
    assert proc.returncode == 1
    assert "99_nope" in proc.stderr


# --------------------------------------------------------------------------- feedback and export


@pytest.fixture(scope="module")
def feedback_pages(graded):
    from autograder.grading import feedback

    pages = feedback.write_feedback(graded["root"])
    return {p.parent.parent.name: p for p in pages}


def test_feedback_for_every_submission_without_hidden_tests(graded, feedback_pages):
    assert set(feedback_pages) == set(graded["results"])
    source = nbformat.read(str(course.source_notebook(graded["root"], NAME)), as_version=4)
    test_sources = [nbt.cell_source(c) for c in source.cells if nbt.is_test_cell(c)]
    for student, page in feedback_pages.items():
        text = page.read_text(encoding="utf-8")
        assert HIDDEN_CALL not in text and "HIDDEN TESTS" not in text, student
        assert "hidden=True" not in text, student
        for src in test_sources:
            assert src not in text
        for step, top in STEPS.items():
            assert step in text


def test_feedback_shows_points_messages_and_a_picture(graded, feedback_pages):
    bob = feedback_pages["bob"].read_text(encoding="utf-8")
    r = graded["results"]["bob"]
    assert f"Score: {r['score']:g} / 5" in bob
    assert "pairwise_scores:" in bob  # the check's own report
    assert "data:image/png;base64," in bob  # yours vs expected for the failed step
    alice = feedback_pages["alice"].read_text(encoding="utf-8")
    assert "Score: 5 / 5" in alice and "data:image/png" not in alice
    victor = feedback_pages["victor_invalid_json"].read_text(encoding="utf-8")
    assert "unreadable" in victor and "invalid JSON" in victor
    summary = (graded["root"] / "feedback" / "bob" / NAME / "summary.txt").read_text()
    assert "status: ok" in summary and f"score: {r['score']:g} / 5" in summary
    lines = (graded["root"] / "feedback" / "summary.txt").read_text().splitlines()
    assert len(lines) == 1 + len(graded["results"])


def test_export_csv_per_assignment_and_course(graded):
    root = graded["root"]
    proc = run_cli("export", "--course", root, timeout=180)
    assert proc.returncode == 0, proc.stderr
    with open(root / "exports" / f"{NAME}.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(graded["results"])
    for student, r in graded["results"].items():
        row = rows[student]
        for step in STEPS:
            assert float(row[step]) == pytest.approx(_points(r)[step])
        assert float(row["score"]) == pytest.approx(r["score"])
        assert float(row["max_score"]) == 5
        assert row["status"] == r["status"]
    with open(root / "exports" / "course.csv", newline="") as f:
        course_rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert float(course_rows["alice"]["total"]) == 5 and float(course_rows["alice"]["max_total"]) == 5
    assert float(course_rows["bob"][NAME]) == pytest.approx(graded["results"]["bob"]["score"])
