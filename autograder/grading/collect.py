"""Collect submissions into ``COURSE/submitted/STUDENT/ASSIGNMENT/``: ``python -m autograder collect SRC``.

``SRC`` is one of

* a folder in nbgrader's layout, ``SRC/STUDENT/ASSIGNMENT/files``;
* a flat folder or a ``.zip`` as an LMS exports them, one file per student and attempt, named
  ``[PREFIX_]STUDENT_attempt_TIMESTAMP_FILE`` (Blackboard's convention, which nbgrader's
  ``zip_collect`` reads), or by any pattern given with ``--regex`` (groups ``student_id``,
  optionally ``file_id``, ``timestamp`` and ``assignment``).

Student ids are folder names, nothing more: ``jane_doe``, ``john doe``, ``zoë``, ``李雷`` and
``o'brien`` are all ids. Only an id that cannot safely be a folder name is refused, with the
file and the reason: an empty id, ``.`` or ``..``, one containing ``/``, NUL or a control
character, one starting with a dot, one that is not valid text or too long for a folder name.

**Reading an LMS name.** The name is split at its first ``_attempt_TIMESTAMP_`` (everything after
it is the file's own name, which may contain anything, ``_attempt_`` included). What comes before
is ``[PREFIX_]STUDENT``, and both the prefix and the id may contain ``_``, so
``hw1_jane_doe_attempt_...`` can be read as the student ``hw1_jane_doe``, ``jane_doe`` or
``doe``. A name with more than one reading is resolved by

* the roster: the ids of ``--roster FILE`` (one id per line, or a CSV file with an id column),
  or else the students of the course's gradebook; a reading whose id is on it;
* the assignment: a reading whose prefix is exactly the name of an assignment of the course;

and when these leave more than one reading, or none, or disagree, the file is reported as
ambiguous with its possible ids and is not collected: a name is never guessed. As a last guard,
files whose names give the same id but differ in what precedes it (other than nothing or an
assignment's name) are not merged into one student: they are all reported.

The assignment of a flat file is ``--assignment``, or the ``assignment`` group, or the course
assignment whose name starts the file's own name, or, for a notebook, the assignment named by the
prefix; a file that is not a notebook and names no assignment joins the notebook of the same
attempt. A student's notebook is stored as ``ASSIGNMENT.ipynb`` whatever the LMS called it. Of
several attempts the latest (by timestamp) is collected, the others are listed as dropped; when
timestamps cannot tell the latest, none is guessed. Everything not collected is listed with why.

A submission already in ``submitted/`` is replaced only by a later one (by timestamp: the LMS
name's, or the ``timestamp.txt`` nbgrader's exchange writes), or by one where neither has a
timestamp; an older one, or one without a timestamp where the collected one has one, is dropped
and reported (``--replace`` takes it). Each replacement by different files is named in the notes;
collecting the same files again changes nothing.
"""

from __future__ import annotations

import csv
import filecmp
import io
import os
import re
import shutil
import sys
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from . import course as course_mod

#: A zip may not unpack to more than this (a zip bomb is reported, not unpacked).
MAX_UNZIPPED_BYTES = 2 * 2**30
#: The longest id a folder can be named with (bytes of UTF-8, the limit of common file systems).
MAX_ID_BYTES = 255
#: The LMS's mark between ``[PREFIX_]STUDENT`` and the file's own name.
_MARK = re.compile(r"_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.+)\Z", re.S)
#: Column names that hold the id in a CSV roster (compared lower-case, ``-`` and spaces as ``_``).
ROSTER_ID_COLUMNS = ("id", "student_id", "studentid", "student", "username", "user_name", "user_id", "userid",
                     "login", "login_id")

RosterArg = Union[None, str, Path, Iterable[str]]


