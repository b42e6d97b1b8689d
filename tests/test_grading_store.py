"""Crash-safe storing of grades (:mod:`autograder.grading.storing`), ``autograde --check`` and
per-submission problems.

The quick tests grade a small course whose gradebook is made through nbgrader's API (no
nbgrader process) with a stand-in for the worker (no kernel): the storing path, the decision to
skip, the repairs of ``--check`` after each store is corrupted by hand, storage errors and odd
folders. The slow tests grade a tiny course for real and SIGKILL the grader at every point of
:data:`storing.CRASH_POINTS` in turn.
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, fill_submission, notebook, set_source, source_cells, write

from autograder.grading import autograde, engine, executors, export, jobs, runlock, storing
from autograder.grading import nbgrader_tools as nbt
from autograder.grading.gradebook import PROBLEM_STATUSES, GradebookWriter
from autograder.grading.worker import STATUSES

A = "01_tiny"
STEPS = {"check_double": 2.0, "check_triple": 3.0}


# --------------------------------------------------------------------------- a quick course


def _new_gradebook(root: Path, monkeypatch) -> None:
    """The gradebook nbgrader's ``generate_assignment`` would make for the tiny notebook."""
    import nbgrader.api as api

    # A new gradebook asks the `alembic` tool for its schema version (a process, seconds).
    monkeypatch.setattr(api, "get_alembic_version", lambda: "quick-test")
    with api.Gradebook("sqlite:///" + str((root / "gradebook.db").resolve())) as gb:
        gb.update_or_create_assignment(A)
        gb.update_or_create_notebook(A, A)
        for name, points in STEPS.items():
            gb.update_or_create_grade_cell(name, A, A, max_score=points, cell_type="code")


def _submit(root: Path, student: str, buggy: bool = False) -> Path:
    nb = notebook(source_cells())
    if buggy:
        set_source(nb, "double", "def double(x):\n    return x  # BUG\n")
    return write(nb, root / "submitted" / student / A / f"{A}.ipynb")


@pytest.fixture(scope="module")
def empty_course(tmp_path_factory):
    """A course folder (config, source, gradebook) with alice's and bob's submissions, to copy:
    making a gradebook takes a while."""
    root = tmp_path_factory.mktemp("template") / "course"
    nbt.write_course_config(root, db=True)
    write(notebook(source_cells()), root / "source" / A / f"{A}.ipynb")
    _submit(root, "alice")
    _submit(root, "bob")
    with pytest.MonkeyPatch.context() as mp:
        _new_gradebook(root, mp)
    return root


def _fake_worker(calls):
    """Stands in for the worker: check_double earns 2 unless the notebook says BUG, check_triple 3;
    it writes an 'executed' notebook like the real one."""

    def run_worker(job, course, limits, sandbox, tmp_root, pool):
        calls.append((job.student, job.assignment))
        text = (job.sub_dir / f"{job.assignment}.ipynb").read_text(encoding="utf-8")
        double = 0.0 if "BUG" in text else 2.0
        out = Path(tmp_root) / f"{job.student}_{job.assignment}.ipynb"
        out.write_text(text, encoding="utf-8")
        steps = [{"id": "check_double", "points": double, "max_points": 2.0, "passed": double == 2.0, "message": ""},
                 {"id": "check_triple", "points": 3.0, "max_points": 3.0, "passed": True, "message": ""}]
        return {"status": "ok", "message": "", "steps": steps, "notes": [], "score": double + 3.0, "max_score": 5.0,
                "_notebook": str(out), "_jobdir": str(tmp_root)}
    return run_worker


