"""Step checks for per-head attention (notebook 02) and the MultiHeadAttention module
(notebook 03).

Besides comparing with ``mhsa_lib`` in float64, these checks probe the properties that hold for
any correct multi-head attention: permutation equivariance without a mask, no future leak with a
causal mask, and heads that are independent of each other, each using its own slice of the
projections.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Tuple

import torch
from torch import Tensor, nn

import mhsa_lib

from ..frame import (
    CheckResult,
    Comparison,
    LearnerError,
    Opaque,
    attempt,
    close,
    compare,
    describe_failures,
    distinct_sizes,
    find_shortcuts,
    matches,
    observe,
    randn,
)
from ..frame.diagnosis import matching_mistake
from ..frame.modules import build, counterpart, load_reference, materialise
from ..frame.registry import step
from ..mistakes import multihead as M
from . import variants_modules as V
from .heads import HARD_CODED

HEADS_POINTS = 3.0
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
HEADS_LOOP_PICTURE = (
    'x = torch.randn(1, 5, 8, generator=g)\n'
    'w = [[torch.randn(4, 8, generator=g) / 3 for _ in range(2)] for _ in range(3)]\n'
    'yours = fn(x, *w)[0, 0]\n'
    'ref = mhsa_lib.scaled_dot_product_attention(*(x @ wi[0].T for wi in w))[0][0]\n'
    "axes = ('position', 'feature of head 0')"
)
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
HEADS_PICTURE = (
    'x = torch.randn(1, 5, 8, generator=g); w = [torch.randn(8, 8, generator=g) / 3 for _ in range(3)]\n'
    'yours = fn(x, *w, 2)[0, 0]\n'
    'ref = mhsa_lib.attend_heads(*(mhsa_lib.split_heads(x @ wi.T, 2) for wi in w))[0][0, 0]\n'
    "axes = ('position', 'feature of head 0')"
)
MHA_POINTS = 6.0
LOAD_POINTS = 2.0
MHA_LIBRARY = ("MultiHeadAttention", "FusedMultiHeadAttention", "_MultiHeadBase", "attend_heads",
               "attention_heads", "attention_heads_loop",
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


def _heads_parts(fn: Callable, result: CheckResult, gen: torch.Generator, hidden: bool, loop: bool) -> None:
    step = result.step
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
        return
    c_pub = _compare_heads(got, _heads_reference(x, *ws, 2, None), (x, ws, 2, None))
    result.add("public case: B=1, T=3, D=4, H=2", 1.0, c_pub.ok, c_pub.detail)
    seen = [((x, ws, 2, None), got)]

    fails = []
    for _ in range(6 if hidden else 3):
        b, t, h, dh = distinct_sizes(gen, 4, 2, 7)
        x, ws = _heads_case(gen, b, t, h, dh)
        y = run(x, ws, h)
        seen.append(((x, ws, h, None), y))
        c = _compare_heads(y, _heads_reference(x, *ws, h, None), (x, ws, h, None))
        if not c.ok:
            fails.append(f"B={b}, T={t}, H={h}, Dh={dh}: {c.detail}")
    result.add("random cases without a mask (B, T, H, Dh all different)", 1.0, not fails, describe_failures(fails, 1))

    b, t, h, dh = distinct_sizes(gen, 4, 2, 7)
    x, ws = _heads_case(gen, b, t, h, dh)
    mask = mhsa_lib.causal_mask(t)
    y = run(x, ws, h, mask)
    seen.append(((x, ws, h, mask), y))
    c = _compare_heads(y, _heads_reference(x, *ws, h, mask), (x, ws, h, mask))
    result.add("with a causal mask (T, T)", 0.5, c.ok, c.detail)

    problems = _heads_probes(run, gen)
    result.add("probes: permutation-equivariant without a mask; changing one head's weights "
               "changes that head and only that head", 0.5, not problems, "; ".join(problems))

    if not result.passed:
        mistakes = M.HEADS_LOOP_MISTAKES if loop else M.HEADS_ATTENTION_MISTAKES

        def variant_out(variant, args):
            x, ws, h, mask = args
            return variant.fn(x.double(), *(w.double() for w in ws), h, mask)

        V.diagnose_search(result, seen, mistakes, lambda: V.heads_variants(loop), mistake_out, variant_out,
                          sizes_of=_heads_sizes, what=f"your {step}", atol=1e-4)
        if c_pub.ok and fails and _returns_public(run, seen[0]):
            result.diagnose(HARD_CODED)
    x, ws = _heads_case(gen, 2, 3, 2, 3)
    shortcut_args = (x, *(_per_head(w, 2) for w in ws)) if loop else (x, *ws, 2)
    shortcuts = find_shortcuts(fn, shortcut_args, MHA_TORCH, forbid_library=MHA_LIBRARY)
    if shortcuts:
        result.zero_reason = f"your {step} calls {', '.join(shortcuts)}: this step asks you to build the heads yourself"


def _compare_heads(y: Any, expected: Tensor, case) -> Comparison:
    """:func:`compare`, with the learner's error said as itself (and in the course's letters when
    it is a shape error) rather than as a value that is not a tensor."""
    if isinstance(y, LearnerError):
        return Comparison(False, V.with_explanation(y, _heads_sizes(case)))
    return compare(y, expected, what="output")


def _heads_sizes(args) -> dict:
    x, _, h, _ = args
    b, t, d = x.shape
    return {"B": b, "T": t, "D": d, "H": h, "Dh": d // h}


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
        elif close(y2[:, 1], y[:, 1], atol=1e-8):
            problems.append("changing head 1's query weights (rows [Dh, 2·Dh) of W_q) does not change head 1's "
                            "output: head 1 does not use its own rows of W_q")
    else:
        problems.append("second call failed")
    return problems


@step("attention_heads_loop", forbidden=(MHA_TORCH, MHA_LIBRARY),
      points=HEADS_POINTS, notebook="02_multiple_heads", home="multihead",
      reference=mhsa_lib.attention_heads_loop, picture=HEADS_LOOP_PICTURE)
def check_attention_heads_loop(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``attention_heads_loop(x, w_q, w_k, w_v, mask=None)`` with lists of per-head (Dh, D) weights (max 3)."""
    _heads_parts(fn, result, gen, hidden, loop=True)


