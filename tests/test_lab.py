"""Each role's JupyterLab (autograder/grading/lab.py): `./course start` gives learners no nbgrader
instructor tools; `./course instructor` gives formgrader on a built course folder. The quick tests
read the config each role gets; the slow ones start each role's server headless on 127.0.0.1 and
ask it which lab extensions it disables and whether formgrader's server extension answers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from autograder.grading import lab

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR_ONLY = ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                   "@jupyter/nbgrader:course-list")
LEARNER_KEEPS = ("@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:validate-assignment")


# --------------------------------------------------------------------------- quick: the configs


def test_learner_config_disables_the_instructor_tools_only():
    files = lab.role_config("learner")
    disabled = files[lab.PAGE_CONFIG_FILE]["disabledExtensions"]
    assert {k for k, v in disabled.items() if v} == set(INSTRUCTOR_ONLY)
    assert all(disabled[k] is False for k in LEARNER_KEEPS)
    server = files[lab.SERVER_CONFIG_FILE]["ServerApp"]["jpserver_extensions"]
    assert server == {
        "nbgrader.server_extensions.formgrader": False,
        "nbgrader.server_extensions.course_list": False,
        "nbgrader.server_extensions.assignment_list": True,
        "nbgrader.server_extensions.validate_assignment": True,
    }


def test_instructor_config_enables_every_nbgrader_extension():
    files = lab.role_config("instructor")
    assert not any(files[lab.PAGE_CONFIG_FILE]["disabledExtensions"].values())
    assert set(files[lab.PAGE_CONFIG_FILE]["disabledExtensions"]) == set(INSTRUCTOR_ONLY + LEARNER_KEEPS)
    assert all(files[lab.SERVER_CONFIG_FILE]["ServerApp"]["jpserver_extensions"].values())


def test_the_plugin_ids_are_nbgraders_own():
    """The ids disabled must be the ones nbgrader's labextension registers, or nothing is hidden."""
    import nbgrader

    static = Path(nbgrader.__file__).parent / "labextension" / "static"
    if not static.is_dir():  # an installed nbgrader keeps its labextension under share/jupyter
        static = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "@jupyter" / "nbgrader" / "static"
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in static.glob("*.js"))
    for plugin in lab.LAB_PLUGINS.values():
        assert f'"{plugin}"' in text, plugin
    import importlib.util

    for module in lab.SERVER_EXTENSIONS.values():
        assert importlib.util.find_spec(module) is not None, module


def test_write_config_is_a_folder_jupyter_reads(tmp_path):
    dest = lab.write_config("learner", tmp_path / "learner")
    page = json.loads((dest / "labconfig" / "page_config.json").read_text())
    assert page == lab.role_config("learner")[lab.PAGE_CONFIG_FILE]
    assert (dest / "jupyter_server_config.d" / "mhsa-course-role.json").is_file()
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*.json")}
    for p in dest.rglob("*.json"):  # unchanged files are not rewritten: a read-only install works
        p.chmod(0o444)
    try:
        lab.write_config("learner", dest)
    finally:
        for p in dest.rglob("*.json"):
            p.chmod(0o644)
    assert before == {p: p.stat().st_mtime_ns for p in dest.rglob("*.json")}
    # a config of the other role replaces it
    lab.write_config("instructor", dest)
    assert not any(json.loads((dest / lab.PAGE_CONFIG_FILE).read_text())["disabledExtensions"].values())


def test_unknown_role_is_named():
    with pytest.raises(lab.LabError, match=r"role: expected one of learner, instructor, got 'admin'"):
        lab.role_config("admin")


def test_learner_command_puts_its_config_first_and_keeps_the_users(tmp_path):
    argv, env, folder = lab.lab_command("learner", args=["--no-browser"], config_dir=tmp_path / "c",
                                        env={"JUPYTER_CONFIG_PATH": "/somewhere/else", "HOME": "/h"})
    assert folder == ROOT / "notebooks"
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [str(tmp_path / "c"), "/somewhere/else"]
    assert "JUPYTER_CONFIG_DIR" not in env  # the user's own ~/.jupyter is untouched
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--notebook-dir={ROOT / 'notebooks'}" in argv and argv[-1] == "--no-browser"
    assert ("--allow-root" in argv) == (os.geteuid() == 0)


@pytest.mark.parametrize("given", [["--notebook-dir={}"], ["--notebook-dir", "{}"], ["--ServerApp.root_dir={}"],
                                   ["--notebook_dir={}"]])
def test_learner_serves_the_folder_it_is_given(tmp_path, given):
    """Jupyter refuses two folder options: the one given replaces notebooks/."""
    args = [a.format(tmp_path) for a in given] + ["--no-browser"]
    argv, env, folder = lab.lab_command("learner", args=args, config_dir=tmp_path / "c", env={})
    assert folder == tmp_path.resolve()
    assert sum(a.startswith(lab.FOLDER_OPTIONS) for a in argv) == 1 and argv[-len(args):] == args
    with pytest.raises(lab.LabError, match="the folder to serve is missing"):
        lab.lab_command("learner", args=[f"--notebook-dir={tmp_path / 'nope'}"], config_dir=tmp_path / "c", env={})


