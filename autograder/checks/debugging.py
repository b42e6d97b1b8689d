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
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

import mhsa_lib

from ..frame import (
    CheckResult,
    LearnerError,
    attempt,
    call,
    close,
    compare,
    describe_failures,
    distinct_sizes,
    find_shortcuts,
    observe,
    randn,
    run_safely,
)
from ..frame.compare import matches
from ..frame.diagnosis import matching_mistake
from ..frame.mistakes import Mistake
from ..frame.modules import (
    build,
    copy_parameters,
    diagnose_modules,
    guarded,
    load_reference,
    materialise,
    randomise,
    run,
    tokens,
)
from ..frame.registry import step
from ..mistakes import debugging as M
from . import variants_modules as V

NOTEBOOK = "06_debugging_transformer_blocks"
BLOCK_POINTS = 3.0
ATTENTION_POINTS = 2.0
PROBE_POINTS = 2.0
ENCODER_POINTS = 2.0
SPEED_POINTS = 3.0
#: A real fix is 100x+ faster at the timing size; two broken copies differ by up to ~2x on a busy machine.
SPEED_RATIO = 5.0
SPEED_SIZE = (4, 64, 64, 4)  # B, T, D, H: the Python mask loop (T² steps) still dominates the slow version


# --------------------------------------------------------------------------- shared


def _sizes(gen: torch.Generator) -> Tuple[int, int, int, int, int]:
    """b, t, h, dh, f with D = h·dh, all of b, t, h, dh different and F != D."""
    b, t, h, dh = distinct_sizes(gen, 4, 2, 7)
    d = h * dh
    f = d + int(torch.randint(1, 9, (1,), generator=gen))
    return b, t, h, dh, f


def _compare_cases(step: str, cls, result: CheckResult, gen: torch.Generator, hidden: bool, *,
                   make_ref: Callable, ctor: Callable, call_args: Callable, mistakes, advice,
                   public_label: str = "public case: B=1, T=3, D=4, H=2", has_ffn: bool = False,
                   variants: Optional[Tuple[Callable[[], Iterable[Mistake]], Callable[[Mistake, Any], Any]]] = None,
                   ) -> bool:
    """Public case + random cases against the reference; diagnose (the hand-written mistakes
    first, then ``variants``: a function giving the generated variants and one giving a variant's
    output on a case ``(sizes, ref, args)``); False if not implemented. ``has_ffn``: the module
    takes a feed-forward width F (the sizes shown then name it)."""
    seen: List[Tuple[Any, Any, Tensor]] = []

    def case(sizes, g):
        ref = randomise(make_ref(sizes).double().eval(), g)
        x = tokens(g, sizes[0], sizes[1], sizes[2] * sizes[3])
        mod = build(cls, ctor(sizes), {}, ref, example=x)
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
            shown = f"B={b}, T={t}, D={h * dh}, H={h}" + (f", F={f}" if has_ffn else "")
            fails.append(f"{shown}: {y if c is None else c.detail}")
    result.add("random sizes (B, T, H, Dh all different" + (", F != D" if has_ffn else "")
               + "), equal to the reference in float64", 1.0, not fails, describe_failures(fails, 1))

    def mistake_output(mistake, case_):
        sizes, ref, args = case_
        buggy = load_reference(mistake.fn(*ctor(sizes)), ref).double().eval()
        return buggy(*args)

    if not result.passed and not diagnose_modules(result, seen, mistakes, advice, mistake_output) and variants:
        generated, variant_output = variants
        differs = [(case_, y) for case_, y, e in seen if isinstance(y, Tensor) and not matches(y, e, atol=1e-6)]
        m = matching_mistake([(case_, y) for case_, y, _ in seen], generated(), variant_output, atol=1e-6,
                             cheapest_first=True) if differs else None
        if m is not None:
            result.diagnose(m.advice)
    return True


