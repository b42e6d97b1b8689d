"""JupyterLab for each role of the course: ``./course start`` (a learner) and ``./course instructor``.

nbgrader 0.9.6 installs its JupyterLab and server extensions for everyone in the environment,
instructor tools included. Each role here gets a Jupyter config folder of the course's own, put
first on ``JUPYTER_CONFIG_PATH`` for that launch only (the user's own ``~/.jupyter`` still wins,
and nothing global is changed):

- **learner**: no formgrader, no "Create Assignment" panel, no course list (the instructor's list
  of formgraders), in the page (``labconfig/page_config.json``, ``disabledExtensions``) and on the
  server (``jupyter_server_config.d``: ``/formgrader`` and ``/formgraders`` answer 404). Learners
  keep the **assignment list** (fetch and submit through nbgrader's exchange: the way a class on
  JupyterHub hands out and takes in notebooks) and **validate** (nbgrader's check that a notebook
  runs from the top and its test cells pass, the same thing ``./course check`` does in more detail).
- **instructor**: every nbgrader extension on, JupyterLab opened on a built course folder (its
  ``nbgrader_config.py`` is what formgrader reads).

A JupyterHub gives each account the folder of its role through the spawner's environment: write
them once with ``python -m autograder.grading.lab config ROLE DEST`` (README, "A class on
JupyterHub").

Command line (the ``course`` script calls it)::

    python -m autograder.grading.lab start [JUPYTER ARGS]                  the learner's lab on notebooks/
    python -m autograder.grading.lab instructor [--course DIR] [JUPYTER ARGS]
    python -m autograder.grading.lab config ROLE DEST                      write ROLE's folder into DEST
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .course import DEFAULT_COURSE, check_course

ROOT = Path(__file__).resolve().parents[2]
LEARNER_NOTEBOOKS = ROOT / "notebooks"

#: nbgrader's JupyterLab plugins (ids in its labextension) and server extensions (modules)
LAB_PLUGINS = {
    "formgrader": "@jupyter/nbgrader:formgrader",
    "create_assignment": "@jupyter/nbgrader:create-assignment",
    "course_list": "@jupyter/nbgrader:course-list",
    "assignment_list": "@jupyter/nbgrader:assignment-list",
    "validate_assignment": "@jupyter/nbgrader:validate-assignment",
}
SERVER_EXTENSIONS = {
    "formgrader": "nbgrader.server_extensions.formgrader",
    "course_list": "nbgrader.server_extensions.course_list",
    "assignment_list": "nbgrader.server_extensions.assignment_list",
    "validate_assignment": "nbgrader.server_extensions.validate_assignment",
}

#: what each role may use of nbgrader (create_assignment has no server part)
ROLES: Dict[str, Tuple[str, ...]] = {
    "learner": ("assignment_list", "validate_assignment"),
    "instructor": ("formgrader", "create_assignment", "course_list", "assignment_list", "validate_assignment"),
}

SERVER_CONFIG_FILE = "jupyter_server_config.d/mhsa-course-role.json"
PAGE_CONFIG_FILE = "labconfig/page_config.json"


#: jupyter lab's options that choose the folder it serves (it refuses two of them)
FOLDER_OPTIONS = ("--notebook-dir", "--notebook_dir", "--ServerApp.root_dir", "--ServerApp.notebook_dir")


def folder_given(args: Sequence[str]) -> Optional[str]:
    """The folder ``args`` choose to serve themselves (``--notebook-dir=DIR`` or ``--notebook-dir DIR``),
    or None."""
    for i, arg in enumerate(args):
        for option in FOLDER_OPTIONS:
            if arg.startswith(option + "="):
                return arg[len(option) + 1:]
            if arg == option:
                return args[i + 1] if i + 1 < len(args) else ""
    return None


class LabError(Exception):
    """A launch that cannot go ahead; the message says why and what to do."""


def _check_role(role) -> str:
    if role not in ROLES:
        raise LabError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    return role


def role_config(role: str) -> Dict[str, dict]:
    """The files of ``role``'s Jupyter config folder: relative path -> JSON content."""
    allowed = ROLES[_check_role(role)]
    return {
        PAGE_CONFIG_FILE: {"disabledExtensions": {plugin: name not in allowed for name, plugin in LAB_PLUGINS.items()}},
        SERVER_CONFIG_FILE: {"ServerApp": {"jpserver_extensions": {
            module: name in allowed for name, module in SERVER_EXTENSIONS.items()}}},
    }


