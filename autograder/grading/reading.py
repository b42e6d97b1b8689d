"""Reading a notebook file that a learner checks or a student hands in: a readable notebook, or
:class:`NotebookUnusable` with a one-line reason (used by the self-check and the grading worker)."""

from __future__ import annotations

import json
from pathlib import Path


class NotebookUnusable(Exception):
    """The notebook cannot be read or run; ``str()`` is the one-line reason."""


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, shortened to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def read_notebook(path: Path):
    """The notebook at ``path`` as an nbformat v4 node, or :class:`NotebookUnusable`."""
    import nbformat

    path = Path(path)
    if not path.exists():
        raise NotebookUnusable(f"{path}: no such file")
    if path.is_dir():
        raise NotebookUnusable(f"{path}: is a folder, not a notebook")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NotebookUnusable(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookUnusable(f"{path}: not a notebook, invalid JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or "nbformat" not in raw:
        raise NotebookUnusable(f"{path}: not a Jupyter notebook (no 'nbformat' and 'cells')")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as e:  # nbformat's errors are many and varied
        raise NotebookUnusable(f"{path}: not a usable notebook ({type(e).__name__}: {one_line(str(e))})") from None
    for i, cell in enumerate(nb.cells):
        if not isinstance(cell, dict) or "cell_type" not in cell:
            raise NotebookUnusable(f"{path}: cell {i} has no cell_type")
        cell.setdefault("metadata", {})
        if cell.cell_type == "code":
            cell.setdefault("outputs", [])
    return nb