def _forbid(result: CheckResult, step: str, module: Any, args: Sequence[Any], library: Sequence[str],
            torch_modules: Sequence[type] = ()) -> None:
    if isinstance(module, str):
        return
    try:
        found = observe("torch modules", _torch_modules, module, tuple(m.__name__ for m in torch_modules))
    except LearnerError:
        found = []
    found += find_shortcuts(module, args, (), forbid_library=tuple(library))
    if found:
        result.zero_reason = f"your {step} uses {', '.join(found)}: repair the code you were given instead"



# --------------------------------------------------------------------------- the repairs' references
# (what ``fallback`` hands out while a repair does not pass yet; written here, apart from the
# broken versions in autograder.mistakes.debugging)


def _fixed_block_reference(d_model: int, num_heads: int, d_ff: int) -> nn.Module:
    return mhsa_lib.TransformerBlock(d_model, num_heads, d_ff, "pre")


def heads_probe_reference(module: nn.Module) -> bool:
    """Notebook 06's probe: permuting the tokens must permute the output rows the same way."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, module.q_proj.in_features, generator=gen).to(module.q_proj.weight.dtype)
    perm = torch.randperm(7, generator=gen)
    with torch.no_grad():
        return bool(torch.allclose(module(x[:, perm]), module(x)[:, perm], atol=1e-5))


class EncoderReference(nn.Module):
    """The repaired stack of incident 3: pre-norm blocks in ``blocks`` and a final LayerNorm ``norm``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, num_layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(mhsa_lib.TransformerBlock(d_model, num_heads, d_ff, "pre")
                                    for _ in range(num_layers))
        self.norm = mhsa_lib.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class CausalReference(nn.Module):
    """mhsa_lib's MultiHeadAttention called with a causal mask (the reference of incident 4)."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.inner = mhsa_lib.MultiHeadAttention(d_model, num_heads)

    def named_parameters(self, *args, **kwargs):  # the course's names, without "inner."
        return self.inner.named_parameters(*args, **kwargs)

    def forward(self, x):
        return self.inner(x, mhsa_lib.causal_mask(x.shape[1], device=x.device))


def _verdict(fn: Callable, module: nn.Module) -> Any:
    """What the learner's probe ``fn`` says about ``module``, as plain data (any other object as
    its text, which is all the report shows of it)."""
    got = run_safely(fn, (module,))
    return got if got is None or isinstance(got, (bool, int, float, str, Tensor)) else str(got)


def _torch_modules(module: nn.Module, names: Tuple[str, ...]) -> List[str]:
    """The first of torch's own modules named ``names`` inside ``module`` (a shortcut of a repair)."""
    return [f"torch's {type(m).__name__}" for m in module.modules()
            if type(m).__module__.startswith("torch.") and type(m).__name__ in names][:1]


# --------------------------------------------------------------------------- incident 1


@step("FixedBlock", forbidden=(("TransformerEncoderLayer",), ("TransformerBlock",)),
      points=BLOCK_POINTS, notebook=NOTEBOOK, home=None, kind="repair", reference=_fixed_block_reference,
      reference_name="the spec's pre-norm block, mhsa_lib.TransformerBlock(..., 'pre')")
