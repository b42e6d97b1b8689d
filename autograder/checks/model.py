"""The capstone check (notebook 07): a trained model that sorts sequences of tokens (the
library's counterpart is ``mhsa_lib.model.TinyTransformer``).

Shape letters: B batch, T positions, V vocabulary size. The task: tokens (B, T) of integers in
[0, V) -> logits (B, T, V) whose argmax at position t is the t-th smallest input token.

The check never trains anything: it evaluates the learner's trained model in eval mode on
held-out sequences drawn from fixed seeds (so grading is deterministic), on the model's own
device, and probes that the model reads positions and other tokens — the two things
attention with positional information brings. A model whose attention is replaced by the
identity reaches about 0.36 token accuracy (each position sees only its own token); the
reference, trained for 400 steps on CPU in a few seconds, reaches about 0.99.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Dict, Tuple

import torch
from torch import Tensor, nn

from ..frame import CheckResult, LearnerError, find_shortcuts, observe, run_safely
from ..frame.registry import step
from ..mistakes import model as M

CAPSTONE_POINTS = 5.0
SEQ_LEN = 10  # T
VOCAB = 12  # V
THRESHOLD = 0.90  # held-out token accuracy
PUBLIC_SEED = 2024
ANSWER_TORCH = ("sort", "argsort", "msort", "topk", "kthvalue", "flip", "searchsorted", "bincount")
ANSWER_LIBRARY = ("TinyTransformer", "sorting_batch", "reversal_batch")


def held_out(n: int, seed: int) -> Tuple[Tensor, Tensor]:
    """``n`` sequences of the task, drawn from ``seed``: inputs (n, T), targets (n, T)."""
    x = torch.randint(0, VOCAB, (n, SEQ_LEN), generator=torch.Generator().manual_seed(seed))
    return x, x.sort(dim=1).values


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """Eval mode, no autograd, no warnings; the model's mode and the global RNG restored after."""
    was_training = model.training
    rng_state = torch.get_rng_state()
    try:
        model.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        model.train(was_training)
        torch.set_rng_state(rng_state)


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _logits(model: nn.Module, x: Tensor) -> Any:
    """Probe: the model's logits for tokens ``x`` (n, T), in eval mode on its own device, brought
    back to the CPU; or a message saying what came back instead."""
    device = _device(model)
    out = []
    with _evaluating(model):
        for chunk in x.split(500):
            logits = run_safely(model, (chunk.to(device),))
            if not isinstance(logits, Tensor) or tuple(logits.shape) != (chunk.shape[0], SEQ_LEN, VOCAB):
                got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                return f"model(tokens) returned {got}, expected logits (B, T, V) = {(chunk.shape[0], SEQ_LEN, VOCAB)}"
            out.append(logits.detach().cpu())
    return torch.cat(out)


def _observed_logits(model: Any, x: Tensor) -> Any:
    """The logits (n, T, V) on the CPU, or a LearnerError / a message (one observation)."""
    try:
        return observe("logits", _logits, model, x)
    except LearnerError as e:
        return e


def _predict(model: Any, x: Tensor) -> Any:
    """argmax predictions (n, T) on CPU, or a LearnerError / a message."""
    logits = _observed_logits(model, x)
    return logits.float().argmax(-1) if isinstance(logits, Tensor) else logits


def accuracy(model: Any, n: int, seed: int) -> Any:
    """Token accuracy of ``model`` on ``n`` held-out sequences from ``seed`` (a float, or why not)."""
    x, y = held_out(n, seed)
    pred = _predict(model, x)
    if not isinstance(pred, Tensor):
        return pred
    return float((pred == y).float().mean())


