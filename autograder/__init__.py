"""autograder: the course's step checks and grading tools.

In a notebook, each graded step is followed by a test cell such as::

    check_softmax(softmax)

which prints a report (each sub-part ✓/✗, and a diagnosis that names the mistake when the
output matches a known one) and returns the points earned as a plain float, which nbgrader
reads as the cell's partial credit. ``hidden=True`` adds random cases drawn at grading time.

Later cells call :func:`fallback` so that a step that is not yet right never blocks the rest
of the notebook.
"""

#: Marks this package as the course's own: PyPI has an unrelated package named ``autograder``, and
#: each notebook's set-up cell tells the two apart by this name.
COURSE = "mhsa-course"

# The checks (and torch with them) load on first use, so the command line (`python -m
# autograder ...`) starts fast and keeps working even if one check module is broken. Every
# public name of autograder.checks is available here: add new checks to its __init__ and
# __all__, not to this file.


def __getattr__(name: str):
    if name == "__all__" or name.startswith("check_") or name == "fallback":
        from . import checks

        if name == "__all__":
            return list(checks.__all__)
        if name in checks.__all__:
            return getattr(checks, name)
    raise AttributeError(f"module 'autograder' has no attribute {name!r}")


def __dir__():
    from . import checks

    return sorted(set(globals()) | set(checks.__all__))
