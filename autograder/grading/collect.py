"""Collect submissions into ``COURSE/submitted/STUDENT/ASSIGNMENT/``: ``python -m autograder collect SRC``.

``SRC`` is one of

* a folder in nbgrader's layout, ``SRC/STUDENT/ASSIGNMENT/files``;
* a flat folder or a ``.zip`` as an LMS exports them, one file per student and attempt, named
  as nbgrader's ``zip_collect`` expects: by default ``[PREFIX_]STUDENT_attempt_TIMESTAMP_FILE``
  (Blackboard's convention; ``--regex`` takes any pattern with the groups ``student_id`` and
  ``file_id``, and optionally ``timestamp`` and ``assignment``).

The assignment of a flat file is ``--assignment``, or the ``assignment`` group, or the course
assignment whose name starts the file's name. A student's notebook is stored as
``ASSIGNMENT.ipynb`` whatever the LMS called it; of several attempts the latest wins. Everything
that cannot be matched to a student and an assignment is listed, never dropped in silence.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import course as course_mod

DEFAULT_REGEX = r"^(?:.*_)?(?P<student_id>[A-Za-z0-9.\-]+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.+)$"
#: A zip may not unpack to more than this (a zip bomb is reported, not unpacked).
MAX_UNZIPPED_BYTES = 2 * 2**30
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class CollectReport:
    collected: Dict[Tuple[str, str], List[str]] = field(default_factory=dict)  # (student, assignment) -> files
    unmatched: List[Tuple[str, str]] = field(default_factory=list)  # (file, why)
    notes: List[str] = field(default_factory=list)


def _timestamp(text: Optional[str]) -> Optional[str]:
    if not text:
        return None
    parts = [p for p in re.split(r"[^0-9]+", text) if p]
    if len(parts) >= 6 and len(parts[0]) == 4:
        y, mo, d, h, mi, s = parts[:6]
        return f"{y}-{mo}-{d} {h}:{mi}:{s}"
    if len(parts) == 1 and len(parts[0]) == 14:  # 20240115103000
        p = parts[0]
        return f"{p[:4]}-{p[4:6]}-{p[6:8]} {p[8:10]}:{p[10:12]}:{p[12:14]}"
    return None


def _match_assignment(file_id: str, names: List[str]) -> Optional[str]:
    stem = Path(file_id).name
    hits = [n for n in names if stem == f"{n}.ipynb" or stem.startswith(n)]
    return max(hits, key=len) if hits else None


def _safe_unzip(zpath: Path, dest: Path, report: CollectReport) -> None:
    with zipfile.ZipFile(zpath) as z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        total = sum(i.file_size for i in infos)
        if total > MAX_UNZIPPED_BYTES:
            raise ValueError(f"{zpath.name} would unpack to {total / 2**30:.1f} GiB; refused")
        for info in infos:
            name = info.filename
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or "__MACOSX" in parts:
                report.unmatched.append((name, "unsafe or system path in the zip, not unpacked"))
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def _is_nbgrader_layout(src: Path, names: List[str]) -> bool:
    for sdir in src.iterdir():
        if sdir.is_dir() and any((sdir / n).is_dir() for n in names):
            return True
    return False


def collect(course: Path, src: Path, assignment: Optional[str] = None, regex: str = DEFAULT_REGEX,
            dry_run: bool = False) -> CollectReport:
    course = Path(course)
    src = Path(src)
    names = course_mod.assignments(course)
    if not names:
        raise ValueError(f"{course} has no assignments; run `python -m autograder build --course {course}` first")
    if assignment and assignment not in names:
        raise ValueError(f"no assignment {assignment!r} in {course} (known: {', '.join(names)})")
    report = CollectReport()
    with tempfile.TemporaryDirectory(prefix="mhsa_collect_") as tmp:
        if src.is_file() and zipfile.is_zipfile(src):
            root = Path(tmp) / "zip"
            _safe_unzip(src, root, report)
        elif src.is_dir():
            root = src
        else:
            raise ValueError(f"{src}: neither a folder nor a zip file")
        if _is_nbgrader_layout(root, names):
            _collect_nbgrader(course, root, names, report, dry_run)
        else:
            _collect_flat(course, root, names, assignment, re.compile(regex), report, dry_run)
    return report


def _collect_nbgrader(course: Path, root: Path, names: List[str], report: CollectReport, dry_run: bool) -> None:
    for sdir in sorted(root.iterdir()):
        if not sdir.is_dir():
            report.unmatched.append((sdir.name, "a file at the top level, not in STUDENT/ASSIGNMENT/"))
            continue
        if not STUDENT_ID.match(sdir.name):
            report.unmatched.append((sdir.name + "/", "not a usable student id"))
            continue
        for adir in sorted(sdir.iterdir()):
            if not adir.is_dir() or adir.name not in names:
                report.unmatched.append((f"{sdir.name}/{adir.name}", "not an assignment of this course"))
                continue
            files = sorted(str(p.relative_to(adir)) for p in adir.rglob("*") if p.is_file())
            if not dry_run:
                dest = course / "submitted" / sdir.name / adir.name
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.copytree(adir, dest, symlinks=True)
            report.collected[(sdir.name, adir.name)] = files


def _collect_flat(course: Path, root: Path, names: List[str], assignment: Optional[str], pattern,
                  report: CollectReport, dry_run: bool) -> None:
    # (student, assignment, stored name) -> (timestamp, path)
    chosen: Dict[Tuple[str, str, str], Tuple[str, Path]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        m = pattern.match(path.name)
        if not m:
            report.unmatched.append((rel, "the name does not match the submission pattern (no student id)"))
            continue
        groups = m.groupdict()
        student = groups.get("student_id")
        file_id = groups.get("file_id") or path.name
        if not student or not STUDENT_ID.match(student):
            report.unmatched.append((rel, f"no usable student id ({student!r})"))
            continue
        name = assignment or groups.get("assignment") or _match_assignment(file_id, names)
        if name not in names:
            report.unmatched.append((rel, f"cannot tell which assignment {file_id!r} belongs to "
                                     f"(use --assignment; known: {', '.join(names)})"))
            continue
        stored = f"{name}.ipynb" if file_id.endswith(".ipynb") else Path(file_id).name
        if stored != Path(file_id).name:
            report.notes.append(f"{rel}: stored as {student}/{name}/{stored}")
        ts = _timestamp(groups.get("timestamp")) or ""
        key = (student, name, stored)
        if key in chosen:
            older, newer = sorted([chosen[key], (ts, path)], key=lambda t: t[0])
            report.notes.append(f"{older[1].relative_to(root)}: an older attempt than "
                                f"{newer[1].relative_to(root)}; the latest is graded")
            chosen[key] = newer
        else:
            chosen[key] = (ts, path)
    for (student, name, stored), (ts, path) in sorted(chosen.items()):
        dest = course / "submitted" / student / name
        if not dry_run:
            if (student, name) not in report.collected and dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / stored)
            if ts:
                (dest / "timestamp.txt").write_text(ts + "\n", encoding="utf-8")
        report.collected.setdefault((student, name), []).append(stored)


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    course_mod.add_course_argument(parser)
    parser.add_argument("source", type=Path, help="a folder (nbgrader layout or flat) or a zip from an LMS")
    parser.add_argument("--assignment", metavar="NAME", help="every flat file belongs to this assignment")
    parser.add_argument("--regex", default=DEFAULT_REGEX, metavar="PATTERN",
                        help="pattern of flat file names, with groups student_id and file_id "
                             "(optional: timestamp, assignment); default: Blackboard's "
                             "[PREFIX_]STUDENT_attempt_TIMESTAMP_FILE")
    parser.add_argument("--dry-run", action="store_true", help="report what would be collected, copy nothing")


def main(args) -> int:
    try:
        report = collect(args.course, args.source, args.assignment, args.regex, args.dry_run)
    except (ValueError, OSError, zipfile.BadZipFile, re.error) as e:
        print(f"collect: {e}", file=sys.stderr)
        return 1
    verb = "would collect" if args.dry_run else "collected"
    students = sorted({s for s, _ in report.collected})
    print(f"collect: {verb} {len(report.collected)} submission(s) from {len(students)} student(s)")
    for (student, name), files in sorted(report.collected.items()):
        print(f"  {student:<20} {name:<36} {', '.join(files)}")
    for note in report.notes:
        print(f"collect: note: {note}")
    if report.unmatched:
        print(f"collect: {len(report.unmatched)} file(s) NOT collected:")
        for name, why in report.unmatched:
            print(f"  {name}: {why}")
    return 0
