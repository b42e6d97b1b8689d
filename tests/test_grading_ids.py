"""Student ids of every kind through the whole pipeline, on a tiny course: ``jane_doe``, ``john doe``,
``zoë`` and ``o'brien`` hand in through an LMS zip whose names split more than one way; they are
collected with a roster, graded, given feedback and exported, each with a grade of their own
(all different, so a mix-up shows). Then the gradebook's students are the roster of the next
collect.
"""

from __future__ import annotations

import csv
import html
import shutil
import zipfile

import nbformat
import pytest
from conftest import fill_submission, notebook, run_cli, source_cells, write

from autograder.grading import collect, course, engine
from autograder.grading import sandbox as sandbox_mod

pytestmark = pytest.mark.slow

NAME = "01_tiny_double"  # an assignment name with "_" in it
FILE = f"{NAME}.ipynb"
PREFIX = "assignment01"  # the LMS's prefix, not the assignment's name: only a roster can split the names
LIMITS = engine.Limits(cell_timeout=30, total_timeout=120, memory_mb=2000, max_output_bytes=100_000)
WRONG_DOUBLE = "return x + 2\n"  # double(1) = 3: 0 of 2 points
HALF_DOUBLE = "return 2 * x if x > 0 else 0\n"  # right on 3 of the 4 cases: 1.5 of 2
WRONG_TRIPLE = "return 4 * x\n"  # the assert fails: 0 of 3
# id -> (answers replaced, expected score out of 5): every score differs.
STUDENTS = {
    "jane_doe": ({}, 5.0),
    "john doe": ({"double": WRONG_DOUBLE}, 3.0),
    "zoë": ({"triple": WRONG_TRIPLE}, 2.0),
    "o'brien": ({"double": HALF_DOUBLE, "triple": WRONG_TRIPLE}, 1.5),
}
TS = {"jane_doe": "2024-03-02-10-00-00", "john doe": "2024-03-02-11-00-00", "zoë": "2024-03-02-12-00-00",
      "o'brien": "2024-03-02-13-00-00"}


def lms_name(student, ts, file=FILE):
    return f"{PREFIX}_{student}_attempt_{ts}_{file}"


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ids")
    write(notebook(source_cells()), tmp / "solutions" / FILE)
    root = tmp / "course"
    course.build(root, tmp / "solutions")
    source = nbformat.read(str(course.source_notebook(root, NAME)), as_version=4)
    learner = nbformat.read(str(root / "release" / NAME / FILE), as_version=4)

    zpath = tmp / "lms.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for student, (bugs, _) in STUDENTS.items():
            z.writestr(lms_name(student, TS[student]), nbformat.writes(fill_submission(learner, source, bugs)))
        # jane_doe's earlier attempt, all wrong: dropped, or her grade would show it.
        z.writestr(lms_name("jane_doe", "2024-03-01-09-00-00"),
                   nbformat.writes(fill_submission(learner, source, {"double": WRONG_DOUBLE, "triple": WRONG_TRIPLE})))
    roster = tmp / "roster.csv"
    roster.write_text("id,last_name,first_name\n" + "".join(f'"{s}",x,y\n' for s in STUDENTS) + "someone_else,x,y\n",
                      encoding="utf-8")

    without_roster = run_cli("collect", "--course", root, "--dry-run", zpath, timeout=300)
    collected = run_cli("collect", "--course", root, "--roster", roster, zpath, timeout=300)
    sandbox = sandbox_mod.check_sandbox()[0]  # the sandbox where bubblewrap runs, else without it
    graded = run_cli("autograde", "--course", root, "-j", "2", "--quiet", "--timeout", LIMITS.cell_timeout,
                     "--total-timeout", LIMITS.total_timeout, *([] if sandbox else ["--no-sandbox"]), timeout=900)
    feedback = run_cli("feedback", "--course", root, timeout=300)
    exported = run_cli("export", "--course", root, timeout=300)
    return {"root": root, "tmp": tmp, "zip": zpath, "learner": learner, "source": source,
            "without_roster": without_roster, "collected": collected, "graded": graded, "feedback": feedback,
            "exported": exported}


def test_without_a_roster_every_name_is_ambiguous_and_nothing_is_guessed(classroom):
    proc = classroom["without_roster"]
    assert proc.returncode == 0, proc.stderr
    assert "would collect 0 submission(s)" in proc.stdout
    assert "ambiguous: the student id could be 'assignment01_jane_doe', 'jane_doe' or 'doe'" in proc.stdout
    assert "ambiguous: the student id could be \"assignment01_o'brien\" or \"o'brien\"" in proc.stdout
    assert "5 file(s) NOT collected" in proc.stdout


