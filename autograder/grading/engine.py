"""The one notebook executor of the course: the self-check (``./course check``, ``./course
progress``) and the class grader (``./course autograde``, one worker process per submission) both
run a notebook through it, so they restore, run and score it the same way.

1. :func:`prepare` restores what a learner may not change from the instructor's copy
   (:func:`.nbgrader_tools.restore`: test cells, their points, the kernel);
2. :func:`execute` runs it in a fresh kernel started through :mod:`.sandbox_kernel` (resource
   limits), with a time limit per cell and for the whole notebook (a cell that ignores its
   interrupt has its kernel killed) and a cap on the output kept;
3. :func:`run` does 2 and scores every test cell as nbgrader does (:mod:`.scoring`), with the
   status and message of the run.

The notebook is executed in place in memory; the caller decides where it runs (its cwd) and in
which environment. The self-check runs the learner's notebook in its own folder, without a
memory limit; the class grader runs it inside its sandbox (:mod:`.run_notebook`), with test cells
that only observe, and judges the scores outside (:mod:`.judging`).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

from . import nbgrader_tools as nbt
from .reading import one_line
from .scoring import StepResult, score_notebook

SANDBOX_KERNEL = Path(__file__).resolve().parent / "sandbox_kernel.py"

#: Seconds one cell may run before it is interrupted (and counts as an error), by default.
CELL_TIMEOUT = 300
#: Seconds the whole notebook may run by default; cells after that are not run and earn 0.
TOTAL_TIMEOUT = 1800


class KernelFailed(RuntimeError):
    """No kernel could be started (or it failed before running any cell); ``str()`` says why."""


@dataclass
class Limits:
    cell_timeout: float = float(CELL_TIMEOUT)  # seconds one cell may run
    total_timeout: float = float(TOTAL_TIMEOUT)  # seconds the whole notebook may run
    memory_mb: int = 4096  # memory the kernel may allocate, RLIMIT_DATA (0: no limit)
    max_output_bytes: int = 1_000_000  # output kept per cell; the rest is dropped with a note
    max_notebook_output_bytes: int = 20_000_000  # output kept for the whole notebook
    file_mb: int = 512  # largest file the kernel may write
    grace: float = 5.0  # seconds a cell gets after its interrupt before the kernel is killed

    def to_dict(self) -> Dict[str, Any]:
        return dict(vars(self))


@dataclass
class Execution:
    ran: List[int] = field(default_factory=list)
    stopped: Optional[str] = None  # why cells after some point did not run
    died_in: Optional[int] = None  # cell where the kernel died
    timed_out: List[int] = field(default_factory=list)  # cells interrupted at their limit
    truncated: List[int] = field(default_factory=list)  # cells whose output was cut
    seconds: float = 0.0
    cell_seconds: Dict[int, float] = field(default_factory=dict)  # cell index -> seconds it took
    errors: Dict[int, str] = field(default_factory=dict)  # cell outside the tests -> "Name: message" it raised


def _fixed_kernel_manager(argv: Sequence[str], display_name: str):
    """A jupyter_client kernel manager whose kernel, whatever a notebook names, is ``argv``."""
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    spec = dict(get_kernel_dict())
    spec.update(argv=list(argv), display_name=display_name)

    class FixedSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(resource_dir=RESOURCES, **spec)

    class FixedKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _fixed_specs(self):
            return FixedSpecs(data_dir=self.data_dir)

    return FixedKernelManager


def _quiet_log(name: str):
    """A logger for nbclient that stays silent: its timeout and interrupt messages would go to
    stderr, and the step's message already says the same in words."""
    import logging

    log = logging.getLogger(name)
    log.setLevel(logging.CRITICAL)
    log.propagate = False
    return log


def _kernel_threads(env: Optional[Mapping[str, str]]) -> int:
    """The threads the kernel's numerical libraries may use: ``OMP_NUM_THREADS`` of its
    environment, else every core."""
    try:
        return max(1, int((os.environ if env is None else env).get("OMP_NUM_THREADS", "")))
    except ValueError:
        return max(1, os.cpu_count() or 1)