@step("attention_heads", forbidden=(MHA_TORCH, MHA_LIBRARY),
      points=HEADS_POINTS, notebook="02_multiple_heads", home="multihead",
      reference=mhsa_lib.attention_heads, picture=HEADS_PICTURE, isolate=("split_heads",))
def check_attention_heads(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``attention_heads(x, w_q, w_k, w_v, num_heads, mask=None)`` with (D, D) weights (max 3)."""
    _heads_parts(fn, result, gen, hidden, loop=False)


# --------------------------------------------------------------------------- notebook 03: the module


def _reference_mha(d: int, h: int, seed: int, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)  # nn.Linear draws from the global generator; the caller's state is restored
    ref = mhsa_lib.MultiHeadAttention(d, h, bias=bias).double().eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(2.0)  # weights large enough that a wrong scale or layout shows
    return ref


def _build(cls: Callable, d: int, h: int, src: nn.Module):
    """Build the learner's module with ``src``'s weights (float64, eval); or a message. One forward
    pass on an example input first gives lazy layers (``nn.LazyLinear``) their shapes."""
    return build(cls, (d, h), {}, src, example=torch.zeros(1, 2, d, dtype=torch.float64))


def _forward(module, x, mask=None, return_weights=False):
    kwargs = {"return_weights": True} if return_weights else {}
    return attempt(module, x.clone(), mask, **kwargs) if mask is not None or return_weights else attempt(module, x.clone())


@step("MultiHeadAttention", forbidden=(MHA_TORCH + ("MultiheadAttention",), MHA_LIBRARY),
      points=MHA_POINTS, notebook="03_concat_and_output_projection", home="multihead",
      kind="module", reference=mhsa_lib.MultiHeadAttention,
      isolate=("split_heads", "merge_heads", "scaled_dot_product_attention", "softmax"))
def check_multi_head_attention(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``MultiHeadAttention`` class (pass the class itself) (max 6)."""
    # Structure: four nn.Linear(D, D), biases on request, ValueError when D % H != 0.
    module = attempt(cls, 12, 3)
    if isinstance(module, LearnerError):
        result.zero_reason = f"MultiHeadAttention(12, 3) {module}"
        return
    try:
        problems = observe("structure", _structure_problems, cls, module)
    except LearnerError as e:
        problems = [f"looking at MultiHeadAttention(12, 3) {e}"]
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
    seen_weights: List[Tuple[Any, Any]] = []

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
                                f"forward(x, mask, return_weights=True) returned {_type_name(got)}, "
                                "expected (out, weights)")
        else:
            if isinstance(got[1], Tensor):
                seen_weights.append(((d, h, ref, x, mask, "weights"), got[1]))
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
               "each head uses its own rows of W_q, W_k, W_v and reaches the output only through its own "
               "columns of W^O", 1.0, not problems, "; ".join(problems))

    if fails or mask_fails or weight_fails or problems or not public_ok:
        _diagnose_mha(result, seen, seen_weights, weight_fails)
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