def test_the_roster_collects_each_student_into_a_folder_of_their_own(classroom):
    proc = classroom["collected"]
    assert proc.returncode == 0, proc.stderr
    assert "collected 4 submission(s) from 4 student(s)" in proc.stdout
    assert "NOT collected" not in proc.stdout
    assert "an older attempt" in proc.stdout and "2024-03-01 09:00:00" in proc.stdout
    root = classroom["root"]
    assert sorted(p.name for p in (root / "submitted").iterdir()) == sorted(STUDENTS)
    for student in STUDENTS:
        assert (root / "submitted" / student / NAME / FILE).is_file()
    assert (root / "submitted" / "jane_doe" / NAME / "timestamp.txt").read_text().strip() == "2024-03-02 10:00:00"


def test_each_student_has_their_own_grade_in_the_gradebook(classroom):
    from nbgrader.api import Gradebook

    proc = classroom["graded"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "graded 4 submission(s)" in proc.stdout
    with Gradebook(course.db_url(classroom["root"])) as gb:
        assert sorted(s.id for s in gb.students) == sorted(STUDENTS)
        for student, (_, score) in STUDENTS.items():
            sub = gb.find_submission(NAME, student)
            assert sub.score == pytest.approx(score), student
            assert str(sub.timestamp).startswith(TS[student][:10]), student


def test_each_student_has_their_own_feedback(classroom):
    proc = classroom["feedback"]
    assert proc.returncode == 0, proc.stderr
    root = classroom["root"]
    assert sorted(p.name for p in (root / "feedback").iterdir() if p.is_dir()) == sorted(STUDENTS)
    for student, (_, score) in STUDENTS.items():
        page = (root / "feedback" / student / NAME / f"{NAME}.html").read_text(encoding="utf-8")
        assert f"Feedback for <b>{html.escape(student)}</b>" in page
        assert f"Score: {score:g} / 5" in page
        summary = (root / "feedback" / student / NAME / "summary.txt").read_text(encoding="utf-8")
        assert f"student: {student}\n" in summary and f"score: {score:g} / 5\n" in summary
    lines = (root / "feedback" / "summary.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert sorted(tuple(l.split("\t")[:3]) for l in lines) == sorted(
        (s, NAME, f"{score:g} / 5") for s, (_, score) in STUDENTS.items())


def test_each_student_has_their_own_csv_row(classroom):
    proc = classroom["exported"]
    assert proc.returncode == 0, proc.stderr
    exports = classroom["root"] / "exports"
    with open(exports / f"{NAME}.csv", newline="", encoding="utf-8") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(STUDENTS)
    for student, (_, score) in STUDENTS.items():
        assert float(rows[student]["score"]) == pytest.approx(score)
        assert rows[student]["status"] == "ok"
    with open(exports / "course.csv", newline="", encoding="utf-8") as f:
        totals = {r["student_id"]: float(r["total"]) for r in csv.DictReader(f)}
    assert totals == pytest.approx({s: score for s, (_, score) in STUDENTS.items()})


def test_the_gradebooks_students_then_read_the_next_export(classroom):
    # A later export: new attempts, no --roster; the gradebook knows the class now.
    source, learner, tmp = classroom["source"], classroom["learner"], classroom["tmp"]
    root = tmp / "course_again"
    shutil.copytree(classroom["root"], root, symlinks=True)
    zpath = tmp / "lms2.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for student in STUDENTS:
            z.writestr(lms_name(student, "2024-04-01-08-00-00"), nbformat.writes(fill_submission(learner, source)))
        z.writestr(lms_name("new_kid", "2024-04-01-08-00-00"), nbformat.writes(fill_submission(learner, source)))
    rep = collect.collect(root, zpath)
    assert set(rep.collected) == {(s, NAME) for s in STUDENTS}
    assert rep.ambiguous == {lms_name("new_kid", "2024-04-01-08-00-00"): ["assignment01_new_kid", "new_kid", "kid"]}
    assert "the gradebook's students do not settle it" in dict(rep.unmatched)[lms_name("new_kid", "2024-04-01-08-00-00")]
    assert sorted(p.name for p in (root / "submitted").iterdir()) == sorted(STUDENTS)
    for student in STUDENTS:
        assert (root / "submitted" / student / NAME / "timestamp.txt").read_text().strip() == "2024-04-01 08:00:00"
