"""A class on JupyterHub, end to end (README, "A class on JupyterHub").

A real JupyterHub on 127.0.0.1 (LocalProcessSpawner, configurable-http-proxy from .test-tools/)
with three Linux accounts of their own, an instructor and two learners. Each server is spawned
through the hub's REST API and spoken to through the proxy with its user's token. The exchange is
nbgrader's, in a shared folder with mode 1777, each command run as its account (`runuser`):
the instructor builds the course and releases an assignment, both learners fetch it, write their
answers through their own servers (one right, one wrong) and submit; the instructor collects,
grades with `./course autograde`, writes feedback and releases it; each learner fetches their own.

Needs root (to create the accounts), `useradd`/`runuser`, jupyterhub in .venv and the proxy that
`./course test` installs with npm; otherwise it skips and says which is missing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROXY = ROOT / ".test-tools" / "node_modules" / ".bin" / "configurable-http-proxy"
VENV_BIN = Path(sys.executable).parent
ASSIGNMENT = "00_orientation"
COURSE_ID = "mhsa_course"

pytestmark = pytest.mark.slow
TIMINGS: list = []  # (what, seconds) of each command run as an account, printed by the test


def _missing() -> str:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the JupyterHub test creates Linux accounts: it needs root"
    for tool in ("useradd", "userdel", "runuser"):
        if shutil.which(tool) is None:
            return f"the JupyterHub test needs {tool}, which is not installed"
    if not (VENV_BIN / "jupyterhub").exists() or not (VENV_BIN / "jupyterhub-singleuser").exists():
        return f"jupyterhub is not installed in {VENV_BIN.parent}; run ./course test (requirements-test.txt)"
    if not PROXY.exists():
        return f"configurable-http-proxy is missing ({PROXY}); ./course test installs it with npm"
    for path in (ROOT, VENV_BIN):  # the accounts run the course's own .venv and package
        for parent in (path, *path.parents):
            if not parent.stat().st_mode & 0o005:
                return f"{parent} is not readable by other accounts, so the learners' servers cannot run the course"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url, token, method="GET", body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
            return response.status, (json.loads(text) if text.strip().startswith(("{", "[")) else text)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", errors="replace")


def _as(user, home, argv, cwd, env_extra, timeout=300):
    """Run ``argv`` as ``user`` with a clean environment of that account."""
    env = ["env", "-i", f"HOME={home}", f"USER={user}", f"LOGNAME={user}", "LANG=C.UTF-8",
           f"PATH={VENV_BIN}:/usr/local/bin:/usr/bin:/bin", *(f"{k}={v}" for k, v in env_extra.items())]
    t0 = time.monotonic()
    proc = subprocess.run(["runuser", "-u", user, "--", *env, *argv], cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout)
    TIMINGS.append((f"{user}: {' '.join(Path(a).name if a.startswith('/') else a for a in argv[:4])}",
                    time.monotonic() - t0))
    return proc


def _ok(proc, what):
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


class Hub:
    """JupyterHub in a folder of its own, run by root; stopped (with every server) by stop()."""

    def __init__(self, base: Path, users, instructor, role_dirs, common_dir, python):
        self.base, self.port, self.token = base, _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        roles = {u: str(role_dirs["instructor" if u == instructor else "learner"]) for u in users}
        config = base / "jupyterhub_config.py"
        config.write_text(f"""
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {_free_port()}
c.ConfigurableHTTPProxy.command = [{str(PROXY)!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{_free_port()}"
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.db_url = "sqlite:///{base / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(base / 'cookie_secret')!r}
c.JupyterHub.pid_file = {str(base / 'jupyterhub.pid')!r}
c.JupyterHub.authenticator_class = "null"  # tokens only: no one logs in with a password here
c.Authenticator.allowed_users = {set(users)!r}
c.Authenticator.admin_users = {{{instructor!r}}}
c.JupyterHub.services = [{{"name": "course-test", "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["course-test"]}}]
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
_roles = {roles!r}
c.Spawner.environment = {{
    # each account's role: its Jupyter config folder first, then the class's (exchange, course id)
    "JUPYTER_CONFIG_PATH": lambda spawner: _roles[spawner.user.name] + ":" + {str(common_dir)!r},
    "PATH": {str(Path(python).parent)!r} + ":/usr/local/bin:/usr/bin:/bin",
}}
""")
        self.users_started = []
        self.log = open(base / "jupyterhub.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(config)], cwd=str(base),
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def api(self, path, method="GET", body=None, token=None):
        return _request(f"{self.url}/hub/api{path}", token or self.token, method, body)

    def wait_up(self, seconds=120):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"jupyterhub exited:\n{self.logs()}"
            try:
                if self.api("/")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"jupyterhub did not answer within {seconds} s:\n{self.logs()}")

    def wait_server(self, user, seconds=200):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status, info = self.api(f"/users/{user}")
            server = (info.get("servers") or {}).get("") if isinstance(info, dict) else None
            if server and server.get("ready"):
                return
            assert self.proc.poll() is None, f"jupyterhub exited:\n{self.logs()}"
            time.sleep(1)
        raise AssertionError(f"{user}'s server was not ready within {seconds} s:\n{self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return (self.base / "jupyterhub.log").read_text(errors="replace")[-6000:]

    def stop(self):
        if self.proc.poll() is None:
            for user in self.users_started:
                try:
                    self.api(f"/users/{user}/server", "DELETE")
                except OSError:
                    pass
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def _python_for_accounts(base: Path, user: str, home: Path):
    """The interpreter the accounts run the course with, and how they call `./course`.

    The course's own .venv where the account can run it. Where it cannot (a .venv made from an
    interpreter under a private folder such as /root, mode 700), an environment made here from a
    system interpreter of the same version that loads the .venv's packages (a `.pth` file); then
    the course's commands are `python -m autograder` (what `./course` runs) and grading runs
    without bubblewrap, which mounts only the interpreter's own environment into its sandbox.
    """
    own = VENV_BIN / "python"
    if _as(user, home, [str(own), "-c", "import autograder, nbgrader, jupyterhub"], home, {}).returncode == 0:
        return str(own), [str(ROOT / "course")], True
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (Path("/usr/bin") / version, Path("/usr/local/bin") / version):
        if not candidate.is_file() or _as(user, home, [str(candidate), "-c", "1"], home, {}).returncode != 0:
            continue
        env_dir = base / "accounts-python"
        made = subprocess.run([str(candidate), "-m", "venv", "--without-pip", str(env_dir)], capture_output=True,
                              text=True)
        if made.returncode != 0:
            continue
        site_dir = next(env_dir.glob("lib/python3*/site-packages"))
        venv_site = next(VENV_BIN.parent.glob("lib/python3*/site-packages"))
        (site_dir / "course-venv.pth").write_text(f"import site; site.addsitedir({str(venv_site)!r})\n")
        # the .venv's Jupyter config and data (server extensions, labextensions, kernels)
        for shared in ("etc", "share"):
            if (VENV_BIN.parent / shared).is_dir() and not (env_dir / shared).exists():
                (env_dir / shared).symlink_to(VENV_BIN.parent / shared)
        # the .venv's commands (nbgrader runs `alembic`, for one), started by this interpreter
        for script in VENV_BIN.iterdir():
            if script.is_file() and not script.is_symlink() and not (env_dir / "bin" / script.name).exists():
                head, _, rest = script.read_bytes().partition(b"\n")
                if head.startswith(b"#!") and head[2:].strip() == str(VENV_BIN / "python").encode():
                    (env_dir / "bin" / script.name).write_bytes(b"#!" + str(env_dir / "bin" / "python").encode()
                                                                 + b"\n" + rest)
        for p in (env_dir, *env_dir.rglob("*")):
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644 if p.suffix else 0o755)
        py = str(env_dir / "bin" / "python")
        ok = _as(user, home, [py, "-c", "import autograder, nbgrader, jupyterhub"], home, {})
        if ok.returncode == 0:
            return py, [py, "-m", "autograder"], False
    pytest.skip(f"other accounts cannot run {own} (its interpreter {os.path.realpath(own)} is in a private "
                f"folder) and no {version} of the system can stand in for it")


def disabled(page: str) -> set:
    """The lab extensions a JupyterLab page disables (its jupyter-config-data)."""
    m = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S)
    assert m, page[:2000]
    return set(json.loads(m.group(1)).get("disabledExtensions") or [])


def _answer(released: dict, right: bool) -> dict:
    """The learner's notebook: each answer cell filled from solutions/, except (for the wrong
    learner) pairwise_scores, which forgets to transpose the keys."""
    solution = json.loads((ROOT / "solutions" / f"{ASSIGNMENT}.ipynb").read_text(encoding="utf-8"))
    answers = {}
    for cell in solution["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and not meta.get("grade"):
            src = "".join(cell["source"])
            answers[meta["grade_id"]] = "\n".join(
                line for line in src.splitlines() if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)
    assert "pairwise_scores" in answers
    if not right:
        answers["pairwise_scores"] = "def pairwise_scores(q, k):\n    return q @ k  # forgot the transpose\n"
    nb = json.loads(json.dumps(released))
    filled = 0
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in answers and cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            cell["source"] = answers[gid]
            filled += 1
    assert filled == len(answers)
    return nb


@pytest.fixture
def accounts():
    """Three Linux accounts with homes of their own (mode 700), removed afterwards."""
    why = _missing()
    if why:
        pytest.skip(why)
    tag = secrets.token_hex(3)
    names = {"instructor": f"mhsa-teach-{tag}", "right": f"mhsa-ada-{tag}", "wrong": f"mhsa-bob-{tag}"}
    made = []
    try:
        for name in names.values():
            proc = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, f"useradd {name}: {proc.stderr}"
            made.append(name)
            home = Path(os.path.expanduser(f"~{name}"))
            home.chmod(0o700)
        yield names
    finally:
        for name in made:
            # the hub stopped every server it spawned; --force in case one is still exiting
            subprocess.run(["userdel", "--force", "--remove", name], capture_output=True)


def test_a_class_on_jupyterhub(accounts):
    t0 = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="mhsa-hub-", dir="/tmp"))
    base.chmod(0o755)
    teacher, ada, bob = accounts["instructor"], accounts["right"], accounts["wrong"]
    home = {u: Path(os.path.expanduser(f"~{u}")) for u in accounts.values()}
    hub = None
    try:
        # The class's shared settings (what an admin puts in /etc/jupyter): the exchange and course id.
        exchange = base / "srv" / "nbgrader" / "exchange"
        exchange.mkdir(parents=True)
        exchange.chmod(0o1777)
        for d in (base / "srv", base / "srv" / "nbgrader"):
            d.chmod(0o755)
        common = base / "etc-jupyter"
        common.mkdir()
        (common / "nbgrader_config.py").write_text(
            f"c = get_config()  # noqa\nc.Exchange.root = {str(exchange)!r}\n"
            f"c.CourseDirectory.course_id = {COURSE_ID!r}\n")
        role_dirs = {}
        for role in ("learner", "instructor"):
            proc = subprocess.run([sys.executable, "-m", "autograder.grading.lab", "config", role,
                                   str(base / f"jupyter-{role}")], capture_output=True, text=True, cwd=str(ROOT))
            _ok(proc, f"lab config {role}")
            role_dirs[role] = Path(proc.stdout.strip())
        for p in base.rglob("*"):
            if p != exchange:
                p.chmod(0o755 if p.is_dir() else 0o644)
        python, course_cmd, own_venv = _python_for_accounts(base, teacher, home[teacher])
        nbgrader = [python, "-m", "nbgrader"]
        env = {"JUPYTER_CONFIG_PATH": str(common), "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin"}

        hub = Hub(base, list(accounts.values()), teacher, role_dirs, common, python)
        hub.wait_up()
        # Every account's server, started through the hub; then each speaks only with its own token.
        tokens = {}
        for user in accounts.values():
            status, _ = hub.api(f"/users/{user}/server", "POST")
            assert status in (201, 202), f"{status}\n{hub.logs()}"
            hub.users_started.append(user)
            status, made = hub.api(f"/users/{user}/tokens", "POST", {"note": "course test", "expires_in": 900})
            assert status == 201, (status, made)
            tokens[user] = made["token"]

        # Meanwhile the instructor builds the course in their home and releases the assignment.
        course = home[teacher] / "classroom"
        _ok(_as(teacher, home[teacher], [*course_cmd, "build", "--course", str(course), ASSIGNMENT],
                home[teacher], env), "./course build")
        _ok(_as(teacher, home[teacher], [*nbgrader, "release_assignment", ASSIGNMENT], course, env),
            "nbgrader release_assignment")

        for user in accounts.values():
            hub.wait_server(user)

        def server(user, path, method="GET", body=None, token=None):
            return _request(f"{hub.url}/user/{user}{path}", token or tokens[user], method, body)

        # The roles: learners' servers have no formgrader, the instructor's has.
        for user in (ada, bob):
            assert server(user, "/formgrader")[0] == 404
            status, page = server(user, "/lab")
            assert status == 200
            assert {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment"} <= disabled(page)
            assert "@jupyter/nbgrader:assignment-list" not in disabled(page)
        assert server(teacher, "/formgrader")[0] == 200
        assert not disabled(server(teacher, "/lab")[1])
        # A token opens its own account's server only.
        assert server(bob, "/api/contents", token=tokens[ada])[0] == 403

        # Learners see the released assignment through their own server (nbgrader's assignment list).
        status, listing = server(ada, f"/assignments?course_id={COURSE_ID}")
        assert status == 200 and listing.get("success"), listing
        assert any(a.get("assignment_id") == ASSIGNMENT and a.get("status") == "released"
                   for a in listing["value"]), listing

        def learner_round(user, right):
            _ok(_as(user, home[user], [*nbgrader, "fetch_assignment", ASSIGNMENT, "--course", COURSE_ID],
                    home[user], env), f"{user}: nbgrader fetch_assignment")
            path = f"/api/contents/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
            status, model = server(user, f"{path}?content=1")
            assert status == 200, (status, model)
            status, saved = server(user, path, "PUT",
                                   {"type": "notebook", "format": "json", "content": _answer(model["content"], right)})
            assert status in (200, 201), (status, saved)
            written = home[user] / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
            assert written.stat().st_uid == int(subprocess.check_output(["id", "-u", user]))  # written by its own server
            _ok(_as(user, home[user], [*nbgrader, "submit", ASSIGNMENT, "--course", COURSE_ID], home[user], env),
                f"{user}: nbgrader submit")

        with ThreadPoolExecutor(2) as pool:  # the two learners at the same time, as in a class
            for done in [pool.submit(learner_round, ada, True), pool.submit(learner_round, bob, False)]:
                done.result()

        # The exchange keeps submissions apart: a learner can neither list the inbound folder nor
        # read another's submission, nor another's home.
        inbound = exchange / COURSE_ID / "inbound"
        bobs = [p for p in inbound.iterdir() if p.name.startswith(bob + "+")]
        assert len(bobs) == 1 and len([p for p in inbound.iterdir() if p.name.startswith(ada + "+")]) == 1
        assert _as(ada, home[ada], ["ls", str(inbound)], home[ada], {}).returncode != 0
        assert _as(ada, home[ada], ["cat", str(home[bob] / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")], home[ada],
                   {}).returncode != 0
        # nbgrader leaves a submission's files readable by all; what keeps them from other learners
        # is the inbound folder, which they may write but not list (mode 733), and the random part
        # of each submission's name: no listing, no glob, no way to name another's submission.
        assert (inbound.stat().st_mode & 0o777) == 0o733, oct(inbound.stat().st_mode)
        assert re.search(r"\+[A-Za-z0-9_-]{8,}$", bobs[0].name), bobs[0].name
        for probe in (f"cat {inbound}/{bob}+*/{ASSIGNMENT}.ipynb", f"find {exchange} -name '{bob}+*'",
                      f"ls {inbound}/{bob}+*"):
            seen = _as(ada, home[ada], ["sh", "-c", probe], home[ada], {})
            assert bob + "+" not in seen.stdout and '"cells"' not in seen.stdout, (probe, seen.stdout)

        # The instructor collects from the exchange into a folder of nbgrader's layout, brings it
        # into the course with ./course collect, grades, writes and releases the feedback.
        _ok(_as(teacher, home[teacher], [*nbgrader, "collect", ASSIGNMENT,
                                        "--CourseDirectory.submitted_directory=inbox"], course, env),
            "nbgrader collect")
        _ok(_as(teacher, home[teacher], [*course_cmd, "collect", "--course", str(course),
                                        str(course / "inbox")], home[teacher], env), "./course collect")
        # The sandbox mounts the grader's own environment: graded in it where the account runs the
        # course's .venv and bwrap starts for it (unprivileged user namespaces), else without.
        sandbox = _as(teacher, home[teacher], ["bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"],
                      home[teacher], {})
        no_sandbox = [] if own_venv and sandbox.returncode == 0 else ["--no-sandbox"]
        if no_sandbox:
            print(f"grading with --no-sandbox: {'bwrap: ' + sandbox.stderr.strip() if own_venv else 'a stand-in interpreter'}")
        _ok(_as(teacher, home[teacher], [*course_cmd, "autograde", "--course", str(course), "-j", "2",
                                        *no_sandbox], home[teacher], env, timeout=400), "./course autograde")
        _ok(_as(teacher, home[teacher], [*course_cmd, "feedback", "--course", str(course)],
                home[teacher], env), "./course feedback")
        _ok(_as(teacher, home[teacher], [*nbgrader, "release_feedback", ASSIGNMENT], course, env),
            "nbgrader release_feedback")

        # The grades: the right answer gets every step's points, the wrong one loses pairwise_scores'.
        results = {u: json.loads((course / "grading" / u / f"{ASSIGNMENT}.json").read_text()) for u in (ada, bob)}
        for u in (ada, bob):
            assert results[u]["status"] == "ok", results[u]
        steps = {u: {s["id"]: s for s in results[u]["steps"]} for u in (ada, bob)}
        assert steps[ada] and all(s["points"] == s["max_points"] for s in steps[ada].values()), steps[ada]
        assert steps[bob]["check_pairwise_scores"]["points"] < steps[bob]["check_pairwise_scores"]["max_points"]
        assert all(s["points"] == s["max_points"] for g, s in steps[bob].items() if g != "check_pairwise_scores")

        # Each learner fetches their own feedback, which shows their own score.
        def fetch_feedback(user):
            _ok(_as(user, home[user], [*nbgrader, "fetch_feedback", ASSIGNMENT, "--course", COURSE_ID],
                    home[user], env), f"{user}: nbgrader fetch_feedback")
            pages = list((home[user] / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html"))
            assert len(pages) == 1, pages
            total = sum(s["points"] for s in steps[user].values())
            top = sum(s["max_points"] for s in steps[user].values())
            html = pages[0].read_text(encoding="utf-8")
            assert f"Score: {total:g} / {top:g}" in html, (user, total, top)

        with ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(fetch_feedback, ada), pool.submit(fetch_feedback, bob)]:
                done.result()
        assert sum(s["points"] for s in steps[bob].values()) < sum(s["points"] for s in steps[ada].values())
        print("\n".join(f"{seconds:6.1f} s  {what}" for what, seconds in TIMINGS))
    finally:
        if hub is not None:
            hub.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert time.monotonic() - t0 < 400