@dataclass
class CollectReport:
    collected: Dict[Tuple[str, str], List[str]] = field(default_factory=dict)  # (student, assignment) -> files
    unmatched: List[Tuple[str, str]] = field(default_factory=list)  # (file, why): everything not collected
    notes: List[str] = field(default_factory=list)
    ambiguous: Dict[str, List[str]] = field(default_factory=dict)  # file -> the ids it could be read as
    roster_prefixes: Dict[str, List[Tuple[str, str]]] = field(default_factory=dict)  # prefix -> (file, id)


# --------------------------------------------------------------------------- ids


def unsafe_id_reason(student: str) -> Optional[str]:
    """Why ``student`` cannot be used as a folder name, or None when it can."""
    if not student:
        return "the student id is empty"
    if student in (".", ".."):
        return f"{student!r} is not a folder name"
    if "/" in student:
        return "the student id contains '/'"
    if "\0" in student:
        return "the student id contains a NUL character"
    if student.startswith("."):
        return "the student id starts with '.' (a hidden folder)"
    for ch in student:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            return "the student id is not valid text (bytes that are not UTF-8)"
        if cat == "Cc" or ch in "\u2028\u2029":
            return f"the student id contains a control character (U+{ord(ch):04X})"
    if len(student.encode("utf-8")) > MAX_ID_BYTES:
        return f"the student id is longer than {MAX_ID_BYTES} bytes, too long for a folder name"
    return None


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _show(ids: Sequence[str]) -> str:
    quoted = [repr(i) for i in ids]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


# --------------------------------------------------------------------------- roster


def load_roster(path: Path) -> Set[str]:
    """The ids of a roster file: one id per line, or a CSV file (``.csv``, or a first line that is
    a CSV header) whose id column is one of :data:`ROSTER_ID_COLUMNS`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"roster {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ValueError(f"roster {path}: cannot be read ({e.strerror or e})") from None
    lines = text.splitlines()
    first = next((l for l in lines if l.strip()), "")
    header = [h.strip() for h in next(csv.reader([first]), [])] if first else []
    keys = [h.lower().replace("-", "_").replace(" ", "_") for h in header]
    column = next((keys.index(k) for k in ROSTER_ID_COLUMNS if k in keys), None)
    is_csv = path.suffix.lower() == ".csv" or column is not None
    if is_csv:
        if column is None:
            raise ValueError(f"roster {path}: a CSV file without an id column (its columns: {header}; "
                             f"expected one of {', '.join(ROSTER_ID_COLUMNS)})")
        ids = set()
        rows = csv.reader(io.StringIO(text))
        next(rows, None)
        for row in rows:
            if len(row) > column and row[column].strip():
                ids.add(_nfc(row[column].strip()))
    else:
        ids = {_nfc(l.strip()) for l in lines if l.strip()}
    if not ids:
        raise ValueError(f"roster {path}: no student ids in it")
    return ids


class _Roster:
    """The class's ids, read when first needed: the roster given, or else the gradebook's students."""

    def __init__(self, course: Path, roster: RosterArg):
        self.course = course
        self._ids: Optional[Set[str]] = None
        self.source = "the roster"
        if roster is None:
            self.source = "the gradebook's students"
        elif isinstance(roster, (str, Path)):
            self._ids = load_roster(Path(roster))
            self.source = f"the roster {roster}"
        else:
            ids = list(roster)
            bad = [i for i in ids if not isinstance(i, str)]
            if bad:
                raise ValueError(f"roster: expected student ids as strings, got {bad[0]!r} ({type(bad[0]).__name__})")
            self._ids = {_nfc(i.strip()) for i in ids if i.strip()}
        self.problem: Optional[str] = None

    @property
    def ids(self) -> Set[str]:
        if self._ids is None:
            self._ids = set()
            if (self.course / "gradebook.db").is_file():
                try:
                    from nbgrader.api import Gradebook

                    with Gradebook(course_mod.db_url(self.course)) as gb:
                        self._ids = {_nfc(s.id) for s in gb.students}
                except Exception as e:  # a broken gradebook: no roster, so more names stay ambiguous
                    self.problem = f"the gradebook's students could not be read ({type(e).__name__}: {e})"
        return self._ids

    def hint(self) -> str:
        if self.source == "the gradebook's students":
            why = self.problem or ("the gradebook has no students" if not self.ids else
                                   "the gradebook's students do not settle it")
            return f"{why}; pass --roster FILE with the class's ids"
        return f"{self.source} does not settle it"


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class Reading:
    """One way of reading a flat file's name."""

    student: str
    prefix: Optional[str]  # the text before the id (None: the name starts with the id)
    timestamp: Optional[Tuple[int, ...]]
    file_id: str


