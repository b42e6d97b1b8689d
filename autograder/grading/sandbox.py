"""Run one command (a student's code) inside a bubblewrap sandbox.

What a sandboxed command sees and may do (each point is checked by ``tests/test_sandbox.py`` with
a hostile program):

* **Files: an allow-list.** A new, empty root with, read-only: the system directories that
  Python needs (``/usr``; ``/bin``, ``/sbin``, ``/lib*`` as the same symlinks or read-only
  binds as on the host), from ``/etc`` only the dynamic loader's files and the time zone
  (``ld.so.cache``, ``ld.so.conf``, ``ld.so.conf.d``, ``localtime``: no ``passwd``, no
  ``hosts``, nothing with secrets), the interpreter's prefix and the virtual environment, and the
  course's two package folders (``autograder/`` and ``mhsa_lib/``, at their own absolute paths so
  that an editable install's finder, which maps each package name to its folder, still finds
  them). The repository root is never mounted: the instructor's course folder (``gradebook.db``,
  ``.grading_seed``, ``source/``, every submission) may sit inside it. Read-write: only the
  submission's private scratch copy, at :data:`SCRATCH` (also ``HOME`` and the working
  directory), a private ``/tmp`` and ``/dev/shm`` (tmpfs of a fixed size), plus a fresh ``/proc``
  (of the sandbox's own PID namespace) and a minimal ``/dev``. No home directory, no ``/sys``.
* **Namespaces** (``--unshare-all``): its own mount, PID, IPC, UTS, network (only a loopback
  device: nothing outside, not even the host's 127.0.0.1) and cgroup namespaces, and a user
  namespace; ``--die-with-parent``; ``--new-session`` (no controlling terminal, so no TIOCSTI
  injection into the grader's terminal); ``--cap-drop ALL``.
* **An unprivileged uid.** A grader running as root runs each sandbox as uid/gid
  ``60000 + slot`` (one uid per worker slot, so that the per-uid process limit is per sandbox)
  and makes the scratch copy that uid's. bwrap itself runs as root there, without a user
  namespace, so that it can mount sources the sandbox uid could not reach by path (an
  interpreter under ``/root``, mode 700; bwrap's ``--ro-bind-fd`` resolves its descriptor back
  to the path, so handing over descriptors does not help): it keeps only CAP_SETUID/CAP_SETGID
  and runs ``setpriv`` inside, which drops to the sandbox uid with no capabilities and
  ``no_new_privs`` before the student's command starts; no student code ever runs as uid 0.
  (Dropping to the uid *before* bwrap, with a user namespace, fails on such an interpreter.)
  A grader that is not root runs bwrap unprivileged, as itself, with a user namespace
  (``--unshare-all``).
* **Limits.** ``RLIMIT_NPROC`` (processes of the sandbox uid), ``RLIMIT_FSIZE`` (largest file
  written), ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_CORE`` 0 and ``RLIMIT_DATA`` (each process's
  private writable memory: a MemoryError where Python asks for more). Total memory:

  - *as root with a cgroup v1 memory controller* (this is the case on the course's Debian grading
    VM: the grader may ``mkdir`` a child of its own cgroup): a cgroup per run with
    ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where swap is accounted), which
    counts every process of the sandbox together *and* the pages written to its ``/tmp`` and
    ``/dev/shm``; with a pids controller also ``pids.max``. The cgroup is emptied (SIGKILL to
    what is left) and removed after the run.
  - *otherwise* (not root, cgroup v2 only, or a read-only cgroup tree): no total. What holds is
    ``RLIMIT_DATA`` per process, times at most ``RLIMIT_NPROC`` processes, plus the sizes of the
    ``/tmp`` and ``/dev/shm`` tmpfs. :class:`SandboxResult` says which held
    (``result.memory``: ``"cgroup"`` or ``"rlimit"``). A grader that is not root also shares
    ``RLIMIT_NPROC`` with its own processes (the kernel counts the limit per uid), so the
    limit is set to ``nproc`` plus the processes the user already runs.
* **File descriptors.** Only stdin, stdout and stderr as the caller chooses them (``close_fds``);
  more only through ``pass_fds``.
* **Environment.** Empty (``--clearenv``), then an explicit small one: ``PATH``,
  ``HOME``/``TMPDIR``, ``LANG``, ``USER``, ``PYTHONNOUSERSITE=1``, ``PYTHONDONTWRITEBYTECODE=1``,
  one thread per maths library, plus :attr:`SandboxSpec.env`.
* **Nothing outlives** :func:`run`: when the sandbox's first process ends (or the wall-clock limit
  kills bwrap), the kernel kills every process in its PID namespace, ``setsid`` + double-fork
  daemons included; :func:`run` also kills bwrap's process group and, where it made one, every
  process left in the cgroup. bwrap dies with the process that started it (``--die-with-parent``,
  requested already between fork and exec): a grader killed with SIGKILL takes its sandboxes
  with it, and the next run removes their empty cgroups (:func:`remove_stale_cgroups`).

What it does *not* do: no seccomp filter (the kernel's whole system call interface stays open to
the student, as for any unprivileged user on the grading machine), no CPU-share or I/O limits, no
GPU (``/dev/nvidia*`` is not mounted), and disk use of the scratch copy is bounded only by
``RLIMIT_FSIZE`` per file. Jupyter's default TCP transport cannot cross the network namespace: a
kernel in the sandbox must talk to the grader over ``transport="ipc"`` (Unix sockets in scratch).

Cost per start (``benchmarks/bench_sandbox.py``, medians of 20 and 30 interleaved runs of
``python -c pass`` on a 2-core Debian VM, as root, with a memory cgroup): 45-50 ms outside,
134-138 ms inside, so about 85-95 ms per start (the goal: at most 0.3 s).

Needs ``bwrap`` (bubblewrap 0.8 or later, for ``--ro-bind-fd``/``--size``) and unprivileged user
namespaces; :func:`require_sandbox` says how to install it.
"""

