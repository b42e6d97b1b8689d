"""The check frame: everything step checks share, and nothing about any particular step.

- :mod:`.results` — a check's result (sub-parts, partial credit, diagnosis, notes, report);
- :mod:`.errors`, :mod:`.calls` — calling the learner's code safely; observing their objects;
- :mod:`.observe` — observations: the plain data between a check's probe and judge halves;
- :mod:`.cases`, :mod:`.compare` — random cases, tensor comparison;
- :mod:`.shortcuts` — forbidden calls (torch's or the library's version of the step);
- :mod:`.modules` — building, filling and running a learner's nn.Module;
- :mod:`.mistakes` — known mistakes with their advice;
- :mod:`.registry`, :mod:`.fallback` — the steps, and falling back on their references.

The step modules (:mod:`autograder.checks`) import from here; nothing here imports them.
"""

from .calls import CALL_TIME_LIMIT, attempt, call, describe_exception, observe, run_safely, short_repr
from .cases import SEED_ENV, distinct_sizes, draw_seed, randn
from .compare import Comparison, close, compare, describe_failures, format_shape, isclose_scalar, matches
from .errors import LearnerError
from .fallback import fallback
from .mistakes import SAME_OUTPUT, Mistake, mistake
from .observe import Divergence, Observations, Opaque, kind_of
from .registry import Step, get, step, steps
from .results import FAIL, PASS, CheckResult, Part
from .shortcuts import find_shortcuts

__all__ = [
    "CALL_TIME_LIMIT", "attempt", "call", "describe_exception", "observe", "run_safely", "short_repr",
    "SEED_ENV", "distinct_sizes", "draw_seed", "randn",
    "Comparison", "close", "compare", "describe_failures", "format_shape", "isclose_scalar", "matches",
    "LearnerError", "fallback", "SAME_OUTPUT", "Mistake", "mistake",
    "Divergence", "Observations", "Opaque", "kind_of", "Step", "get", "step", "steps",
    "FAIL", "PASS", "CheckResult", "Part", "find_shortcuts",
]
