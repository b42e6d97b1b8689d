"""Step checks for notebook 04: ``LayerNorm``, ``FeedForward`` and ``TransformerBlock``.

Each check takes the learner's class, builds it, copies randomised reference parameters into it
by name (norm gains and shifts too, so a skipped or shared LayerNorm shows), and compares it with
``mhsa_lib`` in float64. The probes test what holds for any correct module: a LayerNorm's output
has mean 0 and variance 1 per token, the FFN is position-wise, a pre-norm block with its
sub-layers' output projections zeroed is the identity, a post-norm block's output is normalised
per position, and no future token leaks through a causal mask. Lazy layers (``nn.LazyLinear``) get
their shapes from one forward pass on an example input before the parameters are copied.

Everything done to the learner's module (building it, running it, looking at its layout, zeroing
its layers) is an observation, so the same body judges a record in another process.

Shape letters: B batch, T length, D model width, H heads, Dh = D/H, F feed-forward width.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import Tensor, nn

import mhsa_lib

from ..frame import (
    CheckResult,
    Comparison,
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
from ..frame.diagnosis import matching_mistake
from ..frame.modules import (
    ModuleCases,
    answers_public_anyway,
    build,
    diagnose_modules,
    example,
    linear_layer_problems,
    load_reference,
    materialise_or_say,
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
from ..mistakes import block as M
from . import variants_modules as V
from .heads import HARD_CODED

LAYER_NORM_POINTS = 3.0
FEED_FORWARD_POINTS = 2.0
BLOCK_POINTS = 5.0

LAYER_NORM_TORCH = ("layer_norm", "native_layer_norm")
LAYER_NORM_LIBRARY = ("LayerNorm", "TransformerBlock")
FEED_FORWARD_LIBRARY = ("FeedForward", "TransformerBlock")
BLOCK_LIBRARY = ("TransformerBlock",)
BLOCK_TORCH = ("_transformer_encoder_layer_fwd",)
BLOCK_TORCH_MODULES = (nn.TransformerEncoderLayer, nn.TransformerEncoder, nn.Transformer)


# --------------------------------------------------------------------------- LayerNorm

# Public case: B=1, T=3, D=4, with a gain and shift that are not 1 and 0.
LN_PUBLIC_X = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, -1.0], [2.0, -2.0, 5.0, 1.0]]],
                           dtype=torch.float64)
LN_PUBLIC_WEIGHT = torch.tensor([1.5, 0.5, 1.0, 2.0], dtype=torch.float64)
LN_PUBLIC_BIAS = torch.tensor([0.1, -0.2, 0.0, 0.3], dtype=torch.float64)


def _ln_reference(d: int, eps: float, weight: Tensor, bias: Tensor) -> nn.Module:
    ref = mhsa_lib.LayerNorm(d, eps).double()
    with torch.no_grad():
        ref.weight.copy_(weight)
        ref.bias.copy_(bias)
    return ref


@step("LayerNorm", forbidden=(LAYER_NORM_TORCH, LAYER_NORM_LIBRARY),
      points=LAYER_NORM_POINTS, notebook="04_transformer_block", home="block", kind="module",
      reference=mhsa_lib.LayerNorm)
def check_layer_norm(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``LayerNorm(d_model, eps=1e-5)`` class (pass the class itself) (max 3)."""
    module = attempt(cls, 7)
    if isinstance(module, LearnerError):
        result.zero_reason = f"LayerNorm(7) {module}"
        return
    problems = observe_problems("structure", _ln_structure, module)
    result.add("structure: parameters weight (D,) initialised to 1 and bias (D,) initialised to 0",
               0.5, not problems, "; ".join(problems))

    cases = ModuleCases(cls, _compare)

    def case(x: Tensor, d: int, eps: Optional[float], weight: Tensor, bias: Tensor):
        used = 1e-5 if eps is None else eps
        return cases.compare((d,) if eps is None else (d, eps), {}, _ln_reference(d, used, weight, bias), x,
                             (x, d, used, weight, bias))

    y, c = case(LN_PUBLIC_X, 4, None, LN_PUBLIC_WEIGHT, LN_PUBLIC_BIAS)
    if not_implemented(result, "LayerNorm", y):
        return
    public_ok = c.ok
    result.add("public case: x (B=1, T=3, D=4), weight [1.5, 0.5, 1, 2], bias [0.1, -0.2, 0, 0.3]",
               1.0, public_ok, c.detail)

    fails = []
    for _ in range(6 if hidden else 3):
        b, t, d = distinct_sizes(gen, 3, 2, 9)
        x = tokens(gen, b, t, d)
        w, bias = 0.5 + torch.rand(d, generator=gen, dtype=torch.float64), randn(gen, d, dtype=torch.float64)
        _, c = case(x, d, None, w, bias)
        if not c.ok:
            fails.append(f"x (B={b}, T={t}, D={d}): {c.detail}")
    result.add("random cases with random weight and bias (B, T, D all different)", 1.0, not fails,
               describe_failures(fails, 1))

    eps_fails = []
    b, t, d = distinct_sizes(gen, 3, 2, 9)
    w, bias = 0.5 + torch.rand(d, generator=gen, dtype=torch.float64), randn(gen, d, dtype=torch.float64)
    for label, x, eps in (("LayerNorm(D, eps=0.1)", tokens(gen, b, t, d, spread=False), 0.1),
                          ("tokens of variance ~1e-4 with the default eps",
                           tokens(gen, b, t, d, spread=False) * 0.01, None)):
        _, c = case(x, d, eps, w, bias)
        if not c.ok:
            eps_fails.append(f"{label}: {c.detail}")
    result.add("eps is added to the variance, inside the square root: LayerNorm(D, eps=0.1), and "
               "tokens of tiny variance", 0.5, not eps_fails, describe_failures(eps_fails, 1))

    problems = _ln_probes(cls, gen)
    result.add("probes: with weight 1 and bias 0 each token's features have mean 0 and variance 1; "
               "each token is normalised on its own; any leading shape ((T, D), (B, H, T, D))",
               0.5, not problems, "; ".join(problems))

    if not result.passed:
        def mistake_output(mistake, case):
            x, d, eps, w, bias = case
            return _ln_reference_into(mistake.fn(d, eps), w, bias)(x)

        _diagnose_all(result, cases.seen, M.LAYER_NORM_MISTAKES, mistake_output, V.layer_norm_variants, _ln_sizes)
        if public_ok and fails and answers_public_anyway(
                cls, (4,), {}, _ln_reference(4, 1e-5, LN_PUBLIC_WEIGHT, LN_PUBLIC_BIAS), LN_PUBLIC_X, gen):
            result.diagnose(HARD_CODED)
    shortcuts = module_shortcuts(cls, (5,), {}, _ln_reference(5, 1e-5, torch.ones(5), torch.zeros(5)), 5, gen,
                                 LAYER_NORM_TORCH, LAYER_NORM_LIBRARY)
    if shortcuts:
        result.zero_reason = (f"your LayerNorm calls {', '.join(shortcuts)}: this step asks you to "
                              "normalise yourself (mean, var, sqrt)")


