"""Grade one submission in a process of its own: ``python worker.py JOB.json``.

The grading run (:mod:`autograder.grading.autograde`) starts one of these per submission. It

1. copies the student's files into a fresh temporary folder (regular files only, no links), then
   the assignment's own files over them (data the notebook reads);
2. reads the notebook (invalid JSON, an empty file, a notebook of another assignment: a status
   and a message, nothing run);
3. restores what the student may not change, from the instructor's source, as nbgrader's
   ``OverwriteCells`` does (test cells with their source, points and metadata, locked cells,
   test cells the student deleted, the ``python3`` kernel; student-made or duplicated grade
   cells lose their grading metadata), reads the submitted source for forbidden shortcuts
   (:mod:`.static`), and replaces each test cell by a probe that only observes (:mod:`.judging`);
4. runs the notebook in the sandbox (:mod:`.sandbox`) through the course's one notebook executor
   (:mod:`.run_notebook`, :mod:`.engine`, which the self-check uses too), under resource limits;
5. reads back only files, judges each check's record here, outside the student's code, writes
   each test cell's report and points, and scores the notebook as nbgrader does; the notes name
   each cell outside the tests that raised, ran past its limit or had its output cut;
6. writes the executed notebook and a JSON result where the job says. It never touches the
   gradebook: the parent does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

if __name__ == "__main__" and not __package__:
    # Run as a script: make `autograder.grading` importable without running autograder/__init__
    # (which imports torch, a cost the grader itself does not need).
    import types

    _pkg = types.ModuleType("autograder")
    _pkg.__path__ = [str(Path(__file__).resolve().parents[1])]
    sys.modules.setdefault("autograder", _pkg)
    from autograder.grading.worker import main as _main

    sys.exit(_main(sys.argv[1:]))

from . import engine, judging, lifeline
from . import nbgrader_tools as nbt
from .reading import NotebookUnusable, read_notebook
from .scoring import StepResult, score_notebook

#: Files larger than this in a submission folder are not copied into the working copy.
MAX_COPY_BYTES = 50 * 2**20
#: A result stays small whatever the submission does (the grading run holds every result until
#: it ends): files not copied are named up to this many, and a "yours vs expected" picture
#: larger than this (base64 characters; a real one is about 30 000) is left out.
MAX_COPY_NOTES = 20
MAX_PICTURE_CHARS = 400_000

STATUSES = {
    "ok": "graded",
    "cell-timeout": "graded; a cell ran past its time limit and was interrupted",
    "timeout": "the notebook ran past its total time limit; the steps after that earn 0",
    "kernel-died": "the kernel died; the steps after that earn 0",
    "unreadable": "the file is not a readable notebook; nothing was run",
    "empty": "the file is empty; nothing was run",
    "wrong-assignment": "the notebook belongs to another assignment; nothing was run",
    "missing": "no notebook was submitted",
    "grader-error": "the grader failed on this submission (not the student's fault)",
}


# --------------------------------------------------------------------------- pictures

def pictures() -> Dict[str, str]:
    """check name -> how to draw "yours vs expected" on a small public example (never hidden
    cases), as each step declares it in the registry: code that sets ``yours`` and ``ref`` (same
    shape) from ``fn``, the learner's function; for a map that is not attention weights it also
    names the two axes in ``axes`` (for the title)."""
    from ..checks import steps_with_pictures

    return steps_with_pictures()


_PICTURE_CODE = """
def _grading_picture(fn_name, setup):
    import base64
    from autograder.frame.pictures import picture_png  # the same picture the notebook shows
    png = picture_png(setup, get_ipython().user_ns.get(fn_name))
    return base64.b64encode(png).decode() if png else ""