def _type_name(x: Any) -> str:
    """The type of a value the learner's forward returned, as the probe saw it."""
    return x._kind if isinstance(x, Opaque) else type(x).__name__


def _structure_problems(cls, module) -> List[str]:
    """What is wrong with the layout of ``module`` = cls(12, 3) (run in the probe: it looks at
    the learner's objects)."""
    problems = []
    materialise(module, torch.zeros(1, 2, 12))  # lazy layers learn their shapes
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        layer = getattr(module, name, None)
        if not isinstance(layer, nn.Linear):
            problems.append(f"{name} is {type(layer).__name__}, expected nn.Linear(12, 12)")
        elif (layer.in_features, layer.out_features) != (12, 12) or layer.bias is None:
            problems.append(f"{name} is nn.Linear({layer.in_features}, {layer.out_features}, "
                            f"bias={layer.bias is not None}), expected nn.Linear(12, 12, bias=True)")
    no_bias = attempt(cls, 12, 3, bias=False)
    if isinstance(no_bias, nn.Module):
        layers = [getattr(no_bias, n, None) for n in ("q_proj", "k_proj", "v_proj", "out_proj")]
        if any(getattr(layer, "bias", None) is not None for layer in layers if isinstance(layer, nn.Module)):
            problems.append("with bias=False the projections still have biases")
    else:
        problems.append(f"MultiHeadAttention(12, 3, bias=False) {no_bias}")
    bad = attempt(cls, 10, 3)
    if not (isinstance(bad, LearnerError) and "ValueError" in str(bad)):
        problems.append("MultiHeadAttention(10, 3) should raise ValueError (10 is not divisible by 3)")
    return problems


#: The projections whose rows [h·Dh, (h+1)·Dh) belong to head h.
_PROJECTIONS = (("q_proj", "W_q"), ("k_proj", "W_k"), ("v_proj", "W_v"))


