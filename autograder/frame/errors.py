"""The one exception that stands for anything a learner's code did wrong when called."""

from __future__ import annotations


class LearnerError(Exception):
    """The learner's function raised, timed out or misbehaved; ``str()`` says how, in one line."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind  # "not_implemented" | "timeout" | "error"
