"""The step registry: every graded step declares itself once, here, with what every part of the
course needs to know about it — its name and points, the notebook that teaches it, the module of
``mhsa_lib`` that implements it (or none), the reference its fallback uses, the earlier steps its
check isolates it from, the picture its feedback draws, and the check itself.

A check is one *body* ``body(subject, result, gen, hidden)`` that asks for observations of the
learner's object and judges them (see :mod:`.observe`). :class:`Step` runs it three ways:

- :meth:`Step.check` — in a notebook or ``./course check``: probe and judge in one process, print
  the report, return the points (what a test cell ends with);
- :meth:`Step.probe` — only observe, and return the record (class grading, in the sandbox);
- :meth:`Step.judge` — only judge a record, never touching the learner's code (class grading, in
  the grader's own process).
"""

from __future__ import annotations

import inspect
import re
import sys
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .calls import run_safely
from .cases import draw_seed
from .errors import LearnerError
from .modules import guarded
from .observe import Divergence, Observations, Opaque, Session, exchange, session
from .pictures import picture_png
from .results import CheckResult, html_front_end, show

#: Kinds of steps. Those in NO_LIBRARY_HOME have no module of mhsa_lib: the library has no
#: reference for a checkpoint, a warm-up or a repair of notebook 06's broken code.
KINDS = ("function", "module", "model", "warmup", "repair", "checkpoint")
NO_LIBRARY_HOME = ("warmup", "repair", "checkpoint")

_CHECKED = "_autograder_checked"  # attribute on a checked object: step -> (passed, points, max)


