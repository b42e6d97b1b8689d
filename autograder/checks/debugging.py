"""Step checks for notebook 06 (debugging Transformer blocks): the repaired object of each incident.

Shape letters: B batch, T length, D model width, H heads, F feed-forward width, L layers.

Each repair is a class with the course's layout; the check builds it at several sizes, copies
randomised reference parameters into it by name, and compares it in float64 with a reference
built from ``mhsa_lib``. The learner's head probe (incident 2) is checked on correct and broken
modules; the speed fix (incident 4) is also timed against the broken version in the same run,
with medians and a generous ratio so that a busy machine does not fail a correct fix.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

import mhsa_lib

from ..core import (
    CheckResult,
    LearnerError,
    attempt,
    call,
    close,
    compare,
    describe_failures,
    distinct_sizes,
    draw_seed,
    find_shortcuts,
    finish,
    randn,
)
from ..mistakes import debugging as M
from .modules import build, copy_parameters, diagnose_modules, guarded, randomise, run, tokens

BLOCK_POINTS = 3.0
ATTENTION_POINTS = 2.0
PROBE_POINTS = 2.0
ENCODER_POINTS = 2.0
SPEED_POINTS = 3.0
SPEED_RATIO = 5.0  # a real fix is 100x+ faster at the timing size; two broken copies differ by up to ~2x on a busy machine
SPEED_SIZE = (4, 128, 64, 4)  # B, T, D, H


# --------------------------------------------------------------------------- shared


def _sizes(gen: torch.Generator) -> Tuple[int, int, int, int, int]:
    """b, t, h, dh, f with D = h·dh, all of b, t, h, dh different and F != D."""
    b, t, h, dh = distinct_sizes(gen, 4, 2, 7)
    d = h * dh
    f = d + int(torch.randint(1, 9, (1,), generator=gen))
    return b, t, h, dh, f


def _compare_cases(step: str, cls, result: CheckResult, gen: torch.Generator, hidden: bool, *,
                   make_ref: Callable, ctor: Callable, call_args: Callable, mistakes, advice,
                   public_label: str = "public case: B=1, T=3, D=4, H=2") -> bool:
    """Public case + random cases against the reference; diagnose; False if not implemented."""
    seen: List[Tuple[Any, Any, Tensor]] = []

    def case(sizes, g):
        ref = randomise(make_ref(sizes).double().eval(), g)
        x = tokens(g, sizes[0], sizes[1], sizes[2] * sizes[3])
        mod = build(cls, ctor(sizes), {}, ref)
        if isinstance(mod, str):
            return mod, None
        args = call_args(sizes, x)
        y = run(mod, *args)
        expected = ref(*args)
        seen.append(((sizes, ref, args), y, expected))
        return y, expected

    pub_gen = torch.Generator().manual_seed(2024)
    y, e = case((1, 3, 2, 2, 6), pub_gen)
    if isinstance(y, LearnerError) and y.kind == "not_implemented":
        result.zero_reason = f"{step} {y}"
        return False
    if isinstance(y, str) and "not implemented yet" in y:  # the constructor itself is a stub
        result.zero_reason = y
        return False
    c = compare(y, e, what="output") if e is not None else None
    result.add(public_label, 1.0, bool(c and c.ok), str(y) if c is None else c.detail)

    fails = []
    for _ in range(6 if hidden else 3):
        sizes = _sizes(gen)
        y, e = case(sizes, gen)
        c = compare(y, e, what="output") if e is not None else None
        if c is None or not c.ok:
            b, t, h, dh, f = sizes
            fails.append(f"B={b}, T={t}, D={h * dh}, H={h}, F={f}: {y if c is None else c.detail}")
    result.add("random sizes (B, T, H, Dh all different, F != D), equal to the reference in float64",
               1.0, not fails, describe_failures(fails, 1))

    def mistake_output(mistake, case_):
        sizes, ref, args = case_
        buggy = mistake.fn(*ctor(sizes))
        copy_parameters(buggy, ref)
        buggy = buggy.double().eval()
        return buggy(*args)

    if not result.passed:
        diagnose_modules(result, seen, mistakes, advice, mistake_output)
    return True


def _forbid(result: CheckResult, step: str, module: Any, args: Sequence[Any], library: Sequence[str],
            torch_modules: Sequence[type] = ()) -> None:
    if not isinstance(module, nn.Module):
        return
    found = [f"torch's {type(m).__name__}" for m in module.modules() if isinstance(m, tuple(torch_modules))][:1]
    found += find_shortcuts(module, args, (), forbid_library=tuple(library))
    if found:
        result.zero_reason = f"your {step} uses {', '.join(found)}: repair the code you were given instead"


# --------------------------------------------------------------------------- incident 1


def check_fixed_block(cls: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Incident 1: ``FixedBlock(d_model, num_heads, d_ff)``, a pre-norm block (max 3)."""
    step = "FixedBlock"
    seed = draw_seed(step, seed, hidden)
    result = CheckResult(step, BLOCK_POINTS, seed=seed, hidden=hidden, fn_id=id(cls))
    gen = torch.Generator().manual_seed(seed)
    with guarded():
        ok = _compare_cases(step, cls, result, gen, hidden,
                            make_ref=lambda s: mhsa_lib.TransformerBlock(s[2] * s[3], s[2], s[4], "pre"),
                            ctor=lambda s: (s[2] * s[3], s[2], s[4]),
                            call_args=lambda s, x: (x,), mistakes=M.BLOCK_MISTAKES, advice=_BLOCK_ADVICE,
                            public_label="public case: B=1, T=3, D=4, H=2, F=6")
        if ok:
            problems = _identity_probe(cls, gen)
            result.add("probe: with attn.out_proj and ffn.fc2 zeroed the block returns its input "
                       "(pre-norm keeps a clean residual path)", 1.0, not problems, "; ".join(problems))
            ref = randomise(mhsa_lib.TransformerBlock(6, 2, 10).double(), gen)
            _forbid(result, step, build(cls, (6, 2, 10), {}, ref), (tokens(gen, 2, 4, 6),),
                    ("TransformerBlock",), (nn.TransformerEncoderLayer,))
    return finish(result, quiet)