def _timestamp(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """(year, month, day, hour, minute, second[, ...]) of an LMS timestamp, or None."""
    if not text:
        return None
    parts = [p for p in re.split(r"[^0-9]+", text) if p]
    if len(parts) == 1 and len(parts[0]) == 14:  # 20240115103000
        p = parts[0]
        parts = [p[:4], p[4:6], p[6:8], p[8:10], p[10:12], p[12:14]]
    if len(parts) < 6 or len(parts[0]) != 4 or any(len(p) > 2 for p in parts[1:6]):
        return None
    t = tuple(int(p) for p in parts)
    if not (1 <= t[1] <= 12 and 1 <= t[2] <= 31 and t[3] <= 23 and t[4] <= 59 and t[5] <= 60):
        return None
    return t


def _timestamp_text(t: Optional[Tuple[int, ...]]) -> str:
    return "" if t is None else "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}".format(*t[:6])


def lms_readings(name: str) -> List[Reading]:
    """Every reading of ``[PREFIX_]STUDENT_attempt_TIMESTAMP_FILE`` (empty when the name has no
    ``_attempt_TIMESTAMP_`` followed by a file name). The split is at the first mark whose
    timestamp is a date (else the first mark): the LMS writes its own part first."""
    marks = []
    i = name.find("_attempt_")
    while i >= 0:
        m = _MARK.match(name, i)
        if m:
            marks.append(m)
        i = name.find("_attempt_", i + 1)
    if not marks:
        return []
    m = next((m for m in marks if _timestamp(m["timestamp"])), marks[0])
    head, ts, file_id = name[:m.start()], _timestamp(m["timestamp"]), m["file_id"]
    readings = [Reading(_nfc(head), None, ts, file_id)]
    readings += [Reading(_nfc(head[j + 1:]), _nfc(head[:j]), ts, file_id) for j, ch in enumerate(head) if ch == "_"]
    return readings


def resolve(readings: Sequence[Reading], roster: _Roster,
            prefixes: Set[str]) -> Tuple[Optional[Reading], str, List[str]]:
    """(the one reading the evidence allows, "", []) or (None, why not, the possible ids)."""
    if len(readings) == 1:
        return readings[0], "", []
    order = [r.student for r in readings]
    by_id = {r.student: r for r in readings}
    on_roster = [r.student for r in readings if r.student in roster.ids]
    after_name = [r.student for r in readings if r.prefix is not None and r.prefix in prefixes]
    if on_roster and after_name:
        both = [s for s in on_roster if s in after_name]
        if len(both) == 1:
            return by_id[both[0]], "", []
        possible = [s for s in order if s in on_roster or s in after_name]
        why = (f"{roster.source} has {_show(both)}" if both else
               f"{roster.source} has {_show(on_roster)} but the assignment's name as prefix leaves {_show(after_name)}")
    elif on_roster:
        if len(on_roster) == 1:
            return by_id[on_roster[0]], "", []
        possible, why = on_roster, f"{roster.source} has {_show(on_roster)}"
    elif after_name:
        if len(after_name) == 1:
            return by_id[after_name[0]], "", []
        possible, why = after_name, "more than one reading follows an assignment's name"
    else:
        possible = order
        why = f"none of them is on the roster and no prefix is an assignment's name ({roster.hint()})"
    unsafe = [f"{s!r}: {unsafe_id_reason(s)}" for s in possible if unsafe_id_reason(s)]
    if unsafe:
        why += f" (and {'; '.join(unsafe)})"
    return None, f"ambiguous: the student id could be {_show(possible)}; {why}", possible


def _match_assignment(file_id: str, names: Sequence[str]) -> Optional[str]:
    stem = Path(file_id).name
    hits = [n for n in names if stem == f"{n}.ipynb" or stem.startswith(n)]
    return max(hits, key=len) if hits else None


# --------------------------------------------------------------------------- unpacking


def _member_name(info: zipfile.ZipInfo) -> str:
    """A zip member's name: UTF-8 also when the archiver did not set the UTF-8 flag (as many do not),
    folders separated by ``/``."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return _nfc(name.replace("\\", "/"))  # some Windows archivers separate folders with backslashes


def _safe_unzip(zpath: Path, dest: Path, report: CollectReport) -> None:
    with zipfile.ZipFile(zpath) as z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        total = sum(i.file_size for i in infos)
        if total > MAX_UNZIPPED_BYTES:
            raise ValueError(f"{zpath.name} would unpack to {total / 2**30:.1f} GiB; refused")
        for info in infos:
            name = _member_name(info)
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or "__MACOSX" in parts or "\0" in name:
                report.unmatched.append((name, "unsafe or system path in the zip, not unpacked"))
                continue
            if any(len(p.encode("utf-8", "surrogateescape")) > MAX_ID_BYTES for p in parts):
                report.unmatched.append((name, f"a name longer than {MAX_ID_BYTES} bytes, which no folder can "
                                               "hold; not unpacked"))
                continue
            target = dest / name
            if target.exists():
                report.unmatched.append((name, "the zip holds this path twice; the first copy is used"))
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
            except OSError as e:
                report.unmatched.append((name, f"cannot be unpacked ({e.strerror or e})"))


def _is_nbgrader_layout(src: Path, names: List[str]) -> bool:
    for sdir in src.iterdir():
        if sdir.is_dir() and any((sdir / n).is_dir() for n in names):
            return True
    return False


# --------------------------------------------------------------------------- collecting


def collect(course: Path, src: Path, assignment: Optional[str] = None, regex: Optional[str] = None,
            dry_run: bool = False, roster: RosterArg = None, replace: bool = False) -> CollectReport:
    """Collect ``src`` into ``course/submitted/``. ``regex``: the pattern of flat names (default:
    the LMS's ``[PREFIX_]STUDENT_attempt_TIMESTAMP_FILE``, read as described in the module);
    ``roster``: a roster file or the ids themselves (default: the gradebook's students).
    ``replace``: take each incoming submission even where the one already collected has a later
    timestamp, or has one where the incoming has none (kept otherwise, and reported)."""
    course = Path(course)
    src = Path(src)
    names = course_mod.assignments(course)
    if not names:
        raise ValueError(f"{course} has no assignments; run `python -m autograder build --course {course}` first")
    if assignment and assignment not in names:
        raise ValueError(f"no assignment {assignment!r} in {course} (known: {', '.join(names)})")
    pattern = None
    if regex:
        pattern = re.compile(regex)
        if "student_id" not in pattern.groupindex:
            raise ValueError(f"--regex {regex!r} has no group named student_id (expected a pattern such as "
                             r"'(?P<student_id>[^_]+)_(?P<file_id>.+)')")
    inbox = (course / "submitted").resolve()
    if src.resolve() == inbox or inbox in src.resolve().parents:
        raise ValueError(f"{src} is inside {course / 'submitted'}, where collect writes; collect from elsewhere")
    people = _Roster(course, roster)
    report = CollectReport()
    with tempfile.TemporaryDirectory(prefix="mhsa_collect_") as tmp:
        if src.is_file() and zipfile.is_zipfile(src):
            root = Path(tmp) / "zip"
            root.mkdir()
            _safe_unzip(src, root, report)
        elif src.is_dir():
            root = src
        else:
            raise ValueError(f"{src}: neither a folder nor a zip file")
        if _is_nbgrader_layout(root, names):
            _collect_nbgrader(course, root, names, report, dry_run, replace)
        else:
            _collect_flat(course, root, names, assignment, pattern, people, report, dry_run, replace)
    return report


def _clash(course: Path, student: str) -> Optional[str]:
    """The other student whose folder ``submitted/student`` would be (a file system that does not
    tell upper from lower case, or normalises unicode), or None."""
    parent = course / "submitted"
    folder = parent / student
    if not folder.exists():
        return None
    entries = os.listdir(parent)
    if student in entries or student in {_nfc(e) for e in entries}:
        return None
    for e in entries:
        try:
            if os.path.samefile(parent / e, folder):
                return e
        except OSError:
            continue
    return "?"


def _same_files(dest: Path, files: List[Tuple[Path, str]], ts: str) -> bool:
    """Does the folder ``dest`` hold exactly ``files`` (plain files, same bytes) and the
    timestamp ``ts``?"""
    try:
        have = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if not p.is_dir())
        want: Dict[str, Path] = {}
        for path, stored in files:
            if path.is_dir():
                for q in path.rglob("*"):
                    if not q.is_dir():
                        want[(Path(stored) / q.relative_to(path)).as_posix()] = q
            else:
                want[stored] = path
        if ts:
            want.pop("timestamp.txt", None)
            have_ts = (dest / "timestamp.txt").read_text(encoding="utf-8", errors="replace").strip() \
                if (dest / "timestamp.txt").is_file() else ""
            if _timestamp(have_ts) != _timestamp(ts):
                return False
            have = [h for h in have if h != "timestamp.txt"]
        if have != sorted(want):
            return False
        return all(not (dest / rel).is_symlink() and filecmp.cmp(dest / rel, src, shallow=False)
                   for rel, src in want.items())
    except OSError:
        return False


def _store(course: Path, student: str, name: str, files: List[Tuple[Path, str]], ts: str,
           report: CollectReport, dry_run: bool, what: str, replace: bool = False) -> bool:
    """Replace ``submitted/student/name`` by ``files`` ((source, stored name)); ``ts``: the
    attempt's timestamp, written to ``timestamp.txt``. A submission already collected is never
    replaced in silence: one with a later timestamp, or with a timestamp where the incoming one
    has none, is kept (unless ``replace``) and the incoming one reported as dropped; one replaced
    by different files is named in the notes. False, and reported, when the submission is not
    stored."""
    other = _clash(course, student)
    if other is not None:
        report.unmatched.append((what, f"the course's file system cannot tell the student {student!r} from the "
                                       f"existing folder {other!r} (upper/lower case or unicode form); not collected"))
        return False
    dest = course / "submitted" / student / name
    if os.path.lexists(dest):
        old = dest / "timestamp.txt"
        before = old.read_text(encoding="utf-8", errors="replace").strip() if old.is_file() else ""
        if dest.is_dir() and not dest.is_symlink() and _same_files(dest, files, ts):
            return True  # collected again as it is: nothing to write
        t_before, t_new = _timestamp(before), _timestamp(ts)
        keep = None
        if t_before and t_new and t_before > t_new:
            keep = f"older ({ts}) than the submission of {student!r} already collected ({before})"
        elif t_before and not t_new:
            keep = (f"without a timestamp, and the submission of {student!r} already collected has one ({before}), "
                    "so which is later cannot be told")
        if keep and not replace:
            report.notes.append(f"{what}: {keep}, which is kept; this one dropped (--replace takes it)")
            return False
        report.notes.append(f"{what}: replaces the different submission of {student!r} collected before"
                            + (f" ({before})" if before else " (it had no timestamp)")
                            + (" (--replace)" if keep else ""))
    if not dry_run:
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for path, stored in files:
            if path.is_dir():
                shutil.copytree(path, dest / stored, symlinks=True)
            else:
                shutil.copyfile(path, dest / stored)
        if ts:
            (dest / "timestamp.txt").write_text(ts + "\n", encoding="utf-8")
    return True


def _collect_nbgrader(course: Path, root: Path, names: List[str], report: CollectReport, dry_run: bool,
                      replace: bool = False) -> None:
    for sdir in sorted(root.iterdir()):
        if not sdir.is_dir():
            report.unmatched.append((sdir.name, "a file at the top level, not in STUDENT/ASSIGNMENT/"))
            continue
        why = unsafe_id_reason(sdir.name)
        if why:
            report.unmatched.append((sdir.name + "/", f"refused: {why}"))
            continue
        student = _nfc(sdir.name)
        for adir in sorted(sdir.iterdir()):
            rel = f"{sdir.name}/{adir.name}"
            if not adir.is_dir() or adir.name not in names:
                report.unmatched.append((rel, "not an assignment of this course"))
                continue
            if (student, adir.name) in report.collected:
                report.unmatched.append((rel, f"a second folder of the student {student!r} (the same name in another "
                                              "unicode form); not collected"))
                continue
            files = sorted(str(p.relative_to(adir)) for p in adir.rglob("*") if p.is_file())
            entries = [(p, p.name) for p in sorted(adir.iterdir())]
            stamp = adir / "timestamp.txt"  # nbgrader's exchange writes one into each submission
            ts = ""
            if stamp.is_file() and not stamp.is_symlink():
                ts = stamp.read_text(encoding="utf-8", errors="replace").strip()[:100]
                ts = ts if _timestamp(ts) else ""
            if _store(course, student, adir.name, entries, ts, report, dry_run, rel, replace):
                report.collected[(student, adir.name)] = files


@dataclass
class _Flat:
    rel: str
    path: Path
    reading: Reading
    possible: List[str]  # every id the name could be read as
    assignment: Optional[str] = None
    from_prefix: bool = False  # the assignment is known only from the prefix

    @property
    def student(self) -> str:
        return self.reading.student

    @property
    def timestamp(self) -> Optional[Tuple[int, ...]]:
        return self.reading.timestamp

    @property
    def file_id(self) -> str:
        return self.reading.file_id


def _read_flat(rel: str, path: Path, pattern, people: _Roster, prefixes: Set[str],
               report: CollectReport) -> Optional[_Flat]:
    name = path.name
    assignment = None
    if pattern is None:
        readings = lms_readings(name)
        if not readings:
            report.unmatched.append((rel, "the name is not [PREFIX_]STUDENT_attempt_TIMESTAMP_FILE "
                                          "(no '_attempt_', a timestamp and a file name)"))
            return None
        reading, why, possible = resolve(readings, people, prefixes)
        if reading is None:
            report.ambiguous[rel] = possible
            report.unmatched.append((rel, why))
            return None
        possible = [r.student for r in readings]
        if len(readings) > 1 and reading.prefix is not None and reading.prefix not in prefixes:
            # Read by the roster: what it left out is noted, once per prefix, for a person to check.
            report.roster_prefixes.setdefault(reading.prefix, []).append((rel, reading.student))
    else:
        m = pattern.match(name)
        if not m:
            report.unmatched.append((rel, "the name does not match the submission pattern (--regex)"))
            return None
        groups = m.groupdict()
        start = m.start("student_id") if groups.get("student_id") is not None else 0
        reading = Reading(_nfc(groups.get("student_id") or ""), _nfc(name[:start].rstrip("_-. ")) or None,
                          _timestamp(groups.get("timestamp")), groups.get("file_id") or name)
        possible, assignment = [reading.student], groups.get("assignment")
    why = unsafe_id_reason(reading.student)
    if why:
        report.unmatched.append((rel, f"refused: {why} (read as {reading.student!r})"))
        return None
    return _Flat(rel, path, reading, possible, assignment)


def _collect_flat(course: Path, root: Path, names: List[str], assignment: Optional[str], pattern,
                  people: _Roster, report: CollectReport, dry_run: bool, replace: bool = False) -> None:
    prefixes = set(names)
    items: List[_Flat] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        item = _read_flat(rel, path, pattern, people, prefixes, report)
        if item is None:
            continue
        prefix = item.reading.prefix
        item.assignment = assignment or item.assignment or _match_assignment(item.file_id, names)
        if item.assignment is None and prefix in prefixes:
            item.assignment, item.from_prefix = prefix, True
        elif item.assignment and not assignment and prefix in prefixes and prefix != item.assignment:
            report.notes.append(f"{rel}: the file is {item.assignment!r} although it was handed in under "
                                f"{prefix!r}; collected as {item.assignment!r}")
        if item.assignment not in names:
            report.unmatched.append((rel, f"cannot tell which assignment {item.file_id!r} belongs to "
                                          f"(use --assignment; known: {', '.join(names)})"))
            continue
        items.append(item)
    for prefix, read in sorted(report.roster_prefixes.items()):
        rel, student = read[0]
        report.notes.append(f"{len(read)} file(s) read as the ids on the roster after the prefix {prefix!r} "
                            f"(e.g. {rel} as {student!r}); check that prefix if it looks like part of a name")

    # A file known only by its prefix that is not a notebook goes with a notebook of its attempt.
    notebook_attempts = {(i.student, i.assignment, i.timestamp) for i in items if i.file_id.endswith(".ipynb")}
    groups: Dict[Tuple[str, str], List[_Flat]] = {}
    for i in items:
        if i.from_prefix and not i.file_id.endswith(".ipynb") and \
                (i.student, i.assignment, i.timestamp) not in notebook_attempts:
            report.unmatched.append((i.rel, "not a notebook, and neither its name nor a notebook of the same attempt "
                                            f"says which assignment it belongs to (use --assignment; known: "
                                            f"{', '.join(names)})"))
            continue
        groups.setdefault((i.student, i.assignment), []).append(i)
    for (student, name), group in sorted(groups.items()):
        if not _one_student(group, prefixes, report):
            continue
        files = _latest_attempt(group, report)
        stored = _stored_names(name, files, report) if files else []
        if not stored:
            continue
        what = ", ".join(i.rel for i, _ in stored)
        ts = _timestamp_text(files[0].timestamp)
        if _store(course, student, name, [(i.path, s) for i, s in stored], ts, report, dry_run, what, replace):
            report.collected[(student, name)] = [s for _, s in stored]


def _one_student(group: List[_Flat], prefixes: Set[str], report: CollectReport) -> bool:
    """Whether the files read as one student's submission of one assignment can be one student's:
    their names must agree on what precedes the id (nothing and an assignment's name count as
    the same), else they may be different students and none is collected."""
    seen = sorted({"" if not i.reading.prefix or i.reading.prefix in prefixes else i.reading.prefix for i in group})
    if len(seen) <= 1:
        return True
    shown = ", ".join(repr(s) if s else "nothing or an assignment's name" for s in seen)
    for i in group:
        report.unmatched.append((i.rel, f"read as the student {i.student!r} like {len(group) - 1} other file(s) of "
                                        f"{i.assignment!r}, but what precedes the id differs ({shown}): they may be "
                                        "different students, so none is collected (a roster with every student's "
                                        "id settles it)"))
        report.ambiguous[i.rel] = i.possible
    return False


def _latest_attempt(group: List[_Flat], report: CollectReport) -> List[_Flat]:
    stamps = {i.timestamp for i in group}
    if len(stamps) == 1:
        return group
    if None in stamps:
        for i in group:
            report.unmatched.append((i.rel, f"one of {len(stamps)} attempts of {i.student!r} for {i.assignment!r}, "
                                            "and without a timestamp on each the latest cannot be told; none is "
                                            "collected"))
        return []
    latest = max(stamps)
    newest = [i for i in group if i.timestamp == latest]
    for i in group:
        if i.timestamp != latest:
            report.notes.append(f"{i.rel}: an older attempt ({_timestamp_text(i.timestamp)}) than "
                                f"{newest[0].rel} ({_timestamp_text(latest)}); the latest is graded, this one dropped")
    return newest


def _stored_names(name: str, files: List[_Flat], report: CollectReport) -> List[Tuple[_Flat, str]]:
    """(file, the name it is stored under): a notebook as ``NAME.ipynb``, other files as they are
    called; two files for one name keep the one already called so, else neither."""
    by_name: Dict[str, List[_Flat]] = {}
    for i in files:
        stored = f"{name}.ipynb" if i.file_id.endswith(".ipynb") else Path(i.file_id).name
        by_name.setdefault(stored, []).append(i)
    out = []
    for stored, group in sorted(by_name.items()):
        why = unsafe_id_reason(stored)
        if why or stored == "timestamp.txt":
            for i in group:
                report.unmatched.append((i.rel, f"the file's own name {stored!r} cannot be stored"
                                                f"{': ' + why.replace('student id', 'name') if why else ''}"))
            continue
        exact = [i for i in group if Path(i.file_id).name == stored]
        if len(group) > 1 and len(exact) != 1:
            what = ("no timestamp tells which is the latest" if group[0].timestamp is None
                    else "they are of one attempt, and which one to grade cannot be told")
            for i in group:
                report.unmatched.append((i.rel, f"{len(group)} files of {i.student!r} would all be stored as "
                                                f"{stored!r}; {what}, so none is collected"))
            continue
        chosen = exact[0] if len(group) > 1 else group[0]
        for i in group:
            if i is not chosen:
                report.unmatched.append((i.rel, f"another file of the same attempt, {chosen.rel}, is already "
                                                f"called {stored!r}; that one is collected"))
        if Path(chosen.file_id).name != stored:
            report.notes.append(f"{chosen.rel}: stored as {chosen.student}/{name}/{stored}")
        out.append((chosen, stored))
    return out


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    course_mod.add_course_argument(parser)
    parser.add_argument("source", type=Path, help="a folder (nbgrader layout or flat) or a zip from an LMS")
    parser.add_argument("--assignment", metavar="NAME", help="every flat file belongs to this assignment")
    parser.add_argument("--roster", type=Path, metavar="FILE",
                        help="the class's student ids (one per line, or a CSV file with an id column), to read "
                             "names that split more than one way (default: the gradebook's students)")
    parser.add_argument("--regex", default=None, metavar="PATTERN",
                        help="pattern of flat file names, with the group student_id (optional: file_id, "
                             "timestamp, assignment); default: Blackboard's [PREFIX_]STUDENT_attempt_TIMESTAMP_FILE, "
                             "read against the roster")
    parser.add_argument("--dry-run", action="store_true", help="report what would be collected, copy nothing")
    parser.add_argument("--replace", action="store_true",
                        help="take each incoming submission even where the one already collected is later, or "
                             "has a timestamp where the incoming one has none (kept otherwise, and reported)")


def _printable(text: str) -> str:
    """``text``, or its repr when it holds control characters a terminal would act on."""
    return text if text.isprintable() else repr(text)


def main(args) -> int:
    try:
        report = collect(args.course, args.source, args.assignment, args.regex, args.dry_run,
                         roster=getattr(args, "roster", None), replace=getattr(args, "replace", False))
    except (ValueError, OSError, zipfile.BadZipFile, re.error) as e:
        print(f"collect: {e}", file=sys.stderr)
        return 1
    verb = "would collect" if args.dry_run else "collected"
    students = sorted({s for s, _ in report.collected})
    print(f"collect: {verb} {len(report.collected)} submission(s) from {len(students)} student(s)")
    for (student, name), files in sorted(report.collected.items()):
        print(f"  {student:<20} {name:<36} {', '.join(files)}")
    for note in report.notes:
        print(f"collect: note: {_printable(note)}")
    if report.unmatched:
        print(f"collect: {len(report.unmatched)} file(s) NOT collected:")
        for name, why in report.unmatched:
            print(f"  {_printable(name)}: {_printable(why)}")
    if report.ambiguous:
        print(f"collect: {len(report.ambiguous)} file(s) could belong to more than one student id; "
              "pass --roster FILE (or add the students to the gradebook) and collect again")
    return 0
