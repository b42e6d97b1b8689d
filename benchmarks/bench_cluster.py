"""Grading a class on Dask: submissions per minute with the local executor and with 1 and 2 Dask
workers on this machine, measured side by side, and what the grader costs beyond the notebooks.

Builds a course with notebook 01 (``solutions/01_scaled_dot_product_attention.ipynb``) in a
temporary folder and a small class of it (correct and partly wrong submissions), starts two real
Dask clusters on 127.0.0.1, each a ``dask scheduler`` process and a ``dask worker --nthreads 1``
process (``--nworkers 1`` and ``--nworkers 2``), and grades the same class with ``--force`` with
every candidate in turn:

    local-2   autograde.grade_class(course, workers=2)                      the local executor
    dask-1    autograde.grade_class(course, workers=1, scheduler=ADDRESS)   one Dask worker
    dask-2    autograde.grade_class(course, workers=2, scheduler=ADDRESS)   two Dask workers
    local-1   (only when asked for with --candidates) the local executor with one worker

The rounds rotate the order (A B C, B C A, C A B, ...), so a busy moment of the shared machine
costs every candidate alike; every figure is a median over the rounds. Before the first round
each candidate grades one submission unmeasured (imports, the Dask workers' first task).

Printed per candidate: seconds for the class, submissions per minute, CPU seconds per submission
(every process of the run: this one and all it starts, and the candidate's Dask cluster, each
counted in a cgroup of its own where this runs as root with cgroup v1's ``cpuacct``; elsewhere
the resource usage of waited-for children plus the Dask processes' trees, which misses what a
sandbox's namespace init reaped and so is a lower bound), and the grader's overhead per submission
beyond the notebook's own run: the result's ``worker_seconds`` (the worker's whole job) and
``wall_seconds`` (as the executor saw it) minus its ``exec_seconds``, and, counting everything,
(seconds x worker slots - the sum of ``exec_seconds``) / submissions. Ratios: Dask's time at 2
workers over the local executor's at 2 (goal: at most 1.10, under 10 % overhead), and the
speed-up from 1 to 2 Dask workers.

    .venv/bin/python benchmarks/bench_cluster.py [--n 12] [--rounds 3] [--candidates local-2,dask-1,dask-2]
                                                 [--no-sandbox] [--json OUT] [--keep]
    .venv/bin/python benchmarks/run.py --groups cluster      # the same, as a group of the runner
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

NAME = "01_scaled_dot_product_attention"
#: The candidates this benchmark knows: executor and worker slots.
KNOWN = {"local-1": ("local", 1), "local-2": ("local", 2), "dask-1": ("dask", 1), "dask-2": ("dask", 2)}
DEFAULT_CANDIDATES = ("local-2", "dask-1", "dask-2")
#: Dask's time at 2 workers over the local executor's at 2: at most this (under 10 % overhead).
OVERHEAD_GOAL = 1.10
#: Sizes by the runner's mode: (submissions, rounds).
SIZES = {"quick": (12, 2), "full": (20, 3)}


# --------------------------------------------------------------------------- arithmetic


def median(values: Iterable[Optional[float]]) -> Optional[float]:
    """The median of the values that are numbers; None when there are none."""
    xs = [float(v) for v in values if v is not None]
    return statistics.median(xs) if xs else None


def mean(values: Iterable[Optional[float]]) -> Optional[float]:
    xs = [float(v) for v in values if v is not None]
    return statistics.mean(xs) if xs else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a / b, None when either is missing or b is not positive."""
    if a is None or b is None or b <= 0:
        return None
    return a / b