def _ln_reference_into(module: nn.Module, weight: Tensor, bias: Tensor) -> nn.Module:
    module = module.double()
    with torch.no_grad():
        module.weight.copy_(weight)
        module.bias.copy_(bias)
    return module


def _ln_structure(module: Any) -> List[str]:
    """What is wrong with the parameters of the learner's ``LayerNorm(7)`` (runs on it: observed)."""
    return parameter_problems(module, "LayerNorm(7)", 7, {"weight": 1.0, "bias": 0.0})


def _ln_probes(cls, gen: torch.Generator) -> List[str]:
    d = 6
    ref = _ln_reference(d, 1e-5, torch.ones(d), torch.zeros(d))
    mod = build(cls, (d,), {}, ref, example=example(d))
    if isinstance(mod, str):
        return [mod]
    x = tokens(gen, 3, 5, d)
    y = output_to_probe(mod, x)
    if not isinstance(y, Tensor):
        return y
    problems = []
    mean, var = y.mean(-1), y.var(-1, unbiased=False)
    if not close(mean, torch.zeros_like(mean), atol=1e-6):
        problems.append(f"a token's features have mean {float(mean.flatten()[0]):.3g}, expected 0")
    if not close(var, torch.ones_like(var), atol=1e-3):
        v = float(var.flatten()[0])
        hint = " = (D-1)/D: you divide by D-1 somewhere" if abs(v - (d - 1) / d) < 1e-3 else ""
        problems.append(f"a token's features have (biased) variance {v:.4g}, expected 1{hint}")
    return problems + token_wise_problems(mod, ref, gen, x, y, ((5, d), (2, 3, 4, d)))