def check_fixed_block(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Incident 1: ``FixedBlock(d_model, num_heads, d_ff)``, a pre-norm block (max 3)."""
    step = "FixedBlock"
    with guarded():
        ok = _compare_cases(step, cls, result, gen, hidden,
                            make_ref=lambda s: mhsa_lib.TransformerBlock(s[2] * s[3], s[2], s[4], "pre"),
                            ctor=lambda s: (s[2] * s[3], s[2], s[4]),
                            call_args=lambda s, x: (x,), mistakes=M.BLOCK_MISTAKES, advice=None,
                            public_label="public case: B=1, T=3, D=4, H=2, F=6", has_ffn=True,
                            variants=(V.block_variants, lambda m, case_: m.fn(
                                ("pre", None, None, None, case_[1], case_[2][0], None))))
        if ok:
            problems = _identity_probe(cls, gen)
            result.add("probe: with attn.out_proj and ffn.fc2 zeroed the block returns its input "
                       "(pre-norm keeps a clean residual path)", 1.0, not problems, "; ".join(problems))
            ref = randomise(mhsa_lib.TransformerBlock(6, 2, 10).double(), gen)
            x = tokens(gen, 2, 4, 6)
            _forbid(result, step, build(cls, (6, 2, 10), {}, ref, example=x), (x,),
                    ("TransformerBlock",), (nn.TransformerEncoderLayer,))
    return


def _identity_probe(cls, gen) -> List[str]:
    ref = randomise(mhsa_lib.TransformerBlock(6, 2, 10).double(), gen)
    x = tokens(gen, 2, 5, 6)
    mod = build(cls, (6, 2, 10), {}, ref, example=x)
    if isinstance(mod, str):
        return [mod]
    try:
        observe("zero the output layers", _zero_output_layers, mod)
    except LearnerError:
        return ["could not zero attn.out_proj and ffn.fc2"]
    y = run(mod, x)
    if not (isinstance(y, Tensor) and close(y, x, atol=1e-10)):
        return ["the output is not x: some norm still sits on the residual path (x is normalised on its way "
                "through), so this is not x + F(LN(x)) in both sub-layers"]
    return []


def _zero_output_layers(mod: nn.Module) -> None:
    for layer in (mod.attn.out_proj, mod.ffn.fc2):
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()




# --------------------------------------------------------------------------- incident 2


@step("FixedAttention", forbidden=(("MultiheadAttention",), ("MultiHeadAttention", "FusedMultiHeadAttention", "attend_heads")),
      points=ATTENTION_POINTS, notebook=NOTEBOOK, home=None, kind="repair",
      reference=mhsa_lib.MultiHeadAttention, reference_name="mhsa_lib.MultiHeadAttention")
def check_fixed_attention(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Incident 2: ``FixedAttention(d_model, num_heads)``, multi-head attention with the merge repaired (max 2)."""
    step = "FixedAttention"
    with guarded():
        ok = _compare_cases(step, cls, result, gen, hidden,
                            make_ref=lambda s: mhsa_lib.MultiHeadAttention(s[2] * s[3], s[2]),
                            ctor=lambda s: (s[2] * s[3], s[2]),
                            call_args=lambda s, x: (x,), mistakes=M.ATTENTION_MISTAKES, advice=None,
                            variants=(V.mha_variants, lambda m, case_: m.fn(
                                (None, case_[0][2], case_[1], case_[2][0], None))))
        if ok:
            ref = randomise(mhsa_lib.MultiHeadAttention(6, 2).double(), gen)
            x = tokens(gen, 2, 4, 6)
            _forbid(result, step, build(cls, (6, 2), {}, ref, example=x), (x,),
                    ("MultiHeadAttention", "FusedMultiHeadAttention", "attend_heads"), (nn.MultiheadAttention,))
    return




#: The modules a probe must tell apart, and how many of each it is asked about (public, hidden).
PROBE_CORRECT = ("correct modules", mhsa_lib.MultiHeadAttention, (3, 5))
PROBE_BROKEN = (("the merge bug of incident 2", M.MHAMergeNoTranspose, (3, 4)),
                ("heads split without the transpose", M.MHASplitNoTranspose, (3, 4)))


def _as_verdict(got: Any) -> Optional[bool]:
    """A probe's answer as True / False, or None when it is not one (a tensor of several values,
    a string, an error ...)."""
    if isinstance(got, bool):
        return got
    if isinstance(got, Tensor) and got.numel() == 1 and got.dtype == torch.bool:
        return bool(got.item())
    return None


@step("heads_look_right", points=PROBE_POINTS, notebook=NOTEBOOK, home=None, kind="repair",
      reference=heads_probe_reference, reference_name="a reference permutation probe")
def check_head_probe(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Incident 2: ``heads_look_right(module) -> bool``, True for a correct attention module,
    False for one whose heads are split or merged without the transpose (max 2).

    The probe is scored as a test that separates: each broken family earns its share only when
    the probe says False for every module of that family *and* True for every correct module, and
    it is asked twice about every module. A constant answer (always True, always False), the
    inverted answer, or one that changes between two calls on the same module earns nothing."""
    step = "heads_look_right"
    families = ((PROBE_CORRECT[0], PROBE_CORRECT[1], PROBE_CORRECT[2], True),) + tuple(
        (label, make, counts, False) for label, make, counts in PROBE_BROKEN)
    wrong: dict = {}
    unsteady: List[str] = []
    with guarded():
        for label, make, counts, expected in families:
            wrong[label] = []
            for _ in range(counts[1] if hidden else counts[0]):
                _, _, h, dh, _ = _sizes(gen)
                torch.manual_seed(int(torch.randint(0, 2**30, (1,), generator=gen)))
                module = make(h * dh, h).eval()
                answers = []
                for again in ("", " again"):
                    try:
                        got = observe("heads_look_right" + again, _verdict, fn, module)
                    except LearnerError as e:
                        got = e
                    if isinstance(got, LearnerError) and got.kind == "not_implemented":
                        result.zero_reason = f"{step} {got}"
                        return
                    answers.append(got)
                first, second = (_as_verdict(a) for a in answers)
                where = f"D={h * dh}, H={h}"
                if first is not None and second is not None and first != second:
                    unsteady.append(f"{where}: {answers[0]} then {answers[1]}")
                if first != expected or second != expected:
                    bad = next(a for a, v in zip(answers, (first, second)) if v != expected)
                    wrong[label].append(f"{where}: {bad}" if isinstance(bad, LearnerError) else f"{where}: returned {bad}")
    if unsteady:
        result.zero_reason = (
            "your probe answered differently when asked twice about the same module ("
            + describe_failures(unsteady, 1)
            + "): a test must give the same verdict every time; fix its random input with a seeded "
            "torch.Generator, or compare with a tolerance.")
        return
    correct_label = PROBE_CORRECT[0]
    rejects_correct = wrong[correct_label]
    for label, _, _ in PROBE_BROKEN:
        missed = wrong[label]
        problems = ([f"says False or no verdict for {correct_label}: " + describe_failures(rejects_correct, 1)]
                    if rejects_correct else [])
        problems += [f"says True or no verdict for {label}: " + describe_failures(missed, 1)] if missed else []
        result.add(f"tells {label} from {correct_label} (True for every correct module, False for every "
                   "broken one)", 1.0, not problems, "; ".join(problems))
    asked_correct = PROBE_CORRECT[2][1] if hidden else PROBE_CORRECT[2][0]
    if rejects_correct and len(rejects_correct) < asked_correct:
        result.diagnose("your probe rejects correct modules too: compare with a tolerance (torch.allclose "
                        "with atol around 1e-5), and compare the permuted output with the output permuted "
                        "the same way.")
    elif rejects_correct:
        result.diagnose("your probe does not separate correct modules from broken ones: it says False (or gives no "
                        "True/False) for correct modules. If it compares two outputs, float rounding makes exact "
                        "equality fail: compare with a tolerance (torch.allclose, atol around 1e-5); and test a "
                        "property every correct module has, e.g. permuting the tokens of x permutes the output "
                        "rows the same way.")
    elif not all(not wrong[label] for label, _, _ in PROBE_BROKEN):
        result.diagnose("your probe accepts a broken module: the shape is right in both cases, so test a "
                        "property, e.g. permuting the tokens of x must permute the output rows the same way.")


# --------------------------------------------------------------------------- incident 3


@step("StableEncoder", points=ENCODER_POINTS, notebook=NOTEBOOK, home=None, kind="repair", reference=EncoderReference,
      reference_name="a reference stack of pre-norm mhsa_lib.TransformerBlocks with a final LayerNorm")
def check_stable_encoder(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Incident 3: ``StableEncoder(d_model, num_heads, d_ff, num_layers)``: pre-norm blocks in
    ``blocks`` and a final LayerNorm ``norm`` (max 2)."""
    step = "StableEncoder"
    layers = [3, 2, 4, 3, 2, 4]
    with guarded():
        _compare_cases(step, cls, result, gen, hidden,
                       make_ref=lambda s: EncoderReference(s[2] * s[3], s[2], s[4], layers[s[0] % len(layers)]),
                       ctor=lambda s: (s[2] * s[3], s[2], s[4], layers[s[0] % len(layers)]),
                       call_args=lambda s, x: (x,), mistakes=M.ENCODER_MISTAKES, advice=None, has_ffn=True,
                       variants=(V.encoder_variants, lambda m, case_: m.fn((case_[1], case_[2][0]))),
                       public_label="public case: B=1, T=3, D=4, H=2, F=6, L=3")
    return




# --------------------------------------------------------------------------- incident 4


@step("FastCausalAttention", forbidden=(("MultiheadAttention",), ("MultiHeadAttention", "FusedMultiHeadAttention", "attend_heads")),
      points=SPEED_POINTS, notebook=NOTEBOOK, home=None, kind="repair", reference=CausalReference,
      reference_name="mhsa_lib.MultiHeadAttention with a causal mask")
def check_fast_causal_attention(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Incident 4: ``FastCausalAttention(d_model, num_heads)``: the same outputs as the slow version,
    at least 5 times faster than it in this run (max 3)."""
    step = "FastCausalAttention"
    with guarded():
        ok = _compare_cases(step, cls, result, gen, hidden,
                            make_ref=lambda s: CausalReference(s[2] * s[3], s[2]),
                            ctor=lambda s: (s[2] * s[3], s[2]),
                            call_args=lambda s, x: (x,), mistakes=M.SPEED_MISTAKES, advice=None,
                            variants=(V.causal_attention_variants, lambda m, case_: m.fn(
                                (None, case_[0][2], case_[1].inner, case_[2][0]))))
        if not ok:
            return
        outputs_ok = result.passed
        ratio, detail = _observed_speed(cls) if outputs_ok else (None, "not timed: the outputs must equal the "
                                                               "slow version's first (a fix keeps the outputs)")
        result.add(f"at least {SPEED_RATIO:g}x faster than the slow version (medians of 5 timings each, "
                   f"B, T, D, H = {SPEED_SIZE})", 1.0, ratio is not None and ratio >= SPEED_RATIO, detail)
        ref = randomise(CausalReference(6, 2).double(), gen)
        x = tokens(gen, 2, 4, 6)
        _forbid(result, step, build(cls, (6, 2), {}, ref, example=x), (x,),
                ("MultiHeadAttention", "FusedMultiHeadAttention", "attend_heads"), (nn.MultiheadAttention,))
    return


def timed_median(module: nn.Module, x: Tensor, repeats: int = 5, sample_s: float = 0.01) -> float:
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


def _observed_speed(cls) -> Tuple[Optional[float], str]:
    """The speed-up, measured side by side in the learner's process (one observation)."""
    try:
        ratio, detail = observe("speed", _speed_ratio, cls, time_limit=120)
    except LearnerError as e:
        return None, f"timing your module: {e}"
    return (None if ratio is None else float(ratio)), str(detail)


def _speed_ratio(cls) -> Tuple[Optional[float], str]:
    b, t, d, h = SPEED_SIZE
    gen = torch.Generator().manual_seed(0)
    slow = randomise(M.SlowCausalAttention(d, h), gen).eval()
    fast = attempt(cls, d, h)
    if isinstance(fast, LearnerError):
        return None, f"FastCausalAttention({d}, {h}) {fast}"
    x = randn(gen, b, t, d)
    if isinstance(fast, nn.Module):
        try:
            run_safely(materialise, (fast, x))  # lazy layers learn their shapes
        except LearnerError as e:
            return None, f"FastCausalAttention({d}, {h}) {e}"
    if not isinstance(fast, nn.Module) or copy_parameters(fast, slow) is not None:
        return None, "could not give your module the slow version's weights"
    fast.eval()
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


