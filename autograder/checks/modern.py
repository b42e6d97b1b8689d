"""Step checks for notebook 04's modern block and cost accounting: ``RMSNorm``,
``SwiGLUFeedForward`` and ``block_costs``.

The module checks build the learner's class, copy randomised reference parameters into it by
name and compare it with ``mhsa_lib`` in float64. The probes test what holds for any correct
module: an RMSNorm with gain 1 gives each token a mean square of 1 (up to eps) and does not
care about a token's scale, and a SwiGLU FFN is position-wise. ``block_costs`` is compared with
the closed forms on random sizes, and probed for how its counts grow: the attention core four
times with twice the tokens, everything else twice; nothing changes with the number of heads.

Shape letters: B batch, T length, D model width, H heads, F feed-forward width.
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

import mhsa_lib
from mhsa_lib.modern import COST_KEYS

from ..frame import (
    CheckResult,
    LearnerError,
    attempt,
    close,
    compare,
    describe_failures,
    distinct_sizes,
    find_shortcuts,
    observe,
    randn,
)
from ..frame.modules import (
    ModuleCases,
    answers_public_anyway,
    build,
    diagnose_modules,
    example,
    keeps,
    linear_layer_problems,
    mistake_with_reference,
    module_shortcuts,
    not_implemented,
    observe_problems,
    output_to_probe,
    parameter_problems,
    position_wise_problems,
    reference,
    run,
    token_wise_problems,
    tokens,
)
from ..frame.registry import step
from ..mistakes import modern as M
from .heads import HARD_CODED

RMS_NORM_POINTS = 2.0
SWIGLU_POINTS = 2.0
BLOCK_COSTS_POINTS = 2.0

RMS_NORM_TORCH = ("rms_norm", "_fused_rms_norm")
RMS_NORM_LIBRARY = ("RMSNorm", "TransformerBlock")
SWIGLU_LIBRARY = ("SwiGLUFeedForward", "TransformerBlock")




def _compare(y: Any, e: Tensor):
    return compare(y, e, what="output")


# --------------------------------------------------------------------------- RMSNorm

# Public case: B=1, T=3, D=4, with a gain that is not 1.
RMS_PUBLIC_X = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, -1.0], [2.0, -2.0, 5.0, 1.0]]],
                            dtype=torch.float64)
RMS_PUBLIC_WEIGHT = torch.tensor([1.5, 0.5, 1.0, 2.0], dtype=torch.float64)


def _rms_reference(d: int, eps: float, weight: Tensor) -> nn.Module:
    ref = mhsa_lib.RMSNorm(d, eps).double()
    with torch.no_grad():
        ref.weight.copy_(weight)
    return ref


@step("RMSNorm", forbidden=(RMS_NORM_TORCH, RMS_NORM_LIBRARY),
      points=RMS_NORM_POINTS, notebook="04_transformer_block", home="modern", kind="module",
      reference=mhsa_lib.RMSNorm)
def check_rms_norm(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``RMSNorm(d_model, eps=1e-6)`` class (pass the class itself) (max 2)."""
    module = attempt(cls, 7)
    if isinstance(module, LearnerError):
        result.zero_reason = f"RMSNorm(7) {module}"
        return
    problems = observe_problems("structure", _rms_structure, module)
    result.add("structure: a parameter weight (D,) initialised to 1, and no shift", 0.25, not problems,
               "; ".join(problems))

    cases = ModuleCases(cls, _compare)

    def case(x: Tensor, d: int, eps: Optional[float], weight: Tensor):
        used = 1e-6 if eps is None else eps
        return cases.compare((d,) if eps is None else (d, eps), {}, _rms_reference(d, used, weight), x,
                             (x, d, used, weight))

    y, c = case(RMS_PUBLIC_X, 4, None, RMS_PUBLIC_WEIGHT)
    if not_implemented(result, "RMSNorm", y):
        return
    public_ok = c.ok
    result.add("public case: x (B=1, T=3, D=4), weight [1.5, 0.5, 1, 2]", 0.5, public_ok, c.detail)

    fails = []
    for _ in range(6 if hidden else 3):
        b, t, d = distinct_sizes(gen, 3, 2, 9)
        x = tokens(gen, b, t, d)  # each token with its own offset: subtracting the mean shows
        w = 0.5 + torch.rand(d, generator=gen, dtype=torch.float64)
        _, c = case(x, d, None, w)
        if not c.ok:
            fails.append(f"x (B={b}, T={t}, D={d}): {c.detail}")
    result.add("random cases with a random gain (B, T, D all different, tokens not centred)", 0.75, not fails,
               describe_failures(fails, 1))

    eps_fails = []
    b, t, d = distinct_sizes(gen, 3, 2, 9)
    w = 0.5 + torch.rand(d, generator=gen, dtype=torch.float64)
    for label, x, eps in (("RMSNorm(D, eps=0.1)", tokens(gen, b, t, d, spread=False), 0.1),
                          ("tokens of mean square ~1e-6 with the default eps",
                           tokens(gen, b, t, d, spread=False) * 1e-3, None)):
        _, c = case(x, d, eps, w)
        if not c.ok:
            eps_fails.append(f"{label}: {c.detail}")
    result.add("eps is added to the mean square, inside the square root: RMSNorm(D, eps=0.1), and tiny "
               "tokens", 0.25, not eps_fails, describe_failures(eps_fails, 1))

    problems = _rms_probes(cls, gen)
    result.add("probes: with weight 1 each token's features have mean square 1; scaling a token by c > 0 "
               "changes nothing; each token is normalised on its own; any leading shape",
               0.25, not problems, "; ".join(problems))

    if not result.passed:
        def mistake_output(mistake, case):
            x, d, eps, w = case
            buggy = mistake.fn(d, eps).double()
            with torch.no_grad():
                buggy.weight.copy_(w)
            return buggy(x)

        diagnose_modules(result, cases.seen, M.RMS_NORM_MISTAKES, None, mistake_output)
        if public_ok and fails and answers_public_anyway(
                cls, (4,), {}, _rms_reference(4, 1e-6, RMS_PUBLIC_WEIGHT), RMS_PUBLIC_X, gen):
            result.diagnose(HARD_CODED)
    shortcuts = module_shortcuts(cls, (5,), {}, _rms_reference(5, 1e-6, torch.ones(5)), 5, gen, RMS_NORM_TORCH,
                                 RMS_NORM_LIBRARY)
    if shortcuts:
        result.zero_reason = (f"your RMSNorm calls {', '.join(shortcuts)}: this step asks you to "
                              "normalise yourself (mean of squares, sqrt)")


