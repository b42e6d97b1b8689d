"""The executor interface of class grading (:mod:`autograder.grading.executors`) and the payload
of a submission graded elsewhere (:mod:`autograder.grading.remote`), without a kernel or a
cluster: a stand-in executor (results stored once, a duplicate ignored, an executor lost mid-run
keeps what it stored and says so), the payload (bytes only, no path of the course, links, special
and large files named as a local working copy names them), the worker side's refusals (another
grader, no sandbox, a bad payload) and the messages for a missing Dask or an unreachable
scheduler. ``tests/test_grading_dask.py`` grades on a real cluster (slow)."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import socket
import sys
import time
from pathlib import Path

import pytest
from conftest import notebook, source_cells, write
from test_grading_store import A, _assert_consistent, _fake_worker, _grade, _result, empty_course  # noqa: F401

from autograder.grading import autograde, engine, executors, remote, storing
from autograder.grading import worker as worker_mod
from autograder.grading.jobs import Job


class FakeExecutor(executors.Executor):
    """Grades with the store tests' stand-in worker. ``duplicate``: yields each result twice, the
    second time with 0 points; ``lose_after``: raises ExecutorLost after that many results;
    ``forget``: never yields these students."""

    def __init__(self, duplicate=False, lose_after=None, forget=()):
        self.calls = []
        self.worker = _fake_worker(self.calls)
        self.duplicate, self.lose_after, self.forget = duplicate, lose_after, set(forget)
        self.workers = 3
        self.closed = False

    def run(self, jobs, config):
        assert isinstance(config, executors.RunConfig) and config.folder.is_dir()
        for i, job in enumerate(jobs):
            if self.lose_after is not None and i == self.lose_after:
                raise executors.ExecutorLost("lost the Dask scheduler at tcp://test:1 (the test cut it)")
            if job.student in self.forget:
                continue
            result = self.worker(job, config.course, config.limits, config.sandbox, config.folder, None)
            yield job, result
            if self.duplicate:
                again = self.worker(job, config.course, config.limits, config.sandbox, config.folder, None)
                for step in again["steps"]:
                    step["points"] = 0.0
                again["score"] = 0.0
                yield job, again

    def close(self):
        self.closed = True


@pytest.fixture
def course(tmp_path, monkeypatch, empty_course):  # noqa: F811
    import shutil

    root = tmp_path / "course"
    shutil.copytree(empty_course, root, symlinks=True)
    monkeypatch.setattr(storing, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    return root


# --------------------------------------------------------------------------- the interface


def test_each_submission_is_stored_once_whatever_the_executor_yields(course):
    ex = FakeExecutor(duplicate=True)
    out = io.StringIO()
    run = autograde.grade_class(course, sandbox=False, stream=out, executor=ex)
    assert sorted(r["student"] for r in run["results"]) == ["alice", "bob"]
    assert all(r["score"] == 5.0 for r in run["results"])  # the first result, not the duplicate's zero
    assert _result(course, "alice")["score"] == 5.0
    assert run["stopped"] is None and run["not_graded"] == []
    assert run["workers"] == 3 and run["executor"] == "3 worker(s)"
    assert "2/2 graded" in out.getvalue() and "3/2" not in out.getvalue()
    assert not ex.closed  # the caller's executor: the caller closes it
    _assert_consistent(course)


def test_an_executor_lost_mid_run_keeps_what_it_stored_and_the_next_run_grades_the_rest(course):
    run = autograde.grade_class(course, sandbox=False, stream=io.StringIO(), executor=FakeExecutor(lose_after=1))
    assert [r["student"] for r in run["results"]] == ["alice"]
    assert run["not_graded"] == [("bob", A)]
    assert "lost the Dask scheduler at tcp://test:1" in run["stopped"]
    assert _result(course, "alice")["state"] == storing.STORED
    assert not (course / "grading" / "bob").exists()
    text = io.StringIO()
    assert autograde.report(run, text) == 1
    assert "STOPPED early: lost the Dask scheduler" in text.getvalue()
    assert "1 submission(s) were not graded: run the same command again" in text.getvalue()
    assert not (course / ".grading.lock").exists() and not (course / ".grading_tmp").exists()
    again = autograde.grade_class(course, sandbox=False, stream=io.StringIO(), executor=FakeExecutor())
    assert [r["student"] for r in again["results"]] == ["bob"] and again["skipped"] == [("alice", A)]
    assert autograde.report(again, io.StringIO()) == 0
    _assert_consistent(course)


def test_an_executor_that_leaves_a_job_out_stops_the_run_loudly(course):
    run = autograde.grade_class(course, sandbox=False, stream=io.StringIO(), executor=FakeExecutor(forget={"bob"}))
    assert run["not_graded"] == [("bob", A)]
    assert "without a result for 1 submission" in run["stopped"]
    assert autograde.report(run, io.StringIO()) == 1


def test_the_local_executor_is_the_default_and_closes_its_pool(course, monkeypatch):
    calls = []
    monkeypatch.setattr(executors, "run_worker", _fake_worker(calls))
    closed = []
    real_close = executors.WorkerPool.close
    monkeypatch.setattr(executors.WorkerPool, "close", lambda self: (closed.append(1), real_close(self)))
    run = _grade(course, workers=2)
    assert sorted(calls) == [("alice", A), ("bob", A)]
    assert run["executor"] == "2 worker(s)" and run["workers"] == 2 and run["dashboard"] is None
    assert closed == [1]


def test_scheduler_and_executor_together_are_refused(course):
    with pytest.raises(ValueError, match="scheduler or executor, not both"):
        autograde.grade_class(course, sandbox=False, stream=io.StringIO(), scheduler="tcp://x:1",
                              executor=FakeExecutor())
    with pytest.raises(TypeError, match="executor must be an executors.Executor, got str"):
        autograde.grade_class(course, sandbox=False, stream=io.StringIO(), executor="tcp://x:1")
    with pytest.raises(ValueError, match="workers must be a positive int, got 0"):
        executors.LocalExecutor(0)


def test_the_command_line_passes_the_scheduler(monkeypatch, tmp_path):
    seen = {}

    def fake(*args, **kw):
        seen.update(kw)
        return {"results": [], "restored": [], "skipped": [], "problems": [], "exports": None,
                "exports_error": None, "seconds": 0.0, "workers": 2, "executor": "fake", "stopped": None}

    monkeypatch.setattr(autograde, "grade_class", fake)
    parser = argparse.ArgumentParser()
    autograde.add_arguments(parser)
    args = parser.parse_args(["--course", str(tmp_path), "--scheduler", "tcp://10.0.0.5:8786", "--quiet"])
    assert autograde.main(args) == 0
    assert seen["scheduler"] == "tcp://10.0.0.5:8786"
    args = parser.parse_args(["--course", str(tmp_path)])
    autograde.main(args)
    assert seen["scheduler"] is None


# --------------------------------------------------------------------------- Dask: missing, unreachable


def test_a_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(RuntimeError) as e:
        executors.make_executor("tcp://127.0.0.1:8786", 2)
    assert 'pip install "mhsa-course[cluster]"' in str(e.value) and "--scheduler" in str(e.value)


def test_a_bad_scheduler_address_is_named():
    for bad in ("", "   ", None, 8786):
        with pytest.raises(ValueError, match="address must be a scheduler address"):
            executors.DaskExecutor(bad)
    with pytest.raises(ValueError, match="connect_timeout must be a positive number"):
        executors.DaskExecutor("tcp://127.0.0.1:1", connect_timeout=0)


def test_an_unreachable_scheduler_is_named_within_its_timeout():
    pytest.importorskip("distributed", reason="Dask's distributed is installed by `./course test`")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 2 s"):
        executors.DaskExecutor(f"tcp://127.0.0.1:{port}", connect_timeout=2)
    assert time.monotonic() - t0 < 15


def test_task_failures_become_clear_messages():
    class KilledWorker(Exception):
        pass

    msg = executors._task_failure(KilledWorker("grade-x", "tcp://w:1"))
    assert "KilledWorker" in msg and "died" in msg
    msg = executors._task_failure(ModuleNotFoundError("No module named 'autograder'"))
    assert "could not load the grader" in msg and 'pip install "mhsa-course[cluster]"' in msg
    assert "ZeroDivisionError" in executors._task_failure(ZeroDivisionError("x"))


# --------------------------------------------------------------------------- the payload


def _submission(tmp_path):
    course = tmp_path / "course"
    src = course / "source" / A
    src.mkdir(parents=True)
    write(notebook(source_cells()), src / f"{A}.ipynb")
    (src / "data").mkdir()
    (src / "data" / "weights.txt").write_text("1 2 3")
    sub = course / "submitted" / "alice" / A
    sub.mkdir(parents=True)
    (sub / f"{A}.ipynb").write_text('{"mine": true}')
    (sub / "notes.md").write_text("my notes")
    (sub / "deep" / "er").mkdir(parents=True)
    (sub / "deep" / "er" / "x.bin").write_bytes(bytes(range(256)))
    (sub / "big.dat").write_bytes(b"x" * 5000)
    (sub / "link.txt").symlink_to(course / "gradebook.db")
    os.mkfifo(sub / "pipe")
    (sub / ".ipynb_checkpoints").mkdir()
    (sub / ".ipynb_checkpoints" / "old.ipynb").write_text("{}")
    job = Job("alice", A, sub, "f" * 64, "12345")
    return course, sub, job


def _strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_the_payload_is_bytes_without_a_path_of_the_course(tmp_path, monkeypatch):
    monkeypatch.setattr(worker_mod, "MAX_COPY_BYTES", 4096)
    course, sub, job = _submission(tmp_path)
    limits = engine.Limits(cell_timeout=7)
    p = remote.build_payload(job, course, limits, sandbox=True, version="v-test")
    assert p["files"] == {"notes.md": b"my notes", "deep/er/x.bin": bytes(range(256))}
    assert p["notebook"] == b'{"mine": true}' and p["notebook_name"] == f"{A}.ipynb"
    assert p["source_notebook"] == (course / "source" / A / f"{A}.ipynb").read_bytes()
    assert p["source_files"] == {"data/weights.txt": b"1 2 3"}
    assert p["grader_version"] == "v-test" and p["no_sandbox"] is False
    assert p["seed"] == "12345" and p["limits"] == limits.to_dict()
    for text in _strings(p):
        assert str(tmp_path) not in text, text  # no path of the instructor's machine
    # The notes a local working copy writes for the same folder, in the same words.
    local = []
    worker_mod._copy_files(sub, tmp_path / "copy", skip_names=(f"{A}.ipynb",), notes=local)
    assert sorted(p["copy_notes"]) == sorted(local)
    assert any("link.txt: a link or special file" in n for n in local)
    assert any("pipe: a link or special file" in n for n in local)
    assert any(n.startswith("big.dat: larger than") for n in local)
    pickle.loads(pickle.dumps(p))  # what Dask sends
    assert remote.build_payload(job, course, limits, sandbox=False, version="v")["no_sandbox"] is True


def test_a_payload_past_its_total_names_what_it_left_out(tmp_path, monkeypatch):
    course, sub, job = _submission(tmp_path)
    monkeypatch.setattr(remote, "MAX_PAYLOAD_BYTES", 300)
    p = remote.build_payload(job, course, engine.Limits(), sandbox=True, version="v")
    assert sum(len(b) for b in p["files"].values()) <= 300
    assert any("big.dat: not copied (the submission's files pass" in n for n in p["copy_notes"])


def test_a_linked_notebook_is_not_sent(tmp_path):
    course, sub, job = _submission(tmp_path)
    (sub / f"{A}.ipynb").unlink()
    (sub / f"{A}.ipynb").symlink_to(sub / "notes.md")
    assert remote.build_payload(job, course, engine.Limits(), sandbox=True, version="v")["notebook"] is None


def test_build_payload_checks_its_arguments(tmp_path):
    course, sub, job = _submission(tmp_path)
    with pytest.raises(TypeError, match="job must be a jobs.Job, got str"):
        remote.build_payload("alice", course, engine.Limits(), True)
    with pytest.raises(TypeError, match="limits must be an engine.Limits, got dict"):
        remote.build_payload(job, course, {}, True)


# --------------------------------------------------------------------------- the worker's side


@pytest.fixture
def worker_side(tmp_path, monkeypatch):
    local = tmp_path / "worker-local"
    local.mkdir()
    monkeypatch.setattr(remote, "_local_dir", lambda: str(local))
    course, sub, job = _submission(tmp_path)
    payload = remote.build_payload(job, course, engine.Limits(), sandbox=False)
    yield local, payload
    remote.stop_grading_process()


def test_another_grader_version_is_a_clear_grader_error(worker_side):
    local, payload = worker_side
    payload["grader_version"] = "mhsa-course 9.9 (grader 1, code 000000000000)"
    out = remote.grade_task(payload)
    r = out["result"]
    assert r["status"] == "grader-error" and out["notebook"] is None and r["worker_problem"] is True
    assert f"has {remote.grader_version()}, the run needs mhsa-course 9.9" in r["message"]
    assert list(local.iterdir()) == []


def test_a_worker_without_the_sandbox_grades_nothing(worker_side, monkeypatch):
    local, payload = worker_side
    payload["no_sandbox"] = False
    monkeypatch.setattr(remote, "_sandbox_problem", lambda: "bwrap: No such file or directory")
    r = remote.grade_task(payload)["result"]
    assert r["status"] == "grader-error" and "bubblewrap sandbox (bwrap)" in r["message"]
    assert r["worker_problem"] is True  # not stored as a grade (the run lists it as NOT graded)
    assert "--no-sandbox" in r["message"] and list(local.iterdir()) == []


def test_a_bad_payload_is_a_grader_error_that_writes_nothing_outside(worker_side, tmp_path):
    local, payload = worker_side
    assert remote.grade_task({"format": 99})["result"]["message"].endswith(f"it reads format {remote.PAYLOAD_FORMAT}")
    assert remote.grade_task("not a payload")["result"]["status"] == "grader-error"
    for bad in ("../escape.txt", "/etc/evil", "a/../../b", ""):
        p = dict(payload, files={bad: b"x"})
        r = remote.grade_task(p)["result"]
        assert r["status"] == "grader-error" and "not a plain relative path" in r["message"], (bad, r)
    assert not (tmp_path / "escape.txt").exists() and not (local.parent / "escape.txt").exists()
    assert list(local.iterdir()) == []  # the scratch folder went with the error


def test_a_payload_is_graded_in_a_child_process_and_its_scratch_removed(worker_side):
    """The whole worker side without a kernel: a submission without its notebook is 'missing'."""
    local, payload = worker_side
    payload["notebook"] = None
    out = remote.grade_task(payload)
    r = out["result"]
    assert r["status"] == "missing", r
    assert r["message"] == f"no {A}.ipynb in the submission"
    assert r["wall_seconds"] > 0 and out["notebook"] is None
    assert list(local.iterdir()) == []
    # The next task reuses the thread's grading process (started once, as a local worker is).
    first = remote._THREAD.proc
    assert first.alive()
    payload["notebook"] = b""
    assert remote.grade_task(payload)["result"]["status"] == "empty"
    assert remote._THREAD.proc is first and list(local.iterdir()) == []


def test_the_grader_version_names_the_distribution_and_the_code():
    v = remote.grader_version()
    assert v.startswith("mhsa-course ") and "(grader " in v and ", code " in v
    assert v == remote.grader_version()


def test_dask_is_the_extra_cluster_never_a_learners_dependency():
    from conftest import ROOT

    try:
        import tomllib
    except ImportError:
        pytest.skip("tomllib (Python 3.11+) reads pyproject.toml; this Python is older")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in meta["dependencies"] if "dask" in d or "distributed" in d]
    extras = meta["optional-dependencies"]
    # A worker needs the grader's own packages as well as Dask: [cluster] alone is enough.
    assert extras["cluster"] == extras["grading"] + ["dask[distributed]>=2024.1"]

    def lines(name):
        return [ln.split("#")[0].strip() for ln in (ROOT / name).read_text(encoding="utf-8").splitlines()]

    assert not [ln for ln in lines("requirements.txt") if "dask" in ln or "distributed" in ln]  # ./course start
    assert "dask[distributed]>=2024.1" in lines("requirements-test.txt")  # ./course test


def test_check_regrades_on_the_scheduler_it_is_given(course, monkeypatch):
    autograde.grade_class(course, sandbox=False, stream=io.StringIO(), executor=FakeExecutor())
    (course / "grading" / "alice" / f"{A}.json").unlink()  # a divergence that --check repairs by grading again
    seen = []
    real = autograde.grade_class

    def spy(*args, **kw):
        seen.append(kw.get("scheduler"))
        kw.pop("scheduler")
        return real(*args, executor=FakeExecutor(), **kw)

    monkeypatch.setattr(autograde, "grade_class", spy)
    findings, left = autograde.check_class(course, sandbox=False, stream=io.StringIO(), scheduler="tcp://10.0.0.5:8786")
    assert findings and seen == ["tcp://10.0.0.5:8786"] and left == []
    _assert_consistent(course)


class _Future:
    """What DaskExecutor reads of a distributed.Future."""

    def __init__(self, status, value=None, exc=None):
        self.status, self.value, self.exc = status, value, exc

    def result(self, timeout=None):
        if self.exc is not None:
            raise self.exc
        return self.value

    def exception(self, timeout=None):
        return self.exc


def _offline_executor(status="running"):
    ex = object.__new__(executors.DaskExecutor)  # no client: only the reading of task outcomes
    ex.address = "tcp://sched:8786"
    ex.client = type("C", (), {"status": status})()
    return ex


def test_task_outcomes_become_results_here(tmp_path):
    ex = _offline_executor()
    config = executors.RunConfig(tmp_path, engine.Limits(), True, tmp_path / "run")
    config.folder.mkdir()
    job = Job("zoë", A, tmp_path, "f" * 64, "1")
    done = ex._result(_Future("finished", {"result": {"status": "ok", "steps": []}, "notebook": b"{nb}"}), job, config)
    assert done["status"] == "ok" and Path(done["_notebook"]).read_bytes() == b"{nb}"
    assert Path(done["_notebook"]).parent.parent == config.folder and Path(done["_notebook"]).name == f"{A}.ipynb"
    none = ex._result(_Future("finished", {"result": {"status": "missing"}, "notebook": None}), job, config)
    assert none["_notebook"] is None
    bad = ex._result(_Future("finished", ["not", "a", "result"]), job, config)
    assert bad["status"] == "grader-error" and "returned list" in bad["message"]
    err = ex._result(_Future("error", exc=ModuleNotFoundError("No module named 'autograder'")), job, config)
    assert err["status"] == "grader-error" and "could not load the grader" in err["message"]
    assert err.get("worker_problem") is True  # the worker's environment: not stored as a grade
    other = ex._result(_Future("error", exc=ZeroDivisionError("in the grader")), job, config)
    assert other["status"] == "grader-error" and not other.get("worker_problem")
    assert ex._result(_Future("lost", exc=OSError("gone")), job, config) is None  # computed again: wait for it
    with pytest.raises(executors.ExecutorLost, match="lost the Dask scheduler at tcp://sched:8786"):
        ex._result(_Future("cancelled"), job, config)
    with pytest.raises(executors.ExecutorLost, match="lost the Dask scheduler"):
        _offline_executor("connecting")._result(_Future("finished", exc=OSError("comm closed")), job, config)


def test_the_slot_locks_are_one_folder_per_machine_whatever_the_tmpdir(tmp_path):
    """Two Dask workers on one machine, each with a TMPDIR of its own (as a worker started with its
    own temporary folder, or a service with a private /tmp, has), must claim their sandbox slots in
    the same folder: else both take slot 0, and two students' sandboxes run as one uid that shares
    one process limit (one student's fork bomb starves the other's kernel)."""
    import subprocess

    seen = []
    for name in ("w0", "w1"):
        tmp = tmp_path / name
        tmp.mkdir()
        out = subprocess.run([sys.executable, "-c", "from autograder.grading import pool; print(pool.SLOT_DIR)"],
                             env=dict(os.environ, TMPDIR=str(tmp)), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen.append(out.stdout.strip())
    assert seen[0] == seen[1], seen
    assert str(tmp_path) not in seen[0]


@pytest.mark.parametrize("dashboard", [False, True])
def test_the_dashboard_link_is_shown_only_where_there_is_a_dashboard(dashboard):
    """A scheduler without a dashboard (``dask scheduler --no-dashboard``) still names an HTTP
    port; the run must not print a link to a page that is not there."""
    distributed = pytest.importorskip("distributed", reason="Dask's distributed is installed by `./course test`")
    import urllib.request

    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0",
                                  scheduler_kwargs={"dashboard": dashboard}) as cluster:
        ex = executors.DaskExecutor(cluster.scheduler_address)
        try:
            if dashboard:
                assert ex.dashboard and ex.dashboard.endswith("/status")
                with urllib.request.urlopen(ex.dashboard, timeout=10) as page:
                    assert page.status == 200
            else:
                assert ex.dashboard is None
        finally:
            ex.close()


class _FakeDistributed:
    """What DaskExecutor.run uses of ``distributed``: ``wait`` finishes the oldest pending task."""

    class TimeoutError(Exception):
        pass

    @staticmethod
    def wait(futures, timeout=None, return_when=None):
        first = min(futures, key=lambda f: f.n)
        first.status = "finished"
        return type("W", (), {"done": {first}})()


class _FakeClient:
    """Records the payload bytes in flight each time a task is submitted."""

    status = "running"

    def __init__(self):
        self.flying, self.peak, self.count = {}, 0, 0

    def nthreads(self):
        return {"w0": 1}

    def as_current(self):
        import contextlib

        return contextlib.nullcontext()

    def submit(self, fn, payload, **kw):
        client = self
        size = len(payload["notebook"]) + sum(len(b) for b in payload["files"].values())

        class Fut:
            n = self.count
            status = "pending"

            def result(self, timeout=None):
                del client.flying[self.n]
                return {"result": {"status": "ok", "steps": []}, "notebook": None}

            def release(self):
                pass

        self.count += 1
        self.flying[Fut.n] = size
        self.peak = max(self.peak, sum(self.flying.values()))
        return Fut()


def test_the_payloads_in_flight_are_bounded_in_bytes_not_only_in_tasks(tmp_path, monkeypatch):
    """A class whose submissions each carry large files (up to remote.MAX_PAYLOAD_BYTES of them)
    must not have 32 of them at once in this process and in the scheduler's memory."""
    big = b"x" * 1000
    monkeypatch.setattr(remote, "build_payload", lambda job, *a, **k: {"files": {"data.bin": big}, "notebook": b"{}"})
    monkeypatch.setattr(remote, "grader_version", lambda: "v")
    ex = _offline_executor()
    ex.client, ex._distributed, ex.window, ex.retries = _FakeClient(), _FakeDistributed, None, 0
    ex.MAX_BYTES_AHEAD = 2500
    config = executors.RunConfig(tmp_path, engine.Limits(), True, tmp_path / "run")
    config.folder.mkdir()
    jobs = [Job(f"s{i}", A, tmp_path, "f" * 64, "1") for i in range(10)]
    got = [job.student for job, result in ex.run(jobs, config)]
    assert sorted(got) == sorted(j.student for j in jobs)
    assert ex.client.count == 10
    assert 1002 * 2 < ex.client.peak <= 1002 * 3, ex.client.peak  # stops once 2500 bytes are in flight
    # A payload larger than the whole budget still goes, one at a time.
    ex.client, ex.MAX_BYTES_AHEAD = _FakeClient(), 10
    assert len(list(ex.run(jobs, config))) == 10 and ex.client.peak == 1002