def _quick_setup(monkeypatch, root, template):
    shutil.copytree(template, root, symlinks=True)
    calls = []
    monkeypatch.setattr(executors, "run_worker", _fake_worker(calls))
    monkeypatch.setattr(storing, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    return {"root": root, "calls": calls}


@pytest.fixture
def quick(tmp_path, monkeypatch, empty_course):
    """A course with alice and bob, not graded yet (graded by :func:`_fake_worker`)."""
    return _quick_setup(monkeypatch, tmp_path / "course", empty_course)


@pytest.fixture(scope="module")
def graded_course(empty_course, tmp_path_factory):
    """The quick course graded, exported, and a manual score given to alice's check_double."""
    root = tmp_path_factory.mktemp("graded") / "course"
    with pytest.MonkeyPatch.context() as mp:
        _quick_setup(mp, root, empty_course)
        _grade(root)
    _set_in_gradebook(root, "alice", "check_double", manual_score=1.0)
    export.export(root)
    return root


@pytest.fixture
def graded(tmp_path, monkeypatch, graded_course):
    """A copy of :func:`graded_course` to change."""
    return _quick_setup(monkeypatch, tmp_path / "course", graded_course)


def _grade(root, **kw):
    kw.setdefault("sandbox", False)
    kw.setdefault("workers", 1)
    return autograde.grade_class(root, stream=io.StringIO(), show_progress=False, **kw)


def _gradebook(root):
    """{(student, assignment): ({step: (auto, manual)}, flagged)} and the submission rows."""
    db = sqlite3.connect(str(root / "gradebook.db"))
    try:
        rows = db.execute(
            "SELECT st.id, a.name, gc.name, g.auto_score, g.manual_score, sn.flagged FROM grade g "
            "JOIN submitted_notebook sn ON g.notebook_id = sn.id JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
            "JOIN student st ON sa.student_id = st.id JOIN assignment a ON sa.assignment_id = a.id "
            "JOIN base_cell gc ON g.cell_id = gc.id").fetchall()
        subs = db.execute("SELECT st.id, a.name FROM submitted_assignment sa JOIN student st ON sa.student_id = st.id "
                          "JOIN assignment a ON sa.assignment_id = a.id").fetchall()
    finally:
        db.close()
    out = {}
    for student, name, step, auto, manual, flagged in rows:
        grades, _ = out.setdefault((student, name), ({}, bool(flagged)))
        grades[step] = (auto, manual)
    return out, sorted(subs)


def _set_in_gradebook(root, student, step, **values):
    db = sqlite3.connect(str(root / "gradebook.db"))
    try:
        sets = ", ".join(f"{k} = ?" for k in values)
        db.execute(f"UPDATE grade SET {sets} WHERE id IN (SELECT g.id FROM grade g JOIN base_cell gc ON g.cell_id = gc.id "
                   "JOIN submitted_notebook sn ON g.notebook_id = sn.id JOIN submitted_assignment sa ON "
                   "sn.assignment_id = sa.id JOIN student st ON sa.student_id = st.id WHERE st.id = ? AND gc.name = ?)",
                   (*values.values(), student, step))
        db.commit()
    finally:
        db.close()


def _result(root, student):
    return json.loads(jobs.result_path(root, student, A).read_text(encoding="utf-8"))


def _assert_consistent(root):
    """Every store agrees: results stored, gradebook auto scores equal to the results' points,
    autograded notebooks with the recorded hash, exports equal to a fresh export."""
    writer = GradebookWriter(root)
    try:
        assert storing.audit(root, [A], writer) == []
    finally:
        writer.close()
    gb, subs = _gradebook(root)
    assert len(subs) == len(set(subs))
    for (student, name) in subs:
        res = _result(root, student)
        assert res["state"] == storing.STORED
        assert {s["id"]: s["points"] for s in res["steps"]} == {k: v[0] for k, v in gb[(student, name)][0].items()}


def _cli(*argv):
    parser = argparse.ArgumentParser()
    autograde.add_arguments(parser)
    return autograde.main(parser.parse_args([str(a) for a in argv]))


# --------------------------------------------------------------------------- the storing path


def test_crash_points_are_named_and_checked(monkeypatch):
    assert len(set(storing.CRASH_POINTS)) == len(storing.CRASH_POINTS)
    with pytest.raises(ValueError, match="not in CRASH_POINTS"):
        storing.crash_point("no-such-point")
    monkeypatch.setenv(storing.CRASH_ENV, "result-pendng")
    with pytest.raises(RuntimeError, match="MHSA_GRADING_CRASH_AT='result-pendng'.*result-pending"):
        storing.check_crash_env()


def test_a_stored_result_is_consistent_and_skipped_next_time(quick):
    root = quick["root"]
    run = _grade(root)
    assert {r["student"] for r in run["results"]} == {"alice", "bob"}
    _assert_consistent(root)
    for student in ("alice", "bob"):
        res = _result(root, student)
        nb = root / "autograded" / student / A / f"{A}.ipynb"
        assert res["notebook_sha256"] == storing.file_sha256(nb)
    assert not list((root / "autograded" / "alice").glob(".*"))  # no temporary sibling left
    again = _grade(root)
    assert again["results"] == [] and again["restored"] == []
    assert sorted(again["skipped"]) == [("alice", A), ("bob", A)]


def _corrupt_gradebook_score(root):
    _set_in_gradebook(root, "bob", "check_triple", auto_score=1.0)


def _corrupt_pending(root):
    res = _result(root, "bob")
    res["state"] = storing.PENDING
    storing.write_json_atomic(jobs.result_path(root, "bob", A), res)


def _corrupt_flag(root):
    db = sqlite3.connect(str(root / "gradebook.db"))
    db.execute("UPDATE submitted_notebook SET flagged = 1 WHERE assignment_id IN (SELECT sa.id FROM "
               "submitted_assignment sa JOIN student st ON sa.student_id = st.id WHERE st.id = 'bob')")
    db.commit()
    db.close()


def _corrupt_notebook(root):
    (root / "autograded" / "bob" / A / f"{A}.ipynb").write_text("{}", encoding="utf-8")


def _delete_notebook(root):
    (root / "autograded" / "bob" / A / f"{A}.ipynb").unlink()


def _delete_result(root):
    jobs.result_path(root, "bob", A).unlink()


def _garble_result(root):
    jobs.result_path(root, "bob", A).write_text('{"student": "bob", "steps": [', encoding="utf-8")


def _result_of_another(root):
    res = _result(root, "bob")
    res["student"] = "alice"
    storing.write_json_atomic(jobs.result_path(root, "bob", A), res)


def _old_result(root):
    res = _result(root, "bob")
    del res["state"], res["notebook_sha256"]
    storing.write_json_atomic(jobs.result_path(root, "bob", A), res)


def _alter_result_points(root):
    """A step's points edited by hand in a stored result: storing it into the gradebook would
    trust the edit, so the submission is graded again."""
    res = _result(root, "bob")
    step = res["steps"][0]
    step["points"] = float(step["max_points"]) - float(step["points"]) or 0.5
    storing.write_json_atomic(jobs.result_path(root, "bob", A), res)


def _alter_result_status(root):
    res = _result(root, "bob")
    res["status"] = "timeout" if res["status"] != "timeout" else "ok"
    storing.write_json_atomic(jobs.result_path(root, "bob", A), res)


def _result_without_checksum(root):
    res = _result(root, "bob")
    del res["result_sha256"]
    storing.write_json_atomic(jobs.result_path(root, "bob", A), res)


# (how the stores are corrupted, what the next run must do for bob)
CORRUPTIONS = {
    "gradebook auto score": (_corrupt_gradebook_score, "restore"),
    "gradebook flag": (_corrupt_flag, "restore"),
    "result pending": (_corrupt_pending, "restore"),
    "autograded notebook changed": (_corrupt_notebook, "regrade"),
    "autograded notebook missing": (_delete_notebook, "regrade"),
    "result missing": (_delete_result, "regrade"),
    "result not JSON": (_garble_result, "regrade"),
    "result of another submission": (_result_of_another, "regrade"),
    "result of an older grader": (_old_result, "regrade"),
    "result points altered": (_alter_result_points, "regrade"),
    "result status altered": (_alter_result_status, "regrade"),
    "result without checksum": (_result_without_checksum, "regrade"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_skipping_requires_a_complete_consistent_store(graded, name):
    quick = graded
    root = quick["root"]
    corrupt, action = CORRUPTIONS[name]
    corrupt(root)
    quick["calls"].clear()
    run = _grade(root)
    assert run["skipped"] == [("alice", A)]  # only what is inconsistent
    if action == "restore":
        assert [r["student"] for r in run["restored"]] == ["bob"] and run["results"] == []
        assert quick["calls"] == []  # stored again without grading
    else:
        assert [r["student"] for r in run["results"]] == ["bob"] and run["restored"] == []
        assert quick["calls"] == [("bob", A)]
    _assert_consistent(root)


class Killed(BaseException):
    """Stands in for SIGKILL in-process (escapes every ``except Exception``)."""


@pytest.mark.parametrize("point", storing.CRASH_POINTS)
def test_each_point_is_reached_and_an_interrupted_store_is_found(graded, monkeypatch, point):
    """In-process: the hook fires at every point of a run that regrades bob with exports present;
    whatever is left is found and repaired by the next run. (The real SIGKILL is the slow test's.)"""
    root = graded["root"]
    _submit(root, "bob", buggy=True)

    def kill(pid, sig):
        raise Killed(point)

    monkeypatch.setattr(storing.os, "kill", kill)
    monkeypatch.setenv(storing.CRASH_ENV, point)
    with pytest.raises(Killed):
        _grade(root)
    monkeypatch.delenv(storing.CRASH_ENV)
    run = _grade(root)
    assert ("alice", A) in run["skipped"]
    assert ("bob", A) not in run["skipped"] or point.startswith("exports")
    _assert_consistent(root)
    gb, _ = _gradebook(root)
    assert gb[("bob", A)][0]["check_double"] == (0.0, None)
    rows = list(csv.reader(open(root / "exports" / f"{A}.csv", encoding="utf-8")))
    assert ["bob", "0", "3", "3", "5", "ok"] in [r[:6] for r in rows]  # (then the column of hand-graded steps)


# --------------------------------------------------------------------------- manual scores


def test_force_prints_the_gradebook_total_with_manual_scores(graded):
    root = graded["root"]
    _set_in_gradebook(root, "bob", "check_double", manual_score=0.5)
    run = _grade(root, force=True)
    out = io.StringIO()
    assert autograde.report(run, out) == 0
    bob = [line for line in out.getvalue().splitlines() if line.strip().startswith("bob")]
    assert len(bob) == 1 and "3.5 / 5" in bob[0] and "(1 step graded by hand; auto 5)" in bob[0], bob
    alice = [line for line in out.getvalue().splitlines() if line.strip().startswith("alice")]
    assert "4 / 5" in alice[0] and "(1 step graded by hand; auto 5)" in alice[0], alice
    gb, _ = _gradebook(root)
    assert gb[("bob", A)][0]["check_double"] == (2.0, 0.5)  # the instructor's score stays
    _assert_consistent(root)


# --------------------------------------------------------------------------- storage errors


def _failing_write_json(error, times=None):
    """storing.write_json_atomic failing for bob's result (``times`` times, or always)."""
    real, left = storing.write_json_atomic, [times]

    def fn(path, data):
        if Path(path).parent.name == "bob" and (left[0] is None or left[0] > 0):
            left[0] = None if left[0] is None else left[0] - 1
            raise error
        return real(path, data)
    return real, fn


def _failing_gradebook(error):
    real = GradebookWriter.write

    def fn(self, course, job, result):
        if job.student == "bob":
            raise error
        return real(self, course, job, result)
    return real, fn


@pytest.mark.parametrize("what", ["disk full writing the result", "gradebook locked"])
def test_a_storage_error_is_that_submissions_and_the_run_goes_on(quick, monkeypatch, what):
    root = quick["root"]
    if what == "gradebook locked":
        owner, name = GradebookWriter, "write"
        real, fn = _failing_gradebook(sqlite3.OperationalError("database is locked"))
    else:
        owner, name = storing, "write_json_atomic"
        real, fn = _failing_write_json(OSError(errno.ENOSPC, "No space left on device"))
    monkeypatch.setattr(owner, name, fn)
    run = _grade(root)
    by = {r["student"]: r for r in run["results"]}
    assert "store_error" not in by["alice"] and _result(root, "alice")["state"] == storing.STORED
    assert "after 4 attempts" in by["bob"]["store_error"]
    assert ("locked" if what == "gradebook locked" else "No space left") in by["bob"]["store_error"]
    out = io.StringIO()
    assert autograde.report(run, out) == 1
    assert "NOT STORED" in out.getvalue() and "1 NOT stored" in out.getvalue()
    monkeypatch.setattr(owner, name, real)  # the fault is gone: the next run stores bob, and only bob
    run = _grade(root)
    assert run["skipped"] == [("alice", A)]
    _assert_consistent(root)


def test_a_passing_storage_error_is_retried(quick, monkeypatch):
    root = quick["root"]
    monkeypatch.setattr(storing, "write_json_atomic", _failing_write_json(OSError(errno.EIO, "I/O error"), times=2)[1])
    run = _grade(root)
    assert all("store_error" not in r for r in run["results"])
    _assert_consistent(root)


def test_a_grader_error_is_that_submissions(quick, monkeypatch):
    root = quick["root"]
    real = executors.run_worker

    def worker(job, *args):
        if job.student == "alice":
            raise RuntimeError("the pool broke")
        return real(job, *args)

    monkeypatch.setattr(executors, "run_worker", worker)
    run = _grade(root)
    by = {r["student"]: r for r in run["results"]}
    assert by["alice"]["status"] == "grader-error" and "the pool broke" in by["alice"]["message"]
    assert [s["points"] for s in by["alice"]["steps"]] == [0.0, 0.0]
    assert by["bob"]["status"] == "ok"
    gb, _ = _gradebook(root)
    assert gb[("alice", A)][1] is True and gb[("bob", A)][1] is False
    _assert_consistent(root)
    assert autograde.report(run, io.StringIO()) == 1
    monkeypatch.setattr(executors, "run_worker", real)
    assert [r["student"] for r in _grade(root)["results"]] == ["alice"]  # a grader error is graded again


def test_a_grader_error_while_storing_keeps_the_others(quick, monkeypatch):
    root = quick["root"]

    def broken(*a, **k):
        raise KeyError("steps")

    real = storing.store
    monkeypatch.setattr(storing, "store", lambda course, job, result, writer: (
        broken() if job.student == "alice" else real(course, job, result, writer)))
    run = _grade(root)
    by = {r["student"]: r for r in run["results"]}
    assert "KeyError" in by["alice"]["store_error"] and "store_error" not in by["bob"]
    assert _result(root, "bob")["state"] == storing.STORED


# --------------------------------------------------------------------------- odd folders


def test_odd_folders_are_their_submissions_problems(quick, monkeypatch):
    root = quick["root"]
    sub = root / "submitted"
    (sub / "carol").mkdir()
    os.symlink("loop", sub / "carol" / A)  # a link to itself: ELOOP, even for root
    os.symlink(sub / "carol" / A, sub / "carol" / "loop")
    (sub / "dave").mkdir()
    (sub / "dave" / A).write_text("not a folder")
    _submit(root, "erin")
    _submit(root, "frank")
    (sub / "gina.txt").write_text("a file where a student's folder should be")
    os.mkdir(os.fsencode(sub) + b"/h\xffdi")  # a name that is not UTF-8
    os.mkdir(sub / "ivan")
    os.symlink(sub / "nowhere", sub / "ivan" / A)  # a dangling link
    unreadable = {sub / "erin" / A, sub / "frank"}  # as if chmod 000 (tests may run as root)
    _submit(root, "kim")
    (sub / "kim" / A / "data").mkdir()
    (sub / "kim" / A / "data" / "table.csv").write_text("1,2\n")
    unreadable.add(sub / "kim" / A / "data" / "table.csv")
    real = jobs._list_dir

    def open_file(path, *args, **kwargs):
        if Path(path) in unreadable:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(jobs, "open", open_file, raising=False)  # what the fingerprint reads with

    def list_dir(folder):
        if Path(folder) in unreadable:
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))
        return real(folder)

    monkeypatch.setattr(jobs, "_list_dir", list_dir)
    run = _grade(root)
    by = {r["student"]: r for r in run["results"]}
    assert set(by) == {"alice", "bob", "carol", "dave", "erin", "ivan", "kim"}
    assert by["alice"]["status"] == by["bob"]["status"] == "ok"
    for student, words in (("carol", "cannot be read"), ("dave", "is a file, not a folder"),
                           ("erin", "Permission denied"), ("ivan", "link to nothing"),
                           ("kim", "data/table.csv cannot be read (PermissionError")):
        assert by[student]["status"] == "unreadable", student
        assert words in by[student]["message"] and f"submitted/{student}/{A}" in by[student]["message"], student
        assert by[student]["score"] == 0 and _result(root, student)["state"] == storing.STORED
    problems = dict(run["problems"])
    assert "Permission denied" in problems["submitted/frank"]
    assert "not a folder" in problems["submitted/gina.txt"]
    assert "not valid UTF-8" in problems["submitted/h\\xffdi"]
    gb, _ = _gradebook(root)
    assert gb[("carol", A)][1] is True and gb[("alice", A)][1] is False  # flagged for a person
    out = io.StringIO()
    assert autograde.report(run, out) == 1
    assert "3 folder(s) not graded" in out.getvalue()
    # Nothing changed: the problems are stable, nothing is graded again.
    again = _grade(root)
    assert again["results"] == [] and len(again["skipped"]) == 7
    # Fixed: graded.
    unreadable.clear()
    again = _grade(root)
    assert {r["student"] for r in again["results"]} == {"erin", "frank", "kim"}
    assert all(r["status"] == "ok" for r in again["results"])


def test_a_chmod_000_folder_is_found_unreadable(quick):
    if os.geteuid() == 0:
        pytest.skip("root reads a chmod 000 folder anyway; test_odd_folders_are_their_submissions_problems "
                    "covers unreadable folders by making the listing fail")
    root = quick["root"]
    locked = root / "submitted" / "bob" / A
    locked.chmod(0)
    try:
        found, problems = jobs.find_submissions(root, [A], None, engine.Limits(), False)
    finally:
        locked.chmod(0o755)
    by = {j.student: j for j in found}
    assert by["alice"].problem is None and problems == []
    assert by["bob"].problem[0] == "unreadable" and "PermissionError" in by["bob"].problem[1]


def test_limits_are_compared_as_numbers_in_the_fingerprint(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "a.txt").write_text("x")
    one = jobs.fingerprint(sub, tmp_path / "src", engine.Limits(cell_timeout=20, memory_mb=0), "7", False)
    assert one == jobs.fingerprint(sub, tmp_path / "src", engine.Limits(cell_timeout=20.0, memory_mb=0.0), "7", False)
    assert one != jobs.fingerprint(sub, tmp_path / "src", engine.Limits(cell_timeout=21, memory_mb=0), "7", False)
    (sub / "a.txt").write_text("y")
    assert one != jobs.fingerprint(sub, tmp_path / "src", engine.Limits(cell_timeout=20, memory_mb=0), "7", False)


def test_statuses_are_known_and_problems_flagged():
    assert set(PROBLEM_STATUSES) <= set(STATUSES)
    assert "unreadable" in PROBLEM_STATUSES and "grader-error" in PROBLEM_STATUSES


# --------------------------------------------------------------------------- --check


def _exported(root):
    return {p.name: p.read_bytes() for p in sorted((root / "exports").glob("*.csv"))}


def _edit_export(root):
    path = root / "exports" / f"{A}.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("bob,2,3,5", "bob,2,3,4"), encoding="utf-8")


def _leftover_folder(root):
    (root / "autograded" / "bob" / f".{A}.new-1-2").mkdir()


def _leftover_export(root):
    (root / ".exports.abc").mkdir()


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _leftover_run_folder(root):
    """What a grading run killed with SIGKILL leaves: its temporary folder (its processes died with it)."""
    folder = root / runlock.TMP_NAME / f"run-{_dead_pid()}-20260101-000000" / "job"
    folder.mkdir(parents=True)
    (folder / "bob.ipynb").write_text("{}", encoding="utf-8")


def test_a_live_runs_folder_is_not_a_leftover(quick):
    root = quick["root"]
    live = root / runlock.TMP_NAME / f"run-{os.getpid()}-20260101-000000"
    dead = root / runlock.TMP_NAME / f"run-{_dead_pid()}-20260101-000000"
    stray = root / runlock.TMP_NAME / "stray.txt"
    live.mkdir(parents=True)
    dead.mkdir()
    stray.write_text("", encoding="utf-8")
    assert runlock.stale_folders(root) == sorted([dead, stray])


CHECK_CASES = dict(CORRUPTIONS)
CHECK_CASES.update({"export edited": (_edit_export, "export"), "temporary folder left": (_leftover_folder, "remove"),
                    "temporary export folder left": (_leftover_export, "remove"),
                    "run folder of a killed run left": (_leftover_run_folder, "remove")})


def _snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*")) if "gradebook.db" not in p.name}


@pytest.mark.parametrize("name", sorted(CHECK_CASES))
def test_check_reports_then_repairs_each_divergence(graded, name, capsys):
    quick = graded
    root = quick["root"]
    good = _exported(root)
    corrupt, action = CHECK_CASES[name]
    corrupt(root)
    before, gb_before = _snapshot(root), _gradebook(root)
    assert _cli("--course", root, "--check", "--dry-run") == 1
    out = capsys.readouterr().out
    assert "would" in out and "nothing changed" in out
    assert _snapshot(root) == before and _gradebook(root) == gb_before
    quick["calls"].clear()
    assert _cli("--course", root, "--check", "--no-sandbox") == 1
    out = capsys.readouterr().out
    assert "repaired; the stores agree now" in out, out
    assert quick["calls"] == ([("bob", A)] if action == "regrade" else [])
    _assert_consistent(root)
    assert _exported(root) == good
    gb, _ = _gradebook(root)
    assert gb[("alice", A)][0]["check_double"] == (2.0, 1.0)  # the instructor's manual score stays


def test_check_on_agreeing_stores_says_so(graded, capsys):
    assert _cli("--course", graded["root"], "--check", "--no-sandbox") == 0
    assert "result files, gradebook, autograded notebooks and exports agree" in capsys.readouterr().out


def test_check_of_some_students_looks_at_them_only(graded, capsys):
    root = graded["root"]
    _corrupt_notebook(root)
    assert _cli("--course", root, "--check", "--dry-run", "--student", "alice") == 0
    assert _cli("--course", root, "--check", "--dry-run", "--student", "bob") == 1
    assert "bob/01_tiny: autograded/bob/01_tiny/01_tiny.ipynb is not the graded one" in capsys.readouterr().out


def test_check_reports_what_it_cannot_repair(graded, capsys):
    root = graded["root"]
    _delete_notebook(root)
    shutil.rmtree(root / "submitted" / "bob")
    assert _cli("--course", root, "--check", "--no-sandbox") == 1
    out = capsys.readouterr().out
    assert "no longer in submitted/" in out and "1 NOT repaired" in out


def test_check_arguments_are_checked(quick, capsys):
    root = quick["root"]
    assert _cli("--course", root, "--dry-run") == 2
    assert "--dry-run goes with --check" in capsys.readouterr().err
    assert _cli("--course", root, "--check", "--force") == 2


# --------------------------------------------------------------------------- the real grader, killed


def _copy_course(src, dest):
    shutil.copytree(src, dest, symlinks=True)
    return dest


def _state(root):
    """What a run leaves, for comparison with an uninterrupted run: gradebook, results' scores and
    statuses, autograded notebooks (their cell outputs), exports."""
    gb, subs = _gradebook(root)
    results = {}
    for p in sorted((root / "grading").glob("*/*.json")):
        r = json.loads(p.read_text(encoding="utf-8"))
        results[p.parent.name] = (r["state"], r["status"], {s["id"]: s["points"] for s in r["steps"]})
    nbs = {}
    for p in sorted((root / "autograded").glob(f"*/{A}/{A}.ipynb")):
        nb = nbformat.read(str(p), as_version=4)
        nbs[p.parent.parent.name] = [c.get("outputs") for c in nb.cells if c.cell_type == "code"]
    return {"gradebook": gb, "submissions": subs, "results": results, "notebooks": nbs, "exports": _exported(root)}


@pytest.fixture(scope="module")
def tiny_class(tmp_path_factory):
    """A tiny course built by nbgrader, alice and bob graded for real (no sandbox), exported;
    and the reference: the same class after bob's buggy resubmission, graded without a stop."""
    from autograder.grading import course

    tmp = tmp_path_factory.mktemp("store")
    write(notebook(source_cells()), tmp / "solutions" / f"{A}.ipynb")
    root = tmp / "graded"
    course.build(root, tmp / "solutions")
    learner = nbformat.read(str(root / "release" / A / f"{A}.ipynb"), as_version=4)
    source = nbformat.read(str(course.source_notebook(root, A)), as_version=4)
    good = fill_submission(learner, source)
    buggy = fill_submission(learner, source, {"double": "return x + 1\n"})
    for student in ("alice", "bob"):
        write(good, root / "submitted" / student / A / f"{A}.ipynb")
    run = autograde.grade_class(root, workers=1, limits=LIMITS, sandbox=False, stream=io.StringIO(),
                                show_progress=False)
    assert [r["status"] for r in run["results"]] == ["ok", "ok"], run["results"]
    export.export(root)
    ref = _copy_course(root, tmp / "reference")
    write(buggy, ref / "submitted" / "bob" / A / f"{A}.ipynb")
    run = autograde.grade_class(ref, workers=1, limits=LIMITS, sandbox=False, stream=io.StringIO(),
                                show_progress=False)
    assert [r["student"] for r in run["results"]] == ["bob"] and run["skipped"] == [("alice", A)]
    bob = run["results"][0]
    assert bob["status"] == "ok" and 0 < bob["score"] < bob["max_score"], bob
    return {"tmp": tmp, "graded": root, "reference": _state(ref), "buggy": buggy}


LIMITS = engine.Limits(cell_timeout=20, total_timeout=60, memory_mb=0, max_output_bytes=100_000)


def _autograde_process(root, env):
    argv = [sys.executable, "-m", "autograder", "autograde", "--course", str(root), "--no-sandbox", "-j", "1",
            "--quiet", "--timeout", str(LIMITS.cell_timeout), "--total-timeout", str(LIMITS.total_timeout),
            "--memory-mb", "0", "--max-output", str(LIMITS.max_output_bytes)]
    return subprocess.run(argv, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)


#: Grading runs of the kill test at once (each is mostly waiting: a process, a kernel).
PARALLEL_RUNS = 4


@pytest.mark.slow
def test_sigkill_at_every_storing_point_then_the_next_run_repairs_exactly_that(tiny_class, tmp_path):
    """For every point of CRASH_POINTS: bob resubmits, the grader is SIGKILLed at that point while
    storing him, and the next run regrades or re-stores bob only (alice is unchanged); then
    gradebook, result files, autograded notebooks and exports equal the uninterrupted run's, one
    submission row each. (The points' runs are independent course copies, run a few at a time.)"""
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ, TMPDIR=str(tmp_path))
    roots = {}
    for point in storing.CRASH_POINTS:
        roots[point] = _copy_course(tiny_class["graded"], tmp_path / point)
        write(tiny_class["buggy"], roots[point] / "submitted" / "bob" / A / f"{A}.ipynb")
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        killed = dict(zip(storing.CRASH_POINTS, pool.map(
            lambda pt: _autograde_process(roots[pt], dict(env, **{storing.CRASH_ENV: pt})), storing.CRASH_POINTS)))
        again = dict(zip(storing.CRASH_POINTS, pool.map(
            lambda pt: _autograde_process(roots[pt], env) if killed[pt].returncode == -9 else None,
            storing.CRASH_POINTS)))
    restored_from = storing.CRASH_POINTS.index("gradebook-commit")
    for i, point in enumerate(storing.CRASH_POINTS):
        proc = killed[point]
        assert proc.returncode == -9, (point, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
        proc = again[point]
        assert proc.returncode == 0, (point, proc.stdout[-2000:], proc.stderr[-2000:])
        last = proc.stdout.strip().splitlines()[-1]
        if point.startswith("exports"):
            assert "graded 0 submission(s)" in last and "; 2 unchanged" in last, (point, last)
            assert "exports regenerated" in proc.stdout, point
        elif i >= restored_from:  # the complete result is stored again, without grading
            assert "graded 0 submission(s)" in last and "; 1 stored again; 1 unchanged" in last, (point, last)
        else:
            assert "graded 1 submission(s)" in last and "stored again" not in last and "; 1 unchanged" in last, \
                (point, last)
        root = roots[point]
        assert _state(root) == tiny_class["reference"], point
        assert not list(root.glob(".exports.*")), point
        _assert_consistent(root)


@pytest.mark.slow
def test_check_cli_regrades_a_lost_autograded_notebook(tiny_class, tmp_path):
    from conftest import run_cli

    root = _copy_course(tiny_class["graded"], tmp_path / "check")
    (root / "autograded" / "alice" / A / f"{A}.ipynb").unlink()
    proc = run_cli("autograde", "--course", root, "--check", "--no-sandbox", "--quiet", "-j", "1",
                   "--memory-mb", "0", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "alice/01_tiny: autograded/alice/01_tiny/01_tiny.ipynb is missing -> grade the submission again" in proc.stdout
    assert "repaired" in proc.stdout
    proc = run_cli("autograde", "--course", root, "--check", "--no-sandbox", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_consistent(root)


# --------------------------------------------------------------------------- export beside a run


def _export_cli(*argv):
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    return export.main(parser.parse_args([str(a) for a in argv]))


def test_export_waits_for_no_run_and_never_writes_half_a_file(graded, capsys, monkeypatch):
    """`export` while a grading run holds the course: refused with the holder named (nothing
    written); after the run it writes; a write that fails half way leaves the old file whole."""
    root = graded["root"]
    before = _exported(root)
    (root / "exports" / f"{A}.csv").write_text("stale\n", encoding="utf-8")
    with runlock.course_lock(root):
        assert _export_cli("--course", root) == 1
        err = capsys.readouterr().err
        assert "being graded" in err and "--wait" in err, err
        assert (root / "exports" / f"{A}.csv").read_text(encoding="utf-8") == "stale\n"
    assert _export_cli("--course", root) == 0
    assert _exported(root) == before

    real_writer = csv.writer

    def failing_writer(f):
        w = real_writer(f)

        class Half:
            def __init__(self):
                self.rows = 0

            def writerow(self, row):
                self.rows += 1
                if self.rows == 2:
                    raise OSError(28, "No space left on device")
                return w.writerow(row)
        return Half()

    monkeypatch.setattr(export.csv, "writer", failing_writer)
    with pytest.raises(OSError):
        export.export(root)
    assert _exported(root) == before  # the old files, whole
    assert not [p.name for p in (root / "exports").iterdir() if p.name.startswith(".")]


def test_a_submission_taken_out_of_submitted_keeps_its_grade_and_is_named(graded):
    """A graded submission whose folder was removed: its grade and result stay (nothing graded is
    dropped in silence), and every run names it until the folder is back or the grade removed."""
    root = graded["root"]
    before = _gradebook(root)
    shutil.rmtree(root / "submitted" / "bob" / A)
    out = _grade(root)
    assert out["withdrawn"] == [("bob", A)]
    assert _gradebook(root) == before and _result(root, "bob")["state"] == storing.STORED
    text = io.StringIO()
    autograde.report(out, text)
    assert f"1 submission(s) graded before are no longer in submitted/ (bob/{A})" in text.getvalue()
    assert _grade(root, students=["alice"])["withdrawn"] == []
    assert _grade(root, only={("alice", A)})["withdrawn"] == []
