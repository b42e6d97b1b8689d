"""The "decoding" group: incremental decoding with and without the KV cache, MHA vs GQA vs MQA.

The model is a stack of causal ``GroupedQueryAttention`` layers (fast path) with pre-LayerNorm
residual connections; each generated position's output, normalised, is the next input (there
is no vocabulary: the point is the attention work per token). For every G (key/value heads):

* **no cache**: every step runs the whole sequence so far through the stack again and keeps
  the last position;
* **KVCache**: the prompt once, then one token per step against the growing cache;
* **StaticKVCache**: the same with a cache pre-allocated for prompt + new tokens.

Tokens/s counts the generated tokens over the whole call, prompt included. ``max |diff|`` is
the largest difference between the cached and uncached outputs (they must agree). KV-cache
bytes: measured from the cache tensors after generation, and from ``kv_cache_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import bench_common as bc
import torch
import torch.nn.functional as F
from torch import nn

from mhsa_lib import GroupedQueryAttention, KVCache, StaticKVCache, kv_cache_bytes


@dataclass
class DecodeSetup:
    batch: int
    d_model: int
    heads: int
    layers: int
    prompt: int
    new_tokens: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


def setups(config: bc.Config) -> List[DecodeSetup]:
    if config.mode == "smoke":
        return [DecodeSetup(1, 32, 4, 2, 8, 4)]
    if config.cuda:
        return [DecodeSetup(1, 1024, 16, 4, 512, 128), DecodeSetup(8, 1024, 16, 4, 512, 128)]
    if config.mode == "quick":
        return [DecodeSetup(1, 256, 8, 4, 128, 64)]
    return [DecodeSetup(1, 512, 8, 4, 256, 128), DecodeSetup(8, 256, 8, 4, 128, 64)]


class AttentionStack(nn.Module):
    """``layers`` causal attention layers, x <- x + attn(LayerNorm(x)), sharing one shape."""

    def __init__(self, s: DecodeSetup, kv_heads: int, device, dtype) -> None:
        super().__init__()
        self.d_model = s.d_model
        self.layers = nn.ModuleList(
            GroupedQueryAttention(s.d_model, s.heads, kv_heads, backend="fast", device=device, dtype=dtype)
            for _ in range(s.layers)
        )

    def forward(self, x: torch.Tensor, caches: Optional[list] = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            cache = None if caches is None else caches[i]
            x = x + layer(F.layer_norm(x, (self.d_model,)), cache=cache, causal=True)
        return x

    def next_input(self, out: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(out[:, -1:], (self.d_model,))  # (B, 1, D)


@torch.no_grad()
def generate_without_cache(model: AttentionStack, prompt: torch.Tensor, n: int) -> torch.Tensor:
    seq = prompt
    x = model.next_input(model(seq))
    outs = []
    for _ in range(n):
        seq = torch.cat([seq, x], dim=1)  # (B, S, D), one longer
        last = model(seq)[:, -1:]  # the whole sequence again, keep the newest position
        outs.append(last)
        x = model.next_input(last)
    return torch.cat(outs, dim=1)  # (B, n, D)


@torch.no_grad()
def generate_with_cache(model: AttentionStack, prompt: torch.Tensor, n: int, caches: list) -> torch.Tensor:
    for cache in caches:
        cache.reset()
    x = model.next_input(model(prompt, caches))
    outs = []
    for _ in range(n):
        last = model(x, caches)  # one new token against everything cached
        outs.append(last)
        x = model.next_input(last)
    return torch.cat(outs, dim=1)


def kv_variants(heads: int) -> List[tuple]:
    """(name, G): MHA (G = H), GQA (G = H/4, at least 2), MQA (G = 1)."""
    gqa = max(2, heads // 4) if heads >= 4 else heads
    variants = [("MHA", heads), ("GQA", gqa), ("MQA", 1)]
    seen, out = set(), []
    for name, g in variants:
        if g not in seen and heads % g == 0:
            seen.add(g)
            out.append((name, g))
    return out


def measure_setup(s: DecodeSetup, config: bc.Config, repeats: int) -> List[dict]:
    device = config.device
    # the first of --dtypes if given, else bf16 on a GPU and fp32 on the CPU
    dtype = config.dtypes[0] if config.dtypes else (torch.bfloat16 if config.cuda else torch.float32)
    total = s.prompt + s.new_tokens
    rows = []
    for name, g in kv_variants(s.heads):
        torch.manual_seed(0)
        model = AttentionStack(s, g, device, dtype).eval()
        prompt = torch.randn(s.batch, s.prompt, s.d_model, device=device, dtype=dtype)
        growing = [KVCache() for _ in range(s.layers)]
        static = [StaticKVCache(s.batch, g, total, s.head_dim, device=device, dtype=dtype) for _ in range(s.layers)]
        outputs = {}

        def call(label, fn):
            def run_once():
                outputs[label] = fn()
            return run_once

        fns = {
            "no cache": call("no cache", lambda: generate_without_cache(model, prompt, s.new_tokens)),
            "KVCache": call("KVCache", lambda: generate_with_cache(model, prompt, s.new_tokens, growing)),
            "StaticKVCache": call("StaticKVCache",
                                  lambda: generate_with_cache(model, prompt, s.new_tokens, static)),
        }
        times = bc.median_times(fns, repeats, warmup=1, sync=config.sync)
        base = outputs.get("no cache")
        element = torch.tensor([], dtype=dtype).element_size()
        formula = kv_cache_bytes(s.batch, total, s.layers, g, s.head_dim, bytes_per_element=element)
        measured = {
            "KVCache": sum(c.k.nbytes + c.v.nbytes for c in growing if c.k is not None),
            "StaticKVCache": sum(c.k_buffer.nbytes + c.v_buffer.nbytes for c in static),
        }
        for impl, seconds in times.items():
            out = outputs.get(impl)
            diff = None
            if impl != "no cache" and out is not None and base is not None:
                diff = float((out.float() - base.float()).abs().max())
            rows.append({
                "device": device, "dtype": str(dtype).replace("torch.", ""), "batch": s.batch,
                "d_model": s.d_model, "heads": s.heads, "kv_heads": g, "variant": name, "layers": s.layers,
                "prompt": s.prompt, "new_tokens": s.new_tokens, "impl": impl, "median_s": seconds,
                "tokens_per_s": s.batch * s.new_tokens / seconds if seconds == seconds and seconds else None,
                "kv_cache_bytes_measured": measured.get(impl), "kv_cache_bytes_formula": formula,
                "max_abs_diff_vs_no_cache": diff,
            })
    return rows


def print_setup(s: DecodeSetup, rows: List[dict]) -> None:
    dtype = rows[0]["dtype"]
    print(f"\n{rows[0]['device']} {dtype}: B={s.batch}, D={s.d_model}, H={s.heads}, Dh={s.head_dim}, "
          f"{s.layers} layers, prompt {s.prompt}, {s.new_tokens} new tokens")
    table = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        by = {r["impl"]: r for r in rows if r["variant"] == variant}
        nc, kv, st = by["no cache"], by["KVCache"], by["StaticKVCache"]

        def tps(r):
            return "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.0f}"

        def speedup(r):
            if not r["median_s"] or not nc["median_s"] or r["median_s"] != r["median_s"]:
                return "-"
            return f"{nc['median_s'] / r['median_s']:.1f}x"

        diff = max((r["max_abs_diff_vs_no_cache"] or 0.0) for r in (kv, st))
        table.append([f"{variant} (G={kv['kv_heads']})", tps(nc), tps(kv), tps(st), speedup(kv), speedup(st),
                      _kib(kv["kv_cache_bytes_measured"]), _kib(kv["kv_cache_bytes_formula"]),
                      _kib(st["kv_cache_bytes_measured"]), f"{diff:.1e}"])
    bc.print_table(["", "tok/s no cache", "tok/s KVCache", "tok/s static", "KVCache x", "static x",
                    "cache KiB", "kv_cache_bytes KiB", "static KiB", "max|diff|"], table)


def _kib(nbytes) -> str:
    return "-" if nbytes is None else f"{nbytes / 1024:.0f}"


def cache_size_examples() -> List[dict]:
    """kv_cache_bytes for a 32-layer model with H = 32, Dh = 128, S = 4096, B = 1, bf16."""
    rows = []
    for name, g in (("MHA", 32), ("GQA", 8), ("MQA", 1)):
        rows.append({"variant": name, "kv_heads": g, "layers": 32, "head_dim": 128, "seq_len": 4096,
                     "batch": 1, "bytes_per_element": 2, "bytes": kv_cache_bytes(1, 4096, 32, g, 128, 2)})
    print("\nKV cache of a 32-layer model, H=32, Dh=128, S=4096, B=1, bf16 (kv_cache_bytes):")
    bc.print_table(["", "G", "MiB", "x MHA"], [
        [r["variant"], r["kv_heads"], bc.fmt_mib(r["bytes"]), f"{r['bytes'] / rows[0]['bytes']:.3f}"] for r in rows])
    return rows


def run(config: bc.Config) -> dict:
    if config.cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch.cuda.is_available() is False on this machine")
    if not config.cuda:
        bc.set_threads(max(config.threads))
    repeats = config.n_repeats(cpu_default=3 if config.mode == "quick" else 5, gpu_default=5)
    rows = []
    for s in setups(config):
        setup_rows = measure_setup(s, config, repeats)
        print_setup(s, setup_rows)
        rows.extend(setup_rows)
    note = "" if config.cuda else f" ({torch.get_num_threads()} threads)"
    print(f"  (tok/s: generated tokens per second{note}, prompt included; KVCache x, static x: "
          f"speed-up over no cache; max|diff|: cached vs uncached outputs)")
    return {"repeats": repeats, "rows": rows, "cache_size_examples": cache_size_examples()}