def _kernel_manager_class(limits: Limits, env: Optional[Mapping[str, str]] = None):
    """Every kernel starts through the sandbox script, which applies the limits. Its CPU seconds
    (a backstop behind the time limits) allow twice the total time limit on each thread."""
    cpu = int(limits.total_timeout * 2 + 120) * _kernel_threads(env)
    argv = [
        sys.executable, str(SANDBOX_KERNEL),
        "--memory-mb", str(int(limits.memory_mb)), "--file-mb", str(int(limits.file_mb)), "--cpu-s", str(cpu),
        "--", "-f", "{connection_file}",
    ]
    return _fixed_kernel_manager(argv, display_name="Python 3 (graded)")


def _output_size(out: Mapping[str, Any]) -> int:
    kind = out.get("output_type")
    if kind == "stream":
        t = out.get("text", "")
        return len(t) if isinstance(t, str) else sum(len(x) for x in t)
    n = 0
    for v in (out.get("data") or {}).values():
        n += len(v) if isinstance(v, str) else len(str(v))
    if kind == "error":
        n += len(str(out.get("evalue", ""))) + sum(len(x) for x in out.get("traceback", []))
    return n


def _client_class():
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        """Keeps at most ``cap_cell`` characters of output per cell and ``cap_total`` per notebook;
        errors and a cell's value are always kept (they decide the score), shortened if huge."""

        cap_cell = 1_000_000
        cap_total = 20_000_000

        def reset_caps(self):
            self._sizes: Dict[int, int] = {}
            self._total = 0
            self.truncated: Set[int] = set()

        def output(self, outs, msg, display_id, cell_index):
            out = super().output(outs, msg, display_id, cell_index)
            if out is None:
                return out
            size = _output_size(out)
            used = self._sizes.get(cell_index, 0)
            keep = out.get("output_type") in ("error", "execute_result")
            if not keep and (used + size > self.cap_cell or self._total + size > self.cap_total):
                if outs and outs[-1] is out:
                    outs.pop()
                self.truncated.add(cell_index)
                return None
            if keep and size > self.cap_cell:
                if out.get("output_type") == "error":
                    out["traceback"] = list(out.get("traceback", []))[-5:]
                    out["evalue"] = str(out.get("evalue", ""))[:10_000]
                else:
                    data = out.get("data", {})
                    for k in list(data):
                        if k != "text/plain":
                            del data[k]
                    if "text/plain" in data:
                        tp = data["text/plain"]
                        data["text/plain"] = (tp if isinstance(tp, str) else "".join(tp))[:10_000]
                size = _output_size(out)
            self._sizes[cell_index] = used + size
            self._total += size
            return out

    return CappedClient


def _note(text: str):
    from nbformat import NotebookNode

    return NotebookNode(output_type="stream", name="stdout", text=text)


def _error(ename: str, evalue: str):
    from nbformat import NotebookNode

    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[])


def _shell_reply(client, msg_id: str, timeout: float) -> Optional[dict]:
    from jupyter_core.utils import run_sync

    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            msg = run_sync(client.kc.get_shell_msg)(timeout=left)
        except Exception:
            return None
        if msg.get("parent_header", {}).get("msg_id") == msg_id:
            return msg


def _silent(client, code: str, expressions: Optional[Dict[str, str]] = None, timeout: float = 60) -> Optional[dict]:
    msg_id = client.kc.execute(code, silent=True, store_history=False, user_expressions=expressions or {},
                               allow_stdin=False)
    reply = _shell_reply(client, msg_id, timeout)
    return None if reply is None else reply.get("content", {})


