"""What a step check finds: sub-parts with partial credit, a diagnosis, notes, and the report
printed under the learner's test cell.

A :class:`CheckResult` carries everything about one run of one check (its notes too): nothing
about a check is kept anywhere else.

The report is plain text, wrapped at word boundaries, the same in a terminal, in ``./course
check`` and in nbgrader. In a notebook whose front end renders HTML, :func:`show` displays it as
one output with both forms: the same plain text, and HTML with the ✓ / ✗ marks in colour that
wraps to the width of the page (and, for a failed step whose result is a map, the "yours vs
expected" picture right under it).
"""

from __future__ import annotations

import base64
import html
import os
import sys
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
            lines.append(wrap(f"  {FAIL} {self.zero_reason}", indent="    "))
        for p in self.parts:
            if self.hidden and p.passed:
                continue
            mark = PASS if p.passed else FAIL
            lines.append(wrap(f"  {mark} {p.name}" + (f": {p.detail}" if p.detail else ""), indent="    "))
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
    """``text`` wrapped at word boundaries to ``width`` columns, continuation lines indented by
    ``indent``; each of its own lines is wrapped on its own (a multi-line detail keeps its lines)."""
    return "\n".join(
        textwrap.fill(line, width=width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
        if len(line) > width else line
        for line in text.split("\n")
    )


# --------------------------------------------------------------------------- display

#: Set (to anything) in a kernel's environment to print reports as plain text even where a front
#: end could render HTML (``./course check`` reads the test cells' stdout).
PLAIN_ENV = "AUTOGRADER_PLAIN_REPORT"

_COLOURS = {PASS: "#1a7f37", FAIL: "#cf222e"}


def report_html(text: str) -> str:
    """The HTML form of a plain-text report: the same lines, ✓ in green and ✗ in red, the first
    line and "Diagnosis:" in bold, in a block that keeps the indentation and wraps long lines at
    word boundaries (``white-space: pre-wrap``)."""
    out = []
    for i, line in enumerate(text.split("\n")):
        body = html.escape(line)
        stripped = line.lstrip()
        if i == 0:
            body = f"<b>{body}</b>"
        elif stripped[:1] in _COLOURS:
            lead = html.escape(line[: len(line) - len(stripped)])
            mark = stripped[0]
            body = f"{lead}<span style=\"color: {_COLOURS[mark]}; font-weight: bold\">{mark}</span>{html.escape(stripped[1:])}"
        elif stripped.startswith("Diagnosis:"):
            lead = html.escape(line[: len(line) - len(stripped)])
            body = f"{lead}<b>Diagnosis:</b>{html.escape(stripped[len('Diagnosis:'):])}"
        out.append(body)
    return ("<pre style=\"white-space: pre-wrap; word-break: normal; overflow-wrap: anywhere; margin: 0\">"
            + "\n".join(out) + "</pre>")


def html_front_end() -> bool:
    """Whether this process is a Jupyter kernel whose front end can render HTML (and
    :data:`PLAIN_ENV` is not set): a terminal, a script or pytest get plain text."""
    if os.environ.get(PLAIN_ENV):
        return False
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def show(result: CheckResult, picture: bytes = b"") -> None:
    """Show ``result``'s report under the test cell: printed as plain text, or, in a notebook
    whose front end renders HTML, displayed with both a text/plain and a text/html form (the
    plain text the same as printed), followed by ``picture`` (PNG bytes) if any. Nothing goes
    to stderr, and the cell's value (the points) is untouched."""
    text = result.report()
    if not html_front_end():
        print(text)
        return
    try:
        from IPython.display import display

        display({"text/plain": text, "text/html": report_html(text)}, raw=True)
        if picture:
            display({"image/png": base64.b64encode(picture).decode("ascii"),
                     "text/plain": f"<{result.step}: yours vs expected on the public example>"}, raw=True)
    except Exception:  # noqa: BLE001 - a front end that cannot display: plain text, as everywhere else
        print(text)
