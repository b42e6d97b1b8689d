"""One grading run per course at a time, and nothing of a run left behind.

* :func:`course_lock` holds ``COURSE/.grading.lock`` with ``fcntl.flock`` for as long as a run
  writes: a second run either stops at once with a message naming the holder (its pid, when it
  started, its command) or, with ``wait=True``, waits for it. The kernel releases a ``flock`` when
  its holder's file is closed, so a holder that is killed (even with SIGKILL) releases the lock
  with its death: there is never a stale lock to remove by hand (a killed holder's file stays,
  unlocked; a run that ends removes it). Reading (feedback, export, a
  check of the gradebook) needs no lock.
* :class:`GradingRun` takes the lock and gives the run its temporary folder,
  ``COURSE/.grading_tmp/run-PID-TIME``, where the next run can find it: at its end the run kills
  whatever still works there and removes it; a run that was killed leaves it behind, and the next
  run (holding the lock, so the owner is surely dead) does the same for it before it starts.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, TextIO

LOCK_NAME = ".grading.lock"
TMP_NAME = ".grading_tmp"

__all__ = ["CourseBusy", "GradingRun", "LOCK_NAME", "TMP_NAME", "clean_leftovers", "course_lock",
           "holder", "kill_processes_under"]


class CourseBusy(RuntimeError):
    """Another run holds the course's lock; ``str()`` names it."""


def _describe(info: dict) -> str:
    if not info.get("pid"):
        return "another grading run (it has not written its pid yet)"
    where = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
    cmd = f": {info['command']}" if info.get("command") else ""
    return f"the grading run of pid {info['pid']}{where}, started {info.get('started', '?')}{cmd}"


def holder(course: Path) -> Optional[dict]:
    """What the lock file says about its holder (pid, started, host, command), or None when nobody
    holds the lock. The file itself is only a label: the ``flock`` decides."""
    import fcntl

    path = Path(course) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            return _read_label(fd)
        return None
    finally:
        os.close(fd)


def _read_label(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = json.loads(text) if text.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


@contextmanager
def course_lock(course: Path, wait: bool = False, stream: Optional[TextIO] = None) -> Iterator[Path]:
    """Hold the course's grading lock for the ``with`` block; yields the lock file's path.

    Raises :class:`CourseBusy` (naming the holder) when another process holds it, unless ``wait``:
    then it says on ``stream`` whom it waits for and blocks until the lock is free."""
    import fcntl

    course = Path(course)
    if not course.is_dir():
        raise ValueError(f"course_lock: course must be an existing folder, got {str(course)!r}")
    path = course / LOCK_NAME
    said = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise RuntimeError(f"cannot open the grading lock {path}: {e.strerror} (grading writes to the course "
                               "folder, so it must be writable)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            who = _describe(_read_label(fd))
            if not wait:
                os.close(fd)
                raise CourseBusy(f"{course} is being graded by {who}; wait for it to finish "
                                 "(or pass --wait to start when it has)") from None
            if not said:
                print(f"autograde: waiting for {who} to finish", file=stream or sys.stderr, flush=True)
                said = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        # The holder removes the file as it lets go: a lock taken on a file no longer at ``path``
        # is no lock (someone may hold the new file); try again.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        label = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 "host": socket.gethostname(), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(label).encode(), 0)
        yield path
    finally:
        try:
            os.unlink(path)  # still held: nobody else can have taken it; the folder is left as it was
        except OSError:
            pass
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- leftovers


def _pids() -> List[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()] if os.path.isdir("/proc") else []


def _mentions(pid: int, folder: str) -> bool:
    """Does process ``pid`` work in ``folder`` (its cwd) or name it on its command line?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    name = folder.encode()
    at = cmdline.find(name)
    while at >= 0:
        after = cmdline[at + len(name):at + len(name) + 1]
        if after in (b"", b"/", b"\0"):
            return True
        at = cmdline.find(name, at + 1)
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd == folder or cwd.startswith(folder + "/")


def kill_processes_under(folder: Path, wait_s: float = 5.0) -> List[int]:
    """SIGKILL every process (but this one) that works in ``folder`` or names it on its command
    line, and wait (at most ``wait_s``) until they are gone; returns their pids. Linux only (reads
    /proc); elsewhere nothing is found."""
    target = os.path.realpath(os.fspath(folder))
    me = os.getpid()
    found = [p for p in _pids() if p != me and _mentions(p, target)]
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_alive(p) for p in found):
        time.sleep(0.05)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def stale_folders(course: Path) -> List[Path]:
    """What killed runs left in ``COURSE/.grading_tmp``, found without the lock (for a report): every
    entry but the folders ``run-PID-TIME`` of a process still alive."""
    top = Path(course) / TMP_NAME
    if not top.is_dir():
        return []
    stale = []
    for old in sorted(top.iterdir()):
        parts = old.name.split("-")
        if (not old.is_symlink() and old.is_dir() and len(parts) >= 2 and parts[0] == "run"
                and parts[1].isdigit() and _alive(int(parts[1]))):
            continue
        stale.append(old)
    return stale


def clean_leftovers(course: Path) -> List[str]:
    """Remove what killed runs left in ``COURSE/.grading_tmp`` (their processes first), and the
    empty cgroups of their sandboxes; returns the folders removed. Call it only while holding
    :func:`course_lock`: then no live run owns any of them."""
    from . import sandbox

    removed = []
    top = Path(course) / TMP_NAME
    if top.is_dir():
        for old in sorted(top.iterdir()):
            if old.is_symlink() or not old.is_dir():
                old.unlink()
                continue
            kill_processes_under(old)
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old.name)
    sandbox.remove_stale_cgroups()
    return removed


class GradingRun:
    """The course's lock and the run's temporary folder, for one grading run::

        run = GradingRun(course, wait=False, stream=sys.stdout)  # CourseBusy if another run holds it
        try:
            ... run.folder ...
        finally:
            run.close()  # kills what is left in the folder, removes it, releases the lock
    """

    def __init__(self, course: Path, wait: bool = False, stream: Optional[TextIO] = None):
        self.course = Path(course)
        self._lock = course_lock(self.course, wait=wait, stream=stream)
        self._lock.__enter__()
        try:
            self.removed = clean_leftovers(self.course)
            if self.removed:
                print(f"autograde: removed {len(self.removed)} temporary folder(s) left by an interrupted run",
                      file=stream or sys.stderr)
            top = self.course / TMP_NAME
            top.mkdir(mode=0o700, exist_ok=True)
            self.folder = top / f"run-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.folder.mkdir(mode=0o700)
        except BaseException:
            self._lock.__exit__(*sys.exc_info())
            raise
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            kill_processes_under(self.folder)
            shutil.rmtree(self.folder, ignore_errors=True)
            try:
                self.folder.parent.rmdir()
            except OSError:
                pass
        finally:
            self._lock.__exit__(None, None, None)

    def __enter__(self) -> "GradingRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
