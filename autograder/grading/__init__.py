"""Grading tools: the self-check a learner runs on a notebook, and the nbgrader release of the
learner notebooks from the instructor's sources. The command line is ``python -m autograder``."""

from .selfcheck import CheckReport, NotebookUnusable, StepResult, check_notebook

__all__ = ["CheckReport", "NotebookUnusable", "StepResult", "check_notebook"]
