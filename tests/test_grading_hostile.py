"""Hostile submissions, written as a determined student would write them, graded in one class run
on notebook 00 (in the bubblewrap sandbox): each must change nothing but its own result, and
that result only as the judge (outside the student's code) decides.

One course, one grading run with two workers (plus a forced re-grade of four identical
submissions and one run without the sandbox), shared by every test of this module.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
from contextlib import redirect_stderr
from pathlib import Path

import nbformat
import pytest
from conftest import SOLUTIONS, fill_submission, find_cell, insert_after, run_cli, set_source

from autograder.grading import autograde, course, engine
from autograder.grading import nbgrader_tools as nbt
from autograder.grading import sandbox as sandbox_mod

pytestmark = pytest.mark.slow

NAME = "00_orientation"
FILE = f"{NAME}.ipynb"
STEPS = {"checkpoint_fallback": 1, "checkpoint_einsum_reading": 1, "checkpoint_batched_matmul": 1,
         "check_pairwise_scores": 2}
FULL = dict(STEPS)
ZERO = {k: 0 for k in STEPS}
LIMITS = engine.Limits(cell_timeout=10, total_timeout=60, memory_mb=2000, max_output_bytes=100_000, file_mb=64)
BUGGY_PAIRWISE = "return 2 * (q @ k.transpose(-2, -1))  # bug: twice the scores\n"
HIDDEN_CALL = "check_pairwise_scores(pairwise_scores, hidden=True)"
TOKEN = "HOSTILE7c1e"  # in the daemon's command line and its marker's name
RAISED = "RAISEDLEAK"  # starts the text of every exception the spy raises from a check
HIDDEN_LEAK = "HIDDENINPUTLEAK"  # starts the text the spy raises when called with hidden inputs
HERE = str(Path(__file__).resolve().parents[1])
SANDBOX_UIDS = range(sandbox_mod.BASE_UID, sandbox_mod.BASE_UID + 64)


# --------------------------------------------------------------------------- the hostile code

# Fake reports and scores, patched checks, patched comparisons, forged observation files. Every
# patch makes things "pass": for a correct notebook that is the truth, for a blank one a lie.
MISCHIEF = r'''
import glob, json, os, sys, zipfile
import torch
import autograder, autograder.core as _core
import autograder.frame.compare as _cmp
from autograder.frame.observe import Observations

print("check_pairwise_scores: 2 / 2 points\n  ✓ all checks pass\nScore: 5 / 5")
print("2.0")
print("fake: all checks pass", file=sys.stderr)
check_concept = check_pairwise_scores = check_softmax = lambda *a, **k: 2.0
for _m in (autograder, _core):
    for _n in list(vars(_m)):
        if _n.startswith("check_"):
            setattr(_m, _n, lambda *a, **k: 2.0)
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
_yes = lambda *a, **k: _cmp.Comparison(True, "")
for _m in (_core, _cmp):
    _m.compare = _yes
    _m.close = lambda *a, **k: True
    _m.matches = lambda *a, **k: True
    _m.isclose_scalar = lambda *a, **k: True

# Forged observation records, with guessed names, some junk, some in the real format.
_obs = ".grading-observations"
os.makedirs(_obs, exist_ok=True)
_steps = {"check_pairwise_scores": "pairwise_scores", "checkpoint_fallback": "00.fallback",
          "checkpoint_einsum_reading": "00.einsum_reading", "checkpoint_batched_matmul": "00.batched_matmul"}
for _gid, _step in _steps.items():
    for _name in (_gid, _gid.replace("_", "-")):
        for _i in range(3):
            with open(f"{_obs}/{_name}-{_i}.json", "w") as _f:
                json.dump({"points": 2.0, "passed": True}, _f)
            with zipfile.ZipFile(f"{_obs}/{_name}-{_i}.zip", "w") as _z:
                _z.writestr("observations.json", json.dumps({"points": 2.0, "passed": True, "score": 2.0}))
            Observations(_step, 0, bool(_i)).save(f"{_obs}/{_name}-{_i}.record.zip")
'''

# A blank notebook replaces the probe with one that forges its records (the right paths and
# seeds, which it reads from the items it is handed; made-up contents).
REPLACE_PROBE = r'''
import autograder.grading.probing as _probing
from autograder.frame.observe import Entry, Observations

def _forged_probe(items):
    for name, subject, seed, hidden, path in items:
        rec = Observations(name, seed, hidden, [Entry("subject", None, "pass"), Entry("points", None, 2.0)])
        rec.save(path)
        with open(path + ".points", "w") as f:
            f.write("2.0")
    print("2.0")

_probing.probe_cell = _forged_probe
for _m in list(sys.modules.values()):
    if getattr(_m, "probe_cell", None) is not None and _m is not _probing:
        try:
            _m.probe_cell = _forged_probe
        except Exception:
            pass
'''

# A correct notebook wraps the probe: the real one runs, then forged files are added beside it.
WRAP_PROBE = r'''
import autograder.grading.probing as _probing
_real_probe = _probing.probe_cell

def _wrapped_probe(items):
    _real_probe(items)
    for name, subject, seed, hidden, path in items:
        with open(path + ".points", "w") as f:
            f.write("2.0")
        with open(path.rsplit("-", 1)[0] + "-9.zip", "wb") as f:
            f.write(b"PK forged")
    print("2.0")

_probing.probe_cell = _wrapped_probe
'''

AFTER_ANSWERS = r'''
import os, sys
print("a warning on stderr", file=sys.stderr)
with open("big.bin", "wb") as f:
    chunk = b"\0" * 2**20
    try:
        for _ in range(300):  # 300 MB, past the grader's file size limit
            f.write(chunk)
    except OSError as e:
        print("big file stopped:", e)
raise RuntimeError("after the answers, on purpose")
'''


def forge_result_code(students):
    """Writes a forged result into every descriptor and every result path it can guess."""
    steps = [{"id": s, "points": p, "max_points": p, "passed": True, "message": "forged"} for s, p in STEPS.items()]
    forged = {"status": "ok", "message": "graded", "score": 5.0, "max_score": 5.0, "steps": steps, "notes": []}
    return rf'''
import glob, json, os, re, time
forged = {json.dumps(forged)!r}
for fd in range(3, 1024):
    try:
        os.write(fd, (forged + "\n" + "done /tmp/job.json\n").encode())
    except OSError:
        pass
guesses = ["result.json", "../result.json", "../../result.json", "/tmp/result.json", "/scratch/result.json"]
for pattern in ["/tmp/mhsa_autograde_*/job_*/", "/tmp/*/job_*/", "/tmp/mhsa_autograde_*/job_forger_*/"]:
    guesses += [d + "result.json" for d in glob.glob(pattern)]
for student in {list(students)!r}:
    guesses += [f"/tmp/mhsa_autograde_x/job_{{student}}_x/result.json"]
try:
    for line in open("/proc/self/mountinfo"):
        host = line.split()[3]
        if "mhsa" in host:
            top = os.path.dirname(host)
            guesses += glob.glob(top + "/job_*/result.json") + [top + "/result.json"]
except OSError:
    pass
for path in guesses:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(forged)
        print("wrote", path)
    except OSError as e:
        print("could not write", path, type(e).__name__)
# The run's own report, rewritten again and again by a process that outlives the kernel.
if os.fork() == 0:
    os.setsid()
    nb = {{"cells": [], "metadata": {{}}, "nbformat": 4, "nbformat_minor": 5}}
    ex = json.dumps({{"ran": list(range(40)), "timed_out": [], "truncated": [], "died_in": None,
                      "stopped": None, "seconds": 1.0}})
    for _ in range(3000):
        for out in ("/scratch/out", "../out"):
            try:
                os.makedirs(out, exist_ok=True)
                with open(out + "/execution.json", "w") as f:
                    f.write(ex)
                with open(out + "/executed.ipynb", "w") as f:
                    json.dump(nb, f)
            except OSError:
                pass
        time.sleep(0.05)
    os._exit(0)
'''


def intrude_code(root, victims):
    """Tries to change other students' results and the gradebook, by every path it can think of."""
    return rf'''
import glob, json, os, shutil
ROOT = {str(root)!r}
victims = {list(victims)!r}
forged = json.dumps({{"student": "alice", "assignment": "{NAME}", "status": "ok", "score": 0.0, "max_score": 5.0,
                     "steps": [], "notes": []}})
bases = [ROOT, "../..", "../../..", "../../../..", "/proc/1/root" + ROOT, f"/proc/{{os.getppid()}}/cwd/../../..",
         f"/proc/{{os.getppid()}}/root" + ROOT, "/proc/1/cwd/../../.."]
done = []
for base in bases:
    targets = [base + "/gradebook.db", base + "/.grading_seed", base + "/source/{NAME}/{FILE}"]
    for v in victims:
        targets += [f"{{base}}/submitted/{{v}}/{NAME}/{FILE}", f"{{base}}/autograded/{{v}}/{NAME}/{FILE}",
                    f"{{base}}/grading/{{v}}/{NAME}.json"]
    for t in targets:
        try:
            with open(t, "r+b") as f:
                f.write(b"garbage")
            done.append(t)
        except OSError:
            pass
        try:
            os.makedirs(os.path.dirname(t), exist_ok=True)
            with open(t, "w") as f:
                f.write(forged)
            done.append(t)
        except OSError:
            pass
        try:
            os.remove(t)
            done.append("removed " + t)
        except OSError:
            pass
    for d in ("autograded", "grading", "submitted/" + victims[0]):
        shutil.rmtree(f"{{base}}/{{d}}", ignore_errors=True)
        try:
            with open(f"{{base}}/{{d}}/planted.txt", "w") as f:
                f.write("x")
            done.append(f"{{base}}/{{d}}/planted.txt")
        except OSError:
            pass
print("changed:", done)
'''


