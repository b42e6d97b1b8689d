"""The structural variants of notebook 00's and 01's steps (``pairwise_scores``, ``softmax``,
``causal_mask``, ``scaled_dot_product_attention``), and the two searches their checks run when a
learner's answer is wrong:

- **by output**: each step's answer is described by a few :class:`~.frame.variants.Axis` (which
  axis the softmax normalises, what the scores are scaled by, what blocked scores are filled
  with, ...). :func:`~.frame.variants.generate` combines their wrong choices, simplest first, and
  the frame's :func:`~.frame.diagnosis.matching_mistake` names the first variant that reproduces
  the learner's output on every case the check observed. A new wrong choice of a listed kind is
  one more entry in an axis.
- **by error**: when the learner's code raises a shape error, the same kind of generator
  describes the wrong expressions learners write (``k.T`` on a batch, ``k.transpose(1, 2)`` on
  4-D input, ``torch.bmm`` on 4-D input, ...); :func:`explain_error` runs them on empty tensors of
  the case's shapes and names the one that raises exactly the learner's error, in the course's
  axis letters. Otherwise the frame's :func:`~.frame.shape_errors.read_shape_error` reads torch's
  message and relates its sizes to those letters.

Everything here uses only the inputs a check draws and the outputs it observed, so a check's
judge (replaying a record) finds the same diagnosis as its probe.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .frame.calls import attempt
from .frame.cases import randn
from .frame.errors import LearnerError
from .frame.mistakes import Mistake
from .frame.shape_errors import Letters, parse_error, read_shape_error
from .frame.variants import Axis, generate

# --------------------------------------------------------------------------- the search by output


def choices_of(m: Mistake) -> Dict[str, str]:
    """The changed choices a generated variant's id names (``"scale=dk,fill=zero"``)."""
    out = {}
    for part in m.id.split(","):
        name, _, value = part.partition("=")
        out[name] = value
    return out


# --------------------------------------------------------------------------- hard-coded answers

HARD_CODED = ("your function gives the public case's expected output for the public input, but on other inputs "
              "it does not compute the step: the answer seems hard-coded. Compute it from the input.")


def hard_coded(fn: Any, gen: torch.Generator, public: Tuple[Tensor, ...], reference: Callable[..., Any],
               same: Callable[[Any, Any, float], bool], extra: Tuple[Any, ...] = ()) -> bool:
    """Does ``fn`` return the public case's answer where it should not? Two probes: random inputs
    of the public shapes (an answer keyed on the shapes returns the public answer for them), and
    the public inputs moved by about 1e-4 (an answer keyed on the values jumps away from the right
    answer, which barely moves; a formula, right or wrong, moves as little). ``public``: the
    public case's tensor inputs, ``extra``: its other arguments; ``reference(*inputs)``: the right
    answer; ``same(output, expected, atol)``."""
    expected = reference(*public)
    others = tuple(randn(gen, *p.shape, dtype=p.dtype, scale=2.0) for p in public)
    y = attempt(fn, *(o.clone() for o in others), *extra)
    if same(y, expected, 1e-5) and not same(reference(*others), expected, 1e-5):
        return True
    moved = tuple(p + randn(gen, *p.shape, dtype=p.dtype, scale=1e-4) for p in public)
    y = attempt(fn, *(m.clone() for m in moved), *extra)
    return not isinstance(y, LearnerError) and not same(y, reference(*moved), 1e-3)


# --------------------------------------------------------------------------- the search by error

def _raised(fn: Callable, args: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """(type, first line of the message) of what ``fn(**args)`` raises, or None if it runs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(**args)
    except Exception as e:
        text = str(e).strip()
        return type(e).__name__, (text.splitlines()[0] if text else "")
    return None


def _empty(inputs: Dict[str, Any]) -> Dict[str, Any]:
    return {name: torch.zeros(x.shape, dtype=x.dtype) if isinstance(x, Tensor) else x for name, x in inputs.items()}


def explain_error(text: str, inputs: Dict[str, Any], letters: Letters, candidates: Sequence[Mistake],
                  tokens: Mapping[Tuple[str, str], str], context: Mapping[str, str],
                  others: Sequence[Tuple[Dict[str, Any], Optional[str]]] = ()) -> Optional[str]:
    """What the learner's error ``text`` (a LearnerError's) on ``inputs`` means, in course terms.

    Runs every candidate wrong expression on empty tensors of the inputs' shapes; one that
    raises exactly the learner's error is named, if it also behaves as the learner's code did on
    the ``others`` calls (``(inputs, error text or None if it returned)``: it raises the same
    error where the learner's code raised, and runs where it ran). Where several do, the one
    whose code the learner's line shows (``tokens[(axis, choice)]``: a regular expression of
    it). Otherwise a shape error's message is read and its sizes named. None if it is no shape
    error."""
    raised = parse_error(text)
    if raised is None:
        return None
    empty = _empty(inputs)
    expected_others = []
    for other_inputs, other_text in others:
        parsed = parse_error(other_text) if other_text is not None else None
        if other_text is not None and parsed is None:
            continue  # (an error that is not an exception of the learner's code says nothing here)
        expected_others.append((_empty(other_inputs), None if parsed is None else (parsed.type, parsed.message)))
    found: List[Mistake] = []
    for m in candidates:
        got = _raised(m.fn, empty)
        if got is None or got != (raised.type, raised.message):
            continue
        if all(_raised(m.fn, args) == want for args, want in expected_others):
            found.append(m)
    if found:
        best = found[0]
        line = raised.line
        for m in found:
            regexes = [tokens.get((a, c)) for a, c in choices_of(m).items()]
            if line and all(r is not None and re.search(r, line) for r in regexes):
                best = m
                break
        try:
            return where(letters, inputs) + best.advice.format(**context) + "."
        except (KeyError, IndexError, ValueError):
            return where(letters, inputs) + best.advice + "."
    if not raised.about_shapes:
        return None
    ndims = [x.ndim for x in inputs.values() if isinstance(x, Tensor)]
    read = read_shape_error(raised.message, letters, ndims=ndims)
    return where(letters, inputs) + (read or f"torch reports a shape error: {raised.message}") + "."


def where(letters: Letters, inputs: Dict[str, Any]) -> str:
    """"with q (B, T, Dk), k (B, S, Dk) (B=2, T=3, ...): ", the inputs' shapes in letters."""
    shapes = ", ".join(f"{name} {letters.shape(x.shape)}" for name, x in inputs.items() if isinstance(x, Tensor))
    legend = letters.legend()
    return f"with {shapes}{f' ({legend})' if legend else ''}: "


