"""The step check of notebook 03's interop step: ``load_mha_from_torch(module, torch_mha)``, which
copies the weights of torch's ``nn.MultiheadAttention`` into the course's MultiHeadAttention.

The module handed to the learner's function is ``mhsa_lib``'s, so this step does not depend on
the learner's own class. The probe observes, after the learner's function ran, the four
projections' weights and biases and the loaded module's output; the judge compares them with
torch's module.

Shape letters: B batch, T length, D model width, H heads, Dh = D/H.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

import mhsa_lib

from ..frame import CheckResult, LearnerError, compare, describe_failures, distinct_sizes, observe, randn, run_safely
from ..frame.registry import step

LOAD_POINTS = 2.0
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


@step("load_mha_from_torch", points=LOAD_POINTS, notebook="03_concat_and_output_projection", home="interop",
      reference=mhsa_lib.interop.load_mha_from_torch, reference_name="mhsa_lib.interop.load_mha_from_torch")
def check_load_mha_from_torch(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``load_mha_from_torch(module, torch_mha)`` (max 2).

    The module is mhsa_lib's MultiHeadAttention, so this step does not depend on the learner's class.
    """
    rng_state = torch.get_rng_state()
    try:  # not under no_grad: the learner's loading code must work as it would in the notebook
        _load_parts(fn, result, gen, hidden)
    finally:
        torch.set_rng_state(rng_state)


def _torch_pair(d: int, h: int, seed: int):
    torch.manual_seed(seed)
    torch_mha = nn.MultiheadAttention(d, h, batch_first=True).double().eval()
    with torch.no_grad():
        torch_mha.in_proj_bias.normal_()
        torch_mha.out_proj.bias.normal_()
    return torch_mha, mhsa_lib.MultiHeadAttention(d, h).double().eval()


def _load_and_read(fn: Any, module: nn.Module, torch_mha: nn.Module, x: Optional[Tensor],
                   mask: Optional[Tensor]) -> Dict[str, Any]:
    """Probe: run the learner's loader, then read the loaded module's projections (and its output on x)."""
    got = run_safely(fn, (module, torch_mha))
    loaded = got if isinstance(got, nn.Module) else module
    params: Dict[str, Any] = {}
    for name in PROJECTIONS:
        layer = getattr(loaded, name, None)
        weight = getattr(layer, "weight", None)
        bias = getattr(layer, "bias", None)
        params[name] = None if not isinstance(weight, Tensor) else (
            weight.detach().clone(), bias.detach().clone() if isinstance(bias, Tensor) else None)
    output: Any = None
    if x is not None:
        try:
            output = run_safely(loaded, (x, mask))
        except LearnerError as e:
            output = e
    return {"params": params, "output": output}


def _load_parts(fn, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    torch_mha, module = _torch_pair(4, 2, 2024)
    try:
        seen = observe("load", _load_and_read, fn, module, torch_mha, None, None)
    except LearnerError as e:
        result.zero_reason = f"load_mha_from_torch(module, torch_mha) {e}"
        return
    problems = _param_problems(seen["params"], torch_mha)
    result.add("public case (D=4, H=2): W_q, W_k, W_v and their biases from in_proj_weight / "
               "in_proj_bias, W^O from out_proj", 1.0, not problems, "; ".join(problems))
    _diagnose_load(result, seen["params"], torch_mha)

    fails = []
    for _ in range(4 if hidden else 2):
        h, dh, b, t = distinct_sizes(gen, 4, 2, 7)
        d = h * dh
        torch_mha, module = _torch_pair(d, h, int(torch.randint(0, 2**30, (1,), generator=gen)))
        x = randn(gen, b, t, d, dtype=torch.float64)
        mask = mhsa_lib.causal_mask(t)
        try:
            seen = observe("load", _load_and_read, fn, module, torch_mha, x.clone(), mask)
        except LearnerError as e:
            fails.append(f"D={d}, H={h}: {e}")
            continue
        expected, _ = torch_mha(x, x, x, attn_mask=mhsa_lib.interop.mask_to_torch(mask), need_weights=False)
        out = seen["output"]
        c = compare(out, expected, what="output", atol=1e-8, rtol=1e-7) if not isinstance(out, LearnerError) else None
        if c is None or not c.ok:
            fails.append(f"D={d}, H={h}: {out if c is None else c.detail}")
    result.add("random sizes: the loaded module's output equals nn.MultiheadAttention's (causal mask, "
               "converted to torch's polarity)", 1.0, not fails, describe_failures(fails, 1))


def _expected(torch_mha: nn.Module) -> Dict[str, Tuple[Tensor, Tensor]]:
    d = torch_mha.embed_dim
    w, b = torch_mha.in_proj_weight.detach(), torch_mha.in_proj_bias.detach()
    return {
        "q_proj": (w[:d], b[:d]),
        "k_proj": (w[d : 2 * d], b[d : 2 * d]),
        "v_proj": (w[2 * d :], b[2 * d :]),
        "out_proj": (torch_mha.out_proj.weight.detach(), torch_mha.out_proj.bias.detach()),
    }


def _param_problems(params: Dict[str, Any], torch_mha: nn.Module) -> List[str]:
    problems = []
    for name, (w, b) in _expected(torch_mha).items():
        got = params.get(name)
        if got is None:
            problems.append(f"the module has no {name}")
            continue
        weight, bias = got
        if not torch.equal(weight, w):
            problems.append(f"{name}.weight is not what it should be")
        if bias is not None and not torch.equal(bias, b):
            problems.append(f"{name}.bias is not what it should be")
    return problems


def _diagnose_load(result: CheckResult, params: Dict[str, Any], torch_mha: nn.Module) -> None:
    if any(params.get(name) is None for name in PROJECTIONS):
        return
    d = torch_mha.embed_dim
    w = torch_mha.in_proj_weight.detach()
    blocks = {"W_q": w[:d], "W_k": w[d : 2 * d], "W_v": w[2 * d :]}
    for name, should in (("q_proj", "W_q"), ("k_proj", "W_k"), ("v_proj", "W_v")):
        got = params[name][0]
        if torch.equal(got, blocks[should]):
            continue
        if got.shape == blocks[should].T.shape and torch.equal(got, blocks[should].T):
            result.diagnose(f"{name}.weight is transposed: in_proj_weight already has nn.Linear's (out, in) "
                            "layout, so copy its block as it is, without .T.")
            return
        for other, block in blocks.items():
            if other != should and got.shape == block.shape and torch.equal(got, block):
                result.diagnose(f"{name}.weight holds {other}: in_proj_weight stacks [W_q; W_k; W_v] along "
                                f"dim 0, so {should} is rows [{list(blocks).index(should)}·D, "
                                f"{list(blocks).index(should) + 1}·D).")
                return
        result.diagnose(f"{name}.weight was not copied from in_proj_weight (rows [{list(blocks).index(should)}·D, "
                        f"{list(blocks).index(should) + 1}·D)).")
        return
    out_w = params["out_proj"][0]
    if not (out_w.shape == torch_mha.out_proj.weight.shape and torch.equal(out_w, torch_mha.out_proj.weight.detach())):
        result.diagnose("out_proj.weight was not copied: nn.MultiheadAttention keeps W^O in its own out_proj.")
        return
    q_bias = params["q_proj"][1]
    if q_bias is not None and not torch.equal(q_bias, torch_mha.in_proj_bias[:d].detach()):
        result.diagnose("the biases were not copied: in_proj_bias stacks the three biases like the weights, "
                        "and out_proj has its own bias.")
