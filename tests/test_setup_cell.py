"""Each notebook's set-up cell (autograder/grading/setup_cell.py): it does nothing inside the
course, installs the course from the instructor's source alone where only the notebook is, and
otherwise stops with one message, never a traceback. The slow test runs notebook 01, exactly as
committed, in a fresh virtual environment that has only Jupyter and torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from conftest import NOTEBOOKS, SOLUTIONS, fill_submission

from autograder.grading import nbgrader_tools as nbt
from autograder.grading import setup_cell

NAMES = sorted(p.stem for p in SOLUTIONS.glob("*.ipynb"))


@pytest.mark.parametrize("folder", [SOLUTIONS, NOTEBOOKS], ids=["solutions", "notebooks"])
@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_starts_with_the_set_up_cell(folder, name):
    nb = nbformat.read(str(folder / f"{name}.ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert setup_cell.is_setup_cell(code[0]), f"{name}: the first code cell is not the course set-up cell"
    assert sum(setup_cell.is_setup_cell(c) for c in nb.cells) == 1
    assert nbt.cell_source(code[0]).strip() == setup_cell.SOURCE.strip(), \
        f"{name}: the set-up cell differs from autograder/grading/setup_cell.py's SOURCE"
    assert nbt.nbgrader_meta(code[0]).get("locked") is True


def test_the_package_source_is_written_into_the_cell_and_bad_values_are_refused():
    text = setup_cell.with_package(setup_cell.SOURCE, "https://example.org/mhsa_course-0.1.0-py3-none-any.whl")
    assert "COURSE_PACKAGE = 'https://example.org/mhsa_course-0.1.0-py3-none-any.whl'" in text
    assert setup_cell.with_package(setup_cell.SOURCE, None) == setup_cell.SOURCE
    for bad in ["", "   ", "a\nb", 3]:
        with pytest.raises(ValueError, match="package: expected"):
            setup_cell.with_package(setup_cell.SOURCE, bad)


def test_inside_the_course_the_cell_does_nothing(capsys):
    calls = []

    class Shell:
        def run_line_magic(self, *args):
            calls.append(args)

    exec(compile(setup_cell.SOURCE, "setup-cell", "exec"), {"get_ipython": lambda: Shell()})
    assert calls == [] and capsys.readouterr().out == ""


def _bare_python(tmp_path) -> str:
    """A Python with none of the course's packages (a virtual environment without pip)."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return str(venv / "bin" / "python")


