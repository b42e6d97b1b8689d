"""What a step check finds: sub-parts with partial credit, a diagnosis, notes, and the report
printed under the learner's test cell.

A :class:`CheckResult` carries everything about one run of one check (its notes too): nothing
about a check is kept anywhere else.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

PASS, FAIL = "✓", "✗"


@dataclass
class Part:
    """One sub-part of a step check, worth ``weight`` of the step's points when it holds."""

    name: str
    weight: float
    passed: bool
    detail: str = ""


@dataclass
class CheckResult:
    """What a step check found: points, the sub-parts, and a diagnosis if one applies."""

    step: str
    max_points: float
    parts: List[Part] = field(default_factory=list)
    diagnosis: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    zero_reason: Optional[str] = None  # set when the step earns nothing whatever the parts say
    seed: Optional[int] = None
    hidden: bool = False

    def add(self, name: str, weight: float, passed: bool, detail: str = "") -> bool:
        self.parts.append(Part(name, weight, bool(passed), detail))
        return bool(passed)

    def diagnose(self, message: str) -> None:
        if message not in self.diagnosis:
            self.diagnosis.append(message)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    @property
    def not_started(self) -> bool:
        """The learner's object is still the release's stub: nothing of the step ran."""
        return bool(self.zero_reason and "not implemented yet" in self.zero_reason)

    @property
    def passed(self) -> bool:
        return self.zero_reason is None and all(p.passed for p in self.parts) and bool(self.parts)

    @property
    def points(self) -> float:
        """Partial credit: the share of the parts' weight that holds, scaled to the step's points."""
        if self.zero_reason is not None or not self.parts:
            return 0.0
        total = sum(p.weight for p in self.parts)
        got = sum(p.weight for p in self.parts if p.passed)
        # A plain float, rounded so nbgrader reads it back exactly, never above the maximum.
        return float(min(self.max_points, round(self.max_points * got / total, 2)))

    def report(self) -> str:
        head = f"{self.step}: {_fmt_points(self.points)} / {_fmt_points(self.max_points)} points"
        if self.hidden:
            # The public report is printed just above this one: list only what fails.
            head += " with the hidden cases drawn at grading time"
            if self.passed:
                return head + ": all checks pass."
        lines = [head]
        if self.zero_reason:
            lines.append(f"  {FAIL} {self.zero_reason}")
        for p in self.parts:
            if self.hidden and p.passed:
                continue
            mark = PASS if p.passed else FAIL
            lines.append(f"  {mark} {p.name}" + (f": {p.detail}" if p.detail else ""))
        for d in self.diagnosis:
            lines.append(wrap("  Diagnosis: " + d, indent="    "))
        notes = [] if self.not_started else self.notes  # nothing of the step ran: no need to say
        for n in notes:
            lines.append(wrap("  Note: " + n, indent="    "))
        if self.seed is not None and not self.passed and len(self.parts) > 1:
            again = f"hidden=True, seed={self.seed}" if self.hidden else f"seed={self.seed}"
            lines.append(f"  (random cases drawn with seed={self.seed}; pass {again} to the check to see them again)")
        if self.passed:
            lines.append("  All checks pass.")
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (JSON), e.g. for a grading run's result file."""
        return {
            "step": self.step, "max_points": self.max_points, "points": self.points, "passed": self.passed,
            "parts": [vars(p).copy() for p in self.parts], "diagnosis": list(self.diagnosis),
            "notes": list(self.notes), "zero_reason": self.zero_reason, "seed": self.seed, "hidden": self.hidden,
        }


def _fmt_points(x: float) -> str:
    return f"{x:g}"


def wrap(text: str, indent: str, width: int = 100) -> str:
    return textwrap.fill(text, width=width, subsequent_indent=indent, break_long_words=False)