def test_instructor_takes_its_folder_as_course_only(tmp_path):
    with pytest.raises(lab.LabError, match=r"--notebook-dir: `instructor` serves the course folder; give it as --course"):
        lab.lab_command("instructor", course=tmp_path, args=[f"--notebook-dir={tmp_path}"], config_dir=tmp_path / "c")


def test_learner_refuses_a_course_folder():
    with pytest.raises(lab.LabError, match="--course: only `instructor`"):
        lab.lab_command("learner", course=Path("classroom"))


def test_instructor_needs_a_built_course(tmp_path):
    with pytest.raises(lab.LabError, match=r"--course: .*not a course folder.*build --course"):
        lab.lab_command("instructor", course=tmp_path / "nothing", config_dir=tmp_path / "c")
    course = tmp_path / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text("c = get_config()\n")
    (course / "gradebook.db").write_bytes(b"")
    argv, env, folder = lab.lab_command("instructor", course=course, config_dir=tmp_path / "c")
    assert folder == course.resolve() and f"--notebook-dir={course.resolve()}" in argv


def test_main_says_what_it_expected(capsys):
    assert lab.main([]) == 2
    assert "expected start, instructor or config, got nothing" in capsys.readouterr().err
    assert lab.main(["config", "learner"]) == 2
    assert "expected ROLE DEST" in capsys.readouterr().err
    assert lab.main(["config", "teacher", "/tmp/x"]) == 2
    assert "role: expected one of learner, instructor, got 'teacher'" in capsys.readouterr().err


def test_course_instructor_refuses_a_folder_that_is_not_a_course(tmp_path):
    proc = subprocess.run([str(ROOT / "course"), "instructor", "--course", "nowhere"], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "instructor: --course: nowhere is not a course folder" in proc.stderr


# --------------------------------------------------------------------------- slow: real servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""


def page_config(html: str) -> dict:
    m = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "the lab page carries no jupyter-config-data"
    return json.loads(m.group(1))


def serve_and_probe(argv, cwd, tmp_path, extra_env=None):
    """Start ``argv`` (a `./course` command that opens JupyterLab) headless, return what it says
    about nbgrader's extensions, and stop it."""
    port, token = _free_port(), "course-role-test"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "user-config"), **(extra_env or {}))
    proc = subprocess.Popen(argv + ["--no-browser", f"--port={port}", "--ip=127.0.0.1",
                                    f"--ServerApp.token={token}"],
                            cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "the server did not answer within 120 s"
            try:
                if _get(f"{base}/api/status?token={token}")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        status, html = _get(f"{base}/lab?token={token}")
        assert status == 200
        return {
            "disabled": set(page_config(html).get("disabledExtensions") or []),
            "formgrader": _get(f"{base}/formgrader?token={token}")[0],
            "formgraders": _get(f"{base}/formgraders?token={token}")[0],
            "assignments": _get(f"{base}/assignments?token={token}")[0],
            "root": _get(f"{base}/api/contents?token={token}")[1],
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_course_start_hides_the_instructor_tools(tmp_path):
    user = tmp_path / "user-config"  # the user's own Jupyter config folder: nothing is written there
    user.mkdir()
    (user / "marker").write_text("mine")
    seen = serve_and_probe([str(ROOT / "course"), "start"], tmp_path, tmp_path)
    assert not (user / "labconfig").exists() and not (user / "jupyter_server_config.d").exists()
    assert not any("nbgrader" in p.read_text(errors="replace") for p in user.rglob("*") if p.is_file())
    assert set(INSTRUCTOR_ONLY) <= seen["disabled"]
    assert not (set(LEARNER_KEEPS) & seen["disabled"])
    assert seen["formgrader"] == 404 and seen["formgraders"] == 404
    assert seen["assignments"] != 404  # the assignment list's server part answers (400: no course id)
    names = {item["name"] for item in json.loads(seen["root"])["content"]}
    assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} <= names


@pytest.mark.slow
def test_course_instructor_serves_formgrader_on_the_course(tmp_path):
    course = tmp_path / "classroom"
    build = subprocess.run([str(ROOT / "course"), "build", "--course", str(course), "00_orientation"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    # relative --course, from the folder it is run in; the user's own config names no extension
    seen = serve_and_probe([str(ROOT / "course"), "instructor", "--course", "classroom"], tmp_path, tmp_path)
    assert not ({*INSTRUCTOR_ONLY, *LEARNER_KEEPS} & seen["disabled"])
    assert seen["formgrader"] == 200 and seen["formgraders"] == 200
    names = {item["name"] for item in json.loads(seen["root"])["content"]}
    assert {"source", "release", "nbgrader_config.py"} <= names