# --------------------------------------------------------------------------- choices


@dataclass(frozen=True)
class Choice:
    """One choice of an axis: its ``name`` (in the variant's id) and what it does, ``fn`` (each
    axis says what its functions take and return), so that a new wrong choice of a listed kind is
    one more entry in the axis and nothing else changes. ``token``: a regular expression of the
    learner's code that makes this choice (read in the learner's line of an error)."""

    name: str
    fn: Any = field(default=None, compare=False, hash=False)
    token: str = field(default="", compare=False, hash=False)

    def __str__(self) -> str:
        return self.name


def tokens_of(axes: Sequence[Axis]) -> Dict[Tuple[str, str], str]:
    """(axis, choice) -> the regular expression of the learner's code for each wrong choice."""
    return {(a.name, str(c)): c.token for a in axes for c in a.wrong if isinstance(c, Choice) and c.token}


def _named(c: Dict[str, Any]) -> Dict[str, str]:
    return {k: str(v) for k, v in c.items()}


def _t(x: Tensor) -> Tensor:
    return x.transpose(-2, -1)


# --------------------------------------------------------------------------- pairwise_scores
# contract: fn(q, keys) -> scores; keys: fn(q, k) -> the tensor used as keys; scale: fn(q, k) -> divisor.


def _pairwise_build(c: Dict[str, Any]) -> Callable:
    def fn(q: Tensor, k: Tensor) -> Tensor:
        return c["contract"].fn(q, c["keys"].fn(q, k)) / c["scale"].fn(q, k)
    return fn


PAIRWISE_AXES = [
    Axis("contract", Choice("qk", lambda q, k: q @ _t(k)), {
        Choice("kq", lambda q, k: k @ _t(q)):
            "you computed K Qᵀ, whose entry [b, j, i] pairs key j with query i: the scores must be (B, T, S), "
            "query rows and key columns: q @ k.transpose(-2, -1)",
        Choice("neg", lambda q, k: -(q @ _t(k))):
            "your scores are the negated dot products: scores[b, i, j] = +q[b, i] · k[b, j]",
        Choice("dist", lambda q, k: -((q.unsqueeze(-2) - k.unsqueeze(-3)) ** 2).sum(-1)):
            "your scores are negative squared distances, not dot products: scores[b, i, j] = q[b, i] · k[b, j]",
    }),
    Axis("keys", Choice("k", lambda q, k: k), {
        Choice("q", lambda q, k: q): "you multiply q by its own transpose: the scores compare each query with every "
                                     "key k",
    }),
    Axis("scale", Choice("none", lambda q, k: 1.0), {
        Choice("sqrt_d", lambda q, k: math.sqrt(q.shape[-1])):
            "you divide by √D: pairwise_scores is the plain dot product (the 1/√d_k scale comes in attention, "
            "notebook 01)",
        Choice("d", lambda q, k: float(q.shape[-1])): "you divide by D: pairwise_scores is the plain dot product, "
                                                      "no scale",
        Choice("sqrt_s", lambda q, k: math.sqrt(k.shape[-2])): "you divide by √S: pairwise_scores is the plain dot "
                                                               "product, no scale",
    }),
]


def pairwise_variants() -> Iterable[Mistake]:
    return generate(PAIRWISE_AXES, _pairwise_build)


