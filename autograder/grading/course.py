"""The nbgrader course folder a class is graded in, and ``python -m autograder build``.

Layout (nbgrader's own, so formgrader and ``nbgrader`` commands work on it)::

    COURSE/nbgrader_config.py     written by build (gradebook = COURSE/gradebook.db)
    COURSE/gradebook.db           nbgrader's gradebook: the source of truth for grades
    COURSE/source/NAME/NAME.ipynb one assignment per solutions/NAME.ipynb, plus data/
    COURSE/release/NAME/...       what students get (nbgrader generate_assignment)
    COURSE/submitted/STUDENT/NAME/NAME.ipynb   (python -m autograder collect)
    COURSE/autograded/STUDENT/NAME/NAME.ipynb  the executed, restored notebooks (autograde); for a
                                               submission that could not run, a stand-in (below)
    COURSE/grading/STUDENT/NAME.json           each submission's status, steps and messages
    COURSE/feedback/STUDENT/NAME/NAME.html     (feedback, with the timestamp.txt and
                                               submission_secret.txt nbgrader release_feedback reads)
    COURSE/exports/*.csv                       (export)

``nbgrader_config.py`` computes every path from its own folder, so the folder can be moved.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from . import nbgrader_tools as nbt
from . import setup_cell
from .release import DATA_DIR, DEFAULT_SOLUTIONS, ReleaseError, _prepare_source, source_notebooks

DEFAULT_COURSE = Path("classroom")
SEED_FILE = ".grading_seed"


def add_course_argument(parser) -> None:
    parser.add_argument("--course", type=Path, default=DEFAULT_COURSE, metavar="DIR",
                        help=f"the nbgrader course folder (default: ./{DEFAULT_COURSE})")


def db_url(course: Path) -> str:
    return "sqlite:///" + str((Path(course) / "gradebook.db").resolve())


def assignments(course: Path) -> List[str]:
    """Assignment names: the folders of ``source/`` that hold a notebook of the same name."""
    src = Path(course) / "source"
    if not src.is_dir():
        return []
    return sorted(d.name for d in src.iterdir() if d.is_dir() and (d / f"{d.name}.ipynb").is_file())


def source_notebook(course: Path, assignment: str) -> Path:
    return Path(course) / "source" / assignment / f"{assignment}.ipynb"


def grade_order(course: Path, assignment: str) -> List[str]:
    """The grade cell names of an assignment's source notebook, in notebook order ([] when the
    source cannot be read)."""
    import nbformat

    try:
        nb = nbformat.read(str(source_notebook(course, assignment)), as_version=4)
    except Exception:  # a missing or broken source: no order to follow
        return []
    return [str(nbt.grade_id(c)) for c in nb.cells if nbt.is_grade(c)]


def step_order(course: Path, assignment: str, known: List[str]) -> List[str]:
    """``known`` grade cell names in the order of the assignment's source notebook (names the
    source does not have last, sorted)."""
    order = grade_order(course, assignment)
    return [s for s in order if s in known] + sorted(s for s in known if s not in order)


def write_standin_notebook(course: Path, assignment: str, dest: Path, status: str, message: str) -> Path:
    """Write ``dest``: the notebook formgrader shows for a submission that produced no graded
    notebook (unreadable, empty, another assignment's, missing, or the grader's own failure).

    formgrader lists a submission only where ``autograded/STUDENT/ASSIGNMENT/NOTEBOOK.ipynb``
    exists, so without it such a submission would be invisible there. The stand-in is the
    released assignment (no hidden tests, no solutions) with every answer cell emptied and a
    first cell saying why nothing was graded; the student's own files stay in ``submitted/``."""
    import copy
    import html

    import nbformat

    course = Path(course)
    release = course / "release" / assignment / f"{assignment}.ipynb"
    base = release if release.is_file() else source_notebook(course, assignment)
    nb = nbformat.read(str(base), as_version=4)
    why = html.escape(" ".join(str(message or "").split())[:2000])
    note = (f"**Not graded ({html.escape(str(status))})**: {why}\n\n"
            f"This is the released assignment standing in for the student's notebook, which could not "
            f"be graded; every step was given 0 points and the submission is flagged. The student's "
            f"files are in `submitted/<student>/{html.escape(assignment)}/`: grade by hand here if "
            f"they deserve points.")
    cells = []
    for cell in nb.cells:
        cell = copy.deepcopy(cell)
        if nbt.is_solution(cell):
            cell.source = ("# no answer: this submission could not be graded" if cell.cell_type == "code"
                           else "*No answer: this submission could not be graded.*")
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cells.append(cell)
    first = nbformat.v4.new_markdown_cell(note)
    first["id"] = "not-graded-note"
    nb.cells = [first] + cells
    nb.metadata["kernelspec"] = dict(nbt.KERNELSPEC)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dest))
    return dest


def grading_seed(course: Path, assignment: str) -> str:
    """The seed of an assignment's cases for the whole class: the same for every student (identical
    code scores identically) and on every re-grade, and not guessable without the course's own
    secret, which is created readable and writable by its owner alone."""
    path = Path(course) / SEED_FILE
    if not path.exists():
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_hex(16) + "\n")
    secret = path.read_text(encoding="utf-8").strip()
    digest = hashlib.sha256(f"{secret}:{assignment}".encode()).hexdigest()
    return str(int(digest[:12], 16))