# --------------------------------------------------------------------------- FeedForward


def _ffn_reference(d: int, f: int, activation: str, gen: torch.Generator) -> nn.Module:
    return reference(mhsa_lib.FeedForward(d, f, activation), gen)


@step("FeedForward", forbidden=((), FEED_FORWARD_LIBRARY),
      points=FEED_FORWARD_POINTS, notebook="04_transformer_block", home="block", kind="module",
      reference=mhsa_lib.FeedForward)
def check_feed_forward(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``FeedForward(d_model, d_ff, activation="relu")`` class (max 2)."""
    module = attempt(cls, 5, 8)
    if isinstance(module, LearnerError):
        result.zero_reason = f"FeedForward(5, 8) {module}"
        return
    problems = observe_problems("structure", _ffn_structure, module)
    gelu = attempt(cls, 5, 8, activation="gelu")
    if isinstance(gelu, LearnerError):
        problems.append(f"FeedForward(5, 8, activation='gelu') {gelu}")
    result.add("structure: fc1 = nn.Linear(D, F), fc2 = nn.Linear(F, D); activation='gelu' accepted",
               0.25, not problems, "; ".join(problems))

    cases = ModuleCases(cls, _compare)

    def case(x: Tensor, d: int, f: int, activation: str, ref: nn.Module):
        kwargs = {} if activation == "relu" else {"activation": activation}
        return cases.compare((d, f), kwargs, ref, x, (x, d, f, activation, ref))

    pub_gen = torch.Generator().manual_seed(2024)
    ref = _ffn_reference(4, 6, "relu", pub_gen)
    x_pub = randn(pub_gen, 1, 3, 4, dtype=torch.float64)
    y, c = case(x_pub, 4, 6, "relu", ref)
    if not_implemented(result, "FeedForward", y):
        return
    public_ok = c.ok
    result.add("public case: D=4, F=6, x (B=1, T=3, D=4), ReLU", 0.5, public_ok, c.detail)

    fails = {"relu": [], "gelu": []}
    for activation in ("relu", "gelu"):
        for _ in range(4 if hidden else 2):
            b, t, d = distinct_sizes(gen, 3, 2, 9)
            f = d + int(torch.randint(1, 2 * d, (1,), generator=gen))  # F ≠ D
            ref = _ffn_reference(d, f, activation, gen)
            _, c = case(tokens(gen, b, t, d), d, f, activation, ref)
            if not c.ok:
                fails[activation].append(f"B={b}, T={t}, D={d}, F={f}: {c.detail}")
    result.add("random cases, ReLU (B, T, D, F all different)", 0.5, not fails["relu"],
               describe_failures(fails["relu"], 1))
    result.add("random cases, activation='gelu' (the exact GELU, x·Φ(x) with erf)", 0.5, not fails["gelu"],
               describe_failures(fails["gelu"], 1))

    problems = _ffn_probes(cls, gen)
    result.add("probes: position-wise (permuting the positions permutes the output; changing one "
               "token changes only its own output); any leading shape", 0.25, not problems, "; ".join(problems))

    if not result.passed:
        def mistake_output(mistake, case):
            x, d, f, activation, ref = case
            return mistake_with_reference(mistake, (d, f, activation), ref, x)

        for activation in ("relu", "gelu"):
            group = [s for s in cases.seen if s[0][3] == activation]
            prefix = "" if activation == "relu" else "with activation='gelu', "
            _diagnose_all(result, group, M.FEED_FORWARD_MISTAKES, mistake_output,
                          lambda a=activation: V.feed_forward_variants(a), _ffn_sizes, prefix)
        if public_ok and fails["relu"] and answers_public_anyway(
                cls, (4, 6), {}, _ffn_reference(4, 6, "relu", torch.Generator().manual_seed(2024)), x_pub, gen,
                built_on=x_pub):
            result.diagnose(HARD_CODED)
    shortcuts = module_shortcuts(cls, (5, 7), {}, _ffn_reference(5, 7, "relu", gen), 5, gen, (), FEED_FORWARD_LIBRARY)
    if shortcuts:
        result.zero_reason = (f"your FeedForward calls {', '.join(shortcuts)}: this step asks you to "
                              "build it from fc1, the activation and fc2")


def _ffn_structure(module: Any) -> List[str]:
    """What is wrong with the layout of the learner's ``FeedForward(5, 8)`` (runs on it: observed)."""
    return linear_layer_problems(module, "FeedForward(5, 8)", 5, {"fc1": (5, 8), "fc2": (8, 5)}, bias=True)


def _ffn_probes(cls, gen: torch.Generator) -> List[str]:
    d, f, t = 4, 9, 6
    ref = _ffn_reference(d, f, "relu", gen)
    mod = build(cls, (d, f), {}, ref, example=example(d))
    if isinstance(mod, str):
        return [mod]
    x = tokens(gen, 2, t, d)
    y = output_to_probe(mod, x, "(B, T, D) = ")
    return y if not isinstance(y, Tensor) else position_wise_problems(mod, ref, gen, x, y)


# --------------------------------------------------------------------------- TransformerBlock

BLOCK_ALLOWED = ("your block may use mhsa_lib's (or your own) MultiHeadAttention, LayerNorm and "
                 "FeedForward: this step is about the wiring. mhsa_lib.TransformerBlock and "
                 "torch's nn.TransformerEncoderLayer are off limits here.")


def _block_reference(d: int, h: int, f: int, placement: str, gen: torch.Generator,
                     dropout: float = 0.0) -> nn.Module:
    return reference(mhsa_lib.TransformerBlock(d, h, f, placement, dropout), gen)


def _block_sizes(gen: torch.Generator) -> Tuple[int, int, int, int, int]:
    b, t, h, dh = distinct_sizes(gen, 4, 2, 6)
    d = h * dh
    f = d + int(torch.randint(1, d + 1, (1,), generator=gen))  # F ≠ D
    return b, t, h, dh, f


@step("TransformerBlock", forbidden=(BLOCK_TORCH + tuple(m.__name__ for m in BLOCK_TORCH_MODULES), BLOCK_LIBRARY),
      points=BLOCK_POINTS, notebook="04_transformer_block", home="block", kind="module",
      reference=mhsa_lib.TransformerBlock, isolate=("LayerNorm", "FeedForward", "MultiHeadAttention"))
def check_transformer_block(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``TransformerBlock(d_model, num_heads, d_ff, norm_placement="pre", dropout=0.0)``
    class in both placements, in eval mode (max 5)."""
    module = attempt(cls, 12, 3, 20)
    if isinstance(module, LearnerError):
        result.zero_reason = f"TransformerBlock(12, 3, 20) {module}"
        return
    if not hidden:
        result.notes.append(BLOCK_ALLOWED)
    problems = observe_problems("structure", _block_structure, module)
    post = attempt(cls, 12, 3, 20, norm_placement="post")
    if isinstance(post, LearnerError):
        problems.append(f"TransformerBlock(12, 3, 20, norm_placement='post') {post}")
    result.add("structure: attn (q_proj, k_proj, v_proj, out_proj), ffn (fc1, fc2), norm1 and norm2 "
               "(two separate LayerNorms); norm_placement='post' accepted", 0.5, not problems,
               "; ".join(problems))

    cases = ModuleCases(cls, _compare)

    def case(placement: str, sizes, mask: Optional[Tensor], ref: nn.Module, x: Tensor):
        d, h, f = sizes
        return cases.compare((d, h, f), {"norm_placement": placement}, ref, x, (placement, d, h, f, ref, x, mask),
                             extra=(mask,))

    public_ok = {}
    for placement in ("pre", "post"):
        pub_gen = torch.Generator().manual_seed(2024)
        ref = _block_reference(4, 2, 6, placement, pub_gen)
        x = randn(pub_gen, 1, 3, 4, dtype=torch.float64)
        y, c = case(placement, (4, 2, 6), None, ref, x)
        if not_implemented(result, "TransformerBlock", y):
            return
        public_ok[placement] = c.ok
        result.add(f"public case, norm_placement='{placement}': D=4, H=2, F=6, x (B=1, T=3, D=4), no mask",
                   0.5, public_ok[placement], c.detail)

    fails = {"pre": [], "post": []}
    mask_fails = []
    for placement in ("pre", "post"):
        for i in range(3 if hidden else 2):
            b, t, h, dh, f = _block_sizes(gen)
            d = h * dh
            ref = _block_reference(d, h, f, placement, gen)
            x = tokens(gen, b, t, d, spread=False)
            _, c = case(placement, (d, h, f), None, ref, x)
            if not c.ok:
                fails[placement].append(f"B={b}, T={t}, D={d}, H={h}, F={f}: {c.detail}")
            if i == 0:
                lengths = torch.randint(1, t + 1, (b,), generator=gen)
                lengths[0] = t - 1
                for name, mask in (("causal (T, T)", mhsa_lib.causal_mask(t)),
                                   ("padding (B, 1, 1, T)", mhsa_lib.padding_mask(lengths, t).unsqueeze(1))):
                    _, c = case(placement, (d, h, f), mask, ref, x)
                    if not c.ok:
                        mask_fails.append(f"'{placement}', {name} mask: {c.detail}")
    for placement in ("pre", "post"):
        result.add(f"random cases, norm_placement='{placement}' (B, T, H, Dh all different, F ≠ D; "
                   "random norm weights and biases)", 1.0, not fails[placement],
                   describe_failures(fails[placement], 1))
    result.add("masks passed through to the attention: causal (T, T) and padding (B, 1, 1, T), both "
               "placements", 0.5, not mask_fails, describe_failures(mask_fails, 1))

    dropout_fails, dropout_random = _block_dropout(cls, gen)
    result.add("dropout=0.5 in eval mode: the output is deterministic and equals the block without "
               "dropout", 0.5, not dropout_fails, describe_failures(dropout_fails, 1))

    problems = _block_probes(cls, gen)
    result.add("probes: no future leak with a causal mask; with attn.out_proj and ffn.fc2 zeroed, a "
               "pre-norm block returns x (the residual path) and a post-norm block norm2(norm1(x)); "
               "a post-norm block's output, after undoing norm2's weight and bias, has mean 0 and "
               "variance 1 at each position", 1.0, not problems, "; ".join(problems))

    if not result.passed:
        def mistake_output(mistake, case):
            placement, d, h, f, ref, x, mask = case
            buggy = mistake.fn(d, h, f, placement)
            load_reference(buggy, ref)
            buggy = buggy.double().eval()
            return buggy(x, mask)

        if dropout_random:
            result.diagnose(M.CATALOGUE["block-dropout-in-eval"].advice)
        named = False
        for placement in ("pre", "post"):
            group = [s for s in cases.seen if s[0][0] == placement]
            prefix = f"norm_placement='{placement}': "
            named |= _diagnose_all(result, group, M.TRANSFORMER_BLOCK_MISTAKES, mistake_output, V.block_variants,
                                   _block_sizes_of, prefix)
        if not named and not dropout_random and dropout_fails and not any(fails.values()):
            result.diagnose("with dropout=0.5 your block in eval mode gives a different output than the "
                            "same block without dropout: in eval mode dropout must change nothing (no "
                            "scaling either); nn.Dropout does this for you.")
        if all(public_ok.values()) and (fails["pre"] or fails["post"]):
            pub_gen = torch.Generator().manual_seed(2024)
            ref = _block_reference(4, 2, 6, "pre", pub_gen)
            x_pub = randn(pub_gen, 1, 3, 4, dtype=torch.float64)
            if answers_public_anyway(cls, (4, 2, 6), {"norm_placement": "pre"}, ref, x_pub, gen, built_on=x_pub):
                result.diagnose(HARD_CODED)
    _block_shortcuts(cls, result, gen)


def _block_structure(module: Any) -> List[str]:
    """What is wrong with the layout of the learner's ``TransformerBlock(12, 3, 20)`` (runs on it: observed)."""
    if not isinstance(module, nn.Module):
        return [f"TransformerBlock(12, 3, 20) built a {type(module).__name__}, expected an nn.Module"]
    problem = materialise_or_say(module, "TransformerBlock(12, 3, 20)", 12)
    if problem:
        return [problem]
    problems = []
    attn = getattr(module, "attn", None)
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        if not isinstance(getattr(attn, name, None), nn.Module):
            problems.append(f"attn.{name} is missing")
    ffn = getattr(module, "ffn", None)
    for name, (i, o) in (("fc1", (12, 20)), ("fc2", (20, 12))):
        layer = getattr(ffn, name, None)
        if not isinstance(layer, nn.Linear) or (layer.in_features, layer.out_features) != (i, o):
            problems.append(f"ffn.{name} should be nn.Linear({i}, {o})")
    norms = [getattr(module, n, None) for n in ("norm1", "norm2")]
    for n, norm in zip(("norm1", "norm2"), norms):
        if not isinstance(getattr(norm, "weight", None), Tensor):
            problems.append(f"{n} is missing or has no weight")
    if norms[0] is not None and norms[0] is norms[1]:
        problems.append("norm1 and norm2 are the same module: each sub-layer needs its own LayerNorm")
    return problems


def _block_dropout(cls, gen: torch.Generator) -> Tuple[List[str], bool]:
    fails, random_output = [], False
    for placement in ("pre", "post"):
        b, t, h, dh, f = _block_sizes(gen)
        d = h * dh
        ref = _block_reference(d, h, f, placement, gen, dropout=0.5)
        mod = build(cls, (d, h, f), {"norm_placement": placement, "dropout": 0.5}, ref, example=example(d))
        if isinstance(mod, str):
            fails.append(mod)
            continue
        x = tokens(gen, b, t, d, spread=False)
        y1, y2 = run(mod, x), run(mod, x)
        if isinstance(y1, Tensor) and isinstance(y2, Tensor) and y1.shape == y2.shape and not torch.equal(y1, y2):
            random_output = True
            fails.append(f"'{placement}': two calls on the same x in eval mode give different outputs")
            continue
        c = compare(y1, ref(x), what="output")
        if not c.ok:
            fails.append(f"'{placement}': {c.detail}")
    return fails, random_output


def _zero_sublayer_outputs(module: nn.Module) -> None:
    with torch.no_grad():
        for layer in (module.attn.out_proj, module.ffn.fc2):
            layer.weight.zero_()
            if getattr(layer, "bias", None) is not None:
                layer.bias.zero_()


def _block_probes(cls, gen: torch.Generator) -> List[str]:
    b, t, h, dh, f = 2, 6, 2, 3, 10
    d = h * dh
    problems = []
    for placement in ("pre", "post"):
        ref = _block_reference(d, h, f, placement, gen)
        mod = build(cls, (d, h, f), {"norm_placement": placement}, ref, example=example(d))
        if isinstance(mod, str):
            return [mod]
        x = tokens(gen, b, t, d, spread=False)
        mask = mhsa_lib.causal_mask(t)
        y = run(mod, x, mask)
        if not isinstance(y, Tensor) or tuple(y.shape) != (b, t, d):
            return [f"expected an output of shape (B, T, D) = {(b, t, d)} to probe"]
        x_future = x.clone()
        x_future[:, t // 2 :] += 3.0
        y_future = run(mod, x_future, mask)
        if not (isinstance(y_future, Tensor) and close(y_future[:, : t // 2], y[:, : t // 2], atol=1e-6)):
            problems.append(f"'{placement}': with a causal mask, changing future tokens changes earlier outputs")
        if placement == "post":
            y = run(mod, x)
            if isinstance(y, Tensor) and y.shape == x.shape:
                z = (y - ref.norm2.bias.detach()) / ref.norm2.weight.detach()
                mean, var = z.mean(-1), z.var(-1, unbiased=False)
                if not (close(mean, torch.zeros_like(mean), atol=1e-6) and close(var, torch.ones_like(var), atol=1e-3)):
                    problems.append("'post': the output (after undoing norm2's weight and bias) is not "
                                    "normalised per position: norm2 must be the last thing a post-norm block does")
        try:
            observe("zero the sub-layer outputs", _zero_sublayer_outputs, mod)
        except LearnerError:
            problems.append("could not zero attn.out_proj and ffn.fc2")
            continue
        y0 = run(mod, x)
        if placement == "pre":
            ok = isinstance(y0, Tensor) and close(y0, x, atol=1e-10)
            if not ok:
                problems.append("'pre': with both sub-layers' outputs zeroed the block does not return x: "
                                "the residual path must carry x through unchanged, x + F(LN(x))")
        else:
            ok = isinstance(y0, Tensor) and close(y0, ref.norm2(ref.norm1(x)), atol=1e-6)
            if not ok:
                problems.append("'post': with both sub-layers' outputs zeroed the block does not return "
                                "norm2(norm1(x)): each sub-layer is LN(x + F(x))")
    return problems


def _block_shortcuts(cls, result: CheckResult, gen: torch.Generator) -> None:
    ref = _block_reference(6, 2, 10, "pre", gen)
    mod = build(cls, (6, 2, 10), {"norm_placement": "pre"}, ref, example=example(6))
    if isinstance(mod, str):
        return
    try:
        found = list(observe("torch modules", _torch_modules, mod))[:1]
    except LearnerError:
        found = []
    found += find_shortcuts(mod, (tokens(gen, 2, 4, 6), mhsa_lib.causal_mask(4)), BLOCK_TORCH,
                            forbid_library=BLOCK_LIBRARY)
    if found:
        result.zero_reason = f"your TransformerBlock uses {', '.join(found)}. " + BLOCK_ALLOWED


def _torch_modules(module: nn.Module) -> List[str]:
    """torch's own encoder layers inside the learner's block (runs on it: observed)."""
    return [f"torch's {type(m).__name__}" for m in module.modules() if isinstance(m, BLOCK_TORCH_MODULES)]


# --------------------------------------------------------------------------- helpers


def _diagnose_all(result: CheckResult, seen, mistakes, mistake_output: Callable, variants: Callable,
                  sizes_of: Callable, prefix: str = "") -> bool:
    """A shape error in the course's letters when no output is a tensor; else the hand-written
    mistakes, then the generated variants."""
    pairs = [(case, y) for case, y, _ in seen]
    if seen and not any(isinstance(y, Tensor) for _, y in pairs) and V.diagnose_error(
            result, pairs, sizes_of, prefix + "your forward"):
        return True
    return (diagnose_modules(result, seen, mistakes, None, mistake_output, prefix=prefix)
            or _search(result, seen, variants, sizes_of, prefix))


def _search(result: CheckResult, seen, variants: Callable, sizes_of: Callable, prefix: str = "") -> bool:
    """The generated variants (built from the reference's own parameters, as copied into the
    learner's module) matched against the learner's outputs ``seen`` = (case, yours, expected),
    where some output differs from the expected one; or a shape error in the course's letters."""
    differs = [(case, y) for case, y, e in seen if isinstance(y, Tensor) and not close(y, e, atol=1e-6)]
    if differs:
        outputs = [(case, y) for case, y, _ in seen if isinstance(y, Tensor)]
        m = matching_mistake(outputs, variants(), lambda variant, case: variant.fn(case), atol=1e-6,
                             cheapest_first=True)
        if m is not None:
            result.diagnose(prefix + m.advice)
            return True
        return False
    return V.diagnose_error(result, [(case, y) for case, y, _ in seen], sizes_of, prefix + "your forward")


def _ln_sizes(case) -> dict:
    x = case[0]
    return {"B": x.shape[0], "T": x.shape[-2], "D": x.shape[-1]} if x.ndim == 3 else {"D": x.shape[-1]}


def _ffn_sizes(case) -> dict:
    x, d, f = case[:3]
    return {"B": x.shape[0], "T": x.shape[1], "D": d, "F": f}


def _block_sizes_of(case) -> dict:
    _, d, h, f, _, x, _ = case
    return {"B": x.shape[0], "T": x.shape[1], "D": d, "H": h, "Dh": d // h, "F": f}


def _compare(y: Any, e: Tensor) -> Comparison:
    """:func:`compare` of a forward's output, the learner's error said as itself (the diagnosis
    explains a shape error in the course's letters)."""
    if isinstance(y, LearnerError):
        return Comparison(False, f"forward {y}")
    return compare(y, e, what="output")