# form: fn(q, k) -> scores, the way the learner wrote them.
PAIRWISE_SHAPE_AXES = [Axis("form", Choice("qkT", lambda q, k: q @ _t(k)), {
    Choice("no_t", lambda q, k: q @ k, r"@\s*k\b(?!\s*\.)"):
        "`q @ k` multiplies {q} by {k}: the inner sizes D and S do not match. Transpose the last two axes of k "
        "first: q @ k.transpose(-2, -1)",
    Choice("T", lambda q, k: q @ k.T, r"k\.T\b"):
        "`k.T` on a {k} tensor reverses all its axes, giving {k_T}; the keys must become {k_need}: transpose only "
        "the last two axes, q @ k.transpose(-2, -1) (or k.mT)",
    Choice("t01", lambda q, k: q @ k.transpose(0, 1), r"transpose\(\s*(0\s*,\s*1|1\s*,\s*0)\s*\)"):
        "`k.transpose(0, 1)` on a {k} tensor gives {k_t01}, the batch axis moved; the keys must become {k_need}: "
        "transpose the last two axes, k.transpose(-2, -1)",
    Choice("mm", lambda q, k: torch.mm(q, k.t()), r"\bmm\(|\.t\(\)"):
        "`torch.mm` and `.t()` take only 2-D matrices, but q is {q}: use q @ k.transpose(-2, -1), which handles "
        "the batch axis",
    Choice("bmm_no_t", lambda q, k: torch.bmm(q, k), r"bmm\("):
        "`torch.bmm(q, k)` multiplies {q} by {k}: the keys must be transposed first, torch.bmm(q, k.transpose(1, 2)) "
        "or q @ k.transpose(-2, -1)",
    Choice("elementwise", lambda q, k: (q * k).sum(-1), r"\*"):
        "you multiplied q and k elementwise, which pairs query i only with key i and needs T = S; every query must "
        "meet every key: q @ k.transpose(-2, -1), or einsum('btd,bsd->bts', q, k)",
    Choice("qT", lambda q, k: _t(q) @ k, r"q\.(transpose|T|mT)"):
        "`q.transpose(-2, -1) @ k` multiplies {q_t} by {k}: transpose k, not q: q @ k.transpose(-2, -1)",
    Choice("einsum_2d", lambda q, k: torch.einsum("td,sd->ts", q, k), r"einsum\("):
        "your einsum names 2 axes per operand but q is {q}: name the batch axis too, einsum('btd,bsd->bts', q, k)",
})]

PAIRWISE_SHAPE_TOKENS = tokens_of(PAIRWISE_SHAPE_AXES)


def _pairwise_shape_build(c: Dict[str, Any]) -> Callable:
    def fn(q: Tensor, k: Tensor) -> Tensor:
        return c["form"].fn(q, k)
    return fn


def pairwise_shape_candidates() -> List[Mistake]:
    return list(generate(PAIRWISE_SHAPE_AXES, _pairwise_shape_build, max_changed=1))


def pairwise_context(q: Tensor, k: Tensor, letters: Letters) -> Dict[str, str]:
    return {"q": letters.shape(q.shape), "k": letters.shape(k.shape),
            "k_T": letters.shape(tuple(reversed(k.shape))),
            "k_t01": _transposed(k.shape, 0, 1, letters),
            "k_need": letters.shape(tuple(k.shape[:-2]) + (k.shape[-1], k.shape[-2])),
            "q_t": letters.shape(tuple(q.shape[:-2]) + (q.shape[-1], q.shape[-2]))}


def _transposed(shape: Sequence[int], a: int, b: int, letters: Letters) -> str:
    shape = list(shape)
    if max(a, b) >= len(shape):
        return f"an error (it has only {len(shape)} axes)"
    shape[a], shape[b] = shape[b], shape[a]
    return letters.shape(shape)


# --------------------------------------------------------------------------- softmax
# dim: fn(x, dim) -> the axis the code normalises; max: fn(x, d) -> the shift; sum: fn(e, d) -> the
# divisor; base: fn(z) -> the exponentials; output: fn(probabilities) -> what is returned; empty (what
# an all -inf slice becomes): structural.


def _other(x: Tensor, d: int) -> int:
    return 0 if d != 0 else x.ndim - 1


def _softmax_build(c: Dict[str, Any]) -> Callable:
    def fn(x: Tensor, dim: int = -1) -> Tensor:
        d = c["dim"].fn(x, dim)
        empty = str(c["empty"])
        if empty == "uniform":
            x = x.clamp_min(-1e9)
        shift = c["max"].fn(x, d)
        if empty == "zeros":
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        e = c["base"].fn(x - shift)
        total = c["sum"].fn(e, d)
        if empty == "zeros":
            total = torch.where(total > 0, total, torch.ones_like(total))
        if str(c["output"]) == "log" and str(c["base"]) == "e":
            return (x - shift) - torch.log(total)  # (log of e / total, without exp's underflow to log 0)
        return c["output"].fn(e / total)
    return fn


