"""A known mistake: a runnable wrong implementation, written as learners write it, with the
advice the learner reads when their output matches it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Iterable, Sequence

#: The mistake gives the same outputs as a correct answer (e.g. it calls the library): no
#: output can name it, another probe (forbidden calls, timing, ...) catches it.
SAME_OUTPUT = "same-output"


@dataclass(frozen=True)
class Mistake:
    """``id``: a stable name; ``fn``: the wrong implementation; ``advice``: what the diagnosis says
    (may hold ``{placeholders}`` that the check fills); ``flags``: facts the checks use."""

    id: str
    fn: Callable
    advice: str = ""
    flags: FrozenSet[str] = field(default_factory=frozenset)

    @property
    def by_output(self) -> bool:
        """Can the mistake be recognised from outputs alone?"""
        return SAME_OUTPUT not in self.flags


def mistake(id: str, fn: Callable, advice: str = "", flags: Iterable[str] = ()) -> Mistake:
    return Mistake(id, fn, advice, frozenset(flags))




def catalogue(*lists: Sequence[Mistake]) -> Dict[str, Mistake]:
    """Every mistake of ``lists`` by id (an id used twice must be the same mistake)."""
    found: Dict[str, Mistake] = {}
    for mistakes in lists:
        for m in mistakes:
            if m.id in found and found[m.id] is not m:
                raise ValueError(f"mistake id {m.id!r} is used for two different mistakes")
            found[m.id] = m
    return found