def spy_read_code(root, other):
    """Reads the secret, the gradebook, the hidden tests and another submission by every path."""
    return rf'''
import os
ROOT = {str(root)!r}
names = [".grading_seed", "gradebook.db", "source/{NAME}/{FILE}", "submitted/{other}/{NAME}/{FILE}"]
bases = [ROOT, "../..", "../../..", "../../../..", "/proc/1/root" + ROOT, "/proc/self/root" + ROOT,
         f"/proc/{{os.getppid()}}/cwd/../../..", f"/proc/{{os.getppid()}}/root" + ROOT, "/proc/1/cwd/../../.."]
found = []
for base in bases:
    for n in names:
        try:
            with open(f"{{base}}/{{n}}", "rb") as f:
                found.append(f.read(4000).decode("utf-8", "replace"))
        except OSError as e:
            found.append(f"{{base}}/{{n}}: {{type(e).__name__}}")
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            found.append(open(f"/proc/{{pid}}/environ", "rb").read().decode("utf-8", "replace"))
            found.append(open(f"/proc/{{pid}}/cmdline", "rb").read().decode("utf-8", "replace"))
        except OSError:
            pass
FOUND = "\n".join(found)
print(FOUND)
'''


SPY_ANSWER = f'raise RuntimeError("{RAISED} " + FOUND[-3000:])\n'
SPY_PAIRWISE = f'''import inspect
if any(fr.frame.f_locals.get("hidden") is True for fr in inspect.stack()):
    raise ValueError("{HIDDEN_LEAK} " + repr(q.tolist()) + repr(k.tolist()) + FOUND[-2000:])
return q @ k.transpose(-2, -1)
'''
SPY_RAISE_ELSEWHERE = f'raise RuntimeError("{RAISED} in a cell of my own " + FOUND[-3000:])\n'