def execute(
    nb,
    cwd: Path,
    limits: Limits,
    env: Optional[Mapping[str, str]] = None,
    test_cells: Optional[Set[int]] = None,
    after=None,
) -> Execution:
    """Execute ``nb`` in place. ``test_cells``: indices of the test cells; ``after(evaluate)``, if
    given, is called once all cells ran and the kernel is still alive, with a function that
    evaluates an expression in the kernel and returns its text (or None)."""
    from nbclient.exceptions import DeadKernelError
    from nbformat import NotebookNode

    test_cells = set(test_cells or ())
    res = Execution()
    started = time.monotonic()

    def on_cell_executed(cell, cell_index, execute_reply):
        content = execute_reply.get("content", {})
        if content.get("status") == "error":
            ename = content.get("ename", "Error")
            if not any(o.get("output_type") == "error" and o.get("ename") == ename for o in cell.outputs):
                cell.outputs.append(NotebookNode(output_type="error", ename=ename, evalue=content.get("evalue", ""),
                                                 traceback=list(content.get("traceback", []))[-5:]))

    Client = _client_class()
    client = Client(
        nb,
        kernel_name=nbt.KERNEL_NAME,
        kernel_manager_class=_kernel_manager_class(limits, env),
        allow_errors=True,
        interrupt_on_timeout=True,
        raise_on_iopub_timeout=False,
        iopub_timeout=4,
        shutdown_kernel="immediate",
        record_timing=False,
        on_cell_executed=on_cell_executed,
        resources={"metadata": {"path": str(cwd)}},
        startup_timeout=120,
        log=_quiet_log("autograder.grading.engine.nbclient"),
    )
    client.cap_cell = limits.max_output_bytes
    client.cap_total = limits.max_notebook_output_bytes
    client.reset_caps()
    deadline = started + limits.total_timeout

    def kernel_pid() -> Optional[int]:
        try:
            return client.km.provisioner.process.pid  # type: ignore[union-attr]
        except Exception:
            return None

    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as kernel_log:
        try:
            start = {"cwd": str(cwd), "stderr": kernel_log}
            if env is not None:
                start["env"] = dict(env)
            with client.setup_kernel(**start):
                # A kernel whose sockets the notebook broke (it can write to any of its own file
                # descriptors) stops taking requests: a send then fails after a while instead of
                # blocking forever.
                import zmq

                client.kc.shell_channel.socket.setsockopt(zmq.SNDTIMEO, int(1000 * (limits.grace + 5)))
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        res.stopped = f"the notebook ran past its total time limit of {limits.total_timeout:g} s"
                        break
                    limit = max(1, int(math.ceil(min(limits.cell_timeout, remaining))))
                    whole = limits.cell_timeout > remaining
                    client.timeout = limit
                    client.error_on_timeout = {
                        "ename": "CellTimeoutError",
                        "evalue": f"the cell ran past its time limit of {limit} s and was interrupted"
                        + (" (the limit for the whole notebook)" if whole else ""),
                        "traceback": [],
                    }
                    # If the kernel ignores the interrupt, kill it: a hang costs one limit.
                    pid = kernel_pid()
                    watchdog = threading.Timer(limit + limits.grace, _kill, args=(pid,))
                    watchdog.daemon = True
                    watchdog.start()
                    t0 = time.monotonic()
                    try:
                        client.execute_cell(cell, index)
                    except DeadKernelError:
                        res.ran.append(index)
                        killed = not watchdog.is_alive() or time.monotonic() - t0 >= limit + limits.grace - 0.5
                        why = ("the cell ignored the interrupt at its time limit, so the kernel was stopped"
                               if killed else
                               "the kernel died while running this cell (out of memory, the process exited or was killed)")
                        cell.outputs.append(_error("DeadKernelError", why))
                        res.died_in = index
                        res.stopped = f"the kernel died in cell {index}: {why}"
                        break
                    finally:
                        watchdog.cancel()
                        res.cell_seconds[index] = time.monotonic() - t0
                    res.ran.append(index)
                    if index not in test_cells:
                        raised = _raised(cell)
                        if raised:
                            res.errors[index] = raised
                    if any(o.get("output_type") == "error" and o.get("ename") == "CellTimeoutError" for o in cell.outputs):
                        res.timed_out.append(index)
                        # nbclient moves on right after the interrupt; a kernel that is still busy
                        # (the interrupt was ignored) is stopped now rather than at the next cell.
                        if _silent(client, "", timeout=limits.grace) is None:
                            _kill(pid)
                            why = "the cell ignored the interrupt at its time limit, so the kernel was stopped"
                            res.died_in = index
                            res.stopped = f"the kernel was stopped in cell {index}: {why}"
                            cell.outputs.append(_error("DeadKernelError", why))
                            break
                    if index in client.truncated:
                        cell.outputs.append(_note(f"\n[output cut: this cell's output was over the grader's "
                                                  f"limit of {limits.max_output_bytes} characters]\n"))
                if after is not None and res.died_in is None and deadline - time.monotonic() > 0:
                    def evaluate(expr: str, code: str = "", timeout: float = 20) -> Optional[str]:
                        reply = _silent(client, code, {"x": expr}, timeout=timeout)
                        x = (((reply or {}).get("user_expressions") or {}).get("x") or {})
                        return (x.get("data") or {}).get("text/plain") if x.get("status") == "ok" else None

                    try:
                        after(evaluate)
                    except Exception:
                        pass
        except DeadKernelError as e:
            res.stopped = res.stopped or f"the kernel died ({e})"
        except Exception as e:
            if not res.ran:
                kernel_log.seek(0)
                tail = [l for l in kernel_log.read().splitlines() if l.strip()][-1:]
                raise KernelFailed(f"cannot run a Python kernel: {type(e).__name__}: {one_line(str(e))}"
                                   + (f" ({one_line(tail[0])})" if tail else "")) from None
            res.stopped = res.stopped or f"execution stopped: {type(e).__name__}: {e}"
        finally:
            _kill_group(kernel_pid())
    res.truncated = sorted(client.truncated)
    res.seconds = time.monotonic() - started
    return res


