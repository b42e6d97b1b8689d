"""What every benchmark group shares: the run's settings, interleaved median timing, memory
counting, FLOP counts, thread control and table printing.

Nothing here asserts a speed: the groups print numbers and ratios measured side by side.
"""

from __future__ import annotations

import ctypes
import datetime
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

MODES = ("smoke", "quick", "full")


@dataclass
class Config:
    """Settings of one run, shared by every group.

    mode: ``"smoke"`` (tiny shapes, one repeat: checks that everything runs, measures nothing
    meaningful), ``"quick"`` (about a minute of core + decoding on a 2-core CPU) or ``"full"``.
    """

    mode: str = "quick"
    device: str = "cpu"
    threads: List[int] = field(default_factory=lambda: [2])
    repeats: Optional[int] = None  # None: the mode's default
    shapes: Optional[List[tuple]] = None  # core group: (B, H, T, Dh) to run instead of the mode's
    causal: tuple = (False, True)  # with ``shapes``: which of not causal / causal to run
    dtypes: Optional[List[torch.dtype]] = None  # None: the device's default (see ``default_dtypes``)
    warmup: int = 1

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def n_repeats(self, cpu_default: int, gpu_default: int = 20, smoke: int = 1) -> int:
        if self.repeats is not None:
            return self.repeats
        if self.mode == "smoke":
            return smoke
        return gpu_default if self.cuda else cpu_default

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def default_dtypes(self) -> List[torch.dtype]:
        """The dtypes to measure: those asked for, else bf16, fp16 and fp32 on a GPU (fp32 only in
        smoke mode) and fp32 on the CPU."""
        if self.dtypes:
            return list(self.dtypes)
        if self.cuda and self.mode != "smoke":
            return [torch.bfloat16, torch.float16, torch.float32]
        return [torch.float32]

    def device_name(self) -> str:
        """The GPU's name on CUDA, else the CPU's."""
        if self.cuda and torch.cuda.is_available():
            return torch.cuda.get_device_name()
        return _cpu_name()


DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
          "fp64": torch.float64, "float64": torch.float64, "double": torch.float64}


def parse_dtypes(text: str) -> List[torch.dtype]:
    """``"bf16,fp32"`` -> [torch.bfloat16, torch.float32]; ValueError naming the unknown ones."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DTYPES]
    if unknown or not names:
        raise ValueError(f"expected a comma-separated list of {sorted(set(DTYPES))}, got {text!r}")
    return list(dict.fromkeys(DTYPES[n] for n in names))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# --------------------------------------------------------------------------- timing


def median_times(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                 sync: Callable[[], None] = lambda: None) -> Dict[str, float]:
    """Median seconds per call of each function.

    The candidates take turns inside every repeat (A B C, A B C, ...), so a change in the load
    of a shared machine during the run hits all of them alike. ``sync`` is called before the
    clock starts and before it stops (``torch.cuda.synchronize`` on a GPU, whose kernels run
    asynchronously). A function that raises is recorded as ``nan`` and left out afterwards.
    """
    alive = dict(fns)
    for name, fn in list(alive.items()):
        try:
            for _ in range(warmup):
                fn()
        except Exception:  # noqa: BLE001 - e.g. out of memory: report, keep going
            alive.pop(name)
    sync()
    times: Dict[str, List[float]] = {name: [] for name in alive}
    for _ in range(max(1, repeats)):
        for name, fn in list(alive.items()):
            sync()
            start = time.perf_counter()
            try:
                fn()
                sync()
            except Exception:  # noqa: BLE001
                alive.pop(name)
                times.pop(name)
                continue
            times[name].append(time.perf_counter() - start)
    result = {name: statistics.median(ts) for name, ts in times.items() if ts}
    for name in fns:
        result.setdefault(name, float("nan"))
    return result


# --------------------------------------------------------------------------- memory


class TensorMemoryCounter(TorchDispatchMode):
    """Counts the bytes of tensor storage that PyTorch operations allocate while it is active,
    and the peak of what is alive at once (storage freed during the region is subtracted).

    A storage counts from the operation that returns it until it is freed; inputs that existed
    before the region do not count. This works on any device, CPU included, where PyTorch keeps
    no allocation statistics of its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: Dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _freed(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and not t.is_meta
        }
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.is_meta:
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._live or key in inputs:  # a view or an in-place result
                continue
            self._live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._freed, key)
        return out