def overheads(results: Sequence[Dict[str, Any]], seconds: float, slots: int) -> Dict[str, Optional[float]]:
    """The grader's cost per submission beyond the notebook's own run, from one run's results.

    ``in_worker``: mean of ``worker_seconds - exec_seconds`` (the grading process's whole job:
    working copy, restored test cells, reading back, judging, writing the result);
    ``per_task``: mean of ``wall_seconds - exec_seconds`` (the job as its executor timed it: locally
    from handing the job to a pool worker to its result; on Dask the task on the worker, from
    unpacking the payload to the result, the grading process's start included, the transfers not);
    ``everything``: (``seconds`` x ``slots`` - the sum of ``exec_seconds``) / submissions, i.e. the
    worker-slot time not spent executing notebooks (gradebook writes, scheduling, idle slots at the
    end included). A figure whose fields the results lack is None.
    """
    if not results:
        return {"exec": None, "in_worker": None, "per_task": None, "everything": None}
    execs = [r.get("exec_seconds") for r in results]

    def diff(key):
        pairs = [(r.get(key), e) for r, e in zip(results, execs)]
        return mean(a - b for a, b in pairs if a is not None and b is not None)

    known = [e for e in execs if e is not None]
    everything = (seconds * slots - sum(known)) / len(results) if len(known) == len(results) else None
    return {"exec": mean(execs), "in_worker": diff("worker_seconds"), "per_task": diff("wall_seconds"),
            "everything": everything}


def summarize(runs: Sequence[Dict[str, Any]], candidates: Sequence[str]) -> Dict[str, Any]:
    """Rows (one per candidate, medians over its rounds) and the goals, from the measured runs.

    Each run: ``{"candidate", "round", "n", "seconds", "cpu_seconds", "overheads": {...},
    "scores": {student: score}, "statuses": {status: count}}``. Scores of the same submission
    that differ between candidates are listed in ``disagreements`` (the same course, the same
    grading seed: every executor must give the same points).
    """
    rows = []
    for name in candidates:
        mine = [r for r in runs if r["candidate"] == name]
        if not mine:
            continue
        n = mine[0]["n"]
        seconds = median(r["seconds"] for r in mine)
        cpu = median(r["cpu_seconds"] / r["n"] for r in mine if r.get("cpu_seconds") is not None)
        row = {"candidate": name, "executor": KNOWN[name][0], "slots": KNOWN[name][1], "n": n,
               "rounds": len(mine), "seconds": seconds, "all_seconds": [round(r["seconds"], 2) for r in mine],
               "submissions_per_minute": n / seconds * 60 if seconds else None,
               "cpu_seconds_per_submission": cpu,
               "cpu_over_wall": ratio(median(r.get("cpu_seconds") for r in mine), seconds),
               "grader_cpu_seconds_per_submission": median(r["grader_cpu_seconds"] / r["n"] for r in mine
                                                           if r.get("grader_cpu_seconds") is not None),
               "statuses": mine[-1].get("statuses", {})}
        for key in ("exec", "in_worker", "per_task", "everything"):
            row[f"{key}_seconds"] = median(r["overheads"].get(key) for r in mine)
        rows.append(row)
    by = {r["candidate"]: r for r in rows}
    goals = []
    local2, dask1, dask2 = by.get("local-2"), by.get("dask-1"), by.get("dask-2")
    if local2 and dask2:
        goals.append(_goal("Dask 2 workers / local 2 workers, time for the class", ratio(dask2["seconds"], local2["seconds"]),
                           "<=", OVERHEAD_GOAL, "the same class, medians over the rounds"))
        goals.append(_goal("Dask 2 workers / local 2 workers, CPU seconds per submission",
                           ratio(dask2["cpu_seconds_per_submission"], local2["cpu_seconds_per_submission"]),
                           "info", None))
    if dask1 and dask2:
        goals.append(_goal("Dask 1 worker / Dask 2 workers, time (speed-up of the second worker)",
                           ratio(dask1["seconds"], dask2["seconds"]), "info", None))
    local1 = by.get("local-1")
    if local1 and dask1:
        goals.append(_goal("Dask 1 worker / local 1 worker, time for the class", ratio(dask1["seconds"], local1["seconds"]),
                           "info", None))
    # the same ratio round by round (each round ran both within minutes of each other)
    round_ratios = []
    for r in sorted({x["round"] for x in runs}):
        mine = {x["candidate"]: x["seconds"] for x in runs if x["round"] == r}
        if "local-2" in mine and "dask-2" in mine:
            round_ratios.append(ratio(mine["dask-2"], mine["local-2"]))
    scores: Dict[str, Dict[str, set]] = {}
    for r in runs:
        for student, score in r.get("scores", {}).items():
            scores.setdefault(student, {}).setdefault(r["candidate"], set()).add(score)
    disagreements = {s: {c: sorted(v) for c, v in per.items()} for s, per in scores.items()
                     if len(set().union(*per.values())) > 1}
    return {"rows": rows, "goals": goals, "disagreements": disagreements, "round_ratios": round_ratios}


