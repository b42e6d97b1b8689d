"""The sandbox layer (autograder/grading/sandbox.py): hostile programs, written as a determined
student would, run inside it with the venv's Python, and each is shown to be contained.

Tests marked ``sandbox`` start bwrap; they are skipped, with the reason, only where no sandbox can
start on this machine (bwrap missing, user namespaces off)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autograder.grading import sandbox as sb

ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3CRET-do-not-read"


@pytest.fixture(scope="session")
def sandbox_ok():
    ok, why = sb.check_sandbox()
    return ok, why


@pytest.fixture
def need_sandbox(sandbox_ok):
    ok, why = sandbox_ok
    if not ok:
        pytest.skip(f"no sandbox can start here: {why}")


@pytest.fixture
def course(tmp_path):
    """A fake course folder with secrets, and the submission's scratch copy next to them."""
    c = tmp_path / "classroom"
    (c / "submitted" / "alice" / "01_attention").mkdir(parents=True)
    (c / "submitted" / "alice" / "01_attention" / "alice_answer.ipynb").write_text(SECRET)
    (c / "source").mkdir()
    (c / "source" / "hidden_tests.ipynb").write_text(SECRET)
    (c / "gradebook.db").write_text(SECRET)
    (c / ".grading_seed").write_text(SECRET)
    (tmp_path / "secret.txt").write_text(SECRET)
    scratch = c / "scratch" / "bob"
    scratch.mkdir(parents=True)
    (scratch / "bob.ipynb").write_text("{}")
    return c, scratch


@pytest.fixture(scope="module", autouse=True)
def own_slot():
    """A worker slot claimed as a grading run claims it (machine-wide), so that the uid these
    tests' sandboxes run as is no other grading run's on this machine (the per-uid checks below
    would otherwise see its processes)."""
    from autograder.grading import pool

    global SLOT
    SLOT, fd = pool.claim_slot(pool.SLOT_DIR)
    yield SLOT
    if fd is not None:
        os.close(fd)  # the slot is free again


SLOT = 0


def _spec(scratch, **kw):
    limits = dict(memory_mb=256, tmp_mb=64, shm_mb=32, file_mb=16, cpu_s=60, nproc=64, slot=SLOT)
    limits.update(kw)
    return sb.SandboxSpec(scratch=scratch, **limits)


