"""The course folder with nbgrader's own tools: feedback handed out by `nbgrader release_feedback`
and fetched by a student, `nbgrader generate_feedback` refused instead of overwriting the course's
feedback with the hidden tests, every submission (problem ones included) listed and flagged in
formgrader, manual scores in feedback and exports, a moved course folder, and `./course` run from
another folder.

The slow tests share one small class, graded once: a tiny two-step notebook with a written
answer, one submission through nbgrader's exchange (release, fetch, submit, collect) and the
others handed in as a folder.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, notebook, source_cells, write

from autograder.grading import course, feedback
from autograder.grading import nbgrader_tools as nbt

NAME = "t1_tiny"
FILE = f"{NAME}.ipynb"
COURSE_ID = "mhsa_course"
HIDDEN_SOURCES = ("check_double(double, hidden=True)", "assert triple(-4) == -12", "HIDDEN TESTS")
PROBLEMS = {"victor_invalid_json": "unreadable", "walter_empty": "empty", "xena_other": "wrong-assignment",
            "yvonne_missing": "missing"}
BUGGY_TRIPLE = "def triple(x):\n    return 2 * x\n"


def written_answer(grade_id, points):
    """A markdown answer graded by hand."""
    cell = nbformat.v4.new_markdown_cell("Why double before triple?\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION\n")
    cell.metadata["nbgrader"] = {"grade": True, "solution": True, "locked": False, "points": points,
                                 "grade_id": grade_id, "schema_version": 3}
    return cell


def tiny_source():
    return notebook(source_cells() + [written_answer("explain", 1)])


def fill_submission(learner, source, replace=None):
    """The learner's notebook answered: code answers from the source's solutions (or
    ``replace[grade_id]``), the written answer in words."""
    replace = replace or {}
    regions = {nbt.grade_id(c): nbt.solution_regions(nbt.cell_source(c)) for c in source.cells if nbt.is_solution(c)}
    nb = nbformat.from_dict(learner)
    for cell in nb.cells:
        gid = nbt.grade_id(cell)
        if nbt.is_solution(cell) and cell.cell_type == "code":
            cell.source = replace[gid] if gid in replace else nbt.fill_stubs(nbt.cell_source(cell), regions[gid])
        elif nbt.is_solution(cell):
            cell.source = "So that the tests are easy."
    return nb


# --------------------------------------------------------------------------- quick: the config


def _load_config(folder: Path):
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(folder)).load_config()


def test_config_computes_its_paths_from_its_own_folder(tmp_path):
    first = tmp_path / "first"
    nbt.write_course_config(first, execute_timeout=30)
    text = (first / "nbgrader_config.py").read_text()
    assert str(tmp_path) not in text and "sqlite:////" not in text
    cfg = _load_config(first)
    assert cfg.CourseDirectory.root == str(first)
    assert cfg.CourseDirectory.db_url == f"sqlite:///{first / 'gradebook.db'}"
    assert cfg.CourseDirectory.course_id == COURSE_ID and cfg.Execute.timeout == 30
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    cfg = _load_config(moved)
    assert cfg.CourseDirectory.root == str(moved)
    assert cfg.CourseDirectory.db_url == f"sqlite:///{moved / 'gradebook.db'}"


def test_config_switches_generate_feedback_off_and_can_leave_it_on(tmp_path):
    from nbconvert.exporters import Exporter

    nbt.write_course_config(tmp_path / "safe")
    exporter = _load_config(tmp_path / "safe").GenerateFeedback.exporter_class
    assert isinstance(exporter, type) and issubclass(exporter, Exporter)
    from nbgrader.converters.base import NbGraderException

    with pytest.raises(NbGraderException, match="generate_feedback is switched off"):
        exporter()
    nbt.write_course_config(tmp_path / "plain", refuse_generate_feedback=False)
    assert "exporter_class" not in _load_config(tmp_path / "plain").GenerateFeedback


def test_config_rejects_a_bad_course_id(tmp_path):
    with pytest.raises(ValueError, match=r"course_id must be a plain name.*'my course'"):
        nbt.write_course_config(tmp_path, course_id="my course")


def test_a_config_written_with_an_absolute_root_elsewhere_is_warned_about(tmp_path, capsys):
    import argparse

    from nbgrader.api import Gradebook

    here = tmp_path / "moved"
    nbt.write_course_config(here)
    assert course.config_warning(here) is None
    with Gradebook(course.db_url(here)):
        pass
    # A config from before paths were relative, built in a folder that has since moved.
    (here / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.root = '/srv/old/classroom'\n"
        "c.CourseDirectory.db_url = 'sqlite:////srv/old/classroom/gradebook.db'\n")
    warning = course.config_warning(here)
    assert warning and "'/srv/old/classroom'" in warning and "./course build --course" in warning
    assert feedback.main(argparse.Namespace(course=here, student=None)) == 0
    err = capsys.readouterr().err
    assert "feedback: warning:" in err and "/srv/old/classroom" in err
    (here / "nbgrader_config.py").write_text(f"c = get_config()\nc.CourseDirectory.root = {str(here)!r}\n")
    assert course.config_warning(here) is None  # an absolute root that is this folder is fine


# --------------------------------------------------------------------------- quick: feedback lines


def _result(steps, status="ok"):
    return {"student": "s", "assignment": NAME, "status": status, "message": "", "notes": [],
            "steps": [{"id": i, "points": p, "max_points": m, "message": f"{i}: report\n0 / {m} ✗" if p < m else "ok"}
                      for i, p, m in steps]}


def test_an_instructors_score_wins_and_says_what_the_check_gave():
    result = _result([("check_double", 2.0, 2.0), ("check_triple", 0.0, 3.0)])
    entry = feedback.Entry({
        "check_double": feedback.Grade("check_double", 2.0, auto=2.0),
        "check_triple": feedback.Grade("check_triple", 3.0, auto=0.0, manual=3.0),
        "explain": feedback.Grade("explain", 1.0),
    }, {"triple": "Nice loop."})
    lines = feedback.feedback_lines(result, entry, ["check_double", "check_triple", "explain"])
    assert [l.id for l in lines] == ["check_double", "check_triple", "explain"]
    assert feedback.totals(lines) == (5.0, 6.0)
    text = feedback.render_text(result, lines, entry.comments)
    assert "score: 5 / 6" in text
    assert "step check_triple: 3 / 3 (graded by your instructor: 3 / 3; the automatic check gave 0 / 3)" in text
    assert "step explain: 0 / 1 (not graded yet: your instructor grades this by hand)" in text
    assert "step check_double: 2 / 2  ok" in text and "comment on triple: Nice loop." in text
    page = feedback.render_html(result, lines, entry.comments)
    assert "graded by your instructor: 3 / 3; the automatic check gave 0 / 3" in page
    assert "Score: 5 / 6" in page and "Nice loop." in page and "The automatic check's report:" in page


def test_a_manual_score_lowering_full_marks_and_a_graded_written_answer():
    result = _result([("check_double", 2.0, 2.0)])
    entry = feedback.Entry({"check_double": feedback.Grade("check_double", 2.0, auto=2.0, manual=0.5),
                            "explain": feedback.Grade("explain", 1.0, manual=1.0)})
    lines = feedback.feedback_lines(result, entry, ["explain", "check_double"])
    assert [(l.id, l.score, l.by_instructor) for l in lines] == [("explain", 1.0, True), ("check_double", 0.5, True)]
    text = feedback.render_text(result, lines)
    assert "score: 1.5 / 3" in text
    assert "step explain: 1 / 1 (graded by your instructor: 1 / 1)" in text
    assert "the automatic check gave 2 / 2" in text


def test_without_a_gradebook_entry_the_checks_points_count():
    result = _result([("check_double", 1.0, 2.0), ("check_triple", 3.0, 3.0)])
    lines = feedback.feedback_lines(result, None)
    assert feedback.totals(lines) == (4.0, 5.0) and not any(l.by_instructor or l.note for l in lines)


def test_exchange_files_pass_on_the_submissions_own_and_nothing_else(tmp_path):
    root = tmp_path / "course"
    sub = root / "submitted" / "alice" / NAME
    sub.mkdir(parents=True)
    (sub / "timestamp.txt").write_text("2024-05-01 10:00:00.123456 UTC\n")
    (sub / "submission_secret.txt").write_text("ab" * 64)
    folder = root / "feedback" / "alice" / NAME
    folder.mkdir(parents=True)
    feedback.exchange_files(root, "alice", NAME, folder)
    assert (folder / "timestamp.txt").read_text() == "2024-05-01 10:00:00.123456 UTC"
    assert (folder / "submission_secret.txt").read_text() == "ab" * 64

    # A student's links and junk are never passed on: a link to a private file, a huge or odd one.
    private = tmp_path / "private.txt"
    private.write_text("topsecret")
    sub = root / "submitted" / "mallory" / NAME
    sub.mkdir(parents=True)
    (sub / "submission_secret.txt").symlink_to(private)
    (sub / "timestamp.txt").write_text("<script>alert(1)</script>")
    folder = root / "feedback" / "mallory" / NAME
    folder.mkdir(parents=True)
    feedback.exchange_files(root, "mallory", NAME, folder)
    secret = (folder / "submission_secret.txt").read_text()
    assert secret != "topsecret" and len(secret) == 128 and int(secret, 16) >= 0
    assert (folder / "timestamp.txt").read_text().endswith(" UTC") and "<" not in (folder / "timestamp.txt").read_text()
    feedback.exchange_files(root, "mallory", NAME, folder)  # a made secret is kept on every run
    assert (folder / "submission_secret.txt").read_text() == secret


def test_standin_notebook_empties_answers_and_says_why(tmp_path):
    root = tmp_path / "course"
    src = tiny_source()
    write(src, course.source_notebook(root, NAME))
    dest = course.write_standin_notebook(root, NAME, tmp_path / "out" / FILE, "unreadable",
                                         "not JSON: <img src=x onerror=alert(1)>")
    nb = nbformat.read(str(dest), as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "Not graded (unreadable)" in nb.cells[0].source
    assert "<img" not in nb.cells[0].source and "&lt;img" in nb.cells[0].source
    answers = [c for c in nb.cells if nbt.is_solution(c)]
    assert answers and all("could not be graded" in c.source for c in answers)
    assert "return 2 * x" not in nbformat.writes(nb)  # never the instructor's solutions
    assert {nbt.grade_id(c) for c in nb.cells if nbt.is_grade(c)} == {"check_double", "check_triple", "explain"}
    assert nb.metadata["kernelspec"]["name"] == "python3"


# --------------------------------------------------------------------------- quick: the script


def test_course_script_found_through_a_link_from_anywhere(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "course").symlink_to(ROOT / "course")
    out = subprocess.run([str(tmp_path / "bin" / "course"), "--help"], cwd=str(tmp_path), capture_output=True,
                         text=True, check=True).stdout
    assert "./course check NOTEBOOK" in out and "relative to the folder you run it from" in out


# --------------------------------------------------------------------------- the graded class


def _nbgrader(args, cwd, **kw):
    return nbt.run_nbgrader(args, cwd, **kw).stdout


def _exchange_args(tmp):
    return [f"--Exchange.root={tmp / 'exchange'}", f"--Exchange.cache={tmp / 'cache'}"]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from nbgrader.api import Gradebook

    from autograder.grading import autograde, collect, engine

    tmp = tmp_path_factory.mktemp("interop")
    (tmp / "exchange").mkdir()
    sol = tmp / "solutions"
    write(tiny_source(), sol / FILE)
    root = tmp / "classroom"
    course.build(root, sol)
    source = nbformat.read(str(course.source_notebook(root, NAME)), as_version=4)
    learner = nbformat.read(str(root / "release" / NAME / FILE), as_version=4)

    # alice: through nbgrader's exchange (release, fetch, submit, collect).
    ex = _exchange_args(tmp)
    _nbgrader(["release_assignment", NAME, *ex], root)
    home = tmp / "alice_home"
    home.mkdir()
    _nbgrader(["fetch_assignment", NAME, f"--course={COURSE_ID}", *ex], home)
    mine = home / NAME / FILE
    answered = fill_submission(nbformat.read(str(mine), as_version=4), source)
    nbformat.write(answered, str(mine))
    _nbgrader(["submit", NAME, f"--course={COURSE_ID}", "--student=alice", *ex], home)
    _nbgrader(["collect", NAME, *ex], root)
    assert (root / "submitted" / "alice" / NAME / "submission_secret.txt").is_file()

    # Everybody else hands in a folder.
    incoming = tmp / "incoming"
    write(fill_submission(learner, source, {"triple": BUGGY_TRIPLE}), incoming / "bob" / NAME / FILE)
    write(fill_submission(learner, source), incoming / "carol" / NAME / FILE)
    (incoming / "victor_invalid_json" / NAME).mkdir(parents=True)
    (incoming / "victor_invalid_json" / NAME / FILE).write_text('{"cells": [ not json')
    (incoming / "walter_empty" / NAME).mkdir(parents=True)
    (incoming / "walter_empty" / NAME / FILE).write_bytes(b"")
    write(notebook([nbformat.v4.new_code_cell("print('another course')")]), incoming / "xena_other" / NAME / FILE)
    (incoming / "yvonne_missing" / NAME).mkdir(parents=True)
    (incoming / "yvonne_missing" / NAME / "notes.txt").write_text("I forgot the notebook")
    collect.collect(root, incoming)

    limits = engine.Limits(cell_timeout=30.0, total_timeout=120.0, memory_mb=0, max_output_bytes=100_000)  # as the CLI parses them
    run = autograde.grade_class(root, workers=2, limits=limits, sandbox=False, stream=io.StringIO(),
                                show_progress=False)
    results = {r["student"]: r for r in run["results"]}

    # The instructor, in formgrader (here through nbgrader's Gradebook API): bob's check_triple is
    # given full marks by hand, carol's written answer 1 point, and a comment for bob.
    with Gradebook(course.db_url(root)) as gb:
        g = gb.find_grade("check_triple", NAME, NAME, "bob")
        g.manual_score = 3.0
        gb.find_grade("explain", NAME, NAME, "carol").manual_score = 1.0
        gb.find_comment("triple", NAME, NAME, "bob").manual_comment = "Off by x: but I see what you meant."
        gb.db.commit()
    feedback.write_feedback(root)
    return {"root": root, "tmp": tmp, "results": results, "home": home}


def _gb_totals(root):
    from nbgrader.api import Gradebook

    with Gradebook(course.db_url(root)) as gb:
        return {s.student.id: (float(s.score), float(s.max_score)) for s in gb.find_assignment(NAME).submissions}


def _tree_bytes(folder: Path):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_class_grades_as_expected(graded):
    r = graded["results"]
    assert set(r) == {"alice", "bob", "carol", *PROBLEMS}
    assert r["alice"]["status"] == r["carol"]["status"] == "ok" and r["alice"]["score"] == 5
    assert {s["id"]: s["points"] for s in r["bob"]["steps"]}["check_triple"] == 0
    for student, status in PROBLEMS.items():
        assert r[student]["status"] == status and r[student]["score"] == 0


@pytest.mark.slow
def test_feedback_shows_the_instructors_scores_and_the_gradebook_total(graded):
    root = graded["root"]
    gb = _gb_totals(root)
    for student in graded["results"]:
        folder = root / "feedback" / student / NAME
        page = (folder / f"{NAME}.html").read_text(encoding="utf-8")
        summary = (folder / "summary.txt").read_text(encoding="utf-8")
        score, top = gb[student]
        assert f"Score: {score:g} / {top:g}" in page, student
        assert f"score: {score:g} / {top:g}" in summary, student
        for hidden in HIDDEN_SOURCES:
            assert hidden not in page, (student, hidden)
    bob_page = (root / "feedback" / "bob" / NAME / f"{NAME}.html").read_text(encoding="utf-8")
    bob_summary = (root / "feedback" / "bob" / NAME / "summary.txt").read_text(encoding="utf-8")
    assert gb["bob"] == (5.0, 6.0)  # 2 + 3 by hand; the written answer not graded yet
    assert "graded by your instructor: 3 / 3; the automatic check gave 0 / 3" in bob_page
    assert "step check_triple: 3 / 3 (graded by your instructor: 3 / 3; the automatic check gave 0 / 3)" in bob_summary
    assert "Off by x: but I see what you meant." in bob_page and "step explain: 0 / 1 (not graded yet" in bob_summary
    carol = (root / "feedback" / "carol" / NAME / "summary.txt").read_text(encoding="utf-8")
    assert "score: 6 / 6" in carol and "step explain: 1 / 1 (graded by your instructor: 1 / 1)" in carol
    alice = (root / "feedback" / "alice" / NAME / "summary.txt").read_text(encoding="utf-8")
    assert "score: 5 / 6" in alice and "instructor: " not in alice.replace("your instructor grades", "")
    lines = (root / "feedback" / "summary.txt").read_text(encoding="utf-8").splitlines()
    assert any(line.startswith(f"bob\t{NAME}\t5 / 6\tok\t") for line in lines), lines


@pytest.mark.slow
def test_export_holds_the_instructors_scores(graded):
    from autograder.grading import export

    root = graded["root"]
    export.export(root)
    with open(root / "exports" / f"{NAME}.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    gb = _gb_totals(root)
    assert set(rows) == set(graded["results"])
    for student, row in rows.items():
        assert float(row["score"]) == gb[student][0] and float(row["max_score"]) == 6
    assert rows["bob"]["check_triple"] == "3" and rows["bob"]["graded_by_instructor"] == "check_triple"
    assert rows["carol"]["explain"] == "1" and rows["carol"]["graded_by_instructor"] == "explain"
    assert rows["alice"]["graded_by_instructor"] == "" and rows["victor_invalid_json"]["status"] == "unreadable"
    with open(root / "exports" / "course.csv", newline="") as f:
        totals = {r["student_id"]: r for r in csv.DictReader(f)}
    assert float(totals["bob"]["total"]) == 5 and float(totals["carol"]["total"]) == 6


@pytest.mark.slow
def test_formgrader_lists_and_flags_every_submission(graded):
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    root = graded["root"]
    cfg = _load_config(root)
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    listed = {s["student"]: s for s in api.get_submissions(NAME)}
    assert set(listed) == set(graded["results"])
    assert all(s["autograded"] for s in listed.values()), {k: s["autograded"] for k, s in listed.items()}
    notebooks = {s["student"]: s for s in api.get_notebook_submissions(NAME, NAME)}
    assert set(notebooks) == set(graded["results"])  # the problem ones too: none hidden
    for student, nb in notebooks.items():
        assert nb["flagged"] == (student in PROBLEMS), student
        if student in PROBLEMS:
            assert nb["score"] == 0
            got = api.get_student_notebook_submissions(student, NAME)
            assert got and got[0]["id"] is not None, student  # formgrader's view opens
            standin = nbformat.read(str(root / "autograded" / student / NAME / FILE), as_version=4)
            assert f"Not graded ({PROBLEMS[student]})" in standin.cells[0].source


@pytest.mark.slow
def test_release_feedback_and_fetch_feedback_through_nbgraders_exchange(graded):
    root, tmp = graded["root"], graded["tmp"]
    ex = _exchange_args(tmp)
    _nbgrader(["release_feedback", NAME, *ex], root)
    released = list((tmp / "exchange" / COURSE_ID / "feedback").glob("*.html"))
    assert len(released) == len(graded["results"])  # every student's page, problem ones included
    _nbgrader(["fetch_feedback", NAME, f"--course={COURSE_ID}", "--student=alice", *ex], graded["home"])
    fetched = list((graded["home"] / NAME / "feedback").glob(f"*/{FILE[:-6]}.html"))
    assert len(fetched) == 1
    ours = (root / "feedback" / "alice" / NAME / f"{NAME}.html").read_bytes()
    assert fetched[0].read_bytes() == ours
    assert b"Feedback for <b>alice</b>" in ours


@pytest.mark.slow
def test_generate_feedback_refuses_and_leaves_the_course_feedback(graded):
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    root = graded["root"]
    before = _tree_bytes(root / "feedback")
    for args in (["generate_feedback", NAME, "--force"], ["generate_feedback", NAME],
                 ["generate_feedback", NAME, "--student=bob", "--force"]):
        with pytest.raises(nbt.NbgraderError) as e:
            _nbgrader(args, root)
        assert "generate_feedback is switched off" in str(e.value) and "./course feedback" in str(e.value)
        assert _tree_bytes(root / "feedback") == before, args
    cfg = _load_config(root)
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)  # formgrader's button
    out = api.generate_feedback(NAME, "bob")
    assert not out["success"] and "switched off" in out["log"] + out.get("error", "")
    assert _tree_bytes(root / "feedback") == before
    for data in before.values():
        for hidden in HIDDEN_SOURCES:
            assert hidden.encode() not in data


@pytest.mark.slow
def test_a_moved_course_folder_works_with_nbgrader_and_the_course_commands(graded):
    tmp = graded["tmp"]
    first = tmp / "copy_first"
    shutil.copytree(graded["root"], first, symlinks=True)
    work = tmp / "caller"
    work.mkdir()
    shutil.move(str(first), str(work / "classroom"))  # the copy's first place is gone
    moved = work / "classroom"
    assert not first.exists()
    assert str(graded["root"]) not in (moved / "nbgrader_config.py").read_text()
    listing = _nbgrader(["db", "student", "list"], moved)
    assert "victor_invalid_json" in listing
    _nbgrader(["generate_assignment", NAME, "--force"], moved)
    assert (moved / "release" / NAME / FILE).is_file()

    # The course's commands through ./course, run from the caller's folder with a relative --course.
    for path in (moved / "exports", moved / "feedback"):
        shutil.rmtree(path, ignore_errors=True)
    for cmd in (["export"], ["feedback"]):
        proc = subprocess.run([str(ROOT / "course"), *cmd, "--course", "classroom"], cwd=str(work),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (moved / "exports" / f"{NAME}.csv").is_file() and not (ROOT / "classroom" / "exports" / f"{NAME}.csv").exists()
    assert (moved / "feedback" / "bob" / NAME / f"{NAME}.html").is_file()
    proc = subprocess.run([str(ROOT / "course"), "autograde", "--course", "classroom", "--no-sandbox", "--quiet",
                           "--memory-mb", "0", "--timeout", "30", "--total-timeout", "120", "--max-output", "100000"],
                          cwd=str(work), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 submission(s) to grade" in proc.stdout  # nothing changed by the move


@pytest.mark.slow
def test_course_check_resolves_the_notebook_against_the_callers_folder(tmp_path):
    work = tmp_path / "somewhere"
    src = ROOT / "notebooks" / "00_orientation.ipynb"
    (work / "mine").mkdir(parents=True)
    shutil.copy(src, work / "mine" / "my.ipynb")
    if (ROOT / "notebooks" / "data").is_dir():
        shutil.copytree(ROOT / "notebooks" / "data", work / "mine" / "data")
    assert not (ROOT / "mine").exists()  # the same relative path means nothing in the repository
    proc = subprocess.run([str(ROOT / "course"), "check", "mine/my.ipynb", "--json"], cwd=str(work),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["steps"] and report["max_score"] > 0
    assert "my.ipynb" in str(report["notebook"])