@dataclass
class Prepared:
    """A notebook ready to run: restored, its test cells found."""

    nb: Any
    notes: List[str] = field(default_factory=list)  # what was put back, in words
    test_cells: Set[int] = field(default_factory=set)


@dataclass
class Graded:
    """A run and its scores: ``nb`` (executed in place), one step per test cell, the status
    (``ok``, ``cell-timeout``, ``timeout``, ``kernel-died``) and its message."""

    nb: Any
    steps: List[StepResult]
    notes: List[str]
    execution: Execution
    status: str
    message: str


def prepare(nb, source=None) -> Prepared:
    """``nb`` with what the learner may not change restored from ``source`` (None: run it as it is)."""
    notes: List[str] = []
    if source is not None:
        nb, notes = nbt.restore(nb, source)
    test_cells = {i for i, c in enumerate(nb.cells) if nbt.is_test_cell(c)}
    return Prepared(nb, list(notes), test_cells)


def run(prep: Prepared, cwd: Path, limits: Limits, env: Optional[Mapping[str, str]] = None, after=None) -> Graded:
    """Execute a prepared notebook (see :func:`execute`) and score it. Raises
    :class:`KernelFailed` when no kernel could run it."""
    ex = execute(prep.nb, cwd, limits, env=env, test_cells=prep.test_cells, after=after)
    steps = score_notebook(prep.nb, ex.ran, ex.stopped)
    status, message = outcome(ex, limits)
    return Graded(prep.nb, steps, run_notes(prep, ex, limits), ex, status, message)


#: Cells outside the tests that fail are named one by one up to this many; the rest are counted.
MAX_CELL_NOTES = 8
#: Errors the executor itself puts into a cell (its time limit, the kernel's death): said apart.
_OWN_ERRORS = ("CellTimeoutError", "DeadKernelError")


def _raised(cell) -> Optional[str]:
    """``"Name: message"`` of the (first) error a cell raised, not counting the executor's own."""
    for o in cell.get("outputs", ()):
        if o.get("output_type") == "error" and o.get("ename") not in _OWN_ERRORS:
            value = one_line(str(o.get("evalue", "")))
            value = value if len(value) <= 200 else value[:197] + "..."
            return f"{o.get('ename') or 'Error'}" + (f": {value}" if value else "")
    return None


