"""A grading run that is safe to run, to run twice and to kill: one run per course at a time (a
lock that dies with its holder), nothing of a run left behind (workers, kernels, sandboxes,
temporary folders; a killed run's leftovers removed by the next run), and failures of the cells
outside the tests named in the result's notes. Each property is shown by injecting its fault.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, fill_submission, find_cell, insert_after, notebook, source_cells, write

from autograder.grading import engine, runlock

PY = sys.executable


def _wait_for(predicate, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _hold_lock(course: Path, seconds: float) -> subprocess.Popen:
    """Another process that holds the course's lock for ``seconds`` (prints "held" once it does)."""
    code = textwrap.dedent(f"""
        import sys, time
        from autograder.grading import runlock
        with runlock.course_lock({str(course)!r}):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    assert proc.stdout.readline().strip() == "held"
    return proc


# --------------------------------------------------------------------------- the lock


def test_a_second_run_is_refused_at_once_naming_the_holder(tmp_path):
    holder = _hold_lock(tmp_path, 60)
    try:
        t0 = time.monotonic()
        with pytest.raises(runlock.CourseBusy) as e:
            with runlock.course_lock(tmp_path):
                pass
        assert time.monotonic() - t0 < 2
        msg = str(e.value)
        assert f"pid {holder.pid}" in msg and "started 20" in msg and "--wait" in msg, msg
        info = runlock.holder(tmp_path)
        assert info is not None and info["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_releases_the_lock(tmp_path):
    holder = _hold_lock(tmp_path, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert runlock.holder(tmp_path) is None
    assert (tmp_path / runlock.LOCK_NAME).exists()  # what it left, unlocked
    with runlock.course_lock(tmp_path) as path:
        assert path == tmp_path / runlock.LOCK_NAME
        assert runlock.holder(tmp_path)["pid"] == os.getpid()
    assert runlock.holder(tmp_path) is None
    assert not (tmp_path / runlock.LOCK_NAME).exists()  # a run that ends leaves the course folder as it was


def test_wait_blocks_until_the_holder_is_done(tmp_path):
    holder = _hold_lock(tmp_path, 1.5)
    said = io.StringIO()
    t0 = time.monotonic()
    with runlock.course_lock(tmp_path, wait=True, stream=said):
        waited = time.monotonic() - t0
        assert runlock.holder(tmp_path)["pid"] == os.getpid()
    holder.wait()
    assert waited > 1.0  # it held the lock for 1.5 s
    assert f"waiting for the grading run of pid {holder.pid}" in said.getvalue()


def test_the_lock_excludes_a_second_holder_in_the_same_process(tmp_path):
    with runlock.course_lock(tmp_path):
        with pytest.raises(runlock.CourseBusy, match=f"pid {os.getpid()}"):
            with runlock.course_lock(tmp_path):
                pass
    with runlock.course_lock(tmp_path):  # released after the first block
        pass


def test_the_lock_needs_an_existing_course_folder(tmp_path):
    with pytest.raises(ValueError, match="course must be an existing folder, got .*nowhere"):
        with runlock.course_lock(tmp_path / "nowhere"):
            pass


def test_a_course_folder_that_cannot_hold_the_lock_is_a_clear_error(tmp_path):
    (tmp_path / runlock.LOCK_NAME).mkdir()  # (a folder where the lock file goes: cannot be opened)
    with pytest.raises(RuntimeError, match="cannot open the grading lock .*grading.lock"):
        with runlock.course_lock(tmp_path):
            pass


# --------------------------------------------------------------------------- leftovers


def _leftover(course: Path, name: str = "run-999999-20260101-000000") -> tuple:
    """A killed run's folder with a file and a process still working in it."""
    old = course / runlock.TMP_NAME / name
    (old / "job_x").mkdir(parents=True)
    (old / "job_x" / "result.json").write_text("{}")
    proc = subprocess.Popen([PY, "-c", "import time; time.sleep(120)"], cwd=str(old / "job_x"),
                            start_new_session=True)
    return old, proc


def test_the_next_run_removes_a_killed_runs_folder_and_processes(tmp_path):
    old, proc = _leftover(tmp_path)
    said = io.StringIO()
    run = runlock.GradingRun(tmp_path, stream=said)
    try:
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert not old.exists()
        assert run.folder.is_dir() and run.folder.parent == tmp_path / runlock.TMP_NAME
        assert run.folder.name.startswith(f"run-{os.getpid()}-")
        assert "removed 1 temporary folder(s) left by an interrupted run" in said.getvalue()
        assert runlock.holder(tmp_path)["pid"] == os.getpid()
        # Its own folder and what works in it go at its end.
        mine = subprocess.Popen([PY, "-c", "import time; time.sleep(120)"], cwd=str(run.folder),
                                start_new_session=True)
    finally:
        run.close()
    assert mine.wait(timeout=5) == -signal.SIGKILL
    assert not (tmp_path / runlock.TMP_NAME).exists()
    assert runlock.holder(tmp_path) is None


def test_a_refused_run_touches_nothing_of_the_running_one(tmp_path):
    holder = _hold_lock(tmp_path, 60)
    theirs, proc = _leftover(tmp_path, f"run-{holder.pid}-20260101-000000")
    try:
        with pytest.raises(runlock.CourseBusy):
            runlock.GradingRun(tmp_path)
        assert theirs.is_dir() and proc.poll() is None
        assert sorted(p.name for p in (tmp_path / runlock.TMP_NAME).iterdir()) == [theirs.name]
    finally:
        for p in (holder, proc):
            p.kill()
            p.wait()
    with runlock.GradingRun(tmp_path) as run:  # and once the holder is gone, the next run cleans up
        assert not theirs.exists() and run.folder.is_dir()


def test_only_processes_in_the_folder_are_killed(tmp_path):
    inside, outside = tmp_path / "run-1", tmp_path / "run-10"
    inside.mkdir()
    outside.mkdir()
    a = subprocess.Popen([PY, "-c", "import time; time.sleep(120)", str(inside / "x")], cwd=str(tmp_path))
    b = subprocess.Popen([PY, "-c", "import time; time.sleep(120)", str(outside)], cwd=str(tmp_path))
    try:
        assert runlock.kill_processes_under(inside) == [a.pid]
        assert a.wait(timeout=5) == -signal.SIGKILL
        assert b.poll() is None
    finally:
        b.kill()
        b.wait()


# --------------------------------------------------------------------------- dying with the parent

CHILD_OF_MIDDLE = """
import os, subprocess, sys, time
sys.path.insert(0, {root!r})
from autograder.grading import lifeline
how = {how!r}
if how == "preexec":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             preexec_fn=lifeline.preexec_die_with_parent(), start_new_session=True)
else:
    code = ("import sys, time; sys.path.insert(0, {root!r}); from autograder.grading import lifeline; "
            + ("lifeline._prctl_pdeathsig = lambda sig: False; " if how == "poll" else "")
            + "print(lifeline.die_with_parent(int(sys.argv[1]), poll_s=0.1), flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code, str(os.getpid())], start_new_session=True,
                             stdout=subprocess.PIPE, text=True)
    print(child.stdout.readline().strip(), flush=True)
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("how", ["preexec", "prctl", "poll"])
def test_a_child_dies_when_its_parent_is_killed(how):
    middle = subprocess.Popen([PY, "-c", CHILD_OF_MIDDLE.format(root=str(ROOT), how=how)], stdout=subprocess.PIPE,
                              text=True)
    try:
        if how != "preexec":
            assert middle.stdout.readline().strip() == how
        child = int(middle.stdout.readline())
        assert _alive(child)
        time.sleep(0.3)
        assert _alive(child)  # it lives as long as its parent does
    finally:
        middle.kill()  # SIGKILL: the parent cannot clean anything up
        middle.wait()
    assert _wait_for(lambda: not _alive(child), 5), f"the child {child} outlived its parent ({how})"


def test_a_process_whose_parent_is_already_gone_dies_at_once():
    code = ("import sys; sys.path.insert(0, %r); from autograder.grading import lifeline; "
            "lifeline.die_with_parent(1); print('survived')") % str(ROOT)
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL and "survived" not in out.stdout


# --------------------------------------------------------------------------- notes of the cells


def _nb(*sources):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_notes_name_each_failed_cell_outside_the_tests():
    nb = _nb("# load the data\nx = torch.zeros(10**12)", "check_a(a)", "while True:\n    pass",
             "print('x' * 10**8)", "import os\nos._exit(1)")
    ex = engine.Execution(ran=[0, 1, 2, 3, 4], errors={0: "MemoryError", 2: "KeyboardInterrupt"},
                          timed_out=[2], truncated=[3], died_in=4)
    limits = engine.Limits(memory_mb=512, cell_timeout=7, max_output_bytes=1000)
    notes = engine.run_notes(engine.Prepared(nb, ["a test cell was put back"], {1}), ex, limits)
    assert notes[0] == "a test cell was put back"
    assert notes[1] == ("cell 0 (`x = torch.zeros(10**12)`) raised MemoryError "
                        "(the grader lets a notebook allocate 512 MB)")
    assert ex.errors[0] == "MemoryError"  # (the message, when there is one, stays out of the notes)
    assert notes[2] == "cell 2 (`while True:`) ran past its time limit of 7 s and was interrupted"
    assert notes[3].startswith("cell 3 (`print('...' * 10**8)`) printed more than the 1000 characters kept")
    assert notes[4].startswith("cell 4 (`import os`) the kernel died while it ran")
    assert len(notes) == 5 and not any("cell 1" in n for n in notes)


def test_a_test_cells_own_failure_is_not_a_note_but_its_cut_output_is():
    nb = _nb("check_a(a)", "check_b(b)")
    ex = engine.Execution(ran=[0, 1], errors={}, timed_out=[0], truncated=[1])
    notes = engine.run_notes(engine.Prepared(nb, [], {0, 1}), ex, engine.Limits(max_output_bytes=10))
    assert len(notes) == 1 and notes[0].startswith("cell 1 (`check_b(b)`) printed more than the 10 characters")


def test_a_note_names_the_error_by_its_builtin_type_never_its_message_or_own_name():
    nb = _nb("f()", "g()", "h()")
    ex = engine.Execution(ran=[0, 1, 2], errors={0: "ValueError: hidden input was 0.731",
                                                 1: "Leak_0_731: 0.731", 2: "print: x"})
    notes = engine.run_notes(engine.Prepared(nb, [], set()), ex, engine.Limits())
    assert notes == ["cell 0 (`f()`) raised ValueError", "cell 1 (`g()`) raised an exception of a class of its own",
                     "cell 2 (`h()`) raised an exception of a class of its own"]


def test_a_cells_first_line_is_quoted_without_its_strings_or_comment():
    nb = _nb('# set-up\nraise RuntimeError("found: " + SECRET)  # why', "x = 1")
    notes = engine.run_notes(engine.Prepared(nb, [], set()), engine.Execution(ran=[0], errors={0: "RuntimeError: x"}),
                             engine.Limits())
    assert notes == ['cell 0 (`raise RuntimeError("..." + SECRET)`) raised RuntimeError']
    assert engine._code_only("s = 'it\\'s' + \"\"\"doc") == "s = '...' + \"\"\"...\"\"\""


def test_many_failed_cells_are_counted_after_the_first_few():
    n = engine.MAX_CELL_NOTES + 3
    nb = _nb(*[f"f{i}()" for i in range(n)])
    ex = engine.Execution(ran=list(range(n)), errors={i: "NotImplementedError" for i in range(n)})
    notes = engine.run_notes(engine.Prepared(nb, [], set()), ex, engine.Limits())
    assert len(notes) == engine.MAX_CELL_NOTES + 1
    assert notes[-1].startswith("... and 3 more cell(s)")


def test_the_recorded_error_is_the_cells_own_not_the_executors():
    from nbformat import NotebookNode

    cell = NotebookNode(outputs=[NotebookNode(output_type="error", ename="CellTimeoutError", evalue="late"),
                                 NotebookNode(output_type="error", ename="ValueError", evalue="bad\nvalue " + "x" * 500)])
    raised = engine._raised(cell)
    assert raised.startswith("ValueError: bad value x") and len(raised) < 230
    assert engine._raised(NotebookNode(outputs=[NotebookNode(output_type="stream", text="hi")])) is None


def test_read_back_takes_the_errors_and_ignores_junk(tmp_path):
    import nbformat

    from autograder.grading import worker

    nb = _nb("a = 1", "b = 2")
    out = tmp_path / "out"
    out.mkdir()
    nbformat.write(nb, str(out / "executed.ipynb"))
    (out / "execution.json").write_text(json.dumps(
        {"ran": [0, 1], "errors": {"0": "MemoryError", "x": "junk", "-1": "junk"}, "seconds": 1.0}))
    executed, ex, _ = worker._read_back(out, nb, engine.Limits())
    assert executed is not None and ex.errors == {0: "MemoryError"}


def test_read_back_leaves_out_a_picture_too_large_to_be_real(tmp_path):
    import nbformat

    from autograder.grading import worker

    nb = _nb("a = 1")
    out = tmp_path / "out"
    out.mkdir()
    nbformat.write(nb, str(out / "executed.ipynb"))
    (out / "execution.json").write_text(json.dumps({"ran": [0]}))
    (out / "pictures.json").write_text(json.dumps({"small": "iVBOR" + "A" * 30_000,
                                                   "huge": "A" * (worker.MAX_PICTURE_CHARS + 1)}))
    _, _, pics = worker._read_back(out, nb, engine.Limits())
    assert set(pics) == {"small"}


# --------------------------------------------------------------------------- whole runs (kernels)


def _tiny_course(tmp_path: Path) -> tuple:
    """A course with the tiny two-step notebook; returns (course, source, learner)."""
    import nbformat

    from autograder.grading import course as course_mod

    sol = tmp_path / "solutions"
    write(notebook(source_cells()), sol / "tiny.ipynb")
    course = tmp_path / "course"
    course_mod.build(course, sol)
    source = nbformat.read(str(course_mod.source_notebook(course, "tiny")), as_version=4)
    learner = nbformat.read(str(course / "release" / "tiny" / "tiny.ipynb"), as_version=4)
    return course, source, learner


def _submit(course: Path, student: str, nb) -> None:
    write(nb, course / "submitted" / student / "tiny" / "tiny.ipynb")


def _extra_cell(learner, source, text, after="double"):
    return insert_after(fill_submission(learner, source), after, text)


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "no-sandbox"])
def test_failures_outside_the_tests_are_noted_and_the_steps_still_count(tmp_path, sandbox):
    from autograder.grading import autograde, worker
    from autograder.grading import sandbox as sandbox_mod

    if sandbox and not sandbox_mod.check_sandbox()[0]:
        pytest.skip(f"no sandbox on this machine: {sandbox_mod.check_sandbox()[1]}")
    course, source, learner = _tiny_course(tmp_path)
    memory_mb = 600
    cases = {
        "raises_memoryerror": ("raise MemoryError", "raised MemoryError (the grader lets a notebook allocate 600 MB)",
                               "ok"),
        "allocates_too_much": (f"# too big\nblob = bytearray({memory_mb * 3} * 2**20)",
                               "raised MemoryError (the grader lets a notebook allocate 600 MB)", "ok"),
        "raises_valueerror": ("raise ValueError('the data file has 3 columns, not 4')", "raised ValueError", "ok"),
        "raises_its_own": ("import math\nraise type('Leak' + '_0_25', (Exception,), {})(str(math.sqrt(0.0625)))",
                           "raised an exception of a class of its own", "ok"),
        "sleeps": ("import time\ntime.sleep(60)", "ran past its time limit of 4 s and was interrupted", "cell-timeout"),
        "prints_a_lot": ("for _ in range(40):\n    print('x' * 100_000)", "printed more than the 200000 characters kept",
                         "ok"),
    }
    for student, (text, _, _) in cases.items():
        _submit(course, student, _extra_cell(learner, source, text))
    _submit(course, "clean", fill_submission(learner, source))
    _submit(course, "many_links", fill_submission(learner, source))
    for i in range(30):  # files the grader does not copy: named up to a limit, then counted
        (course / "submitted" / "many_links" / "tiny" / f"link{i:02d}").symlink_to("/etc/hostname")
    limits = engine.Limits(cell_timeout=4, total_timeout=90, memory_mb=memory_mb, max_output_bytes=200_000)
    out = autograde.grade_class(course, workers=2, limits=limits, sandbox=sandbox, stream=io.StringIO(),
                                show_progress=False)
    by = {r["student"]: r for r in out["results"]}
    index = find_cell(_extra_cell(learner, source, "x"), "double")[0] + 1
    for student, (text, what, status) in cases.items():
        r = by[student]
        assert r["status"] == status, (student, r["status"], r["message"])
        assert r["score"] == r["max_score"] == 5, (student, r["steps"])  # the steps still ran
        first = engine._code_only(next(l for l in text.splitlines() if not l.startswith("#")))
        want = f"cell {index} (`{first}`)"
        assert any(n.startswith(want) and what in n for n in r["notes"]), (student, r["notes"])
        assert "Leak_0_25" not in " ".join(r["notes"]) and "0.25" not in " ".join(r["notes"])
    # A message the notebook chose is in no result (the executed notebook shows it to the instructor).
    for student in ("raises_valueerror", "raises_its_own"):
        stored = (course / "grading" / student / "tiny.json").read_text()
        assert "3 columns" not in stored and "Leak_0_25" not in stored
    assert by["clean"]["status"] == "ok" and not [n for n in by["clean"]["notes"] if n.startswith("cell ")]
    links = by["many_links"]["notes"]
    assert sum("a link or special file, not copied" in n for n in links) == worker.MAX_COPY_NOTES
    assert f"... and {30 - worker.MAX_COPY_NOTES} more file(s) not copied" in links
    assert by["many_links"]["score"] == 5
    assert not (course / runlock.TMP_NAME).exists()


def _processes_of(grader: int, folder: str) -> list:
    """(pid, command line) of the processes of a grading run: the grader's descendants, and
    anything that names the run's folder or was started as the grader's worker."""
    parents, cmds = {}, {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read().rsplit(")", 1)[-1].split()
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[0] != "Z":
            parents[int(p)], cmds[int(p)] = int(stat[1]), cmd
    found = []
    for pid, cmd in cmds.items():
        q, seen = pid, set()
        while q in parents and q not in seen and q != grader:
            seen.add(q)
            q = parents[q]
        mine = (folder and folder in cmd) or f"worker.py --serve --parent {grader}" in cmd
        if pid != grader and (q == grader or mine):
            found.append((pid, cmd[:300]))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "no-sandbox"])
def test_a_killed_run_leaves_nothing_running_and_the_next_run_finishes_the_class(tmp_path, sandbox):
    from autograder.grading import sandbox as sandbox_mod
    from autograder.grading.jobs import load_result

    if sandbox and not sandbox_mod.check_sandbox()[0]:
        pytest.skip(f"no sandbox on this machine: {sandbox_mod.check_sandbox()[1]}")
    course, source, learner = _tiny_course(tmp_path)
    students = [f"s{i}" for i in range(4)]
    for s in students:
        _submit(course, s, _extra_cell(learner, source, "import time\ntime.sleep(6)"))
    argv = [PY, "-m", "autograder", "autograde", "--course", str(course), "-j", "2", "--quiet",
            "--timeout", "20", "--memory-mb", "1000"] + ([] if sandbox else ["--no-sandbox"])
    grader = subprocess.Popen(argv, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = course / runlock.TMP_NAME
    try:
        # Wait until both workers run a notebook (a kernel under each), then kill the grader.
        def busy():
            folders = list(tmp.glob("run-*")) if tmp.is_dir() else []
            if not folders:
                return None
            mine = _processes_of(grader.pid, str(folders[0]))
            kernels = [p for p in mine if "sandbox_kernel.py" in p[1]]
            return (folders[0], mine) if len(kernels) >= 2 else None

        found = _wait_for(busy, 120, every=0.2)
        assert found, f"the run never got going: {grader.poll()} {grader.stderr.read() if grader.poll() is not None else ''}"
        run_folder, before = found
        # Meanwhile a second run on the same course is refused at once, naming the first.
        second = subprocess.run(argv, cwd=str(ROOT), capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and f"pid {grader.pid}" in second.stderr, second.stderr
    finally:
        grader.kill()
        grader.wait()
    left = _wait_for(lambda: [p for p in before if _alive(p[0])] + _processes_of(grader.pid, str(run_folder)) == [],
                     5, every=0.1)
    assert left, ("processes of the killed run still running",
                  [p for p in before if _alive(p[0])], _processes_of(grader.pid, str(run_folder)))
    assert run_folder.is_dir()  # a killed run could not clean up: the next one does
    done = [s for s in students if load_result(course, s, "tiny")]
    assert len(done) < len(students)

    holder = _hold_lock(course, 3)  # someone else holds the lock a moment: --wait waits for them
    again = subprocess.run(argv + ["--wait"], cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    holder.wait()
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"waiting for the grading run of pid {holder.pid}" in again.stdout
    assert "removed 1 temporary folder(s) left by an interrupted run" in again.stdout
    assert not tmp.exists()
    for s in students:
        r = load_result(course, s, "tiny")
        assert r and r["status"] == "ok" and r["score"] == 5, (s, r and r["status"], r and r["message"])


@pytest.mark.slow
def test_the_class_benchmark_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([PY, str(ROOT / "benchmarks" / "bench_class.py"), "--n", "5", "--workers", "2",
                           "--json", str(out)], cwd=str(ROOT), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["n"] == 5 and got["workers"] == 2
    assert set(got["kinds"]) == {"correct", "partly wrong", "blank", "prints megabytes", "errors"}
    assert got["submissions_per_minute"] > 0
    assert 0 < got["peak_rss_mib"] < 500
    assert got["resumed_scores_match"] is True and got["killed_after"] >= 1
    assert got["leftover_processes_after_kill"] == []
    assert "submissions per minute" in proc.stdout


def test_the_empty_cgroups_of_a_killed_graders_sandboxes_are_removed():
    from autograder.grading import sandbox as sandbox_mod

    top = sandbox_mod._v1_dir("memory") if os.geteuid() == 0 else None
    if top is None or not top.is_dir() or not os.access(top, os.W_OK):
        pytest.skip("needs root and a writable cgroup v1 memory controller (the grading VM's set-up)")
    dead = next(p for p in range(4_000_000, 3_000_000, -1) if not Path(f"/proc/{p}").exists())
    stale, live = top / f"mhsa-sandbox-{dead}-0", top / f"mhsa-sandbox-{os.getpid()}-0"
    stale.mkdir()
    live.mkdir()
    try:
        removed = sandbox_mod.remove_stale_cgroups()
        assert str(stale) in removed and not stale.exists()
        assert live.is_dir() and str(live) not in removed  # its owner still runs
    finally:
        for d in (stale, live):
            if d.exists():
                d.rmdir()


def test_two_runs_at_once_never_share_a_sandbox_slot(tmp_path):
    from autograder.grading import pool

    if os.geteuid() != 0:
        pytest.skip("slots name sandbox uids only for a root grader (otherwise every sandbox runs as the grader)")
    a, b = pool.WorkerPool(tmp_path, slot_dir=tmp_path / "slots"), pool.WorkerPool(tmp_path, slot_dir=tmp_path / "slots")
    try:
        mine = [a._claim_slot(), a._claim_slot()]
        theirs = [b._claim_slot(), b._claim_slot()]
        assert mine == [0, 1] and theirs == [2, 3]  # another course's run at the same time
    finally:
        a.close()
    c = pool.WorkerPool(tmp_path, slot_dir=tmp_path / "slots")
    try:
        assert [c._claim_slot(), c._claim_slot(), c._claim_slot()] == [0, 1, 4]  # a's are free again
    finally:
        b.close()
        c.close()