from __future__ import annotations

import errno
import importlib.util
import itertools
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from . import lifeline

SCRATCH = "/scratch"  # where the submission's private copy appears inside (HOME and working dir)
BASE_UID = 60000  # a grader running as root runs slot N's sandbox as uid/gid BASE_UID + N

INSTALL_HINT = (
    "bubblewrap (bwrap) is not installed: install it with `apt-get install bubblewrap` (Debian/Ubuntu), "
    "`dnf install bubblewrap` (Fedora) or `pacman -S bubblewrap` (Arch); on macOS it is not available, "
    "grade with --no-sandbox knowingly"
)

# Read-only from the host's /etc: only what the dynamic loader and the time functions read.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
SETPRIV = "/usr/bin/setpriv"  # util-linux; drops a root grader's sandbox to its uid inside
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot start a sandbox on this machine."""


def find_bwrap() -> Optional[str]:
    """The path of ``bwrap``, or None."""
    found = shutil.which("bwrap")
    if found:
        return found
    for candidate in ("/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_sandbox() -> str:
    """The path of ``bwrap``; SandboxUnavailable (a one-line message saying how to install it) if missing."""
    found = find_bwrap()
    if found is None:
        raise SandboxUnavailable(INSTALL_HINT)
    return found


def _package_dirs() -> Tuple[str, ...]:
    """The folders of the course's packages (not the repository root above them)."""
    dirs = [str(Path(__file__).resolve().parents[1])]  # autograder/
    spec = importlib.util.find_spec("mhsa_lib")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(str(Path(list(spec.submodule_search_locations)[0]).resolve()))
    else:
        dirs.append(str(Path(__file__).resolve().parents[2] / "mhsa_lib"))
    return tuple(dirs)


def _python_dirs() -> Tuple[str, ...]:
    """The virtual environment and the interpreter's installation, as absolute paths."""
    dirs = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
            str(Path(os.path.realpath(sys.executable)).parent.parent)]
    return tuple(dict.fromkeys(os.path.abspath(d) for d in dirs))


