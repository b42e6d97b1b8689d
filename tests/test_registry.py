"""The step registry: every graded step is declared once, and the same name leads through the
layers. A step taught in notebook N with library home X is implemented in ``mhsa_lib/X.py``,
checked in ``autograder/checks/X.py``, its mistakes in ``autograder/mistakes/X.py``, tested in
``tests/test_X.py`` and ``tests/test_checks_X.py``. Steps with no library home (warm-ups, the
debugging repairs, checkpoints) say so in their declaration, and their check module Y still has
its mistakes in ``autograder/mistakes/Y.py`` and its tests in ``tests/test_checks_Y.py``."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

import autograder
import autograder.checks  # noqa: F401  (registers every step)
from autograder.frame.registry import KINDS, NO_LIBRARY_HOME, Step, get, steps

ROOT = Path(__file__).resolve().parents[1]
STEPS = steps()


def _ids(s: Step) -> str:
    return s.name


def graded_calls():
    """(notebook, check name, first argument) for every call in the solutions' graded test cells."""
    found = []
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell["cell_type"] != "code" or not meta.get("grade"):
                continue
            source = "".join(cell["source"])
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("check_"):
                    first = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                    found.append((path.stem, node.func.id, first))
    return found


def test_the_registry_holds_every_step_once():
    names = [s.name for s in STEPS]
    assert len(names) == len(set(names))
    assert len([s for s in STEPS if s.kind != "checkpoint"]) >= 23
    assert {s.kind for s in STEPS} <= set(KINDS)


@pytest.mark.parametrize("s", STEPS, ids=_ids)
def test_the_naming_rule(s: Step):
    assert (ROOT / "solutions" / f"{s.notebook}.ipynb").exists(), s.notebook
    module = s.check_module.rpartition(".")[2]
    assert s.check_module == f"autograder.checks.{module}"
    if s.kind in NO_LIBRARY_HOME:
        assert s.home is None
        if s.kind == "checkpoint":
            assert (ROOT / "tests" / "test_concepts.py").exists()
        else:
            assert (ROOT / "autograder" / "mistakes" / f"{module}.py").exists()
            assert (ROOT / "tests" / f"test_checks_{module}.py").exists()
        return
    home = s.home
    assert module == home, f"{s.name} lives in mhsa_lib/{home}.py but is checked in {s.check_module}"
    assert (ROOT / "mhsa_lib" / f"{home}.py").exists()
    assert (ROOT / "autograder" / "mistakes" / f"{home}.py").exists()
    assert (ROOT / "tests" / f"test_{home}.py").exists()
    assert (ROOT / "tests" / f"test_checks_{home}.py").exists()
    library = importlib.import_module(f"mhsa_lib.{home}")
    if s.reference is not None:
        assert getattr(library, getattr(s.reference, "__name__", ""), None) is s.reference, \
            f"the reference of {s.name} is not mhsa_lib.{home}'s"


@pytest.mark.parametrize("s", STEPS, ids=_ids)
def test_each_step_is_graded_in_its_notebook(s: Step):
    calls = graded_calls()
    if s.kind == "checkpoint":
        assert (s.notebook, "check_concept", s.name) in calls
    else:
        assert any(nb == s.notebook and check == s.check_name for nb, check, _ in calls), \
            f"no graded cell of {s.notebook} runs {s.check_name}"


def test_every_graded_check_is_a_registered_step():
    for notebook, check, first in graded_calls():
        if check == "check_concept":
            assert get(first).notebook == notebook
        else:
            assert any(s.check_name == check for s in STEPS), check
            assert hasattr(autograder, check)


@pytest.mark.parametrize("s", [s for s in STEPS if s.isolate or s.picture], ids=_ids)
def test_isolated_steps_are_registered_and_pictures_compile(s: Step):
    for name in s.isolate:
        assert get(name).kind not in ("checkpoint",)
    if s.picture:
        compile(s.picture, f"<picture of {s.name}>", "exec")
        assert re.search(r"\byours\b", s.picture) and re.search(r"\bref\b", s.picture)


def test_the_public_api_comes_from_the_registry():
    checks = {s.check_name for s in STEPS if s.kind != "checkpoint"}
    assert set(autograder.__all__) == checks | {"check_concept", "fallback"}
    for name in checks:
        assert getattr(autograder, name).step is next(s for s in STEPS if s.check_name == name)


def test_an_unknown_step_is_refused_with_the_names_that_exist():
    with pytest.raises(ValueError, match="step: expected one of .*'softmax'.*got 'sofmax'"):
        get("sofmax")
    with pytest.raises(ValueError, match="step: expected one of"):
        autograder.fallback("sofmax", lambda x: x)
