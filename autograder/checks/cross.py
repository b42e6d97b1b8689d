"""Step check for cross-attention (notebook 03): queries from the decoder's stream ``x`` (B, T, D),
keys and values from the encoder's memory (B, S, D), with T ≠ S in every case so that a sequence
taken for the other shows (as a wrong shape or wrong values). The memory has the decoder's width D.

Besides comparing with ``mhsa_lib.CrossAttention`` in float64, the check probes what holds for any
correct cross-attention: the output does not change when the memory's positions are permuted (a
set of keys and values, no order), it permutes with the decoder's positions, and nothing in a
padded memory position reaches it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

import mhsa_lib

from ..frame import (
    CheckResult,
    LearnerError,
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
from ..frame.modules import build, load_reference, materialise
from ..frame.registry import step
from ..frame.variants import Axis, generate
from ..mistakes import cross as M
from . import variants_modules as V
from .multihead import MHA_LIBRARY, MHA_TORCH

CROSS_POINTS = 5.0
#: "Yours vs expected": the weights (H=2 heads of T=4 queries over S=6 memory positions, the last two
#: padding) of the learner's module built with D=8, H=2 and given the reference's parameters by name.
CROSS_PICTURE = (
    'ref_m = mhsa_lib.CrossAttention(8, 2)\n'
    'with torch.no_grad():\n'
    '    for p in ref_m.parameters():\n'
    '        p.copy_(torch.randn(p.shape, generator=g) * 0.6)\n'
    'x = torch.randn(1, 4, 8, generator=g); memory = torch.randn(1, 6, 8, generator=g)\n'
    'mask = mhsa_lib.padding_mask(torch.tensor([4]), 6)[:, None]\n'
    'with torch.no_grad():\n'
    '    ref = ref_m(x, memory, mask, return_weights=True)[1][0].flatten(0, 1)\n'
    '    m = fn(8, 2)\n'
    '    mine = call(lambda: dict(m.named_parameters()))\n'
    '    for name, p in ref_m.named_parameters():\n'
    '        mine[name].copy_(p)\n'
    '    yours = call(m, x.clone(), memory.clone(), mask, return_weights=True)[1][0].flatten(0, 1)\n'
    "axes = ('(head, query)', 'memory position')"
)
CROSS_LIBRARY = MHA_LIBRARY + ("CrossAttention", "DecoderBlock")


def _reference(d: int, h: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # nn.Linear draws from the global generator
    ref = mhsa_lib.CrossAttention(d, h).double().eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(2.0)  # weights large enough that a wrong scale or a wrong source shows
    return ref


def _build(cls: Callable, d: int, h: int, src: nn.Module):
    return build(cls, (d, h), {}, src, example=torch.zeros(1, 2, d, dtype=torch.float64))


def _forward(module, x, memory, mask=None, return_weights=False):
    if return_weights:
        return attempt(module, x.clone(), memory.clone(), mask, return_weights=True)
    if mask is not None:
        return attempt(module, x.clone(), memory.clone(), mask)
    return attempt(module, x.clone(), memory.clone())


def _expected(case) -> Tensor:
    d, h, ref, x, memory, mask = case
    with torch.no_grad():
        return ref(x, memory, mask)


def _lengths(gen: torch.Generator, b: int, s: int) -> Tensor:
    """Real lengths of the b memories: at least 1, one of them s - 1 so that padding always shows."""
    lengths = torch.randint(1, s + 1, (b,), generator=gen)
    lengths[0] = s - 1
    return lengths


def _sizes(gen: torch.Generator) -> Tuple[int, int, int, int, int]:
    """B, T, S, H, Dh, all different (a mix-up of any two axes shows)."""
    b, t, s, h, dh = distinct_sizes(gen, 5, 2, 8)
    return b, t, s, h, dh


@step("CrossAttention", forbidden=(MHA_TORCH + ("MultiheadAttention",), CROSS_LIBRARY),
      points=CROSS_POINTS, notebook="03_concat_and_output_projection", home="cross",
      kind="module", reference=mhsa_lib.CrossAttention, picture=CROSS_PICTURE,
      isolate=("split_heads", "merge_heads", "scaled_dot_product_attention", "softmax"))
def check_cross_attention(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``CrossAttention`` class, ``forward(x, memory, memory_mask=None,
    return_weights=False)`` (pass the class itself) (max 5)."""
    module = attempt(cls, 12, 3)
    if isinstance(module, LearnerError):
        result.zero_reason = f"CrossAttention(12, 3) {module}"
        return
    try:
        problems = observe("structure", _structure_problems, cls, module)
    except LearnerError as e:
        problems = [f"looking at CrossAttention(12, 3) {e}"]
    result.add("structure: q_proj, k_proj, v_proj, out_proj are nn.Linear(D, D); d_model not divisible "
               "by num_heads raises ValueError", 0.5, not problems, "; ".join(problems))

    # Public case: D=4, H=2, B=1, T=3, S=5.
    ref = _reference(4, 2, 2024)
    pub = torch.Generator().manual_seed(2024)
    x, memory = randn(pub, 1, 3, 4, dtype=torch.float64), randn(pub, 1, 5, 4, dtype=torch.float64)
    mod = _build(cls, 4, 2, ref)
    title = "public case: D=4, H=2, B=1, T=3 decoder positions, S=5 memory positions, no mask"
    if isinstance(mod, str):
        result.add(title, 1.0, False, mod)
        return
    y = _forward(mod, x, memory)
    if isinstance(y, LearnerError) and y.kind == "not_implemented":
        result.zero_reason = f"CrossAttention.forward {y}"
        return
    seen: List[Tuple[Any, Any]] = [((4, 2, ref, x, memory, None), y)]
    c = compare(y, _expected(seen[0][0]), what="output")
    result.add(title, 1.0, c.ok, c.detail)

    fails, mask_fails, weight_fails = [], [], []
    for _ in range(5 if hidden else 3):
        b, t, s, h, dh = _sizes(gen)
        d = h * dh
        ref = _reference(d, h, int(torch.randint(0, 2**30, (1,), generator=gen)))
        mod = _build(cls, d, h, ref)
        x, memory = randn(gen, b, t, d, dtype=torch.float64), randn(gen, b, s, d, dtype=torch.float64)
        if isinstance(mod, str):
            fails.append(f"D={d}, H={h}: {mod}")
            continue
        where = f"B={b}, T={t}, S={s}, D={d}, H={h}"
        case = (d, h, ref, x, memory, None)
        y = _forward(mod, x, memory)
        seen.append((case, y))
        c = compare(y, _expected(case), what="output")
        if not c.ok:
            fails.append(f"{where}: {c.detail}")
        mask = mhsa_lib.padding_mask(_lengths(gen, b, s), s)[:, None]  # (B, 1, S) -> (B, 1, 1, S)
        case = (d, h, ref, x, memory, mask)
        y = _forward(mod, x, memory, mask)
        seen.append((case, y))
        c = compare(y, _expected(case), what="output")
        if not c.ok:
            mask_fails.append(f"{where}: {c.detail}")
        got = _forward(mod, x, memory, mask, return_weights=True)
        with torch.no_grad():
            exp_out, exp_w = ref(x, memory, mask, return_weights=True)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            weight_fails.append("forward(x, memory, memory_mask, return_weights=True) "
                                + (f"{got}" if isinstance(got, LearnerError) else
                                   f"returned {type(got).__name__}, expected (out, weights)"))
            continue
        for what, a, e in (("weights", got[1], exp_w), ("out", got[0], exp_out)):
            c = compare(a, e, what=what)
            if not c.ok:
                weight_fails.append(f"{where}: {c.detail}")
                break
    result.add("random cases without a mask (B, T, S, H, Dh all different, T ≠ S; the memory has the "
               "decoder's width D)", 1.0, not fails,
               describe_failures(fails, 1))
    result.add("padding mask over the memory's positions (B, 1, 1, S)", 1.0, not mask_fails,
               describe_failures(mask_fails, 1))
    result.add("return_weights=True gives (out, weights) with weights (B, H, T, S)", 0.5, not weight_fails,
               describe_failures(weight_fails, 1))

    problems = _probes(cls, gen)
    result.add("probes: permuting the memory's positions changes nothing; permuting the decoder's "
               "positions permutes the output; a real memory position reaches every output, a padded one "
               "none", 1.0,
               not problems, "; ".join(problems))

    if fails or mask_fails or weight_fails or problems or not result.passed:
        _diagnose(result, seen, lambda: _same_length_output(cls))
    mod = _build(cls, 6, 2, _reference(6, 2, 1))
    if not isinstance(mod, str):
        x, memory = randn(gen, 2, 3, 6, dtype=torch.float64), randn(gen, 2, 4, 6, dtype=torch.float64)
        mask = mhsa_lib.padding_mask(torch.tensor([4, 2]), 4)[:, None]
        shortcuts = find_shortcuts(mod, (x, memory, mask), MHA_TORCH + ("MultiheadAttention",),
                                   forbid_library=CROSS_LIBRARY)
        if shortcuts:
            result.zero_reason = (f"your CrossAttention calls {', '.join(shortcuts)}: build the module "
                                  "yourself (mhsa_lib's scaled_dot_product_attention and split_heads are fine)")


