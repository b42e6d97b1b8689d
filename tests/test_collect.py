"""``collect`` on LMS zips, flat folders and nbgrader folders: a name that splits more than one way
is read against the roster or the assignment's name, or reported as ambiguous, never guessed; ids
of any kind (``_``, spaces, unicode, quotes) are collected, unsafe ones refused with the reason;
two students never share a folder; the latest attempt wins. No kernel, no nbgrader run."""

from __future__ import annotations

import struct
import unicodedata
import zipfile

import pytest

from autograder.grading import collect

SDPA = "01_scaled_dot_product_attention"
ORIENT = "00_orientation"
TS1, TS2, TS3 = "2024-01-15-10-30-00", "2024-01-16-09-00-00", "2024-01-17-08-15-00"


@pytest.fixture
def course(tmp_path):
    root = tmp_path / "course"
    for name in (SDPA, ORIENT):
        (root / "source" / name).mkdir(parents=True)
        (root / "source" / name / f"{name}.ipynb").write_text("{}", encoding="utf-8")
    return root


def lms(prefix, student, ts, file):
    return f"{prefix + '_' if prefix else ''}{student}_attempt_{ts}_{file}"


def body(tag):
    return f'{{"tag": "{tag}"}}'.encode()


def make_source(tmp_path, kind, files):
    """The files {name: bytes} as an LMS zip or as a flat folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if kind == "zip":
        path = tmp_path / "export.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name, data in files.items():
                z.writestr(name, data)
        return path
    folder = tmp_path / "flat"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def submitted(course):
    """{(student, assignment): {file: bytes}} of everything in submitted/."""
    out = {}
    for p in sorted((course / "submitted").rglob("*")):
        if p.is_file():
            rel = p.relative_to(course / "submitted").parts
            out.setdefault((rel[0], rel[1]), {})["/".join(rel[2:])] = p.read_bytes()
    return out


def why(report, fragment):
    hits = [w for name, w in report.unmatched if fragment in name]
    assert hits, f"{fragment!r} not among the unmatched: {report.unmatched}"
    return hits[0]


KINDS = pytest.mark.parametrize("kind", ["zip", "folder"])


# --------------------------------------------------------------------------- names that split more than one way


@KINDS
def test_two_students_sharing_a_last_name_are_ambiguous_without_a_roster(course, tmp_path, kind):
    files = {lms("assignment01", s, TS1, f"{SDPA}.ipynb"): body(s) for s in ("jane_doe", "john_doe")}
    rep = collect.collect(course, make_source(tmp_path, kind, files))
    assert rep.collected == {}
    assert not (course / "submitted").exists()
    for s in ("jane_doe", "john_doe"):
        name = lms("assignment01", s, TS1, f"{SDPA}.ipynb")
        assert rep.ambiguous[name] == [f"assignment01_{s}", s, "doe"]
        text = why(rep, name)
        assert text.startswith("ambiguous") and f"'{s}'" in text and "'doe'" in text and "--roster" in text
    assert not any("older attempt" in n for n in rep.notes)


@KINDS
@pytest.mark.parametrize("roster_kind", ["lines", "csv", "ids"])
def test_a_roster_resolves_the_split(course, tmp_path, kind, roster_kind):
    files = {lms("assignment01", s, TS1, f"{SDPA}.ipynb"): body(s) for s in ("jane_doe", "john_doe")}
    files[lms("assignment01", "li_lei", TS2, f"{SDPA}.ipynb")] = body("li_lei")
    amy = lms("assignment01", "amy", TS2, f"{SDPA}.ipynb")
    files[amy] = body("amy")  # not on the roster: "assignment01_amy" or "amy"?
    ids = ["jane_doe", "john_doe", "li_lei", "someone_else"]
    if roster_kind == "lines":
        roster = tmp_path / "roster.txt"
        roster.write_text("\n".join(ids) + "\n\n", encoding="utf-8")
    elif roster_kind == "csv":
        roster = tmp_path / "roster.csv"
        roster.write_text("last_name,Student ID,email\n" + "".join(f"x,{i},{i}@uni\n" for i in ids), encoding="utf-8")
    else:
        roster = ids
    rep = collect.collect(course, make_source(tmp_path, kind, files), roster=roster)
    # What the roster left out of the names is noted once, for a person to check.
    assert [n for n in rep.notes if "prefix" in n] == [
        f"3 file(s) read as the ids on the roster after the prefix 'assignment01' (e.g. "
        f"{lms('assignment01', 'jane_doe', TS1, f'{SDPA}.ipynb')} as 'jane_doe'); check that prefix if it looks "
        "like part of a name"]
    assert rep.ambiguous == {amy: ["assignment01_amy", "amy"]}
    assert [n for n, _ in rep.unmatched] == [amy]
    assert "none of them is on the roster" in why(rep, amy)
    got = submitted(course)
    assert set(got) == {("jane_doe", SDPA), ("john_doe", SDPA), ("li_lei", SDPA)}
    for s in ("jane_doe", "john_doe", "li_lei"):
        assert got[(s, SDPA)][f"{SDPA}.ipynb"] == body(s)


def test_a_roster_with_two_matching_ids_leaves_the_name_ambiguous(course, tmp_path):
    # jane_doe_attempt_...: no prefix; both "jane_doe" and "doe" are students.
    src = make_source(tmp_path, "folder", {lms("", "jane_doe", TS1, f"{SDPA}.ipynb"): body("j")})
    rep = collect.collect(course, src, roster=["jane_doe", "doe"])
    assert rep.collected == {}
    assert rep.ambiguous == {lms("", "jane_doe", TS1, f"{SDPA}.ipynb"): ["jane_doe", "doe"]}
    # With only one of them on the roster, it is that one.
    rep = collect.collect(course, src, roster=["jane_doe", "alice"])
    assert set(rep.collected) == {("jane_doe", SDPA)}


def test_an_incomplete_roster_reads_a_name_and_says_what_it_left_out(course, tmp_path):
    # jane_doe is not on the roster yet; doe is. The reading is the roster's, and it is noted.
    name = lms("", "jane_doe", TS1, f"{SDPA}.ipynb")
    rep = collect.collect(course, make_source(tmp_path, "folder", {name: body("j")}), roster=["doe"])
    assert set(rep.collected) == {("doe", SDPA)}
    assert any(n.startswith("1 file(s) read as the ids on the roster after the prefix 'jane'") for n in rep.notes)


@KINDS
def test_the_assignments_exact_name_as_prefix_resolves_the_split(course, tmp_path, kind):
    # The assignment's name itself contains "_": every split inside it is a reading too.
    files = {lms(SDPA, s, TS1, f"{SDPA}.ipynb"): body(s) for s in ("jane_doe", "john_doe", "bob")}
    files[lms(ORIENT, "jane_doe", TS1, f"{ORIENT}.ipynb")] = body("jane 00")
    rep = collect.collect(course, make_source(tmp_path, kind, files))
    assert rep.unmatched == []
    assert set(rep.collected) == {("jane_doe", SDPA), ("john_doe", SDPA), ("bob", SDPA), ("jane_doe", ORIENT)}
    got = submitted(course)
    assert got[("jane_doe", ORIENT)][f"{ORIENT}.ipynb"] == body("jane 00")
    assert got[("john_doe", SDPA)][f"{SDPA}.ipynb"] == body("john_doe")


def test_roster_and_assignment_prefix_that_disagree_are_reported(course, tmp_path):
    name = lms(SDPA, "jane_doe", TS1, f"{SDPA}.ipynb")
    rep = collect.collect(course, make_source(tmp_path, "folder", {name: body("j")}), roster=["doe"])
    assert rep.collected == {}
    assert rep.ambiguous[name] == ["jane_doe", "doe"]
    assert "'doe'" in why(rep, name) and "'jane_doe'" in why(rep, name)
    # With both on the roster, the prefix settles it.
    rep = collect.collect(course, make_source(tmp_path, "folder", {name: body("j")}), roster=["doe", "jane_doe"])
    assert set(rep.collected) == {("jane_doe", SDPA)}


def test_no_prefix_and_an_id_with_underscores(course, tmp_path):
    files = {lms("", "jane_doe", TS1, f"{SDPA}.ipynb"): body("j"), lms("", "alice", TS1, f"{SDPA}.ipynb"): body("a")}
    rep = collect.collect(course, make_source(tmp_path, "zip", files))
    assert set(rep.collected) == {("alice", SDPA)}  # one reading only
    assert rep.ambiguous == {lms("", "jane_doe", TS1, f"{SDPA}.ipynb"): ["jane_doe", "doe"]}


@KINDS
def test_attempt_inside_the_lms_file_name(course, tmp_path, kind):
    # The student re-uploaded a file the LMS had named; and a file called my_attempt_2.
    again = lms(SDPA, "jane_doe", TS1, f"{SDPA}.ipynb")
    files = {lms(SDPA, "jane_doe", TS2, again): body("jane"),
             lms(SDPA, "bob", TS1, f"{SDPA}_my_attempt_2_final.ipynb"): body("bob")}
    rep = collect.collect(course, make_source(tmp_path, kind, files))
    assert rep.unmatched == []
    got = submitted(course)
    assert got[("jane_doe", SDPA)] == {f"{SDPA}.ipynb": body("jane"), "timestamp.txt": b"2024-01-16 09:00:00\n"}
    assert got[("bob", SDPA)][f"{SDPA}.ipynb"] == body("bob")


def test_an_lms_file_name_that_does_not_say_the_assignment_takes_the_prefixes(course, tmp_path):
    files = {lms(SDPA, "jane_doe", TS1, "Homework.ipynb"): body("j"),
             lms(SDPA, "jane_doe", TS1, "notes.txt"): b"my notes",  # same attempt: goes with the notebook
             lms(SDPA, "bob", TS1, "essay.docx"): b"no notebook in this attempt"}
    rep = collect.collect(course, make_source(tmp_path, "folder", files))
    assert submitted(course)[("jane_doe", SDPA)] == {f"{SDPA}.ipynb": body("j"), "notes.txt": b"my notes",
                                                    "timestamp.txt": b"2024-01-15 10:30:00\n"}
    assert "not a notebook" in why(rep, "essay.docx")
    assert ("bob", SDPA) not in rep.collected


# --------------------------------------------------------------------------- ids of every kind


@KINDS
def test_unicode_spaces_and_quotes_are_ids(course, tmp_path, kind):
    ids = ["zoë", "李雷", "john doe", "o'brien", 'the "kid"', "anne-marie.o'neil", "jane_doe"]
    files = {lms(SDPA, s, TS1, f"{SDPA}.ipynb"): body(s) for s in ids}
    rep = collect.collect(course, make_source(tmp_path, kind, files))
    assert rep.unmatched == []
    got = submitted(course)
    assert set(got) == {(s, SDPA) for s in ids}
    for s in ids:
        assert got[(s, SDPA)][f"{SDPA}.ipynb"] == body(s)


def test_unicode_names_from_a_zip_without_the_utf8_flag_and_in_decomposed_form(course, tmp_path):
    nfd = unicodedata.normalize("NFD", "zoë")
    assert nfd != "zoë"
    path = tmp_path / "old.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(lms(SDPA, "李雷", TS1, f"{SDPA}.ipynb"), body("li"))
        z.writestr(lms(SDPA, nfd, TS2, f"{SDPA}.ipynb"), body("zoe"))
    raw = bytearray(path.read_bytes())
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # clear the UTF-8 flag, as old archivers do
        i = raw.find(sig)
        while i >= 0:
            flags = struct.unpack_from("<H", raw, i + at)[0]
            struct.pack_into("<H", raw, i + at, flags & ~0x800)
            i = raw.find(sig, i + 4)
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as z:
        assert all(not i.flag_bits & 0x800 for i in z.infolist())
    rep = collect.collect(course, path)
    assert set(rep.collected) == {("李雷", SDPA), ("zoë", SDPA)}  # zoë in composed form, like the roster
    assert (course / "submitted" / "zoë" / SDPA / f"{SDPA}.ipynb").read_bytes() == body("zoe")


UNSAFE = [(".hidden", "starts with '.'"), ("..", "not a folder name"), ("ja\x07ne", "control character (U+0007)"),
          ("tab\there", "control character (U+0009)")]


@pytest.mark.parametrize("kind,student,reason", [(k, s, r) for k in ("zip", "folder") for s, r in UNSAFE])
def test_unsafe_ids_are_refused_with_the_file_and_the_reason(course, tmp_path, kind, student, reason):
    bad = lms(SDPA, student, TS1, f"{SDPA}.ipynb")
    files = {bad: body("bad"), lms(SDPA, "alice", TS1, f"{SDPA}.ipynb"): body("alice")}
    rep = collect.collect(course, make_source(tmp_path, kind, files))
    assert set(rep.collected) == {("alice", SDPA)}
    assert [n for n, _ in rep.unmatched] == [bad]
    text = why(rep, bad)
    assert text.startswith("refused: ") and reason in text
    assert sorted(p.name for p in (course / "submitted").iterdir()) == ["alice"]


def test_a_zip_member_too_long_for_a_folder_is_listed(course, tmp_path):
    bad = lms(SDPA, "x" * 300, TS1, f"{SDPA}.ipynb")
    rep = collect.collect(course, make_source(tmp_path, "zip", {bad: body("x")}))
    assert rep.collected == {}
    assert "longer than 255 bytes" in why(rep, bad)


def test_an_id_without_a_prefix_that_starts_with_a_dot_is_refused(course, tmp_path):
    bad = lms("", ".secret", TS1, f"{SDPA}.ipynb")
    rep = collect.collect(course, make_source(tmp_path, "folder", {bad: body("x")}))
    assert rep.collected == {}
    assert "starts with '.'" in why(rep, bad)


def test_an_ambiguous_name_says_which_of_its_ids_could_not_be_folders(course, tmp_path):
    bad = lms("assignment01", "..", TS1, f"{SDPA}.ipynb")
    rep = collect.collect(course, make_source(tmp_path, "zip", {bad: body("x")}))
    assert rep.collected == {}
    assert rep.ambiguous == {bad: ["assignment01_..", ".."]}
    assert "'..': '..' is not a folder name" in why(rep, bad)


def test_unsafe_folder_names_in_the_nbgrader_layout_are_refused(course, tmp_path):
    src = tmp_path / "incoming"
    for student in ("zoë", "john doe", "o'brien", ".hidden", "bad\x01id", "jane_doe"):
        (src / student / SDPA).mkdir(parents=True)
        (src / student / SDPA / f"{SDPA}.ipynb").write_bytes(body(student))
    rep = collect.collect(course, src)
    assert set(rep.collected) == {(s, SDPA) for s in ("zoë", "john doe", "o'brien", "jane_doe")}
    assert "starts with '.'" in why(rep, ".hidden/")
    assert "control character (U+0001)" in why(rep, "bad\x01id/")
    assert submitted(course)[("o'brien", SDPA)][f"{SDPA}.ipynb"] == body("o'brien")


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\0b", ".x", "a\nb", "\x7f", "a\u2028b", "\udcff", "x" * 256])
def test_unsafe_id_reason_names_each_unsafe_kind(bad):
    assert collect.unsafe_id_reason(bad)


@pytest.mark.parametrize("good", ["jane_doe", "john doe", "zoë", "李雷", "o'brien", '"q"', "a.b", "x" * 255, "-dash"])
def test_unsafe_id_reason_accepts_ordinary_ids(good):
    assert collect.unsafe_id_reason(good) is None


# --------------------------------------------------------------------------- never two students in one folder


def test_ids_the_roster_merges_are_not_merged(course, tmp_path):
    # The roster lacks jane_doe and john_doe: both files read as "doe", but differ before it.
    files = {lms("A1", s, TS1, f"{SDPA}.ipynb"): body(s) for s in ("jane_doe", "john_doe")}
    rep = collect.collect(course, make_source(tmp_path, "zip", files), roster=["doe"])
    assert rep.collected == {}
    assert not (course / "submitted").exists()
    for s in ("jane_doe", "john_doe"):
        text = why(rep, lms("A1", s, TS1, f"{SDPA}.ipynb"))
        assert "different students" in text
        assert "older attempt" not in text
    assert not any("older attempt" in n for n in rep.notes)


def test_a_file_system_that_cannot_tell_two_ids_apart_keeps_them_apart(course, tmp_path, monkeypatch):
    # Simulate a case-insensitive file system: submitted/jane is the folder of "Jane".
    (course / "submitted" / "Jane" / SDPA).mkdir(parents=True)
    (course / "submitted" / "Jane" / SDPA / f"{SDPA}.ipynb").write_bytes(body("Jane"))
    (course / "submitted" / "jane").symlink_to("Jane")
    real = collect.os.listdir
    monkeypatch.setattr(collect.os, "listdir", lambda p: [e for e in real(p) if e != "jane"])
    rep = collect.collect(course, make_source(tmp_path, "folder", {lms(SDPA, "jane", TS1, f"{SDPA}.ipynb"): body("j")}))
    assert rep.collected == {}
    assert "cannot tell the student 'jane'" in why(rep, "jane_attempt")
    assert (course / "submitted" / "Jane" / SDPA / f"{SDPA}.ipynb").read_bytes() == body("Jane")


# --------------------------------------------------------------------------- attempts


@KINDS
def test_the_latest_attempt_is_kept_and_the_dropped_ones_are_named(course, tmp_path, kind):
    files = {lms(SDPA, "jane_doe", ts, f"{SDPA}.ipynb"): body(ts) for ts in (TS2, TS1, TS3)}
    files[lms(SDPA, "jane_doe", TS1, "data.csv")] = b"old extra file"
    rep = collect.collect(course, make_source(tmp_path, kind, files))
    got = submitted(course)[("jane_doe", SDPA)]
    assert got == {f"{SDPA}.ipynb": body(TS3), "timestamp.txt": b"2024-01-17 08:15:00\n"}  # nothing of older attempts
    dropped = [n for n in rep.notes if "older attempt" in n]
    assert len(dropped) == 3
    for ts in (TS1, TS2):
        assert any(n.startswith(lms(SDPA, "jane_doe", ts, f"{SDPA}.ipynb")) for n in dropped)
    assert any(n.startswith(lms(SDPA, "jane_doe", TS1, "data.csv")) for n in dropped)


def test_an_older_attempt_collected_later_does_not_replace_the_newer(course, tmp_path):
    new = make_source(tmp_path / "a", "folder", {lms(SDPA, "bob", TS2, f"{SDPA}.ipynb"): body("new")})
    old = make_source(tmp_path / "b", "folder", {lms(SDPA, "bob", TS1, f"{SDPA}.ipynb"): body("old")})
    collect.collect(course, new)
    rep = collect.collect(course, old)
    assert rep.collected == {}
    assert any("already collected" in n for n in rep.notes)
    assert submitted(course)[("bob", SDPA)][f"{SDPA}.ipynb"] == body("new")
    newer = make_source(tmp_path / "c", "folder", {lms(SDPA, "bob", TS3, f"{SDPA}.ipynb"): body("newer")})
    collect.collect(course, newer)
    assert submitted(course)[("bob", SDPA)][f"{SDPA}.ipynb"] == body("newer")


def test_attempts_without_timestamps_are_not_guessed(course, tmp_path):
    files = {f"bob-{i}-{SDPA}.ipynb": body(str(i)) for i in (1, 2)}
    rep = collect.collect(course, make_source(tmp_path, "folder", files),
                          regex=r"^(?P<student_id>[^-]+)-\d-(?P<file_id>.+)$")
    assert rep.collected == {}
    assert "no timestamp tells which is the latest" in why(rep, "bob-1")
    assert "no timestamp tells which is the latest" in why(rep, "bob-2")


def test_two_files_of_one_attempt_for_the_same_notebook(course, tmp_path):
    files = {lms(SDPA, "amy", TS1, f"{SDPA}.ipynb"): body("exact"),
             lms(SDPA, "amy", TS1, f"{SDPA} (copy).ipynb"): body("copy"),
             lms(SDPA, "ben", TS1, f"{SDPA} (1).ipynb"): body("1"),
             lms(SDPA, "ben", TS1, f"{SDPA} (2).ipynb"): body("2")}
    rep = collect.collect(course, make_source(tmp_path, "folder", files))
    assert submitted(course)[("amy", SDPA)][f"{SDPA}.ipynb"] == body("exact")
    assert "already" in why(rep, "(copy)")
    assert ("ben", SDPA) not in rep.collected
    assert "cannot be told" in why(rep, f"{SDPA} (1)")


# --------------------------------------------------------------------------- what is not collected, and old names


def test_everything_not_collected_is_listed_with_why(course, tmp_path):
    files = {"README.txt": b"exported by the LMS",
             lms(SDPA, "ann", TS1, "") + "x": b"",  # file name "x": no assignment
             f"{SDPA}_ann_attempt_{TS1}.txt": b"receipt",  # no file name after the timestamp
             lms(SDPA, "", TS1, f"{SDPA}.ipynb"): b"",  # nothing between the assignment's name and the mark
             lms("", "bob", TS1, "99_other.ipynb"): b""}  # not an assignment of the course
    rep = collect.collect(course, make_source(tmp_path, "zip", files))
    assert rep.collected == {}
    assert "not [PREFIX_]STUDENT_attempt_TIMESTAMP_FILE" in why(rep, "README.txt")
    assert "not a notebook" in why(rep, "_x") and "which assignment" in why(rep, "_x")
    assert "not [PREFIX_]STUDENT" in why(rep, ".txt")
    assert "the student id is empty" in why(rep, f"{SDPA}__attempt")
    assert "cannot tell which assignment '99_other.ipynb'" in why(rep, "bob_attempt")
    assert len(rep.unmatched) == 5


def test_unsafe_zip_members_are_listed(course, tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("../escape.ipynb", b"{}")
        z.writestr("__MACOSX/._junk", b"")
        z.writestr("..\\..\\evil.ipynb", b"{}")  # a Windows archiver's separators
        z.writestr(lms(SDPA, "amy", TS1, f"{SDPA}.ipynb"), body("amy"))
        z.writestr("export\\" + lms(SDPA, "ben", TS1, f"{SDPA}.ipynb"), body("ben"))
    rep = collect.collect(course, path)
    assert set(rep.collected) == {("amy", SDPA), ("ben", SDPA)}
    assert "unsafe" in why(rep, "escape")
    assert "unsafe" in why(rep, "__MACOSX")
    assert "unsafe" in why(rep, "evil")
    assert len(rep.unmatched) == 3
    assert not (tmp_path.parent / "evil.ipynb").exists()


@KINDS
def test_names_of_the_old_kinds_are_collected_as_before(course, tmp_path, kind):
    files = {lms(ORIENT, "alice", TS1, f"{ORIENT}.ipynb"): body("alice"),
             lms(ORIENT, "bob", TS2, f"{ORIENT}.ipynb"): body("bob new"),
             lms(ORIENT, "bob", TS1, f"{ORIENT}.ipynb"): body("bob old"),
             lms("", "carol", TS1, f"{SDPA}.ipynb"): body("carol"),
             lms("Homework 1", "dave.k-9", TS1, f"{SDPA}.ipynb"): body("dave")}
    rep = collect.collect(course, make_source(tmp_path, kind, files))
    assert set(rep.collected) == {("alice", ORIENT), ("bob", ORIENT), ("carol", SDPA)}
    # "Homework 1_dave.k-9" could itself be an id (ids may hold spaces): a roster tells.
    assert list(rep.ambiguous.values()) == [["Homework 1_dave.k-9", "dave.k-9"]]
    rep = collect.collect(course, make_source(tmp_path / "again", kind, files), roster=["dave.k-9"])
    assert ("dave.k-9", SDPA) in rep.collected
    got = submitted(course)
    assert got[("bob", ORIENT)] == {f"{ORIENT}.ipynb": body("bob new"), "timestamp.txt": b"2024-01-16 09:00:00\n"}
    assert any("older attempt" in n for n in rep.notes)


def test_nbgrader_layout_replaces_a_submission_and_keeps_its_files(course, tmp_path):
    src = tmp_path / "incoming"
    (src / "alice" / SDPA / "data").mkdir(parents=True)
    (src / "alice" / SDPA / f"{SDPA}.ipynb").write_bytes(body("a2"))
    (src / "alice" / SDPA / "data" / "x.txt").write_text("x")
    (src / "alice" / SDPA / "timestamp.txt").write_text("2024-01-01 00:00:00\n")
    (src / "alice" / "99_unknown").mkdir()
    (course / "submitted" / "alice" / SDPA).mkdir(parents=True)
    (course / "submitted" / "alice" / SDPA / "stale.txt").write_text("old")
    rep = collect.collect(course, src)
    assert rep.collected == {("alice", SDPA): [f"{SDPA}.ipynb", "data/x.txt", "timestamp.txt"]}
    assert set(submitted(course)[("alice", SDPA)]) == {f"{SDPA}.ipynb", "data/x.txt", "timestamp.txt"}
    assert "not an assignment" in why(rep, "alice/99_unknown")


def test_dry_run_copies_nothing(course, tmp_path):
    src = make_source(tmp_path, "zip", {lms(SDPA, "amy", TS1, f"{SDPA}.ipynb"): body("amy")})
    rep = collect.collect(course, src, dry_run=True)
    assert set(rep.collected) == {("amy", SDPA)}
    assert not (course / "submitted").exists()


def test_a_custom_regex_with_an_assignment_group(course, tmp_path):
    files = {f"{SDPA}--o'brien--nb.ipynb": body("o"), "99_nope--amy--nb.ipynb": body("a")}
    rep = collect.collect(course, make_source(tmp_path, "folder", files),
                          regex=r"^(?P<assignment>.+?)--(?P<student_id>.+)--(?P<file_id>.+)$")
    assert set(rep.collected) == {("o'brien", SDPA)}
    assert "cannot tell which assignment" in why(rep, "99_nope")


def test_a_regex_naming_the_lms_prefix_settles_the_split(course, tmp_path):
    # The pattern README.md suggests when no roster is at hand.
    regex = r"^assignment01_(?P<student_id>.+?)_attempt_(?P<timestamp>[0-9-]+)_(?P<file_id>.+)$"
    files = {lms("assignment01", s, TS1, f"{SDPA}_attempt_{TS2}_x.ipynb"): body(s) for s in ("jane_doe", "doe")}
    rep = collect.collect(course, make_source(tmp_path, "zip", files), regex=regex)
    assert set(rep.collected) == {("jane_doe", SDPA), ("doe", SDPA)}
    assert submitted(course)[("doe", SDPA)]["timestamp.txt"] == b"2024-01-15 10:30:00\n"


# --------------------------------------------------------------------------- bad input


def test_bad_arguments_say_what_was_wrong(course, tmp_path):
    src = make_source(tmp_path, "folder", {lms(SDPA, "amy", TS1, f"{SDPA}.ipynb"): body("amy")})
    with pytest.raises(ValueError, match="no group named student_id"):
        collect.collect(course, src, regex=r"^(?P<who>.+)$")
    with pytest.raises(ValueError, match="no assignment '02_x'"):
        collect.collect(course, src, assignment="02_x")
    (course / "submitted" / "amy" / SDPA).mkdir(parents=True)
    with pytest.raises(ValueError, match="inside .*submitted, where collect writes"):
        collect.collect(course, course / "submitted")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        collect.collect(course, tmp_path / "missing.zip")
    with pytest.raises(ValueError, match=r"expected student ids as strings, got 3 \(int\)"):
        collect.collect(course, src, roster=["a", 3])
    bad_csv = tmp_path / "r.csv"
    bad_csv.write_text("name,email\nJane,j@x\n")
    with pytest.raises(ValueError, match=r"r\.csv: a CSV file without an id column \(its columns: \['name', 'email'\]"):
        collect.collect(course, src, roster=bad_csv)
    latin = tmp_path / "r.txt"
    latin.write_bytes("zoë\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"r\.txt: not UTF-8"):
        collect.collect(course, src, roster=latin)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no student ids"):
        collect.collect(course, src, roster=empty)
    with pytest.raises(ValueError, match="cannot be read"):
        collect.collect(course, src, roster=tmp_path / "none.txt")


def test_roster_file_formats(tmp_path):
    p = tmp_path / "r.txt"
    p.write_text("\ufeffjane_doe\r\njohn doe\n  zoe\u0308  \no'brien, pat\n", encoding="utf-8")
    assert collect.load_roster(p) == {"jane_doe", "john doe", "zoë", "o'brien, pat"}
    p = tmp_path / "one_column.txt"
    p.write_text("Username\njane_doe\n", encoding="utf-8")
    assert collect.load_roster(p) == {"jane_doe"}
    p = tmp_path / "export"
    p.write_text('Username,First,Last\n"doe, j",Jane,Doe\n李雷,Lei,Li\n', encoding="utf-8")
    assert collect.load_roster(p) == {"doe, j", "李雷"}


def test_command_line_roster_and_report(course, tmp_path, capsys):
    from autograder.__main__ import main

    files = {lms("assignment01", s, TS1, f"{SDPA}.ipynb"): body(s) for s in ("jane_doe", "john_doe")}
    src = make_source(tmp_path, "zip", files)
    assert main(["collect", "--course", str(course), str(src)]) == 0
    out = capsys.readouterr().out
    assert "collected 0 submission(s)" in out and "2 file(s) NOT collected" in out
    assert "ambiguous: the student id could be 'assignment01_jane_doe', 'jane_doe' or 'doe'" in out
    roster = tmp_path / "roster.txt"
    roster.write_text("jane_doe\njohn_doe\n")
    assert main(["collect", "--course", str(course), "--roster", str(roster), str(src)]) == 0
    out = capsys.readouterr().out
    assert "collected 2 submission(s) from 2 student(s)" in out and "NOT collected" not in out
    bell = make_source(tmp_path / "bell", "folder", {lms(SDPA, "ja\x07ne", TS1, f"{SDPA}.ipynb"): body("x")})
    assert main(["collect", "--course", str(course), str(bell)]) == 0
    out = capsys.readouterr().out
    assert "\x07" not in out and "ja\\x07ne" in out and "control character (U+0007)" in out
    assert main(["collect", "--course", str(course), "--roster", str(tmp_path / "nope.txt"), str(src)]) == 1
    assert "roster" in capsys.readouterr().err


# --------------------------------------------------------------------------- a submission already collected


def _nbgrader_source(tmp_path, student, tag, stamp=None):
    """An nbgrader-layout folder with one submission (and nbgrader's timestamp.txt when given)."""
    folder = tmp_path / f"nbgrader_{tag}"
    sub = folder / student / SDPA
    sub.mkdir(parents=True)
    (sub / f"{SDPA}.ipynb").write_bytes(body(tag))
    if stamp:
        (sub / "timestamp.txt").write_text(stamp + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("later_kind", ["flat, no timestamp", "nbgrader, no timestamp.txt", "nbgrader, older"])
def test_a_collected_submission_is_never_replaced_by_one_that_cannot_be_later(course, tmp_path, later_kind):
    """Collected with a timestamp; then a submission of the same student that is older, or has no
    timestamp to tell, is dropped and reported (the newer one stays); --replace takes it, named."""
    first = make_source(tmp_path / "a", "zip", {lms("", "jane", TS2, f"{SDPA}.ipynb"): body("new")})
    collect.collect(course, first, roster=["jane"])
    kept = submitted(course)[("jane", SDPA)]
    assert kept[f"{SDPA}.ipynb"] == body("new")
    if later_kind == "flat, no timestamp":
        second = make_source(tmp_path / "b", "folder", {f"jane_{SDPA}.ipynb": body("old")})
        args = dict(regex=r"(?P<student_id>[a-z]+)_(?P<file_id>.+)")
    elif later_kind == "nbgrader, no timestamp.txt":
        second, args = _nbgrader_source(tmp_path, "jane", "old"), {}
    else:
        second, args = _nbgrader_source(tmp_path, "jane", "old", stamp="2024-01-15 10:30:00.000000 UTC"), {}
    rep = collect.collect(course, second, roster=["jane"], **args)
    assert submitted(course)[("jane", SDPA)] == kept
    assert ("jane", SDPA) not in rep.collected
    notes = [n for n in rep.notes if "which is kept; this one dropped (--replace takes it)" in n]
    assert len(notes) == 1 and "2024-01-16 09:00:00" in notes[0], rep.notes
    rep = collect.collect(course, second, roster=["jane"], replace=True, **args)
    assert submitted(course)[("jane", SDPA)][f"{SDPA}.ipynb"] == body("old")
    assert any("replaces the different submission of 'jane'" in n and "--replace" in n for n in rep.notes), rep.notes


def test_a_later_or_untimed_submission_replaces_and_says_so_and_the_same_one_again_is_quiet(course, tmp_path):
    first = _nbgrader_source(tmp_path, "jane", "one")  # no timestamp.txt
    rep = collect.collect(course, first)
    assert ("jane", SDPA) in rep.collected and not rep.notes
    again = collect.collect(course, first)  # the same files again: nothing to say
    assert ("jane", SDPA) in again.collected and not again.notes
    second = _nbgrader_source(tmp_path, "jane", "two", stamp="2024-01-16 09:00:00.000000 UTC")
    rep = collect.collect(course, second)
    assert submitted(course)[("jane", SDPA)] == {f"{SDPA}.ipynb": body("two"),
                                                "timestamp.txt": b"2024-01-16 09:00:00.000000 UTC\n"}
    assert rep.notes == [f"jane/{SDPA}: replaces the different submission of 'jane' collected before "
                         "(it had no timestamp)"]
    third = make_source(tmp_path / "c", "zip", {lms("", "jane", TS3, f"{SDPA}.ipynb"): body("three")})
    rep = collect.collect(course, third, roster=["jane"])
    assert submitted(course)[("jane", SDPA)][f"{SDPA}.ipynb"] == body("three")
    assert any("collected before (2024-01-16 09:00:00.000000 UTC)" in n for n in rep.notes), rep.notes
    same = collect.collect(course, third, roster=["jane"])
    assert ("jane", SDPA) in same.collected and not same.notes