def _facts(model: Any) -> Dict[str, Any]:
    if not isinstance(model, nn.Module):
        return {"module": False, "type": type(model).__name__, "trainable": 0}
    return {"module": True, "type": type(model).__name__,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _on_its_device(model: nn.Module, x: Tensor) -> Any:
    """``model`` called on ``x`` moved to its device (for the forbidden-call probe, which hands
    it the learner's model itself)."""
    with _evaluating(model):
        return model(x.to(_device(model)))


@step("capstone", forbidden=(ANSWER_TORCH, ANSWER_LIBRARY),
      points=CAPSTONE_POINTS, notebook="07_capstone_tiny_transformer", home="model", kind="model",
      reference=None, reference_name="a trained mhsa_lib.TinyTransformer")
def check_capstone(model: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a trained sorting model: ``model(tokens (B, T=10)) -> logits (B, T, V=12)`` (max 5).

    Pass the trained model itself (an ``nn.Module``); nothing is trained here.
    """
    facts = observe("model", _facts, model)
    if facts["type"] == "NoneType":
        result.zero_reason = ("no trained model yet (model is None): build your model class and run the "
                              "training cell above")
        return
    if not facts["module"]:
        result.zero_reason = f"expected your trained nn.Module, got {facts['type']}"
        return
    seed = result.seed
    probe_x, _ = held_out(3, PUBLIC_SEED + 1)
    pred = _predict(model, probe_x)
    if isinstance(pred, LearnerError) and pred.kind == "not_implemented":
        result.zero_reason = f"your model's forward {pred}"
        return
    interface = pred if not isinstance(pred, Tensor) else ""
    if not interface and facts["trainable"] == 0:
        interface = "the model has no trainable parameters"
    result.add(f"interface: tokens (B, T={SEQ_LEN}) -> logits (B, T, V={VOCAB}); trainable parameters",
               0.5, not interface, str(interface))
    if interface:
        return

    pub = accuracy(model, 1000, PUBLIC_SEED)
    ok = isinstance(pub, float) and pub >= THRESHOLD
    result.add(f"held-out accuracy (1000 sequences, seed {PUBLIC_SEED}) at least {THRESHOLD:.2f}", 2.0, ok,
               f"{pub:.3f}" if isinstance(pub, float) else str(pub))

    fresh = accuracy(model, 4000 if hidden else 1000, seed)
    ok_fresh = isinstance(fresh, float) and fresh >= THRESHOLD
    result.add(f"accuracy on freshly drawn sequences at least {THRESHOLD:.2f}", 1.0, ok_fresh,
               f"{fresh:.3f}" if isinstance(fresh, float) else str(fresh))

    uses_positions, uses_context = _probes(model, seed)
    problems = []
    if not uses_positions:
        problems.append("permuting the input tokens only permutes the outputs: the model ignores positions")
    if not uses_context:
        problems.append("changing a token changes only its own position's output: no information flows "
                        "between positions")
    result.add("probes: the model reads positions, and each output depends on the other tokens", 0.5,
               not problems, "; ".join(problems))

    if not result.passed:
        _diagnose(result, pub, uses_positions, uses_context)
    shortcuts = find_shortcuts(_on_its_device, (model, probe_x), ANSWER_TORCH, forbid_library=ANSWER_LIBRARY)
    if shortcuts:
        result.zero_reason = (f"your model calls {', '.join(shortcuts)}: it must learn to sort, with "
                              "attention, not compute the answer (or use the course's ready-made model)")


def _probes(model: Any, seed: int) -> Tuple[bool, bool]:
    gen = torch.Generator().manual_seed(seed + 17)
    x = torch.randint(0, VOCAB, (64, SEQ_LEN), generator=gen)
    base = _observed_logits(model, x)
    if not isinstance(base, Tensor):
        return False, False
    base = base.double()
    perm = torch.randperm(SEQ_LEN, generator=gen)
    permuted = _observed_logits(model, x[:, perm])
    uses_positions = not (isinstance(permuted, Tensor)
                          and torch.allclose(permuted.double(), base[:, perm], atol=1e-4))
    x2 = x.clone()
    x2[:, 0] = (x2[:, 0] + VOCAB // 2) % VOCAB  # change the first token only
    changed = _observed_logits(model, x2)
    uses_context = (isinstance(changed, Tensor)
                    and not torch.allclose(changed.double()[:, 1:], base[:, 1:], atol=1e-4))
    return uses_positions, uses_context


def _diagnose(result: CheckResult, acc: Any, uses_positions: bool, uses_context: bool) -> None:
    if not uses_context:
        result.diagnose(M.CATALOGUE["capstone-identity-attention"].advice)
    elif not uses_positions:
        result.diagnose(M.CATALOGUE["capstone-no-positions"].advice)
    elif isinstance(acc, float) and acc < THRESHOLD:
        result.diagnose(f"your model reads positions and context but reaches {acc:.3f}: train longer (more "
                        "steps), check the learning rate (about 3e-3 with Adam works), and that the loss "
                        "compares logits (B·T, V) with targets (B·T,).")
