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
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from .calls import attempt, observe, run_safely
from .cases import randn
from .compare import close
from .diagnosis import diagnose_by_output, matching_mistake
from .errors import LearnerError
from .results import CheckResult


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


def materialise(module: nn.Module, example: Optional[Tensor] = None) -> None:
    """Give lazy layers (``nn.LazyLinear`` ...) their shapes, by one forward pass on ``example``."""
    lazy = [m for m in module.modules() if isinstance(m, nn.modules.lazy.LazyModuleMixin)
            and m.has_uninitialized_params()]
    if lazy and example is not None:
        with torch.no_grad():
            module(example)


def _copy_parameters(dst: nn.Module, src: nn.Module) -> Optional[str]:
    theirs = dict(dst.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, p in src.named_parameters():
            q = theirs.get(name)
            if q is None:
                return f"your module has no parameter {name} of shape {tuple(p.shape)}"
            if isinstance(q, nn.parameter.UninitializedParameter):
                return f"{name} is a lazy parameter that has no shape yet"
            if tuple(q.shape) != tuple(p.shape):
                return f"{name} has shape {tuple(q.shape)}, expected {tuple(p.shape)}"
            q.copy_(p)
    return None


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
