"""Release: the learner notebooks in ``notebooks/`` are what ``nbgrader generate_assignment``
makes of the instructor's sources in ``solutions/``, nothing else.

``python -m autograder release`` builds a throw-away nbgrader course folder with one assignment
per ``solutions/NN_name.ipynb`` (assignment name = notebook stem; a ``solutions/data/`` folder,
if any, goes along with every assignment), runs ``nbgrader generate_assignment --force --no-db``
and copies ``release/<name>/<name>.ipynb`` to ``notebooks/<name>.ipynb``.
``python -m autograder release --check`` regenerates into a temporary folder and fails, listing
them, when notebooks differ from the committed ones, are missing, or are left over.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from . import nbgrader_tools as nbt
from . import setup_cell

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOLUTIONS = PROJECT_ROOT / "solutions"
DEFAULT_NOTEBOOKS = PROJECT_ROOT / "notebooks"

#: A folder of files the notebooks read, shared by all of them (next to the notebooks).
DATA_DIR = "data"


class ReleaseError(Exception):
    """The release cannot be made; ``str()`` says why."""


@dataclass
class Released:
    """The generated learner notebooks, by assignment name, as the bytes nbgrader wrote."""

    notebooks: Dict[str, bytes] = field(default_factory=dict)
    data_dir: Optional[Path] = None  # the released data folder, when there is one
    notes: List[str] = field(default_factory=list)


def source_notebooks(solutions: Path) -> List[Path]:
    return sorted(p for p in Path(solutions).glob("*.ipynb") if p.is_file())


def _prepare_source(src: Path, dest: Path, notes: List[str], package: Optional[str] = None) -> None:
    """Copy one source notebook into the course folder, with the two things nbgrader needs to
    produce a stable, gradable release: the ``python3`` kernel and fixed cell ids; with
    ``package``, the class's course package written into its set-up cell (:mod:`.setup_cell`)."""
    import json

    import nbformat

    raw = json.loads(src.read_text(encoding="utf-8"))
    if raw.get("nbformat") == 4:
        # A cell without an id (or with a repeated one) would get a random id from nbformat,
        # and the release would change on every run: give it a fixed one instead.
        seen = set()
        fixed = 0
        for i, cell in enumerate(raw.get("cells", [])):
            cid = cell.get("id")
            if not isinstance(cid, str) or not cid or cid in seen:
                cell["id"] = f"cell-{i:03d}"
                fixed += 1
            seen.add(cell["id"])
        if raw.get("nbformat_minor", 0) < 5:
            raw["nbformat_minor"] = 5
        if fixed:
            notes.append(f"{src.name}: {fixed} cell(s) without a unique id got a fixed one; save the source in Jupyter to give them ids")
    nb = nbformat.reads(json.dumps(raw), as_version=4)
    spec = nb.metadata.get("kernelspec", {})
    if spec.get("name") != nbt.KERNEL_NAME:
        notes.append(
            f"{src.name}: kernelspec {spec.get('name')!r} replaced by {nbt.KERNEL_NAME!r} "
            "(nbgrader autograde accepts no other)"
        )
        nb.metadata["kernelspec"] = dict(nbt.KERNELSPEC)
    if package is not None and not setup_cell.set_package(nb, package):
        notes.append(f"{src.name}: no course set-up cell, so the package source is not written into it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dest))


def problems_in_learner_notebook(text: str) -> List[str]:
    """What must never be in a learner notebook: nbgrader region markers, outputs, execution
    counts, a kernel other than python3."""
    import json

    nb = json.loads(text)
    found: List[str] = []
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != nbt.KERNEL_NAME:
        found.append(f"kernelspec is not {nbt.KERNEL_NAME!r}")
    for i, cell in enumerate(nb.get("cells", [])):
        src = nbt.cell_source(cell)
        for marker in nbt.SOURCE_MARKERS:
            if marker in src:
                found.append(f"cell {i} contains {marker!r}")
        if cell.get("outputs"):
            found.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i} has an execution count")
    return found