def _structure_problems(cls, module) -> List[str]:
    """What is wrong with the layout of ``module`` = cls(12, 3) (run in the probe)."""
    problems = []
    materialise(module, torch.zeros(1, 2, 12))
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        layer = getattr(module, name, None)
        if not isinstance(layer, nn.Linear):
            problems.append(f"{name} is {type(layer).__name__}, expected nn.Linear(12, 12)")
        elif (layer.in_features, layer.out_features) != (12, 12):
            problems.append(f"{name} is nn.Linear({layer.in_features}, {layer.out_features}), "
                            "expected nn.Linear(12, 12)")
    bad = attempt(cls, 10, 3)
    if not (isinstance(bad, LearnerError) and "ValueError" in str(bad)):
        problems.append("CrossAttention(10, 3) should raise ValueError (10 is not divisible by 3)")
    return problems


def _probes(cls, gen: torch.Generator) -> List[str]:
    b, t, s, h, dh = 2, 4, 6, 3, 4
    d = h * dh
    mod = _build(cls, d, h, _reference(d, h, 11))
    if isinstance(mod, str):
        return [mod]
    x, memory = randn(gen, b, t, d, dtype=torch.float64), randn(gen, b, s, d, dtype=torch.float64)
    y = _forward(mod, x, memory)
    if not isinstance(y, Tensor) or tuple(y.shape) != (b, t, d):
        got = tuple(y.shape) if isinstance(y, Tensor) else y
        return [f"expected output (B, T, D) = {(b, t, d)} to probe, got {got}"]
    problems = []
    perm = torch.randperm(s, generator=gen)
    y_mem = _forward(mod, x, memory[:, perm])
    if not isinstance(y_mem, Tensor):
        problems.append(f"forward(x, memory) with the memory's positions permuted failed: {y_mem}")
    elif not close(y_mem, y, atol=1e-8):
        problems.append("permuting the memory's positions changes the output (the memory is a set of keys and "
                        "values: no position of it comes first)")
    perm = torch.randperm(t, generator=gen)
    y_dec = _forward(mod, x[:, perm], memory)
    if not isinstance(y_dec, Tensor):
        problems.append(f"forward(x, memory) with the decoder's positions permuted failed: {y_dec}")
    elif not close(y_dec, y[:, perm], atol=1e-8):
        problems.append("permuting the decoder's positions does not just permute the output")
    real = memory.clone()
    real[:, 0] += 3.0  # a real memory position: every decoder position reads it
    y_real = _forward(mod, x, real)
    if isinstance(y_real, Tensor) and y_real.shape == y.shape:
        unchanged = (y_real - y).abs().amax(dim=-1) <= 1e-8  # (B, T): positions the change did not reach
        if bool(unchanged.all()):
            problems.append("changing a real memory position changes no output: the output does not read the memory")
        elif bool(unchanged.any()):
            problems.append("changing a real memory position leaves some decoder positions' outputs unchanged: "
                            "every decoder position may read every memory position (no causal mask here)")
    mask = mhsa_lib.padding_mask(torch.tensor([s - 2, s]), s)[:, None]  # (B, 1, 1, S)
    changed = memory.clone()
    changed[0, s - 2:] += 3.0  # padding of sequence 0
    a, b_ = _forward(mod, x, memory, mask), _forward(mod, x, changed, mask)
    if not (isinstance(a, Tensor) and isinstance(b_, Tensor) and a.shape == b_.shape):
        problems.append("forward(x, memory, memory_mask) failed")
    elif not close(a, b_, atol=1e-8):
        problems.append("changing the memory's padded positions changes the output (the padding mask does not "
                        "hide them)")
    return problems