DAEMON = rf'''
import os, sys
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        code = ("import os, time\n"
                "time.sleep(20)\n"
                "for d in ['/tmp', '.', '/scratch', '/proc/1/root/tmp', '..', '../..', '../../..', '../../../..']:\n"
                "    try:\n"
                "        open(d + '/{TOKEN}_marker', 'w').write('still alive')\n"
                "    except OSError:\n"
                "        pass\n")
        os.execv(sys.executable, [sys.executable, "-c", code, "{TOKEN}"])
    os._exit(0)
os.waitpid(pid, 0)
print("daemon started")
'''

FORK_BOMB = r'''
import os, time
n = 0
for _ in range(20000):
    try:
        pid = os.fork()
    except OSError:
        continue
    if pid == 0:
        try:
            for _ in range(20):
                os.fork()
        except OSError:
            pass
        time.sleep(3)
        os._exit(0)
    n += 1
print("forked", n)
'''

MEMORY_BOMBS = r'''
import os
chunk = b"\1" * 2**24
for folder in ("/dev/shm", "/tmp", os.environ.get("TMPDIR", "/tmp")):
    for i in range(400):  # up to 6.4 GB each
        try:
            with open(f"{folder}/bomb{i}", "wb") as f:
                f.write(chunk)
        except OSError as e:
            print(folder, "full after", i, "chunks:", type(e).__name__)
            break
try:
    from multiprocessing import shared_memory
    blocks = []
    for i in range(40):  # 40 x 256 MB, each touched
        shm = shared_memory.SharedMemory(create=True, size=2**28)
        shm.buf[::4096] = b"\1" * len(shm.buf[::4096])
        blocks.append(shm)
except Exception as e:
    print("shared memory stopped:", type(e).__name__)
heap = []
try:
    while True:
        heap.append(bytearray(2**26))
except MemoryError:
    print("heap stopped after", len(heap), "blocks")
del heap
'''