"""


def draw_pictures(nb, evaluate, wanted: Optional[List[Any]] = None) -> Dict[str, str]:
    """For each failed step with a known picture: a PNG (base64) of yours vs expected.
    ``wanted``: the (grade_id, check name, function name) to draw, when the caller knows them."""
    import ast as _ast

    pics: Dict[str, str] = {}
    drawable = pictures()
    if wanted is not None:
        wanted = [tuple(w) for w in wanted if len(w) == 3 and w[1] in drawable]
    else:
        wanted = []
    for cell in nb.cells if not wanted else ():
        if not nbt.is_test_cell(cell):
            continue
        score = nbt.score_test_cell(cell)
        if score.points >= score.max_points:
            continue
        try:
            tree = _ast.parse(nbt.cell_source(cell))
        except SyntaxError:
            continue
        for node in _ast.walk(tree):
            if (isinstance(node, _ast.Call) and isinstance(node.func, _ast.Name) and node.func.id in drawable
                    and node.args and isinstance(node.args[0], _ast.Name)):
                wanted.append((nbt.grade_id(cell), node.func.id, node.args[0].id))
                break
    if not wanted:
        return pics
    ns = "{'get_ipython': get_ipython, '__builtins__': __builtins__}"
    setup = f"_grading_pictures_ns = {ns}; exec({_PICTURE_CODE!r}, _grading_pictures_ns)"
    if evaluate("1", code=setup) is None:
        return pics
    for gid, check, fn_name in wanted:
        text = evaluate(f"_grading_pictures_ns['_grading_picture']({fn_name!r}, {drawable[check]!r})")
        if text and len(text) > 10:
            pics[gid] = text.strip("'\"")
    return pics


def belongs_to(nb, source) -> bool:
    """Does the submission share any graded cell with the assignment's source?"""
    def graded(cell) -> bool:  # an answer or a test cell (every notebook shares its locked set-up cell)
        return nbt.is_grade(cell) or nbt.is_solution(cell)

    src_ids = {nbt.grade_id(c) for c in source.cells if graded(c)} - {None}
    sub_ids = {nbt.grade_id(c) for c in nb.cells if graded(c)} - {None}
    return not src_ids or bool(src_ids & sub_ids)


# --------------------------------------------------------------------------- the job


def zero_steps(source, why: str) -> List[StepResult]:
    return [
        StepResult(nbt.grade_id(c) or f"cell-{i}", 0.0, nbt.max_points(c), False, why)
        for i, c in enumerate(source.cells) if nbt.is_test_cell(c)
    ]


def submission_files(src: Path, skip_names=(), notes: Optional[List[str]] = None) -> Iterator[Tuple[Path, Path]]:
    """The files of ``src`` a working copy gets: ``(path relative to src, path)`` of each regular
    file of at most :data:`MAX_COPY_BYTES` (not in ``.ipynb_checkpoints``, nor named in
    ``skip_names`` at the top). Links, special files and larger files are named in ``notes``."""
    for root, dirs, files in os.walk(src, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".ipynb_checkpoints")]
        rel = Path(root).relative_to(src)
        for name in files:
            p = Path(root) / name
            if rel == Path(".") and name in skip_names:
                continue
            if p.is_symlink() or not p.is_file():
                if notes is not None:
                    notes.append(f"{rel / name}: a link or special file, not copied")
                continue
            if p.stat().st_size > MAX_COPY_BYTES:
                if notes is not None:
                    notes.append(f"{rel / name}: larger than {MAX_COPY_BYTES // 2**20} MB, not copied")
                continue
            yield rel / name, p


def _copy_files(src: Path, dest: Path, skip_names=(), notes: Optional[List[str]] = None) -> None:
    for rel, p in submission_files(src, skip_names, notes):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        shutil.copyfile(p, target)


def run_dirs(workdir: Path, seen_as: str, threads: int = 1) -> Dict[str, str]:
    """The run's own home, temporary and Jupyter folders (made under ``workdir``, named as the
    run sees them: ``seen_as`` is ``workdir`` itself, or its path inside the sandbox), and one
    thread per kernel (the workers share the cores)."""
    for sub in ("", "tmp", "ipython", "mpl", "jupyter"):
        (workdir / ".home" / sub).mkdir(parents=True, exist_ok=True)
    home = f"{seen_as}/.home"
    return {
        "HOME": home, "TMPDIR": f"{home}/tmp", "IPYTHONDIR": f"{home}/ipython",
        "MPLCONFIGDIR": f"{home}/mpl", "JUPYTER_CONFIG_DIR": f"{home}/jupyter",
        "JUPYTER_DATA_DIR": f"{home}/jupyter", "JUPYTER_RUNTIME_DIR": f"{home}/jupyter",
        "MPLBACKEND": "Agg", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": "",
    }


def kernel_env(workdir: Path, threads: int = 1) -> Dict[str, str]:
    """A small environment for a run without the sandbox: nothing of the grader's own (no course
    paths, no credentials) beyond what finds the interpreter, and the run's own folders."""
    keep = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.update(run_dirs(workdir, str(workdir), threads))
    return env


