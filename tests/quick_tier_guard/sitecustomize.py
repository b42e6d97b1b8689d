"""Loaded by every Python process a quick-tier test starts (conftest.py puts this folder on
PYTHONPATH): starting a Jupyter kernel or nbgrader there is refused and recorded, so that the
test fails with a clear message. Only active while ``MHSA_QUICK_TIER_GUARD`` names a file."""

import os

if os.environ.get("MHSA_QUICK_TIER_GUARD"):
    import subprocess

    def _what(args):
        argv = [args] if isinstance(args, (str, bytes)) else list(args or ())
        argv = [a.decode() if isinstance(a, bytes) else str(a) for a in argv]
        names = [os.path.basename(a) for a in argv]
        if names[:1] == ["nbgrader"]:
            return "nbgrader"
        if "-f" in argv and ("sandbox_kernel.py" in names or "ipykernel_launcher.py" in names):
            return "a Jupyter kernel"
        for i, a in enumerate(argv[:-1]):
            if a == "-m" and argv[i + 1] in ("nbgrader", "ipykernel", "ipykernel_launcher"):
                return "nbgrader" if argv[i + 1] == "nbgrader" else "a Jupyter kernel"
        return None

    _init = subprocess.Popen.__init__

    def _guarded_init(self, args, *rest, **kwargs):
        what = _what(args)
        if what:
            with open(os.environ["MHSA_QUICK_TIER_GUARD"], "a", encoding="utf-8") as f:
                f.write(f"{what}: {args!r}\n")
            raise RuntimeError(f"a quick-tier test (not marked slow) started {what}")
        _init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = _guarded_init
