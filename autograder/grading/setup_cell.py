"""The first code cell of every course notebook: it makes the notebook run wherever it is opened.

Inside the course's own environment (``./course start``, a class's JupyterHub image, the grader)
the cell finds the course's packages and does nothing. Where only the notebook is (downloaded from
an LMS, opened in Colab or another Jupyter), it installs the course's package, ``mhsa-course``,
from the one source the instructor set for the class, with ``%pip`` in the notebook's own kernel:

- ``COURSE_PACKAGE`` in the cell, which ``./course build --package SOURCE`` and
  ``./course release --package SOURCE`` write into the released notebooks: a wheel (a URL or a
  path ending in ``.whl``), a ``git+`` URL, or a folder / package index page that holds the wheel;
- else the environment variable ``MHSA_COURSE_PACKAGE`` (same forms);
- else the links pip is already pointed at (``PIP_FIND_LINKS``), as a class's image may set.

The course's package is always taken from that source alone (a direct reference, or
``--no-index`` with the instructor's links), never from the public index, where other packages
of the same names exist (PyPI's ``autograder`` is unrelated to this course). With no source at all
the cell stops with one message that says what to run, never a traceback.

The cell cannot import anything of the course (that is what it installs), so its code lives here
as text: :data:`SOURCE`. ``tests/test_setup_cell.py`` keeps every notebook's copy equal to it.
"""

from __future__ import annotations

import re
from typing import Any, Optional

#: The distribution every source must provide, and the marker its packages carry.
DISTRIBUTION = "mhsa-course"
#: The cell's grade id (a locked nbgrader cell: graders restore it from the instructor's copy).
GRADE_ID = "course_setup"

SOURCE = '''\
# Course set-up: lets this notebook run wherever it is opened (Colab, JupyterHub, any Jupyter).
# In the course's own environment (./course start) it finds the course and does nothing.
COURSE_PACKAGE = None  # set for a class by `./course build --package SOURCE`
import importlib, os, shlex, subprocess, sys


class CourseSetupError(Exception):
    def _render_traceback_(self):  # IPython shows this message alone, without a traceback
        return ["", f"Course set-up: {self}"]


def _course_problem():
    """None if the course's packages are importable, else what is wrong."""
    importlib.invalidate_caches()
    try:
        import autograder
    except ImportError:
        return "autograder is not installed"
    if getattr(autograder, "COURSE", None) != "mhsa-course":
        return (f"the `autograder` at {getattr(autograder, '__file__', '?')} is an unrelated package of the same "
                "name (PyPI's `autograder`), not this course's: remove it with `%pip uninstall -y autograder`")
    try:
        import matplotlib, mhsa_lib  # noqa: F401
    except ImportError as e:
        return f"{e.name or e} is not installed"
    return None


def _pip(*args):
    """pip in this kernel's own environment (%pip where IPython runs the notebook)."""
    try:
        get_ipython().run_line_magic("pip", " ".join(shlex.quote(a) for a in args))
    except NameError:
        subprocess.run([sys.executable, "-m", "pip", *args], check=False)


_problem = _course_problem()
if _problem and "unrelated package" in _problem:
    raise CourseSetupError(_problem + ", restart the kernel and run this cell again.")
if _problem:
    _source = COURSE_PACKAGE or os.environ.get("MHSA_COURSE_PACKAGE") or ""
    _links = os.environ.get("PIP_FIND_LINKS", "")
    if _source.endswith(".whl") or _source.startswith("git+"):
        _where = _source if "://" in _source else "file://" + os.path.abspath(_source)
        print(f"Installing the course from {_source} ...")
        _pip("install", "--quiet", f"mhsa-course @ {_where}")
    elif _source or _links:
        print(f"Installing the course from {_source or _links} ...")
        _find = ["--find-links", _source] if _source else []  # else pip reads PIP_FIND_LINKS itself
        _pip("install", "--quiet", "--no-index", "--no-deps", *_find, "mhsa-course")  # only from there
        _pip("install", "--quiet", *_find, "mhsa-course")  # then what it needs, from the usual index
    else:
        raise CourseSetupError(
            f"this notebook needs the course's Python packages ({_problem}). Either open it from the "
            "course's folder after `./course start`, or install the course's package here: run "
            "`%pip install \\"mhsa-course @ URL\\"` in a cell, with the URL of the course's wheel from your "
            "instructor, then run this cell again.")
    _problem = _course_problem()
    if _problem:
        raise CourseSetupError(f"the install did not work ({_problem}); restart the kernel and run this cell again.")
    print("The course is installed.")
'''


def with_package(source: str, package: Optional[str]) -> str:
    """The set-up cell's source with ``COURSE_PACKAGE`` set to ``package`` (None: left unset)."""
    if package is None:
        return source
    if not isinstance(package, str) or not package.strip() or "\n" in package:
        raise ValueError(f"package: expected a wheel URL or path, a git+ URL or a folder/index URL, got {package!r}")
    line = f"COURSE_PACKAGE = {package.strip()!r}  # the course's package for this class"
    new, n = re.subn(r"^COURSE_PACKAGE = .*$", line.replace("\\", "\\\\"), source, count=1, flags=re.M)
    if n != 1:
        raise ValueError("the notebook's set-up cell has no COURSE_PACKAGE line to fill in")
    return new


def is_setup_cell(cell: Any) -> bool:
    from . import nbgrader_tools as nbt

    return cell.get("cell_type") == "code" and nbt.grade_id(cell) == GRADE_ID


def set_package(nb: Any, package: Optional[str]) -> bool:
    """Write ``package`` into the notebook's set-up cell; False if the notebook has none."""
    from . import nbgrader_tools as nbt

    for cell in nb.cells:
        if is_setup_cell(cell):
            cell.source = with_package(nbt.cell_source(cell), package)
            return True
    return False


def new_cell():
    """A fresh set-up cell: locked (graders put it back as the instructor wrote it), not graded."""
    import nbformat

    cell = nbformat.v4.new_code_cell(SOURCE.rstrip("\n"))
    cell.metadata["nbgrader"] = {"grade": False, "solution": False, "locked": True, "grade_id": GRADE_ID,
                                 "schema_version": 3}
    cell.metadata["tags"] = ["course-setup"]
    return cell