# --------------------------------------------------------------------------- diagnosis

#: The structural choices of cross-attention, each wrong one in the learner's terms.
AXES = (
    Axis("queries", "x", {"memory": "your queries come from memory instead of x"}),
    Axis("keys", "memory", {"x": "your keys and values come from x, not memory: that is self-attention"}),
    Axis("scale", "dh", {"d": "your scores are scaled by 1/√D instead of 1/√Dh",
                         "s": "your scores are scaled by 1/√S (the memory's length) instead of 1/√Dh",
                         "none": "your scores are not scaled (they need 1/√Dh)"}),
    Axis("mask_use", "as given", {"ignored": "memory_mask is never applied",
                                  "causal": "a causal mask is laid over the memory (the source is known in full: "
                                            "only padding is masked)",
                                  "inverted": "memory_mask is read as True = blocked (torch.nn.MultiheadAttention's "
                                              "polarity); the course's masks are True = may attend"}),
)


def variants(empty_rows: str = "zero") -> List:
    """Every variant changing one or two axes, simplest first (a function of one seen case);
    ``empty_rows``: what a query with no allowed memory position gets (see M.cross_attention)."""
    def build_variant(choices: Dict[str, Any]) -> Callable:
        def run(case):
            d, h, ref, x, memory, mask = case
            layers = (ref.q_proj, ref.k_proj, ref.v_proj, ref.out_proj)
            with torch.no_grad():
                return M.cross_attention(x, memory, mask, layers, h, empty_rows=empty_rows, **choices)[0]
        return run
    return list(generate(AXES, build_variant, max_changed=2))


