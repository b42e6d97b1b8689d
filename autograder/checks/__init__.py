"""The course's steps. Each module declares the steps of one ``mhsa_lib`` module (same names)
in the step registry (:mod:`autograder.frame.registry`); the warm-ups, the debugging repairs
and the checkpoints have modules of their own. Importing this package registers every step.

Every public name here comes from the registry: each step's ``check_*`` function, plus
``check_concept`` (the checkpoints) and ``fallback``.
"""

import sys

from ..frame.fallback import fallback
from ..frame.registry import steps as _steps
from . import (
    attention,
    block,
    concepts,
    cross,
    debugging,
    heads,
    interop,
    kv_cache,
    model,
    modern,
    multihead,
    positional,
    tiled,
    tradeoff,
    warmups,
)
from .concepts import check_concept

_MODULES = (attention, block, concepts, cross, debugging, heads, interop, kv_cache, model, modern, multihead,
            positional, tiled, tradeoff, warmups)

_checks = {s.check_name: getattr(sys.modules[s.check_module], s.check_name)
           for s in _steps() if s.kind != "checkpoint"}
globals().update(_checks)

__all__ = sorted(_checks) + ["check_concept", "fallback"]


def steps_by_name() -> dict:
    """step name (a checkpoint's question id) -> its registered Step."""
    return {s.name: s for s in _steps()}


def steps_with_pictures() -> dict:
    """check name -> the "yours vs expected" picture code of every step that declares one."""
    return {s.check_name: s.picture for s in _steps() if s.picture}