SOFTMAX_AXES = [
    Axis("dim", Choice("given", lambda x, dim: dim % x.ndim), {
        Choice("last", lambda x, dim: x.ndim - 1):
            "you always normalise over the last axis and ignore the `dim` argument: softmax(x, dim={dim}) must "
            "normalise along axis {dim}",
    }),
    Axis("sum", Choice("dim", lambda e, d: e.sum(d, keepdim=True)), {
        Choice("other", lambda e, d: e.sum(_other(e, d), keepdim=True)):
            "you normalise over the wrong axis: with dim={dim}, every slice along axis {dim} must sum to 1; use dim in "
            "both the max and the sum (with keepdim=True)",
        Choice("global", lambda e, d: e.sum()):
            "you divide by the sum over the whole tensor; divide by the sum along `dim` (keepdim=True), so that each "
            "slice sums to 1",
        Choice("last", lambda e, d: e.sum(-1, keepdim=True)):
            "you take the maximum along dim but the sum over the last axis: with dim={dim}, every slice along axis "
            "{dim} must sum to 1",
    }),
    Axis("max", Choice("dim", lambda x, d: x.amax(d, keepdim=True)), {
        Choice("none", lambda x, d: torch.zeros((), dtype=x.dtype)):
            "no max-subtraction: on large logits exp(x) overflows to inf and inf/inf gives NaN. Subtract "
            "x.amax(dim, keepdim=True) before exp: softmax(x) = softmax(x - c)",
        Choice("global", lambda x, d: x.max()):
            "you subtract the maximum of the whole tensor; a slice far below it underflows to exp(...) = 0 everywhere "
            "and 0/0 gives NaN. Subtract the maximum of each slice along `dim` (x.amax(dim, keepdim=True))",
        Choice("last", lambda x, d: x.amax(-1, keepdim=True)):
            "you subtract the maximum over the last axis but normalise along dim={dim}: a slice along dim can lie far "
            "below those maxima and underflow to 0/0 = NaN. Take the maximum along the same `dim` as the sum",
        Choice("other", lambda x, d: x.amax(_other(x, d), keepdim=True)):
            "you subtract the maximum over another axis than the one you normalise: a slice can lie far below those "
            "maxima and underflow to 0/0 = NaN. Take the maximum along `dim`, as the sum",
        Choice("min", lambda x, d: x.amin(d, keepdim=True)):
            "you subtract the minimum of each slice, not its maximum: every exponent x - min is then >= 0, and on a "
            "large spread exp overflows to inf (inf/inf = NaN). Subtract x.amax(dim, keepdim=True), so that every "
            "exponent is <= 0",
        Choice("mean", lambda x, d: x.mean(d, keepdim=True)):
            "you subtract the mean of each slice, not its maximum: the entries above the mean keep positive "
            "exponents, and on a large spread exp overflows to inf (inf/inf = NaN). Subtract x.amax(dim, "
            "keepdim=True), so that every exponent is <= 0",
    }),
    Axis("base", Choice("e", torch.exp), {
        Choice("2", torch.exp2): "you use 2**x (exp2) instead of exp: softmax is e^x / Σ e^x",
        Choice("10", lambda z: torch.pow(10.0, z)): "you use 10**x instead of exp: softmax is e^x / Σ e^x",
    }),
    Axis("output", Choice("probabilities", lambda p: p), {
        Choice("log", torch.log): "you return log-probabilities (a log-softmax): return the probabilities "
                                  "themselves, exp(x - max) / sum",
    }),
    Axis("empty", "zeros", {
        "nan": "a slice that is all -inf (a query with no allowed key) gives NaN: its maximum is -inf and "
               "-inf - (-inf) = NaN (or exp gives all zeros and 0/0 = NaN). The notebook asks for zeros there: "
               "where the maximum is not finite subtract 0, where the sum is 0 divide by 1",
        "uniform": "a slice that is all -inf gives uniform weights instead of zeros: -inf replaced by a finite "
                   "number makes every entry of that slice equal. Keep -inf, and give such a slice zeros",
    }),
]


def _softmax_valid(c: Dict[str, Any]) -> bool:
    # (with dim ignored, the last axis is the learner's dim: "max over the last axis" says nothing more)
    n = _named(c)
    return not (n["dim"] == "last" and (n["max"] == "last" or n["sum"] == "last"))


def softmax_variants() -> Iterable[Mistake]:
    return generate(SOFTMAX_AXES, _softmax_build, valid=_softmax_valid)


# max: fn(x, dim) -> what is subtracted; sum: fn(e, dim) -> the divisor, the way the learner wrote them.
SOFTMAX_SHAPE_AXES = [
    Axis("max", Choice("keepdim", lambda x, dim: x.amax(dim, keepdim=True)), {
        Choice("no_keepdim", lambda x, dim: x.amax(dim), r"(amax|max)\("):
            "the maximum along dim without keepdim=True drops that axis ({x} becomes {x_drop}), so it no longer "
            "lines up with x: x.amax(dim, keepdim=True)",
        Choice("tuple", lambda x, dim: x.max(dim), r"\.max\("):
            "x.max(dim) returns a pair (values, indices), not a tensor: use x.amax(dim, keepdim=True) or "
            "x.max(dim, keepdim=True).values",
    }),
    Axis("sum", Choice("keepdim", lambda e, dim: e.sum(dim, keepdim=True)), {
        Choice("no_keepdim", lambda e, dim: e.sum(dim), r"sum\("):
            "the sum along dim without keepdim=True drops that axis ({x} becomes {x_drop}), so it no longer lines up "
            "with the exponentials: e.sum(dim, keepdim=True)",
    }),
]

SOFTMAX_SHAPE_TOKENS = tokens_of(SOFTMAX_SHAPE_AXES)


def _softmax_shape_build(c: Dict[str, Any]) -> Callable:
    def fn(x: Tensor, dim: int = -1) -> Tensor:
        e = torch.exp(x - c["max"].fn(x, dim))
        return e / c["sum"].fn(e, dim)
    return fn


