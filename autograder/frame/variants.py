"""Structural variants of a step: the space of plausible ways to get it wrong, generated.

A step's check describes its answer as a few independent *axes* (which axis the softmax
normalises, what the scores are scaled by, what a mask is filled with, which weights a head
uses, ...). Each axis has the correct choice and the wrong ones learners make, each wrong one
with a phrase in the learner's terms. :func:`generate` builds every combination that changes at
most ``max_changed`` axes, simplest first, as :class:`~.mistakes.Mistake` objects, so the one
search of :mod:`.diagnosis` matches them against the learner's observed outputs like the
hand-written mutants. A new wrong choice of a listed kind is one more entry in an axis: the
diagnosis code does not change.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from .mistakes import Mistake


@dataclass(frozen=True)
class Axis:
    """One structural choice of a step: ``correct``, and ``wrong`` choices, each mapped to the
    phrase that tells a learner what they did (may hold ``{placeholders}`` the check fills)."""

    name: str
    correct: Any
    wrong: Mapping[Any, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.correct in self.wrong:
            raise ValueError(f"axis {self.name!r}: the correct choice {self.correct!r} is also listed as wrong")


def generate(axes: Sequence[Axis], build: Callable[[Dict[str, Any]], Callable], *, max_changed: int = 2,
             prefix: str = "", joiner: str = "; and ", valid: Optional[Callable[[Dict[str, Any]], bool]] = None,
             ) -> Iterator[Mistake]:
    """Every variant that changes 1 to ``max_changed`` axes from the correct answer, fewest
    changes first, as a Mistake: ``id`` names the changed choices (``"scale=d,fill=0"``), ``fn`` is
    ``build(choices)`` (a function with the step's own signature, built from the full choice
    dict), ``advice`` joins the phrases of the changed axes. ``valid(choices)`` may drop
    combinations that make no sense together."""
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"axes must have distinct names, got {names}")
    correct = {a.name: a.correct for a in axes}
    for k in range(1, max_changed + 1):
        for chosen in itertools.combinations(axes, k):
            for values in itertools.product(*(list(a.wrong) for a in chosen)):
                choices = dict(correct)
                choices.update({a.name: v for a, v in zip(chosen, values)})
                if valid is not None and not valid(choices):
                    continue
                vid = ",".join(f"{a.name}={v}" for a, v in zip(chosen, values))
                advice = joiner.join(a.wrong[v] for a, v in zip(chosen, values))
                yield Mistake(vid, build(choices), prefix + advice[:1].upper() + advice[1:])


def count(axes: Sequence[Axis], max_changed: int = 2) -> int:
    """How many variants :func:`generate` yields before ``valid`` filtering (for speed budgets)."""
    total = 0
    for k in range(1, max_changed + 1):
        for chosen in itertools.combinations(axes, k):
            n = 1
            for a in chosen:
                n *= len(a.wrong)
            total += n
    return total


def as_list(axes: Sequence[Axis], build: Callable[[Dict[str, Any]], Callable], **kw) -> List[Mistake]:
    return list(generate(axes, build, **kw))
