"""README's section "Grading a class on several machines (Dask)" names commands, options and
functions that exist: every option of its `./course autograde` lines is one of autograde's, every
option of its `dask scheduler` / `dask worker` lines one of the installed Dask's, its Python
snippets compile, and the sandbox check it tells instructors to run is there."""

from __future__ import annotations

import ast
import re

import pytest
from conftest import ROOT

TITLE = "### Grading a class on several machines (Dask)"


def section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert TITLE in text, f"README.md has no section {TITLE!r}"
    start = text.index(TITLE)
    ends = [i for i in (text.find("\n## ", start + 1), text.find("\n### ", start + 1)) if i != -1]
    return text[start:min(ends) if ends else len(text)]


def commands(text: str, prefix: str):
    """Each command line starting with ``prefix`` (backslash continuations joined), comments cut."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip().strip("`")
        at = line.find(prefix)
        if at == -1:
            continue
        found.append(line[at:].split("#", 1)[0].split("`", 1)[0].strip())
    return found


def options_of(command: str):
    return {tok.split("=", 1)[0] for tok in command.split() if tok.startswith("--")}


def test_the_autograde_lines_use_options_autograde_has():
    from autograder.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    known = {opt for action in sub.choices["autograde"]._actions for opt in action.option_strings}
    lines = commands(section(), "./course autograde")
    assert lines, "the section shows no ./course autograde command"
    used = set().union(*(options_of(line) for line in lines))
    assert "--scheduler" in used
    assert used <= known, f"options autograde does not have: {sorted(used - known)}"


@pytest.mark.parametrize("name", ["scheduler", "worker"])
def test_the_dask_lines_use_options_dask_has(name):
    try:
        module = __import__(f"distributed.cli.dask_{name}", fromlist=["main"])
    except ImportError as e:  # ./course test installs it (requirements-test.txt)
        pytest.skip(f"dask[distributed] is not installed here, so its options cannot be read: {e}")
    known = {opt for p in module.main.params for opt in (*p.opts, *p.secondary_opts)}
    lines = commands(section(), f"dask {name} ")
    assert lines, f"the section shows no `dask {name}` command"
    for line in lines:
        assert options_of(line) <= known, f"{line!r}: not options of dask {name}: {sorted(options_of(line) - known)}"
    if name == "worker":
        assert any("--nthreads 1" in line for line in lines)


def test_the_python_snippets_compile_and_the_sandbox_check_exists():
    text = section()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2, "expected the Slurm and the Kubernetes scripts"
    for block in blocks:
        ast.parse(block)
    assert "from dask_jobqueue import SLURMCluster" in text
    assert "from dask_kubernetes.operator import KubeCluster, make_cluster_spec" in text
    check = re.search(r'python -c "(from autograder\.grading\.sandbox import check_sandbox; [^"]+)"', text)
    assert check, "the section shows no sandbox check"
    tree = ast.parse(check.group(1))
    from autograder.grading import sandbox

    imported = [a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names]
    assert imported == ["check_sandbox"] and callable(sandbox.check_sandbox)
