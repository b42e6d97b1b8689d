"""Start an IPython kernel under resource limits: the kernel of every graded submission.

Run as a script (never imported by the kernel itself)::

    python sandbox_kernel.py --memory-mb 3000 --file-mb 200 --cpu-s 900 -- -f CONNECTION_FILE

The limits are set with ``resource.setrlimit`` on this process before ipykernel starts, so they
hold for the kernel and for everything it starts: the memory it may allocate (``--memory-mb``; an
allocation beyond it raises MemoryError in the student's code, or ends the kernel), the size of
any file it writes (``--file-mb``), CPU seconds (``--cpu-s``, a backstop behind the grader's time
limits), and no core dumps. The kernel dies with the process that started it, even one killed
with SIGKILL (:mod:`.lifeline`).

The memory limit is ``RLIMIT_DATA``: on Linux (4.7 and later) it counts the process's private
writable memory (heap, tensors, arrays, thread stacks), not the code of the shared libraries it
maps. ``RLIMIT_AS`` (all address space) would count those too: a CUDA build of torch maps about
3 GB of libraries on ``import torch`` alone, so a 3-4 GB address-space limit fails the import, or
leaves the student almost nothing, on exactly the installs GPU users have. Output written straight to file descriptor 2 is not forwarded to the notebook (it
would cost a test cell its points in nbgrader's scoring), only Python-level stderr is.
"""

from __future__ import annotations

import os
import sys


def _set_limit(name: str, value: int) -> None:
    import resource

    which = getattr(resource, name, None)
    if which is None:
        return
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, hard))
    except (ValueError, OSError):
        pass


def apply_limits(memory_mb: int = 0, file_mb: int = 0, cpu_s: int = 0) -> None:
    """Limit this process and its children (0: no limit of that kind); never core dumps."""
    if memory_mb > 0:
        _set_limit("RLIMIT_DATA", memory_mb * 2**20)
    if file_mb > 0:
        _set_limit("RLIMIT_FSIZE", file_mb * 2**20)
    if cpu_s > 0:
        _set_limit("RLIMIT_CPU", cpu_s)
    _set_limit("RLIMIT_CORE", 0)


def main(argv) -> None:
    limits = {"--memory-mb": 0, "--file-mb": 0, "--cpu-s": 0}
    rest = list(argv)
    while rest and rest[0] != "--":
        flag = rest.pop(0)
        if flag not in limits or not rest:
            raise SystemExit(f"sandbox_kernel: unknown or incomplete option {flag!r}")
        limits[flag] = int(float(rest.pop(0)))
    if rest and rest[0] == "--":
        rest.pop(0)
    apply_limits(limits["--memory-mb"], limits["--file-mb"], limits["--cpu-s"])
    import lifeline  # (this file's own folder is still first on sys.path)

    lifeline.die_with_parent()  # the process that started the kernel: when it goes, so does the kernel
    del sys.modules["lifeline"]  # the notebook's own `import lifeline` must find its own file
    # Running this file put its own folder first on sys.path; the kernel must see the working
    # copy (the notebook's folder) there instead, as `python -m ipykernel_launcher` would.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, "")
    sys.argv = [sys.argv[0], *rest, "--IPKernelApp.capture_fd_output=False"]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main(sys.argv[1:])
