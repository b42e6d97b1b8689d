"""notebooks/ is exactly what `nbgrader generate_assignment` makes of solutions/, byte for byte,
and holds nothing a learner must not see."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
from conftest import NOTEBOOKS, SOLUTIONS, run_cli, write

from autograder.grading import nbgrader_tools as nbt
from autograder.grading import release as rel

SOURCES = sorted(SOLUTIONS.glob("*.ipynb"))
LEARNER = sorted(NOTEBOOKS.glob("*.ipynb"))


def _learner(source):
    path = NOTEBOOKS / source.name
    assert path.exists(), f"{path} is missing: run `./course release` and commit notebooks/"
    return path


def test_there_are_notebooks_to_release():
    assert SOURCES, "solutions/ holds no notebooks"
    assert [p.name for p in LEARNER] == [p.name for p in SOURCES], "run `./course release` and commit notebooks/"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two independent generations of the learner notebooks from solutions/."""
    first = rel.generate(SOLUTIONS, tmp_path_factory.mktemp("release_a") / "course")
    second = rel.generate(SOLUTIONS, tmp_path_factory.mktemp("release_b") / "course")
    return first, second


@pytest.mark.slow
def test_committed_notebooks_are_what_nbgrader_generates(generated):
    first, _ = generated
    assert sorted(first.notebooks) == sorted(p.stem for p in LEARNER)
    stale = [name for name, content in first.notebooks.items()
             if (NOTEBOOKS / f"{name}.ipynb").read_bytes() != content]
    assert not stale, f"notebooks/ is out of date for {stale}: run `./course release` and commit"


@pytest.mark.slow
def test_release_is_byte_stable(generated):
    first, second = generated
    assert first.notebooks == second.notebooks


@pytest.mark.slow
def test_release_check_command_agrees():
    proc = run_cli("release", "--check", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout


@pytest.mark.parametrize("path", LEARNER, ids=lambda p: p.stem)
def test_learner_notebook_is_clean(path):
    text = path.read_text(encoding="utf-8")
    assert rel.problems_in_learner_notebook(text) == []
    for marker in nbt.SOURCE_MARKERS:
        assert marker not in text
    nb = json.loads(text)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    # Every answer cell is a stub to fill in: code raises NotImplementedError, a written
    # (manually graded) answer says where to write.
    answers = [c for c in nb["cells"] if nbt.is_solution(c)]
    code_stub = re.compile(r"# YOUR CODE HERE\n\s*raise NotImplementedError\(\)")
    assert answers
    for cell in answers:
        if cell["cell_type"] == "code":
            assert code_stub.search(nbt.cell_source(cell))
        else:
            assert "YOUR ANSWER HERE" in nbt.cell_source(cell)


def _regions(source: str, begin: str, end: str):
    inside, outside, on = [], [], False
    for line in source.splitlines():
        if begin in line:
            on = True
        elif end in line:
            on = False
        else:
            (inside if on else outside).append(line.strip())
    return inside, outside


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_no_solution_or_hidden_test_code_leaks(source):
    learner_path = _learner(source)
    src = nbformat.read(str(source), as_version=4)
    learner = nbformat.read(str(learner_path), as_version=4)
    secret, public = set(), set()
    for cell in src.cells:
        text = nbt.cell_source(cell)
        sol_in, rest = _regions(text, "BEGIN SOLUTION", "END SOLUTION")
        hid_in, rest = _regions("\n".join(rest), "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        secret.update(sol_in + hid_in)
        public.update(rest)
    # Lines only the regions have (not blank, not a bare keyword, not also written elsewhere).
    secret = {l for l in secret - public if l and not re.fullmatch(r"#.*|pass|return|\)|\]|\}|else:", l)}
    assert secret, "the sources have no solution code to look for"
    learner_lines = {l.strip() for c in learner.cells for l in nbt.cell_source(c).splitlines()}
    assert not (secret & learner_lines), f"{learner_path.name} shows source-only code: {sorted(secret & learner_lines)[:5]}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_graded_cells_match_the_source(source):
    """The learner notebook keeps every graded step of its source, with the same points."""
    def steps(nb):
        return [(nbt.grade_id(c), nbt.max_points(c)) for c in nb.cells if nbt.is_test_cell(c)]

    src = nbformat.read(str(source), as_version=4)
    learner = nbformat.read(str(_learner(source)), as_version=4)
    assert steps(src) and steps(src) == steps(learner)


# --------------------------------------------------------------------------- on a small course


@pytest.mark.slow
def test_release_writes_checks_and_reports_each_kind_of_difference(tmp_path, tiny_source_nb, capsys):
    from autograder.__main__ import main

    sols, out = tmp_path / "solutions", tmp_path / "notebooks"
    write(tiny_source_nb, sols / "01_tiny.ipynb")
    other = nbformat.from_dict(tiny_source_nb)
    other.metadata["kernelspec"] = {"name": "my-venv", "display_name": "My venv", "language": "python"}
    raw = json.loads(nbformat.writes(other))
    for cell in raw["cells"]:
        del cell["id"]  # a source saved without cell ids
    (sols / "02_tiny.ipynb").write_text(json.dumps(raw))
    (sols / "data").mkdir()
    (sols / "data" / "words.txt").write_text("the cat sat\n")  # files the notebooks read
    args = ["release", "--solutions", sols, "--notebooks", out]

    assert main([str(a) for a in args]) == 0
    assert (out / "data" / "words.txt").read_text() == "the cat sat\n"
    assert sorted(p.name for p in out.glob("*.ipynb")) == ["01_tiny.ipynb", "02_tiny.ipynb"]
    released = {p.name: p.read_bytes() for p in out.glob("*.ipynb")}
    nb2 = json.loads(released["02_tiny.ipynb"])
    assert nb2["metadata"]["kernelspec"]["name"] == "python3"
    assert rel.problems_in_learner_notebook(released["02_tiny.ipynb"].decode()) == []
    capsys.readouterr()

    assert main([str(a) for a in args + ["--check"]]) == 0
    assert "up to date" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.glob("*.ipynb")} == released  # byte-stable

    (out / "01_tiny.ipynb").write_text((out / "01_tiny.ipynb").read_text().replace("triple", "quadruple"))
    (out / "02_tiny.ipynb").unlink()
    (out / "03_stray.ipynb").write_text("{}")
    (out / "data" / "words.txt").write_text("the dog sat\n")
    assert main([str(a) for a in args + ["--check"]]) == 1
    report = capsys.readouterr().out
    assert "differs: " in report and "data/" in report
    assert "differs: " in report and "01_tiny.ipynb" in report
    assert "missing: " in report and "02_tiny.ipynb" in report
    assert "extra: " in report and "03_stray.ipynb" in report

    assert main([str(a) for a in args]) == 0  # a release repairs all of it
    assert {p.name: p.read_bytes() for p in out.glob("*.ipynb")} == released
    assert (out / "data" / "words.txt").read_text() == "the cat sat\n"


@pytest.mark.slow
def test_release_fails_on_a_broken_source(tmp_path, tiny_source_nb, capsys):
    from autograder.__main__ import main

    sols = tmp_path / "solutions"
    nb = nbformat.from_dict(tiny_source_nb)
    nb.cells[3].metadata.nbgrader["grade_id"] = "double"  # a grade id used twice
    write(nb, sols / "01_tiny.ipynb")
    code = main(["release", "--solutions", str(sols), "--notebooks", str(tmp_path / "out")])
    assert code == 1
    assert "release:" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.ipynb"))
