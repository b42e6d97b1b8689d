"""The "core" group: the attention core and the multi-head modules, against PyTorch and NumPy.

Two tables per (dtype, threads, shape, causal):

* **core** (inputs q, k, v of shape (B, H, T, Dh)): ``mhsa_lib`` reference path, ``mhsa_lib``
  fast path (both through ``attend_heads``), ``F.scaled_dot_product_attention`` and a NumPy
  version (forward, and a hand-written backward pass). FLOPs: 4·B·H·T·S·Dh forward, halved when
  causal, ×3.5 for forward + backward.
* **module** (input x of shape (B, T, D), D = H·Dh, the same weights everywhere):
  ``MultiHeadAttention`` reference and fast, ``FusedMultiHeadAttention`` fast, and
  ``nn.MultiheadAttention`` called as usual (``need_weights=True``) and with
  ``need_weights=False``. FLOPs: the core's plus 8·B·T·D² for the four projections (×3 for
  forward + backward).

Forward times are measured in eval mode under ``torch.no_grad()``; forward + backward in training
mode, with a fixed output gradient. Peak extra memory is the most memory one call holds at once
beyond its inputs and weights. ``max |diff|`` compares each forward output with SDPA (core) or
with ``nn.MultiheadAttention(need_weights=False)`` (module), as a check that all candidates
compute the same function.

Goals: CPU float32, 2 threads, (B, H, T, Dh) = (1, 16, 2048, 64), D = 1024: fast forward at most
0.75× ``nn.MultiheadAttention`` eval, forward + backward at most 1.05× its training mode. GPU
bf16, (8, 16, 1024, 64): fast forward + backward at most 1.10× SDPA alone plus the four
projection matmuls alone, and at least 2× faster than ``nn.MultiheadAttention`` training.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

import bench_common as bc
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mhsa_lib import FusedMultiHeadAttention, MultiHeadAttention, attend_heads, causal_mask
from mhsa_lib.interop import load_mha_into_torch, mask_to_torch

Shape = Tuple[int, int, int, int]  # (B, H, T, Dh)

CPU_SHAPES: List[Shape] = [(8, 8, 128, 64), (4, 12, 512, 64), (1, 16, 2048, 64)]
GPU_SHAPES: List[Shape] = CPU_SHAPES + [(8, 16, 1024, 64), (4, 16, 4096, 128)]
SMOKE_SHAPES: List[Shape] = [(2, 2, 16, 8)]
#: Quick mode on CPU: the small shapes only; the goal comparison runs separately at the goal shape.
QUICK_CPU_CASES = [((8, 8, 128, 64), False), ((8, 8, 128, 64), True), ((4, 12, 512, 64), False)]

CPU_GOAL_SHAPE: Shape = (1, 16, 2048, 64)
GPU_GOAL_SHAPE: Shape = (8, 16, 1024, 64)

TORCH_MHA = "nn.MultiheadAttention"
TORCH_MHA_NW = "nn.MultiheadAttention need_weights=False"
SDPA = "F.scaled_dot_product_attention"


def cases(config: bc.Config) -> List[Tuple[Shape, bool]]:
    if config.shapes:
        return [(tuple(s), c) for s in config.shapes for c in config.causal]
    if config.mode == "smoke":
        return [(s, c) for s in SMOKE_SHAPES for c in (False, True)]
    if config.cuda:
        return [(s, c) for s in GPU_SHAPES for c in (False, True)]
    if config.mode == "quick":
        return list(QUICK_CPU_CASES)
    return [(s, c) for s in CPU_SHAPES for c in (False, True)]


# --------------------------------------------------------------------------- NumPy attention


def numpy_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool):
    """softmax(q kᵀ / √Dh) v in NumPy; returns the output and the weights (kept for backward)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = q @ k.swapaxes(-1, -2)  # (B, H, T, Dh) @ (B, H, Dh, S) -> (B, H, T, S)
    scores *= scale
    if causal:
        t, s = scores.shape[-2:]
        blocked = np.triu(np.ones((t, s), dtype=bool), k=s - t + 1)  # future keys
        np.copyto(scores, -np.inf, where=blocked)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)  # now the weights P
    return scores @ v, scores


