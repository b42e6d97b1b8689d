"""Feedback for each student and assignment: ``python -m autograder feedback``.

Writes ``COURSE/feedback/STUDENT/ASSIGNMENT/ASSIGNMENT.html`` and ``summary.txt`` next to it,
plus ``COURSE/feedback/summary.txt`` for the whole class (one line per submission, for
pipelines). Each folder also gets the ``timestamp.txt`` and ``submission_secret.txt`` that
``nbgrader release_feedback`` reads: the submission's own where it came through nbgrader's
exchange (so the student's ``nbgrader fetch_feedback`` finds the page), else a timestamp from the
submitted files and a secret made once and kept.

The gradebook is the source of truth for points: every graded cell it has (answers graded by
hand included) with the instructor's score where one was given in formgrader, the total being the
gradebook's. A step whose automatic score an instructor changed says so, next to what the check
gave. The report shows the report the check printed and a "yours vs expected" picture where the
grader drew one, and the instructor's comments. It never shows a test cell's source: hidden tests'
code does not reach the student, nor do the seeds of the hidden cases (the line naming them is
left out).
"""

from __future__ import annotations

import html
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import course as course_mod
from .worker import STATUSES

#: Lines of a check's report that would let a student recreate the hidden cases.
_SEED_LINE = re.compile(r"^\s*\(random cases drawn with seed=.*\)\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: What a submission's own timestamp.txt / submission_secret.txt may hold to be passed on (they
#: are the student's files: anything else is replaced, and links are never followed).
_TIMESTAMP = re.compile(r"^[0-9A-Za-z :.,+\-]{1,64}$")
_SECRET = re.compile(r"^[0-9A-Za-z_\-]{1,256}$")
#: nbgrader's timestamp format (ExchangeSubmit.timestamp_format), in UTC.
_TS_FORMAT = "%Y-%m-%d %H:%M:%S.000000 UTC"


def clean_message(text: str) -> str:
    lines = [l for l in _ANSI.sub("", text or "").splitlines() if not (_SEED_LINE.match(l) and "hidden" in l)]
    return "\n".join(lines).strip()


@dataclass
class Grade:
    """One graded cell of a submission, as the gradebook has it."""

    name: str
    max_score: float
    auto: Optional[float] = None  # what the automatic grading gave (None: graded by hand only)
    manual: Optional[float] = None  # what an instructor gave in formgrader (None: not touched)

    @property
    def score(self) -> Optional[float]:
        return self.manual if self.manual is not None else self.auto


@dataclass
class Entry:
    """A submission in the gradebook: its grades and the instructor's comments, by cell name."""

    grades: Dict[str, Grade] = field(default_factory=dict)
    comments: Dict[str, str] = field(default_factory=dict)


def gradebook_entries(course: Path) -> Dict[Tuple[str, str], Entry]:
    """(student, assignment) -> :class:`Entry`, for every submission of the gradebook."""
    from nbgrader.api import Gradebook

    out: Dict[Tuple[str, str], Entry] = {}
    with Gradebook(course_mod.db_url(course)) as gb:
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                entry = Entry()
                for snb in sub.notebooks:
                    for g in snb.grades:
                        entry.grades[g.name] = Grade(g.name, float(g.max_score or 0.0), g.auto_score, g.manual_score)
                    for c in snb.comments:
                        text = (c.manual_comment or "").strip()
                        if text:
                            entry.comments[c.name] = text
                out[(sub.student.id, assignment.name)] = entry
    return out


@dataclass
class Line:
    """One graded cell as the feedback shows it."""

    id: str
    score: float
    max_score: float
    auto: Optional[float]  # the automatic check's points (None where there is none)
    by_instructor: bool  # the instructor set the score
    pending: bool = False  # graded by hand, not graded yet
    step: Optional[Dict[str, Any]] = None  # the check's result, where the grader ran one

    @property
    def note(self) -> str:
        if self.by_instructor:
            text = f"graded by your instructor: {self.score:g} / {self.max_score:g}"
            if self.auto is not None:
                text += f"; the automatic check gave {self.auto:g} / {self.max_score:g}"
            return text
        if self.pending:
            return "not graded yet: your instructor grades this by hand"
        return ""


def feedback_lines(result: Dict[str, Any], entry: Optional[Entry], order: Optional[List[str]] = None) -> List[Line]:
    """The lines of one submission's feedback: every step the grader ran and every other graded
    cell of the gradebook, points from the gradebook (an instructor's score wins)."""
    grades = entry.grades if entry else {}
    lines: Dict[str, Line] = {}
    for step in result.get("steps", []):
        sid = str(step["id"])
        g = grades.get(sid)
        auto = float(step.get("points") or 0.0)
        top = float(step.get("max_points") or 0.0)
        if g is not None:
            top = g.max_score
            auto = float(g.auto) if g.auto is not None else auto
        if g is not None and g.manual is not None:
            lines[sid] = Line(sid, float(g.manual), top, auto, True, step=step)
        else:
            lines[sid] = Line(sid, auto, top, auto, False, step=step)
    for name, g in grades.items():
        if name in lines:
            continue
        if g.manual is not None:
            lines[name] = Line(name, float(g.manual), g.max_score, g.auto, True)
        elif g.auto is not None:
            lines[name] = Line(name, float(g.auto), g.max_score, g.auto, False)
        else:
            lines[name] = Line(name, 0.0, g.max_score, None, False, pending=True)
    known = [n for n in dict.fromkeys(order or []) if n in lines]
    return [lines[n] for n in known] + [lines[n] for n in lines if n not in known]


def totals(lines: List[Line]) -> Tuple[float, float]:
    return sum(l.score for l in lines), sum(l.max_score for l in lines)


def load_results(course: Path) -> List[Dict[str, Any]]:
    results = []
    for p in sorted((Path(course) / "grading").glob("*/*.json")):
        try:
            results.append(json.loads(p.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return results


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ccc; padding: .3rem .7rem; text-align: left; }
.ok { color: #186a1e; } .bad { color: #a11; }
pre { background: #f6f6f6; padding: .7rem; white-space: pre-wrap; }
.status { padding: .5rem .8rem; background: #fff4d6; border-left: 4px solid #e0a800; }
.instructor { padding: .3rem .8rem; background: #e8f1fb; border-left: 4px solid #2a6fb0; }
"""


def render_html(result: Dict[str, Any], lines: List[Line], comments: Optional[Dict[str, str]] = None) -> str:
    e = html.escape
    student, assignment = result["student"], result["assignment"]
    rows, details = [], []
    for line in lines:
        sid = e(line.id)
        good = line.score >= line.max_score - 1e-9 and not line.pending
        note = f"<br><small>{e(line.note)}</small>" if line.note else ""
        rows.append(f"<tr><td><a href='#{sid}'>{sid}</a></td><td class='{'ok' if good else 'bad'}'>"
                    f"{line.score:g} / {line.max_score:g}{note}</td></tr>")
        body = f"<h3 id='{sid}'>{sid}: {line.score:g} / {line.max_score:g}</h3>"
        if line.note:
            body += f"<p class='instructor'>{e(line.note[0].upper() + line.note[1:])}.</p>"
        if line.step is not None:
            msg = clean_message(line.step.get("message", ""))
            if line.by_instructor:
                body += "<p>The automatic check's report:</p>"
            body += f"<pre>{e(msg) if msg else 'no message'}</pre>"
            if line.step.get("picture"):
                body += (f"<p>Yours (left), the expected values (middle) and the difference (right), on a small "
                         f"public example:</p><img alt='yours vs expected for {sid}' "
                         f"src='data:image/png;base64,{e(str(line.step['picture']))}'>")
        if comments and line.id in comments:
            body += f"<p>Comment from your instructor:</p><pre>{e(comments[line.id])}</pre>"
        details.append(body)
    other = {k: v for k, v in (comments or {}).items() if k not in {l.id for l in lines}}
    if other:
        details.append("<h3>Comments from your instructor</h3>" + "".join(
            f"<p><b>{e(k)}</b></p><pre>{e(v)}</pre>" for k, v in sorted(other.items())))
    total, top = totals(lines)
    changed = sum(1 for l in lines if l.by_instructor)
    changed_html = (f"<p>Your instructor graded {changed} step(s) by hand; the score counts their points.</p>"
                    if changed else "")
    status = result.get("status", "")
    status_html = ""
    if status != "ok":
        status_html = (f"<p class='status'><b>{e(status)}</b>: {e(STATUSES.get(status, ''))}<br>"
                       f"{e(clean_message(result.get('message', '')))}</p>")
    notes = "".join(f"<li>{e(n)}</li>" for n in result.get("notes", []))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{e(assignment)}: feedback for {e(student)}</title>
<style>{_CSS}</style></head><body>
<h1>{e(assignment)}</h1>
<p>Feedback for <b>{e(student)}</b>, graded {e(str(result.get('graded_at', '')))}.</p>
<h2>Score: {total:g} / {top:g}</h2>
{changed_html}
{status_html}
{f'<p>Notes from the grader:</p><ul>{notes}</ul>' if notes else ''}
<table><tr><th>step</th><th>points</th></tr>{''.join(rows)}</table>
{''.join(details)}
</body></html>
"""


def render_text(result: Dict[str, Any], lines: List[Line], comments: Optional[Dict[str, str]] = None) -> str:
    total, top = totals(lines)
    out = [f"student: {result['student']}", f"assignment: {result['assignment']}",
           f"score: {total:g} / {top:g}",
           f"status: {result.get('status')}", f"message: {clean_message(result.get('message', ''))}"]
    for line in lines:
        first = clean_message(line.step.get("message", "")).splitlines() if line.step else []
        text = f"step {line.id}: {line.score:g} / {line.max_score:g}"
        if line.note:
            text += f" ({line.note})"
        out.append(text + (f"  {first[0]}" if first else ""))
    for name, comment in sorted((comments or {}).items()):
        out.append(f"comment on {name}: " + " / ".join(comment.splitlines()))
    for n in result.get("notes", []):
        out.append(f"note: {n}")
    return "\n".join(out) + "\n"


def _own_file(path: Path, pattern: "re.Pattern[str]") -> Optional[str]:
    """A small text file of a submission, if it is a plain file (not a link) matching ``pattern``."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1024:
            return None
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text if pattern.match(text) else None


def exchange_files(course: Path, student: str, assignment: str, folder: Path) -> None:
    """Write ``timestamp.txt`` and ``submission_secret.txt`` into a feedback folder, as
    ``nbgrader release_feedback`` needs them: the submission's own (from ``submitted/``, else
    ``autograded/``), else those the folder already has, else new ones (the timestamp of the
    submitted files, a fresh secret)."""
    course = Path(course)
    where = [course / "submitted" / student / assignment, course / "autograded" / student / assignment, folder]
    for name, pattern in (("timestamp.txt", _TIMESTAMP), ("submission_secret.txt", _SECRET)):
        text = next((t for t in (_own_file(d / name, pattern) for d in where) if t), None)
        if text is None and name == "timestamp.txt":
            sub = where[0]
            try:
                mtime = max((p.lstat().st_mtime for p in sub.iterdir()), default=sub.lstat().st_mtime)
            except OSError:
                mtime = time.time()
            text = time.strftime(_TS_FORMAT, time.gmtime(mtime))
        elif text is None:
            text = secrets.token_hex(64)
        target = folder / name
        if target.is_symlink():
            target.unlink()
        target.write_text(text, encoding="utf-8")


def write_feedback(course: Path, students: Optional[List[str]] = None) -> List[Path]:
    course = Path(course)
    entries = gradebook_entries(course)
    orders: Dict[str, List[str]] = {}
    written: List[Path] = []
    summary = []
    for result in load_results(course):
        student, assignment = result["student"], result["assignment"]
        if students and student not in students:
            continue
        entry = entries.get((student, assignment))
        if assignment not in orders:
            orders[assignment] = course_mod.grade_order(course, assignment)
        lines = feedback_lines(result, entry, orders[assignment])
        comments = entry.comments if entry else {}
        folder = course / "feedback" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        page = folder / f"{assignment}.html"
        page.write_text(render_html(result, lines, comments), encoding="utf-8")
        text = render_text(result, lines, comments)
        (folder / "summary.txt").write_text(text, encoding="utf-8")
        exchange_files(course, student, assignment, folder)
        written.append(page)
        total, top = totals(lines)
        message = clean_message(result.get("message", "")).splitlines()
        summary.append(f"{student}\t{assignment}\t{total:g} / {top:g}\t{result.get('status')}\t"
                       f"{message[0] if message else ''}")
    if summary:
        (course / "feedback").mkdir(exist_ok=True)
        (course / "feedback" / "summary.txt").write_text(
            "student\tassignment\tscore\tstatus\tmessage\n" + "\n".join(summary) + "\n", encoding="utf-8")
    return written


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    course_mod.add_course_argument(parser)
    parser.add_argument("--student", action="append", metavar="ID", help="only this student (repeatable)")


def main(args) -> int:
    problem = course_mod.check_course(args.course)
    if problem:
        print(f"feedback: {problem}", file=sys.stderr)
        return 1
    warning = course_mod.config_warning(args.course)
    if warning:
        print(f"feedback: warning: {warning}", file=sys.stderr)
    pages = write_feedback(args.course, args.student)
    if not pages:
        print("feedback: nothing graded yet; run `python -m autograder autograde` first")
        return 0
    print(f"feedback: wrote {len(pages)} report(s) under {Path(args.course) / 'feedback'} "
          f"(and feedback/summary.txt)")
    return 0
