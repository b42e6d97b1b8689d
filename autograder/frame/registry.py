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

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

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
        result = CheckResult(self.title or self.name, self.points, seed=record.seed, hidden=record.hidden)
        gen = torch.Generator().manual_seed(record.seed)
        s = Session(mode, record, strict=strict)
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
                    for note in notes if isinstance(notes, list) else ():
                        result.note(str(note))
                    # The check's own arithmetic on odd outputs (complex, float16 ...) may warn:
                    # never onto stderr, which costs the test cell all its points in nbgrader.
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if self.guard:
                            with guarded():
                                self.body(subject, result, gen, record.hidden)
                        else:
                            self.body(subject, result, gen, record.hidden)
                finally:
                    swap.stop()
                s.finish()
            except Divergence as e:
                if strict:
                    raise
                s.divergences.append(str(e))
        return result, s


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
    once. Runs in the probe (it changes the learner's namespace, and puts it back)."""

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
           "namespace_of", "LearnerError", "KINDS", "NO_LIBRARY_HOME"]