@dataclass(frozen=True)
class Step:
    name: str
    points: float
    body: Callable[[Any, CheckResult, torch.Generator, bool], None] = field(repr=False)
    notebook: str
    home: Optional[str]
    kind: str = "function"
    reference: Optional[Callable] = field(default=None, repr=False)
    reference_name: str = ""
    isolate: Tuple[str, ...] = ()
    picture: Optional[str] = field(default=None, repr=False)
    guard: bool = False
    check_name: str = ""
    check_module: str = ""
    title: str = ""  # the name the report uses, if not ``name``
    #: What the step asks the learner to build themselves: (torch function or class names, mhsa_lib
    #: names or True for any of mhsa_lib). The check's probe looks for calls at run time; the class
    #: grader also reads the learner's source for them (:mod:`autograder.grading.static`).
    forbidden: Tuple[Tuple[str, ...], Any] = ((), False)

    # ------------------------------------------------------------------ the three ways to run

    def run(self, subject: Any, *, seed: Optional[int] = None, hidden: bool = False) -> CheckResult:
        """Probe and judge in this process; the result of the check."""
        return self._run(subject, "record", Observations(self.name, self._seed(seed, hidden), hidden))[0]

    def probe(self, subject: Any, *, seed: int, hidden: bool = False) -> Observations:
        """Observe the learner's ``subject`` and return the record (plain data)."""
        return self.record(subject, seed=seed, hidden=hidden)[1]

    def record(self, subject: Any, *, seed: int, hidden: bool = False) -> Tuple[CheckResult, Observations]:
        """The probe, with the result its own (untrusted) copy of the check found on the way."""
        result, s = self._run(subject, "record", Observations(self.name, int(seed), hidden))
        return result, s.observations

    def judge(self, observations: Observations, *, seed: int, hidden: bool = False,
              strict: bool = False) -> CheckResult:
        """Judge a probe's record without the learner's code. ``seed`` and ``hidden`` are the
        grader's own (a record made with others does not match and earns nothing). ``strict``:
        raise :class:`Divergence` where the record does not answer what the check asks."""
        record = Observations(self.name, int(seed), hidden, observations.entries, observations.arrays)
        result, s = self._run(Opaque("object"), "replay", record, strict=strict)
        if s.divergences and not strict:
            # What was not observed failed where it was needed (as an error of the learner's
            # code); an empty or foreign record therefore earns nothing.
            result.note(f"{len(s.divergences)} observation(s) the grader needed were not in the record of your "
                        "code's run; the parts that needed them earn nothing")
        return result

    def check(self, subject: Any, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
        """What a test cell runs: check, print the report, return the points (a plain float)."""
        result = self.run(subject, seed=seed, hidden=hidden)
        remember(subject, self.name, result)
        if not quiet:
            # In a notebook, a failed step whose result is a map also shows "yours vs expected"
            # on the public example (once: not again under the hidden cases' report).
            draw = self.picture and not result.passed and not hidden and not result.not_started and html_front_end()
            show(result, (picture_png(self.picture, subject) or b"") if draw else b"")
        return result.points

    # ------------------------------------------------------------------ the frame

    def _seed(self, seed: Optional[int], hidden: bool) -> int:
        return draw_seed(self.name, seed, hidden)

    def _run(self, subject: Any, mode: str, record: Observations, strict: bool = False):
        # One thread for the check's own tensors (small ones): with every core in use, a busy
        # machine makes torch's threads wait on each other; restored afterwards.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run_pinned(subject, mode, record, strict)
        finally:
            torch.set_num_threads(threads)

    def _run_pinned(self, subject: Any, mode: str, record: Observations, strict: bool):
        s = Session(mode, record, strict=strict)
        result = self._result(record)
        with session(s):
            try:
                # The learner's object itself: plain data comes back as it is, anything else as
                # an Opaque stand-in (with its name), in a probe as in a judge.
                learners = subject
                try:
                    subject = exchange("subject", None, lambda: learners)
                except LearnerError:  # (a judge whose record lacks it: the learner's object, unseen)
                    subject = Opaque("object")
                swap = _Isolation(self, learners)
                try:
                    try:
                        notes = exchange("isolation", list(self.isolate), swap.start)
                    except LearnerError:
                        notes = []
                    notes = [str(n) for n in notes] if isinstance(notes, list) else []
                    self._body(subject, result, record)
                finally:
                    swap.stop()
                if notes:
                    # Isolation must never cost points: the step is checked again with the
                    # learner's own earlier steps, and the swap is kept (and said) only where it
                    # earns more. (A probe and its judge take the same branch: the notes are
                    # part of the record.)
                    plain = self._result(record)
                    self._body(subject, plain, record)
                    if result.points > plain.points:
                        for note in notes:
                            result.note(note)
                    else:
                        result = plain
                s.finish()
            except Divergence as e:
                if strict:
                    raise
                s.divergences.append(str(e))
        return result, s

    def _result(self, record: Observations) -> CheckResult:
        return CheckResult(self.title or self.name, self.points, seed=record.seed, hidden=record.hidden)

    def _body(self, subject: Any, result: CheckResult, record: Observations) -> None:
        """One run of the check's body, with its random cases drawn from the record's seed."""
        gen = torch.Generator().manual_seed(record.seed)
        # The check's own arithmetic on odd outputs (complex, float16 ...) may warn:
        # never onto stderr, which costs the test cell all its points in nbgrader.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.guard:
                with guarded():
                    self.body(subject, result, gen, record.hidden)
            else:
                self.body(subject, result, gen, record.hidden)


# --------------------------------------------------------------------------- fallback memory


def remember(subject: Any, step: str, result: CheckResult) -> None:
    """Keep on the checked object itself whether it passed (what :func:`checked` reads)."""
    try:
        memory = dict(getattr(subject, _CHECKED, None) or {})
        memory[step] = (result.passed, result.points, result.max_points)
        setattr(subject, _CHECKED, memory)
    except Exception:  # a builtin or a frozen object: it will be checked again when needed
        pass


def checked(subject: Any, step: str) -> Optional[Tuple[bool, float, float]]:
    """(passed, points, max points) of the latest check of ``subject`` as ``step``, if any."""
    try:
        memory = subject.__dict__.get(_CHECKED) if hasattr(subject, "__dict__") else None
    except Exception:
        return None
    value = memory.get(step) if isinstance(memory, dict) else None
    return value if isinstance(value, tuple) and len(value) == 3 else None


def status(step: "Step", subject: Any) -> Tuple[bool, float, float]:
    """Whether ``subject`` passes ``step``'s check: remembered, or checked quietly now."""
    known = checked(subject, step.name)
    if known is None:
        result = step.run(subject)
        remember(subject, step.name, result)
        known = (result.passed, result.points, result.max_points)
    return known


# --------------------------------------------------------------------------- isolation


def namespace_of(obj: object) -> Optional[dict]:
    """The global namespace a learner's function or class looks names up in (a notebook's)."""
    if hasattr(obj, "__globals__"):
        return obj.__globals__
    for member in vars(obj).values() if isinstance(obj, type) else ():
        if hasattr(member, "__globals__"):
            return member.__globals__
    return None


class _Isolation:
    """Check a step on its own: earlier steps its code calls by name that do not pass their own
    checks are swapped for the references while the check runs, so one mistake costs points only
    once. Runs in the probe (it changes the learner's namespace, and puts it back).

    Only the learner's answer to an earlier step is swapped (:func:`answers_step`), never a helper
    of theirs that merely shares its name: nanoGPT's ``LayerNorm(ndim, bias)`` inside a block, or
    a ``scaled_dot_product_attention`` with PyTorch's arguments, is part of the answer checked."""

    def __init__(self, step: Step, subject: Any):
        self.step, self.subject = step, subject
        self.swapped: Dict[str, Any] = {}
        self.namespace: Optional[dict] = None

    def start(self) -> List[str]:
        notes: List[str] = []
        self.namespace = namespace_of(self.subject) if self.step.isolate else None
        for name in self.step.isolate if self.namespace is not None else ():
            mine = self.namespace.get(name)
            earlier = get(name)
            reference = earlier.reference
            if mine is None or reference is None or mine is reference or not callable(mine):
                continue
            try:  # (looking at the learner's object runs none of its code but a signature's: time-limited)
                if not run_safely(answers_step, (mine, earlier, self.subject), time_limit=5.0):
                    continue
            except LearnerError:
                continue
            passed, _, _ = status(earlier, mine)
            if not passed:
                self.swapped[name] = mine
                self.namespace[name] = reference
                notes.append(
                    f"your {name} does not pass its own check yet, so this check swapped in "
                    f"mhsa_lib's {name} where your code calls it: the points here are for this step alone."
                )
        return notes

    def stop(self) -> None:
        for name, mine in self.swapped.items():
            self.namespace[name] = mine
        self.swapped.clear()


def answers_step(obj: Any, earlier: Step, subject: Any = None) -> bool:
    """Whether ``obj``, found under ``earlier``'s name in the learner's namespace, is their answer
    to that step (which the isolation may swap for the reference) rather than a helper of theirs
    with the same name. It is, if it is

    - the learner's own code, not a library's (``from torch.nn import LayerNorm`` is torch's);
    - of the step's kind: a class for a class step, a function for a function step;
    - called the way the step's reference is called: the same number of required arguments,
      the same optional ones by name (so either can stand in for the other);
    - not defined in the same notebook cell as ``subject``, the answer being checked (a helper
      written as part of that answer belongs to it).

    Never raises: an object that cannot be looked at is not an answer."""
    try:
        reference = earlier.reference
        if reference is None or _library_code(obj):
            return False
        if isinstance(obj, type) != isinstance(reference, type):
            return False
        if isinstance(reference, type) and issubclass(reference, torch.nn.Module) != issubclass(obj, torch.nn.Module):
            return False
        if not _same_calls(obj, reference):
            return False
        cell = _cell_of(obj)
        return cell is None or cell != _cell_of(subject)
    except Exception:
        return False


_LIBRARY_DIRS = tuple(str(Path(p).resolve()) for p in {
    sysconfig.get_paths().get("stdlib", ""), sysconfig.get_paths().get("platstdlib", ""),
    sysconfig.get_paths().get("purelib", ""), sysconfig.get_paths().get("platlib", ""),
    Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2] / "mhsa_lib"} if str(p))


