"""The names step checks share, kept importable from ``autograder.core`` for code written
against it; they live in :mod:`autograder.frame`."""

from .frame.calls import CALL_TIME_LIMIT, attempt, call, describe_exception, observe, short_repr  # noqa: F401
from .frame.cases import SEED_ENV, distinct_sizes, draw_seed, randn  # noqa: F401
from .frame.compare import (  # noqa: F401
    Comparison,
    close,
    compare,
    describe_failures,
    format_shape,
    isclose_scalar,
    matches,
)
from .frame.errors import LearnerError  # noqa: F401
from .frame.results import FAIL, PASS, CheckResult, Part  # noqa: F401
from .frame.shortcuts import find_shortcuts  # noqa: F401