def check_course(course: Path) -> Optional[str]:
    """None when ``course`` is a built course folder, else what is wrong."""
    course = Path(course)
    if not (course / "nbgrader_config.py").is_file():
        return f"{course} is not a course folder (no nbgrader_config.py); run `python -m autograder build --course {course}` first"
    if not (course / "gradebook.db").is_file():
        return f"{course} has no gradebook.db; run `python -m autograder build --course {course}`"
    return None


_LITERAL_ROOT = re.compile(r"""^c\.CourseDirectory\.root\s*=\s*(['"])(?P<path>.+?)\1\s*$""", re.MULTILINE)


def config_warning(course: Path) -> Optional[str]:
    """What is wrong with the paths of ``course``'s nbgrader_config.py, or None: a config written
    before paths were relative names the folder it was built in, so after a move nbgrader would
    work on the old folder (the course's own commands use ``--course`` and are not affected)."""
    course = Path(course)
    try:
        text = (course / "nbgrader_config.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = _LITERAL_ROOT.search(text)
    if not m:
        return None
    named = Path(m.group("path"))
    try:
        same = named.is_absolute() and named.resolve() == course.resolve()
    except OSError:
        same = False
    if same:
        return None
    return (f"{course / 'nbgrader_config.py'} names {str(named)!r} as the course folder, not this one, so nbgrader "
            f"commands run here would use that folder; run `./course build --course {course}` to rewrite it "
            "with paths relative to the folder")


#: Where a course folder keeps the class's course package (see :mod:`.setup_cell`), set once by
#: ``build --package`` and used by every later build.
PACKAGE_FILE = "course_package.txt"


def class_package(course: Path, package: Optional[str] = None) -> Optional[str]:
    """The course package source for this class: ``package`` when given (and then remembered in
    the course folder; ``"none"`` forgets it), else the one remembered, else None."""
    path = Path(course) / PACKAGE_FILE
    if package is not None:
        if package.strip().lower() == "none":
            path.unlink(missing_ok=True)
            return None
        setup_cell.with_package(setup_cell.SOURCE, package)  # refuses a malformed value, naming it
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(package.strip() + "\n", encoding="utf-8")
        return package.strip()
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def build(course: Path, solutions: Path = DEFAULT_SOLUTIONS, only: Optional[List[str]] = None,
          timeout: float = 900, package: Optional[str] = None) -> List[str]:
    """Create or update the course folder: config, ``source/`` from ``solutions/`` and the
    release made by ``nbgrader generate_assignment --force`` (which also records each assignment,
    its test cells and points in the gradebook). ``package``: where a released notebook opened
    outside the course installs the course from (remembered for later builds). Returns notes."""
    course = Path(course)
    notes: List[str] = []
    sources = source_notebooks(Path(solutions))
    if only:
        sources = [s for s in sources if s.stem in only]
        missing = sorted(set(only) - {s.stem for s in sources})
        if missing:
            raise ReleaseError(f"no solutions/{missing[0]}.ipynb")
    if not sources:
        raise ReleaseError(f"no notebooks in {solutions}")
    nbt.write_course_config(course, db=True)
    grading_seed(course, "")  # create the course's secret once
    package = class_package(course, package)
    if package:
        notes.append(f"the released notebooks install the course from {package} where it is missing")
    data = Path(solutions) / DATA_DIR
    for src in sources:
        name = src.stem
        try:
            _prepare_source(src, course / "source" / name / f"{name}.ipynb", notes, package)
        except Exception as e:
            raise ReleaseError(f"{src}: cannot be read as a notebook ({type(e).__name__}: {e})") from None
        if data.is_dir():
            shutil.rmtree(course / "source" / name / DATA_DIR, ignore_errors=True)
            shutil.copytree(data, course / "source" / name / DATA_DIR)
    for src in sources:
        try:
            nbt.run_nbgrader(["generate_assignment", src.stem, "--force"], course, timeout=timeout)
        except nbt.NbgraderError as e:
            raise ReleaseError(str(e)) from None
        if not (course / "release" / src.stem / src.name).is_file():
            raise ReleaseError(f"nbgrader produced no release/{src.stem}/{src.name}")
    stale = sorted(set(assignments(course)) - {s.stem for s in source_notebooks(Path(solutions))})
    for name in stale:
        notes.append(f"source/{name} has no notebook in {solutions} any more (left as it is)")
    return notes


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    add_course_argument(parser)
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                        help="only these notebooks of solutions/ (default: all)")
    parser.add_argument("--solutions", type=Path, default=DEFAULT_SOLUTIONS, metavar="DIR",
                        help="the instructor's source notebooks (default: solutions/)")
    parser.add_argument("--package", metavar="SOURCE", default=None,
                        help="where a released notebook opened outside the course installs the course from: "
                             "the wheel of `./course wheel` (URL or path), a git+ URL, or a folder / index URL "
                             "holding it; remembered in the course folder for later builds ('none' forgets it)")


def main(args) -> int:
    try:
        notes = build(args.course, args.solutions, only=args.assignments or None, package=args.package)
    except (ReleaseError, OSError, ValueError) as e:
        print(f"build: {e}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"build: note: {note}")
    names = assignments(args.course)
    print(f"build: {args.course} has {len(names)} assignment(s): {', '.join(names)}")
    print(f"build: student versions in {args.course / 'release'}; gradebook {args.course / 'gradebook.db'}")
    return 0