def softmax_shape_candidates() -> List[Mistake]:
    return list(generate(SOFTMAX_SHAPE_AXES, _softmax_shape_build))


def softmax_context(x: Tensor, dim: int, letters: Letters) -> Dict[str, str]:
    d = dim % x.ndim
    return {"x": letters.shape(x.shape), "x_drop": letters.shape([n for i, n in enumerate(x.shape) if i != d]),
            "dim": str(dim)}


# --------------------------------------------------------------------------- causal_mask
# diagonal: how many positions past its own a query sees (an integer); align: fn(t, s) -> the
# absolute position of query 0; polarity: fn(allowed) -> the mask's truth; shape: fn(mask);
# dtype: fn(allowed) -> the returned tensor.


def _causal_build(c: Dict[str, Any]) -> Callable:
    def fn(seq_len_q: int, seq_len_k: Optional[int] = None) -> Tensor:
        t = seq_len_q
        s = t if seq_len_k is None else seq_len_k
        i = torch.arange(t).unsqueeze(-1)
        j = torch.arange(s).unsqueeze(0)
        allowed = j <= i + c["align"].fn(t, s) + int(str(c["diagonal"]))
        return c["dtype"].fn(c["shape"].fn(c["polarity"].fn(allowed)))
    return fn


CAUSAL_AXES = [
    Axis("diagonal", "0", {
        "-1": "off by one: your mask blocks the diagonal, but each query may attend to its own position (use <=, or "
              "torch.tril with diagonal=S - T)",
        "1": "off by one: each query may also see the next position, so the future leaks in. Query i may see keys up "
             "to its own position only",
    }),
    Axis("align", Choice("lower_right", lambda t, s: s - t), {
        Choice("upper_left", lambda t, s: 0):
            "aligned to the upper left when S > T: with a cache, query i sits at absolute position S - T + i, so the "
            "last query must see every key (torch.tril(..., diagonal=S - T))",
        Choice("flipped", lambda t, s: t - s):
            "your offset is T - S where it must be S - T: query i sits at absolute position S - T + i, so with S > T "
            "it sees more keys than i, not fewer",
    }),
    Axis("polarity", Choice("attend", lambda m: m), {
        Choice("blocked", lambda m: ~m):
            "polarity inverted: in this course True means 'may attend', so the lower triangle must be True "
            "(torch.nn.MultiheadAttention uses the opposite convention)",
    }),
    Axis("shape", Choice("TS", lambda m: m), {
        Choice("ST", lambda m: m.T):
            "your mask has shape (S, T), keys as rows: it must be (T, S), one row per query and one column per key",
    }),
    Axis("dtype", Choice("bool", lambda m: m), {
        Choice("float", lambda m: m.float()):
            "return a bool tensor (True = may attend), not 0/1 numbers: masked_fill and "
            "F.scaled_dot_product_attention read a float mask as values to add to the scores",
        Choice("int", lambda m: m.long()):
            "return a bool tensor (True = may attend), not integers 0/1: `~` on integers flips every bit (~1 is -2) "
            "instead of negating the mask",
        Choice("additive", lambda m: torch.zeros(m.shape).masked_fill(~m, float("-inf"))):
            "you return an additive 0/-inf mask; this course's masks are bool (True = may attend). Return the "
            "comparison itself, e.g. j <= i + (S - T)",
    }),
]


def causal_variants() -> Iterable[Mistake]:
    return generate(CAUSAL_AXES, _causal_build)


# --------------------------------------------------------------------------- scaled_dot_product_attention
# scores: fn(q, k) -> raw scores; scale: fn(q, k, v) -> (factor on the scores, divisor of the
# weights); softmax: fn(scores) -> weights; mask: fn(mask) -> the mask used (None: none); fill: the
# value blocked scores get; stage (where the mask acts) and empty (what a query with no allowed key
# gets): structural; values: fn(weights, k, v) -> out; returns: fn(out, weights, scores) -> the pair
# returned.


def _heads(q: Tensor) -> int:
    return q.shape[-3] if q.ndim >= 4 else 1


