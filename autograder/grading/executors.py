"""Where a grading run's submissions are graded: one small interface, two executors.

* :class:`LocalExecutor` (the default): worker processes on this machine (:mod:`.pool`), at most
  ``workers`` at a time.
* :class:`DaskExecutor` (``autograde --scheduler tcp://HOST:8786``): one task per submission on a
  ``dask.distributed`` cluster; each task carries the submission as bytes (:mod:`.remote`), so a
  worker never needs the course folder, only the course's wheel with the extra ``cluster``.

An executor's :meth:`Executor.run` yields ``(job, result)`` as results complete, each result as
:func:`.pool.run_worker` returns it (``_notebook``: the executed notebook in the run's folder on
this machine, or None). The grading run (:func:`.autograde.grade_class`) stores each result as it
arrives, whichever executor graded it. A submission's failure is its own ``grader-error`` result;
only an executor that cannot go on at all (its scheduler went away) raises
:class:`ExecutorLost`, after which the run stops with what it stored so far.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import remote
from .engine import Limits
from .jobs import Job
from .pool import WorkerPool, run_worker

__all__ = ["CLUSTER_INSTALL", "DaskExecutor", "Executor", "ExecutorLost", "LocalExecutor", "RunConfig",
           "make_executor", "unprotected_warning"]

CLUSTER_INSTALL = 'pip install "mhsa-course[cluster]"'


class ExecutorLost(RuntimeError):
    """The executor cannot go on (its scheduler went away); ``str()`` says why. Results already
    yielded stay valid."""


@dataclass(frozen=True)
class RunConfig:
    """What every submission of one run is graded with: the course, the limits, whether the
    sandbox holds, and the run's temporary folder on this machine (:attr:`.runlock.GradingRun.folder`)."""
    course: Path
    limits: Limits
    sandbox: bool
    folder: Path


