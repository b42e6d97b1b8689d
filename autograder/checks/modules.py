"""Helpers shared by the checks that take a learner's nn.Module class (notebooks 03 to 07):
build it, copy reference parameters into it by name, run it safely, and name a known mistake
from its outputs.

Shape letters: B batch, T length, D model width.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..core import CheckResult, LearnerError, attempt, close, draw_seed, finish, matches, randn


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


def run_module_check(step: str, points: float, cls: Any,
                     parts: Callable[[Any, CheckResult, torch.Generator, bool], None],
                     seed: Optional[int], hidden: bool, quiet: bool) -> float:
    """The frame of a module check: draw the seed, run ``parts(cls, result, gen, hidden)`` under
    :func:`guarded`, then report and return the points."""
    seed = draw_seed(step, seed, hidden)
    result = CheckResult(step, points, seed=seed, hidden=hidden, fn_id=id(cls))
    gen = torch.Generator().manual_seed(seed)
    with guarded():
        parts(cls, result, gen, hidden)
    return finish(result, quiet)


def _name(cls: Any) -> str:
    return getattr(cls, "__name__", "your class")


def _call_repr(cls: Any, args: Sequence[Any], kwargs: dict) -> str:
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{_name(cls)}({', '.join(shown)})"


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


def copy_parameters(dst: nn.Module, src: nn.Module) -> Optional[str]:
    """Copy every parameter of ``src`` into the parameter of ``dst`` with the same name; say what does not fit.

    Shared parameters count under each name, so a module that reuses one LayerNorm for both
    sub-layers gets the second one's values in both places (and its output shows it).
    """
    theirs = dict(dst.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, p in src.named_parameters():
            q = theirs.get(name)
            if q is None:
                return f"your module has no parameter {name} of shape {tuple(p.shape)}"
            if tuple(q.shape) != tuple(p.shape):
                return f"{name} has shape {tuple(q.shape)}, expected {tuple(p.shape)}"
            q.copy_(p)
    return None


def build(cls: Callable, args: Sequence[Any], kwargs: dict, src: nn.Module):
    """Build the learner's module, give it ``src``'s parameters, float64, eval mode; or a message."""
    module = attempt(cls, *args, **kwargs)
    if isinstance(module, LearnerError):
        return f"{_call_repr(cls, args, kwargs)} {module}"
    if not isinstance(module, nn.Module):
        return f"{_call_repr(cls, args, kwargs)} built a {type(module).__name__}, expected an nn.Module"
    problem = copy_parameters(module, src)
    if problem:
        return problem
    try:
        return module.double().eval()
    except Exception as e:  # a learner's odd module
        return f"{_call_repr(cls, args, kwargs)}.double() raised {type(e).__name__}: {e}"


def run(module: nn.Module, *args: Any) -> Any:
    """Call the learner's module on copies of tensor arguments; trailing None arguments are left out."""
    args = list(args)
    while args and args[-1] is None:
        args.pop()
    return attempt(module, *(a.clone() if isinstance(a, Tensor) else a for a in args))


def diagnose_modules(result: CheckResult, seen, mistakes, advice, mistake_output: Callable,
                     prefix: str = "") -> bool:
    """Name the first known mistake whose outputs equal the learner's on every case seen.

    ``seen``: ``(case, learner output, expected output)``; a mistake is named only if the
    learner's output differs from the expected one somewhere (else it explains nothing).
    """
    outputs = [(case, y, e) for case, y, e in seen if isinstance(y, Tensor)]
    if not outputs:
        for _, y, _ in seen:
            if isinstance(y, LearnerError):
                result.diagnose(f"{prefix}your forward {y}.")
                return True
        return False
    if all(close(y, e, atol=1e-6) for _, y, e in outputs):
        return False
    for mistake in mistakes:
        if mistake.row == 21:
            continue  # same output as a correct module: the forbidden-call probe catches it
        try:
            ok = all(matches(y, mistake_output(mistake, case), atol=1e-6) for case, y, _ in outputs)
        except Exception:
            ok = False
        if ok:
            result.diagnose(prefix + advice[mistake.id])
            return True
    return False


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