def _identity_probe(cls, gen) -> List[str]:
    ref = randomise(mhsa_lib.TransformerBlock(6, 2, 10).double(), gen)
    mod = build(cls, (6, 2, 10), {}, ref)
    if isinstance(mod, str):
        return [mod]
    try:
        for layer in (mod.attn.out_proj, mod.ffn.fc2):
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
    except Exception:
        return ["could not zero attn.out_proj and ffn.fc2"]
    x = tokens(gen, 2, 5, 6)
    y = run(mod, x)
    if not (isinstance(y, Tensor) and close(y, x, atol=1e-10)):
        return ["the output is not x: some norm still sits on the residual path (x is normalised on its way "
                "through), so this is not x + F(LN(x)) in both sub-layers"]
    return []


_BLOCK_ADVICE = {
    "fix-block-refactored": "your block still does what the refactor shipped: attention pre-norm, "
    "x + Attn(LN1(x)), but the FFN post-norm, LN2(x + FFN(x)). The spec is pre-norm in both "
    "sub-layers: x = x + FFN(LN2(x)).",
    "fix-block-mixed-other-way": "your block mixes the placements the other way: attention post-norm, "
    "LN1(x + Attn(x)), FFN pre-norm. Both sub-layers are pre-norm: x = x + Attn(LN1(x)).",
    "fix-block-post-norm": "your block is post-norm in both sub-layers, LN(x + F(x)); the spec is "
    "pre-norm: x + F(LN(x)).",
    "fix-block-norm-on-output": "your block computes x + LN(F(x)): the norm sits on the sub-layer's "
    "output. Pre-norm normalises the sub-layer's input: x + F(LN(x)).",
}


# --------------------------------------------------------------------------- incident 2


class _CausalRef(nn.Module):
    """mhsa_lib's MultiHeadAttention called with a causal mask (the reference of incident 4)."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.inner = mhsa_lib.MultiHeadAttention(d_model, num_heads)

    def named_parameters(self, *args, **kwargs):  # the course's names, without "inner."
        return self.inner.named_parameters(*args, **kwargs)

    def forward(self, x):
        return self.inner(x, mhsa_lib.causal_mask(x.shape[1], device=x.device))


def check_fixed_attention(cls: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Incident 2: ``FixedAttention(d_model, num_heads)``, multi-head attention with the merge repaired (max 2)."""
    step = "FixedAttention"
    seed = draw_seed(step, seed, hidden)
    result = CheckResult(step, ATTENTION_POINTS, seed=seed, hidden=hidden, fn_id=id(cls))
    gen = torch.Generator().manual_seed(seed)
    with guarded():
        ok = _compare_cases(step, cls, result, gen, hidden,
                            make_ref=lambda s: mhsa_lib.MultiHeadAttention(s[2] * s[3], s[2]),
                            ctor=lambda s: (s[2] * s[3], s[2]),
                            call_args=lambda s, x: (x,), mistakes=M.ATTENTION_MISTAKES, advice=_ATTN_ADVICE)
        if ok:
            ref = randomise(mhsa_lib.MultiHeadAttention(6, 2).double(), gen)
            _forbid(result, step, build(cls, (6, 2), {}, ref), (tokens(gen, 2, 4, 6),),
                    ("MultiHeadAttention", "FusedMultiHeadAttention", "attend_heads"), (nn.MultiheadAttention,))
    return finish(result, quiet)


