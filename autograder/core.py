"""The machinery every step check shares: results with partial credit, safe calls into a
learner's code, forbidden-call detection, random case generation and tensor comparison.

A check never raises because of the learner's code and never writes to stderr (nbgrader gives
0 points to a test cell that does): whatever the learner's function does — raise, print, warn,
hang, return the wrong type — becomes a line of the report.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import secrets
import signal
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

#: Seconds one call into a learner's function may take before the check gives up on it.
CALL_TIME_LIMIT = 20.0

#: Set by a grading run so that hidden cases are the same on every re-grade.
SEED_ENV = "MHSA_GRADING_SEED"

PASS, FAIL = "✓", "✗"


# --------------------------------------------------------------------------- results


@dataclass
class Part:
    """One sub-part of a step check, worth ``weight`` of the step's points when it holds."""

    name: str
    weight: float
    passed: bool
    detail: str = ""


@dataclass
class CheckResult:
    """What a step check found: points, the sub-parts, and a diagnosis if one applies."""

    step: str
    max_points: float
    parts: List[Part] = field(default_factory=list)
    diagnosis: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    zero_reason: Optional[str] = None  # set when the step earns nothing whatever the parts say
    seed: Optional[int] = None
    hidden: bool = False
    fn_id: Optional[int] = None  # id() of the function checked, so a fallback knows what passed

    def add(self, name: str, weight: float, passed: bool, detail: str = "") -> bool:
        self.parts.append(Part(name, weight, bool(passed), detail))
        return bool(passed)

    def diagnose(self, message: str) -> None:
        if message not in self.diagnosis:
            self.diagnosis.append(message)

    @property
    def passed(self) -> bool:
        return self.zero_reason is None and all(p.passed for p in self.parts) and bool(self.parts)

    @property
    def points(self) -> float:
        """Partial credit: the share of the parts' weight that holds, scaled to the step's points."""
        if self.zero_reason is not None or not self.parts:
            return 0.0
        total = sum(p.weight for p in self.parts)
        got = sum(p.weight for p in self.parts if p.passed)
        # A plain float, rounded so nbgrader reads it back exactly, never above the maximum.
        return float(min(self.max_points, round(self.max_points * got / total, 2)))

    def report(self) -> str:
        head = f"{self.step}: {_fmt_points(self.points)} / {_fmt_points(self.max_points)} points"
        if self.hidden:
            # The public report is printed just above this one: list only what fails.
            head += " with the hidden cases drawn at grading time"
            if self.passed:
                return head + ": all checks pass."
        lines = [head]
        if self.zero_reason:
            lines.append(f"  {FAIL} {self.zero_reason}")
        for p in self.parts:
            if self.hidden and p.passed:
                continue
            mark = PASS if p.passed else FAIL
            lines.append(f"  {mark} {p.name}" + (f": {p.detail}" if p.detail else ""))
        for d in self.diagnosis:
            lines.append(_wrap("  Diagnosis: " + d, indent="    "))
        for n in self.notes:
            lines.append(_wrap("  Note: " + n, indent="    "))
        if self.seed is not None and not self.passed and len(self.parts) > 1:
            again = f"hidden=True, seed={self.seed}" if self.hidden else f"seed={self.seed}"
            lines.append(f"  (random cases drawn with seed={self.seed}; pass {again} to the check to see them again)")
        if self.passed:
            lines.append("  All checks pass.")
        return "\n".join(lines)


def _fmt_points(x: float) -> str:
    return f"{x:g}"


def _wrap(text: str, indent: str, width: int = 100) -> str:
    import textwrap

    return textwrap.fill(text, width=width, subsequent_indent=indent, break_long_words=False)


# Results of the latest check of each step in this Python process: the fallback helpers read them.
_LATEST: Dict[str, CheckResult] = {}


def record(result: CheckResult) -> CheckResult:
    _LATEST[result.step] = result
    return result


def latest(step: str) -> Optional[CheckResult]:
    return _LATEST.get(step)


# Notes queued for the next check that finishes (e.g. "your softmax was swapped for mhsa_lib's").
PENDING_NOTES: List[str] = []


def finish(result: CheckResult, quiet: bool = False) -> float:
    """Record and print a result; return its points (a plain float, for nbgrader's partial credit)."""
    if not (result.zero_reason and "not implemented yet" in result.zero_reason):
        result.notes.extend(PENDING_NOTES)  # (nothing of the step ran otherwise: no need to say)
    PENDING_NOTES.clear()
    record(result)
    if not quiet:
        print(result.report())
    return result.points