def grade(job: Dict[str, Any]) -> Dict[str, Any]:
    import nbformat

    t0 = time.monotonic()
    limits = engine.Limits(**job.get("limits", {}))
    source = nbformat.read(job["source_notebook"], as_version=4)
    nb_name = job["notebook"]
    result: Dict[str, Any] = {"student": job.get("student"), "assignment": job.get("assignment"),
                              "notebook": nb_name, "notes": [], "exec_seconds": 0.0}
    notes: List[str] = result["notes"]

    def finish(status: str, message: str, steps: List[StepResult]) -> Dict[str, Any]:
        result["status"] = status
        result["message"] = message
        result["steps"] = [vars(s) for s in steps]
        result["score"] = round(sum(s.points for s in steps), 6)
        result["max_score"] = round(sum(s.max_points for s in steps), 6)
        result["worker_seconds"] = time.monotonic() - t0
        return result

    sub_dir = Path(job["submission_dir"]) if job.get("submission_dir") else None
    sub_path = sub_dir / nb_name if sub_dir else None
    if sub_path is None or not sub_path.is_file() or sub_path.is_symlink():
        others = sorted(p.name for p in sub_dir.glob("*.ipynb")) if sub_dir and sub_dir.is_dir() else []
        msg = f"no {nb_name} in the submission" + (f" (found {', '.join(others)})" if others else "")
        return finish("missing", msg, zero_steps(source, msg))
    if sub_path.stat().st_size == 0:
        msg = f"{nb_name} is an empty file (0 bytes): nothing to grade"
        return finish("empty", msg, zero_steps(source, msg))
    try:
        nb = read_notebook(sub_path)
    except NotebookUnusable as e:
        msg = str(e).replace(str(sub_path), nb_name)
        return finish("unreadable", msg, zero_steps(source, msg))
    if not belongs_to(nb, source):
        ids = sorted({nbt.grade_id(c) for c in nb.cells if nbt.is_grade(c) or nbt.is_solution(c)} - {None})
        msg = (f"this notebook has none of the graded cells of {job.get('assignment')}"
               + (f" (its graded cells are {', '.join(ids[:3])}{'...' if len(ids) > 3 else ''}: another assignment?)" if ids else
                  " (it has no graded cells at all)"))
        return finish("wrong-assignment", msg, zero_steps(source, msg))

    return _grade_judged(job, nb, source, limits, finish, notes, sub_dir, nb_name)