def _rms_structure(module: Any) -> List[str]:
    """What is wrong with the parameters of the learner's ``RMSNorm(7)`` (runs on it: observed)."""
    return parameter_problems(module, "RMSNorm(7)", 7, {"weight": 1.0},
                              {"bias": "RMSNorm has no bias (no shift): a parameter named bias is not part of it"})


def _rms_probes(cls, gen: torch.Generator) -> List[str]:
    d = 6
    ref = _rms_reference(d, 1e-6, torch.ones(d))
    mod = build(cls, (d,), {}, ref, example=example(d))
    if isinstance(mod, str):
        return [mod]
    x = tokens(gen, 3, 5, d)
    y = output_to_probe(mod, x)
    if not isinstance(y, Tensor):
        return y
    problems = []
    ms = y.pow(2).mean(-1)
    if not close(ms, torch.ones_like(ms), atol=1e-4):
        problems.append(f"a token's features have mean square {float(ms.flatten()[0]):.4g}, expected 1")
    scale = 0.5 + 3 * torch.rand(3, 5, 1, generator=gen, dtype=torch.float64)
    problems += keeps(mod, x * scale, lambda out: out, y, "scaling each token by its own c > 0 changes the output: "
                      "RMSNorm divides each token by its own root mean square", atol=1e-5)
    return problems + token_wise_problems(mod, ref, gen, x, y, ((5, d), (2, 3, 4, d)))