def _run_cell(python, tmp_path, env_extra=None, package=None, extra_path=None):
    """Run the cell in ``python`` with a stand-in for IPython that records every %pip line (and
    installs nothing); returns (pip lines, the message shown, output)."""
    source = setup_cell.with_package(setup_cell.SOURCE, package)
    runner = tmp_path / "run_cell.py"
    runner.write_text(textwrap.dedent(f"""
        import json, sys
        lines = []
        class Shell:
            def run_line_magic(self, name, line):
                lines.append(name + " " + line)
        ns = {{"get_ipython": lambda: Shell()}}
        shown = None
        try:
            exec(compile({source!r}, "setup-cell", "exec"), ns)
        except Exception as e:
            shown = e._render_traceback_() if hasattr(e, "_render_traceback_") else repr(e)
        print(json.dumps({{"pip": lines, "shown": shown}}))
    """), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MHSA_", "PYTHONPATH"))}
    env.update(env_extra or {})
    if extra_path:
        env["PYTHONPATH"] = str(extra_path)
    proc = subprocess.run([python, str(runner)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["pip"], out["shown"], proc.stdout


def test_with_no_source_the_cell_stops_with_one_message_saying_what_to_run(tmp_path):
    python = _bare_python(tmp_path)
    pip, shown, _ = _run_cell(python, tmp_path)
    assert pip == []
    message = "\n".join(shown)
    assert "Course set-up:" in message and "Traceback" not in message
    assert "./course start" in message and "%pip install" in message and "mhsa-course @ URL" in message


def test_the_course_package_comes_from_the_instructors_links_only(tmp_path):
    python = _bare_python(tmp_path)
    links = str(tmp_path / "links")
    pip, shown, out = _run_cell(python, tmp_path, env_extra={"PIP_FIND_LINKS": links})
    assert "Installing the course from" in out
    assert pip[0].startswith("pip install") and "--no-index" in pip[0] and "--no-deps" in pip[0]
    assert "mhsa-course" in pip[0]
    assert "--no-index" not in pip[1] and "mhsa-course" in pip[1]  # then its dependencies, from the index
    assert "did not work" in "\n".join(shown)  # the stand-in installed nothing, and the cell says so


@pytest.mark.parametrize("package, expect", [
    ("/srv/course/mhsa_course-0.1.0-py3-none-any.whl", "mhsa-course @ file:///srv/course/mhsa_course-0.1.0-py3-none-any.whl"),
    ("https://example.org/c/mhsa_course-0.1.0-py3-none-any.whl", "mhsa-course @ https://example.org/c/mhsa_course-0.1.0"),
    ("git+https://example.org/course.git", "mhsa-course @ git+https://example.org/course.git"),
])
def test_a_wheel_or_git_source_is_a_direct_reference(tmp_path, package, expect):
    python = _bare_python(tmp_path)
    pip, _, _ = _run_cell(python, tmp_path, package=package)
    assert len(pip) == 1 and expect in pip[0]


def test_an_unrelated_autograder_package_is_named_plainly(tmp_path):
    python = _bare_python(tmp_path)
    fake = tmp_path / "site" / "autograder"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("def grade():\n    return 0\n", encoding="utf-8")
    pip, shown, _ = _run_cell(python, tmp_path, extra_path=tmp_path / "site", env_extra={"PIP_FIND_LINKS": "/x"})
    message = "\n".join(shown)
    assert pip == [] and "unrelated package" in message and "pip uninstall -y autograder" in message


def test_release_writes_the_package_into_released_notebooks(tmp_path):
    from autograder.grading.release import _prepare_source

    notes = []
    dest = tmp_path / "01.ipynb"
    _prepare_source(SOLUTIONS / "01_scaled_dot_product_attention.ipynb", dest, notes, package="https://x.org/c.whl")
    nb = nbformat.read(str(dest), as_version=4)
    cell = next(c for c in nb.cells if setup_cell.is_setup_cell(c))
    assert "COURSE_PACKAGE = 'https://x.org/c.whl'" in nbt.cell_source(cell)


# --------------------------------------------------------------------------- one notebook, anywhere


def _fresh_jupyter_venv(root: Path) -> Path:
    """A virtual environment with Jupyter (nbclient, ipykernel) and torch, and nothing of the
    course: what a learner's Jupyter has."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHONPATH", "VIRTUAL_ENV"))}
    proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "torch==2.13.0", "jupyter", "nbclient", "ipykernel"],
                          capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return py


def _execute(py: Path, nb_path: Path, out_path: Path, env: dict, timeout=900):
    script = textwrap.dedent(f"""
        import nbformat
        from nbclient import NotebookClient
        nb = nbformat.read({str(nb_path)!r}, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                       resources={{"metadata": {{"path": {str(nb_path.parent)!r}}}}}).execute()
        nbformat.write(nb, {str(out_path)!r})
    """)
    proc = subprocess.run([str(py), "-c", script], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=str(nb_path.parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return nbformat.read(str(out_path), as_version=4)


def _errors(nb):
    return [(i, o.get("ename"), o.get("evalue", "")[:200]) for i, c in enumerate(nb.cells)
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
def test_notebook_01_as_committed_runs_where_only_the_notebook_is(tmp_path):
    """A fresh environment with Jupyter and torch only, the course's wheel in a folder pip is
    pointed at: notebook 01, untouched, runs top to bottom with no error but the exercises' own
    NotImplementedError; then the learner's answers are checked, with full marks."""
    from autograder.grading.wheel import build_wheel

    links = tmp_path / "links"
    build_wheel(links)
    py = _fresh_jupyter_venv(tmp_path)
    work = tmp_path / "learner"  # a folder of its own: nothing of the repository next to it
    work.mkdir()
    name = "01_scaled_dot_product_attention"
    learner = work / f"{name}.ipynb"
    learner.write_bytes((NOTEBOOKS / f"{name}.ipynb").read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHONPATH", "VIRTUAL_ENV", "MHSA_"))}
    env.update(PIP_FIND_LINKS=str(links), PIP_DISABLE_PIP_VERSION_CHECK="1", MPLBACKEND="Agg",
               PATH=f"{py.parent}{os.pathsep}{env.get('PATH', '')}", JUPYTER_PLATFORM_DIRS="1")
    ran = _execute(py, learner, work / "ran.ipynb", env)
    setup_out = "".join(o.get("text", "") for o in ran.cells[1].outputs if o.get("output_type") == "stream")
    assert "Installing the course from" in setup_out and "The course is installed." in setup_out, setup_out
    unexpected = [e for e in _errors(ran) if e[1] != "NotImplementedError"]
    assert not unexpected, unexpected
    for cell in ran.cells:  # every unanswered step reports and earns nothing, nothing crashes
        if nbt.is_test_cell(cell):
            assert nbt.score_test_cell(cell).points == 0, nbt.grade_id(cell)

    source = nbformat.read(str(SOLUTIONS / f"{name}.ipynb"), as_version=4)
    answered = fill_submission(nbformat.read(str(learner), as_version=4), source)
    answered_path = work / "answered.ipynb"
    nbformat.write(answered, str(answered_path))
    done = _execute(py, answered_path, work / "answered_ran.ipynb", env)
    assert _errors(done) == []
    for cell in done.cells:
        if nbt.is_test_cell(cell):
            score = nbt.score_test_cell(cell)
            assert score.points == score.max_points, (nbt.grade_id(cell), score)


def test_a_course_folder_remembers_its_package_until_told_otherwise(tmp_path):
    from autograder.grading.course import class_package

    assert class_package(tmp_path) is None
    assert class_package(tmp_path, "https://x.org/c.whl") == "https://x.org/c.whl"
    assert class_package(tmp_path) == "https://x.org/c.whl"
    with pytest.raises(ValueError, match="package: expected"):
        class_package(tmp_path, "two\nlines")
    assert class_package(tmp_path) == "https://x.org/c.whl"
    assert class_package(tmp_path, "none") is None and class_package(tmp_path) is None


@pytest.mark.slow
def test_build_writes_the_class_package_into_the_released_notebooks(tmp_path):
    from autograder.grading.course import build

    course = tmp_path / "classroom"
    name = "00_orientation"

    def released_line():
        nb = nbformat.read(str(course / "release" / name / f"{name}.ipynb"), as_version=4)
        cell = next(c for c in nb.cells if setup_cell.is_setup_cell(c))
        return next(l for l in nbt.cell_source(cell).splitlines() if l.startswith("COURSE_PACKAGE"))

    build(course, only=[name], package="https://example.org/mhsa_course-0.1.0-py3-none-any.whl")
    assert "'https://example.org/mhsa_course-0.1.0-py3-none-any.whl'" in released_line()
    build(course, only=[name])  # remembered
    assert "example.org" in released_line()
    build(course, only=[name], package="none")
    assert released_line().startswith("COURSE_PACKAGE = None")


def test_sharing_only_the_set_up_cell_does_not_make_two_notebooks_one_assignment():
    """Every notebook has the locked set-up cell: a notebook of another assignment is still told
    apart by its answer and test cells."""
    from autograder.grading.worker import belongs_to

    nb00 = nbformat.read(str(NOTEBOOKS / "00_orientation.ipynb"), as_version=4)
    nb01 = nbformat.read(str(NOTEBOOKS / "01_scaled_dot_product_attention.ipynb"), as_version=4)
    assert belongs_to(nb00, nb00) and not belongs_to(nb01, nb00) and not belongs_to(nb00, nb01)