def _run(scratch, code, timeout=60, **kw):
    return sb.run(_spec(scratch, **kw), [sys.executable, "-c", textwrap.dedent(code)], timeout=timeout,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _json(result):
    assert result.returncode == 0, (result.returncode, result.stderr.decode(errors="replace")[-3000:])
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


# --- without bwrap ------------------------------------------------------------------------------


def test_missing_bwrap_says_how_to_install_in_one_line(monkeypatch):
    monkeypatch.setattr(sb, "find_bwrap", lambda: None)
    with pytest.raises(sb.SandboxUnavailable) as e:
        sb.require_sandbox()
    msg = str(e.value)
    assert "\n" not in msg
    for needle in ("apt-get install bubblewrap", "dnf install bubblewrap", "pacman -S bubblewrap", "macOS",
                   "--no-sandbox"):
        assert needle in msg


@pytest.mark.parametrize("privileged", [True, False])
def test_command_mounts_only_the_allow_list(tmp_path, privileged):
    classroom = ROOT / "classroom"  # where an instructor's course folder may sit
    spec = sb.SandboxSpec(scratch=tmp_path, tmp_mb=100, shm_mb=10)
    cmd = sb.command(spec, ["python", "-c", "pass"], bwrap="bwrap", privileged=privileged)
    sources = [cmd[i + 1] for i, a in enumerate(cmd) if a in ("--ro-bind", "--bind")]
    dests = [cmd[i + 2] for i, a in enumerate(cmd) if a in ("--ro-bind", "--bind", "--symlink")]
    for path in (str(ROOT), str(classroom), str(Path.home())):
        assert path not in sources and path not in dests
    assert not any(s.startswith(str(classroom)) for s in sources)
    # every mount of the allow-list is on the command line, and nothing else is bound
    binds = []
    for m in sb.mounts(spec):
        flag = {"ro": "--ro-bind", "rw": "--bind", "symlink": "--symlink"}.get(m.kind)
        if flag:
            i = cmd.index(m.dest, cmd.index(flag))
            assert cmd[i - 2:i + 1] == [flag, m.source, m.dest] or any(
                cmd[j:j + 3] == [flag, m.source, m.dest] for j in range(len(cmd)))
            if m.kind != "symlink":
                binds.append(m.source)
        elif m.kind == "tmpfs":
            j = cmd.index(m.dest)
            assert cmd[j - 1] == "--tmpfs" and cmd[j - 3] == "--size" and int(cmd[j - 2]) == m.size > 0
    assert sorted(binds) == sorted(sources)
    # the course's packages (not the repository root), the venv and the scratch copy are there
    assert str(ROOT / "autograder") in sources and str(ROOT / "mhsa_lib") in sources
    assert any(sys.prefix == s or sys.prefix.startswith(s + "/") for s in sources)
    assert cmd[cmd.index(str(Path(tmp_path).resolve())) + 1] == sb.SCRATCH
    assert [m.dest for m in sb.mounts(spec) if m.kind == "tmpfs"] == ["/tmp", "/dev/shm"]
    assert {"--die-with-parent", "--new-session", "--clearenv", "--proc", "--dev"} <= set(cmd)
    assert cmd[cmd.index("--cap-drop") + 1] == "ALL"
    # the environment is explicit: nothing of the grader's
    env = {cmd[i + 1]: cmd[i + 2] for i, a in enumerate(cmd) if a == "--setenv"}
    assert env["HOME"] == sb.SCRATCH and env["TMPDIR"] == "/tmp" and env["PYTHONNOUSERSITE"] == "1"
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env
    tail = cmd[cmd.index("--") + 1:]
    if privileged:
        assert {"--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"} <= set(cmd)
        assert tail[0] == sb.SETPRIV and f"--reuid={spec.uid}" in tail and "--no-new-privs" in tail
        assert tail[-3:] == ["python", "-c", "pass"]
    else:
        assert "--unshare-all" in cmd and tail == ["python", "-c", "pass"]


def test_slots_get_distinct_uids_under_root(tmp_path):
    if os.geteuid() != 0:
        assert sb.SandboxSpec(scratch=tmp_path, slot=3).uid == os.geteuid()
    else:
        assert [sb.SandboxSpec(scratch=tmp_path, slot=s).uid for s in (0, 1, 2)] == [60000, 60001, 60002]


# --- inside bwrap -------------------------------------------------------------------------------


@pytest.mark.sandbox
def test_runs_python_with_the_course_packages(need_sandbox, course):
    _, scratch = course
    out = _json(_run(scratch, """
        import json, os, autograder, mhsa_lib
        from mhsa_lib import attention
        print(json.dumps({"uid": os.getuid(), "cwd": os.getcwd(), "home": os.environ["HOME"],
                          "env": sorted(os.environ), "files": os.listdir("."), "pkg": autograder.__file__}))
    """))
    assert out["cwd"] == sb.SCRATCH == out["home"] and out["files"] == ["bob.ipynb"]
    assert out["uid"] != 0 and out["pkg"].startswith(str(ROOT / "autograder"))
    assert "PYTHONPATH" not in out["env"] and "MHSA_QUICK_TIER_GUARD" not in out["env"]


@pytest.mark.sandbox
def test_secrets_and_other_students_are_out_of_reach(need_sandbox, course):
    c, scratch = course
    out = _json(_run(scratch, f"""
        import json, os
        names = {{"secret.txt", "gradebook.db", ".grading_seed", "alice_answer.ipynb", "hidden_tests.ipynb"}}
        tries = [{str(c / "gradebook.db")!r}, {str(c / ".grading_seed")!r}, {str(c.parent / "secret.txt")!r},
                 {str(c / "submitted/alice/01_attention/alice_answer.ipynb")!r},
                 "../../gradebook.db", "../../.grading_seed", "../../../secret.txt",
                 "../../submitted/alice/01_attention/alice_answer.ipynb",
                 {str(ROOT / "classroom" / "gradebook.db")!r}, {str(ROOT / "README.md")!r}]
        for pid in ["1", str(os.getppid()), "self"]:
            for sub in ("cwd", "root"):
                base = f"/proc/{{pid}}/{{sub}}"
                tries += [base + "/../../gradebook.db", base + {str(c / "gradebook.db")!r},
                          base + {str(c.parent / "secret.txt")!r}]
        for fd in os.listdir("/proc/self/fd"):
            tries += [f"/proc/self/fd/{{fd}}/../gradebook.db", f"/proc/self/fd/{{fd}}/../../gradebook.db"]
        read = []
        for path in tries:
            try:
                with open(path, "rb") as f:
                    if b"{SECRET}" in f.read():
                        read.append(path)
            except OSError:
                pass
        found = []
        for base, dirs, files in os.walk("/", onerror=lambda e: None):
            if base.startswith("/proc"):
                dirs[:] = []
                continue
            for n in files + dirs:
                path = os.path.join(base, n)
                if n in names or "classroom" in path:  # a file of that name (nbgrader ships a gradebook.db) with the secret
                    try:
                        with open(path, "rb") as f:
                            secret = b"{SECRET}" in f.read()
                    except OSError:
                        secret = n in dirs
                    if secret:
                        found.append(path)
        print(json.dumps({{"read": read, "found": found, "tries": len(tries)}}))
    """))
    assert out["tries"] > 15
    assert out["read"] == [] and out["found"] == []


@pytest.mark.sandbox
def test_writes_outside_scratch_fail(need_sandbox, course, tmp_path):
    c, scratch = course
    targets = [str(ROOT / "autograder" / "pwned.py"), str(ROOT / "mhsa_lib" / "pwned.py"),
               os.path.join(sys.prefix, "pwned.pth"), "/usr/pwned", "/pwned", "/etc/pwned",
               str(c / "gradebook.db"), str(tmp_path / "pwned"), "/proc/sys/kernel/hostname"]
    out = _json(_run(scratch, f"""
        import json, os
        wrote = []
        for path in {targets!r}:
            try:
                with open(path, "w") as f:
                    f.write("x")
                wrote.append(path)
            except OSError:
                pass
        with open("mine.txt", "w") as f:
            f.write("ok")
        with open("/tmp/t.txt", "w") as f:
            f.write("ok")
        print(json.dumps({{"wrote": wrote}}))
    """))
    assert out["wrote"] == []
    assert (scratch / "mine.txt").read_text() == "ok"
    assert not (ROOT / "autograder" / "pwned.py").exists() and (c / "gradebook.db").read_text() == SECRET


@pytest.mark.sandbox
def test_inherited_descriptors_are_closed(need_sandbox, course):
    _, scratch = course
    r, w = os.pipe()
    os.set_inheritable(r, True)
    os.set_inheritable(w, True)
    secret = open(course[0] / "gradebook.db", "rb")  # noqa: SIM115
    os.set_inheritable(secret.fileno(), True)
    try:
        os.write(w, SECRET.encode())
        out = _json(_run(scratch, f"""
            import json, os
            fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
            got = []
            for fd in list(range(3, 256)) + [{r}, {w}, {secret.fileno()}]:
                try:
                    got.append((fd, os.read(fd, 100).decode(errors="replace")))
                except OSError:
                    pass
            print(json.dumps({{"fds": fds, "got": got}}))
        """))
    finally:
        os.close(r)
        os.close(w)
        secret.close()
    assert out["got"] == []
    assert out["fds"] == [0, 1, 2, 3]  # 3: the listing's own descriptor


@pytest.mark.sandbox
def test_no_network_not_even_the_hosts_loopback(need_sandbox, course):
    _, scratch = course
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        out = _json(_run(scratch, f"""
            import json, socket
            errors = []
            for host in ("127.0.0.1", "localhost", "8.8.8.8"):
                try:
                    socket.create_connection((host, {port}), timeout=3).close()
                    errors.append(None)
                except OSError as e:
                    errors.append(type(e).__name__)
            print(json.dumps({{"errors": errors}}))
        """))
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert None not in out["errors"]


@pytest.mark.sandbox
def test_a_daemon_does_not_outlive_run(need_sandbox, course):
    _, scratch = course
    result = _run(scratch, """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                with open("started", "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(3)
                with open("escaped", "w") as f:
                    f.write("still alive after run returned")
                os._exit(0)
            os._exit(0)
        for _ in range(200):
            if os.path.exists("started"):
                break
            time.sleep(0.01)
        print("main done")
    """)
    assert result.returncode == 0 and b"main done" in result.stdout
    assert (scratch / "started").exists()  # the daemon did start
    if os.geteuid() == 0:
        assert _processes_of(result.uid) == []
    time.sleep(4)
    assert not (scratch / "escaped").exists()


def _processes_of(uid, settle_s=2.0):
    """The live processes (not zombies: they run nothing) of ``uid``, once those killed with the
    sandbox's namespace are gone: on a busy machine the kernel may take a moment over a dying one."""
    deadline = time.monotonic() + settle_s
    while True:
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.stat(f"/proc/{pid}").st_uid != uid:
                    continue
                with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                if state not in ("Z", "X"):
                    out.append(int(pid))
            except (OSError, IndexError):
                pass
        if not out or time.monotonic() >= deadline:
            return out
        time.sleep(0.05)


@pytest.mark.sandbox
def test_wall_clock_timeout_kills_everything(need_sandbox, course):
    _, scratch = course
    start = time.monotonic()
    result = _run(scratch, """
        import os, time
        os.fork()
        os.fork()
        time.sleep(120)
    """, timeout=2)
    assert result.timed_out and time.monotonic() - start < 15
    if os.geteuid() == 0:
        assert _processes_of(result.uid) == []


@pytest.mark.sandbox
def test_fork_bomb_hits_the_process_limit(need_sandbox, course):
    _, scratch = course
    start = time.monotonic()
    out = _json(_run(scratch, """
        import json, os, time
        made, error = 0, None
        for _ in range(5000):
            try:
                pid = os.fork()
            except OSError as e:
                error = e.errno
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            made += 1
        print(json.dumps({"made": made, "error": error}))
    """, nproc=40))
    assert out["error"] is not None and out["made"] < 40
    assert time.monotonic() - start < 30


@pytest.mark.sandbox
def test_heap_growth_stops_at_the_memory_limit(need_sandbox, course):
    _, scratch = course
    result = _run(scratch, """
        chunks = []
        try:
            for i in range(256):
                chunks.append(bytearray(16 * 2**20))
                print(len(chunks) * 16, flush=True)
        except MemoryError:
            print("MemoryError", flush=True)
    """, memory_mb=256)
    lines = result.stdout.decode().split()
    got = max([int(x) for x in lines if x.isdigit()] or [0])
    assert got < 256 and ("MemoryError" in lines or result.returncode != 0)


@pytest.mark.sandbox
@pytest.mark.parametrize("where", ["/dev/shm", "/tmp"])
def test_tmpfs_writes_stop_at_their_size(need_sandbox, course, where):
    _, scratch = course
    out = _json(_run(scratch, f"""
        import json, os, errno
        written, err = 0, None
        try:
            with open("{where}/big", "wb") as f:
                for _ in range(64):
                    f.write(b"x" * 2**20 * 8)
                    f.flush()
                    written += 8
        except OSError as e:
            err = errno.errorcode.get(e.errno)
        print(json.dumps({{"written": written, "err": err}}))
    """, tmp_mb=48, shm_mb=24, file_mb=1024, memory_mb=512))
    assert out["err"] == "ENOSPC"
    assert out["written"] <= (24 if where == "/dev/shm" else 48)


@pytest.mark.sandbox
def test_memory_cgroup_counts_tmpfs_too(need_sandbox, course):
    """Where the grader may make a cgroup, the total (processes + /tmp + /dev/shm) is bounded."""
    _, scratch = course
    code = """
        import errno, json
        written, err = 0, None
        try:
            with open("/tmp/big", "wb") as f:
                for _ in range(48):
                    f.write(b"x" * 2**20 * 8)
                    f.flush()
                    written += 8
                    print(written, flush=True)
        except OSError as e:
            err = errno.errorcode.get(e.errno)
        print(json.dumps({"written": written, "err": err}))
    """
    result = _run(scratch, code, memory_mb=128, tmp_mb=384, file_mb=1024)
    if result.memory != "cgroup":
        pytest.skip("no memory cgroup here (not root, or no writable cgroup v1 memory controller): "
                    "only the tmpfs size bounds /tmp")
    lines = result.stdout.decode().split()
    written = max([int(x) for x in lines if x.isdigit()] or [0])
    assert written < 160  # the cgroup's 128 MiB (plus the last chunk), not the tmpfs's 384


@pytest.mark.sandbox
def test_file_size_limit_on_scratch(need_sandbox, course):
    _, scratch = course
    out = _json(_run(scratch, """
        import errno, json
        err = None
        try:
            with open("big.bin", "wb") as f:
                for _ in range(8):
                    f.write(b"x" * 2**20 * 4)
                    f.flush()
        except OSError as e:
            err = errno.errorcode.get(e.errno)
        print(json.dumps({"err": err}))
    """, file_mb=16))
    assert out["err"] == "EFBIG"
    assert (scratch / "big.bin").stat().st_size <= 16 * 2**20


@pytest.mark.sandbox
def test_no_cgroup_is_left_behind(need_sandbox, course):
    _, scratch = course
    before = _our_cgroups()
    _run(scratch, "pass")
    assert _our_cgroups() == before


def _our_cgroups():
    found = set()
    for controller in ("memory", "pids"):
        d = sb._v1_dir(controller)
        if d is not None and d.is_dir():
            found |= {p.name for p in d.iterdir() if p.name.startswith(f"mhsa-sandbox-{os.getpid()}-")}
    return found


def test_binds_below_tmp_land_on_top_of_the_private_tmp(tmp_path):
    """A checkout or virtual environment under /tmp (a CI clone, say) stays visible inside: the
    private /tmp is mounted first, the binds below it after."""
    venv = tmp_path / "venv"
    venv.mkdir()
    spec = sb.SandboxSpec(scratch=tmp_path, python_dirs=(str(venv),), package_dirs=())
    order = [m.dest for m in sb.mounts(spec)]
    assert order.index("/tmp") < order.index(str(venv))
    assert order.index("/dev") < order.index("/dev/shm")