def _grade_judged(job, nb, source, limits, finish, notes, sub_dir: Path, nb_name: str) -> Dict[str, Any]:
    """Grade with every score judged here, outside the student's code (:mod:`.judging`): the test
    cells are replaced by probes, the notebook runs in the sandbox (:mod:`.sandbox`; or as a plain
    subprocess with ``no_sandbox``), and the grader reads back only files, which it judges."""
    import nbformat

    from . import sandbox
    runner = "autograder.grading.run_notebook"  # (run as a module inside the sandbox)

    no_sandbox = bool(job.get("no_sandbox"))
    plain_finish = finish

    def finish(*args):  # every result says whether the sandbox held, early ones too
        done = plain_finish(*args)
        done["sandbox"] = not no_sandbox
        return done

    prep = engine.prepare(nb, source)
    nb = prep.nb
    calls = judging.plan(source)
    seeds = judging.seeds_for(calls, str(job.get("seed") or ""), str(job.get("assignment") or ""))
    shortcuts = judging.shortcuts_in(nb, calls)  # read from the submitted source, before anything runs
    originals, wanted = {}, []
    drawable = pictures() if job.get("pictures", True) else {}
    for cell in nb.cells:
        gid = nbt.grade_id(cell) if nbt.is_test_cell(cell) else None
        if gid in calls:
            originals[gid] = cell.source
            cell.source = judging.probe_cell_source(gid, calls[gid], seeds, judging.OBSERVATIONS)
            for c in calls[gid]:
                if c.check in drawable and c.subject.isidentifier():
                    wanted.append((gid, c.check, c.subject))
                    break
    # The cells as they are before the run, which names them in the notes: what the run hands back
    # is untrusted (the student's code could rewrite it).
    before = nbformat.from_dict({"cells": [
        {"cell_type": c.cell_type, "source": originals.get(nbt.grade_id(c) if nbt.is_test_cell(c) else None, c.source)}
        for c in nb.cells]})
    custom = [nbt.grade_id(c) for c in nb.cells if nbt.is_test_cell(c) and nbt.grade_id(c) not in calls]
    if custom:
        notes.append(f"{len(custom)} test cell(s) ({', '.join(map(str, custom[:3]))}) are not made of course checks, "
                     "so they were scored from their own output in the student's kernel, as nbgrader does")
    if no_sandbox:
        notes.append("graded WITHOUT the sandbox (--no-sandbox): the student's code could read and write "
                     "what the grader's user can")
    # what was not copied before the job came here (a submission sent as bytes, :mod:`.remote`)
    copy_notes: List[str] = [str(n) for n in job.get("copy_notes") or []]
    workdir = Path(tempfile.mkdtemp(prefix="mhsa_grade_", dir=job.get("tmp_root")))
    try:
        work = workdir / "work"
        work.mkdir()
        _copy_files(sub_dir, work, skip_names=(nb_name,), notes=copy_notes)
        if job.get("assignment_dir"):
            src_dir = Path(job["assignment_dir"])
            _copy_files(src_dir, work, skip_names=tuple(p.name for p in src_dir.glob("*.ipynb")))
        nbformat.write(nb, str(work / nb_name))
        run = {"notebook": f"work/{nb_name}", "limits": limits.to_dict(), "out": "out",
               "observations": judging.OBSERVATIONS,
               "test_cells": sorted(prep.test_cells), "pictures": wanted}
        (workdir / "run.json").write_text(json.dumps(run), encoding="utf-8")
        budget = limits.total_timeout + 120  # the runner's own start and the kernel's, on top
        argv = [sys.executable, "-m", runner]
        threads = int(job.get("threads", 1))
        killed = False  # the runner died of a signal (not at the time limit) before it reported
        if no_sandbox:
            env = kernel_env(workdir, threads)
            try:
                killed = subprocess.run(argv + [str(workdir / "run.json")], cwd=str(work), env=env, timeout=budget,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               close_fds=True, start_new_session=True,
                               preexec_fn=lifeline.preexec_die_with_parent()).returncode < 0
            except subprocess.TimeoutExpired:
                pass
        else:
            spec = sandbox.SandboxSpec(
                scratch=workdir, slot=int(job.get("slot", 0)),
                memory_mb=int(limits.memory_mb) + 1024 if limits.memory_mb else 8192,
                file_mb=int(limits.file_mb), cpu_s=int(budget * 2 * threads),
                env={k: v for k, v in run_dirs(workdir, sandbox.SCRATCH, threads).items() if k != "TMPDIR"})
            try:
                ran = sandbox.run(spec, argv + [f"{sandbox.SCRATCH}/run.json"], timeout=budget,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                # bwrap passes on its child's death by a signal as 128 + the signal
                killed = not ran.timed_out and (ran.returncode < 0 or ran.returncode > 128)
            except sandbox.SandboxUnavailable as e:
                return finish("grader-error", str(e), zero_steps(source, str(e)))
        executed, ex, pics = _read_back(workdir / "out", nb, limits)
        notes.extend(prep.notes + copy_notes[:MAX_COPY_NOTES])
        if len(copy_notes) > MAX_COPY_NOTES:
            notes.append(f"... and {len(copy_notes) - MAX_COPY_NOTES} more file(s) not copied")
        if executed is None and killed and not (ex.stopped or "").startswith("no kernel"):
            # The runner was killed before it reported: from inside (the notebook's code can signal
            # the process that runs it) or for its memory; the student's run, not the grader's.
            msg = ("the process running the notebook was killed before it could report (by the notebook's "
                   "own code, or for its memory use)")
            return finish("kernel-died", msg, zero_steps(source, msg))
        if executed is None:
            msg = ex.stopped or "the notebook's run left no result"
            return finish("grader-error" if ex.stopped and "kernel" in ex.stopped else "kernel-died", msg,
                          zero_steps(source, msg))
        nb = executed
        obs = work / judging.OBSERVATIONS
        for index, cell in enumerate(nb.cells):
            gid = nbt.grade_id(cell) if nbt.is_test_cell(cell) else None
            if gid in calls and gid in originals:
                cell.source = originals[gid]
                cell.outputs = judging.judged_outputs(
                    judging.judge_cell(calls[gid], seeds, obs, gid, shortcuts.get(gid)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    steps = score_notebook(nb, ex.ran, ex.stopped)
    notes.extend(engine.run_notes(engine.Prepared(before, [], prep.test_cells), ex, limits))
    for st in steps:
        if st.id in pics and not st.passed:
            st.picture = pics[st.id]
    status, message = engine.outcome(ex, limits)
    if job.get("out_notebook"):
        out = Path(job["out_notebook"])
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(out))
    done = finish(status, message, steps)
    done["exec_seconds"] = ex.seconds
    return done


def _read_back(out: Path, nb, limits) -> Any:
    """What the sandboxed run wrote, read as untrusted data: the executed notebook (or None),
    the execution (cells run, stopped, ...), the pictures."""
    ex = engine.Execution()
    cap = int(limits.max_notebook_output_bytes) * 2 + 50 * 2**20
    try:
        info = json.loads(_read_capped(out / "execution.json", 2**20))
        if "kernel_failed" in info:
            ex.stopped = f"no kernel could run the notebook: {str(info['kernel_failed'])[:300]}"
            return None, ex, {}
        ex.ran = [int(i) for i in info.get("ran", [])]
        ex.timed_out = [int(i) for i in info.get("timed_out", [])]
        ex.truncated = [int(i) for i in info.get("truncated", [])]
        ex.died_in = None if info.get("died_in") is None else int(info["died_in"])
        ex.stopped = None if info.get("stopped") is None else str(info["stopped"])[:500]
        ex.seconds = float(info.get("seconds", 0.0))
        errors = info.get("errors") or {}
        if isinstance(errors, dict):
            ex.errors = {int(k): str(v)[:300] for k, v in list(errors.items())[:1000] if str(k).isdigit()}
        executed = read_notebook(out / "executed.ipynb") if (out / "executed.ipynb").stat().st_size <= cap else None
    except (OSError, ValueError, TypeError, NotebookUnusable):
        ex.stopped = "the kernel died or the run was stopped at its time limit before it could report"
        return None, ex, {}
    if executed is None or len(executed.cells) != len(nb.cells):
        ex.stopped = "the notebook's run could not be read back"
        return None, ex, {}
    try:
        pics = json.loads(_read_capped(out / "pictures.json", 8 * 2**20))
        pics = ({str(k): str(v) for k, v in pics.items() if len(str(v)) <= MAX_PICTURE_CHARS}
                if isinstance(pics, dict) else {})
    except (OSError, ValueError):
        pics = {}
    return executed, ex, pics


def _read_capped(path: Path, limit: int) -> str:
    if path.is_symlink() or path.stat().st_size > limit:
        raise ValueError(f"{path.name} is larger than {limit} bytes")
    return path.read_text(encoding="utf-8")


def run_job(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    try:
        result = grade(job)
    except Exception as e:  # the grader's own failure: reported, never a student's zero in silence
        result = {"status": "grader-error", "message": f"{type(e).__name__}: {e}",
                  "trace": traceback.format_exc()[-4000:], "steps": [], "notes": []}
    tmp = Path(job["result"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, job["result"])


def main(argv: List[str]) -> int:
    """``worker.py JOB.json`` grades one job; ``worker.py --serve`` grades the job files named on
    its standard input, one per line, answering ``done PATH`` on standard output after each (so
    the start-up cost of this process is paid once per worker, not once per submission).
    ``--serve --parent PID``: die when the process PID (the grader) dies."""
    if argv[:1] == ["--serve"]:
        if argv[1:2] == ["--parent"] and len(argv) == 3 and argv[2].isdigit():
            lifeline.die_with_parent(int(argv[2]))  # the grader's pid: gone already, or later, we go too
        elif len(argv) != 1:
            print("usage: worker.py JOB.json | worker.py --serve [--parent PID]", file=sys.stderr)
            return 2
        out = sys.stdout
        sys.stdout = sys.stderr  # nothing but the protocol on the real stdout
        for line in sys.stdin:
            path = line.strip()
            if not path:
                continue
            run_job(path)
            out.write(f"done {path}\n")
            out.flush()
        return 0
    if len(argv) != 1:
        print("usage: worker.py JOB.json | worker.py --serve [--parent PID]", file=sys.stderr)
        return 2
    run_job(argv[0])
    return 0
