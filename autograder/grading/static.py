"""Reading a submission's source for the shortcuts a step forbids, in the grader's own process.

A step that asks the learner to build something themselves (a softmax from exp, max and sum;
attention without ``F.scaled_dot_product_attention``; a LayerNorm without ``F.layer_norm``...)
declares what it forbids (``Step.forbidden``: torch names, and ``mhsa_lib`` names or all of it).
The check's probe looks for such calls while the learner's code runs, but that runs in the
student's process; this module reads the submitted source instead, which the student's code
cannot change: the definition of the learner's function or class (the last one before the test
cell, in notebook order), the notebook's own functions and classes it uses by name (transitively),
and the names the notebook's imports bind (``from torch.nn.functional import softmax as sm``).

It catches what is written; code built at run time (``getattr(torch, "soft" + "max")``,
``exec``) escapes it, as it escapes any reading of source.
"""

from __future__ import annotations

import ast
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

Library = Union[bool, Sequence[str]]


def _cells(nb, upto: int) -> Iterable[ast.Module]:
    for index, cell in enumerate(nb.cells[:upto]):
        if cell.get("cell_type") != "code":
            continue
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        try:
            yield ast.parse(_without_magics(source))
        except (SyntaxError, ValueError):
            continue


def _without_magics(source: str) -> str:
    """IPython's ``%`` and ``!`` lines are not Python: blank them (keeping line numbers)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def scope(nb, upto: int) -> Tuple[Dict[str, ast.AST], Dict[str, str]]:
    """The notebook's top-level functions and classes by name (the last definition wins), and the
    names its imports bind -> what they stand for (``"torch.nn.functional.softmax"``)."""
    defs: Dict[str, ast.AST] = {}
    aliases: Dict[str, str] = {}
    for tree in _cells(nb, upto):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs[node.name] = node
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        defs[t.id] = node.value
    return defs, aliases


def forbidden_uses(name: str, defs: Dict[str, ast.AST], aliases: Dict[str, str], torch_names: Sequence[str],
                   library: Library) -> List[str]:
    """What the definition of ``name`` (and the notebook's definitions it reaches) uses of the
    forbidden names, in words (``"torch's softmax"``, ``"mhsa_lib (scaled_dot_product_attention)"``)."""
    found: List[str] = []
    seen: Set[str] = set()
    todo = [name]
    torch_names = set(torch_names)

    def forbidden_library(last: str) -> bool:
        return library is True or (bool(library) and last in set(library))

    def note(label: str) -> None:
        if label not in found:
            found.append(label)

    while todo:
        current = todo.pop()
        if current in seen or current not in defs:
            continue
        seen.add(current)
        for node in ast.walk(defs[current]):
            if isinstance(node, ast.Attribute):
                root = _root(node)
                origin = aliases.get(root, root) if root else ""
                if node.attr in torch_names and not origin.startswith("mhsa_lib"):
                    note(f"torch's {node.attr}")
                if origin.startswith("mhsa_lib") and forbidden_library(node.attr):
                    note(f"mhsa_lib ({node.attr})")
            elif isinstance(node, ast.Name):
                origin = aliases.get(node.id)
                if origin:
                    last = origin.rsplit(".", 1)[-1]
                    if origin.startswith("torch") and last in torch_names:
                        note(f"torch's {last}")
                    elif origin.startswith("mhsa_lib") and "." in origin and forbidden_library(last):
                        note(f"mhsa_lib ({last})")
                    elif origin == "mhsa_lib" and library is True:
                        note("mhsa_lib")
                elif node.id in defs and node.id != current:
                    todo.append(node.id)
    if any(f.startswith("mhsa_lib (") for f in found):
        found = [f for f in found if f != "mhsa_lib"]  # the module itself, named more precisely already
    return found


def _root(node: ast.AST) -> Optional[str]:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def shortcuts_in_source(nb, cell_index: int, subject: str, forbidden: Tuple[Sequence[str], Any]) -> List[str]:
    """The forbidden uses in the source of the learner's ``subject`` as the test cell at
    ``cell_index`` sees it; [] when nothing is forbidden or the subject is not a plain name."""
    torch_names, library = forbidden
    if not subject.isidentifier() or (not torch_names and not library):
        return []
    defs, aliases = scope(nb, cell_index)
    return forbidden_uses(subject, defs, aliases, torch_names, library)
