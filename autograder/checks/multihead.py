"""Step checks for per-head attention (notebook 02) and the MultiHeadAttention module and its
weight loading from ``torch.nn.MultiheadAttention`` (notebook 03).

Besides comparing with ``mhsa_lib`` in float64, these checks probe the properties that hold for
any correct multi-head attention: permutation equivariance without a mask, no future leak with a
causal mask, and heads that are independent of each other.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import Tensor, nn

import mhsa_lib

from ..core import (
    CheckResult,
    LearnerError,
    attempt,
    close,
    compare,
    describe_failures,
    distinct_sizes,
    draw_seed,
    find_shortcuts,
    finish,
    matches,
    randn,
)
from ..mistakes import multihead as M
from .fallback import isolating
from .heads import HARD_CODED, _diagnose
from .modules import build, copy_parameters, run_module_check

HEADS_POINTS = 3.0
MHA_POINTS = 6.0
LOAD_POINTS = 2.0
MHA_LIBRARY = ("MultiHeadAttention", "FusedMultiHeadAttention", "_MultiHeadBase", "attend_heads",
               "load_mha_from_torch", "mha_from_torch")
MHA_TORCH = ("multi_head_attention_forward",)


# --------------------------------------------------------------------------- notebook 02


def _heads_reference(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, num_heads: int, mask) -> Tensor:
    """(B, T, D) and (D, D) weights -> (B, H, T, Dh), in float64."""
    x, w_q, w_k, w_v = (t.double() for t in (x, w_q, w_k, w_v))
    q, k, v = (mhsa_lib.split_heads(x @ w.T, num_heads) for w in (w_q, w_k, w_v))  # (B, H, T, Dh)
    return mhsa_lib.scaled_dot_product_attention(q, k, v, mask)[0]


def _heads_case(gen: torch.Generator, b: int, t: int, h: int, dh: int, dtype=torch.float32):
    d = h * dh
    x = randn(gen, b, t, d, dtype=dtype)
    ws = [randn(gen, d, d, dtype=dtype, scale=1.0 / math.sqrt(d)) * 2.0 for _ in range(3)]
    return x, ws


def _per_head(w: Tensor, h: int) -> List[Tensor]:
    return list(w.chunk(h, dim=0))  # (D, D) -> H x (Dh, D): head h's rows


def _heads_check(fn: Callable, step: str, loop: bool, hidden: bool, seed: Optional[int], quiet: bool) -> float:
    seed = draw_seed(step, seed, hidden)
    result = CheckResult(step, HEADS_POINTS, seed=seed, hidden=hidden, fn_id=id(fn))
    gen = torch.Generator().manual_seed(seed)

    def run(x, ws, h, mask=None):
        args = ((x.clone(), *(_per_head(w, h) for w in ws)) if loop else (x.clone(), *ws, h))
        return attempt(fn, *args, mask) if mask is not None else attempt(fn, *args)

    def mistake_out(mistake, args):
        x, ws, h, mask = args
        if loop:
            return mistake.fn(x.double(), *(_per_head(w.double(), h) for w in ws), mask)
        return mistake.fn(x.double(), *(w.double() for w in ws), h, mask)

    # Public case: B=1, T=3, D=4, H=2, fixed weights.
    pub_gen = torch.Generator().manual_seed(2024)
    x, ws = _heads_case(pub_gen, 1, 3, 2, 2)
    got = run(x, ws, 2)
    if isinstance(got, LearnerError) and got.kind == "not_implemented":
        result.zero_reason = f"{step} {got}"
        return finish(result, quiet)
    c_pub = compare(got, _heads_reference(x, *ws, 2, None), what="output")
    result.add("public case: B=1, T=3, D=4, H=2", 1.0, c_pub.ok, c_pub.detail)
    seen = [((x, ws, 2, None), got)]

    fails = []
    for _ in range(6 if hidden else 3):
        b, t, h, dh = distinct_sizes(gen, 4, 2, 7)
        x, ws = _heads_case(gen, b, t, h, dh)
        y = run(x, ws, h)
        seen.append(((x, ws, h, None), y))
        c = compare(y, _heads_reference(x, *ws, h, None), what="output")
        if not c.ok:
            fails.append(f"B={b}, T={t}, H={h}, Dh={dh}: {c.detail}")
    result.add("random cases without a mask (B, T, H, Dh all different)", 1.0, not fails, describe_failures(fails, 1))

    b, t, h, dh = distinct_sizes(gen, 4, 2, 7)
    x, ws = _heads_case(gen, b, t, h, dh)
    mask = mhsa_lib.causal_mask(t)
    y = run(x, ws, h, mask)
    seen.append(((x, ws, h, mask), y))
    c = compare(y, _heads_reference(x, *ws, h, mask), what="output")
    result.add("with a causal mask (T, T)", 0.5, c.ok, c.detail)

    problems = _heads_probes(run, gen)
    result.add("probes: permutation-equivariant without a mask; changing one head's weights "
               "changes only that head", 0.5, not problems, "; ".join(problems))

    if not result.passed:
        mistakes = M.HEADS_LOOP_MISTAKES if loop else M.HEADS_ATTENTION_MISTAKES
        _diagnose(result, seen, mistakes, _HEADS_ADVICE, mistake_out)
        if c_pub.ok and fails and _returns_public(run, seen[0]):
            result.diagnose(HARD_CODED)
    x, ws = _heads_case(gen, 2, 3, 2, 3)
    shortcut_args = (x, *(_per_head(w, 2) for w in ws)) if loop else (x, *ws, 2)
    shortcuts = find_shortcuts(fn, shortcut_args, MHA_TORCH, forbid_library=MHA_LIBRARY)
    if shortcuts:
        result.zero_reason = f"your {step} calls {', '.join(shortcuts)}: this step asks you to build the heads yourself"
    return finish(result, quiet)


def _returns_public(run: Callable, public) -> bool:
    (x, ws, h, _), y = public
    other = run(randn(torch.Generator().manual_seed(7), *x.shape), ws, h)
    return isinstance(other, Tensor) and isinstance(y, Tensor) and close(other, y)


def _heads_probes(run: Callable, gen: torch.Generator) -> List[str]:
    b, t, h, dh = 2, 5, 3, 4
    x, ws = _heads_case(gen, b, t, h, dh)
    y = run(x, ws, h)
    if not isinstance(y, Tensor) or tuple(y.shape) != (b, h, t, dh):
        return [f"expected a (B, H, T, Dh) = {(b, h, t, dh)} tensor to probe, got "
                f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}"]
    problems = []
    perm = torch.randperm(t, generator=gen)
    y_perm = run(x[:, perm], ws, h)
    if not (isinstance(y_perm, Tensor) and close(y_perm, y[:, :, perm], atol=1e-4)):
        problems.append("permuting the positions of x does not just permute the output positions")
    ws2 = [w.clone() for w in ws]
    ws2[0][dh : 2 * dh] += 1.0  # only head 1's query weights change
    y2 = run(x, ws2, h)
    if isinstance(y2, Tensor) and y2.shape == y.shape:
        others = [i for i in range(h) if i != 1]
        if not close(y2[:, others], y[:, others], atol=1e-5):
            problems.append("changing head 1's query weights (rows [Dh, 2·Dh) of W_q) changes other heads' outputs")
    else:
        problems.append("second call failed")
    return problems


def check_attention_heads_loop(fn: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Check ``attention_heads_loop(x, w_q, w_k, w_v, mask=None)`` with lists of per-head (Dh, D) weights (max 3)."""
    return _heads_check(fn, "attention_heads_loop", True, hidden, seed, quiet)