# --------------------------------------------------------------------------- SwiGLUFeedForward


def _swiglu_reference(d: int, f: int, gen: torch.Generator) -> nn.Module:
    return reference(mhsa_lib.SwiGLUFeedForward(d, f), gen)


@step("SwiGLUFeedForward", forbidden=((), SWIGLU_LIBRARY),
      points=SWIGLU_POINTS, notebook="04_transformer_block", home="modern", kind="module",
      reference=mhsa_lib.SwiGLUFeedForward)
def check_swiglu_feed_forward(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``SwiGLUFeedForward(d_model, d_ff)`` class (max 2)."""
    module = attempt(cls, 5, 8)
    if isinstance(module, LearnerError):
        result.zero_reason = f"SwiGLUFeedForward(5, 8) {module}"
        return
    problems = observe_problems("structure", _swiglu_structure, module)
    result.add("structure: gate_proj = nn.Linear(D, F), up_proj = nn.Linear(D, F), down_proj = "
               "nn.Linear(F, D), no biases", 0.25, not problems, "; ".join(problems))

    cases = ModuleCases(cls, _compare)

    def case(x: Tensor, d: int, f: int, ref: nn.Module):
        return cases.compare((d, f), {}, ref, x, (x, d, f, ref))

    pub_gen = torch.Generator().manual_seed(2024)
    ref = _swiglu_reference(4, 6, pub_gen)
    x_pub = randn(pub_gen, 1, 3, 4, dtype=torch.float64)
    y, c = case(x_pub, 4, 6, ref)
    if not_implemented(result, "SwiGLUFeedForward", y):
        return
    public_ok = c.ok
    result.add("public case: D=4, F=6, x (B=1, T=3, D=4)", 0.5, public_ok, c.detail)

    fails = []
    for _ in range(6 if hidden else 3):
        b, t, d = distinct_sizes(gen, 3, 2, 9)
        f = d + int(torch.randint(1, 2 * d, (1,), generator=gen))  # F ≠ D
        ref = _swiglu_reference(d, f, gen)
        _, c = case(tokens(gen, b, t, d), d, f, ref)
        if not c.ok:
            fails.append(f"B={b}, T={t}, D={d}, F={f}: {c.detail}")
    result.add("random cases with random weights (B, T, D, F all different)", 0.75, not fails,
               describe_failures(fails, 1))

    problems = _swiglu_probes(cls, gen)
    result.add("probes: position-wise (permuting the positions permutes the output; changing one token "
               "changes only its own output); with up_proj zeroed the output is 0; any leading shape",
               0.5, not problems, "; ".join(problems))

    if not result.passed:
        def mistake_output(mistake, case):
            x, d, f, ref = case
            return mistake_with_reference(mistake, (d, f), ref, x)

        diagnose_modules(result, cases.seen, M.SWIGLU_MISTAKES, None, mistake_output)
        if public_ok and fails and answers_public_anyway(
                cls, (4, 6), {}, _swiglu_reference(4, 6, torch.Generator().manual_seed(2024)), x_pub, gen):
            result.diagnose(HARD_CODED)
    shortcuts = module_shortcuts(cls, (5, 7), {}, _swiglu_reference(5, 7, gen), 5, gen, (), SWIGLU_LIBRARY)
    if shortcuts:
        result.zero_reason = (f"your SwiGLUFeedForward calls {', '.join(shortcuts)}: this step asks you to "
                              "build it from gate_proj, up_proj, SiLU and down_proj")


def _swiglu_structure(module: Any) -> List[str]:
    """What is wrong with the layout of the learner's ``SwiGLUFeedForward(5, 8)`` (observed)."""
    return linear_layer_problems(module, "SwiGLUFeedForward(5, 8)", 5,
                                 {"gate_proj": (5, 8), "up_proj": (5, 8), "down_proj": (8, 5)}, bias=False,
                                 family="SwiGLU's")


def _zero_up(module: nn.Module) -> None:
    with torch.no_grad():
        module.up_proj.weight.zero_()


def _swiglu_probes(cls, gen: torch.Generator) -> List[str]:
    d, f, t = 6, 10, 5
    ref = _swiglu_reference(d, f, gen)
    mod = build(cls, (d, f), {}, ref, example=example(d))
    if isinstance(mod, str):
        return [mod]
    x = tokens(gen, 2, t, d)
    y = output_to_probe(mod, x, "(B, T, D) = ")
    if not isinstance(y, Tensor):
        return y
    problems = position_wise_problems(mod, ref, gen, x, y)
    try:
        observe("zero up_proj", _zero_up, mod)
    except LearnerError:
        problems.append("could not zero up_proj's weight")
        return problems
    y0 = run(mod, x)
    if not (isinstance(y0, Tensor) and close(y0, torch.zeros_like(x), atol=1e-10)):
        problems.append("with up_proj's weight zeroed the output is not 0: the linear branch up_proj(x) must "
                        "multiply the gate, silu(gate_proj(x)) * up_proj(x)")
    return problems


# --------------------------------------------------------------------------- block_costs

# Public case: a GPT-2-small-sized block, D=768, H=12, F=3072, T=1024.
COSTS_PUBLIC_ARGS = (768, 12, 3072, 1024)


def _expected_costs(d: int, h: int, f: int, t: int) -> Dict[str, int]:
    return mhsa_lib.block_costs(d, h, f, t)


def _as_counts(y: Any) -> Optional[Dict[str, float]]:
    """The learner's answer as {key: number}, or None if it is not a dict with every key a number."""
    if not isinstance(y, dict) or any(k not in y for k in COST_KEYS):
        return None
    out = {}
    for k in COST_KEYS:
        v = y[k]
        if isinstance(v, Tensor) and v.numel() == 1:
            v = v.item()
        if not isinstance(v, numbers.Number) or isinstance(v, bool):
            return None
        out[k] = float(v)
    return out


def _show(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _cost_problem(y: Any, expected: Dict[str, int]) -> Optional[str]:
    """What differs between the learner's answer and the expected counts (None if nothing)."""
    if isinstance(y, LearnerError):
        return str(y)
    if not isinstance(y, dict):
        return f"returned a {type(y).__name__}, expected a dict with keys {', '.join(COST_KEYS)}"
    missing = [k for k in COST_KEYS if k not in y]
    if missing:
        return f"the dict lacks {', '.join(missing)}"
    counts = _as_counts(y)
    if counts is None:
        return "every value must be a number (an int)"
    wrong = [f"{k} = {_show(counts[k])}, expected {expected[k]}" for k in COST_KEYS if counts[k] != expected[k]]
    return "; ".join(wrong) or None


@step("block_costs", forbidden=((), ("block_costs",)),
      points=BLOCK_COSTS_POINTS, notebook="04_transformer_block", home="modern",
      reference=mhsa_lib.block_costs)
def check_block_costs(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``block_costs(d_model, num_heads, d_ff, seq_len) -> dict`` with the parameters and forward
    FLOPs (a multiply-add = 2 FLOPs, matrix products only) of the attention projections, the attention
    core and the FFN of one block with biases, for one sequence (max 2)."""
    got = attempt(fn, *COSTS_PUBLIC_ARGS)
    if isinstance(got, LearnerError):
        result.zero_reason = f"block_costs{COSTS_PUBLIC_ARGS} {got}"
        return
    expected = _expected_costs(*COSTS_PUBLIC_ARGS)
    public_problem = _cost_problem(got, expected)
    result.add(f"public case: D=768, H=12, F=3072, T=1024 (GPT-2 small's block): attn_core_flops = "
               f"{expected['attn_core_flops']}", 0.5, public_problem is None, public_problem or "")
    seen: List[Tuple[Tuple, Any]] = [(COSTS_PUBLIC_ARGS, got)]

    fails = []
    for _ in range(8 if hidden else 4):
        h, dh, mult, t = distinct_sizes(gen, 4, 1, 12)
        d = h * dh * 4
        f = d * mult + int(torch.randint(1, 8, (1,), generator=gen))  # F not a multiple of D
        t = t * 16 + 3
        args = (d, h, f, t)
        y = attempt(fn, *args)
        seen.append((args, y))
        problem = _cost_problem(y, _expected_costs(*args))
        if problem:
            fails.append(f"block_costs{args}: {problem}")
    result.add("random cases (D, H, F, T all different)", 0.75, not fails, describe_failures(fails, 1))

    not_int = [(args, y) for args, y in seen if isinstance(y, dict) and any(
        k in y and not (isinstance(y[k], numbers.Integral) and not isinstance(y[k], bool)) for k in COST_KEYS)]
    unusable = [args for args, y in seen if _as_counts(y) is None]
    result.add("every count is a Python int", 0.25, not not_int and not unusable,
               f"block_costs{not_int[0][0]} returned "
               + ", ".join(f"{k}: {type(v).__name__}" for k, v in not_int[0][1].items() if k in COST_KEYS)
               if not_int else f"block_costs{unusable[0]} gave no dict of numbers" if unusable else "")

    problems = _costs_probes(fn)
    result.add("probes: twice the tokens, four times the attention core FLOPs and twice the other FLOPs; "
               "parameters independent of T; nothing depends on the number of heads", 0.5, not problems,
               "; ".join(problems))

    if not result.passed:
        _diagnose_costs(result, seen)
        public = _as_counts(got)
        if public is not None and fails and _as_counts(attempt(fn, 64, 4, 256, 32)) == public:
            result.diagnose(HARD_CODED)
    shortcuts = find_shortcuts(fn, (64, 4, 256, 32), (), forbid_library=("block_costs",))
    if shortcuts:
        result.zero_reason = f"your block_costs calls {', '.join(shortcuts)}: count the products yourself"


def _costs_probes(fn: Any) -> List[str]:
    d, h, f, t = 96, 4, 200, 40
    base, twice, heads = (_as_counts(attempt(fn, *args)) for args in ((d, h, f, t), (d, h, f, 2 * t), (d, 8, f, t)))
    if base is None or twice is None or heads is None:
        return ["expected a dict of numbers with every key to probe"]
    problems = []
    if twice["attn_core_flops"] != 4 * base["attn_core_flops"]:
        problems.append("doubling T does not multiply attn_core_flops by 4: every query meets every key, "
                        "so the core grows with T²")
    for k in ("attn_proj_flops", "ffn_flops"):
        if twice[k] != 2 * base[k]:
            problems.append(f"doubling T does not double {k}: each token goes through the same matrices")
    for k in ("attn_proj_params", "ffn_params"):
        if twice[k] != base[k]:
            problems.append(f"{k} changes with T: the weights are shared by every position")
    if heads != base:
        problems.append("the counts change with the number of heads: H heads of width D/H cost what one head "
                        "of width D costs")
    return problems


def _diagnose_costs(result: CheckResult, seen) -> None:
    for args, y in seen:
        if isinstance(y, LearnerError):
            result.diagnose(f"your function {y}.")
            return
    values = [(args, _as_counts(y)) for args, y in seen]
    if any(v is None for _, v in values):
        return
    for mistake in M.BLOCK_COSTS_MISTAKES:
        if all({k: float(n) for k, n in mistake.fn(*args).items()} == v for args, v in values):
            result.diagnose(mistake.advice)
            return
    # One count at a time: name each mistake that explains the keys it touches.
    for mistake in M.BLOCK_COSTS_MISTAKES:
        touched = [k for k in COST_KEYS if any(mistake.fn(*a)[k] != _expected_costs(*a)[k] for a, _ in values)]
        if touched and all(all(float(mistake.fn(*a)[k]) == v[k] for k in touched) for a, v in values):
            result.diagnose(mistake.advice)