def _default_env() -> Dict[str, str]:
    return {
        "PATH": f"{os.path.join(sys.prefix, 'bin')}:/usr/local/bin:/usr/bin:/bin",
        "HOME": SCRATCH,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "USER": "student",
        "LOGNAME": "student",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


@dataclass
class SandboxSpec:
    """What one sandbox may see and use.

    scratch: the host folder (the submission's private copy) that appears read-write at SCRATCH.
    slot: the worker slot; a root grader runs it as uid/gid ``BASE_UID + slot``.
    memory_mb: total memory of the sandbox (cgroup, where one can be made) and RLIMIT_DATA per process.
    tmp_mb, shm_mb: the sizes of the private /tmp and /dev/shm.
    file_mb: the largest file it may write (RLIMIT_FSIZE). cpu_s: CPU seconds (RLIMIT_CPU).
    nproc: processes (and threads) of the sandbox uid (RLIMIT_NPROC, and pids.max in a cgroup).
    env: added to (or replacing) the small default environment.
    ro_paths: more host paths to mount read-only at the same place (e.g. an assignment's data).
    python_dirs, package_dirs: default to this interpreter's venv and prefix, and the course's two packages.
    use_cgroup: make a memory (and pids) cgroup per run where the grader may (root, cgroup v1).
    """

    scratch: os.PathLike
    slot: int = 0
    memory_mb: int = 2048
    tmp_mb: int = 256
    shm_mb: int = 64
    file_mb: int = 200
    cpu_s: int = 600
    nproc: int = 256
    env: Mapping[str, str] = field(default_factory=dict)
    ro_paths: Sequence[str] = ()
    python_dirs: Sequence[str] = field(default_factory=_python_dirs)
    package_dirs: Sequence[str] = field(default_factory=_package_dirs)
    use_cgroup: bool = True

    @property
    def uid(self) -> int:
        """The uid (and gid) the sandbox runs as: BASE_UID + slot for a root grader, else the grader's own."""
        return BASE_UID + self.slot if os.geteuid() == 0 else os.geteuid()

    @property
    def gid(self) -> int:
        return BASE_UID + self.slot if os.geteuid() == 0 else os.getegid()


@dataclass(frozen=True)
class Mount:
    kind: str  # "ro" (read-only bind), "rw" (read-write bind), "symlink", "tmpfs", "proc", "dev"
    dest: str
    source: Optional[str] = None  # host path (bind) or link target (symlink)
    size: Optional[int] = None  # bytes, tmpfs only


def _covered(path: str, by: Sequence[str]) -> bool:
    return any(path == b or path.startswith(b.rstrip("/") + "/") for b in by)


def mounts(spec: SandboxSpec) -> List[Mount]:
    """The allow-list, in the order bwrap sets it up: the private /proc, /dev, /tmp and /dev/shm
    first, so that a bind below one of them (a virtual environment under /tmp) lands on top of it;
    then parents before children."""
    out: List[Mount] = [
        Mount("proc", "/proc"),
        Mount("dev", "/dev"),
        Mount("tmpfs", "/tmp", size=spec.tmp_mb * 2**20),
        Mount("tmpfs", "/dev/shm", size=spec.shm_mb * 2**20),
    ]
    binds: List[str] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            out.append(Mount("symlink", d, os.readlink(d)))
        elif os.path.isdir(d):
            binds.append(d)
    for f in ETC_FILES:
        if os.path.lexists(f):
            binds.append(f)  # a symlink (localtime) is bound as what it points to
    extra = [os.path.abspath(p) for p in (*spec.python_dirs, *spec.package_dirs, *spec.ro_paths)]
    for p in sorted(dict.fromkeys(extra), key=lambda p: (p.count("/"), p)):
        if os.path.exists(p) and not _covered(p, binds):
            binds.append(p)
    out.extend(Mount("ro", p, os.path.realpath(p)) for p in binds)
    out.append(Mount("rw", SCRATCH, os.path.realpath(os.fspath(spec.scratch))))
    return out


def environment(spec: SandboxSpec) -> Dict[str, str]:
    env = _default_env()
    env.update({str(k): str(v) for k, v in spec.env.items()})
    return env


def _privileged() -> bool:
    return os.geteuid() == 0


def command(spec: SandboxSpec, argv: Sequence[str], *, bwrap: Optional[str] = None,
            privileged: Optional[bool] = None) -> List[str]:
    """The bwrap command line that runs ``argv`` in the sandbox ``spec`` describes.

    privileged (default: whether this process is root): bwrap runs as root without a user
    namespace and ``setpriv`` drops to ``spec.uid`` inside, before ``argv`` starts. Otherwise bwrap
    runs unprivileged (as the caller) with a user namespace of its own. :func:`run` also sets the
    limits, the cgroup and the descriptors; use it rather than this list alone.
    """
    privileged = _privileged() if privileged is None else privileged
    cmd = [bwrap or find_bwrap() or "bwrap"]
    if privileged:
        # No user namespace: a sandbox uid outside any user namespace is counted by RLIMIT_NPROC
        # exactly, and bwrap (as root) can reach sources the sandbox uid could not (/root, 700).
        cmd += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup",
                "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        cmd += ["--unshare-all", "--cap-drop", "ALL"]
    cmd += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    made = {"/"}
    for m in mounts(spec):
        # Parents of a mount point are made 0755 (bwrap would make them 0700 as root).
        for parent in reversed(Path(m.dest).parents):
            if str(parent) not in made:
                made.add(str(parent))
                cmd += ["--perms", "0755", "--dir", str(parent)]
        made.add(m.dest)
        if m.kind == "symlink":
            cmd += ["--symlink", m.source, m.dest]
        elif m.kind == "ro":
            cmd += ["--ro-bind", m.source, m.dest]
        elif m.kind == "rw":
            cmd += ["--bind", m.source, m.dest]
        elif m.kind == "proc":
            cmd += ["--proc", m.dest]
        elif m.kind == "dev":
            cmd += ["--dev", m.dest]
        elif m.kind == "tmpfs":
            cmd += ["--perms", "1777", "--size", str(m.size), "--tmpfs", m.dest]
    cmd += ["--chdir", SCRATCH, "--clearenv"]
    for k, v in environment(spec).items():
        cmd += ["--setenv", k, v]
    cmd.append("--")
    if privileged:
        cmd += [SETPRIV, f"--reuid={spec.uid}", f"--regid={spec.gid}", "--clear-groups",
                "--inh-caps=-all", "--no-new-privs", "--"]
    return cmd + list(argv)


# --- cgroups (v1) -------------------------------------------------------------------------------

_counter = itertools.count()


def _v1_dir(controller: str) -> Optional[Path]:
    """This process's own cgroup folder of a cgroup v1 controller, or None."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        membership = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own = None
    for line in membership:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            own = path
    if own is None:
        return None
    for line in mountinfo:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) >= 3 and rfields[0] == "cgroup" and controller in rfields[2].split(","):
            root, mountpoint = fields[3], fields[4]
            rel = os.path.relpath(own, root) if own.startswith(root) else None
            if rel is None:
                continue
            return Path(mountpoint) / ("" if rel == "." else rel)
    return None


class _Cgroup:
    """One memory (and pids) cgroup v1 per run; ``dirs`` is empty where none could be made."""

    def __init__(self, spec: SandboxSpec):
        self.dirs: List[Path] = []
        self.memory = False
        if not spec.use_cgroup or os.geteuid() != 0:
            return
        name = f"mhsa-sandbox-{os.getpid()}-{next(_counter)}"
        limit = str(spec.memory_mb * 2**20)
        mem = _v1_dir("memory")
        if mem is not None:
            try:
                d = mem / name
                d.mkdir()
                self.dirs.append(d)
                (d / "memory.limit_in_bytes").write_text(limit)
                if (d / "memory.memsw.limit_in_bytes").exists():
                    (d / "memory.memsw.limit_in_bytes").write_text(limit)
                self.memory = True
            except OSError:
                self.remove()
                self.dirs = []
        pids = _v1_dir("pids")
        if pids is not None and self.memory:
            try:
                d = pids / name
                d.mkdir()
                self.dirs.append(d)
                (d / "pids.max").write_text(str(spec.nproc))
            except OSError:
                pass

    def join(self) -> None:
        """Called in the child between fork and exec: move it into every cgroup made."""
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as f:
                f.write(str(os.getpid()))

    def pids(self) -> List[int]:
        out = []
        for d in self.dirs:
            try:
                out += [int(p) for p in (d / "cgroup.procs").read_text().split()]
            except OSError:
                pass
        return out

    def kill_all(self, wait_s: float = 5.0) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            left = self.pids()
            if not left or time.monotonic() > deadline:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        break
                    time.sleep(0.01)


def remove_stale_cgroups() -> List[str]:
    """Remove the cgroups that sandboxes of a killed grader left behind (those named after a
    process that no longer exists), killing anything still in them; returns their paths."""
    removed: List[str] = []
    if os.geteuid() != 0:
        return removed
    for controller in ("memory", "pids"):
        top = _v1_dir(controller)
        if top is None or not top.is_dir():
            continue
        try:
            entries = list(top.glob("mhsa-sandbox-*"))
        except OSError:
            continue
        for d in entries:
            parts = d.name.split("-")
            if len(parts) != 4 or not parts[2].isdigit() or Path(f"/proc/{parts[2]}").exists():
                continue
            stale = _Cgroup.__new__(_Cgroup)
            stale.dirs, stale.memory = [d], False
            stale.kill_all(wait_s=2.0)
            stale.remove()
            if not d.exists():
                removed.append(str(d))
    return removed


# --- running ------------------------------------------------------------------------------------


@dataclass
class SandboxResult:
    returncode: Optional[int]  # negative: killed by that signal (bwrap passes on the child's)
    stdout: Optional[bytes]
    stderr: Optional[bytes]
    timed_out: bool
    wall_s: float
    memory: str  # "cgroup" (a total for the sandbox) or "rlimit" (per process only)
    uid: int


def _user_process_count(uid: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _chown_tree(top: str, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), uid, gid)


def _limit(which: int, value: int) -> None:
    import resource

    resource.setrlimit(which, (value, value))


def run(spec: SandboxSpec, argv: Sequence[str], *, timeout: float, stdout=None, stderr=None,
        input: Optional[bytes] = None, pass_fds: Sequence[int] = ()) -> SandboxResult:
    """Run ``argv`` in the sandbox; every process it started is dead when this returns.

    stdout/stderr are as for subprocess (None: inherit the grader's; subprocess.PIPE: returned in
    the result; a file object or descriptor). ``timeout`` is wall-clock seconds: past it the whole
    sandbox is killed and ``timed_out`` is True.
    """
    import resource

    bwrap = require_sandbox()
    root = os.geteuid() == 0
    uid, gid = spec.uid, spec.gid
    scratch = os.path.realpath(os.fspath(spec.scratch))
    if root:
        _chown_tree(scratch, uid, gid)
        # bwrap enters it as root without CAP_DAC_OVERRIDE before dropping to uid: x for all.
        os.chmod(scratch, os.stat(scratch).st_mode & 0o7777 | 0o711)
    cmd = command(spec, argv, bwrap=bwrap, privileged=root)
    nproc = spec.nproc if root else spec.nproc + _user_process_count(uid)
    cgroup = _Cgroup(spec)
    limits = [(resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_FSIZE, spec.file_mb * 2**20),
              (resource.RLIMIT_CPU, spec.cpu_s), (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_DATA, spec.memory_mb * 2**20)]

    dies_with_us = lifeline.preexec_die_with_parent()  # bwrap's --die-with-parent, from the start

    def child() -> None:  # between fork and exec of bwrap, in the child
        dies_with_us()
        cgroup.join()
        for which, value in limits:
            try:
                _limit(which, value)
            except (ValueError, OSError):
                soft, hard = resource.getrlimit(which)
                resource.setrlimit(which, (min(value, hard), hard))

    start = time.monotonic()
    timed_out = False
    proc = None
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=stdout, stderr=stderr, close_fds=True,
            pass_fds=tuple(pass_fds),
            env={}, start_new_session=True, preexec_fn=child)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_sandbox(proc)
            out, err = proc.communicate()
    finally:
        if proc is not None and proc.poll() is None:
            _kill_sandbox(proc)
        cgroup.kill_all()
        cgroup.remove()
    return SandboxResult(proc.returncode, out, err, timed_out, time.monotonic() - start,
                         "cgroup" if cgroup.memory else "rlimit", uid)


def _kill_sandbox(proc: subprocess.Popen) -> None:
    """Kill a running bwrap and wait until every process of its PID namespace is gone.

    bwrap's child is the namespace's init; when it ends, the kernel kills and reaps every other
    process of the namespace before the init itself becomes a zombie. Killing bwrap alone would
    return before that (the init dies a moment later, of --die-with-parent), so the init is
    killed too and waited for through a pidfd.
    """
    children: List[int] = []
    try:
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
    except OSError:
        pass
    pidfds = []
    for child in children:
        try:
            pidfds.append(os.pidfd_open(child))
        except (OSError, AttributeError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap not yet reaped: its pid (the group's id) cannot be reused
    except OSError:
        pass
    for fd in pidfds:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    proc.wait()
    for fd in pidfds:
        try:
            select.select([fd], [], [], 10.0)  # readable once the init has exited
        finally:
            os.close(fd)


def check_sandbox(timeout: float = 30.0) -> Tuple[bool, str]:
    """Whether a sandbox can start here (bwrap installed, user namespaces allowed), and why not."""
    if find_bwrap() is None:
        return False, INSTALL_HINT
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        try:
            r = run(SandboxSpec(scratch=scratch), [sys.executable, "-c", "print('ok')"],
                    timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except (OSError, SandboxUnavailable, subprocess.SubprocessError) as e:
            return False, f"bwrap cannot start: {e}"
    if r.returncode != 0 or r.stdout.strip() != b"ok":
        msg = (r.stderr or b"").decode(errors="replace").strip().splitlines()
        return False, "bwrap cannot start a sandbox here: " + (msg[-1] if msg else f"exit {r.returncode}")
    return True, ""
