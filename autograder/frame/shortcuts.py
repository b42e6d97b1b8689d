"""Detecting forbidden shortcuts: a step that asks the learner to build something themselves
gives no points to an answer that calls torch's or the course library's version of it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterable, List, Sequence, Union

from torch.overrides import TorchFunctionMode

import mhsa_lib

from .calls import observe, run_safely
from .errors import LearnerError

_LIB_DIR = str(Path(mhsa_lib.__file__).resolve().parent)


class _TorchCalls(TorchFunctionMode):
    """Records the names of the torch functions called (at the outermost level)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def find_shortcuts(
    fn: Callable,
    args: Sequence[Any],
    torch_names: Iterable[str],
    forbid_library: Union[bool, Sequence[str]] = True,
) -> List[str]:
    """Run ``fn(*args)`` once and list the forbidden things it used (one observation).

    ``torch_names`` are torch function names (``"softmax"``, ``"scaled_dot_product_attention"``)
    seen through a TorchFunctionMode, so aliases and methods (``x.softmax``) are caught too.
    ``forbid_library``: True forbids any call into ``mhsa_lib``; a list of names forbids only
    those functions and classes (later steps may use the library's earlier steps).
    """
    names = tuple(sorted(set(torch_names)))
    library: Union[bool, tuple] = forbid_library if isinstance(forbid_library, bool) else tuple(forbid_library)
    try:
        return list(observe("shortcuts", _find_shortcuts, fn, tuple(args), names, library))
    except LearnerError:
        return []


def _find_shortcuts(fn: Callable, args: tuple, torch_names: tuple, forbid_library: Union[bool, tuple]) -> List[str]:
    used_lib: List[str] = []
    prefixes = None if forbid_library is True else tuple(forbid_library or ())

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(_LIB_DIR):
            name = getattr(frame.f_code, "co_qualname", None)  # Python 3.11+
            if name is None:
                owner = frame.f_locals.get("self")
                name = f"{type(owner).__name__}.{frame.f_code.co_name}" if owner is not None else frame.f_code.co_name
            if prefixes is None or name.split(".")[0] in prefixes:
                used_lib.append(name)

    mode = _TorchCalls()
    previous = sys.getprofile()
    try:
        with mode:
            if forbid_library:
                sys.setprofile(profiler)
            try:
                run_safely(fn, args)
            except LearnerError:
                pass
            finally:
                if forbid_library:
                    sys.setprofile(previous)
    except Exception:  # never let the probe itself break a check
        pass
    found = sorted(n for n in set(torch_names) if n in mode.names)
    labels = [f"torch's {n}" for n in found]
    if used_lib:
        labels.append(f"mhsa_lib ({used_lib[0]})")
    return labels
