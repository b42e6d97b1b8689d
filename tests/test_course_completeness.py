"""Every graded step of every notebook is where a learner looks for it: named in README's course
table, graded by a test cell of its own notebook, and counted by ``./course progress``.

Quick: no kernel runs. The steps come from the registry (``autograder.frame.registry``); the test
cells from the solution and learner notebooks; progress's rows from the same scoring its
``./course check --json`` runs use, on notebooks not yet run.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List

import nbformat
import pytest
from conftest import NOTEBOOKS, SOLUTIONS

import autograder.checks  # noqa: F401 - registers every step
from autograder.frame.registry import steps as registered_steps
from autograder.grading import engine, progress
from autograder.grading import nbgrader_tools as nbt
from autograder.grading.scoring import score_notebook
from autograder.grading.selfcheck import written_parts

README = Path(__file__).resolve().parents[1] / "README.md"
#: Steps whose name is what the learner writes (a function or a class): README names each one.
NAMED_KINDS = ("function", "module", "warmup")
#: Steps README describes in words: the kind -> a word its notebook's row must use.
DESCRIBED_KINDS = {"repair": "repair", "model": "model"}
CHECK_CALL = re.compile(r"\b(check_\w+)\s*\(")


def _stems(folder: Path) -> List[str]:
    return sorted(p.stem for p in folder.glob("[0-9][0-9]_*.ipynb"))


def _by_notebook() -> Dict[str, list]:
    found: Dict[str, list] = {}
    for s in registered_steps():
        found.setdefault(s.notebook, []).append(s)
    return found


def _course_table() -> Dict[str, str]:
    """notebook stem -> the "graded" cell of its row in README's course table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## The course", 1)[1].split("\n## ", 1)[0]
    rows: Dict[str, str] = {}
    for line in section.splitlines():
        if not re.match(r"\|\s*\d\d\s*\|", line):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 4, f"README course table row with {len(cells)} columns, expected 4 (#, notebook, " \
                                f"you build, graded): {line!r}"
        stem = cells[1].strip("`")
        assert stem not in rows, f"README's course table has two rows for {stem}"
        rows[stem] = cells[3]
    return rows


def _test_cell_calls(nb) -> Dict[str, List[str]]:
    """grade id of each test cell -> the checks it calls."""
    return {nbt.grade_id(c) or f"cell-{i}": CHECK_CALL.findall(nbt.cell_source(c))
            for i, c in enumerate(nb.cells) if nbt.is_test_cell(c)}


def test_the_course_table_has_one_row_per_notebook():
    assert _stems(SOLUTIONS), f"no solution notebooks in {SOLUTIONS}"
    assert sorted(_course_table()) == _stems(SOLUTIONS) == _stems(NOTEBOOKS)


def test_every_step_is_registered_for_a_notebook_of_the_course():
    stems = set(_stems(SOLUTIONS))
    strays = [f"{s.name} ({s.notebook})" for s in registered_steps() if s.notebook not in stems]
    assert not strays, f"steps registered for notebooks the course does not have: {strays}"


@pytest.mark.parametrize("stem", _stems(SOLUTIONS))
def test_readme_names_every_graded_step_of_the_notebook(stem):
    graded = _course_table()[stem]
    steps = _by_notebook().get(stem, [])
    named = set(re.findall(r"`([A-Za-z_]\w*)`", graded))
    want = {s.name for s in steps if s.kind in NAMED_KINDS}
    assert not want - named, (f"README's course table row {stem} does not name {sorted(want - named)} "
                              f"(its graded column: {graded!r})")
    assert not named - want, (f"README's course table row {stem} names {sorted(named - want)}, which are no "
                              f"graded steps of {stem} (its steps: {sorted(want)})")
    for kind, word in DESCRIBED_KINDS.items():
        if any(s.kind == kind for s in steps):
            assert word in graded, f"README's row {stem} does not mention its {kind} step(s): {graded!r}"
    if any(s.kind == "checkpoint" for s in steps):
        assert "checkpoints" in graded, f"README's row {stem} does not mention its checkpoints: {graded!r}"
    solution = nbformat.read(str(SOLUTIONS / f"{stem}.ipynb"), as_version=4)
    if written_parts(solution):
        assert "written" in graded, f"README's row {stem} does not mention its written part(s): {graded!r}"


@pytest.mark.parametrize("stem", _stems(SOLUTIONS))
def test_every_registered_step_has_one_test_cell_in_its_notebook(stem):
    """Each function, module, repair or model step is checked by exactly one test cell of its own
    notebook, and each checkpoint's question by one ``check_concept`` cell."""
    calls = _test_cell_calls(nbformat.read(str(SOLUTIONS / f"{stem}.ipynb"), as_version=4))
    steps = _by_notebook().get(stem, [])
    for s in steps:
        if s.kind == "checkpoint":
            continue
        cells = [gid for gid, called in calls.items() if s.check_name in called]
        assert len(cells) == 1, f"{stem}: {s.check_name} is called by {len(cells)} test cells {cells}, expected 1"
    checks = {s.check_name for s in steps if s.kind != "checkpoint"} | {"check_concept"}
    for gid, called in calls.items():
        assert called, f"{stem}: test cell {gid} calls no check"
        assert set(called) <= checks, (f"{stem}: test cell {gid} calls {sorted(set(called) - checks)}, "
                                       f"checks of no step of this notebook")
    concepts = [gid for gid, called in calls.items() if "check_concept" in called]
    assert len(concepts) == sum(1 for s in steps if s.kind == "checkpoint"), (stem, concepts)


@pytest.mark.parametrize("stem", _stems(NOTEBOOKS))
def test_progress_counts_every_graded_step_of_an_untouched_notebook(stem, tmp_path):
    """What ``./course progress`` shows for a learner's notebook before anything ran: one step per
    test cell of the released notebook, every registered step among them, none passed."""
    learner = nbformat.read(str(NOTEBOOKS / f"{stem}.ipynb"), as_version=4)
    source = nbformat.read(str(SOLUTIONS / f"{stem}.ipynb"), as_version=4)
    prep = engine.prepare(learner, source)
    results = score_notebook(prep.nb, ran=[], stopped="not run yet")
    steps = _by_notebook().get(stem, [])
    assert len(results) == len(steps), (f"{stem}: progress would count {len(results)} steps, the course has "
                                        f"{len(steps)} graded steps ({sorted(s.name for s in steps)})")
    calls = _test_cell_calls(prep.nb)
    counted = {c for r in results for c in calls.get(r.id, [])}
    missing = {s.check_name for s in steps if s.kind != "checkpoint"} - counted
    assert not missing, f"{stem}: progress would not count {sorted(missing)}"
    row = progress.Row(tmp_path / f"{stem}.ipynb", steps=[asdict(r) for r in results],
                       written=[asdict(w) for w in written_parts(learner, source)])
    line = next(l for l in progress.format_progress([row], tmp_path).splitlines() if l.strip().startswith(stem))
    assert f"0 / {len(steps)}" in line, line


def test_progress_checks_every_notebook_of_the_folder(monkeypatch, tmp_path):
    seen = []

    def fake_check(path, timeout, total_timeout):
        seen.append(Path(path).stem)
        return progress.Row(Path(path))

    monkeypatch.setattr(progress, "check_one", fake_check)
    rows = progress.course_progress(NOTEBOOKS, workers=1)
    assert sorted(seen) == _stems(NOTEBOOKS) == [r.notebook.stem for r in rows]
