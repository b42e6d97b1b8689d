"""Feedback for each student and assignment: ``python -m autograder feedback``.

Writes ``COURSE/feedback/STUDENT/ASSIGNMENT/ASSIGNMENT.html`` (nbgrader's feedback location, so
``nbgrader release_feedback`` hands it out) and ``summary.txt`` next to it, plus
``COURSE/feedback/summary.txt`` for the whole class (one line per submission, for pipelines).

The report shows each step's points (from the gradebook, so a grader's manual override in
formgrader shows), the report the check printed, and a "yours vs expected" picture where the
grader drew one. It never shows a test cell's source: hidden tests' code does not reach the
student, nor do the seeds of the hidden cases (the line naming them is left out).
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import course as course_mod
from .worker import STATUSES

#: Lines of a check's report that would let a student recreate the hidden cases.
_SEED_LINE = re.compile(r"^\s*\(random cases drawn with seed=.*\)\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def clean_message(text: str) -> str:
    lines = [l for l in _ANSI.sub("", text or "").splitlines() if not (_SEED_LINE.match(l) and "hidden" in l)]
    return "\n".join(lines).strip()


def gradebook_scores(course: Path) -> Dict[Tuple[str, str], Dict[str, Tuple[Optional[float], float]]]:
    """(student, assignment) -> step -> (score, max score), as the gradebook has them (a manual
    score wins over the autograder's, as in formgrader)."""
    from nbgrader.api import Gradebook

    out: Dict[Tuple[str, str], Dict[str, Tuple[Optional[float], float]]] = {}
    with Gradebook(course_mod.db_url(course)) as gb:
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                steps: Dict[str, Tuple[Optional[float], float]] = {}
                for snb in sub.notebooks:
                    for g in snb.grades:
                        steps[g.name] = (g.score, g.max_score)
                out[(sub.student.id, assignment.name)] = steps
    return out


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
"""


def render_html(result: Dict[str, Any], scores: Dict[str, Tuple[Optional[float], float]]) -> str:
    e = html.escape
    student, assignment = result["student"], result["assignment"]
    rows, details = [], []
    total = top = 0.0
    for step in result.get("steps", []):
        sid = step["id"]
        score, max_score = scores.get(sid, (step["points"], step["max_points"]))
        score = float(score or 0.0)
        total += score
        top += float(max_score)
        good = score >= float(max_score) - 1e-9
        rows.append(f"<tr><td><a href='#{e(sid)}'>{e(sid)}</a></td><td class='{'ok' if good else 'bad'}'>"
                    f"{score:g} / {float(max_score):g}</td></tr>")
        body = f"<h3 id='{e(sid)}'>{e(sid)}: {score:g} / {float(max_score):g}</h3>"
        msg = clean_message(step.get("message", ""))
        body += f"<pre>{e(msg) if msg else 'no message'}</pre>"
        if step.get("picture"):
            body += (f"<p>Yours (left), the expected values (middle) and the difference (right), on a small "
                     f"public example:</p><img alt='yours vs expected for {e(sid)}' "
                     f"src='data:image/png;base64,{step['picture']}'>")
        details.append(body)
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
<p>Feedback for <b>{e(student)}</b>, graded {e(result.get('graded_at', ''))}.</p>
<h2>Score: {total:g} / {top:g}</h2>
{status_html}
{f'<p>Notes from the grader:</p><ul>{notes}</ul>' if notes else ''}
<table><tr><th>step</th><th>points</th></tr>{''.join(rows)}</table>
{''.join(details)}
</body></html>
"""


def render_text(result: Dict[str, Any], scores: Dict[str, Tuple[Optional[float], float]]) -> str:
    lines = [f"student: {result['student']}", f"assignment: {result['assignment']}",
             f"status: {result.get('status')}", f"message: {clean_message(result.get('message', ''))}"]
    total = top = 0.0
    for step in result.get("steps", []):
        score, max_score = scores.get(step["id"], (step["points"], step["max_points"]))
        score = float(score or 0.0)
        total += score
        top += float(max_score)
        first = clean_message(step.get("message", "")).splitlines()
        lines.append(f"step {step['id']}: {score:g} / {float(max_score):g}" + (f"  {first[0]}" if first else ""))
    lines.insert(2, f"score: {total:g} / {top:g}")
    for n in result.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"


def write_feedback(course: Path, students: Optional[List[str]] = None) -> List[Path]:
    course = Path(course)
    scores = gradebook_scores(course)
    written: List[Path] = []
    summary = []
    for result in load_results(course):
        student, assignment = result["student"], result["assignment"]
        if students and student not in students:
            continue
        s = scores.get((student, assignment), {})
        folder = course / "feedback" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        page = folder / f"{assignment}.html"
        page.write_text(render_html(result, s), encoding="utf-8")
        text = render_text(result, s)
        (folder / "summary.txt").write_text(text, encoding="utf-8")
        written.append(page)
        score_line = [l for l in text.splitlines() if l.startswith("score: ")][0][len("score: "):]
        summary.append(f"{student}\t{assignment}\t{score_line}\t{result.get('status')}\t"
                       f"{clean_message(result.get('message', '')).splitlines()[0] if result.get('message') else ''}")
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
    pages = write_feedback(args.course, args.student)
    if not pages:
        print("feedback: nothing graded yet; run `python -m autograder autograde` first")
        return 0
    print(f"feedback: wrote {len(pages)} report(s) under {Path(args.course) / 'feedback'} "
          f"(and feedback/summary.txt)")
    return 0
