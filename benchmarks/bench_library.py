"""Speed and memory of mhsa_lib's attention against PyTorch's own, measured side by side.

    python benchmarks/bench_library.py            # full CPU run (a few minutes), GPU part if any
    python benchmarks/bench_library.py --quick    # smaller T and fewer repeats, about a minute
    python benchmarks/bench_library.py --no-gpu   # skip the GPU part

CPU (float32, 2 threads, B=1, H=16, T=2048, Dh=64, so D=1024), same weights on both sides:
  * forward, eval mode, no autograd: mhsa_lib fast path (and fused QKV, and the reference path)
    vs ``nn.MultiheadAttention`` called as ``mha(x, x, x)`` (its default, need_weights=True) and
    with need_weights=False (its own fused path). Target: fast <= 0.75x the default call.
  * forward + backward, training mode: the same pairs. Target: fast <= 1.05x the default call.
Memory (CPU): bytes autograd saves for the backward pass, and the peak resident memory of one
forward pass measured in a fresh process, for several T. The reference path materialises the
(T, S) weights, so its extra memory grows as T^2; the fast path's grows as T.
GPU (bf16, B=8, H=16, T=1024, Dh=64), only when torch.cuda.is_available(): fast path
forward + backward vs SDPA alone + the four projection matmuls alone (target <= 1.10x), and vs
``nn.MultiheadAttention`` in training mode (target >= 2x faster).

Times are medians over repeats after warm-up. Nothing here is a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mhsa_lib import FusedMultiHeadAttention, MultiHeadAttention  # noqa: E402
from mhsa_lib.interop import load_mha_into_torch  # noqa: E402


def median_times(fns: dict, repeats: int, warmup: int = 1, sync=lambda: None) -> dict:
    """Median seconds per call of each function. The candidates take turns within every repeat,
    so a change in machine load during the run hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def make_pair(d_model: int, num_heads: int, device="cpu", dtype=torch.float32):
    """Our module and nn.MultiheadAttention with the same weights."""
    torch.manual_seed(0)
    ours = MultiHeadAttention(d_model, num_heads, device=device, dtype=dtype)
    theirs = nn.MultiheadAttention(d_model, num_heads, batch_first=True, device=device, dtype=dtype)
    load_mha_into_torch(theirs, ours)
    return ours, theirs


# --- CPU speed ------------------------------------------------------------------------------


def cpu_speed(seq_len: int, repeats: int) -> dict:
    d_model, heads = 1024, 16  # Dh = 64
    ours, theirs = make_pair(d_model, heads)
    fused = FusedMultiHeadAttention.from_separate(ours)
    x = torch.randn(1, seq_len, d_model)  # (B, T, D)
    rows = {}

    def fwd(module, need_weights=None):
        if need_weights is None:
            return lambda: module(x)
        return lambda: module(x, x, x, need_weights=need_weights)

    ours_ref = MultiHeadAttention(d_model, heads, backend="reference")
    ours_ref.load_state_dict(ours.state_dict())
    ours.backend = fused.backend = "fast"
    for m in (ours, ours_ref, fused, theirs):
        m.eval()
    with torch.no_grad():
        rows.update(median_times({
            "fwd torch MHA (need_weights=True, default)": fwd(theirs, True),
            "fwd torch MHA (need_weights=False)": fwd(theirs, False),
            "fwd ours fast": fwd(ours),
            "fwd ours fast, fused QKV": fwd(fused),
            "fwd ours reference": fwd(ours_ref),
        }, repeats))

    def fwd_bwd(module, need_weights=None):
        call = fwd(module, need_weights)

        def step():
            out = call()
            out = out[0] if isinstance(out, tuple) else out
            out.sum().backward()
            module.zero_grad(set_to_none=True)
        return step

    for m in (ours, ours_ref, fused, theirs):
        m.train()
    rows.update(median_times({
        "fwd+bwd torch MHA train (need_weights=True, default)": fwd_bwd(theirs, True),
        "fwd+bwd torch MHA train (need_weights=False)": fwd_bwd(theirs, False),
        "fwd+bwd ours fast": fwd_bwd(ours),
        "fwd+bwd ours fast, fused QKV": fwd_bwd(fused),
        "fwd+bwd ours reference": fwd_bwd(ours_ref),
    }, repeats))
    return rows


def print_speed(title: str, rows: dict, pairs: list) -> None:
    print(f"\n{title}")
    for name, seconds in rows.items():
        print(f"  {name:<56s} {seconds * 1e3:9.1f} ms")
    print("  ratios (ours / theirs; target in brackets):")
    for ours, theirs, target in pairs:
        ratio = rows[ours] / rows[theirs]
        print(f"    {ours} / {theirs}: {ratio:.2f}x  [{target}]")


# --- CPU memory -----------------------------------------------------------------------------


def saved_for_backward_bytes(seq_len: int, backend: str) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward (no weights)."""
    ours, _ = make_pair(256, 4)  # Dh = 64; small D keeps the projections' share visible
    ours.backend = backend
    x = torch.randn(1, seq_len, 256, requires_grad=True)
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen and not isinstance(t, nn.Parameter):
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ours(x)
    return total


_PEAK_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from mhsa_lib import MultiHeadAttention
torch.set_num_threads(2)
T, backend = {seq_len}, {backend!r}
m = MultiHeadAttention(1024, 16, backend=backend).eval()
x = torch.randn(1, T, 1024)
def status(field):  # kB
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
with torch.no_grad():
    m(x[:, :8])  # load kernels before measuring
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size (VmHWM) to the current one
    before = status("VmRSS")
    out = m(x)
    after = status("VmHWM")
print((after - before) * 1024)
"""