def _storage_frees_are_seen() -> bool:
    """Whether a freed tensor storage is reported to a weakref on its Python object, which
    :class:`TensorMemoryCounter` relies on. torch 2.1 keeps storage objects alive for good, so
    there the counter would add up allocations and never see one freed."""
    seen = []
    t = torch.empty(1)
    ref = weakref.ref(t.untyped_storage(), lambda _: seen.append(True))  # noqa: F841 - kept alive
    del t
    return bool(seen)


#: False on releases where CPU peaks cannot be counted (they are then reported as ``None``).
STORAGE_FREES_SEEN = _storage_frees_are_seen()


def peak_extra_bytes(fn: Callable[[], object], device: str = "cpu") -> Optional[int]:
    """Peak memory allocated by one call of ``fn`` beyond what existed before it.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU: tensor storage counted by
    :class:`TensorMemoryCounter`. ``None`` if the call failed, or on the CPU with a torch whose
    freed storages cannot be seen (see ``STORAGE_FREES_SEEN``).
    """
    if device != "cuda" and not STORAGE_FREES_SEEN:
        return None
    try:
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated() - before)
        with TensorMemoryCounter() as counter:
            fn()
        return int(counter.peak)
    except Exception:  # noqa: BLE001
        return None


def numpy_peak_extra_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes NumPy allocates during one call (NumPy reports its buffers to tracemalloc)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    if not was_tracing:
        tracemalloc.stop()
    return int(peak - before)


# --------------------------------------------------------------------------- FLOPs


def attention_flops(b: int, h: int, t: int, s: int, dh: int, causal: bool, backward: bool) -> float:
    """FLOPs of the attention core: 4·B·H·T·S·Dh for the forward pass (two matmuls of
    2·B·H·T·S·Dh each), halved when causal, times 3.5 for forward + backward."""
    flops = 4.0 * b * h * t * s * dh
    if causal:
        flops /= 2
    return flops * (3.5 if backward else 1.0)


def projection_flops(b: int, t: int, d: int, backward: bool) -> float:
    """FLOPs of the four (D, D) projections of a multi-head attention module: 4 · 2·B·T·D²
    forward, three times that for forward + backward (input and weight gradients)."""
    return 8.0 * b * t * d * d * (3.0 if backward else 1.0)


# --------------------------------------------------------------------------- threads


def set_threads(n: Optional[int]) -> None:
    """Use ``n`` CPU threads in PyTorch and, where the library allows it, in NumPy's BLAS."""
    if n is None:
        return
    torch.set_num_threads(n)
    _set_numpy_blas_threads(n)


def _set_numpy_blas_threads(n: int) -> bool:
    """Set the thread count of the OpenBLAS that NumPy loaded (as threadpoolctl does)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return False
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(n))
                return True
    return False


# --------------------------------------------------------------------------- environment


def environment(config: Config) -> dict:
    """The machine and versions, for the results file."""
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "mode": config.mode,
        "device": config.device,
        "threads": config.threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if config.cuda and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- printing


def fmt_ms(seconds: Optional[float]) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1e3:.2f}" if seconds < 0.1 else f"{seconds * 1e3:.1f}"


def fmt_mib(nbytes: Optional[float]) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.1f}"


def fmt_rate(flops_per_s: Optional[float]) -> str:
    if flops_per_s is None or math.isnan(flops_per_s):
        return "-"
    return f"{flops_per_s / 1e9:.1f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> None:
    """A plain text table, first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values):
        parts = [values[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(values[1:], widths[1:])]
        return indent + "  ".join(parts)

    print(line(list(headers)))
    print(indent + "  ".join("-" * w for w in widths))
    for r in cells:
        print(line(r))


def goal(name: str, measured: Optional[float], op: str, target: Optional[float], where: str = "") -> dict:
    """One goal: a measured ratio against its target (``op`` is ``"<="`` or ``">="``).
    ``target=None`` makes it a ratio shown for information, with no verdict."""
    met = None
    if target is not None and measured is not None and not math.isnan(measured):
        met = measured <= target if op == "<=" else measured >= target
    return {"name": name, "measured": measured, "op": op if target is not None else "info",
            "target": target, "met": met, "where": where}


def describe_goal(g: dict) -> str:
    measured = "-" if g["measured"] is None or math.isnan(g["measured"]) else f"{g['measured']:.2f}"
    if g["target"] is None:
        return f"{g['name']}: {measured} (for information)"
    verdict = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
    return f"{g['name']}: {measured} [goal {g['op']} {g['target']:g}] {verdict}"


def print_goals(goals: Sequence[dict]) -> None:
    if not goals:
        return
    print("\n  ratios against the goals:")
    for g in goals:
        print("    " + describe_goal(g))