BIG_LINE = r'''
import os
os.write(1, b"a partial line, no newline")
line = b"y" * 300_000_000
view = memoryview(line)
while view:
    view = view[os.write(1, view):]
os.write(1, b"\n")
'''


def make_cases(root, learner, source):
    ok = lambda **r: fill_submission(learner, source, r or None)  # noqa: E731
    blank = lambda: nbformat.from_dict(learner)  # noqa: E731
    cases = {}
    cases["alice"] = (ok(), FULL)
    for i in range(1, 5):
        cases[f"twin{i}"] = (ok(pairwise_scores=BUGGY_PAIRWISE), None)

    nb = insert_after(blank(), "nb00-code-02", MISCHIEF)
    nb = insert_after(nb, "nb00-code-04", REPLACE_PROBE)
    nb = insert_after(nb, "pairwise_scores", "del pairwise_scores\n")  # the probe's lookup fails
    cases["blank_mischief"] = (nb, ZERO)

    nb = insert_after(ok(), "nb00-code-02", MISCHIEF)
    nb = insert_after(nb, "nb00-code-04", WRAP_PROBE)
    nb = set_source(nb, "nb00-code-20", AFTER_ANSWERS)
    cases["correct_mischief"] = (nb, FULL)

    nb = insert_after(blank(), "nb00-code-04", forge_result_code(["forger", "alice"]))
    cases["forger"] = (nb, ZERO)

    cases["intruder"] = (set_source(ok(), "nb00-code-13", intrude_code(root, ["alice", "twin1", "twin2"])), FULL)

    nb = insert_after(ok(pairwise_scores=SPY_PAIRWISE, answer_fallback=SPY_ANSWER,
                          answer_einsum_reading=SPY_ANSWER),
                       "nb00-code-02", spy_read_code(root, "alice"))
    nb = set_source(nb, "nb00-code-20", SPY_RAISE_ELSEWHERE)
    cases["spy"] = (nb, {"checkpoint_fallback": 0, "checkpoint_einsum_reading": 0, "checkpoint_batched_matmul": 1,
                         "check_pairwise_scores": "partial"})

    cases["daemon"] = (set_source(ok(), "nb00-code-04", DAEMON), FULL)
    cases["fork_bomb"] = (set_source(ok(), "nb00-code-20", FORK_BOMB), None)
    cases["memory_bombs"] = (set_source(ok(), "nb00-code-04", MEMORY_BOMBS), None)
    cases["big_line"] = (set_source(ok(), "nb00-code-04", BIG_LINE), None)
    # Kills the process that runs its notebook (the kernel's parent): its own run, never a grader error.
    cases["parent_killer"] = (set_source(ok(), "nb00-code-04", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"),
                              None)
    cases["nosandbox"] = (ok(), FULL)
    return cases


# --------------------------------------------------------------------------- the graded class

LEGIT = ("gradebook.db", "gradebook.db-journal", "autograded", "grading", "feedback", "exports")


def _hashes(root):
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] in LEGIT or not p.is_file():
            continue
        out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _sandbox_processes():
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uid = next((int(l.split()[1]) for l in status.splitlines() if l.startswith("Uid:")), -1)
        # (Other checkouts on this machine may be grading with the same sandbox uids: only this
        # checkout's interpreter and code count.)
        if (uid in SANDBOX_UIDS and HERE in cmd) or TOKEN in cmd:
            found.append((entry, uid, cmd[:200]))
    return found


