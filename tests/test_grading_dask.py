"""Class grading on a real Dask cluster (``autograde --scheduler``), compared with the local run.

A ``dask scheduler`` and two ``dask worker`` processes (one thread each, a scratch folder of their
own) run on this machine; each worker runs in a mount namespace of its own where a tmpfs hides the
folder that holds the course copies, so it grades from the bytes of its tasks alone (checked: a
task that reads the course finds nothing). The class is notebook 00's of
``tests/test_grading_class.py`` (correct, partial and hostile submissions), plus a link and a data
file in one submission.

* The Dask run's scores per step, statuses and notes equal the local run's of the same course.
* A worker killed with SIGKILL after the first results: its task runs again elsewhere; the
  gradebook equals the local one, every submission stored once.
* A scheduler killed after the first results: what arrived is stored, the run says it stopped
  and exits 1; the next run (a new scheduler) grades only the rest.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import NOTEBOOKS, SOLUTIONS, fill_submission  # noqa: F401  (NOTEBOOKS: make_cases reads it)
from test_grading_class import FILE, LIMITS, NAME, make_cases

from autograder.grading import autograde, collect, course, storing
from autograder.grading.gradebook import GradebookWriter

pytestmark = pytest.mark.slow

# Cells get more time than in test_grading_class: two runs share two cores here, and a cell that
# runs past its limit only because the machine is busy would make the two runs differ.
LIMITS = dataclasses.replace(LIMITS, cell_timeout=15, total_timeout=120)
# The runs with a fault grade these (each runs a kernel): a few, to keep the test short.
SOME = ("alice", "bob", "ivan_edited_test_cell", "judy_deleted_cells", "olivia_stderr")

distributed = pytest.importorskip("distributed", reason="Dask's distributed is installed by `./course test` "
                                  "(requirements-test.txt); without it the cluster cannot be tested")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process on port {port} exited ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port} within {timeout:g} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass


class Cluster:
    """A scheduler and ``n`` workers on this machine; each worker cannot see ``hide``."""

    def __init__(self, tmp: Path, hide: Path, n: int = 2):
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log_dir = tmp / f"cluster-{self.port}"
        self.log_dir.mkdir(parents=True)
        bin_dir = str(Path(sys.executable).parent)
        self.env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
                        DASK_DISTRIBUTED__WORKER__DAEMON="False", PYTHONUNBUFFERED="1")
        self.scheduler = self._start("scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler",
                                                   "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"])
        self.workers = []
        try:
            _wait_port(self.port, self.scheduler)
            for i in range(n):
                self.add_worker(hide, i)
            self.wait_for_workers(n)
        except BaseException:
            self.close()
            raise

    def _start(self, name: str, argv, env=None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env or self.env, start_new_session=True)

    def add_worker(self, hide: Path, i: int) -> subprocess.Popen:
        local = self.log_dir / f"worker{i}"
        local.mkdir()
        env = dict(self.env, TMPDIR=str(local))
        argv = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--nthreads", "1", "--no-nanny",
                "--local-directory", str(local), "--no-dashboard", "--name", f"w{i}", "--death-timeout", "60"]
        # Its own mount namespace, with a tmpfs over the folder of the course copies.
        wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o size=1m none "$0" && exec "$@"', str(hide)]
        proc = self._start(f"worker{i}", wrap + argv, env)
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, n: int, timeout: float = 90.0) -> None:
        client = distributed.Client(self.address, timeout=10, set_as_default=False)
        try:
            client.wait_for_workers(n, timeout=timeout)
        finally:
            client.close()

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.log_dir.glob("*.log")))

    def close(self) -> None:
        for proc in self.workers + [self.scheduler]:
            _stop(proc)


def _can_hide(tmp: Path) -> str:
    """Why a worker cannot be kept from the course folder here, or ''."""
    if os.geteuid() != 0:
        return "hiding the course folder from a worker needs root (a tmpfs mounted in a mount namespace)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = tmp / "probe"
    probe.mkdir()
    (probe / "secret").write_text("x")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs none "$0" && ls -A "$0"', str(probe)], capture_output=True, text=True)
    shutil.rmtree(probe)
    if r.returncode != 0:
        return f"a mount namespace with a tmpfs cannot be made here: {(r.stderr or '').strip()[-300:]}"
    if r.stdout.strip():
        return "a tmpfs in a mount namespace did not hide the folder's files"
    return ""


class KillOnResult(io.StringIO):
    """A progress stream that runs ``action`` once, when the ``after``-th result line is written."""

    def __init__(self, after: int, action):
        super().__init__()
        self.after, self.action, self.seen, self.fired = after, action, 0, False

    def write(self, text: str) -> int:
        if " graded, " in text:
            self.seen += 1
            if self.seen >= self.after and not self.fired:
                self.fired = True
                self.action()
        return super().write(text)


def _gradebook(root: Path, students=None):
    """student -> ({grade cell: (auto score, max)}, flagged) of the gradebook."""
    out = {}
    writer = GradebookWriter(root)
    try:
        for student in students or sorted(p.name for p in (root / "submitted").iterdir()):
            entry = writer.read(NAME, student)
            if entry is None:
                continue
            out[student] = ({cell: (g["auto"], g["max"]) for cell, g in entry["grades"].items()}, entry["flagged"])
    finally:
        writer.close()
    return out


def _view(results, students=None):
    """What must be equal whichever executor graded: status, scores per step, notes, sandbox."""
    return {r["student"]: (r["status"], [(s["id"], s["points"], s["max_points"]) for s in r["steps"]],
                           sorted(r.get("notes", [])), r.get("sandbox"), r["fingerprint"])
            for r in results if students is None or r["student"] in students}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dask")
    why = _can_hide(tmp)
    if why:
        pytest.skip(f"the workers must not see the course folder, and {why}")
    from autograder.grading import sandbox as sandbox_mod

    ok, why = sandbox_mod.check_sandbox()
    if not ok:
        pytest.skip(f"class grading runs in the sandbox, which cannot start here: {why}")
    sol = tmp / "solutions"
    sol.mkdir()
    shutil.copy(SOLUTIONS / FILE, sol / FILE)
    if (SOLUTIONS / "data").is_dir():
        shutil.copytree(SOLUTIONS / "data", sol / "data")
    courses = tmp / "courses"  # what the workers cannot see
    template = courses / "template"
    course.build(template, sol)
    source = nbformat.read(str(course.source_notebook(template, NAME)), as_version=4)
    learner = nbformat.read(str(template / "release" / NAME / FILE), as_version=4)
    cases = make_cases(learner, source)
    incoming = tmp / "incoming"
    for student, (nb, _, _) in cases.items():
        path = incoming / student / NAME / FILE
        path.parent.mkdir(parents=True)
        path.write_bytes(nb if isinstance(nb, bytes) else nbformat.writes(nb).encode())
    collect.collect(template, incoming)
    extra = template / "submitted" / "alice" / NAME
    (extra / "data" ).mkdir()
    (extra / "data" / "mine.txt").write_text("the student's own data file\n")
    os.symlink("/etc/hostname", extra / "link.txt")  # a link: not sent, named in the notes
    assert len(cases) == 20
    course.grading_seed(template, NAME)  # the course's secret, made once: every copy grades with the same seed

    local = courses / "local"
    shutil.copytree(template, local, symlinks=True)
    run = autograde.grade_class(local, workers=2, limits=LIMITS, stream=io.StringIO())
    assert not run["stopped"] and len(run["results"]) == 20
    cluster = Cluster(tmp, courses)
    try:
        yield {"tmp": tmp, "courses": courses, "template": template, "cases": cases, "local": local,
               "local_run": run, "cluster": cluster}
    finally:
        cluster.close()


def _copy(world, name: str) -> Path:
    root = world["courses"] / name
    shutil.copytree(world["template"], root, symlinks=True)
    return root


def test_workers_cannot_see_the_course(world):
    client = distributed.Client(world["cluster"].address, timeout=10, set_as_default=False)
    try:
        target = str(world["local"] / "gradebook.db")
        assert os.path.exists(target)
        seen = client.run(os.path.exists, target)
        assert len(seen) == 2 and not any(seen.values()), seen
        fut = client.submit(Path.read_bytes, Path(target), pure=False)
        with pytest.raises(FileNotFoundError):
            fut.result(timeout=60)
    finally:
        client.close()


def test_dask_grades_as_the_local_run(world):
    root = _copy(world, "dask")
    out = io.StringIO()
    run = autograde.grade_class(root, limits=LIMITS, stream=out, scheduler=world["cluster"].address)
    text = out.getvalue()
    assert not run["stopped"], text + world["cluster"].log()
    assert "Dask scheduler tcp://127.0.0.1" in text and "2 worker(s)" in text
    assert "20/20 graded" in text
    assert _view(run["results"]) == _view(world["local_run"]["results"]), text
    by = {r["student"]: r for r in run["results"]}
    notes = " ".join(by["alice"]["notes"])
    assert "link.txt: a link or special file, not copied" in notes
    assert not any(str(world["courses"]) in str(r) for r in run["results"])  # no worker path of the course
    assert _gradebook(root) == _gradebook(world["local"])
    for student in world["cases"]:
        assert (storing.autograded_dir(root, student, NAME) / FILE).is_file()
    assert autograde.report(run, io.StringIO()) == autograde.report(world["local_run"], io.StringIO())
    # Nothing left on the workers: their scratch folders are empty again.
    for d in world["cluster"].log_dir.glob("worker*"):
        assert not [p for p in d.rglob("mhsa-task-*")], list(d.rglob("*"))[:20]


def test_a_worker_killed_mid_run(world):
    root = _copy(world, "killed-worker")
    cluster = world["cluster"]
    victim = cluster.workers[0]
    stream = KillOnResult(1, lambda: os.killpg(victim.pid, signal.SIGKILL))
    try:
        run = autograde.grade_class(root, limits=LIMITS, stream=stream, scheduler=cluster.address, students=SOME)
    finally:
        _stop(victim)
        cluster.workers[0] = cluster.add_worker(world["courses"], len(cluster.workers) + 10)  # for later tests
    assert stream.fired and victim.poll() is not None
    assert not run["stopped"], stream.getvalue() + cluster.log()
    pairs = [(r["student"], r["assignment"]) for r in run["results"]]
    assert len(pairs) == len(set(pairs)) == len(SOME)
    assert _view(run["results"]) == _view(world["local_run"]["results"], SOME)
    assert _gradebook(root, SOME) == _gradebook(world["local"], SOME)
    writer = GradebookWriter(root)
    try:
        assert storing.audit(root, [NAME], writer, list(SOME)) == []
    finally:
        writer.close()


def test_a_scheduler_lost_mid_run_stops_and_the_next_run_grades_the_rest(world):
    root = _copy(world, "lost-scheduler")
    first = Cluster(world["tmp"], world["courses"], n=1)
    stream = KillOnResult(1, lambda: os.killpg(first.scheduler.pid, signal.SIGKILL))
    try:
        t0 = time.monotonic()
        run = autograde.grade_class(root, limits=LIMITS, stream=stream, scheduler=first.address, students=SOME)
        took = time.monotonic() - t0
    finally:
        first.close()
    assert stream.fired
    assert run["stopped"] and "lost the Dask scheduler" in run["stopped"] and first.address in run["stopped"]
    done = {(r["student"], r["assignment"]) for r in run["results"]}
    assert done and run["not_graded"] and not done & set(run["not_graded"])
    assert len(done) + len(run["not_graded"]) == len(SOME)
    report = io.StringIO()
    assert autograde.report(run, report) == 1
    assert "STOPPED" in report.getvalue() and "run the same command again" in report.getvalue()
    assert took < 120
    local = {r["student"]: r for r in world["local_run"]["results"]}
    for r in run["results"]:
        assert _view([r]) == _view([local[r["student"]]])
    # The next run, on another cluster: only the rest.
    again = autograde.grade_class(root, limits=LIMITS, stream=io.StringIO(), scheduler=world["cluster"].address,
                                  students=SOME)
    assert not again["stopped"]
    assert {(r["student"], r["assignment"]) for r in again["results"]} == set(run["not_graded"])
    assert len(again["skipped"]) == len(done)
    assert _gradebook(root, SOME) == _gradebook(world["local"], SOME)


def test_an_unreachable_scheduler_is_named_at_once(world):
    root = _copy(world, "unreachable")
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=f"cannot reach the Dask scheduler at {address}"):
        autograde.grade_class(root, limits=LIMITS, stream=io.StringIO(), scheduler=address)
    assert time.monotonic() - t0 < 30
    assert not list((root / "grading").glob("*/*.json"))
    assert not (root / ".grading.lock").exists()