class _NoWorkerClient(_FakeClient):
    """A cluster whose workers are gone: nothing ever finishes."""

    def nthreads(self):
        return {}


class _NothingFinishes(_FakeDistributed):
    @staticmethod
    def wait(futures, timeout=None, return_when=None):
        time.sleep(0.02)
        raise _FakeDistributed.TimeoutError()


def test_a_cluster_left_without_workers_stops_the_run_instead_of_waiting_for_ever(tmp_path, monkeypatch, course):
    """Workers started without a nanny end when their scheduler goes away; a scheduler restarted at
    the same address then has none, and a run that waited for one in silence would never end."""
    monkeypatch.setattr(remote, "build_payload", lambda job, *a, **k: {"files": {}, "notebook": b"{}"})
    monkeypatch.setattr(remote, "grader_version", lambda: "v")
    ex = _offline_executor()
    ex.client, ex._distributed, ex.window, ex.retries = _NoWorkerClient(), _NothingFinishes, None, 0
    ex.NO_WORKER_S = 0.2
    config = executors.RunConfig(tmp_path, engine.Limits(), True, tmp_path / "run")
    config.folder.mkdir()
    t0 = time.monotonic()
    with pytest.raises(executors.ExecutorLost, match=r"no Dask worker was connected to the scheduler at "
                       r"tcp://sched:8786 for 0.2 s, so 2 submission\(s\) waited .* run the same command again"):
        list(ex.run([Job(f"s{i}", A, tmp_path, "f" * 64, "1") for i in range(2)], config))
    assert time.monotonic() - t0 < 5
    # Through the grading run: it stops, says so, and stores nothing for the submissions not graded.
    ex.client, ex.nworkers, ex.threads, ex.workers, ex.dashboard = _NoWorkerClient(), 0, 0, 1, None
    run = autograde.grade_class(course, sandbox=False, stream=io.StringIO(), executor=ex)
    assert "no Dask worker was connected" in run["stopped"] and len(run["not_graded"]) == 2
    # A worker that is there (even one busy for longer than that) is no reason to stop.
    ex.client = _FakeClient()
    calls = []

    def slow_then_done(futures, timeout=None, return_when=None):
        calls.append(1)
        if len(calls) < 20:
            time.sleep(0.02)
            raise _FakeDistributed.TimeoutError()
        return _FakeDistributed.wait(futures)

    ex._distributed = type("D", (), {"TimeoutError": _FakeDistributed.TimeoutError, "wait": staticmethod(slow_then_done)})
    assert len(list(ex.run([Job("s0", A, tmp_path, "f" * 64, "1")], config))) == 1