def default_config_dir(role: str) -> Path:
    """Where ``./course start`` / ``instructor`` keep ``role``'s folder: in the environment."""
    return Path(sys.prefix) / "etc" / "mhsa-course" / f"jupyter-{_check_role(role)}"


def write_config(role: str, dest: Optional[Path] = None) -> Path:
    """Write ``role``'s config folder into ``dest`` (default: :func:`default_config_dir`); files
    that already hold the right content are left alone (a read-only install keeps working)."""
    dest = Path(dest) if dest is not None else default_config_dir(role)
    for rel, content in role_config(role).items():
        path = dest / rel
        text = json.dumps(content, indent=2, sort_keys=True) + "\n"
        try:
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as e:
            raise LabError(f"cannot write the {role}'s Jupyter config {path}: {e}") from e
    return dest


def lab_command(role: str, course: Optional[Path] = None, args: Sequence[str] = (),
                config_dir: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
                ) -> Tuple[List[str], Dict[str, str], Path]:
    """The command, environment and working folder that open JupyterLab for ``role``: the learner
    on ``notebooks/``, the instructor on the built course folder ``course`` (default ./classroom)."""
    _check_role(role)
    args = list(args)
    chosen = folder_given(args)
    if role == "learner":
        if course is not None:
            raise LabError("--course: only `instructor` opens a course folder; `start` opens notebooks/")
        # `./course start --notebook-dir=DIR` serves DIR (a copy of the notebooks, say) instead
        folder = Path(chosen).resolve() if chosen else LEARNER_NOTEBOOKS
        if not folder.is_dir():
            raise LabError(f"the folder to serve is missing: {folder} is not a folder")
    else:
        if chosen is not None:
            raise LabError(f"--notebook-dir: `instructor` serves the course folder; give it as --course DIR "
                           f"(got the folder option with {chosen!r})")
        given = Path(course if course is not None else DEFAULT_COURSE)
        problem = check_course(given)
        if problem:
            raise LabError(f"--course: {problem}")
        folder = given.resolve()
    conf = write_config(role, config_dir)
    env = dict(os.environ if env is None else env)
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(p for p in (str(conf), env.get("JUPYTER_CONFIG_PATH")) if p)
    argv = [sys.executable, "-m", "jupyterlab"] + ([] if chosen else [f"--notebook-dir={folder}"])
    # Jupyter refuses to run as root unless told to (containers often run everything as root).
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    return argv + args, env, folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: lab start [JUPYTER ARGS] | lab instructor [--course DIR] [JUPYTER ARGS] | "
             "lab config {learner,instructor} DEST")
    if not argv or argv[0] not in ("start", "instructor", "config"):
        print(f"lab: expected start, instructor or config, got {repr(argv[0]) if argv else 'nothing'}\n{usage}",
              file=sys.stderr)
        return 2
    what, rest = argv[0], argv[1:]
    try:
        if what == "config":
            if len(rest) != 2:
                print(f"lab config: expected ROLE DEST, got {rest!r}\n{usage}", file=sys.stderr)
                return 2
            print(write_config(rest[0], Path(rest[1])))
            return 0
        course = None
        if what == "instructor":
            parser = argparse.ArgumentParser(prog="./course instructor", add_help=False)
            parser.add_argument("--course", type=Path, default=None)
            known, rest = parser.parse_known_args(rest)
            course = known.course if known.course is not None else DEFAULT_COURSE
        command, env, folder = lab_command("learner" if what == "start" else "instructor", course, rest)
    except LabError as e:
        print(f"{what}: {e}", file=sys.stderr)
        return 2
    os.chdir(folder)  # formgrader reads the course's nbgrader_config.py from here
    os.execve(command[0], command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