@isolating("split_heads")
def check_attention_heads(fn: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Check ``attention_heads(x, w_q, w_k, w_v, num_heads, mask=None)`` with (D, D) weights (max 3)."""
    return _heads_check(fn, "attention_heads", False, hidden, seed, quiet)


_HEADS_ADVICE = {
    "heads-scale-model-width": "you scale by 1/√D, the model width; each head scales by its own "
    "width: 1/√Dh = 1/√(D / H). (With GPT-2-like small weights this bug hides inside loose "
    "tolerances; it makes every head's softmax too flat.)",
    "loop-scale-model-width": "you scale by 1/√D, the model width; each head scales by its own "
    "width: 1/√Dh, the width of q_h (q_h.shape[-1]).",
    "heads-split-no-transpose": "your split reshapes (B, T, D) straight to (B, H, T, Dh): each "
    "'head' then mixes features of different positions. Reshape to (B, T, H, Dh), then transpose(1, 2).",
    "heads-weights-transposed": "you computed x @ W; weights follow nn.Linear's layout (out, in), "
    "so a projection is x @ W.T (rows of W are output features; head h owns rows [h·Dh, (h+1)·Dh)).",
    "heads-ignores-mask": "the mask is not passed on to the attention: with a causal mask, "
    "queries still see the future.",
    "loop-shared-weights": "every head uses the same weights (head 0's): each head h must use "
    "its own w_q[h], w_k[h], w_v[h].",
    "loop-concatenated": "you return the heads already concatenated, (B, T, H·Dh); this step "
    "returns them stacked, (B, H, T, Dh): torch.stack(outputs, dim=1).",
}


# --------------------------------------------------------------------------- notebook 03: the module


def _reference_mha(d: int, h: int, seed: int, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)  # nn.Linear draws from the global generator; the caller's state is restored
    ref = mhsa_lib.MultiHeadAttention(d, h, bias=bias).double().eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(2.0)  # weights large enough that a wrong scale or layout shows
    return ref


def _build(cls: Callable, d: int, h: int, src: nn.Module):
    """Build the learner's module with ``src``'s weights (float64, eval); or a message."""
    return build(cls, (d, h), {}, src)


def _forward(module, x, mask=None, return_weights=False):
    kwargs = {"return_weights": True} if return_weights else {}
    return attempt(module, x.clone(), mask, **kwargs) if mask is not None or return_weights else attempt(module, x.clone())


@isolating("split_heads", "merge_heads", "scaled_dot_product_attention", "softmax")
def check_multi_head_attention(cls: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Check a learner's ``MultiHeadAttention`` class (pass the class itself) (max 6)."""
    return run_module_check("MultiHeadAttention", MHA_POINTS, cls, _mha_parts, seed, hidden, quiet)


def _mha_parts(cls, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    # Structure: four nn.Linear(D, D), biases on request, ValueError when D % H != 0.
    module = attempt(cls, 12, 3)
    if isinstance(module, LearnerError):
        result.zero_reason = f"MultiHeadAttention(12, 3) {module}"
        return
    problems = _structure_problems(cls, module)
    result.add("structure: q_proj, k_proj, v_proj, out_proj are nn.Linear(D, D); bias=False drops "
               "the biases; d_model not divisible by num_heads raises ValueError", 0.5, not problems,
               "; ".join(problems))

    # Public case: D=4, H=2, B=1, T=3.
    ref = _reference_mha(4, 2, 2024)
    x = randn(torch.Generator().manual_seed(2024), 1, 3, 4, dtype=torch.float64)
    mod = _build(cls, 4, 2, ref)
    if isinstance(mod, str):
        result.add("public case: D=4, H=2, B=1, T=3, no mask", 1.0, False, mod)
        return
    c = compare(_forward(mod, x), ref(x), what="output")
    result.add("public case: D=4, H=2, B=1, T=3, no mask", 1.0, c.ok, c.detail)
    public_ok = c.ok
    seen: List[Tuple[Any, Any]] = []

    fails, mask_fails, weight_fails = [], [], []
    for i in range(6 if hidden else 3):
        b, t, h, dh = distinct_sizes(gen, 4, 2, 7)
        d = h * dh
        ref = _reference_mha(d, h, int(torch.randint(0, 2**30, (1,), generator=gen)))
        mod = _build(cls, d, h, ref)
        x = randn(gen, b, t, d, dtype=torch.float64)
        if isinstance(mod, str):
            fails.append(f"D={d}, H={h}: {mod}")
            continue
        y = _forward(mod, x)
        seen.append(((d, h, ref, x, None), y))
        c = compare(y, ref(x), what="output")
        if not c.ok:
            fails.append(f"B={b}, T={t}, D={d}, H={h}: {c.detail}")
        lengths = torch.randint(1, t + 1, (b,), generator=gen)
        lengths[0] = t - 1
        for name, mask in (("causal (T, T)", mhsa_lib.causal_mask(t)),
                           ("padding (B, 1, 1, T)", mhsa_lib.padding_mask(lengths, t).unsqueeze(1))):
            y = _forward(mod, x, mask)
            seen.append(((d, h, ref, x, mask), y))
            c = compare(y, ref(x, mask), what="output")
            if not c.ok:
                mask_fails.append(f"{name} mask, B={b}, T={t}, D={d}, H={h}: {c.detail}")
        mask = mhsa_lib.causal_mask(t)
        got = _forward(mod, x, mask, return_weights=True)
        exp_out, exp_w = ref(x, mask, return_weights=True)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            weight_fails.append(f"forward(x, mask, return_weights=True) returned {type(got).__name__}: {got}"
                                if isinstance(got, LearnerError) else
                                f"forward(x, mask, return_weights=True) returned {type(got).__name__}, expected (out, weights)")
        else:
            for what, a, e in (("weights", got[1], exp_w), ("out", got[0], exp_out)):
                c = compare(a, e, what=what)
                if not c.ok:
                    weight_fails.append(f"B={b}, T={t}, H={h}: {c.detail}")
                    break
    result.add("random cases without a mask (B, T, H, Dh all different)", 1.0, not fails, describe_failures(fails, 1))
    result.add("masks: causal (T, T) and padding (B, 1, 1, T)", 1.0, not mask_fails, describe_failures(mask_fails, 1))
    result.add("return_weights=True gives (out, weights) with weights (B, H, T, T)", 0.5, not weight_fails,
               describe_failures(weight_fails, 1))

    problems = _mha_probes(cls, gen)
    result.add("probes: permutation-equivariant without a mask; no future leak with a causal mask; "
               "each head reaches the output only through its own columns of W^O", 1.0, not problems,
               "; ".join(problems))

    if fails or mask_fails or weight_fails or problems or not public_ok:
        _diagnose_mha(result, seen)
        if public_ok and fails:
            ref = _reference_mha(4, 2, 2024)
            mod = _build(cls, 4, 2, ref)
            if not isinstance(mod, str):
                x1 = randn(torch.Generator().manual_seed(2024), 1, 3, 4, dtype=torch.float64)
                if close(_forward(mod, randn(gen, 1, 3, 4, dtype=torch.float64)), ref(x1)):
                    result.diagnose(HARD_CODED)
    mod = _build(cls, 6, 2, _reference_mha(6, 2, 1))
    if not isinstance(mod, str):
        x = randn(gen, 2, 4, 6, dtype=torch.float64)
        shortcuts = find_shortcuts(mod, (x, mhsa_lib.causal_mask(4)), MHA_TORCH, forbid_library=MHA_LIBRARY)
        if shortcuts:
            result.zero_reason = (f"your MultiHeadAttention calls {', '.join(shortcuts)}: build the module "
                                  "yourself (mhsa_lib's scaled_dot_product_attention and split_heads are fine)")


def _structure_problems(cls, module) -> List[str]:
    problems = []
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        layer = getattr(module, name, None)
        if not isinstance(layer, nn.Linear):
            problems.append(f"{name} is {type(layer).__name__}, expected nn.Linear(12, 12)")
        elif (layer.in_features, layer.out_features) != (12, 12) or layer.bias is None:
            problems.append(f"{name} is nn.Linear({layer.in_features}, {layer.out_features}, bias={layer.bias is not None}), "
                            "expected nn.Linear(12, 12, bias=True)")
    no_bias = attempt(cls, 12, 3, bias=False)
    if isinstance(no_bias, nn.Module):
        if any(getattr(getattr(no_bias, n, None), "bias", 0) is not None for n in ("q_proj", "k_proj", "v_proj", "out_proj")):
            problems.append("with bias=False the projections still have biases")
    else:
        problems.append(f"MultiHeadAttention(12, 3, bias=False) {no_bias}")
    bad = attempt(cls, 10, 3)
    if not (isinstance(bad, LearnerError) and "ValueError" in str(bad)):
        problems.append("MultiHeadAttention(10, 3) should raise ValueError (10 is not divisible by 3)")
    return problems


def _mha_probes(cls, gen: torch.Generator) -> List[str]:
    b, t, h, dh = 2, 6, 3, 4
    d = h * dh
    ref = _reference_mha(d, h, 11)
    mod = _build(cls, d, h, ref)
    if isinstance(mod, str):
        return [mod]
    x = randn(gen, b, t, d, dtype=torch.float64)
    y = _forward(mod, x)
    if not isinstance(y, Tensor) or tuple(y.shape) != (b, t, d):
        return [f"expected output (B, T, D) = {(b, t, d)} to probe"]
    problems = []
    perm = torch.randperm(t, generator=gen)
    if not close(_forward(mod, x[:, perm]), y[:, perm], atol=1e-8):
        problems.append("permuting the positions of x does not just permute the output")
    mask = mhsa_lib.causal_mask(t)
    y_causal = _forward(mod, x, mask)
    x_future = x.clone()
    x_future[:, t // 2 :] += 3.0
    y_future = _forward(mod, x_future, mask)
    if isinstance(y_causal, Tensor) and isinstance(y_future, Tensor) and y_future.shape == y_causal.shape:
        if not close(y_future[:, : t // 2], y_causal[:, : t // 2], atol=1e-8):
            problems.append("with a causal mask, changing future tokens changes earlier outputs (the future leaks)")
    else:
        problems.append("forward(x, mask) failed")
    # Head 1 reaches the output only through columns [Dh, 2·Dh) of W^O: zero them, and head 1's
    # value weights must stop mattering.
    with torch.no_grad():
        mod.out_proj.weight[:, dh : 2 * dh] = 0
        y_a = _forward(mod, x)
        mod.v_proj.weight[dh : 2 * dh] += 1.0
        y_b = _forward(mod, x)
    if not (isinstance(y_a, Tensor) and close(y_a, y_b, atol=1e-8)):
        problems.append("head 1 (rows [Dh, 2·Dh) of W_v) still changes the output after its columns of "
                        "W^O are zeroed: heads are mixed up before the output projection")
    return problems


def _diagnose_mha(result: CheckResult, seen) -> None:
    outputs = [(args, y) for args, y in seen if isinstance(y, Tensor)]
    for args, y in seen:
        if isinstance(y, LearnerError):
            result.diagnose(f"your forward {y}.")
            break
    if not outputs:
        return
    for mistake in M.MHA_MISTAKES:
        if mistake.row == 21:
            continue  # same output as a correct module: the forbidden-call probe catches it
        ok = True
        for (d, h, ref, x, mask), y in outputs:
            buggy = mistake.fn(d, h).double()
            copy_parameters(buggy, ref)
            expected = buggy(x, mask) if mask is not None else buggy(x)
            if not matches(y, expected, atol=1e-8):
                ok = False
                break
        if ok:
            result.diagnose(_MHA_ADVICE[mistake.id])
            return


_MHA_ADVICE = {
    "mha-no-out-proj": "the output projection is missing: after merging the heads, apply "
    "self.out_proj (W^O), which mixes what the heads found.",
    "mha-mask-not-passed": "the mask is not passed through to the attention: forward(x, mask) "
    "gives the same output as forward(x).",
    "mha-scale-model-width": "you scale by 1/√D (the model width); each head scales by "
    "1/√Dh = 1/√(D / H), its own width.",
    "mha-split-no-transpose": "your split reshapes (B, T, D) straight to (B, H, T, Dh): reshape to "
    "(B, T, H, Dh) then transpose(1, 2).",
    "mha-merge-no-transpose": "your merge reshapes (B, H, T, Dh) to (B, T, D) without transposing "
    "back: transpose(1, 2) first, then reshape.",
    "mha-calls-torch": "calls torch's multi-head attention.",
}


# --------------------------------------------------------------------------- notebook 03: loading weights


def check_load_mha_from_torch(fn: Callable, *, hidden: bool = False, seed: Optional[int] = None, quiet: bool = False) -> float:
    """Check ``load_mha_from_torch(module, torch_mha)`` (max 2).

    The module is mhsa_lib's MultiHeadAttention, so this step does not depend on the learner's class.
    """
    seed = draw_seed("load_mha_from_torch", seed, hidden)
    result = CheckResult("load_mha_from_torch", LOAD_POINTS, seed=seed, hidden=hidden, fn_id=id(fn))
    gen = torch.Generator().manual_seed(seed)
    rng_state = torch.get_rng_state()
    try:  # not under no_grad: the learner's loading code must work as it would in the notebook
        _load_parts(fn, result, gen, hidden)
    finally:
        torch.set_rng_state(rng_state)
    return finish(result, quiet)


def _torch_pair(d: int, h: int, seed: int):
    torch.manual_seed(seed)
    torch_mha = nn.MultiheadAttention(d, h, batch_first=True).double().eval()
    with torch.no_grad():
        torch_mha.in_proj_bias.normal_()
        torch_mha.out_proj.bias.normal_()
    return torch_mha, mhsa_lib.MultiHeadAttention(d, h).double().eval()


def _load_parts(fn, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    torch_mha, module = _torch_pair(4, 2, 2024)
    got = attempt(fn, module, torch_mha)
    if isinstance(got, LearnerError):
        result.zero_reason = f"load_mha_from_torch(module, torch_mha) {got}"
        return
    loaded = got if isinstance(got, nn.Module) else module
    problems = _param_problems(loaded, torch_mha)
    result.add("public case (D=4, H=2): W_q, W_k, W_v and their biases from in_proj_weight / "
               "in_proj_bias, W^O from out_proj", 1.0, not problems, "; ".join(problems))
    _diagnose_load(result, loaded, torch_mha)

    fails = []
    for _ in range(4 if hidden else 2):
        h, dh, b, t = distinct_sizes(gen, 4, 2, 7)
        d = h * dh
        torch_mha, module = _torch_pair(d, h, int(torch.randint(0, 2**30, (1,), generator=gen)))
        got = attempt(fn, module, torch_mha)
        if isinstance(got, LearnerError):
            fails.append(f"D={d}, H={h}: {got}")
            continue
        loaded = got if isinstance(got, nn.Module) else module
        x = randn(gen, b, t, d, dtype=torch.float64)
        mask = mhsa_lib.causal_mask(t)
        expected, _ = torch_mha(x, x, x, attn_mask=mhsa_lib.interop.mask_to_torch(mask), need_weights=False)
        c = compare(attempt(loaded, x, mask), expected, what="output", atol=1e-8, rtol=1e-7)
        if not c.ok:
            fails.append(f"D={d}, H={h}: {c.detail}")
    result.add("random sizes: the loaded module's output equals nn.MultiheadAttention's (causal mask, "
               "converted to torch's polarity)", 1.0, not fails, describe_failures(fails, 1))


def _param_problems(module, torch_mha) -> List[str]:
    d = torch_mha.embed_dim
    expected = {
        "q_proj": (torch_mha.in_proj_weight[:d], torch_mha.in_proj_bias[:d]),
        "k_proj": (torch_mha.in_proj_weight[d : 2 * d], torch_mha.in_proj_bias[d : 2 * d]),
        "v_proj": (torch_mha.in_proj_weight[2 * d :], torch_mha.in_proj_bias[2 * d :]),
        "out_proj": (torch_mha.out_proj.weight, torch_mha.out_proj.bias),
    }
    problems = []
    for name, (w, b) in expected.items():
        layer = getattr(module, name, None)
        if layer is None:
            problems.append(f"the module has no {name}")
            continue
        if not torch.equal(layer.weight.detach(), w.detach()):
            problems.append(f"{name}.weight is not what it should be")
        if layer.bias is not None and not torch.equal(layer.bias.detach(), b.detach()):
            problems.append(f"{name}.bias is not what it should be")
    return problems


def _diagnose_load(result: CheckResult, module, torch_mha) -> None:
    d = torch_mha.embed_dim
    w = torch_mha.in_proj_weight.detach()
    blocks = {"W_q": w[:d], "W_k": w[d : 2 * d], "W_v": w[2 * d :]}
    for name, should in (("q_proj", "W_q"), ("k_proj", "W_k"), ("v_proj", "W_v")):
        got = getattr(module, name).weight.detach()
        if torch.equal(got, blocks[should]):
            continue
        if torch.equal(got, blocks[should].T):
            result.diagnose(f"{name}.weight is transposed: in_proj_weight already has nn.Linear's (out, in) "
                            "layout, so copy its block as it is, without .T.")
            return
        for other, block in blocks.items():
            if other != should and torch.equal(got, block):
                result.diagnose(f"{name}.weight holds {other}: in_proj_weight stacks [W_q; W_k; W_v] along "
                                f"dim 0, so {should} is rows [{list(blocks).index(should)}·D, "
                                f"{list(blocks).index(should) + 1}·D).")
                return
        result.diagnose(f"{name}.weight was not copied from in_proj_weight (rows [{list(blocks).index(should)}·D, "
                        f"{list(blocks).index(should) + 1}·D)).")
        return
    if not torch.equal(module.out_proj.weight.detach(), torch_mha.out_proj.weight.detach()):
        result.diagnose("out_proj.weight was not copied: nn.MultiheadAttention keeps W^O in its own out_proj.")
        return
    if not torch.equal(module.q_proj.bias.detach(), torch_mha.in_proj_bias[:d].detach()):
        result.diagnose("the biases were not copied: in_proj_bias stacks the three biases like the weights, "
                        "and out_proj has its own bias.")