def _exception_name(raised: str) -> str:
    """The name of the exception in ``raised`` ("Name: message") as a note may show it: a built-in
    exception by its name, any other as an exception of the notebook's own. Never the message,
    nor a name the notebook chose: the notes reach the student's feedback, and a cell that runs
    after a probe could otherwise carry what it read there (hidden cases) into them."""
    import builtins

    name = raised.split(":", 1)[0].strip()
    known = getattr(builtins, name, None)
    if isinstance(known, type) and issubclass(known, BaseException):
        return name
    return "an exception of a class of its own"


def _code_only(line: str) -> str:
    """``line`` with the text of its string literals replaced by ``...`` and its comment dropped:
    enough to find the line, no text of the notebook's choosing (a note reaches the feedback)."""
    out, i, n = [], 0, len(line)
    while i < n:
        ch = line[i]
        if ch == "#":
            break
        if ch in ("'", '"'):
            quote = line[i:i + 3] if line[i:i + 3] in ("'''", '"""') else ch
            j = i + len(quote)
            while j < n and not line.startswith(quote, j):
                j += 2 if line[j] == "\\" else 1
            out.append(f"{quote}...{quote}")
            i = j + len(quote)
            continue
        out.append(ch)
        i += 1
    return "".join(out).strip()


def _cell_label(nb, index: int) -> str:
    """``cell 4 (`x = torch.randn(...)`)``: the index and the cell's first line of code (its
    strings and comment left out, :func:`_code_only`)."""
    try:
        lines = nbt.cell_source(nb.cells[index]).splitlines()
    except (IndexError, AttributeError, TypeError):
        return f"cell {index}"
    first = next((c for c in map(_code_only, lines) if c), "")
    if len(first) > 60:
        first = first[:57] + "..."
    return f"cell {index}" + (f" (`{first}`)" if first else "")


def run_notes(prep: Prepared, ex: Execution, limits: Limits) -> List[str]:
    """What a run's result says besides the scores: what was restored, and what went wrong in the
    cells outside the tests (an error such as MemoryError, a time limit, output cut, the kernel's
    death), each cell named by its index and first line. The steps still ran unless the status
    says otherwise. An error is named by its type only (:func:`_exception_name`): its message is
    in the executed notebook (``autograded/`` for the instructor), never in a result."""
    notes = list(prep.notes)
    mem = f" (the grader lets a notebook allocate {limits.memory_mb} MB)" if limits.memory_mb else ""
    cells: List[str] = []
    for i in sorted(set(ex.errors) | set(ex.timed_out) | set(ex.truncated)
                    | ({ex.died_in} if ex.died_in is not None else set())):
        outside = i not in prep.test_cells  # a test cell's failure is its step's report
        what = []
        if outside and i in ex.errors and i not in ex.timed_out:
            name = _exception_name(ex.errors[i])
            what.append(f"raised {name}" + (mem if name == "MemoryError" else ""))
        if outside and i in ex.timed_out:
            what.append(f"ran past its time limit of {limits.cell_timeout:g} s and was interrupted")
        if outside and i == ex.died_in:
            what.append("the kernel died while it ran, so no cell after it ran")
        if i in ex.truncated:
            what.append(f"printed more than the {limits.max_output_bytes} characters kept, so its output was cut")
        if what:
            cells.append(f"{_cell_label(prep.nb, i)} {'; '.join(what)}")
    notes.extend(cells[:MAX_CELL_NOTES])
    if len(cells) > MAX_CELL_NOTES:
        notes.append(f"... and {len(cells) - MAX_CELL_NOTES} more cell(s) outside the tests with an error, "
                     "a time limit or output cut")
    return notes


def outcome(ex: Execution, limits: Limits):
    """The status of a run and its message."""
    if ex.died_in is not None:
        return "kernel-died", ex.stopped or "the kernel died"
    if ex.stopped:
        return "timeout", ex.stopped
    if ex.timed_out:
        return "cell-timeout", (f"{len(ex.timed_out)} cell(s) ran past the time limit of {limits.cell_timeout:g} s "
                                f"and were interrupted (cells {', '.join(map(str, ex.timed_out))})")
    return "ok", "graded"


def _kill(pid: Optional[int]) -> None:
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _kill_group(pid: Optional[int]) -> None:
    """Whatever the kernel started (its process group) goes with it."""
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