def _mem_available_mb():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return None


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if not sandbox_mod.check_sandbox()[0]:
        pytest.skip("no bubblewrap sandbox on this machine")
    tmp = tmp_path_factory.mktemp("hostile")
    sol = tmp / "solutions"
    sol.mkdir()
    shutil.copy(SOLUTIONS / FILE, sol / FILE)
    if (SOLUTIONS / "data").is_dir():
        shutil.copytree(SOLUTIONS / "data", sol / "data")
    root = tmp / "course"
    course.build(root, sol)
    source = nbformat.read(str(course.source_notebook(root, NAME)), as_version=4)
    learner = nbformat.read(str(root / "release" / NAME / FILE), as_version=4)
    cases = make_cases(root, learner, source)
    for student, (nb, _) in cases.items():
        path = root / "submitted" / student / NAME / FILE
        path.parent.mkdir(parents=True)
        nbformat.write(nb, str(path))
    course.grading_seed(root, NAME)  # the secret exists before anyone can try to read it
    before = _hashes(root)

    mem_low = [_mem_available_mb()]
    stop = []

    def watch():
        while not stop:
            mem_low[0] = min(mem_low[0], _mem_available_mb())
            time.sleep(0.2)

    import threading

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    students = [s for s in cases if s != "nosandbox"]
    t0 = time.monotonic()
    run = autograde.grade_class(root, students=students, workers=2, limits=LIMITS, stream=io.StringIO(),
                                show_progress=False)
    seconds = time.monotonic() - t0
    stop.append(1)
    watcher.join()
    ended = time.monotonic()
    left = _sandbox_processes()
    after = _hashes(root)
    results = {r["student"]: r for r in run["results"]}
    return {"root": root, "cases": cases, "results": results, "seconds": seconds, "ended": ended,
            "left": left, "before": before, "after": after, "mem_low": mem_low[0], "tmp": tmp,
            "mem_start": _mem_available_mb()}


def _points(result):
    return {s["id"]: s["points"] for s in result["steps"]}


def _assert_points(student, result, want):
    got = _points(result)
    assert set(got) == set(STEPS), (student, got)
    for step, value in want.items():
        if value == "partial":
            assert 0 <= got[step] < STEPS[step], (student, step, got[step])
        else:
            assert got[step] == pytest.approx(value), (student, step, got[step], result["status"], result["message"])


# --------------------------------------------------------------------------- the outcomes


def test_every_hostile_submission_gets_a_result(graded):
    assert set(graded["results"]) == set(graded["cases"]) - {"nosandbox"}
    for student, r in graded["results"].items():
        assert r["status"] != "grader-error", (student, r["message"], r.get("log", "")[-500:])
        assert r["sandbox"] is True
        assert r["max_score"] == pytest.approx(sum(STEPS.values()))
    # The forger's broken kernel costs one sandbox budget (the total limit plus 120 s); the rest run alongside.
    assert graded["seconds"] < LIMITS.total_timeout + 120 + 60, graded["seconds"]


@pytest.mark.parametrize("student", ["alice", "blank_mischief", "correct_mischief", "forger", "intruder", "spy",
                                     "daemon"])
def test_scores_are_the_judges(graded, student):
    _, want = graded["cases"][student]
    _assert_points(student, graded["results"][student], want)


def test_blank_mischief_earns_nothing_whatever_it_prints(graded):
    r = graded["results"]["blank_mischief"]
    assert r["score"] == 0
    nb = nbformat.read(str(graded["root"] / "autograded" / "blank_mischief" / NAME / FILE), as_version=4)
    for cell in nb.cells:
        if nbt.is_test_cell(cell):
            text = json.dumps(cell.outputs)
            assert "2.0" not in text.replace("0.0", ""), text[:300]  # the judge's points, not the fakes
            assert "all checks pass" not in text


def test_correct_mischief_keeps_its_outputs_outside_test_cells(graded):
    r = graded["results"]["correct_mischief"]
    assert r["score"] == 5
    nb = nbformat.read(str(graded["root"] / "autograded" / "correct_mischief" / NAME / FILE), as_version=4)
    _, last = find_cell(nb, "nb00-code-20")
    assert any(o.get("ename") == "RuntimeError" for o in last.outputs)


