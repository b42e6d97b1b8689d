"""The limits every graded kernel runs under (autograder/grading/sandbox_kernel.py), each tried in a
subprocess of its own so this test process keeps its limits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the limits are Linux rlimits (RLIMIT_DATA counts mmap there)")


def _limited(code: str, **limits) -> dict:
    """Run ``code`` after ``apply_limits(**limits)`` in a fresh interpreter; it prints a JSON dict."""
    prelude = textwrap.dedent(f"""
        import json, mmap, os, resource, sys, tempfile
        sys.path.insert(0, {str(ROOT / 'autograder' / 'grading')!r})
        import sandbox_kernel
        sandbox_kernel.apply_limits(**{limits!r})
    """)
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_memory_limit_counts_what_is_allocated_not_what_is_mapped(tmp_path):
    """A big read-only mapping (what shared libraries are: a CUDA build of torch maps about 3 GB)
    fits under a small limit; allocating past the limit raises MemoryError, within it works."""
    result = _limited(f"""
        out = {{}}
        path = os.path.join({str(tmp_path)!r}, "library.so")
        with open(path, "wb") as f:
            f.truncate(2 * 2**30)  # 2 GiB, sparse: no disk used
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        out["mapped_gib"] = len(mapped) / 2**30
        kept = bytearray(200 * 2**20)  # within the 512 MiB limit
        out["kept_mib"] = len(kept) // 2**20
        try:
            bomb = bytearray(2**30)
            out["bomb"] = "allocated"
        except MemoryError:
            out["bomb"] = "MemoryError"
        out["data_limit_mib"] = resource.getrlimit(resource.RLIMIT_DATA)[0] // 2**20
        print(json.dumps(out))
    """, memory_mb=512)
    assert result == {"mapped_gib": 2.0, "kept_mib": 200, "bomb": "MemoryError", "data_limit_mib": 512}


def test_file_size_cpu_and_core_limits():
    result = _limited("""
        out = {}
        with tempfile.TemporaryFile() as f:
            try:
                f.write(b"x" * (3 * 2**20))
                f.flush()
                out["big_write"] = "written"
            except OSError as e:
                out["big_write"] = e.strerror
        out["cpu"] = resource.getrlimit(resource.RLIMIT_CPU)[0]
        out["core"] = resource.getrlimit(resource.RLIMIT_CORE)[0]
        print(json.dumps(out))
    """, file_mb=1, cpu_s=30)
    assert result == {"big_write": "File too large", "cpu": 30, "core": 0}


def test_zero_means_no_limit_of_that_kind():
    result = _limited("""
        inf = resource.RLIM_INFINITY
        print(json.dumps({name: resource.getrlimit(getattr(resource, name))[0] in (inf, hard)
                          for name, hard in (("RLIMIT_DATA", resource.getrlimit(resource.RLIMIT_DATA)[1]),
                                             ("RLIMIT_FSIZE", resource.getrlimit(resource.RLIMIT_FSIZE)[1]))}))
    """)
    assert result == {"RLIMIT_DATA": True, "RLIMIT_FSIZE": True}


def test_unknown_option_is_refused_by_name():
    proc = subprocess.run([sys.executable, str(ROOT / "autograder" / "grading" / "sandbox_kernel.py"), "--memory", "5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--memory" in proc.stderr and "unknown or incomplete option" in proc.stderr
