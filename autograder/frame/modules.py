"""Helpers for the checks that take a learner's nn.Module class: build it, copy reference
parameters into it by name, run it safely, and name a known mistake from its outputs.

Building and copying happen on the learner's objects, so each is one observation: in a judge
the module is an :class:`~autograder.frame.observe.Opaque` stand-in that only :func:`run` and
:func:`~autograder.frame.calls.observe` take.

Shape letters: B batch, T length, D model width.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .calls import attempt, observe, run_safely
from .cases import randn
from .compare import Comparison, close, compare
from .diagnosis import diagnose_by_output, matching_mistake
from .errors import LearnerError
from .results import CheckResult
from .shortcuts import find_shortcuts


@contextlib.contextmanager
def guarded():
    """Around a check's parts: no autograd, no warnings on stderr, the global RNG state restored
    (building nn.Linear layers draws from it; the learner's own random stream is left as it was)."""
    rng_state = torch.get_rng_state()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.set_rng_state(rng_state)


def class_name(cls: Any) -> str:
    name = getattr(cls, "__name__", None)
    return name if isinstance(name, str) else "your class"


def call_repr(cls: Any, args: Sequence[Any], kwargs: dict) -> str:
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{class_name(cls)}({', '.join(shown)})"


def randomise(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """Unit-scale random parameters: weights N(0, 1/fan_in), norm gains in [0.5, 1.5), shifts N(0, 0.25)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(randn(gen, *p.shape, dtype=p.dtype, scale=1.0 / math.sqrt(p.shape[-1])))
            elif name.endswith("weight"):  # a norm's gain: kept away from 0 so it can be undone
                p.copy_(0.5 + torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
            else:
                p.copy_(randn(gen, *p.shape, dtype=p.dtype, scale=0.5))
    return module


def reference(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """A reference module for a check: float64, eval mode, every parameter drawn from ``gen``
    (so its initial values, and the global random state, play no part)."""
    return randomise(module.double().eval(), gen)


def has_lazy(module: nn.Module) -> bool:
    """Whether ``module`` has lazy layers (``nn.LazyLinear`` ...) that have no shapes yet."""
    return any(isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params()
               for m in module.modules())


def materialise(module: nn.Module, example: Optional[Tensor] = None) -> None:
    """Give lazy layers (``nn.LazyLinear`` ...) their shapes, by one forward pass on ``example``
    (in its dtype, else in float32, else in float64 for a module built in float64). Raises what
    the last forward raised if the lazy layers still have no shapes."""
    if example is None or not has_lazy(module):
        return
    error: Optional[Exception] = None
    for dtype in dict.fromkeys((example.dtype, torch.float32, torch.float64)):
        try:
            with torch.no_grad():
                module(example.to(dtype))
        except Exception as e:  # the learner's forward: the next dtype may suit it
            error = e
        if not has_lazy(module):
            return
    raise error if error is not None else RuntimeError("a forward pass left lazy layers without shapes")


def _copy_parameters(dst: nn.Module, src: nn.Module) -> Optional[str]:
    """Copy ``src``'s parameters into ``dst`` by name, or say what does not fit. A parametrized
    weight (``torch.nn.utils.parametrize``: weight norm, orthogonal ...) and the older hook-based
    weight norm (``weight_g`` and ``weight_v``) take the value through their own inverse; a
    parameter under another name is found where it stands in the order of its submodule's, or
    else of the whole module's (same count, same shapes), so that a check of the module's outputs
    does not hinge on its names (a structure part checks those)."""
    theirs = dict(dst.named_parameters(remove_duplicate=False))
    in_order: Optional[Dict[str, Tensor]] = None
    with torch.no_grad():
        for name, p in src.named_parameters():
            q = theirs.get(name)
            if q is None:
                problem = _assign(dst, name, p)
                if problem:
                    q = _renamed(dst, src, name)
                    if q is None:
                        in_order = _in_order(dst, src) if in_order is None else in_order
                        q = in_order.get(name)
                    if q is None:
                        return problem
                else:
                    continue
            if isinstance(q, nn.parameter.UninitializedParameter):
                return f"{name} is a lazy parameter that has no shape yet"
            if p.ndim == 2 and tuple(q.shape) == tuple(p.shape)[::-1] != tuple(p.shape):
                q.copy_(p.T.to(q.dtype))  # a weight stored (in, out), as GPT-2's Conv1D does
                continue
            if tuple(q.shape) != tuple(p.shape):
                return f"{name} has shape {tuple(q.shape)}, expected {tuple(p.shape)}"
            q.copy_(p.to(q.dtype))
            if p.ndim == 2 and p.shape[0] == p.shape[1] and _stored_transposed(dst, name, q):
                q.copy_(p.T.to(q.dtype))
    return None


def _stored_transposed(dst: nn.Module, name: str, weight: Tensor) -> bool:
    prefix, _, leaf = name.rpartition(".")
    try:
        owner = dst.get_submodule(prefix) if prefix else dst
    except AttributeError:
        return False
    return leaf == "weight" and stores_transposed(owner)


def stores_transposed(layer: Any) -> bool:
    """Whether ``layer`` (not an nn.Linear: a layer of the learner's own with only a 2-D weight and
    maybe a bias) computes x @ W + b, as GPT-2's Conv1D does, rather than nn.Linear's x @ W.T + b:
    seen from its output for the identity. Never raises (the learner's layer: False)."""
    try:
        weight = getattr(layer, "weight", None)
        if (isinstance(layer, nn.Linear) or not isinstance(layer, nn.Module) or not isinstance(weight, Tensor)
                or weight.ndim != 2 or list(layer.children())
                or {n for n, _ in layer.named_parameters()} - {"weight", "bias"}):
            return False
        with torch.no_grad():
            bias = getattr(layer, "bias", None)
            shift = bias if isinstance(bias, Tensor) else torch.zeros(weight.shape[1], dtype=weight.dtype)
            y = layer(torch.eye(weight.shape[0], dtype=weight.dtype))
            if not isinstance(y, Tensor) or tuple(y.shape) != tuple(weight.shape) or not close(y, weight + shift):
                return False
            return weight.shape[0] != weight.shape[1] or not close(y, weight.T + shift)
    except Exception:
        return False


def linear_weight(layer: Any) -> Tensor:
    """``layer``'s weight laid out as nn.Linear's, (out, in): the weight itself, or a transposed
    view of it for a layer that stores (in, out) (:func:`stores_transposed`); writing into the
    result writes into the layer."""
    return layer.weight.T if stores_transposed(layer) else layer.weight


def _assign(dst: nn.Module, name: str, value: Tensor) -> Optional[str]:
    """Give ``dst``'s computed weight ``name`` (not a parameter of its own) the value ``value``."""
    missing = f"your module has no parameter {name} of shape {tuple(value.shape)}"
    prefix, _, leaf = name.rpartition(".")
    try:
        owner = dst.get_submodule(prefix) if prefix else dst
    except AttributeError:
        return missing
    if parametrize.is_parametrized(owner, leaf):
        current = getattr(owner, leaf)
        if tuple(current.shape) != tuple(value.shape):
            return f"{name} has shape {tuple(current.shape)}, expected {tuple(value.shape)}"
        try:  # (a plain tensor: a Parameter would be registered under the parametrized name)
            setattr(owner, leaf, value.detach().to(current.dtype).clone())
        except NotImplementedError:
            return f"{name} is parametrized without a right_inverse, so it cannot be given the check's values"
        return None
    for hook in list(getattr(owner, "_forward_pre_hooks", {}).values()):
        if type(hook).__name__ == "WeightNorm" and getattr(hook, "name", None) == leaf:
            g, v = getattr(owner, f"{leaf}_g", None), getattr(owner, f"{leaf}_v", None)
            if not (isinstance(g, Tensor) and isinstance(v, Tensor)) or tuple(v.shape) != tuple(value.shape):
                return missing
            v.copy_(value.to(v.dtype))
            g.copy_(_norm_except_dim(value.detach(), hook.dim).view(g.shape).to(g.dtype))
            setattr(owner, leaf, value.detach().to(v.dtype).clone())
            return None
    return missing


def _renamed(dst: nn.Module, src: nn.Module, name: str) -> Optional[Tensor]:
    """The parameter of ``dst`` that plays the part of ``src``'s ``name`` under another name: the
    submodule at the same place holds its own parameters under other names, as many, in the same
    order and of the same shapes (a LayerNorm with ``a_2`` and ``b_2`` for ``weight`` and ``bias``)."""
    prefix, _, leaf = name.rpartition(".")
    try:
        ours = src.get_submodule(prefix) if prefix else src
        theirs = dst.get_submodule(prefix) if prefix else dst
    except AttributeError:
        return None
    mine, yours = list(ours.named_parameters(recurse=False)), list(theirs.named_parameters(recurse=False))
    if len(mine) != len(yours) or {n for n, _ in mine} & {n for n, _ in yours}:
        return None
    if any(tuple(a.shape) != tuple(b.shape) for (_, a), (_, b) in zip(mine, yours)):
        return None
    return yours[[n for n, _ in mine].index(leaf)][1]


def _in_order(dst: nn.Module, src: nn.Module) -> Dict[str, Tensor]:
    """``src``'s parameter names -> ``dst``'s parameters in the same places of their order, if
    ``dst`` has exactly as many, each of the same shape (a module whose layers have other names,
    d2l's ``W_q`` ... ``W_o`` for ``q_proj`` ... ``out_proj``); else nothing."""
    mine, yours = list(src.named_parameters()), list(dst.named_parameters())
    if any(isinstance(b, nn.parameter.UninitializedParameter) for _, b in yours):
        return {}
    if len(mine) == len(yours) and all(tuple(a.shape) == tuple(b.shape) for (_, a), (_, b) in zip(mine, yours)):
        return {n: b for (n, _), (_, b) in zip(mine, yours)}
    return _fused_in_order(dst, mine, yours)


def _fused_in_order(dst: nn.Module, mine: List[Tuple[str, Tensor]], yours: List[Tuple[str, Tensor]]) -> Dict[str, Tensor]:
    """As :func:`_in_order`, layer by layer, where one layer of ``dst`` may stand for several
    consecutive layers of ``src`` stacked along their outputs: a fused projection, nanoGPT's
    ``c_attn`` (3D, D) for ``q_proj``, ``k_proj``, ``v_proj``, or GPT-2's Conv1D (D, 3D), which
    stores its weight transposed. Each of ``src``'s names then maps to a view of its rows of
    ``dst``'s parameter (writing into it writes into ``dst``); nothing if the layers do not line up."""
    owners = dict(dst.named_modules())

    def layers(params: List[Tuple[str, Tensor]], transposed: bool) -> List[List[Tuple[str, Tensor]]]:
        grouped: Dict[str, List[Tuple[str, Tensor]]] = {}
        for name, t in params:
            prefix, _, leaf = name.rpartition(".")
            if transposed and t.ndim == 2 and leaf == "weight" and stores_transposed(owners.get(prefix)):
                t = t.T  # (out, in), as nn.Linear's
            grouped.setdefault(prefix, []).append((name, t))
        return list(grouped.values())

    ours, theirs = layers(mine, False), layers(yours, True)
    found: Dict[str, Tensor] = {}
    i = 0
    for layer in theirs:
        start, rows = i, [0] * len(layer)
        while i < len(ours) and len(ours[i]) == len(layer) and all(
                a.ndim == b.ndim >= 1 and tuple(a.shape[1:]) == tuple(b.shape[1:]) and r < b.shape[0]
                for (_, a), (_, b), r in zip(ours[i], layer, rows)):
            rows = [r + a.shape[0] for (_, a), r in zip(ours[i], rows)]
            i += 1
            if all(r >= b.shape[0] for r, (_, b) in zip(rows, layer)):
                break
        if i == start or any(r != b.shape[0] for r, (_, b) in zip(rows, layer)):
            return {}
        rows = [0] * len(layer)
        for src_layer in ours[start:i]:
            for k, ((n, a), (_, b)) in enumerate(zip(src_layer, layer)):
                found[n] = b.narrow(0, rows[k], a.shape[0])
                rows[k] += a.shape[0]
    return found if i == len(ours) else {}


def counterpart(dst: nn.Module, src: nn.Module, name: str) -> Optional[Tensor]:
    """The tensor of ``dst`` (the learner's module) that plays the part of ``src``'s parameter
    ``name``, laid out as ``src``'s (a weight stored transposed is seen through a transposed view,
    a fused projection through a view of its rows), found as :func:`copy_parameters` finds it; or
    None. Writing into it writes into ``dst``. Call it inside an observation (it reads the
    learner's module)."""
    prefix, _, leaf = name.rpartition(".")
    theirs = dict(dst.named_parameters(remove_duplicate=False))
    if name in theirs:
        owner = dst.get_submodule(prefix) if prefix else dst
        return linear_weight(owner) if leaf == "weight" and theirs[name].ndim == 2 else theirs[name]
    found = _renamed(dst, src, name)
    return found if found is not None else _in_order(dst, src).get(name)


def _norm_except_dim(w: Tensor, dim: int) -> Tensor:
    """The norm of ``w`` over every axis but ``dim`` (all axes for dim = -1), as weight norm's g."""
    if dim == -1:
        return w.norm()
    dim = dim % w.ndim
    return w.transpose(0, dim).reshape(w.shape[dim], -1).norm(dim=1)


def load_reference(dst: nn.Module, src: nn.Module) -> nn.Module:
    """Copy ``src``'s parameters by name into ``dst``, one of the check's OWN modules (a known
    mistake rebuilt to compare with the learner's output), where names and shapes match. Not an
    observation: a judge must really copy here, while :func:`copy_parameters`, for the learner's
    modules, is read back in a judge without copying anything."""
    theirs = dict(dst.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, p in src.named_parameters():
            if name in theirs and tuple(theirs[name].shape) == tuple(p.shape):
                theirs[name].copy_(p)
    return dst


def copy_parameters(dst: Any, src: nn.Module) -> Optional[str]:
    """Copy every parameter of ``src`` into the parameter of ``dst`` with the same name; say what does not fit.

    Shared parameters count under each name, so a module that reuses one LayerNorm for both
    sub-layers gets the second one's values in both places (and its output shows it).
    """
    try:
        return observe("copy_parameters", _copy_parameters, dst, src)
    except LearnerError as e:
        return f"copying the parameters into your module {e}"


def _build(cls: Callable, args: tuple, kwargs: dict, src: nn.Module, example: Optional[Tensor]) -> Any:
    try:
        module = run_safely(cls, args, kwargs)
    except LearnerError as e:
        return f"{call_repr(cls, args, kwargs)} {e}"
    if not isinstance(module, nn.Module):
        return f"{call_repr(cls, args, kwargs)} built a {type(module).__name__}, expected an nn.Module"
    if example is None and args and type(args[0]) is int and args[0] > 0:
        example = torch.zeros(1, 2, args[0])  # a module step's first argument is its width D
    try:  # lazy layers start as float32 and learn their shapes from one forward pass
        materialise(module, None if example is None else example.float())
    except Exception as e:
        return f"{call_repr(cls, args, kwargs)}: its lazy layers could not be initialised ({type(e).__name__}: {e})"
    problem = _copy_parameters(module, src)
    if problem:
        return problem
    try:
        return module.double().eval()
    except Exception as e:  # a learner's odd module
        return f"{call_repr(cls, args, kwargs)}.double() raised {type(e).__name__}: {e}"


def build(cls: Callable, args: Sequence[Any], kwargs: Dict[str, Any], src: nn.Module,
          example: Optional[Tensor] = None) -> Any:
    """Build the learner's module, give it ``src``'s parameters, float64, eval mode; or a message.

    ``example``: an input for one forward pass that gives lazy layers their shapes first."""
    try:
        return observe("build", _build, cls, tuple(args), dict(kwargs), src, example)
    except LearnerError as e:
        return f"{call_repr(cls, args, kwargs)} {e}"


def run(module: Any, *args: Any) -> Any:
    """Call the learner's module on copies of tensor arguments; trailing None arguments are left out."""
    args = list(args)
    while args and args[-1] is None:
        args.pop()
    return attempt(module, *(a.clone() if isinstance(a, Tensor) else a for a in args))


def diagnose_modules(result: CheckResult, seen, mistakes, advice: Optional[Dict[str, str]], mistake_output: Callable,
                     prefix: str = "") -> bool:
    """Name the first known mistake whose outputs equal the learner's on every case seen.

    ``seen``: ``(case, learner output, expected output)``; a mistake is named only if the
    learner's output differs from the expected one somewhere (else it explains nothing).
    ``advice`` (mistake id -> text) overrides the mistakes' own advice.
    """
    outputs = [(case, y) for case, y, e in seen]
    tensors = [(y, e) for _, y, e in seen if isinstance(y, Tensor)]
    if tensors and all(close(y, e, atol=1e-6) for y, e in tensors):
        return False
    if not tensors:
        return diagnose_by_output(result, outputs, mistakes, mistake_output, prefix=prefix, what="your forward")
    m = matching_mistake(outputs, mistakes, mistake_output, atol=1e-6)
    if m is None:
        return False
    result.diagnose(prefix + (advice or {}).get(m.id, m.advice))
    return True


def not_implemented(result: CheckResult, step: str, y: Any) -> bool:
    """A forward that is still the release's stub earns nothing, with one clear line."""
    if isinstance(y, LearnerError) and y.kind == "not_implemented":
        result.zero_reason = f"{step}.forward {y}"
        return True
    return False


def tokens(gen: torch.Generator, *shape: int, spread: bool = True) -> Tensor:
    """Float64 tokens; with ``spread`` each token gets its own offset and scale, as real activations do."""
    x = randn(gen, *shape, dtype=torch.float64)
    if spread:
        x = x * (0.5 + 2 * torch.rand(*shape[:-1], 1, generator=gen, dtype=torch.float64))
        x = x + randn(gen, *shape[:-1], 1, dtype=torch.float64, scale=2.0)
    return x


# --------------------------------------------------------------------------- a module step's scaffolding
# What the checks of the norms and feed-forward layers (LayerNorm, RMSNorm, FeedForward,
# SwiGLUFeedForward, ...) share: build the learner's class with given sizes, copy the reference's
# parameters in, compare on cases, look at its layout, probe it, name its mistakes.


def example(d: int) -> Tensor:
    """A small input of width ``d`` for the one forward pass that gives lazy layers their shapes."""
    return torch.linspace(-1.0, 1.0, 2 * 3 * d, dtype=torch.float64).reshape(2, 3, d)


def materialise_or_say(module: nn.Module, what: str, d: int) -> Optional[str]:
    """Give the lazy layers (``nn.LazyLinear`` ...) of a freshly built module their shapes from an
    input of width ``d``, or say why not (``what``: how the module was built)."""
    try:
        materialise(module, example(d).float())
    except Exception as e:
        return f"{what}: its lazy layers could not be initialised ({type(e).__name__}: {e})"
    return None


def observe_problems(label: str, inspect: Callable[[Any], List[str]], module: Any) -> List[str]:
    """``inspect(module)`` on the learner's module, as one observation: its list of problems."""
    try:
        return list(observe(label, inspect, module))
    except LearnerError as e:
        return [f"looking at your module {e}"]


def parameter_problems(module: Any, what: str, d: int, expected: Dict[str, float],
                       absent: Optional[Dict[str, str]] = None) -> List[str]:
    """What is wrong with a norm's parameters: each of ``expected`` (name -> initial value) must be
    an nn.Parameter of shape (d,) holding that value; each of ``absent`` (name -> why) must not
    exist. ``what``: how the module was built (``"LayerNorm(7)"``)."""
    if not isinstance(module, nn.Module):
        return [f"{what} built a {type(module).__name__}, expected an nn.Module"]
    params = dict(module.named_parameters())
    problems = []
    for name, init in expected.items():
        p = params.get(name)
        if p is None:
            problems.append(f"no nn.Parameter named {name}" + (": a plain tensor attribute is not trained, wrap "
                            "it in nn.Parameter" if isinstance(getattr(module, name, None), Tensor) else ""))
        elif tuple(p.shape) != (d,):
            problems.append(f"{name} has shape {tuple(p.shape)}, expected (D,) = ({d},)")
        elif not torch.all(p.detach() == init):
            problems.append(f"{name} should start as all {init:g}s")
    problems += [why for name, why in (absent or {}).items() if name in params]
    return problems


def linear_layer_problems(module: Any, what: str, d: int, layers: Dict[str, Tuple[int, int]], bias: bool,
                          family: str = "") -> List[str]:
    """What is wrong with a feed-forward layout: each of ``layers`` (attribute -> (in, out)) must be
    an nn.Linear of those sizes, with a bias or without one (``bias``; ``family`` names the kind of
    layer that has none, in the advice). ``what``: how the module was built, ``d`` its input width
    (for lazy layers)."""
    if not isinstance(module, nn.Module):
        return [f"{what} built a {type(module).__name__}, expected an nn.Module"]
    problem = materialise_or_say(module, what, d)
    if problem:
        return [problem]
    problems = []
    for name, (i, o) in layers.items():
        layer = getattr(module, name, None)
        wanted = f"nn.Linear({i}, {o})" if bias else f"nn.Linear({i}, {o}, bias=False)"
        if not isinstance(layer, nn.Linear):
            problems.append(f"{name} is {type(layer).__name__}, expected {wanted}")
        elif bias and ((layer.in_features, layer.out_features) != (i, o) or layer.bias is None):
            problems.append(f"{name} is nn.Linear({layer.in_features}, {layer.out_features}, "
                            f"bias={layer.bias is not None}), expected {wanted} with a bias")
        elif not bias and (layer.in_features, layer.out_features) != (i, o):
            problems.append(f"{name} is nn.Linear({layer.in_features}, {layer.out_features}), expected {wanted}")
        elif not bias and layer.bias is not None:
            problems.append(f"{name} has a bias: {family or 'these'} linear layers have none (bias=False)")
    return problems


class ModuleCases:
    """The learner's module class run against a reference module case by case; every run is kept,
    ``(case, learner output, expected output)``, for the diagnosis (:func:`diagnose_modules`)."""

    def __init__(self, cls: Any, compare_output: Callable[[Any, Tensor], Any]):
        self.cls = cls
        self.compare_output = compare_output
        self.seen: List[Tuple[Any, Any, Tensor]] = []

    def run(self, args: Sequence[Any], kwargs: Dict[str, Any], ref: nn.Module, x: Tensor, case: Any,
            extra: Sequence[Any] = ()) -> Any:
        """Build ``cls(*args, **kwargs)`` with ``ref``'s parameters, run it on ``x`` (and ``extra``,
        a mask ...); the learner's output (or why the module could not be built, a str: that case
        is not kept)."""
        mod = build(self.cls, args, kwargs, ref, example=x)
        if isinstance(mod, str):
            return mod
        y = run(mod, x, *extra)
        self.seen.append((case, y, ref(x, *extra)))
        return y

    def compare(self, args: Sequence[Any], kwargs: Dict[str, Any], ref: nn.Module, x: Tensor, case: Any,
                extra: Sequence[Any] = ()) -> Tuple[Any, Comparison]:
        """:meth:`run`, then (its output, its comparison with the reference's); a module that could
        not be built fails with why."""
        y = self.run(args, kwargs, ref, x, case, extra)
        if isinstance(y, str):
            return y, Comparison(False, y)
        return y, self.compare_output(y, self.seen[-1][2])


def mistake_with_reference(mistake: Any, sizes: Sequence[Any], ref: nn.Module, x: Tensor) -> Any:
    """What a known mistake's module, built with ``sizes`` and given ``ref``'s parameters, outputs on ``x``."""
    buggy = mistake.fn(*sizes)
    load_reference(buggy, ref)
    return buggy.double()(x)


def answers_public_anyway(cls: Any, args: Sequence[Any], kwargs: Dict[str, Any], ref: nn.Module,
                          public_x: Tensor, gen: torch.Generator, built_on: Optional[Tensor] = None) -> bool:
    """Does the learner's module give the public case's answer on another input of its shape (an
    answer hard-coded for the public case)?"""
    d = public_x.shape[-1]
    mod = build(cls, args, kwargs, ref, example=example(d) if built_on is None else built_on)
    return not isinstance(mod, str) and close(run(mod, tokens(gen, *public_x.shape)), ref(public_x))


def module_shortcuts(cls: Any, args: Sequence[Any], kwargs: Dict[str, Any], ref: nn.Module, d: int,
                     gen: torch.Generator, torch_names: Sequence[str], library: Sequence[str]) -> List[str]:
    """The forbidden torch or library calls the learner's module makes on a (2, 3, ``d``) input."""
    mod = build(cls, args, kwargs, ref, example=example(d))
    if isinstance(mod, str):
        return []
    return find_shortcuts(mod, (tokens(gen, 2, 3, d),), torch_names, forbid_library=library)


def output_to_probe(mod: Any, x: Tensor, shape_name: str = "") -> Any:
    """The learner's module on ``x``, or a problem (a one-item list) when its output is not shaped like ``x``."""
    y = run(mod, x)
    if not isinstance(y, Tensor) or tuple(y.shape) != tuple(x.shape):
        return [f"expected an output of shape {shape_name}{tuple(x.shape)} to probe"]
    return y


def keeps(mod: Any, changed: Tensor, pick: Callable[[Tensor], Tensor], want: Tensor, problem: str,
          atol: float = 1e-6) -> List[str]:
    """``[problem]`` unless the module's output on the ``changed`` input, shaped like it, has
    ``pick(output)`` equal to ``want`` (what an unchanged part of the output, or a rearranged one,
    must be)."""
    y = run(mod, changed)
    ok = isinstance(y, Tensor) and tuple(y.shape) == tuple(changed.shape) and close(pick(y), want, atol=atol)
    return [] if ok else [problem]


def any_leading_shape(mod: Any, ref: nn.Module, gen: torch.Generator, shapes: Sequence[Tuple[int, ...]]) -> List[str]:
    """Differences from the reference on inputs of the other ``shapes`` ((T, D), (B, H, T, D), ...)."""
    problems = []
    for shape in shapes:
        x = tokens(gen, *shape)
        c = compare(run(mod, x), ref(x), what=f"output for x of shape {shape}")
        if not c.ok:
            problems.append(c.detail)
    return problems


def position_wise_problems(mod: Any, ref: nn.Module, gen: torch.Generator, x: Tensor, y: Tensor,
                           what: str = "the FFN") -> List[str]:
    """The probes of a position-wise module (a feed-forward layer), given its output ``y`` on ``x``
    (B, T, D): permuting the positions permutes the output, changing the first token changes only
    its own output, and any leading shape ((T, D), (2, 3, T, D)) gives the reference's output."""
    t, d = x.shape[-2], x.shape[-1]
    perm = torch.randperm(t, generator=gen)
    problems = keeps(mod, x[:, perm], lambda out: out, y[:, perm],
                     f"permuting the positions of x does not just permute the output: {what} must treat each "
                     "position on its own, with the same weights")
    x2 = x.clone()
    x2[:, 0] += 2.0
    problems += keeps(mod, x2, lambda out: out[:, 1:], y[:, 1:],
                      "changing the first token changes the output at other positions")
    return problems + any_leading_shape(mod, ref, gen, ((t, d), (2, 3, t, d)))


def token_wise_problems(mod: Any, ref: nn.Module, gen: torch.Generator, x: Tensor, y: Tensor,
                        shapes: Sequence[Tuple[int, ...]]) -> List[str]:
    """The probes of a module that normalises each token on its own (a norm), given its output
    ``y`` on ``x`` (B, T, D): changing the first token changes only its own output, and inputs of
    the other ``shapes`` give the reference's output."""
    x2 = x.clone()
    x2[:, 0] = x2[:, 0] * 3.0 + 1.0
    problems = keeps(mod, x2, lambda out: out[:, 1:], y[:, 1:],
                     "changing the first token changes the output at other positions: normalise each token over "
                     "its own D features (the last axis)")
    return problems + any_leading_shape(mod, ref, gen, shapes)