def _case_sizes(case) -> dict:
    d, h, _, x, memory, _ = case
    return {"B": x.shape[0], "T": x.shape[1], "S": memory.shape[1], "D": d, "H": h, "Dh": d // h}


def _same_length_output(cls) -> Optional[Tuple[Any, Tensor]]:
    """(case, output) of the learner's module on one memory as long as x (T = S), where a forward
    that mixes up the two sequences still runs; None if it gives no tensor there either."""
    gen = torch.Generator().manual_seed(7)  # its own: the check's draws stay as they are
    b, t, d, h = 2, 4, 6, 2
    ref = _reference(d, h, 7)
    mod = _build(cls, d, h, ref)
    if isinstance(mod, str):
        return None
    x, memory = randn(gen, b, t, d, dtype=torch.float64), randn(gen, b, t, d, dtype=torch.float64)
    y = _forward(mod, x, memory)
    return ((d, h, ref, x, memory, None), y) if isinstance(y, Tensor) else None


def _diagnose(result: CheckResult, seen, same_length: Optional[Callable] = None) -> None:
    """A shape error in the course's letters; then the hand-written mistakes; then the generated
    variants (each rebuilt from the reference's own parameters, so a judge needs no learner code).
    When no case gave a tensor, ``same_length()`` (the learner's output with T = S) is matched
    against the mistakes instead."""
    masked = [(case, y) for case, y in seen if case[-1] is not None]
    plain = [(case, y) for case, y in seen if case[-1] is None]
    if (masked and all(isinstance(y, LearnerError) for _, y in masked)
            and plain and all(matches(y, _expected(case), atol=1e-8) for case, y in plain)):
        result.diagnose(M.CATALOGUE["cross_mask_on_query_axis"].advice)  # right without the mask only
        return
    for case, y in seen:
        if isinstance(y, LearnerError):
            why = V.explain_shape_error(str(y), _case_sizes(case))
            result.diagnose(f"your forward {y}." if why is None else f"your forward failed on these shapes: {why}.")
            break
    outputs = [(case, y) for case, y in seen if isinstance(y, Tensor)]
    if not outputs and same_length is not None:
        extra = same_length()
        if extra is not None and not matches(extra[1], _expected(extra[0]), atol=1e-8):
            for mistake in M.CROSS_MISTAKES:
                if _explains(lambda case, m=mistake: _mistake_output(m, case), [extra]):
                    result.diagnose(f"On a memory as long as x (T = S), where your forward runs: {mistake.advice}")
                    return
        return
    if not outputs or all(matches(y, _expected(case), atol=1e-8) for case, y in outputs):
        return
    # A query whose memory positions are all masked: NaN in the learner's output says their softmax
    # had no guard; the mistakes and variants are then matched with the same NaN rows.
    empty_rows = "nan" if any(bool(torch.isnan(y).any()) for _, y in outputs if y.is_floating_point()) else "zero"
    for mistake in M.CROSS_MISTAKES:
        if _explains(lambda case, m=mistake: _mistake_output(m, case, empty_rows), outputs):
            result.diagnose(mistake.advice)
            return
    for variant in variants(empty_rows):
        if _explains(variant.fn, outputs):
            result.diagnose(variant.advice + ".")
            return


def _mistake_output(mistake, case, empty_rows: str = "zero") -> Tensor:
    d, h, ref, x, memory, mask = case
    buggy = load_reference(mistake.fn(d, h).double().eval(), ref)
    with torch.no_grad():
        return buggy(x, memory, mask, empty_rows=empty_rows) if mask is not None else buggy(x, memory)


def _explains(produce: Callable, outputs) -> bool:
    for case, y in outputs:
        try:
            if not matches(y, produce(case), atol=1e-8):
                return False
        except Exception:  # a variant that cannot run on this case explains nothing
            return False
    return True
