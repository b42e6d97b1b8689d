"""Calling into a learner's code safely, and observing the learner's objects.

A check never raises because of the learner's code and never writes to stderr (nbgrader gives
0 points to a test cell that does): whatever the learner's function does — raise, print, warn,
hang, return the wrong type — becomes a :class:`LearnerError` whose text is one line of the report.

Both :func:`call` and :func:`observe` are observations (:mod:`.observe`): in a probe they run
and are recorded, in a judge they are read back.
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import LearnerError
from .observe import exchange, unwrap

#: Seconds one call into a learner's function may take before the check gives up on it.
CALL_TIME_LIMIT = 20.0

_GRADER_DIR = str(Path(__file__).resolve().parents[1])  # autograder/: frames here are ours


class _TimeUp(BaseException):
    """Raised inside the learner's code when it runs past the call's time limit."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    # SIGALRM interrupts a runaway loop in pure Python; it exists only on Unix, in the main thread.
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def _raise(signum, frame):
        raise _TimeUp()

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_safely(fn: Callable, args: tuple = (), kwargs: Optional[dict] = None, time_limit: Optional[float] = None) -> Any:
    """``fn(*args, **kwargs)`` with output swallowed and every failure turned into a LearnerError."""
    time_limit = CALL_TIME_LIMIT if time_limit is None else time_limit
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            with _time_limit(time_limit):
                # A probe's stand-ins for the learner's objects are the objects themselves here.
                fn, args, kwargs = unwrap(fn), unwrap(tuple(args)), unwrap(dict(kwargs or {}))
                if not callable(fn):
                    raise LearnerError(f"expected a function, got {type(fn).__name__} {short_repr(fn)}")
                return fn(*args, **kwargs)
    except NotImplementedError:
        raise LearnerError(
            "not implemented yet: replace `raise NotImplementedError()` with your code",
            kind="not_implemented",
        ) from None
    except _TimeUp:
        raise LearnerError(
            f"did not finish within {time_limit:g} s (an endless loop?)", kind="timeout"
        ) from None
    except LearnerError:
        raise
    except (Exception, SystemExit) as e:  # the learner's bug, reported, never re-raised
        raise LearnerError(describe_exception(e)) from None


def call(fn: Callable, *args: Any, time_limit: Optional[float] = None, **kwargs: Any) -> Any:
    """Call a learner's ``fn`` safely: returns its value or raises :class:`LearnerError`.

    Whatever the call prints or warns is swallowed (a warning on stderr would cost the whole
    test cell in nbgrader); exceptions, ``exit()`` and runaway loops become a LearnerError. In a
    check, the value is the recorded copy (see :mod:`.observe`).
    """
    return exchange("call", (args, kwargs), lambda: run_safely(fn, args, kwargs, time_limit))


def attempt(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Like :func:`call`, but returns the LearnerError instead of raising it (the report says it)."""
    try:
        return call(fn, *args, **kwargs)
    except LearnerError as e:
        return e


def observe(label: str, fn: Callable, *args: Any, time_limit: Optional[float] = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, where ``fn`` is the check's own code that looks at the learner's
    objects (``args``), as one observation named ``label``: run and recorded in the probe, read
    back in the judge. Its result must be plain data (numbers, strings, tensors, lists, dicts) or
    objects the judge only passes on. A failure inside becomes a LearnerError, as in :func:`call`."""
    return exchange(label, (args, kwargs), lambda: run_safely(fn, args, kwargs, time_limit))


def describe_exception(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    # The innermost frame in the learner's own code (notebook cells are "<ipython-input…>" or
    # temporary files), so the message points at their line rather than at ours.
    where = ""
    for frame in reversed(tb):
        if not frame.filename.startswith(_GRADER_DIR):
            where = f" (line {frame.lineno}: {frame.line.strip()})" if frame.line else f" (line {frame.lineno})"
            break
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    hint = ""
    if "view size is not compatible" in msg:
        hint = (" — after a transpose the tensor is no longer contiguous in memory: use .reshape(...) "
                "or .contiguous().view(...)")
    return f"raised {type(e).__name__}{': ' + msg if msg else ''}{where}{hint}"


def short_repr(x: Any, limit: int = 60) -> str:
    try:
        r = repr(x)
    except Exception:
        r = object.__repr__(x)
    return r if len(r) <= limit else r[: limit - 3] + "..."