def _goal(name, measured, op, target, where=""):
    import bench_common as bc

    return bc.goal(name, float("nan") if measured is None else measured, op, target, where)


def capacity(cpu_seconds_per_submission: float, submissions: int, cores: int) -> Dict[str, float]:
    """CPU hours for ``submissions`` gradings at the measured CPU cost each, and the wall hours on
    ``cores`` cores kept busy (one Dask worker process per core)."""
    if cpu_seconds_per_submission <= 0 or submissions < 0 or cores < 1:
        raise ValueError(f"capacity: expected a positive CPU cost, submissions >= 0 and cores >= 1, got "
                         f"{cpu_seconds_per_submission!r}, {submissions!r}, {cores!r}")
    cpu_hours = cpu_seconds_per_submission * submissions / 3600
    return {"cpu_hours": cpu_hours, "wall_hours": cpu_hours / cores}


# --------------------------------------------------------------------------- processes and CPU


def _proc_table() -> Dict[int, tuple]:
    """pid -> (parent pid, CPU seconds of the process and of its children it has waited for)."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid, ..., utime (14th field of the line), stime, cutime, cstime
        table[int(p)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
    return table


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """CPU seconds used so far by the processes ``roots`` and all their live descendants, each
    with the children it has already waited for (a child that ended is counted once, in its
    parent). Linux only (``/proc``)."""
    table = _proc_table()
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo, total = set(), [r for r in roots if r in table], 0.0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended and been waited for."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class CgroupCPU:
    """CPU seconds of groups of processes, counted by the cgroup v1 ``cpuacct`` controller: every
    process started inside a group counts, however it ends and whoever reaps it. (Resource usage
    of waited-for children misses some: bwrap returns once its namespace's first process has
    ended, and that namespace's init, which has reaped the kernel, is then reaped by the system's
    init, not by the grader.) Needs root and a writable ``/sys/fs/cgroup/cpuacct``;
    :meth:`available` says whether this machine has them.

    ``enter(name)`` moves this process into group ``name`` (what it starts afterwards is counted
    there too); ``preexec(name)`` moves a child between fork and exec; ``close()`` moves this
    process back and removes the groups."""

    TOP = Path("/sys/fs/cgroup/cpuacct")

    def __init__(self) -> None:
        self.base = self.TOP / f"mhsa-bench-cluster-{os.getpid()}"
        self.base.mkdir()
        self.home = self.TOP / self._own_path().lstrip("/")

    @classmethod
    def available(cls) -> bool:
        return os.geteuid() == 0 and (cls.TOP / "cpuacct.usage").exists() and os.access(cls.TOP, os.W_OK)

    @staticmethod
    def _own_path() -> str:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "cpuacct" in controllers.split(","):
                    return path
        return "/"

    def _dir(self, name: str) -> Path:
        d = self.base / name
        d.mkdir(exist_ok=True)
        return d

    def enter(self, name: str) -> None:
        (self._dir(name) / "cgroup.procs").write_text(str(os.getpid()))

    def preexec(self, name: str):
        procs = str(self._dir(name) / "cgroup.procs")

        def move() -> None:  # in the child, between fork and exec
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        return move

    def seconds(self, name: str) -> float:
        return int((self._dir(name) / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        try:
            (self.home / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            (self.TOP / "cgroup.procs").write_text(str(os.getpid()))
        deadline = time.monotonic() + 20
        for d in sorted(p for p in self.base.iterdir() if p.is_dir()):
            while True:  # the groups' last processes may take a moment to go
                try:
                    d.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
        try:
            self.base.rmdir()
        except OSError:
            pass


@dataclass
class LocalDask:
    """A Dask cluster on 127.0.0.1 made of real processes: ``dask scheduler`` and one
    ``dask worker --nthreads 1 --nworkers N``, each in a process group of its own (stopped with
    the group). Use as a context manager."""

    nworkers: int
    folder: Path
    start_timeout: float = 180.0
    preexec: Optional[Any] = None  # run in each process between fork and exec (e.g. CgroupCPU.preexec)
    procs: List[subprocess.Popen] = field(default_factory=list)
    address: Optional[str] = None

    def _spawn(self, args: List[str], log: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        with open(self.folder / log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=str(self.folder), env=env,
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=self.preexec)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> "LocalDask":
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        from distributed import Client

        info = self.folder / "scheduler.json"
        scheduler = self._spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--scheduler-file", str(info)], "scheduler.log")
        deadline = time.monotonic() + self.start_timeout
        while not info.exists():
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start: {self.log_tail('scheduler.log')}")
            time.sleep(0.2)
        while self.address is None:
            try:
                self.address = json.loads(info.read_text())["address"]
            except (ValueError, KeyError):  # being written
                if time.monotonic() > deadline:
                    raise RuntimeError(f"unreadable {info}: {info.read_text()[:500]!r}") from None
                time.sleep(0.2)
        self._spawn(["worker", self.address, "--nthreads", "1", "--nworkers", str(self.nworkers),
                     "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(self.folder / "work")],
                    "worker.log")
        with Client(self.address, timeout=max(10.0, deadline - time.monotonic())) as client:
            try:
                client.wait_for_workers(self.nworkers, timeout=max(10.0, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001 - say why, with the worker's log
                raise RuntimeError(f"{self.nworkers} dask worker(s) did not connect ({type(e).__name__}: {e}): "
                                   f"{self.log_tail('worker.log')}") from e

    def log_tail(self, log: str) -> str:
        try:
            return (self.folder / log).read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(p.pid for p in self.procs if p.poll() is None)

    def left_running(self) -> List[int]:
        """Processes of this cluster's process groups still running (none after :meth:`stop`)."""
        groups = {p.pid for p in self.procs}
        left = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in groups and fields[0] != "Z":
                left.append(int(p))
        return left

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            alive = [p for p in self.procs if p.poll() is None]
            for p in alive:
                try:
                    os.killpg(p.pid, sig)
                except OSError:
                    pass
            for p in alive:
                try:
                    p.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    pass
        for p in self.procs:  # what the group leaders left behind in their groups
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass


# --------------------------------------------------------------------------- the class


def kind_of(i: int) -> str:
    """Submission i: two correct ones for each partly wrong one."""
    return "partly wrong" if i % 3 == 2 else "correct"


def make_class(course: Path, n: int) -> Dict[str, str]:
    import nbformat
    from bench_class import WRONG
    from conftest import fill_submission

    from autograder.grading import course as course_mod

    src = nbformat.read(str(course_mod.source_notebook(course, NAME)), as_version=4)
    learner = nbformat.read(str(course / "release" / NAME / f"{NAME}.ipynb"), as_version=4)
    kinds = {}
    for i in range(n):
        kind = kind_of(i)
        nb = fill_submission(learner, src, WRONG[(i // 3) % len(WRONG)] if kind == "partly wrong" else None)
        student = f"student{i:03d}"
        p = course / "submitted" / student / NAME / f"{NAME}.ipynb"
        p.parent.mkdir(parents=True)
        nbformat.write(nb, str(p))
        kinds[student] = kind
    return kinds


def dask_support() -> Optional[str]:
    """None when this checkout can grade on Dask, else why not (one line)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return 'dask[distributed] is not installed (pip install "mhsa-course[cluster]", or ./course test installs it)'
    from autograder.grading import autograde

    if "scheduler" not in inspect.signature(autograde.grade_class).parameters:
        return "autograde.grade_class has no scheduler argument (no Dask executor in this checkout)"
    return None


def grade(course: Path, candidate: str, sandbox: bool, address: Optional[str],
          only=None) -> Dict[str, Any]:
    """One grading of the class (``--force``) by ``candidate``; its results and seconds."""
    from autograder.grading import autograde

    executor, slots = KNOWN[candidate]
    kwargs: Dict[str, Any] = {"workers": slots, "force": True, "stream": io.StringIO(), "show_progress": False,
                              "sandbox": sandbox}
    if only is not None:
        kwargs["only"] = only
    if executor == "dask":
        kwargs["scheduler"] = address
    t0 = time.monotonic()
    out = autograde.grade_class(course, **kwargs)
    return {"seconds": time.monotonic() - t0, "results": out["results"], "problems": out.get("problems", [])}


def run(n: int = 12, rounds: int = 3, candidates: Sequence[str] = DEFAULT_CANDIDATES, sandbox: bool = True,
        keep: bool = False, out=print) -> Dict[str, Any]:
    """Measure; the summary (rows, goals, disagreements) with every run's numbers."""
    from autograder.grading import course as course_mod

    if n < 1 or rounds < 1:
        raise ValueError(f"bench_cluster: n and rounds must be at least 1, got n={n!r}, rounds={rounds!r}")
    unknown = [c for c in candidates if c not in KNOWN]
    if unknown or not candidates:
        raise ValueError(f"bench_cluster: candidates must be some of {sorted(KNOWN)}, got {list(candidates)!r}")
    if any(KNOWN[c][0] == "dask" for c in candidates):
        why = dask_support()
        if why:
            return {"status": "skipped", "reason": why}
    tmp = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    clusters: Dict[str, LocalDask] = {}
    cgroups = CgroupCPU() if CgroupCPU.available() else None
    try:
        if cgroups is not None:
            cgroups.enter("grader")  # this process and what it starts: the grader, its pool, the Dask client
        sol = tmp / "solutions"
        sol.mkdir()
        shutil.copy(ROOT / "solutions" / f"{NAME}.ipynb", sol / f"{NAME}.ipynb")
        if (ROOT / "solutions" / "data").is_dir():
            shutil.copytree(ROOT / "solutions" / "data", sol / "data")
        course = tmp / "course"
        course_mod.build(course, sol, only=[NAME])
        kinds = make_class(course, n)
        for c in candidates:
            if KNOWN[c][0] == "dask":
                out(f"starting a Dask cluster on 127.0.0.1 with {KNOWN[c][1]} worker(s) ...")
                clusters[c] = LocalDask(KNOWN[c][1], tmp / f"cluster_{c}",
                                        preexec=cgroups.preexec(c) if cgroups else None).__enter__()
        load_before = os.getloadavg()
        out(f"class of {n} ({sum(k == 'correct' for k in kinds.values())} correct, "
            f"{sum(k != 'correct' for k in kinds.values())} partly wrong); load average {load_before[0]:.2f}")
        first = {("student000", NAME)}
        for c in candidates:  # unmeasured: imports, the first task of each Dask worker
            grade(course, c, sandbox, clusters[c].address if c in clusters else None, only=first)
        runs = []
        for r in range(rounds):
            order = list(candidates[r % len(candidates):]) + list(candidates[:r % len(candidates)])
            for c in order:
                cluster = clusters.get(c)

                def cpu_now() -> float:
                    if cgroups is not None:
                        return cgroups.seconds("grader") + (cgroups.seconds(c) if cluster else 0.0)
                    return own_cpu_seconds() + (cluster.cpu_seconds() if cluster else 0.0)

                cpu0, here0 = cpu_now(), cgroups.seconds("grader") if cgroups else None
                g = grade(course, c, sandbox, cluster.address if cluster else None)
                cpu = cpu_now() - cpu0
                here = cgroups.seconds("grader") - here0 if cgroups else None
                results = g["results"]
                if len(results) != n:
                    raise RuntimeError(f"{c} graded {len(results)} of {n} submissions; problems: {g['problems'][:5]}")
                statuses: Dict[str, int] = {}
                for res in results:
                    statuses[res.get("status")] = statuses.get(res.get("status"), 0) + 1
                runs.append({"candidate": c, "round": r, "n": n, "seconds": g["seconds"], "cpu_seconds": cpu,
                             "grader_cpu_seconds": here,
                             "overheads": overheads(results, g["seconds"], KNOWN[c][1]),
                             "scores": {res.get("student"): res.get("score") for res in results},
                             "statuses": statuses})
                out(f"  round {r + 1}/{rounds}: {c}: {g['seconds']:.1f} s, {cpu:.1f} CPU s, statuses {statuses}")
        for cluster in clusters.values():
            cluster.stop()
        summary = summarize(runs, candidates)
        summary.update({
            "dask_processes_left": [pid for cluster in clusters.values() for pid in cluster.left_running()],
            "status": "ok", "n": n, "rounds": rounds, "candidates": list(candidates), "sandbox": sandbox,
            "runs": [{k: v for k, v in r.items() if k != "scores"} for r in runs],
            "cpu_counted_by": "cgroup cpuacct" if cgroups is not None else
            "resource usage of waited-for children and the Dask processes' trees (a lower bound)",
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M"),
        })
        if keep:
            summary["kept"] = str(tmp)
        return summary
    finally:
        for cluster in clusters.values():
            cluster.stop()
        if cgroups is not None:
            cgroups.close()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def report(summary: Dict[str, Any], out=print) -> None:
    """The tables and ratios of a summary, as text."""
    import bench_common as bc

    if summary.get("status") != "ok":
        out(f"cluster: {summary.get('status')}: {summary.get('reason', '')}")
        return
    out(f"class of {summary['n']} submissions of {NAME}, {summary['rounds']} rounds (order rotated), "
        f"{'in the sandbox' if summary['sandbox'] else 'WITHOUT the sandbox'}; CPU counted by "
        f"{summary['cpu_counted_by']}; {summary['machine']}; "
        f"load average {summary['load_average_before'][0]:.2f} before, {summary['load_average_after'][0]:.2f} after")
    headers = ["candidate", "seconds", "per minute", "CPU s/sub", "CPU/wall", "exec s", "worker-exec",
               "wall-exec", "slot time-exec"]
    bc.print_table(headers, [[r["candidate"], fmt(r["seconds"], 1), fmt(r["submissions_per_minute"], 1),
                              fmt(r["cpu_seconds_per_submission"]), fmt(r["cpu_over_wall"]), fmt(r["exec_seconds"]),
                              fmt(r["in_worker_seconds"]), fmt(r["per_task_seconds"]), fmt(r["everything_seconds"])]
                             for r in summary["rows"]])
    out("  (seconds: the class, median over the rounds; overheads: per submission, beyond the notebook's own run)")
    out("  (CPU s/sub: every process of the run; of it, on the grading machine itself (the grader, its pool "
        "or Dask client): " + ", ".join(f"{r['candidate']} {fmt(r.get('grader_cpu_seconds_per_submission'))}"
                                      for r in summary["rows"]) + ")")
    bc.print_goals(summary["goals"])
    if summary.get("round_ratios"):
        out("    Dask 2 workers / local 2 workers, round by round: "
            + ", ".join(fmt(x) for x in summary["round_ratios"]))
    if summary["disagreements"]:
        out(f"  scores that differ between candidates: {summary['disagreements']}")
    else:
        out("  every candidate gave every submission the same score")


def run_group(config) -> Dict[str, Any]:
    """The ``cluster`` group of ``benchmarks/run.py``: quick 12 submissions x 2 rounds, full 20 x 3
    (``--repeats`` sets the rounds); skipped in smoke mode (two clusters and a class are no smoke test)."""
    if config.mode == "smoke":
        return {"status": "skipped", "reason": "smoke mode: run --groups cluster without --smoke"}
    n, rounds = SIZES.get(config.mode, SIZES["quick"])
    summary = run(n=n, rounds=config.repeats or rounds)
    report(summary)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="submissions in the class (default 12)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each candidate once per round (default 3)")
    ap.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES),
                    help=f"comma-separated, from {','.join(KNOWN)} (default {','.join(DEFAULT_CANDIDATES)})")
    ap.add_argument("--no-sandbox", action="store_true", help="grade without the sandbox (to see its cost)")
    ap.add_argument("--json", metavar="OUT", help="also write every number as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary course and cluster folders")
    args = ap.parse_args(argv)
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [c for c in candidates if c not in KNOWN]
    if unknown or not candidates:
        ap.error(f"--candidates: expected some of {','.join(KNOWN)}, got {args.candidates!r}")
    if args.n < 1 or args.rounds < 1:
        ap.error(f"--n and --rounds must be at least 1, got --n {args.n} --rounds {args.rounds}")
    summary = run(args.n, args.rounds, candidates, sandbox=not args.no_sandbox, keep=args.keep)
    report(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    if summary.get("status") == "skipped":
        return 0
    return 1 if summary["disagreements"] else 0


if __name__ == "__main__":
    sys.exit(main())