def generate(solutions: Path, workdir: Path, timeout: float = 600, package: Optional[str] = None) -> Released:
    """Run nbgrader on every source notebook in ``solutions`` inside the course folder
    ``workdir`` (created, and left for the caller to remove)."""
    solutions = Path(solutions)
    sources = source_notebooks(solutions)
    if not sources:
        raise ReleaseError(f"no notebooks in {solutions}")
    course = Path(workdir)
    nbt.write_course_config(course, db=False)
    out = Released()
    data = solutions / DATA_DIR
    for src in sources:
        name = src.stem
        try:
            _prepare_source(src, course / "source" / name / f"{name}.ipynb", out.notes, package)
        except Exception as e:  # invalid JSON, not a notebook...
            raise ReleaseError(f"{src}: cannot be read as a notebook ({type(e).__name__}: {e})") from None
        if data.is_dir():
            shutil.copytree(data, course / "source" / name / DATA_DIR)
    try:
        # One nbgrader run for all assignments ('*' is a glob over source/).
        nbt.run_nbgrader(["generate_assignment", "*", "--force", "--no-db"], course, timeout=timeout)
    except nbt.NbgraderError as e:
        raise ReleaseError(str(e)) from None
    for src in sources:
        name = src.stem
        released = course / "release" / name / f"{name}.ipynb"
        if not released.exists():
            raise ReleaseError(f"nbgrader produced no {released.relative_to(course)}")
        content = released.read_bytes()
        bad = problems_in_learner_notebook(content.decode("utf-8"))
        if bad:
            raise ReleaseError(f"the learner version of {src.name} is not clean: " + "; ".join(bad))
        out.notebooks[name] = content
    if data.is_dir():
        out.data_dir = course / "release" / sources[0].stem / DATA_DIR
    return out


def _differences(released: Released, notebooks: Path) -> List[str]:
    notebooks = Path(notebooks)
    lines: List[str] = []
    for name, content in released.notebooks.items():
        path = notebooks / f"{name}.ipynb"
        if not path.exists():
            lines.append(f"missing: {path}")
        elif path.read_bytes() != content:
            lines.append(f"differs: {path}")
    for path in sorted(notebooks.glob("*.ipynb")):
        if path.stem not in released.notebooks:
            lines.append(f"extra:   {path} (no source in solutions/)")
    data = notebooks / DATA_DIR
    if released.data_dir is not None:
        if not data.is_dir():
            lines.append(f"missing: {data}/")
        elif not _same_tree(released.data_dir, data):
            lines.append(f"differs: {data}/")
    return lines


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(str(a), str(b))
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(str(a), str(b), cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def release(solutions: Path = DEFAULT_SOLUTIONS, notebooks: Path = DEFAULT_NOTEBOOKS, check: bool = False,
            package: Optional[str] = None) -> List[str]:
    """Regenerate the learner notebooks. With ``check``, change nothing and return the list of
    differences (empty when ``notebooks`` is up to date); otherwise write them and return the
    list of what changed. ``package``: where a notebook opened outside the course installs the
    course from (see :mod:`.setup_cell`)."""
    notebooks = Path(notebooks)
    with tempfile.TemporaryDirectory(prefix="mhsa_release_") as tmp:
        released = generate(Path(solutions), Path(tmp) / "course", package=package)
        for note in released.notes:
            print(f"release: note: {note}", file=sys.stderr)
        diffs = _differences(released, notebooks)
        if check:
            return diffs
        notebooks.mkdir(parents=True, exist_ok=True)
        for name, content in released.notebooks.items():
            path = notebooks / f"{name}.ipynb"
            if not path.exists() or path.read_bytes() != content:
                path.write_bytes(content)
        for path in sorted(notebooks.glob("*.ipynb")):
            if path.stem not in released.notebooks:
                path.unlink()
        if released.data_dir is not None:
            data = notebooks / DATA_DIR
            if not (data.is_dir() and _same_tree(released.data_dir, data)):
                shutil.rmtree(data, ignore_errors=True)
                shutil.copytree(released.data_dir, data)
        return diffs


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    parser.add_argument(
        "--check", action="store_true",
        help="change nothing; exit 1 and list the notebooks that differ from what nbgrader generates",
    )
    parser.add_argument("--solutions", type=Path, default=DEFAULT_SOLUTIONS, metavar="DIR",
                        help="the instructor's source notebooks (default: solutions/)")
    parser.add_argument("--notebooks", type=Path, default=DEFAULT_NOTEBOOKS, metavar="DIR",
                        help="where the learner notebooks go (default: notebooks/)")
    parser.add_argument("--package", metavar="SOURCE", default=None,
                        help="where a notebook opened outside the course installs the course from: a wheel "
                             "(URL or path), a git+ URL, or a folder / index URL holding the wheel "
                             "(default: none; the notebook then says how to install the course)")


def main(args) -> int:
    try:
        diffs = release(args.solutions, args.notebooks, check=args.check, package=args.package)
    except (ReleaseError, OSError, ValueError) as e:
        print(f"release: {e}", file=sys.stderr)
        return 1
    if args.check:
        if diffs:
            print("release --check: notebooks/ is not what nbgrader generates from solutions/:")
            for line in diffs:
                print(f"  {line}")
            print("Run `./course release` and commit the result.")
            return 1
        print(f"release --check: {args.notebooks} is up to date")
        return 0
    if diffs:
        done = {"missing:": "added:  ", "differs:": "updated:", "extra:  ": "removed:"}
        for line in diffs:
            for before, after in done.items():
                if line.startswith(before):
                    line = after + line[len(before):]
            print(f"release: {line.split(' (no source')[0]}")
    else:
        print(f"release: {args.notebooks} was already up to date")
    return 0