_ATTN_ADVICE = {
    "fix-attn-merge-no-transpose": "the merge still reshapes (B, H, T, Dh) straight to (B, T, D): "
    "token t then receives pieces of other tokens. Transpose back first: "
    "out.transpose(1, 2).reshape(B, T, D).",
    "fix-attn-split-no-transpose": "the merge is right now, but the split is broken the same way: "
    "view (B, T, D) as (B, T, H, Dh), then transpose(1, 2).",
}


def check_head_probe(fn: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Incident 2: ``heads_look_right(module) -> bool``, True for a correct attention module,
    False for one whose heads are split or merged without the transpose (max 2)."""
    step = "heads_look_right"
    seed = draw_seed(step, seed, hidden)
    result = CheckResult(step, PROBE_POINTS, seed=seed, hidden=hidden, fn_id=id(fn))
    gen = torch.Generator().manual_seed(seed)
    groups = (("says True for correct modules (several sizes)", 1.0, lambda d, h: mhsa_lib.MultiHeadAttention(d, h), True),
              ("says False for the merge bug of incident 2", 0.5, M.MHAMergeNoTranspose, False),
              ("says False for heads split without the transpose", 0.5, M.MHASplitNoTranspose, False))
    with guarded():
        for label, weight, make, expected in groups:
            wrong = []
            for _ in range(4 if hidden else 2):
                _, _, h, dh, _ = _sizes(gen)
                torch.manual_seed(int(torch.randint(0, 2**30, (1,), generator=gen)))
                module = make(h * dh, h).eval()
                got = attempt(fn, module)
                if isinstance(got, LearnerError) and got.kind == "not_implemented":
                    result.zero_reason = f"{step} {got}"
                    return finish(result, quiet)
                if isinstance(got, LearnerError) or not isinstance(got, (bool, Tensor)) or bool(got) != expected:
                    wrong.append(f"D={h * dh}, H={h}: returned {got}" if not isinstance(got, LearnerError)
                                 else f"D={h * dh}, H={h}: {got}")
            result.add(label, weight, not wrong, describe_failures(wrong, 1))
        if result.parts and not result.parts[0].passed and all(p.passed for p in result.parts[1:]):
            result.diagnose("your probe rejects correct modules too: compare with a tolerance (torch.allclose "
                            "with atol around 1e-5), and compare the permuted output with the output permuted "
                            "the same way.")
        elif result.parts[0].passed and not all(p.passed for p in result.parts[1:]):
            result.diagnose("your probe accepts a broken module: the shape is right in both cases, so test a "
                            "property, e.g. permuting the tokens of x must permute the output rows the same way.")
    return finish(result, quiet)


# --------------------------------------------------------------------------- incident 3


class _EncoderRef(M._Encoder):
    """The repaired stack: pre-norm blocks and a final LayerNorm."""


def check_stable_encoder(cls: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Incident 3: ``StableEncoder(d_model, num_heads, d_ff, num_layers)``: pre-norm blocks in
    ``blocks`` and a final LayerNorm ``norm`` (max 2)."""
    step = "StableEncoder"
    seed = draw_seed(step, seed, hidden)
    result = CheckResult(step, ENCODER_POINTS, seed=seed, hidden=hidden, fn_id=id(cls))
    gen = torch.Generator().manual_seed(seed)
    layers = [3, 2, 4, 3, 2, 4]
    with guarded():
        _compare_cases(step, cls, result, gen, hidden,
                       make_ref=lambda s: _EncoderRef(s[2] * s[3], s[2], s[4], layers[s[0] % len(layers)]),
                       ctor=lambda s: (s[2] * s[3], s[2], s[4], layers[s[0] % len(layers)]),
                       call_args=lambda s, x: (x,), mistakes=M.ENCODER_MISTAKES, advice=_ENCODER_ADVICE,
                       public_label="public case: B=1, T=3, D=4, H=2, F=6, L=3")
    return finish(result, quiet)


_ENCODER_ADVICE = {
    "fix-encoder-post-norm": "your blocks are still post-norm, LN(x + F(x)): the norm sits on the residual "
    "path, so in a deep stack the gradient reaching the first layers passes through every norm. Use "
    "norm_placement='pre'.",
    "fix-encoder-no-final-norm": "the blocks are pre-norm now, but the stack has no final LayerNorm: the "
    "residual stream grows with depth and reaches the output unnormalised. Apply self.norm after the "
    "last block.",
}


# --------------------------------------------------------------------------- incident 4


def check_fast_causal_attention(cls: Callable, *, hidden: bool = False, seed: Optional[int] = None,
                                quiet: bool = False) -> float:
    """Incident 4: ``FastCausalAttention(d_model, num_heads)``: the same outputs as the slow version,
    at least 5 times faster than it in this run (max 3)."""
    step = "FastCausalAttention"
    seed = draw_seed(step, seed, hidden)
    result = CheckResult(step, SPEED_POINTS, seed=seed, hidden=hidden, fn_id=id(cls))
    gen = torch.Generator().manual_seed(seed)
    with guarded():
        ok = _compare_cases(step, cls, result, gen, hidden,
                            make_ref=lambda s: _CausalRef(s[2] * s[3], s[2]),
                            ctor=lambda s: (s[2] * s[3], s[2]),
                            call_args=lambda s, x: (x,), mistakes=M.SPEED_MISTAKES, advice=_SPEED_ADVICE)
        if not ok:
            return finish(result, quiet)
        outputs_ok = result.passed
        ratio, detail = _speed_ratio(cls) if outputs_ok else (None, "not timed: the outputs must equal the "
                                                               "slow version's first (a fix keeps the outputs)")
        result.add(f"at least {SPEED_RATIO:g}x faster than the slow version (medians of 5 timings each, "
                   f"B, T, D, H = {SPEED_SIZE})", 1.0, ratio is not None and ratio >= SPEED_RATIO, detail)
        ref = randomise(_CausalRef(6, 2).double(), gen)
        _forbid(result, step, build(cls, (6, 2), {}, ref), (tokens(gen, 2, 4, 6),),
                ("MultiHeadAttention", "FusedMultiHeadAttention", "attend_heads"), (nn.MultiheadAttention,))
    return finish(result, quiet)


def timed_median(module: nn.Module, x: Tensor, repeats: int = 5, sample_s: float = 0.025) -> float:
    """Seconds per call: the median of ``repeats`` samples, each averaging as many calls as fit in
    about ``sample_s`` seconds (so one preemption by a busy machine cannot dominate a sample)."""
    start = time.perf_counter()
    module(x)  # warm-up, and a first estimate
    once = max(time.perf_counter() - start, 1e-6)
    calls = max(1, min(1000, int(sample_s / once)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            module(x)
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def _speed_ratio(cls) -> Tuple[Optional[float], str]:
    b, t, d, h = SPEED_SIZE
    gen = torch.Generator().manual_seed(0)
    slow = randomise(M.SlowCausalAttention(d, h), gen).eval()
    fast = attempt(cls, d, h)
    if isinstance(fast, LearnerError):
        return None, f"FastCausalAttention({d}, {h}) {fast}"
    if copy_parameters(fast, slow) is not None or not isinstance(fast, nn.Module):
        return None, "could not give your module the slow version's weights"
    fast.eval()
    x = randn(gen, b, t, d)
    # One thread for both: on a busy machine, threads waiting for each other swamp small kernels.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(2):  # measured again once if the first try falls short (a busy moment)
            fast_s = call(timed_median, fast, x)
            slow_s = timed_median(slow, x)
            ratio = slow_s / max(fast_s, 1e-9)
            if ratio >= SPEED_RATIO:
                break
    except LearnerError as e:
        return None, f"timing your module: {e}"
    finally:
        torch.set_num_threads(threads)
    return ratio, f"slow {slow_s * 1e3:.2f} ms, yours {fast_s * 1e3:.2f} ms: {ratio:.1f}x faster"


_SPEED_ADVICE = {
    "fix-speed-not-causal": "your module is fast but no longer causal: the mask went out with the loop. "
    "Build it in one vectorised call on the input's device, e.g. "
    "torch.ones(T, T, dtype=torch.bool, device=x.device).tril().",
    "fix-speed-wrong-triangle": "your mask is the upper triangle (triu): each query then sees the future, "
    "not the past. The causal mask keeps keys j <= i: .tril().",
}