def _library_code(obj: Any) -> bool:
    """Whether ``obj`` comes from an installed library or from the course's own packages."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    path = getattr(module, "__file__", None) if module is not None else None
    if isinstance(path, str) and module.__name__ not in ("__main__",):
        where = str(Path(path).resolve())
        if where.startswith(_LIBRARY_DIRS) or any(part in ("site-packages", "dist-packages") for part in Path(where).parts):
            return True
    code = _code_file(obj)
    return code is None and not isinstance(obj, type)  # a builtin: not the learner's


def _code_file(obj: Any) -> Optional[str]:
    """The file the code of ``obj`` (a function, or a class's own methods) was compiled from."""
    fn = inspect.unwrap(obj) if callable(obj) and not isinstance(obj, type) else obj
    code = getattr(fn, "__code__", None)
    if code is not None:
        return code.co_filename
    if isinstance(obj, type):
        for member in vars(obj).values():
            member = getattr(member, "__func__", member)
            code = getattr(member, "__code__", None)
            if code is not None:
                return code.co_filename
    return None


#: What IPython names the code of a notebook cell: a file of its own per cell.
_CELL_FILE = re.compile(r"^<ipython-input-\d+-[0-9a-f]+>$|[\\/]ipykernel_\d+[\\/][^\\/]+\.py$")


def _cell_of(obj: Any) -> Optional[str]:
    """The notebook cell ``obj`` was defined in (its code's file), or None outside a notebook."""
    try:
        name = _code_file(obj)
    except Exception:
        return None
    return name if isinstance(name, str) and _CELL_FILE.search(name) else None


def _calls(f: Any) -> Tuple[int, int, set, set, bool, bool]:
    """(required positional, most positional, optional names, optional positional names, takes
    *args, takes **kwargs) of ``f`` (of a class: its constructor's)."""
    P = inspect.Parameter
    params = list(inspect.signature(f).parameters.values())
    if any(p.kind == P.KEYWORD_ONLY and p.default is P.empty for p in params):
        raise TypeError("required keyword-only arguments")
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    required = sum(p.default is P.empty for p in positional)
    optional = {p.name for p in params if p.default is not P.empty and p.kind != P.POSITIONAL_ONLY}
    return (required, len(positional), optional,
            {p.name for p in positional if p.default is not P.empty and p.kind != P.POSITIONAL_ONLY},
            any(p.kind == P.VAR_POSITIONAL for p in params), any(p.kind == P.VAR_KEYWORD for p in params))


def _same_calls(obj: Any, reference: Any) -> bool:
    """Whether ``obj`` takes the arguments the step asks for (the reference's required ones, and
    its optional ones by name, keyword-only extras such as ``device=`` aside) and the reference
    takes every call of ``obj`` (so that either can stand in for the other)."""
    try:
        mine, ref = _calls(obj), _calls(reference)
    except (TypeError, ValueError):
        return False
    if mine[0] != ref[0]:
        return False
    if not (mine[5] or ref[3] <= mine[2]):  # the step's optional arguments, by name
        return False
    if not (ref[5] or mine[2] <= ref[2]):  # nothing the reference would refuse
        return False
    return mine[1] <= ref[1] or ref[4]


# --------------------------------------------------------------------------- the registry

_STEPS: Dict[str, Step] = {}


def register(s: Step) -> Step:
    if s.kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {s.kind!r} for step {s.name!r}")
    if (s.home is None) != (s.kind in NO_LIBRARY_HOME):
        raise ValueError(f"step {s.name!r}: a {s.kind} step {'has no' if s.kind in NO_LIBRARY_HOME else 'needs a'} "
                         f"library home, got home={s.home!r}")
    if s.name in _STEPS and _STEPS[s.name].check_module != s.check_module:
        raise ValueError(f"step {s.name!r} is declared twice ({_STEPS[s.name].check_module} and {s.check_module})")
    _STEPS[s.name] = s
    return s


def get(name: str) -> Step:
    """The registered step ``name`` (a clear error for an unknown one)."""
    try:
        return _STEPS[name]
    except KeyError:
        raise ValueError(f"step: expected one of {sorted(_STEPS)}, got {name!r}") from None


def steps() -> List[Step]:
    return list(_STEPS.values())




def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def step(name: str, *, points: float, notebook: str, home: Optional[str], kind: str = "function",
         reference: Optional[Callable] = None, reference_name: Optional[str] = None,
         isolate: Tuple[str, ...] = (), picture: Optional[str] = None, guard: Optional[bool] = None,
         forbidden: Tuple[Tuple[str, ...], Any] = ((), False)):
    """Declare a step whose check body follows; the decorated name becomes the public check
    ``check_x(subject, *, hidden=False, seed=None, quiet=False) -> float``."""

    def decorate(body: Callable) -> Callable:
        s = register(Step(
            name=name, points=float(points), body=body, notebook=notebook, home=home, kind=kind,
            reference=reference, isolate=tuple(isolate),
            # (a step without a library home names its own reference: mhsa_lib has none)
            reference_name=reference_name or (f"mhsa_lib.{name}" if home else f"the course's reference {name}"),
            picture=picture, guard=(kind in ("module", "model", "repair")) if guard is None else guard,
            check_name=body.__name__, check_module=body.__module__,
            forbidden=(tuple(forbidden[0]), forbidden[1] if forbidden[1] is True else tuple(forbidden[1] or ())),
        ))

        def check(subject: Any, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
            return s.check(subject, hidden=hidden, seed=seed, quiet=quiet)

        check.__name__ = check.__qualname__ = body.__name__
        check.__module__ = body.__module__
        check.__doc__ = body.__doc__
        check.step = s  # type: ignore[attr-defined]
        return check

    return decorate


__all__ = ["Step", "step", "register", "get", "steps", "checked", "remember", "status",
           "namespace_of", "answers_step", "LearnerError", "KINDS", "NO_LIBRARY_HOME"]
