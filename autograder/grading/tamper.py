"""Tamper resistance for graded submissions, in two layers.

1. :func:`scan` reads the student's code cells (never the instructor's test cells) and lists the
   statements that change the grading machinery: assignments to attributes of ``torch``,
   ``autograder``, ``mhsa_lib`` or ``builtins``, writes into ``sys.modules``, ``setattr`` on
   those modules, a new ``check_*`` / ``fallback`` of the student's own, ``unittest.mock`` and
   ``ctypes``. Test cells after the first such cell earn nothing.
2. :data:`GUARD_SETUP` runs in the kernel before any student code: it records the identity of
   every function, class and code object of the ``autograder`` and ``mhsa_lib`` modules loaded
   by then, of torch's comparison functions and of the builtins the checks use. Right before
   each test cell the grader asks it (:func:`guard_expression`) whether everything is still the
   genuine object and whether the check names the test cell calls are bound to the genuine
   checks; if not, the test cell is not run and earns 0.

Both run inside the same Python process as the student's code, so they raise the bar rather
than prove anything: code that finds the guard through ``gc`` and replaces it, or that edits
objects in ways identity checks cannot see, can still get past. The README says what a
container adds.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set

#: Modules whose attributes a submission must not assign.
PROTECTED_MODULES = ("torch", "autograder", "mhsa_lib", "builtins", "numpy")
#: Attribute paths under a protected module that notebooks may legitimately set.
ALLOWED_PREFIXES = ("torch.backends.",)
#: Names a test cell calls; a submission must not bind its own objects to them.
CHECK_NAME = re.compile(r"^(check_\w+|fallback)$")
FORBIDDEN_IMPORTS = ("unittest.mock", "mock", "ctypes")


@dataclass
class Finding:
    cell: int  # index of the code cell in the notebook
    line: int
    what: str

    def __str__(self) -> str:
        return f"cell {self.cell}, line {self.line}: {self.what}"


class _Scanner(ast.NodeVisitor):
    def __init__(self, cell: int, aliases: Dict[str, str]):
        self.cell = cell
        self.aliases = aliases  # local name -> dotted module path (shared across cells)
        self.found: List[Finding] = []

    # ------------------------------------------------------------- helpers
    def _flag(self, node: ast.AST, what: str) -> None:
        self.found.append(Finding(self.cell, getattr(node, "lineno", 0), what))

    def _dotted(self, node: ast.AST) -> Optional[str]:
        """``a.b.c`` with ``a`` resolved through the import aliases, or None."""
        parts: List[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            base = self.aliases.get(node.id)
            if node.id == "__builtins__":
                base = "builtins"
            if base is None:
                return None
            return ".".join([base, *reversed(parts)])
        return None

    @staticmethod
    def _protected(path: str) -> bool:
        root = path.split(".")[0]
        return root in PROTECTED_MODULES and not any(path.startswith(p) for p in ALLOWED_PREFIXES)

    def _target(self, target: ast.AST, node: ast.AST, verb: str) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._target(t, node, verb)
        elif isinstance(target, ast.Starred):
            self._target(target.value, node, verb)
        elif isinstance(target, ast.Attribute):
            path = self._dotted(target)
            if path and self._protected(path) and "." in path:
                self._flag(node, f"{verb} {path}")
        elif isinstance(target, ast.Subscript):
            path = self._dotted(target.value)
            if path in ("sys.modules", "builtins.__dict__") or (path and path.endswith(".__dict__") and self._protected(path)):
                self._flag(node, f"{verb} an entry of {path}")
        elif isinstance(target, ast.Name):
            if CHECK_NAME.match(target.id):
                self._flag(node, f"{verb} {target.id}, a name the test cells call")
            elif target.id == "__builtins__":
                self._flag(node, f"{verb} __builtins__")

    # ------------------------------------------------------------- imports
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if any(a.name == m or a.name.startswith(m + ".") for m in FORBIDDEN_IMPORTS):
                self._flag(node, f"imports {a.name}")
            if a.asname:
                self.aliases[a.asname] = a.name
                if CHECK_NAME.match(a.asname):
                    self._flag(node, f"binds {a.asname}, a name the test cells call, to {a.name}")
            else:
                root = a.name.split(".")[0]
                self.aliases[root] = root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level == 0 and any(mod == m or mod.startswith(m + ".") for m in FORBIDDEN_IMPORTS):
            self._flag(node, f"imports from {mod}")
        genuine = node.level == 0 and (mod == "autograder" or mod.startswith("autograder."))
        for a in node.names:
            name = a.asname or a.name
            if node.level == 0:
                self.aliases[name] = f"{mod}.{a.name}"
            if CHECK_NAME.match(name) and not (genuine and a.name == name):
                self._flag(node, f"binds {name}, a name the test cells call, to {mod}.{a.name}")

    # ------------------------------------------------------------- bindings
    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._target(t, node, "assigns")
        # `nn = torch.nn` makes `nn` an alias of a protected module
        path = self._dotted(node.value)
        if path is not None:
            for t in node.targets:
                if isinstance(t, ast.Name):
                    self.aliases[t.id] = path
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target(node.target, node, "changes")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._target(node.target, node, "assigns")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._target(t, node, "deletes")
        self.generic_visit(node)

    def visit_FunctionDef(self, node) -> None:
        if CHECK_NAME.match(node.name):
            self._flag(node, f"defines its own {node.name}, a name the test cells call")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if CHECK_NAME.match(node.name):
            self._flag(node, f"defines a class {node.name}, a name the test cells call")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            if CHECK_NAME.match(name):
                self._flag(node, f"declares global {name}, a name the test cells call")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        if name in ("setattr", "delattr") and node.args:
            path = self._dotted(node.args[0])
            if path and self._protected(path + "."):
                self._flag(node, f"calls {name} on {path}")
        if isinstance(func, ast.Attribute) and func.attr in ("update", "__setitem__", "setdefault", "pop", "__delitem__"):
            path = self._dotted(func.value)
            if path in ("sys.modules", "builtins.__dict__"):
                self._flag(node, f"changes {path} with .{func.attr}()")
        self.generic_visit(node)


def _strip_magics(source: str) -> str:
    # IPython syntax (%magic, !shell) is not Python; blank those lines so the rest parses.
    return "\n".join("" if l.lstrip().startswith(("%", "!")) else l for l in source.splitlines())


def scan(cells: Iterable[tuple]) -> List[Finding]:
    """Scan ``(cell_index, source)`` pairs of student code, in notebook order."""
    aliases: Dict[str, str] = {}
    found: List[Finding] = []
    for index, source in cells:
        try:
            tree = ast.parse(_strip_magics(source))
        except SyntaxError:
            continue  # it will fail when run, like any other syntax error
        s = _Scanner(index, aliases)
        s.visit(tree)
        found.extend(s.found)
    return found


def called_check_names(source: str) -> List[str]:
    """The ``check_*`` / ``fallback`` names a test cell's source reads."""
    try:
        tree = ast.parse(_strip_magics(source))
    except SyntaxError:
        return []
    names: Set[str] = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and CHECK_NAME.match(n.id)}
    return sorted(names)