def numpy_attention_backward(q, k, v, weights, dout):
    """Gradients of the NumPy attention with respect to q, k and v, given dL/d(out)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    dv = weights.swapaxes(-1, -2) @ dout  # (B, H, S, T) @ (B, H, T, Dh)
    dp = dout @ v.swapaxes(-1, -2)  # (B, H, T, S)
    # softmax backward: dS = P ⊙ (dP − rowsum(dP ⊙ P)); masked keys have P = 0, so dS = 0 there
    dp -= (dp * weights).sum(axis=-1, keepdims=True)
    dp *= weights
    dp *= scale
    dq = dp @ k
    dk = dp.swapaxes(-1, -2) @ q
    return dq, dk, dv


# --------------------------------------------------------------------------- candidates


def core_candidates(shape: Shape, causal: bool, dtype, device) -> Tuple[dict, dict, dict]:
    """(forward fns, forward+backward fns, numpy fns) for the attention core."""
    torch.manual_seed(0)
    b, h, t, dh = shape
    q, k, v = (torch.randn(b, h, t, dh, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    dout = torch.randn(b, h, t, dh, device=device, dtype=dtype)

    def ours(backend):
        return lambda: attend_heads(q, k, v, causal=causal, backend=backend)[0]

    fwd = {
        "mhsa_lib reference": ours("reference"),
        "mhsa_lib fast": ours("fast"),
        SDPA: lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
    }

    def no_grad(fn):
        def call():
            with torch.no_grad():
                return fn()
        return call

    def with_backward(fn):
        def step():
            fn().backward(dout)
            q.grad = k.grad = v.grad = None
        return step

    fwd_bwd = {name: with_backward(fn) for name, fn in fwd.items()}
    fwd = {name: no_grad(fn) for name, fn in fwd.items()}
    numpy_fns = {}
    if device == "cpu" and dtype == torch.float32:
        qn, kn, vn, dn = (x.detach().numpy().copy() for x in (q, k, v, dout))

        def np_fwd():
            return numpy_attention(qn, kn, vn, causal)[0]

        def np_fwd_bwd():
            out, weights = numpy_attention(qn, kn, vn, causal)
            return numpy_attention_backward(qn, kn, vn, weights, dn)

        numpy_fns = {"NumPy": (np_fwd, np_fwd_bwd)}
    return fwd, fwd_bwd, numpy_fns


def module_candidates(shape: Shape, causal: bool, dtype, device) -> Tuple[dict, dict, dict]:
    """(forward fns, forward+backward fns, modules) for the multi-head modules."""
    torch.manual_seed(0)
    b, h, t, dh = shape
    d = h * dh
    fast = MultiHeadAttention(d, h, backend="fast", device=device, dtype=dtype)
    ref = MultiHeadAttention(d, h, backend="reference", device=device, dtype=dtype)
    ref.load_state_dict(fast.state_dict())
    fused = FusedMultiHeadAttention.from_separate(fast)
    theirs = nn.MultiheadAttention(d, h, batch_first=True, device=device, dtype=dtype)
    load_mha_into_torch(theirs, fast)
    x = torch.randn(b, t, d, device=device, dtype=dtype, requires_grad=True)
    dout = torch.randn(b, t, d, device=device, dtype=dtype)
    # nn.MultiheadAttention's bool masks mean "blocked"; is_causal=True lets it skip the mask
    # where it can, as our fast path does.
    torch_mask = mask_to_torch(causal_mask(t, device=device)) if causal else None

    calls: Dict[str, Callable[[], torch.Tensor]] = {
        "mhsa_lib MHA reference": lambda: ref(x, causal=causal),
        "mhsa_lib MHA fast": lambda: fast(x, causal=causal),
        "mhsa_lib fused-QKV fast": lambda: fused(x, causal=causal),
        TORCH_MHA: lambda: theirs(x, x, x, attn_mask=torch_mask, is_causal=causal)[0],
        TORCH_MHA_NW: lambda: theirs(x, x, x, attn_mask=torch_mask, is_causal=causal, need_weights=False)[0],
    }
    modules = (fast, ref, fused, theirs)

    def forward(fn):
        def call():
            for m in modules:
                m.eval()
            with torch.no_grad():
                return fn()
        return call

    def forward_backward(fn):
        def step():
            for m in modules:
                m.train()
            fn().backward(dout)
            x.grad = None
            for m in modules:
                m.zero_grad(set_to_none=True)
        return step

    return ({n: forward(f) for n, f in calls.items()}, {n: forward_backward(f) for n, f in calls.items()},
            {"fast": fast, "theirs": theirs, "x": x})


# --------------------------------------------------------------------------- measuring


def _measure(fns: Dict[str, Callable], config: bc.Config, repeats: int) -> Tuple[dict, dict, dict]:
    """Peak memory and output of one call each (this call is also the warm-up), then
    interleaved median times."""
    peaks, outputs = {}, {}
    for name, fn in fns.items():
        box = {}

        def keep(fn=fn, box=box):
            box["out"] = fn()

        peaks[name] = bc.peak_extra_bytes(keep, config.device)
        if "out" not in box:  # the peak was not measured (or the call failed): call it plainly
            try:
                keep()
            except Exception:  # noqa: BLE001 - recorded as a missing output and a nan time
                pass
        outputs[name] = box.get("out")
    warmup = 3 if config.cuda else 0
    times = bc.median_times(fns, repeats, warmup=warmup, sync=config.sync)
    return times, peaks, outputs


def _max_diff(out, base) -> Optional[float]:
    if out is None or base is None:
        return None
    out = torch.as_tensor(out) if isinstance(out, np.ndarray) else out
    return float((out.detach().float().cpu() - base.detach().float().cpu()).abs().max())


def measure_case(shape: Shape, causal: bool, dtype, threads, config: bc.Config, repeats: int) -> List[dict]:
    b, h, t, dh = shape
    device = config.device
    common = {"device": device, "dtype": bc.dtype_name(dtype), "threads": threads,
              "B": b, "H": h, "T": t, "Dh": dh, "causal": causal}
    rows = []

    # attention core
    fwd, fwd_bwd, numpy_fns = core_candidates(shape, causal, dtype, device)
    t_f, m_f, o_f = _measure(fwd, config, repeats)
    t_b, m_b, _ = _measure(fwd_bwd, config, repeats)
    np_times, np_peaks, np_out = {}, {}, {}
    for name, (nf, nb) in numpy_fns.items():
        np_peaks[name] = (bc.numpy_peak_extra_bytes(nf), bc.numpy_peak_extra_bytes(nb))
        np_out[name] = nf()
        both = bc.median_times({"fwd": nf, "fwd+bwd": nb}, repeats, warmup=0)
        np_times[name] = (both["fwd"], both["fwd+bwd"])
    core_names = list(fwd) + list(numpy_fns)
    for name in core_names:
        for which, backward in (("fwd", False), ("fwd+bwd", True)):
            if name in numpy_fns:
                seconds = np_times[name][backward]
                peak = np_peaks[name][backward]
                diff = _max_diff(np_out[name], o_f.get(SDPA)) if not backward else None
            else:
                seconds = (t_b if backward else t_f)[name]
                peak = (m_b if backward else m_f)[name]
                diff = _max_diff(o_f[name], o_f.get(SDPA)) if not backward else None
            flops = bc.attention_flops(b, h, t, t, dh, causal, backward)
            rows.append({**common, "table": "core", "impl": name, "pass": which, "median_s": seconds,
                         "flops": flops, "flop_per_s": flops / seconds if seconds and seconds == seconds else None,
                         "peak_extra_bytes": peak, "max_abs_diff": diff})

    # modules
    fwd, fwd_bwd, _ = module_candidates(shape, causal, dtype, device)
    t_f, m_f, o_f = _measure(fwd, config, repeats)
    t_b, m_b, _ = _measure(fwd_bwd, config, repeats)
    d = h * dh
    for name in fwd:
        for which, backward in (("fwd", False), ("fwd+bwd", True)):
            seconds = (t_b if backward else t_f)[name]
            flops = bc.attention_flops(b, h, t, t, dh, causal, backward) + bc.projection_flops(b, t, d, backward)
            rows.append({**common, "table": "module", "impl": name, "pass": which, "median_s": seconds,
                         "flops": flops, "flop_per_s": flops / seconds if seconds and seconds == seconds else None,
                         "peak_extra_bytes": (m_b if backward else m_f)[name],
                         "max_abs_diff": None if backward else _max_diff(o_f[name], o_f.get(TORCH_MHA_NW))})
    return rows


def print_case(rows: List[dict], config: bc.Config) -> None:
    first = rows[0]
    unit, scale = ("TFLOP/s", 1e12) if config.cuda else ("GFLOP/s", 1e9)
    threads = f", {first['threads']} threads" if first["threads"] else ""
    print(f"\n{first['device']} {first['dtype']}{threads}, (B, H, T, Dh) = "
          f"({first['B']}, {first['H']}, {first['T']}, {first['Dh']}), D = {first['H'] * first['Dh']}, "
          f"{'causal' if first['causal'] else 'not causal'}")
    for table, base in (("core", SDPA), ("module", TORCH_MHA)):
        sel = [r for r in rows if r["table"] == table]
        by = {(r["impl"], r["pass"]): r for r in sel}
        names = list(dict.fromkeys(r["impl"] for r in sel))
        out = []
        for name in names:
            f, fb = by[(name, "fwd")], by[(name, "fwd+bwd")]
            bf, bfb = by.get((base, "fwd")), by.get((base, "fwd+bwd"))

            def ratio(r, baseline):
                if not baseline or not r["median_s"] or not baseline["median_s"]:
                    return "-"
                value = r["median_s"] / baseline["median_s"]
                return "-" if math.isnan(value) else f"{value:.2f}x"

            def rate(r):
                return "-" if r["flop_per_s"] is None else f"{r['flop_per_s'] / scale:.1f}"

            diff = "-" if f["max_abs_diff"] is None else f"{f['max_abs_diff']:.1e}"
            out.append([name, bc.fmt_ms(f["median_s"]), rate(f), bc.fmt_mib(f["peak_extra_bytes"]), ratio(f, bf),
                        bc.fmt_ms(fb["median_s"]), rate(fb), bc.fmt_mib(fb["peak_extra_bytes"]), ratio(fb, bfb), diff])
        print(f"  {table}:")
        label = "x SDPA" if base == SDPA else "x nn.MHA"
        bc.print_table(["", "fwd ms", unit, "MiB", label, "fwd+bwd ms", unit, "MiB", label, "max|diff|"],
                       out, indent="    ")
    print(f"    (x SDPA, x nn.MHA: time / the same pass of {SDPA}, of {TORCH_MHA} with need_weights=True;"
          f" MiB: peak extra memory; max|diff|: forward output vs SDPA, vs nn.MHA need_weights=False)")


# --------------------------------------------------------------------------- goals


def cpu_goal_rows(config: bc.Config, rows: List[dict]) -> Tuple[Shape, Dict[Tuple[str, str], float]]:
    """Times of the goal comparison: from the module table when it holds the goal shape at two
    threads (full mode), else from a run of its own at the goal shape (only the four modules the
    goals compare; smoke mode: a tiny shape)."""
    shape = CPU_GOAL_SHAPE
    found = {(r["impl"], r["pass"]): r["median_s"] for r in rows
             if r["table"] == "module" and (r["B"], r["H"], r["T"], r["Dh"]) == shape
             and not r["causal"] and r["threads"] == 2 and r["device"] == "cpu"}
    if found:
        return shape, found
    shape = SMOKE_SHAPES[0] if config.mode == "smoke" else CPU_GOAL_SHAPE
    bc.set_threads(2)
    fwd, fwd_bwd, _ = module_candidates(shape, False, torch.float32, "cpu")
    keep = ["mhsa_lib MHA fast", "mhsa_lib fused-QKV fast", TORCH_MHA, TORCH_MHA_NW]
    repeats = config.n_repeats(cpu_default=3)
    t_f = bc.median_times({n: fwd[n] for n in keep}, repeats, warmup=1)
    t_b = bc.median_times({n: fwd_bwd[n] for n in keep}, repeats, warmup=1)
    times = {(n, "fwd"): s for n, s in t_f.items()}
    times.update({(n, "fwd+bwd"): s for n, s in t_b.items()})
    return shape, times


def cpu_goals(config: bc.Config, rows: List[dict]) -> List[dict]:
    shape, t = cpu_goal_rows(config, rows)
    where = f"CPU float32, 2 threads, (B, H, T, Dh) = {shape}"
    if shape != CPU_GOAL_SHAPE:
        where += f"; the goal is set at {CPU_GOAL_SHAPE} (smoke mode: a tiny shape, numbers mean nothing)"
    print(f"\nCPU goals: {where}")
    bc.print_table(["", "fwd ms", "fwd+bwd ms"], [
        [n, bc.fmt_ms(t.get((n, "fwd"))), bc.fmt_ms(t.get((n, "fwd+bwd")))]
        for n in dict.fromkeys(k[0] for k in t)])

    def r(a, b):
        return t[a] / t[b] if a in t and b in t else None

    goals = [
        bc.goal("fast forward / nn.MultiheadAttention eval", r(("mhsa_lib MHA fast", "fwd"), (TORCH_MHA, "fwd")),
                "<=", 0.75, where),
        bc.goal("fast forward+backward / nn.MultiheadAttention train",
                r(("mhsa_lib MHA fast", "fwd+bwd"), (TORCH_MHA, "fwd+bwd")), "<=", 1.05, where),
    ]
    info = [
        ("fast forward / nn.MultiheadAttention eval need_weights=False", ("mhsa_lib MHA fast", "fwd"), (TORCH_MHA_NW, "fwd")),
        ("fast forward+backward / nn.MultiheadAttention train need_weights=False",
         ("mhsa_lib MHA fast", "fwd+bwd"), (TORCH_MHA_NW, "fwd+bwd")),
        ("fused fast forward / nn.MultiheadAttention eval", ("mhsa_lib fused-QKV fast", "fwd"), (TORCH_MHA, "fwd")),
        ("fused fast forward+backward / nn.MultiheadAttention train",
         ("mhsa_lib fused-QKV fast", "fwd+bwd"), (TORCH_MHA, "fwd+bwd")),
    ]
    for name, a, b in info:
        if r(a, b) is not None:
            goals.append(bc.goal(name, r(a, b), "info", None, where))
    bc.print_goals(goals)
    return goals


def gpu_goals(config: bc.Config) -> Tuple[List[dict], Dict[str, float]]:
    """bf16, (8, 16, 1024, 64): fast module forward+backward vs SDPA alone + four projection
    matmuls alone, and vs nn.MultiheadAttention in training mode.

    Runs on ``config.device``: a GPU in a real run; the test suite runs it on the CPU at the smoke
    shape, so this code is known to work before a GPU is at hand."""
    shape = SMOKE_SHAPES[0] if config.mode == "smoke" else GPU_GOAL_SHAPE
    b, h, t, dh = shape
    d = h * dh
    dev, dtype = config.device, torch.bfloat16
    _, fwd_bwd, parts = module_candidates(shape, False, dtype, dev)
    fast = parts["fast"]
    x = parts["x"]
    q, k, v = (torch.randn(b, h, t, dh, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
    dq = torch.randn_like(q)
    dx = torch.randn_like(x)
    projections = [fast.q_proj, fast.k_proj, fast.v_proj, fast.out_proj]

    def sdpa_alone():
        F.scaled_dot_product_attention(q, k, v).backward(dq)
        q.grad = k.grad = v.grad = None

    def projections_alone():  # the four (D, D) matmuls, forward and backward, nothing else
        outs = [F.linear(x, p.weight, p.bias) for p in projections]
        torch.autograd.backward(outs, [dx] * 4)
        x.grad = None
        for p in projections:
            p.weight.grad = p.bias.grad = None

    fns = {
        "mhsa_lib MHA fast": fwd_bwd["mhsa_lib MHA fast"],
        "mhsa_lib fused-QKV fast": fwd_bwd["mhsa_lib fused-QKV fast"],
        TORCH_MHA: fwd_bwd[TORCH_MHA],
        TORCH_MHA_NW: fwd_bwd[TORCH_MHA_NW],
        "SDPA alone": sdpa_alone,
        "4 projection matmuls alone": projections_alone,
    }
    times = bc.median_times(fns, config.n_repeats(cpu_default=3, gpu_default=50), warmup=5, sync=config.sync)
    times["SDPA + projections"] = times["SDPA alone"] + times["4 projection matmuls alone"]
    where = f"{config.device_name()} bf16, forward+backward, (B, H, T, Dh) = {shape}, D = {d}"
    print(f"\nGPU goals: {where}")
    bc.print_table(["", "fwd+bwd ms"], [[n, bc.fmt_ms(s)] for n, s in times.items()])
    fast_t = times["mhsa_lib MHA fast"]
    goals = [
        bc.goal("fast fwd+bwd / (SDPA alone + 4 projection matmuls alone)", fast_t / times["SDPA + projections"],
                "<=", 1.10, where),
        bc.goal("nn.MultiheadAttention train / fast (speed-up)", times[TORCH_MHA] / fast_t, ">=", 2.0, where),
        bc.goal("nn.MultiheadAttention train need_weights=False / fast (speed-up)", times[TORCH_MHA_NW] / fast_t,
                "info", None, where),
    ]
    bc.print_goals(goals)
    return goals, times


# --------------------------------------------------------------------------- group


def run(config: bc.Config) -> dict:
    if config.cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch.cuda.is_available() is False on this machine")
    repeats = config.n_repeats(cpu_default=3 if config.mode == "quick" else 5)
    thread_settings = [None] if config.cuda else config.threads
    rows: List[dict] = []
    for dtype in config.default_dtypes():
        for threads in thread_settings:
            bc.set_threads(threads)
            for shape, causal in cases(config):
                case_rows = measure_case(shape, causal, dtype, threads, config, repeats)
                print_case(case_rows, config)
                rows.extend(case_rows)
                if config.cuda:
                    torch.cuda.empty_cache()
    result = {"repeats": repeats, "rows": rows}
    if config.cuda:
        result["goals"], result["goal_times_s"] = gpu_goals(config)
    else:
        result["goals"] = cpu_goals(config, rows)
    return result