class Executor:
    """Grades jobs somewhere. ``workers``: how many submissions it grades at once (for the progress
    bar and the summary); ``dashboard``: a link to watch it, or None."""

    workers: int = 1
    dashboard: Optional[str] = None
    #: What the instructor must know before the run (printed in its header), or None.
    warning: Optional[str] = None

    def run(self, jobs: Sequence[Job], config: RunConfig) -> Iterator[Tuple[Job, Dict[str, Any]]]:
        """Yield ``(job, result)`` for each job as its result completes. Raises
        :class:`ExecutorLost` when it cannot go on."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the run's header."""
        return f"{self.workers} worker(s)"

    def close(self) -> None:
        """Free what it holds (idempotent)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _grader_error(message: str) -> Dict[str, Any]:
    return {"status": "grader-error", "message": message, "steps": [], "notes": []}


class LocalExecutor(Executor):
    """``workers`` long-lived worker processes on this machine (:class:`.pool.WorkerPool`)."""

    def __init__(self, workers: int):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"LocalExecutor: workers must be a positive int, got {workers!r}")
        self.workers = workers

    def run(self, jobs: Sequence[Job], config: RunConfig) -> Iterator[Tuple[Job, Dict[str, Any]]]:
        procs = WorkerPool(config.folder)
        try:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                futures = {pool.submit(run_worker, job, config.course, config.limits, config.sandbox, config.folder,
                                       procs): job for job in jobs}
                for fut in as_completed(futures):
                    job = futures[fut]
                    try:
                        result = fut.result()
                    except Exception as e:  # the pool itself failed for this one
                        result = _grader_error(f"{type(e).__name__}: {e}")
                    yield job, result
        finally:
            procs.close()


# --------------------------------------------------------------------------- Dask


def _import_distributed():
    try:
        import distributed
    except ImportError as e:
        raise RuntimeError(f"--scheduler grades on a Dask cluster, and Dask's distributed scheduler is not installed "
                           f"here ({type(e).__name__}: {e}); install it with {CLUSTER_INSTALL}") from None
    return distributed


def _cannot_load_grader(exc: BaseException) -> bool:
    """Did the task fail because its worker cannot load the grader (no course package there)?"""
    text = str(exc)[:500]
    return isinstance(exc, ImportError) or ("autograder" in text and ("No module" in text or "import" in text.lower()))


def _task_failure(exc: BaseException) -> str:
    """A failed task's message for its submission's grader error."""
    name = type(exc).__name__
    text = str(exc)[:500]
    if name == "KilledWorker":
        return (f"the Dask workers running this submission died each time it ran, so the scheduler gave up on it "
                f"(KilledWorker: {text}); grade it again, or with the local executor")
    if _cannot_load_grader(exc):
        return (f"a Dask worker could not load the grader ({name}: {text}): install the course's wheel with its "
                f"extra `cluster` on every worker ({CLUSTER_INSTALL} or the wheel of `./course wheel`)")
    return f"the Dask task grading this submission failed ({name}: {text})"


def unprotected_warning(address: str) -> Optional[str]:
    """Why a scheduler reached at ``address`` without TLS exposes the course, or None for
    ``tls://``. A Dask cluster runs whatever a client that reaches its scheduler asks for, and the
    scheduler holds every task's payload: the submissions, the assignments' source notebooks with
    their hidden tests and the grading seed."""
    if address.strip().lower().startswith("tls://"):
        return None
    return (f"the Dask scheduler at {address} is reached without TLS: whoever can reach its port (and `dask "
            "scheduler` listens on every network interface unless given --host) can run code on the cluster, read "
            "every submission, the assignments' source notebooks with their hidden tests and the grading seed, and "
            "change results. Keep the scheduler's and the workers' ports on a network only you reach, or use a "
            "tls:// address with Dask's TLS settings (distributed.comm.require-encryption, distributed.comm.tls.*) "
            "and client certificates")


def _payload_bytes(payload: Dict[str, Any]) -> int:
    """The bytes a payload (:func:`.remote.build_payload`) carries: its files and notebooks."""
    total = 0
    for key in ("notebook", "source_notebook"):
        if isinstance(payload.get(key), (bytes, bytearray)):
            total += len(payload[key])
    for key in ("files", "source_files"):
        total += sum(len(b) for b in (payload.get(key) or {}).values())
    return total


class DaskExecutor(Executor):
    """One ``dask.distributed`` task per submission (:func:`.remote.grade_task`), on the cluster of
    the scheduler at ``address``. ``connect_timeout``: seconds to reach the scheduler (at the start,
    and again after a lost connection, before the run stops); ``retries``: times a task that
    raised runs again (a worker that dies mid-task is replaced by the scheduler itself, up to its
    ``allowed-failures``); ``window``: tasks submitted ahead (the payloads held at once). A
    cluster left with no worker at all for :attr:`NO_WORKER_S` stops the run as a lost scheduler
    does (:class:`ExecutorLost`).
    Whatever the window, nothing more is submitted while the payloads submitted and not yet
    finished reach :attr:`MAX_BYTES_AHEAD` in all (one task is always let through): each may
    carry up to :data:`.remote.MAX_PAYLOAD_BYTES` of a student's files plus the notebook, and
    this process and the scheduler hold every submitted task's payload until it is done."""

    POLL_S = 2.0
    #: Seconds the run waits with no worker connected at all before it stops (its results so far
    #: stored; the next run grades the rest), rather than wait for ever in silence.
    NO_WORKER_S = 600.0
    MAX_BYTES_AHEAD = 1 * 2**30

    def __init__(self, address: str, connect_timeout: float = 10.0, retries: int = 1, window: Optional[int] = None):
        if not isinstance(address, str) or not address.strip():
            raise ValueError(f"DaskExecutor: address must be a scheduler address such as 'tcp://HOST:8786', "
                             f"got {address!r}")
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) or connect_timeout <= 0:
            raise ValueError(f"DaskExecutor: connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
        self.address = address.strip()
        self.retries = int(retries)
        self.window = window
        distributed = _import_distributed()
        self._distributed = distributed
        try:
            self.client = distributed.Client(self.address, timeout=connect_timeout, set_as_default=False)
        except Exception as e:
            raise RuntimeError(f"cannot reach the Dask scheduler at {self.address} within {connect_timeout:g} s "
                               f"({type(e).__name__}: {str(e)[:300]}); is `dask scheduler` running there, and is "
                               "its port open from this machine?") from None
        self.threads, self.nworkers = self._count()
        self.workers = max(1, self.threads)
        self.dashboard = self._dashboard()
        self.warning = unprotected_warning(self.address)

    def _dashboard(self) -> Optional[str]:
        """The scheduler's dashboard link, or None when it runs none. A scheduler started with
        ``--no-dashboard`` still names an HTTP port (its health and metrics routes), where the
        link's page is "404 Not Found": asked once, a page that is not there is no dashboard (a
        port this machine cannot reach keeps its link: the dashboard may be there for others)."""
        try:
            if not self.client.scheduler_info().get("services", {}).get("dashboard"):
                return None
            link = self.client.dashboard_link or None
        except Exception:
            return None
        if link is None:
            return None
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(link, timeout=3):
                pass
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
        except Exception:  # not reachable from here: say what the scheduler says
            pass
        return link

    def _count(self) -> Tuple[int, int]:
        """(threads, workers) of the cluster now."""
        try:
            nthreads = self.client.nthreads()
        except Exception:
            return 0, 0
        return int(sum(nthreads.values())), len(nthreads)

    def describe(self) -> str:
        text = (f"Dask scheduler {self.address} with {self.nworkers} worker(s), {self.threads} thread(s) "
                "(a submission per thread)")
        if not self.nworkers:
            text += (f"; no worker is connected yet: the submissions wait for one (at most {self.NO_WORKER_S:g} s)")
        return text

    def _lost(self, why: str) -> ExecutorLost:
        why = " ".join(why.split())  # one line
        return ExecutorLost(f"lost the Dask scheduler at {self.address} ({why[:300]})")

    def run(self, jobs: Sequence[Job], config: RunConfig) -> Iterator[Tuple[Job, Dict[str, Any]]]:
        distributed = self._distributed
        version = remote.grader_version()
        queue: List[Job] = list(jobs)
        queue.reverse()  # popped from the end: in the order given
        pending: Dict[Any, Job] = {}
        sizes: Dict[Any, int] = {}  # each pending task's payload, in bytes
        ready: List[Tuple[Job, Dict[str, Any]]] = []
        no_worker_since: Optional[float] = None  # since when the cluster has had no worker
        while queue or pending or ready:
            window = (self.window or max(32, 4 * max(1, self._count()[0]))) if queue else 0
            while queue and len(pending) < window and (not pending or sum(sizes.values()) < self.MAX_BYTES_AHEAD):
                job = queue.pop()
                try:
                    payload = remote.build_payload(job, config.course, config.limits, config.sandbox, version)
                except Exception as e:  # a file that vanished or cannot be read: this submission's problem
                    ready.append((job, _grader_error(f"the submission could not be sent to the Dask cluster "
                                                     f"({type(e).__name__}: {e})")))
                    continue
                try:
                    fut = self.client.submit(remote.grade_task, payload, key=f"grade-{job.assignment}-{uuid.uuid4().hex}",
                                             pure=False, retries=self.retries)
                except Exception as e:
                    raise self._lost(f"submitting failed: {type(e).__name__}: {str(e)[:300]}") from None
                pending[fut] = job
                sizes[fut] = _payload_bytes(payload)
                del payload
            while ready:
                yield ready.pop()
            if not pending:
                continue
            try:
                with self.client.as_current():  # (this client, not a process-wide default)
                    done = distributed.wait(list(pending), timeout=self.POLL_S, return_when="FIRST_COMPLETED").done
            except (TimeoutError, distributed.TimeoutError):
                done = set()
            except Exception as e:  # the connection broke while waiting
                if "Cancelled" in type(e).__name__:  # the client cancels every task when it loses the scheduler
                    raise self._lost("the connection to it was lost, and with it every task not finished") from None
                raise self._lost(f"{type(e).__name__}: {str(e)[:300]}") from None
            if not done:
                if self.client.status in ("closing", "closed"):
                    raise self._lost("the connection closed and could not be made again")
                if self._count()[1]:
                    no_worker_since = None
                elif no_worker_since is None:
                    no_worker_since = time.monotonic()
                elif time.monotonic() - no_worker_since >= self.NO_WORKER_S:
                    raise ExecutorLost(
                        f"no Dask worker was connected to the scheduler at {self.address} for "
                        f"{self.NO_WORKER_S:g} s, so {len(pending)} submission(s) waited for one in vain (workers "
                        "started without a nanny stop when their scheduler goes away); start workers "
                        f"(`dask worker {self.address}`) and run the same command again")
                continue
            for fut in done:
                job = pending.pop(fut)
                result = self._result(fut, job, config)
                if result is None:  # its result was lost with a worker: the scheduler runs it again
                    pending[fut] = job
                    continue
                sizes.pop(fut, None)
                fut.release()
                yield job, result

    def _result(self, fut, job: Job, config: RunConfig) -> Optional[Dict[str, Any]]:
        """The job's result, or None when it is not there after all (being computed again)."""
        if fut.status == "cancelled":
            # The client cancels every task when it loses the scheduler (or someone cancelled it there)
            raise self._lost("its tasks were cancelled: the connection was lost or the scheduler restarted")
        if fut.status == "error":
            try:
                exc = fut.exception(timeout=30)
            except Exception as e:
                raise self._lost(f"the task's error could not be read: {type(e).__name__}: {e}") from None
            result = _grader_error(_task_failure(exc))
            if _cannot_load_grader(exc):
                result["worker_problem"] = True  # the worker's environment: not a grade
            return result
        try:
            out = fut.result(timeout=60)
        except Exception as e:
            if self.client.status in ("closing", "closed", "connecting"):
                raise self._lost(f"{type(e).__name__}: {str(e)[:300]}") from None
            if fut.status in ("pending", "lost"):  # the worker holding it died: computed again
                return None
            return _grader_error(_task_failure(e))
        if not isinstance(out, dict) or not isinstance(out.get("result"), dict):
            return _grader_error(f"the Dask task returned {type(out).__name__}, not a grading result")
        result = out["result"]
        jdir = Path(tempfile.mkdtemp(prefix=f"job_{job.student[:40]}_", dir=config.folder))
        nb = out.get("notebook")
        path = None
        if isinstance(nb, (bytes, bytearray)):
            path = jdir / f"{job.assignment}.ipynb"
            path.write_bytes(bytes(nb))
        result["_notebook"] = str(path) if path is not None else None
        result["_jobdir"] = str(jdir)
        return result

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is None:
            return
        self.client = None
        import logging

        quiet = client.status != "running"  # a scheduler already gone: its reconnection's tracebacks are noise
        log = logging.getLogger("distributed.client")
        level = log.level
        if quiet:
            log.setLevel(logging.CRITICAL)
        try:
            client.close(timeout=5)
        except Exception:
            pass
        finally:
            log.setLevel(level)


def make_executor(scheduler: Optional[str], workers: int) -> Executor:
    """The executor a run uses: :class:`DaskExecutor` on ``scheduler`` when it is given, else
    :class:`LocalExecutor` with ``workers``."""
    if scheduler is not None:
        return DaskExecutor(scheduler)
    return LocalExecutor(workers)