# --------------------------------------------------------------------------- in-kernel guard

#: Executed silently in the kernel right after it starts. ``{module}`` is a random module name.
GUARD_SETUP = r'''
def _install(modname):
    import builtins, sys, types
    try:
        import torch
        import autograder.checks as _checks
    except Exception as e:  # the notebook will fail the same way; nothing to guard
        return "unavailable: %s: %s" % (type(e).__name__, e)
    watched = {}
    def add(label, owner, attr):
        try:
            watched[label] = (owner, attr, getattr(owner, attr))
        except Exception:
            pass
    for name, mod in list(sys.modules.items()):
        if not isinstance(mod, types.ModuleType):
            continue
        if name.split(".")[0] not in ("autograder", "mhsa_lib"):
            continue
        watched["sys.modules[%s]" % name] = (sys.modules, name, mod)
        for attr, value in list(vars(mod).items()):
            if isinstance(value, (types.FunctionType, type, types.ModuleType)) or callable(value):
                add("%s.%s" % (name, attr), mod, attr)
                if isinstance(value, types.FunctionType):
                    add("%s.%s.__code__" % (name, attr), value, "__code__")
                    add("%s.%s.__defaults__" % (name, attr), value, "__defaults__")
                    add("%s.%s.__kwdefaults__" % (name, attr), value, "__kwdefaults__")
                if isinstance(value, type) and getattr(value, "__module__", "") == name:
                    for k, v in list(vars(value).items()):
                        if not k.startswith("__") or k in ("__init__", "__call__", "__eq__", "__float__"):
                            watched["%s.%s.%s" % (name, attr, k)] = (value.__dict__, k, v)
    for attr in ("allclose", "isclose", "equal", "eq", "ne", "all", "any", "abs", "max", "argmax",
                 "isfinite", "isnan", "isinf", "unravel_index", "randn", "randperm", "rand",
                 "Generator", "tensor", "softmax", "exp"):
        add("torch.%s" % attr, torch, attr)
    for attr in ("allclose", "isclose", "equal", "__eq__", "__float__", "__bool__", "item", "all",
                 "any", "to", "double", "float", "detach", "abs", "max", "sum"):
        add("torch.Tensor.%s" % attr, torch.Tensor, attr)
    add("torch.testing.assert_close", torch.testing, "assert_close")
    for attr in ("float", "int", "bool", "round", "min", "max", "sum", "abs", "all", "any", "len",
                 "isinstance", "callable", "print", "repr", "getattr", "hasattr", "type", "__import__"):
        add("builtins.%s" % attr, builtins, attr)
    genuine = {n: getattr(_checks, n) for n in getattr(_checks, "__all__", []) if hasattr(_checks, n)}
    _missing = object()

    def verify(nonce, names):
        try:
            changed = []
            for label, (owner, attr, value) in watched.items():
                if isinstance(owner, (dict, types.MappingProxyType)):
                    now = owner.get(attr, _missing)
                else:
                    now = getattr(owner, attr, _missing)
                if now is not value:
                    changed.append(label)
            ns = get_ipython().user_ns  # noqa: F821
            for n in names:
                if n in ns and n in genuine and ns[n] is not genuine[n]:
                    changed.append("%s (the name the test cell calls)" % n)
                elif n in ns and n not in genuine:
                    changed.append("%s (not one of the course's checks)" % n)
            if changed:
                return "changed: " + ", ".join(changed[:5]) + (" and %d more" % (len(changed) - 5) if len(changed) > 5 else "")
            return "ok:" + nonce
        except BaseException as e:
            return "error: %s" % type(e).__name__

    guard = types.ModuleType(modname)
    guard.verify = verify
    sys.modules[modname] = guard
    return "installed"

'''


def guard_setup_code(modname: str) -> str:
    """One statement that installs the guard without leaving a name in the user's namespace;
    afterwards ``sys.modules[modname]`` exists if and only if the guard is active."""
    return (
        f"exec(compile({(GUARD_SETUP + f'_install({modname!r})')!r}, '<grading guard>', 'exec'), "
        "{'get_ipython': get_ipython, '__builtins__': __builtins__})"
    )


def guard_expression(modname: str, nonce: str, names: List[str]) -> str:
    return f"__import__('sys').modules[{modname!r}].verify({nonce!r}, {names!r})"
