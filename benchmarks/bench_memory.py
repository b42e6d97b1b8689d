"""The "memory" group: how the extra memory of ``MultiHeadAttention`` grows with the sequence length.

For each length T and each backend (reference, fast), one module with D = 1024, H = 16 (Dh = 64),
B = 1, the same weights:

* **forward peak**: the most memory one eval-mode forward pass under ``torch.no_grad()`` holds at
  once beyond its input and weights (CPU: tensor storage counted by ``TensorMemoryCounter``;
  GPU: ``torch.cuda.max_memory_allocated`` after a reset).
* **saved for backward**: the bytes of the tensors autograd keeps from one training-mode forward
  pass until the backward pass (``torch.autograd.graph.saved_tensors_hooks``; parameters and the
  input left out).

The reference path materialises the (T, S) attention weights of every head, so both grow as T²
once T is large; the fast path (``F.scaled_dot_product_attention``) never holds them, so its
memory grows as T. The growth exponent is measured over the last doubling of T:
log(memory(2T) / memory(T)) / log 2, which is 2 for T² and 1 for T.

Goals (from the library issue): the reference path's extra memory grows as T² (exponent at least
1.8) and the fast path's does not (at most 1.2).
"""

from __future__ import annotations

import math
from typing import Dict, List

import bench_common as bc
import torch
from torch import nn

from mhsa_lib import MultiHeadAttention

D_MODEL, HEADS = 1024, 16
LENGTHS = {"smoke": [8, 16], "quick": [256, 512, 1024, 2048], "full": [256, 512, 1024, 2048, 4096]}
GPU_LENGTHS = [512, 1024, 2048, 4096, 8192]
BACKENDS = ("reference", "fast")
GOALS = {"reference": (">=", 1.8), "fast": ("<=", 1.2)}


def lengths(config: bc.Config) -> List[int]:
    if config.cuda and config.mode != "smoke":
        return GPU_LENGTHS
    return LENGTHS[config.mode]


def saved_for_backward_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of ``module(x)``,
    leaving out parameters and ``x`` itself (they exist whether or not we train)."""
    skip = {p.untyped_storage().data_ptr() for p in module.parameters()} | {x.untyped_storage().data_ptr()}
    seen, total = set(), 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = t.untyped_storage().data_ptr()
        if key not in skip and key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    del out
    return total


def measure(t: int, backend: str, config: bc.Config, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    d, h = (32, 4) if config.mode == "smoke" else (D_MODEL, HEADS)
    module = MultiHeadAttention(d, h, backend=backend, device=config.device, dtype=dtype)
    x = torch.randn(1, t, d, device=config.device, dtype=dtype)

    def forward():
        with torch.no_grad():
            return module.eval()(x)

    forward()  # load kernels and caches before counting
    peak = bc.peak_extra_bytes(forward, config.device)
    saved = saved_for_backward_bytes(module.train(), x.requires_grad_())
    return {"device": config.device, "dtype": bc.dtype_name(dtype), "T": t, "D": d, "H": h, "backend": backend,
            "forward_peak_bytes": peak, "saved_for_backward_bytes": saved}


def growth_exponent(rows: List[dict], backend: str, key: str) -> float:
    """log(m(T_last) / m(T_before_last)) / log(T_last / T_before_last) for one backend."""
    mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["T"])
    a, b = mine[-2], mine[-1]
    if not a[key] or not b[key]:
        return float("nan")
    return math.log(b[key] / a[key]) / math.log(b["T"] / a["T"])


def run(config: bc.Config) -> dict:
    if config.cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch.cuda.is_available() is False on this machine")
    if not config.cuda:
        bc.set_threads(max(config.threads))
    dtype = config.default_dtypes()[0]
    rows = [measure(t, backend, config, dtype) for t in lengths(config) for backend in BACKENDS]
    by: Dict[tuple, dict] = {(r["T"], r["backend"]): r for r in rows}
    d, h = rows[0]["D"], rows[0]["H"]
    print(f"\n{config.device} {bc.dtype_name(dtype)}, MultiHeadAttention D = {d}, H = {h}, B = 1: extra memory (MiB)")
    bc.print_table(["T", "ref fwd peak", "fast fwd peak", "ref saved", "fast saved", "ref / fast saved"], [
        [t, bc.fmt_mib(by[t, "reference"]["forward_peak_bytes"]), bc.fmt_mib(by[t, "fast"]["forward_peak_bytes"]),
         bc.fmt_mib(by[t, "reference"]["saved_for_backward_bytes"]), bc.fmt_mib(by[t, "fast"]["saved_for_backward_bytes"]),
         f"{by[t, 'reference']['saved_for_backward_bytes'] / by[t, 'fast']['saved_for_backward_bytes']:.1f}x"]
        for t in lengths(config)])
    print("  (fwd peak: most memory one eval forward holds beyond input and weights; saved: what autograd"
          " keeps for the backward pass)")
    if not config.cuda and not bc.STORAGE_FREES_SEEN:
        print(f"  (forward peaks not counted: torch {torch.__version__} never reports a storage freed)")
    ts = lengths(config)
    where = f"{config.device} {bc.dtype_name(dtype)}, D = {d}, H = {h}, B = 1, T {ts[-2]} -> {ts[-1]}"
    goals = []
    for backend in BACKENDS:
        op, target = GOALS[backend]
        for key, what in (("forward_peak_bytes", "forward peak"), ("saved_for_backward_bytes", "saved for backward")):
            goals.append(bc.goal(f"{backend} {what} growth exponent in T", growth_exponent(rows, backend, key),
                                 op, target, where))
    bc.print_goals(goals)
    return {"rows": rows, "goals": goals}