def test_a_scheduler_without_tls_is_named_as_open_to_whoever_reaches_it(course):
    """Whoever reaches an unprotected scheduler reads every task's payload there (the source
    notebook with its hidden tests, the grading seed) and may change results: the run says so."""
    distributed = pytest.importorskip("distributed", reason="Dask's distributed is installed by `./course test`")
    for address in ("tcp://10.0.0.5:8786", "10.0.0.5:8786", "tcp://127.0.0.1:8786", "ucx://h:1"):
        text = executors.unprotected_warning(address)
        assert text and address in text and "without TLS" in text and "grading seed" in text and "tls://" in text
    assert executors.unprotected_warning("tls://grader.example.org:8786") is None
    assert executors.unprotected_warning("TLS://grader.example.org:8786") is None
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        ex = executors.DaskExecutor(cluster.scheduler_address)
        try:
            assert ex.warning and cluster.scheduler_address in ex.warning
        finally:
            ex.close()
    # The run's header shows an executor's warning; the local executor has none.
    fake = FakeExecutor()
    fake.warning = "the test's warning"
    out = io.StringIO()
    autograde.grade_class(course, sandbox=False, stream=out, executor=fake)
    assert "autograde: WARNING: the test's warning" in out.getvalue()
    assert executors.LocalExecutor(1).warning is None


