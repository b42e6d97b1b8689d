"""Processes of a grading run that die with their parent, even when the parent is killed with
SIGKILL (and so cannot clean up after itself).

On Linux a process asks the kernel to send it a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``); the setting survives ``exec``. The "parent" is the
*thread* that started the process: a process started from a thread dies when that thread ends,
so a long-lived process must be started from a thread that lives as long as it is needed (the
grader's pool threads live until the run ends). Where ``prctl`` is missing (not Linux), a thread
polls the parent's pid instead and kills this process once the parent is gone.

The grader's processes use it at every level: the worker processes (:mod:`.pool`), the notebook
runner without the sandbox (:mod:`.worker`), the kernel (:mod:`.sandbox_kernel`); bubblewrap's
``--die-with-parent`` does the same for a sandbox, and everything inside a sandbox dies with its
PID namespace.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_libc = None


def _load_libc():
    """The C library (loaded once, never between fork and exec, where loading is unsafe), or None."""
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    return _libc or None


def _prctl_pdeathsig(sig: int) -> bool:
    """Ask for ``sig`` at the parent's death; False where the system cannot."""
    libc = _load_libc()
    if libc is None:
        return False
    try:
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except AttributeError:
        return False


def _poll_parent(parent: int, sig: int, every: float) -> None:
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)
            os._exit(1)  # only reached if sig was caught


def die_with_parent(parent: Optional[int] = None, sig: int = signal.SIGKILL, poll_s: float = 0.5) -> str:
    """Make this process die (``sig``) when its parent dies; ``parent``: the parent's pid as the
    parent saw it before starting this process (default: the present parent). If that parent is
    already gone, this process dies at once. Returns ``"prctl"`` or ``"poll"`` (the fallback: a
    daemon thread checks the parent every ``poll_s`` seconds)."""
    if parent is None:
        parent = os.getppid()
    if _prctl_pdeathsig(sig):
        how = "prctl"
    else:
        threading.Thread(target=_poll_parent, args=(parent, sig, poll_s), name="die-with-parent",
                         daemon=True).start()
        how = "poll"
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
        os._exit(1)
    return how


def preexec_die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child asks for ``sig`` at its parent's
    death before it runs anything (no thread can be started there, so without ``prctl`` the program
    started must call :func:`die_with_parent` itself)."""
    parent = os.getpid()
    _load_libc()  # here, in the parent

    def child() -> None:
        if _prctl_pdeathsig(sig) and os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return child