def _head_outputs(module: nn.Module, x: Tensor, head: int, dh: int, deltas: List[Tensor]) -> dict:
    """Outputs of the learner's ``module`` on ``x`` with its W^O restricted to head ``head``'s
    columns [head·Dh, (head+1)·Dh) ("only") or with those columns zeroed ("without"), each before
    and after adding ``deltas[i]`` to rows [head·Dh, (head+1)·Dh) of q_proj, k_proj, v_proj in turn.
    Run in the probe (it changes the learner's module, and puts its weights back)."""
    cols = slice(head * dh, (head + 1) * dh)
    layout = _reference_mha(x.shape[-1], x.shape[-1] // dh, 0)  # the names and shapes of the weights
    layers = [counterpart(module, layout, f"{name}.weight") for name, _ in _PROJECTIONS]  # (out, in) views
    w_o = counterpart(module, layout, "out_proj.weight")
    if any(w is None for w in layers + [w_o]):
        raise AttributeError("found no weights standing for q_proj, k_proj, v_proj and out_proj")
    saved_o = w_o.detach().clone()
    keep = torch.zeros_like(saved_o)
    keep[:, cols] = 1
    found = {}
    try:
        with torch.no_grad():
            for view, factor in (("only", keep), ("without", 1 - keep)):
                w_o.copy_(saved_o * factor)
                found[view] = attempt(module, x.clone())
                for (name, _), weight, delta in zip(_PROJECTIONS, layers, deltas):
                    saved = weight.detach().clone()
                    weight[cols] += delta.to(weight.dtype)
                    try:
                        found[f"{view} {name}"] = attempt(module, x.clone())
                    finally:
                        weight.copy_(saved)
                    if view == "only" and head != 0:  # head 0's rows changed: does head ``head`` use them?
                        weight[:dh] += delta.to(weight.dtype)
                        try:
                            found[f"only {name} of head 0"] = attempt(module, x.clone())
                        finally:
                            weight.copy_(saved)
    finally:
        with torch.no_grad():
            w_o.copy_(saved_o)
    return found


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
    problems += _head_slice_problems(mod, x, h, dh, gen)
    return problems


def _head_slice_problems(mod: Any, x: Tensor, h: int, dh: int, gen: torch.Generator) -> List[str]:
    """Head 1 owns rows [Dh, 2·Dh) of W_q, W_k, W_v and reaches the output only through columns
    [Dh, 2·Dh) of W^O. With only those columns of W^O kept, changing head 1's rows of each
    projection must change the output (the head uses its own slice, not head 0's); with those
    columns zeroed, it must not (the heads are not mixed up before the output projection)."""
    head = 1
    deltas = [randn(gen, dh, h * dh, dtype=torch.float64) for _ in _PROJECTIONS]
    try:
        found = observe("head slices", _head_outputs, mod, x, head, dh, deltas)
    except LearnerError as e:
        return [f"changing head {head}'s slices of the projections {e}"]
    problems = []
    rows = "rows [Dh, 2·Dh)"
    only, without = found.get("only"), found.get("without")
    unused = [w for name, w in _PROJECTIONS
              if isinstance(only, Tensor) and close(found.get(f"only {name}"), only, atol=1e-8)]
    if not isinstance(only, Tensor):
        problems.append(f"with only head {head}'s columns of W^O kept, forward(x) failed")
    elif unused:
        borrowed = [w for name, w in _PROJECTIONS if isinstance(found.get(f"only {name} of head 0"), Tensor)
                    and not close(found.get(f"only {name} of head 0"), only, atol=1e-8)]
        problems.append(f"changing head {head}'s {rows} of {', '.join(unused)} does not change head {head}'s "
                        f"output (W^O keeps only its columns): head {head} does not use its own slice of "
                        "the projections" + (
                            f"; changing head 0's rows [0, Dh) of {', '.join(borrowed)} does: every head uses "
                            "head 0's weights" if borrowed else ""))
    if not isinstance(without, Tensor):
        problems.append(f"with head {head}'s columns of W^O zeroed, forward(x) failed")
    else:
        leaks = [w for name, w in _PROJECTIONS if not close(found.get(f"without {name}"), without, atol=1e-8)]
        if leaks == ["W_v"]:
            problems.append(f"head {head} ({rows} of W_v) still changes the output after its columns of "
                            "W^O are zeroed: heads are mixed up before the output projection")
        elif leaks:
            problems.append(f"head {head} ({rows} of {', '.join(leaks)}) still changes the output after its "
                            "columns of W^O are zeroed: heads are mixed up before the output projection")
    return problems


def _mha_sizes(case) -> dict:
    d, h, _, x = case[:4]
    return {"B": x.shape[0], "T": x.shape[1], "D": d, "H": h, "Dh": d // h}


def _diagnose_mha(result: CheckResult, seen, seen_weights=(), weight_fails=()) -> None:
    """The hand-written mistakes, then the generated variants (built from the reference's own
    parameters, as copied into the learner's module); a shape error in the course's letters."""
    outputs = [(args, y) for args, y in seen if isinstance(y, Tensor)]
    for args, y in seen:
        if isinstance(y, LearnerError):
            why = V.explain_shape_error(str(y), _mha_sizes(args))
            result.diagnose(f"your forward {y}." if why is None else f"your forward failed on these shapes: {why}.")
            break
    if not outputs:
        return
    for mistake in M.MHA_MISTAKES:
        if not mistake.by_output:
            continue  # same output as a correct module: the forbidden-call probe catches it
        ok = True
        for (d, h, ref, x, mask), y in outputs:
            buggy = load_reference(mistake.fn(d, h).double(), ref)
            expected = buggy(x, mask) if mask is not None else buggy(x)
            if not matches(y, expected, atol=1e-8):
                ok = False
                break
        if ok:
            result.diagnose(mistake.advice)
            return
    differs = [(case, y) for case, y in outputs if not matches(y, _mha_expected(case), atol=1e-8)]
    run_variant = lambda variant, case: variant.fn(case)  # noqa: E731
    if differs:
        m = matching_mistake(outputs, V.mha_variants(), run_variant, atol=1e-8, cheapest_first=True)
        if m is not None:
            result.diagnose(m.advice)
            return
    if weight_fails and seen_weights:
        m = matching_mistake(seen_weights, V.mha_variants(), run_variant, atol=1e-8, cheapest_first=True)
        if m is not None:
            result.diagnose(m.advice)


def _mha_expected(case) -> Tensor:
    d, h, ref, x, mask = case
    return ref(x, mask) if mask is not None else ref(x)