@pytest.mark.parametrize("check", [False, True])
def test_ctrl_c_ends_the_command_with_a_message_not_a_traceback(monkeypatch, tmp_path, capsys, check):
    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(autograde, "check_class" if check else "grade_class", interrupted)
    parser = argparse.ArgumentParser()
    autograde.add_arguments(parser)
    argv = ["--course", str(tmp_path), "--scheduler", "tcp://10.0.0.5:8786"] + (["--check"] if check else [])
    assert autograde.main(parser.parse_args(argv)) == 130
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C)" in err and "run the same command again" in err and "Traceback" not in err


class RefusingExecutor(FakeExecutor):
    """Its workers cannot grade ``refuse``'s submissions (as a worker without bwrap, or with other
    grader code, answers): a grader error marked as the worker's problem."""

    def __init__(self, refuse=()):
        super().__init__()
        self.refuse = set(refuse)

    def run(self, jobs, config):
        for job, result in super().run(jobs, config):
            if job.student in self.refuse:
                result = remote._refusal("the Dask worker w1 cannot start the bubblewrap sandbox (bwrap): test")["result"]
            yield job, result


def test_a_worker_that_cannot_grade_stores_nothing_and_an_earlier_grade_stays(course):
    """A worker's environment is not a grade: its refusals are listed as NOT graded (exit code 1),
    nothing is stored for them (not a flagged zero over a good grade, even with --force), and the
    next run with working workers grades them."""
    autograde.grade_class(course, sandbox=False, stream=io.StringIO(), executor=FakeExecutor())
    good = _result(course, "alice")
    assert good["score"] == 5.0
    out = autograde.grade_class(course, sandbox=False, stream=io.StringIO(), force=True,
                                executor=RefusingExecutor(refuse={"alice"}))
    assert [r[:2] for r in out["refused"]] == [("alice", A)] and "bwrap" in out["refused"][0][2]
    assert _result(course, "alice") == good  # untouched: not re-stored, not a zero
    assert [r["student"] for r in out["results"]] == ["bob"]
    text = io.StringIO()
    assert autograde.report(out, text) == 1
    assert "1 submission(s) NOT graded because the machine given them could not grade" in text.getvalue()
    assert f"alice/{A}: the Dask worker w1 cannot start the bubblewrap sandbox" in text.getvalue()
    _assert_consistent(course)
    (course / "grading" / "alice" / f"{A}.json").unlink()  # never graded: the next run grades it
    out = autograde.grade_class(course, sandbox=False, stream=io.StringIO(), executor=RefusingExecutor(refuse={"alice"}))
    assert not (course / "grading" / "alice" / f"{A}.json").exists() and out["refused"]
    out = autograde.grade_class(course, sandbox=False, stream=io.StringIO(), executor=FakeExecutor())
    assert [r["student"] for r in out["results"]] == ["alice"] and _result(course, "alice")["score"] == 5.0
