"""Markdown tables from a results file written by ``run.py --out``, for RESULTS.md.

    python benchmarks/report.py results.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _ms(s):
    return "-" if s is None or (isinstance(s, float) and math.isnan(s)) else (f"{s * 1e3:.2f}" if s < 0.1 else f"{s * 1e3:.1f}")


def _mib(b):
    return "-" if b is None else f"{b / 2**20:.1f}"


def _goal(g, unit="x"):
    m = "-" if g["measured"] is None else f"{g['measured']:.2f}{unit}"
    if g["target"] is None:
        return f"| {g['name']} | {m} | (info) | |"
    verdict = {True: "met", False: "**not met**", None: "not measured"}[g["met"]]
    return f"| {g['name']} | **{m}** | {g['op']} {g['target']:g} | {verdict} |"


def core(group, gpu: bool) -> list:
    out = []
    unit, scale = ("TFLOP/s", 1e12) if gpu else ("GFLOP/s", 1e9)
    keys = []
    for r in group["rows"]:
        k = (r["dtype"], r["threads"], r["B"], r["H"], r["T"], r["Dh"], r["causal"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        dtype, threads, b, h, t, dh, causal = k
        rows = [r for r in group["rows"] if (r["dtype"], r["threads"], r["B"], r["H"], r["T"], r["Dh"], r["causal"]) == k]
        th = f", {threads} threads" if threads else ""
        out.append(f"\n{dtype}{th}, (B, H, T, Dh) = ({b}, {h}, {t}, {dh}), D = {h * dh}, "
                   f"{'causal' if causal else 'not causal'}:\n")
        out.append(f"| | fwd ms | fwd {unit} | fwd peak MiB | fwd+bwd ms | fwd+bwd {unit} | fwd+bwd peak MiB | fwd x base | fwd+bwd x base |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for table, base in (("core", "F.scaled_dot_product_attention"), ("module", "nn.MultiheadAttention")):
            by = {(r["impl"], r["pass"]): r for r in rows if r["table"] == table}
            for name in dict.fromkeys(i for i, _ in by):
                f, fb = by[(name, "fwd")], by[(name, "fwd+bwd")]
                bf, bfb = by.get((base, "fwd")), by.get((base, "fwd+bwd"))

                def rate(r):
                    return "-" if r["flop_per_s"] is None else f"{r['flop_per_s'] / scale:.1f}"

                def ratio(r, x):
                    try:
                        return f"{r['median_s'] / x['median_s']:.2f}"
                    except (TypeError, ZeroDivisionError, KeyError):
                        return "-"

                label = f"{table}: {name}"
                out.append(f"| {label} | {_ms(f['median_s'])} | {rate(f)} | {_mib(f['peak_extra_bytes'])} | "
                           f"{_ms(fb['median_s'])} | {rate(fb)} | {_mib(fb['peak_extra_bytes'])} | "
                           f"{ratio(f, bf)} | {ratio(fb, bfb)} |")
    threads = sorted({r["threads"] for r in group["rows"] if r["threads"]})
    if len(threads) > 1:
        out.extend(thread_scaling(group["rows"], threads[0], threads[-1]))
    if group.get("goals"):
        out.append(f"\nGoals ({group['goals'][0].get('where', '')}):\n")
        out.append("| ratio | measured | goal | |")
        out.append("|---|---:|---:|---|")
        out.extend(_goal(g) for g in group["goals"])
    return out


def thread_scaling(rows, few: int, many: int) -> list:
    """Speed-up from ``few`` to ``many`` threads of every candidate, forward and forward+backward."""
    by = {(r["table"], r["impl"], r["pass"], r["B"], r["H"], r["T"], r["Dh"], r["causal"], r["threads"]): r["median_s"]
          for r in rows}
    cases = list(dict.fromkeys((r["B"], r["H"], r["T"], r["Dh"], r["causal"]) for r in rows))
    head = " | ".join(f"({b}, {h}, {t}, {dh}){' causal' if c else ''}" for b, h, t, dh, c in cases)
    out = [f"\nSpeed-up from {few} to {many} threads (time with {few} / time with {many}), forward | forward+backward:\n",
           f"| | {head} |", "|---|" + "---:|" * len(cases)]
    for table, impl in dict.fromkeys((r["table"], r["impl"]) for r in rows):
        cells = []
        for b, h, t, dh, c in cases:
            pair = []
            for p in ("fwd", "fwd+bwd"):
                a = by.get((table, impl, p, b, h, t, dh, c, few))
                z = by.get((table, impl, p, b, h, t, dh, c, many))
                pair.append(f"{a / z:.2f}" if a and z and a == a and z == z else "-")
            cells.append(" / ".join(pair))
        out.append(f"| {table}: {impl} | " + " | ".join(cells) + " |")
    return out


def decoding(group) -> list:
    out = []
    setups = []
    for r in group["rows"]:
        k = (r["device"], r["dtype"], r["batch"], r["d_model"], r["heads"], r["layers"], r["prompt"], r["new_tokens"])
        if k not in setups:
            setups.append(k)
    for k in setups:
        device, dtype, b, d, h, layers, prompt, new = k
        rows = [r for r in group["rows"] if (r["device"], r["dtype"], r["batch"], r["d_model"], r["heads"],
                                              r["layers"], r["prompt"], r["new_tokens"]) == k]
        out.append(f"\n{device} {dtype}, B={b}, D={d}, H={h}, {layers} layers, prompt {prompt}, {new} new tokens:\n")
        out.append("| | tokens/s no cache | tokens/s KVCache | tokens/s StaticKVCache | KVCache speed-up | "
                   "cache KiB (measured) | kv_cache_bytes KiB | max abs diff |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for variant in dict.fromkeys(r["variant"] for r in rows):
            by = {r["impl"]: r for r in rows if r["variant"] == variant}
            nc, kv, st = by["no cache"], by["KVCache"], by["StaticKVCache"]
            diff = max((r["max_abs_diff_vs_no_cache"] or 0.0) for r in (kv, st))
            out.append(f"| {variant} (G={kv['kv_heads']}) | {nc['tokens_per_s']:.0f} | {kv['tokens_per_s']:.0f} | "
                       f"{st['tokens_per_s']:.0f} | {nc['median_s'] / kv['median_s']:.1f}x | "
                       f"{kv['kv_cache_bytes_measured'] / 1024:.0f} | {kv['kv_cache_bytes_formula'] / 1024:.0f} | {diff:.1e} |")
    return out


def memory(group) -> list:
    rows = group["rows"]
    first = rows[0]
    by = {(r["T"], r["backend"]): r for r in rows}
    out = [f"\n{first['device']} {first['dtype']}, `MultiHeadAttention` D = {first['D']}, H = {first['H']}, B = 1, "
           "extra memory in MiB (forward peak: eval, no autograd; saved: what autograd keeps for the backward pass):\n",
           "| T | reference forward peak | fast forward peak | reference saved | fast saved | reference / fast saved |",
           "|---:|---:|---:|---:|---:|---:|"]
    for t in dict.fromkeys(r["T"] for r in rows):
        ref, fast = by[t, "reference"], by[t, "fast"]
        ratio = ref["saved_for_backward_bytes"] / fast["saved_for_backward_bytes"] if fast["saved_for_backward_bytes"] else float("nan")
        out.append(f"| {t} | {_mib(ref['forward_peak_bytes'])} | {_mib(fast['forward_peak_bytes'])} | "
                   f"{_mib(ref['saved_for_backward_bytes'])} | {_mib(fast['saved_for_backward_bytes'])} | {ratio:.1f}x |")
    if group.get("goals"):
        out.append(f"\nGoals ({group['goals'][0].get('where', '')}; growth exponent 2 means T², 1 means T):\n")
        out.append("| growth exponent | measured | goal | |")
        out.append("|---|---:|---:|---|")
        out.extend(_goal(g, unit="") for g in group["goals"])
    return out


def notebooks(group) -> list:
    out = ["\n| notebook | seconds | goal (s) | x goal | score |", "|---|---:|---:|---:|---|"]
    for r in group["rows"]:
        score = f"{r['score']:g}/{r['max_score']:g}" if "score" in r else r.get("reason", "-")
        out.append(f"| {r['notebook']} | {r['seconds']:.1f} | {r['goal_s']:.0f} | {r['seconds'] / r['goal_s']:.2f} | {score} |")
    out.append(f"| whole course | {group['total_s']:.1f} | 480 | {group['total_s'] / 480:.2f} | |")
    steps = sorted(((t, r["notebook"], gid) for r in group["rows"] for gid, t in r.get("step_seconds", {}).items()),
                   reverse=True)
    if steps:
        out.append(f"\nStep checks, in-kernel seconds (each graded test cell, hidden cases included; "
                   f"the slowest 10 of {len(steps)}; goal: each under 1 s):\n")
        out.append("| step | notebook | seconds |")
        out.append("|---|---|---:|")
        out.extend(f"| {gid} | {nb} | {t:.3f} |" for t, nb, gid in steps[:10])
    return out


def main(path: str) -> None:
    results = json.loads(Path(path).read_text())
    env = results["environment"]
    print(f"Run of {env['date']}: `{results['command']}`; {env['cpu']} ({env['cpu_count']} CPUs)"
          + (f", {env['gpu']} (CUDA {env['cuda']})" if "gpu" in env else "")
          + f"; Python {env['python']}, torch {env['torch']}, numpy {env['numpy']}; {env['platform']}; "
          f"load average at start {', '.join(f'{x:.1f}' for x in env.get('load_average') or [])}.")
    gpu = env["device"] == "cuda"
    for name, group in results["groups"].items():
        print(f"\n#### {name} ({group['status']}, {group.get('seconds', 0):.0f} s)")
        if group["status"] != "ok":
            print(f"\n{group.get('reason', '')}")
            continue
        lines = {"core": lambda g: core(g, gpu), "decoding": decoding, "memory": memory, "notebooks": notebooks}.get(name)
        if lines:
            print("\n".join(lines(group)))


if __name__ == "__main__":
    main(sys.argv[1])