def test_forged_results_change_nothing(graded):
    r = graded["results"]["forger"]
    assert r["score"] == 0 and all(s["message"] != "forged" for s in r["steps"])
    stored = json.loads((graded["root"] / "grading" / "forger" / f"{NAME}.json").read_text())
    assert stored["score"] == 0 and stored["student"] == "forger"
    assert not list(Path("/tmp").glob("mhsa_autograde_x"))
    assert not Path("/tmp/result.json").exists() or "forged" not in Path("/tmp/result.json").read_text()


def test_nobody_changed_the_course_folder(graded):
    before, after = graded["before"], graded["after"]
    assert set(before) == set(after), set(before) ^ set(after)
    changed = [p for p in before if before[p] != after[p]]
    assert not changed


def test_other_results_and_the_gradebook_are_intact(graded):
    from nbgrader.api import Gradebook

    root = graded["root"]
    for student, r in graded["results"].items():
        stored = json.loads((root / "grading" / student / f"{NAME}.json").read_text())
        assert stored["student"] == student and stored["score"] == r["score"], student
        path = root / "autograded" / student / NAME / FILE
        nb = nbformat.read(str(path), as_version=4)
        if r["status"] == "kernel-died" and "Not graded" in nbt.cell_source(nb.cells[0]):
            # A run whose notebook could not be read back (the forger's): formgrader gets the
            # stand-in, the released assignment with the reason on top and no hidden tests.
            assert HIDDEN_CALL not in json.dumps(nb), student
            continue
        assert HIDDEN_CALL in nbt.cell_source(find_cell(nb, "check_pairwise_scores")[1])
        assert not (root / "autograded" / student / "planted.txt").exists()
    with Gradebook(course.db_url(root)) as gb:
        for student, r in graded["results"].items():
            sub = gb.find_submission_notebook(NAME, NAME, student)
            got = {g.name: g.auto_score for g in sub.grades}
            assert got == pytest.approx(_points(r)), student
    assert _points(graded["results"]["alice"]) == FULL


def test_identical_code_scores_identically_and_regrades_the_same(graded):
    res = graded["results"]
    twins = [f"twin{i}" for i in range(1, 5)]
    first = _points(res["twin1"])
    assert 0 < sum(first.values()) < 5, first
    assert all(_points(res[t]) == first for t in twins)
    run = autograde.grade_class(graded["root"], students=twins, workers=2, limits=LIMITS, force=True,
                                stream=io.StringIO(), show_progress=False)
    again = {r["student"]: r for r in run["results"]}
    assert set(again) == set(twins)
    assert all(_points(again[t]) == first for t in twins)


def test_no_sandbox_process_outlives_the_run(graded):
    assert graded["left"] == []
    assert _sandbox_processes() == []
    assert graded["results"]["daemon"]["score"] == 5


def test_the_daemon_wrote_no_marker(graded):
    time.sleep(max(0.0, graded["ended"] + 22 - time.monotonic()))
    places = [graded["root"], graded["tmp"], Path("/tmp")]
    for place in places:
        hits = list(place.glob(f"{TOKEN}*")) + (list(place.rglob(f"{TOKEN}*")) if place != Path("/tmp") else [])
        assert not hits, hits
    assert _sandbox_processes() == []


def test_fork_bomb_is_contained(graded):
    r = graded["results"]["fork_bomb"]
    assert r["status"] != "grader-error"
    got = _points(r)
    assert got == FULL, (got, r["status"], r["message"])


def test_memory_bombs_are_contained(graded):
    r = graded["results"]["memory_bombs"]
    assert r["status"] in ("ok", "cell-timeout", "kernel-died", "timeout"), (r["status"], r["message"])
    assert r["message"]
    assert graded["mem_low"] > 2000, graded["mem_low"]


def test_a_huge_line_on_fd_1_is_capped(graded):
    r = graded["results"]["big_line"]
    assert r["status"] in ("ok", "cell-timeout"), (r["status"], r["message"])
    assert r["exec_seconds"] < LIMITS.total_timeout + 10
    path = graded["root"] / "autograded" / "big_line" / NAME / FILE
    assert path.stat().st_size < 5_000_000
    assert _points(r) == FULL, (r["status"], r["message"])


# --------------------------------------------------------------------------- what the spy learns