# --------------------------------------------------------------------------- calling learner code


class LearnerError(Exception):
    """The learner's function raised, timed out or misbehaved; ``str()`` says how, in one line."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind  # "not_implemented" | "timeout" | "error"


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


def call(fn: Callable, *args: Any, time_limit: Optional[float] = None, **kwargs: Any) -> Any:
    """Call a learner's ``fn`` safely: returns its value or raises :class:`LearnerError`.

    Whatever the call prints or warns is swallowed (a warning on stderr would cost the whole
    test cell in nbgrader); exceptions, ``exit()`` and runaway loops become a LearnerError.
    """
    if not callable(fn):
        raise LearnerError(f"expected a function, got {type(fn).__name__} {_short_repr(fn)}")
    time_limit = CALL_TIME_LIMIT if time_limit is None else time_limit
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            with _time_limit(time_limit):
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
    except (Exception, SystemExit) as e:  # the learner's bug, reported, never re-raised
        raise LearnerError(_describe_exception(e)) from None


def attempt(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Like :func:`call`, but returns the LearnerError instead of raising it (the report says it)."""
    try:
        return call(fn, *args, **kwargs)
    except LearnerError as e:
        return e


def _describe_exception(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    # The innermost frame in the learner's own code (notebook cells are "<ipython-input…>" or
    # temporary files), so the message points at their line rather than at ours.
    where = ""
    for frame in reversed(tb):
        if not frame.filename.startswith(str(Path(__file__).parent)):
            where = f" (line {frame.lineno}: {frame.line.strip()})" if frame.line else f" (line {frame.lineno})"
            break
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    hint = ""
    if "view size is not compatible" in msg:
        hint = (" — after a transpose the tensor is no longer contiguous in memory: use .reshape(...) "
                "or .contiguous().view(...)")
    return f"raised {type(e).__name__}{': ' + msg if msg else ''}{where}{hint}"


def _short_repr(x: Any, limit: int = 60) -> str:
    try:
        r = repr(x)
    except Exception:
        r = object.__repr__(x)
    return r if len(r) <= limit else r[: limit - 3] + "..."


# --------------------------------------------------------------------------- forbidden shortcuts


class _TorchCalls(TorchFunctionMode):
    """Records the names of the torch functions called (at the outermost level)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def find_shortcuts(
    fn: Callable,
    args: Sequence[Any],
    torch_names: Iterable[str],
    forbid_library: Union[bool, Sequence[str]] = True,
) -> List[str]:
    """Run ``fn(*args)`` once and list the forbidden things it used.

    ``torch_names`` are torch function names (``"softmax"``, ``"scaled_dot_product_attention"``)
    seen through a TorchFunctionMode, so aliases and methods (``x.softmax``) are caught too.
    ``forbid_library``: True forbids any call into ``mhsa_lib``; a list of names forbids only
    those functions and classes (later steps may use the library's earlier steps).
    """
    import mhsa_lib

    lib_dir = str(Path(mhsa_lib.__file__).parent)
    used_lib: List[str] = []
    prefixes = None if forbid_library is True else tuple(forbid_library or ())

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(lib_dir):
            name = getattr(frame.f_code, "co_qualname", None)  # Python 3.11+
            if name is None:
                owner = frame.f_locals.get("self")
                name = f"{type(owner).__name__}.{frame.f_code.co_name}" if owner is not None else frame.f_code.co_name
            if prefixes is None or name.split(".")[0] in prefixes:
                used_lib.append(name)

    mode = _TorchCalls()
    previous = sys.getprofile()
    try:
        with mode:
            if forbid_library:
                sys.setprofile(profiler)
            try:
                call(fn, *args)
            except LearnerError:
                pass
            finally:
                if forbid_library:
                    sys.setprofile(previous)
    except Exception:  # never let the probe itself break a check
        pass
    found = sorted(n for n in set(torch_names) if n in mode.names)
    labels = [f"torch's {n}" for n in found]
    if used_lib:
        labels.append(f"mhsa_lib ({used_lib[0]})")
    return labels


# --------------------------------------------------------------------------- randomness


def draw_seed(step: str, seed: Optional[int] = None, hidden: bool = False) -> int:
    """The seed for a check's random cases.

    An explicit ``seed`` wins. In a grading run, ``MHSA_GRADING_SEED`` makes the cases the same
    on every re-grade of the same submission (combined with the step, so steps differ).
    Otherwise each run draws fresh cases, so no fixed answer can pass them.
    """
    if seed is not None:
        return int(seed)
    base = os.environ.get(SEED_ENV)
    if base is not None:
        import hashlib

        digest = hashlib.sha256(f"{base}:{step}:{'hidden' if hidden else 'public'}".encode()).digest()
        return int.from_bytes(digest[:4], "little")
    return secrets.randbits(31)


def distinct_sizes(gen: torch.Generator, n: int, low: int = 2, high: int = 9) -> List[int]:
    """``n`` different sizes in [low, high]: a mix-up of two axes then always shows as a shape error."""
    perm = torch.randperm(high - low + 1, generator=gen)[:n]
    return [int(p) + low for p in perm]


def randn(gen: torch.Generator, *shape: int, dtype=torch.float32, scale: float = 1.0) -> Tensor:
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


# --------------------------------------------------------------------------- comparing tensors


@dataclass
class Comparison:
    ok: bool
    detail: str


def compare(
    actual: Any,
    expected: Tensor,
    *,
    what: str = "output",
    atol: float = 1e-5,
    rtol: float = 1e-4,
    dtype: Optional[torch.dtype] = None,
) -> Comparison:
    """Is ``actual`` a tensor of ``expected``'s shape (and dtype) with close values? Says why not."""
    if not isinstance(actual, Tensor):
        return Comparison(False, f"{what} is {type(actual).__name__} {_short_repr(actual)}, expected a tensor")
    if tuple(actual.shape) != tuple(expected.shape):
        return Comparison(False, f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if dtype is not None and actual.dtype != dtype:
        return Comparison(False, f"{what} has dtype {actual.dtype}, expected {dtype} (the input's dtype)")
    if not actual.dtype.is_floating_point and expected.dtype.is_floating_point:
        return Comparison(False, f"{what} has dtype {actual.dtype}, expected a floating-point tensor")
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    bad = ~torch.isfinite(a) & torch.isfinite(e)
    if bool(bad.any()):
        n_nan = int(torch.isnan(a).sum())
        n_inf = int(torch.isinf(a).sum())
        return Comparison(False, f"{what} has {n_nan} NaN and {n_inf} inf values where the expected values are finite")
    if a.numel() == 0 or torch.allclose(a, e, atol=atol, rtol=rtol, equal_nan=True):
        return Comparison(True, "")
    err = (a - e).abs()
    idx = _unravel(int(torch.argmax(err.nan_to_num(0))), err.shape)
    return Comparison(
        False,
        f"{what} values differ: largest difference {float(err.nan_to_num(0).max()):.3g} at index {idx} "
        f"(yours {float(a[idx]):.6g}, expected {float(e[idx]):.6g})",
    )


def _unravel(flat: int, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The index in ``shape`` of the ``flat``-th element (``torch.unravel_index`` needs torch 2.2)."""
    idx = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        idx.append(i)
    return tuple(reversed(idx))


def close(actual: Any, expected: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Quiet yes/no version of :func:`compare`, for matching known mistakes."""
    return compare(actual, expected, atol=atol, rtol=rtol).ok


def matches(actual: Any, candidate: Any, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Does ``actual`` equal a known mistake's output, NaN for NaN and inf for inf?"""
    if not isinstance(actual, Tensor) or not isinstance(candidate, Tensor):
        return False
    if tuple(actual.shape) != tuple(candidate.shape) or not actual.dtype.is_floating_point:
        return False
    a = actual.detach().to("cpu", torch.float64)
    c = candidate.detach().to("cpu", torch.float64)
    return bool(torch.isclose(a, c, atol=atol, rtol=rtol, equal_nan=True).all())


def describe_failures(failures: List[str], limit: int = 2) -> str:
    shown = "; ".join(failures[:limit])
    more = len(failures) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


def format_shape(shape: Sequence[int], letters: str) -> str:
    return "(" + ", ".join(f"{l}={n}" for l, n in zip(letters.split(), shape)) + ")"


def isclose_scalar(a: float, b: float, rel: float = 0.03) -> bool:
    return math.isfinite(a) and abs(a - b) <= rel * abs(b)