def forward_peak_bytes(seq_len: int, backend: str) -> int:
    """Growth of peak resident memory during one forward pass, in a fresh process (Linux:
    /proc/self/clear_refs resets the peak, VmHWM reads it)."""
    root = str(Path(__file__).resolve().parents[1])
    code = _PEAK_SCRIPT.format(root=root, seq_len=seq_len, backend=backend)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def cpu_memory(lengths: list) -> dict:
    table = {}
    for t in lengths:
        table[t] = {
            backend: {
                "saved_for_backward": saved_for_backward_bytes(t, backend),
                "forward_peak": forward_peak_bytes(t, backend),
            }
            for backend in ("reference", "fast")
        }
    print("\nCPU memory (MiB): saved for backward (D=256, H=4) | forward peak growth (D=1024, H=16)")
    print(f"  {'T':>6s}  {'ref saved':>10s} {'fast saved':>10s} | {'ref peak':>9s} {'fast peak':>9s}")
    for t, row in table.items():
        r, f = row["reference"], row["fast"]
        print(f"  {t:6d}  {r['saved_for_backward'] / 2**20:10.1f} {f['saved_for_backward'] / 2**20:10.1f} | "
              f"{r['forward_peak'] / 2**20:9.1f} {f['forward_peak'] / 2**20:9.1f}")
    first, last = lengths[0], lengths[-1]
    growth = (last / first)
    for backend in ("reference", "fast"):
        ratio = table[last][backend]["saved_for_backward"] / table[first][backend]["saved_for_backward"]
        print(f"  {backend}: saved-for-backward grows {ratio:.1f}x when T grows {growth:.0f}x "
              f"(T would give {growth:.0f}x, T^2 {growth ** 2:.0f}x)")
    return table


# --- GPU ------------------------------------------------------------------------------------


def gpu_speed(repeats: int) -> dict:
    dev, dtype = "cuda", torch.bfloat16
    batch, seq_len, d_model, heads = 8, 1024, 1024, 16  # Dh = 64
    ours, theirs = make_pair(d_model, heads, dev, dtype)
    ours.backend = "fast"
    ours.train()
    theirs.train()
    sync = torch.cuda.synchronize
    x = torch.randn(batch, seq_len, d_model, device=dev, dtype=dtype, requires_grad=True)
    q, k, v = (torch.randn(batch, heads, seq_len, 64, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
    w = [torch.randn(d_model, d_model, device=dev, dtype=dtype, requires_grad=True) for _ in range(4)]

    def ours_step():
        ours(x).sum().backward()

    def theirs_step():
        theirs(x, x, x)[0].sum().backward()

    def sdpa_step():
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    def proj_step():  # the four projection matmuls alone, forward and backward
        sum(F.linear(x, wi).sum() for wi in w).backward()

    rows = median_times({
        "fwd+bwd ours fast": ours_step, "fwd+bwd torch MHA train": theirs_step,
        "fwd+bwd SDPA alone": sdpa_step, "fwd+bwd 4 projections alone": proj_step,
    }, repeats, warmup=3, sync=sync)
    rows["SDPA + projections"] = rows["fwd+bwd SDPA alone"] + rows["fwd+bwd 4 projections alone"]
    print_speed(f"GPU {torch.cuda.get_device_name()} bf16, B=8, H=16, T=1024, Dh=64", rows, [
        ("fwd+bwd ours fast", "SDPA + projections", "<= 1.10"),
        ("fwd+bwd ours fast", "fwd+bwd torch MHA train", "<= 0.50"),
    ])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="T=1024, fewer repeats (about a minute)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU part")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()

    torch.set_num_threads(2)
    seq_len, repeats = (1024, 3) if args.quick else (2048, 5)
    lengths = [256, 512, 1024] if args.quick else [512, 1024, 2048, 4096]
    print(f"torch {torch.__version__}, python {platform.python_version()}, {platform.processor() or platform.machine()}, "
          f"threads {torch.get_num_threads()}")
    results = {"torch": torch.__version__, "seq_len": seq_len}
    rows = cpu_speed(seq_len, repeats)
    print_speed(f"CPU float32, 2 threads, B=1, H=16, T={seq_len}, Dh=64", rows, [
        ("fwd ours fast", "fwd torch MHA (need_weights=True, default)", "<= 0.75"),
        ("fwd ours fast", "fwd torch MHA (need_weights=False)", "info"),
        ("fwd ours fast, fused QKV", "fwd torch MHA (need_weights=True, default)", "info"),
        ("fwd+bwd ours fast", "fwd+bwd torch MHA train (need_weights=True, default)", "<= 1.05"),
        ("fwd+bwd ours fast", "fwd+bwd torch MHA train (need_weights=False)", "info"),
        ("fwd+bwd ours fast, fused QKV", "fwd+bwd torch MHA train (need_weights=True, default)", "info"),
    ])
    results["cpu_speed_s"] = rows
    results["cpu_memory_bytes"] = cpu_memory(lengths)
    if torch.cuda.is_available() and not args.no_gpu:
        results["gpu_speed_s"] = gpu_speed(repeats=20)
    else:
        print("\nGPU part skipped:", "--no-gpu" if args.no_gpu else "no CUDA device")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