@pytest.fixture(scope="module")
def written(graded):
    root = graded["root"]
    proc = run_cli("feedback", "--course", root, timeout=180)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("export", "--course", root, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return root


def _student_files(root, student):
    files = [root / "feedback" / student / NAME / f"{NAME}.html", root / "feedback" / student / NAME / "summary.txt",
             root / "grading" / student / f"{NAME}.json", root / "feedback" / "summary.txt"]
    files += sorted((root / "exports").glob("*.csv"))
    return files


def test_the_spy_learns_nothing(graded, written):
    root = written
    secret = (root / ".grading_seed").read_text().strip()
    assert len(secret) >= 16
    source = nbformat.read(str(course.source_notebook(root, NAME)), as_version=4)
    hidden_lines = [HIDDEN_CALL, "BEGIN HIDDEN TESTS", "hidden=True"]
    hidden_lines += [l for c in source.cells if nbt.is_test_cell(c) for l in nbt.cell_source(c).splitlines() if l.strip()]
    for path in _student_files(root, "spy"):
        text = path.read_text(encoding="utf-8")
        assert secret not in text, path
        assert HIDDEN_LEAK not in text, path
        for line in hidden_lines:
            assert line not in text, (path, line)
    nb = nbformat.read(str(root / "autograded" / "spy" / NAME / FILE), as_version=4)
    whole = nbformat.writes(nb)
    assert secret not in whole  # the sandbox could not read it
    assert "gradebook.db: " in whole  # what it tried, printed in its own cell
    for cell in nb.cells:
        if nbt.is_test_cell(cell):
            out = json.dumps(cell.outputs)
            assert HIDDEN_LEAK not in out and secret not in out
            for line in hidden_lines:
                assert line not in out


def test_text_raised_in_public_checks_stays_out_of_the_feedback(graded, written):
    """The judge quotes an exception's type and line, never its text (the student's code chooses it)."""
    for path in _student_files(written, "spy"):
        assert RAISED not in path.read_text(encoding="utf-8"), path


def test_feedback_and_export_for_everyone(graded, written):
    root = written
    with open(root / "exports" / f"{NAME}.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    for student, r in graded["results"].items():
        assert float(rows[student]["score"]) == pytest.approx(r["score"])
        assert (root / "feedback" / student / NAME / f"{NAME}.html").is_file()


# --------------------------------------------------------------------------- without the sandbox


def test_without_bwrap_autograde_refuses_in_one_line(graded, monkeypatch):
    from autograder.__main__ import main

    monkeypatch.setattr(sandbox_mod, "find_bwrap", lambda: None)
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["autograde", "--course", str(graded["root"]), "--quiet", "--student", "nosandbox"])
    assert code == 1
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "apt-get install bubblewrap" in lines[0], lines
    assert not (graded["root"] / "grading" / "nosandbox").exists()


def test_no_sandbox_is_recorded_and_said(graded, monkeypatch):
    from autograder.__main__ import main

    monkeypatch.setattr(sandbox_mod, "find_bwrap", lambda: None)  # not needed without the sandbox
    out = io.StringIO()
    with redirect_stderr(out):
        code = main(["autograde", "--course", str(graded["root"]), "--quiet", "--no-sandbox", "--student", "nosandbox",
                     "-j", "1", "--timeout", str(LIMITS.cell_timeout), "--total-timeout", str(LIMITS.total_timeout),
                     "--memory-mb", str(LIMITS.memory_mb)])
    assert code == 0, out.getvalue()
    r = json.loads((graded["root"] / "grading" / "nosandbox" / f"{NAME}.json").read_text())
    assert r["sandbox"] is False
    assert any("WITHOUT the sandbox" in n for n in r["notes"])
    assert _points(r) == FULL
    from autograder.grading import feedback

    feedback.write_feedback(graded["root"], ["nosandbox"])
    page = (graded["root"] / "feedback" / "nosandbox" / NAME / f"{NAME}.html").read_text()
    assert "WITHOUT the sandbox" in page
    assert "WITHOUT the sandbox" in (graded["root"] / "feedback" / "nosandbox" / NAME / "summary.txt").read_text()


def test_killing_its_runner_is_the_students_run(graded):
    r = graded["results"]["parent_killer"]
    assert r["status"] == "kernel-died" and "killed before it could report" in r["message"], r["message"]
    assert r["score"] == 0