def _attention_build(c: Dict[str, Any]) -> Callable:
    def fn(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        factor, divisor = c["scale"].fn(q, k, v)
        s = c["scores"].fn(q, k) * factor
        m = None if mask is None else c["mask"].fn(mask)
        before = str(c["stage"]) == "before"
        if m is not None and before:
            s = s.masked_fill(~m, c["fill"].fn)
        if m is not None and str(c["stage"]) == "added":
            s = s + m.to(s.dtype)
        w = c["softmax"].fn(s)
        if m is not None and str(c["stage"]) == "after":
            w = w.masked_fill(~m, 0.0)
        if m is not None and before and str(c["empty"]) == "zeros":
            w = torch.nan_to_num(w, nan=0.0)
        w = w / divisor
        return c["returns"].fn(c["values"].fn(w, k, v), w, s)
    return fn


def _scale(f: Callable[[Tensor, Tensor, Tensor], float], after: bool = False) -> Callable:
    return lambda q, k, v: (1.0, f(q, k, v)) if after else (f(q, k, v), 1.0)


ATTENTION_AXES = [
    Axis("scale", Choice("sqrt_dk", _scale(lambda q, k, v: 1 / math.sqrt(q.shape[-1]))), {
        Choice("none", _scale(lambda q, k, v: 1.0)):
            "no 1/√d_k scale: your weights are softmax(QKᵀ). Divide the scores by √d_k = √{dk}, or the softmax "
            "saturates as d_k grows",
        Choice("dk", _scale(lambda q, k, v: 1 / q.shape[-1])):
            "you scale by 1/d_k = 1/{dk}; the scale is 1/√d_k = 1/√{dk}. It keeps the scores' variance near 1 when q "
            "and k have unit variance",
        Choice("times_sqrt_dk", _scale(lambda q, k, v: math.sqrt(q.shape[-1]))):
            "you multiply the scores by √d_k instead of dividing by it: scores = QKᵀ / √d_k",
        Choice("sqrt_model", _scale(lambda q, k, v: 1 / math.sqrt(_heads(q) * q.shape[-1]))):
            "you scale by 1/√D (the model width H·Dh = {heads}·{dk}); each head scales by its own width: "
            "1/√Dh = 1/√{dk} = 1/√q.shape[-1]",
        Choice("sqrt_t", _scale(lambda q, k, v: 1 / math.sqrt(q.shape[-2]))):
            "your scores are scaled by 1/√T = 1/√{T} (T is the number of queries); scale by 1/√d_k = 1/√{dk}, the "
            "width of the queries and keys (q.shape[-1])",
        Choice("sqrt_s", _scale(lambda q, k, v: 1 / math.sqrt(k.shape[-2]))):
            "your scores are scaled by 1/√S = 1/√{S} (S is the number of keys); scale by 1/√d_k = 1/√{dk}, the "
            "width of the queries and keys (q.shape[-1])",
        Choice("sqrt_dv", _scale(lambda q, k, v: 1 / math.sqrt(v.shape[-1]))):
            "your scores are scaled by 1/√Dv = 1/√{Dv} (Dv is the width of the values); scale by 1/√d_k = 1/√{dk}, "
            "the width of the queries and keys (q.shape[-1])",
        Choice("q_dim1", _scale(lambda q, k, v: 1 / math.sqrt(q.shape[1]))):
            "you scale by 1/√q.shape[1], which is d_k only for 2-D inputs (for (B, T, Dk) it is T, for "
            "(B, H, T, Dh) it is H): d_k is the last axis, q.shape[-1]",
        Choice("q_dim0", _scale(lambda q, k, v: 1 / math.sqrt(q.shape[0]))):
            "you scale by 1/√q.shape[0], the size of the first axis (T for 2-D inputs, B with a batch): d_k is the "
            "last axis, q.shape[-1]",
        Choice("after_softmax", _scale(lambda q, k, v: math.sqrt(q.shape[-1]), after=True)):
            "you divide the weights by √d_k after the softmax, so the rows sum to 1/√d_k, not 1: the scale belongs "
            "to the scores, before the softmax",
    }),
    Axis("softmax", Choice("keys", lambda s: torch.softmax(s, dim=-1)), {
        Choice("queries", lambda s: torch.softmax(s, dim=-2)):
            "your weights sum to 1 over the queries, not the keys: softmax over dim=-1 (each query's row of weights "
            "sums to 1)",
        Choice("dim1", lambda s: torch.softmax(s, dim=1)):
            "softmax over dim=1 normalises the keys only for 2-D scores (for (B, T, S) it normalises the queries, "
            "for (B, H, T, S) the heads): use dim=-1, the last axis",
        Choice("dim2", lambda s: torch.softmax(s, dim=2)):
            "softmax over dim=2 normalises the keys only for (B, T, S) scores (for (B, H, T, S) it normalises the "
            "queries): use dim=-1, the last axis",
        Choice("both", lambda s: torch.softmax(s.flatten(-2), dim=-1).reshape(s.shape)):
            "you normalise over the whole (T, S) matrix at once: softmax over the keys only (dim=-1), so that each "
            "query's row sums to 1",
    }),
    Axis("mask", Choice("given", lambda m: m), {
        Choice("ignored", lambda m: None):
            "your output is what attention gives with no mask at all: the mask argument is not used",
        Choice("inverted", lambda m: ~m):
            "mask polarity inverted: True means 'may attend', so block the positions where the mask is False "
            "(masked_fill(~mask, -inf)). torch.nn.MultiheadAttention uses the opposite convention",
    }),
    Axis("fill", Choice("-inf", float("-inf")), {
        Choice("zero", 0.0):
            "you fill the blocked scores with 0, an ordinary score: blocked keys still get weight (e^0 against the "
            "others). Fill them with -inf, so that they get weight exactly 0",
        Choice("finite", -1e9):
            "you fill the blocked scores with a large finite negative number: a query with no allowed key then gets "
            "uniform weights (the mean of the values) instead of weights 0 and output 0",
    }),
    Axis("stage", "before", {
        "after": "the mask is applied after the softmax: the blocked weights are zeroed but the rows no longer sum "
                 "to 1. Fill the blocked scores with -inf before the softmax",
        "added": "you add the bool mask to the scores, which adds 1 where a key is allowed and blocks nothing: fill "
                 "the blocked scores with -inf, scores.masked_fill(~mask, float('-inf'))",
    }),
    Axis("empty", "zeros", {
        "nan": "the weights of a query with no allowed key are NaN: every score of its row is -inf, and a softmax "
               "of such a row computes -inf - (-inf) = NaN, as torch.softmax does (zeroing the blocked weights "
               "after a softmax and dividing by their sum gives 0/0 = NaN there too). Use a softmax that gives "
               "zeros for an all -inf row, as your softmax of section 2 must (where the maximum is not finite "
               "subtract 0, where the sum is 0 divide by 1)",
    }),
    Axis("scores", Choice("qk", lambda q, k: q @ _t(k)), {
        Choice("kq", lambda q, k: k @ _t(q)):
            "your scores are K Qᵀ, keys as rows and queries as columns: scores = q @ k.transpose(-2, -1), (..., T, S)",
    }),
    Axis("values", Choice("v", lambda w, k, v: w @ v), {
        Choice("k", lambda w, k, v: w @ k): "your output weights the keys, not the values: out = weights @ v",
    }),
    Axis("returns", Choice("out_weights", lambda out, w, s: (out, w)), {
        Choice("weights_out", lambda out, w, s: (w, out)): "you return (weights, out); the function returns "
                                                           "(out, weights)",
        Choice("scores", lambda out, w, s: (out, s)): "the second result you return is the scores before the "
                                                      "softmax, not the weights",
    }),
]


def _attention_valid(c: Dict[str, Any]) -> bool:
    n = _named(c)
    if n["mask"] == "ignored" and (n["fill"] != "-inf" or n["stage"] != "before" or n["empty"] != "zeros"):
        return False  # (what a mask is filled with cannot matter when it is not used)
    if n["stage"] != "before" and (n["fill"] != "-inf" or n["empty"] != "zeros"):
        return False
    if n["fill"] != "-inf" and n["empty"] != "zeros":
        return False  # (a finite fill never gives NaN)
    return True


def attention_variants() -> Iterable[Mistake]:
    return generate(ATTENTION_AXES, _attention_build, valid=_attention_valid)


def attention_context(q: Tensor, k: Tensor, v: Tensor) -> Dict[str, Any]:
    return {"dk": q.shape[-1], "heads": _heads(q), "D": _heads(q) * q.shape[-1], "T": q.shape[-2],
            "S": k.shape[-2], "Dv": v.shape[-1]}


# scores: fn(q, k); mask: fn(mask) -> the mask as used; softmax: the dim; values: fn(weights, v) -> out,
# each the way the learner wrote it.
_LAST_TWO = "transpose the last two axes, k.transpose(-2, -1)"

ATTENTION_SHAPE_AXES = [
    Axis("scores", Choice("qkT", lambda q, k: q @ _t(k)), {
        Choice("no_t", lambda q, k: q @ k, r"@\s*k\b(?!\s*\.)"):
            "`q @ k` multiplies {q} by {k}: the inner sizes Dk and S do not match. The keys must stand as columns, "
            "{k_need}: q @ k.transpose(-2, -1)",
        Choice("T", lambda q, k: q @ k.T, r"k\.T\b"):
            "`k.T` on a {k} tensor reverses all its axes, giving {k_T}; the scores need {k_need}: transpose only the "
            "last two axes, k.transpose(-2, -1) (or k.mT)",
        Choice("t12", lambda q, k: q @ k.transpose(1, 2), r"transpose\(\s*(1\s*,\s*2|2\s*,\s*1)\s*\)"):
            "`k.transpose(1, 2)` on a {k} tensor gives {k_t12}; the scores need {k_need}: " + _LAST_TWO,
        Choice("t01", lambda q, k: q @ k.transpose(0, 1), r"transpose\(\s*(0\s*,\s*1|1\s*,\s*0)\s*\)"):
            "`k.transpose(0, 1)` on a {k} tensor gives {k_t01}; the scores need {k_need}: " + _LAST_TWO,
        Choice("t23", lambda q, k: q @ k.transpose(2, 3), r"transpose\(\s*(2\s*,\s*3|3\s*,\s*2)\s*\)"):
            "`k.transpose(2, 3)` on a {k} tensor gives {k_t23}; the scores need {k_need}: " + _LAST_TWO
            + ", which works whatever the number of leading axes",
        Choice("bmm", lambda q, k: torch.bmm(q, k.transpose(1, 2)), r"bmm\("):
            "`torch.bmm` takes only 3-D tensors, but q is {q}: use q @ k.transpose(-2, -1), which works with any "
            "number of leading axes",
        Choice("bmm_last", lambda q, k: torch.bmm(q, _t(k)), r"bmm\("):
            "`torch.bmm` takes only 3-D tensors, but q is {q}: use q @ k.transpose(-2, -1), which works with any "
            "number of leading axes",
        Choice("mm", lambda q, k: torch.mm(q, k.t()), r"\bmm\(|\.t\(\)"):
            "`torch.mm` and `.t()` take only 2-D matrices, but q is {q}: use q @ k.transpose(-2, -1), which works "
            "with any number of leading axes",
        Choice("einsum3", lambda q, k: torch.einsum("btd,bsd->bts", q, k), r"einsum\("):
            "your einsum names exactly 3 axes per operand, but q is {q}: write the leading axes as `...`, "
            "einsum('...td,...sd->...ts', q, k)",
        Choice("einsum2", lambda q, k: torch.einsum("td,sd->ts", q, k), r"einsum\("):
            "your einsum names exactly 2 axes per operand, but q is {q}: write the leading axes as `...`, "
            "einsum('...td,...sd->...ts', q, k)",
        Choice("kq", lambda q, k: k @ _t(q), r"k\s*@\s*q"):
            "`k @ q.transpose(-2, -1)` gives (..., S, T) scores, keys as rows: scores = q @ k.transpose(-2, -1), {w}",
    }),
    Axis("values", Choice("w_v", lambda w, v: w @ v), {
        Choice("wT", lambda w, v: _t(w) @ v, r"(\.T|transpose\([^)]*\)|\.mT)\s*@\s*v"):
            "`weights.transpose(-2, -1) @ v` multiplies {w_T} by {v}: the weights {w} already have one row per "
            "query, out = weights @ v, {w} @ {v}",
        Choice("v_w", lambda w, v: v @ w, r"\bv\s*@"):
            "`v @ weights` multiplies {v} by {w}: the product goes the other way, out = weights @ v",
        Choice("vT", lambda w, v: w @ _t(v), r"v\.(T|mT|transpose)"):
            "`weights @ v.transpose(-2, -1)` multiplies {w} by {v_T}: out = weights @ v, {w} @ {v}",
        Choice("bmm", lambda w, v: torch.bmm(w, v), r"bmm\("):
            "`torch.bmm` takes only 3-D tensors, but the weights are {w}: out = weights @ v works with any number of "
            "leading axes",
    }),
    Axis("mask", Choice("given", lambda m: m), {
        Choice("unsqueeze1", lambda m: m.unsqueeze(1), r"unsqueeze\(\s*1\s*\)|\[\s*:\s*,\s*None"):
            "`mask.unsqueeze(1)` turns the mask {mask} into {mask_u1}, which does not broadcast against the scores "
            "{w}: use the mask as given, it already broadcasts to (..., T, S)",
        Choice("transposed", lambda m: _t(m), r"mask\.(T|mT|transpose)"):
            "you transpose the mask ({mask} becomes {mask_T}); it is already (..., T, S), one row per query: use it "
            "as given",
    }),
    Axis("softmax", Choice("-1", -1), {
        Choice("2", 2, r"\b2\s*\)|dim\s*=\s*2"):
            "softmax over dim=2 fails on {w} scores: use dim=-1 (the keys), whatever the number of leading axes",
        Choice("3", 3, r"\b3\s*\)|dim\s*=\s*3"):
            "softmax over dim=3 fails on {w} scores: use dim=-1 (the keys), whatever the number of leading axes",
    }),
]

ATTENTION_SHAPE_TOKENS = tokens_of(ATTENTION_SHAPE_AXES)


def _attention_shape_build(c: Dict[str, Any]) -> Callable:
    def fn(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        s = c["scores"].fn(q, k)
        if mask is not None:
            s = s.masked_fill(~c["mask"].fn(mask), float("-inf"))
        w = torch.softmax(s, dim=c["softmax"].fn)
        return c["values"].fn(w, v), w
    return fn


def attention_shape_candidates() -> List[Mistake]:
    return list(generate(ATTENTION_SHAPE_AXES, _attention_shape_build))


def attention_letters(q: Tensor, k: Tensor, v: Tensor) -> Letters:
    sizes: Dict[str, int] = {}
    if q.ndim >= 3:
        sizes["B"] = q.shape[0]
    if q.ndim >= 4:
        sizes["H"] = q.shape[-3]
    sizes.update({"T": q.shape[-2], "S": k.shape[-2], "Dk": q.shape[-1], "Dv": v.shape[-1]})
    return Letters(sizes)


def attention_shape_context(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], letters: Letters) -> Dict[str, str]:
    lead = tuple(q.shape[:-2])
    t, s = q.shape[-2], k.shape[-2]
    w = lead + (t, s)
    ctx = {"q": letters.shape(q.shape), "k": letters.shape(k.shape), "v": letters.shape(v.shape),
           "k_T": letters.shape(tuple(reversed(k.shape))), "k_t12": _transposed(k.shape, 1, 2, letters),
           "k_t01": _transposed(k.shape, 0, 1, letters), "k_t23": _transposed(k.shape, 2, 3, letters),
           "k_need": letters.shape(tuple(k.shape[:-2]) + (k.shape[-1], s)),
           "w": letters.shape(w), "w_T": letters.shape(lead + (s, t)),
           "v_T": letters.shape(tuple(v.shape[:-2]) + (v.shape[-1], v.shape[-2]))}
    if mask is not None:
        ctx.update({"mask": letters.shape(mask.shape),
                    "mask_u1": letters.shape(tuple(mask.shape[:1]) + (1,) + tuple(mask.shape[1:])),
                    "mask_T": letters.shape(tuple(mask.shape[:-2]) + (mask.shape[-1], mask.shape[-2]))})
    return ctx
