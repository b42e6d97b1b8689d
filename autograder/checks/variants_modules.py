"""Generated structural variants of the head and module steps (notebooks 02 to 05), and shape
errors said in the course's terms.

Each step describes its answer as independent :class:`~autograder.frame.variants.Axis` choices
(how heads are laid out, which weights each head uses, what the scores are scaled by, where the
residuals and norms sit, what a cache holds, ...); :func:`~autograder.frame.variants.generate`
combines them, simplest first, and the one diagnosis search matches them against the learner's
outputs. A variant is built from the *check's own* reference objects (the parameters copied into
the learner's module), so the judge computes it from a record alone, with no learner code. A new
wrong choice of a listed kind is one more entry in an axis; nothing else changes.

Shape letters: B batch, T new tokens, S keys, D model width, H query heads, G key/value heads,
Dh = D / H, F feed-forward width.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..frame.compare import matches
from ..frame.errors import LearnerError
from ..frame.mistakes import Mistake
from ..frame.results import CheckResult
from ..frame.shape_errors import SizeNames, read_shape_error
from ..frame.variants import Axis, generate

# --------------------------------------------------------------------------- shape errors, in course terms


def explain_shape_error(message: str, sizes: Dict[str, int]) -> Optional[str]:
    """Which operation failed on which shapes and what it needed, in the course's letters, from
    the text of a learner's error (``sizes``: the case's sizes by letter, every reading named:
    ``B·T=10``, ``H/Dh=2``); None if the message is not a shape error the frame's reader knows.
    The module steps apply weights stored as nn.Linear stores them."""
    return read_shape_error(message, SizeNames(sizes), linear_weights=True)


def diagnose_error(result: CheckResult, seen: Sequence[Tuple[Any, Any]], sizes_of: Callable[[Any], Dict[str, int]],
                   what: str = "your code") -> bool:
    """Name a shape error among the learner's outputs in course terms, from the case whose sizes
    read least ambiguously (sizes that happen to be equal are named together, ``H/Dh=2``); True if
    named."""
    found = []
    for case, y in seen:
        if isinstance(y, LearnerError):
            try:
                sizes = sizes_of(case)
            except Exception:
                sizes = {}
            why = explain_shape_error(str(y), sizes)
            if why:
                found.append(why)
    if not found:
        return False
    why = min(found, key=lambda w: w.count("/"))  # the first of the least ambiguous
    result.diagnose(f"{what} failed on these shapes: {why}.")
    return True


# --------------------------------------------------------------------------- split / merge / repeat_kv

SPLIT_AXES = [
    Axis("view", "T,H,Dh", {
        "T,Dh,H": "you reshape D into (Dh, H), dim-major, so head h takes every H-th feature: reshape to "
                  "(B, T, H, Dh), heads first, so head h owns the block [h·Dh, (h+1)·Dh)",
        "H,T,Dh": "you reshape (B, T, D) straight to (B, H, T, Dh): each 'head' then mixes features of "
                  "different positions; reshape to (B, T, H, Dh) first",
    }),
    Axis("swap", "1,2", {
        "none": "you never swap the axes: after the reshape, transpose(1, 2) puts the heads before the "
                "positions",
        "2,3": "you transpose the wrong pair of axes (2 and 3): swap axes 1 and 2, positions and heads",
        "1,3": "you transpose the wrong pair of axes (1 and 3): swap axes 1 and 2, positions and heads",
        "0,2,3,1": "your permute gives (B, H, Dh, T): the heads come first, but each head's positions and "
                   "features are swapped (a head is a (T, Dh) matrix, one row per position). After the reshape "
                   "to (B, T, H, Dh) swap only positions and heads: permute(0, 2, 1, 3), or transpose(1, 2)",
        "0,3,1,2": "your permute gives (B, Dh, T, H): the features took the heads' place. After the reshape to "
                   "(B, T, H, Dh) swap only positions and heads: permute(0, 2, 1, 3), or transpose(1, 2)",
    }),
]

_VIEW_ORDER = {"T,H,Dh": ("T", "H", "Dh"), "T,Dh,H": ("T", "Dh", "H"), "H,T,Dh": ("H", "T", "Dh")}


def _split_variant(c: Dict[str, Any]) -> Callable:
    def fn(x: Tensor, num_heads: int) -> Tensor:
        b, t, d = x.shape
        n = {"T": t, "H": num_heads, "Dh": d // num_heads}
        y = x.reshape(b, *(n[k] for k in _VIEW_ORDER[c["view"]]))
        if c["swap"] == "none":
            return y
        axes = [int(a) for a in c["swap"].split(",")]
        return y.permute(*axes) if len(axes) == y.ndim else y.transpose(*axes)
    return fn


def split_variants() -> List[Mistake]:
    return list(generate(SPLIT_AXES, _split_variant))


MERGE_AXES = [
    Axis("order", "0,2,1,3", {
        "0,1,2,3": "you reshape (B, H, T, Dh) to (B, T, D) without transposing back: positions and heads "
                   "get mixed; transpose(1, 2) first",
        "0,2,3,1": "your features come out ordered (Dh, H), dim-major: head h's features must land in the "
                   "block [h·Dh, (h+1)·Dh); transpose to (B, T, H, Dh), then reshape",
        "0,1,3,2": "you swap the positions and features of each head (axes 2 and 3) instead of the heads and "
                   "positions (axes 1 and 2)",
        "0,3,1,2": "you permute the axes to (B, Dh, H, T) before the reshape: the order must be (B, T, H, Dh)",
    }),
    Axis("combine", "concat", {
        "sum": "you add the heads together: merging concatenates them, (B, T, H·Dh)",
        "mean": "you average the heads: merging concatenates them, (B, T, H·Dh)",
    }),
]


def _merge_variant(c: Dict[str, Any]) -> Callable:
    def fn(x: Tensor) -> Tensor:
        b, h, t, dh = x.shape
        if c["combine"] == "sum":
            return x.sum(1)
        if c["combine"] == "mean":
            return x.mean(1)
        order = tuple(int(i) for i in c["order"].split(","))
        return x.permute(*order).reshape(b, t, h * dh)
    return fn


def merge_variants() -> List[Mistake]:
    return list(generate(MERGE_AXES, _merge_variant, max_changed=1))


REPEAT_AXES = [
    Axis("pattern", "interleave", {
        "tile": "you tile the whole set of heads (x.repeat(...)): query head j then uses K/V head j % G; "
                "the copies of one K/V head must sit next to each other, head j uses j // n_rep "
                "(x.repeat_interleave(n_rep, dim=1))",
    }),
    Axis("dim", 1, {
        2: "you repeat along the positions (dim=2): repeat along the heads, dim=1",
        3: "you repeat along the features (dim=3): repeat along the heads, dim=1",
    }),
    Axis("count", "n_rep", {
        "G": "you repeat each K/V head G times (the number of K/V heads) instead of n_rep times",
        "n_rep+1": "you repeat each K/V head n_rep + 1 times: repeat_interleave(n_rep) gives n_rep copies in all",
    }),
]


def _repeat_variant(c: Dict[str, Any]) -> Callable:
    def fn(x: Tensor, n_rep: int) -> Tensor:
        n = {"n_rep": n_rep, "G": x.shape[1], "n_rep+1": n_rep + 1}[c["count"]]
        if c["pattern"] == "tile":
            reps = [1, 1, 1, 1]
            reps[c["dim"]] = n
            return x.repeat(*reps)
        return x.repeat_interleave(n, dim=c["dim"])
    return fn


def repeat_variants() -> List[Mistake]:
    return list(generate(REPEAT_AXES, _repeat_variant))


# --------------------------------------------------------------------------- attention over heads (shared)


def _scores_scale(c: Dict[str, Any], d: int, dh: int) -> float:
    """What the scores are divided by: the scale axis's choice is a formula in D and Dh
    (``"Dh**0.5"``), so a new wrong scale is one more axis entry."""
    return float(eval(c["scale"], {"__builtins__": {}}, {"D": d, "Dh": dh}))  # the course's own formulas


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], c: Dict[str, Any]):
    """(B, H, T, Dh) attention with the variant's scale, mask handling and softmax axis."""
    scores = (k @ q.transpose(-2, -1) if c.get("scores", "qk") == "kq" else q @ k.transpose(-2, -1)) / scale
    how = c.get("mask", "applied")
    if mask is not None and how == "inverted":  # (a query whose allowed keys all get blocked gets zeros)
        scores = scores.masked_fill(mask.bool(), float("-inf"))
    elif mask is not None and how != "ignored":
        scores = scores.masked_fill(~mask.bool(), float("-inf") if how == "applied" else 0.0)
    w = torch.softmax(scores, dim=-1 if c.get("softmax", "keys") == "keys" else -2)
    if how == "inverted":
        w = torch.nan_to_num(w, nan=0.0)
    return w @ v, w


_SCALE_WRONG = {
    "D**0.5": "you scale the scores by 1/√D, the model width: each head's scores are scaled by 1/√Dh, "
               "its own width",
    "1": "you do not scale the scores: divide them by √Dh",
    "Dh": "you divide the scores by Dh: divide by √Dh",
}
_MASK_WRONG = {
    "ignored": "the mask is never applied to the scores",
    "zero": "masked scores are filled with 0 instead of -inf, so masked keys still get weight",
    "inverted": "the mask's polarity is inverted: you block the keys where the mask is True, but True means "
                "'may attend' (block where it is False, masked_fill(~mask, -inf)); torch.nn.MultiheadAttention "
                "uses the opposite convention",
}

_WEIGHTS_PHRASES = {
    "head0": "every head uses head 0's slice of the projections (rows [0, Dh) of W_q, W_k, W_v): head h "
             "must use its own rows [h·Dh, (h+1)·Dh)",
    "transposed": "you multiply by W instead of its transpose (x @ W, not x @ W.T): an nn.Linear-like "
                  "weight is stored (out_features, in_features)",
    "columns": "each head takes its slice along the wrong axis of W (columns W[:, h·Dh:(h+1)·Dh] instead "
               "of rows W[h·Dh:(h+1)·Dh])",
    "full": "every head uses the same full matrix W (x @ W.T for each head): head h uses only its rows "
            "[h·Dh, (h+1)·Dh), so its output is Dh wide",
}

HEADS_AXES = [
    Axis("weights", "own", _WEIGHTS_PHRASES),
    Axis("scale", "Dh**0.5", _SCALE_WRONG),
    Axis("softmax", "keys", {"queries": "your softmax runs over the queries (dim=-2): each query's "
                                        "weights over the keys must sum to 1 (dim=-1)"}),
    Axis("mask", "applied", _MASK_WRONG),
    Axis("layout", "B,H,T,Dh", {
        "B,T,H,Dh": "you return (B, T, H, Dh): the heads come before the positions, (B, H, T, Dh)",
        "merged": "you return the heads merged into (B, T, D): this step returns each head's output, "
                  "(B, H, T, Dh)",
    }),
]


def _head_weight(w: Tensor, i: int, dh: int, choice: str) -> Tensor:
    """The (Dh, D) weight head ``i`` uses under ``choice`` (its own rows in a correct answer)."""
    if choice == "head0":
        return w[:dh]
    if choice == "transposed":
        return w.T[i * dh:(i + 1) * dh]
    if choice == "columns":
        return w[:, i * dh:(i + 1) * dh].T
    if choice == "full":
        return w
    return w[i * dh:(i + 1) * dh]


def _heads_variant(c: Dict[str, Any]) -> Callable:
    """A variant of ``attention_heads(x, w_q, w_k, w_v, num_heads, mask)`` with (D, D) weights."""
    def fn(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, h: int, mask: Optional[Tensor] = None) -> Tensor:
        d = x.shape[-1]
        dh = d // h
        qs, ks, vs = ([x @ _head_weight(w, i, dh, c["weights"]).T for i in range(h)] for w in (w_q, w_k, w_v))
        q, k, v = (torch.stack(t, dim=1) for t in (qs, ks, vs))  # (B, H, T, Dh)
        out, _ = _attend(q, k, v, _scores_scale(c, d, dh), mask, c)
        if c["layout"] == "B,T,H,Dh":
            return out.transpose(1, 2)
        if c["layout"] == "merged":
            return out.transpose(1, 2).reshape(x.shape[0], x.shape[1], d)
        return out
    return fn


def heads_variants(loop: bool) -> List[Mistake]:
    """Variants of ``attention_heads`` (``loop``: of ``attention_heads_loop``, whose per-head weights
    cannot be sliced along a wrong axis)."""
    def valid(c):
        return not (loop and c["weights"] in ("transposed", "columns", "full"))
    return list(generate(HEADS_AXES, _heads_variant, valid=valid))


# --------------------------------------------------------------------------- attention modules (MHA, GQA)

_SPLIT_LAYOUT = {
    "dim-major": "you split D into (Dh, H), dim-major (view(B, T, Dh, H)), so head h takes every H-th "
                 "feature: view(B, T, H, Dh).transpose(1, 2)",
    "no-transpose": "you split (B, T, D) straight into (B, H, T, Dh) without the transpose: each 'head' "
                    "then mixes positions; view(B, T, H, Dh).transpose(1, 2)",
}
_MERGE_LAYOUT = {
    "dim-major": "you merge the heads with the features ordered (Dh, H): transpose back to (B, T, H, Dh) "
                 "and reshape, so head h fills the block [h·Dh, (h+1)·Dh)",
    "no-transpose": "you merge (B, H, T, Dh) into (B, T, D) without transposing back: positions and heads "
                    "get mixed; transpose(1, 2) first",
}

MODULE_AXES = [
    Axis("weights", "own", {"head0": _WEIGHTS_PHRASES["head0"], "transposed": _WEIGHTS_PHRASES["transposed"]}),
    Axis("split", "ok", _SPLIT_LAYOUT),
    Axis("merge", "ok", _MERGE_LAYOUT),
    Axis("scale", "Dh**0.5", _SCALE_WRONG),
    Axis("mask", "applied", _MASK_WRONG),
    Axis("out", "applied", {
        "missing": "the output projection is missing: merge the heads, then apply out_proj",
        "transposed": "you apply the output projection's weight untransposed (x @ W_o, not x @ W_o.T)",
        "per-head": "you apply the output projection per head (each head through its own (Dh, Dh) block "
                    "of W^O): it must mix the merged heads, out_proj(merge_heads(...))",
    }),
    Axis("returned", "per-head", {"averaged": "you return the attention weights averaged over the heads: "
                                              "return_weights asks for each head's weights, (B, H, T, S)"}),
    Axis("scores", "qk", {"kq": "your scores are K Qᵀ (k @ q.transpose(-2, -1)), one row per key: the scores are "
                                "Q Kᵀ, q @ k.transpose(-2, -1), one row per query, so that the softmax over the "
                                "last axis weighs the keys"}),
]

GQA_AXES = MODULE_AXES[:5] + [
    Axis("groups", "interleave", {
        "tile": "query head h uses K/V group h % G (repeat tiles the groups): it must use group h // (H/G), "
                "each K/V head repeated n_rep times in a row (repeat_interleave)",
    }),
    Axis("cache", "before", {
        "swapped": "you pass the keys and values to cache.update in the wrong order (v, k): update(k, v)",
        "new-only": "you attend only to the new keys and values: use what cache.update returns, every "
                    "cached position",
    }),
    Axis("causal", "lower-right", {
        "upper-left": "your causal mask is aligned to the upper left: with a cache, new query i sits at "
                      "position S - T + i and may see every key up to it",
        "missing": "causal=True changes nothing: every query still sees the future keys. With causal=True "
                   "block key j for new query i where j > S - T + i (a lower-right aligned causal mask, "
                   "combined with any mask given)",
    }),
    MODULE_AXES[5],
]


def _linear(x: Tensor, w: Tensor, b: Optional[Tensor], transposed: bool = False) -> Tensor:
    y = x @ (w if transposed else w.T)
    return y if b is None else y + b


def _split(x: Tensor, n: int, how: str) -> Tensor:
    b, t, d = x.shape
    if how == "dim-major":
        return x.reshape(b, t, d // n, n).permute(0, 3, 1, 2)
    if how == "no-transpose":
        return x.reshape(b, n, t, d // n)
    return x.reshape(b, t, n, d // n).transpose(1, 2)


def _merge(x: Tensor, how: str) -> Tensor:
    b, h, t, dh = x.shape
    if how == "dim-major":
        return x.permute(0, 2, 3, 1).reshape(b, t, h * dh)
    if how == "no-transpose":
        return x.reshape(b, t, h * dh)
    return x.transpose(1, 2).reshape(b, t, h * dh)


def _params(module: Any) -> Dict[str, Optional[Tensor]]:
    """The weights and biases of q_proj, k_proj, v_proj, out_proj of one of the check's own modules."""
    p = {}
    for name in ("q", "k", "v", "out"):
        layer = getattr(module, f"{name}_proj")
        p[name] = layer.weight.detach()
        p[name + "_b"] = None if layer.bias is None else layer.bias.detach()
    return p


def attention_module_forward(c: Dict[str, Any], p: Dict[str, Optional[Tensor]], x: Tensor, h: int, g: int,
                             mask: Optional[Tensor] = None, cache: Optional[Dict[str, Tensor]] = None,
                             causal: bool = False, return_weights: bool = False):
    """The forward of a variant of multi-head (G = H) or grouped-query attention with the
    parameters ``p``; ``cache``: a dict this variant keeps its keys and values in."""
    d = x.shape[-1]
    dh = d // h
    tr = c["weights"] == "transposed"

    def proj(name: str, n: int) -> Tensor:
        w, b = p[name], p[name + "_b"]
        if c["weights"] == "head0":
            w = w[:dh].repeat(n, 1)
            b = None if b is None else b[:dh].repeat(n)
        return _split(_linear(x, w, b, tr), n, c["split"])

    q, k, v = proj("q", h), proj("k", g), proj("v", g)
    if cache is not None:
        how = c.get("cache", "before")
        new_k, new_v = (v, k) if how == "swapped" else (k, v)
        cache["k"] = new_k if "k" not in cache else torch.cat([cache["k"], new_k], dim=-2)
        cache["v"] = new_v if "v" not in cache else torch.cat([cache["v"], new_v], dim=-2)
        if how != "new-only":
            k, v = cache["k"], cache["v"]
    if g != h:
        n_rep = h // g
        if c.get("groups", "interleave") == "tile":
            k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
        else:
            k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
    t, s = q.shape[-2], k.shape[-2]
    full_mask = None if mask is None else mask.bool()
    how = c.get("causal", "lower-right")
    if causal and how != "missing":
        ones = torch.ones(t, s, dtype=torch.bool)
        cm = {"lower-right": lambda: ones.tril(s - t), "upper-left": lambda: ones.tril(0),
              "no-diagonal": lambda: ones.tril(s - t - 1), "future": lambda: ones.triu(s - t)}[how]()
        full_mask = cm if full_mask is None else full_mask & cm
    if full_mask is not None and full_mask.ndim == 3:
        full_mask = full_mask.unsqueeze(1)
    out, w = _attend(q, k, v, _scores_scale(c, d, dh), full_mask, c)
    merged = _merge(out, c["merge"])
    how = c["out"]
    if how == "missing":
        y = merged
    elif how == "per-head":
        blocks = torch.block_diag(*(p["out"][i * dh:(i + 1) * dh, i * dh:(i + 1) * dh] for i in range(h)))
        y = _linear(merged, blocks, p["out_b"])
    else:
        y = _linear(merged, p["out"], p["out_b"], how == "transposed")
    if return_weights:
        return y, (w.mean(1) if c.get("returned", "per-head") == "averaged" else w)
    return y


def mha_variants() -> List[Mistake]:
    """Variants of ``MultiHeadAttention``; ``fn(case)`` with the check's case
    ``(d, h, ref, x, mask[, "weights"])``."""
    def build(c):
        def fn(case):
            d, h, ref, x, mask = case[:5]
            want_weights = len(case) > 5 and case[5] == "weights"
            y = attention_module_forward(c, _params(ref), x, h, h, mask, return_weights=want_weights)
            return y[1] if want_weights else y
        return fn
    return list(generate(MODULE_AXES, build))


def gqa_variants() -> List[Mistake]:
    """Variants of ``GroupedQueryAttention``; ``fn(case)`` with the check's case
    ``("direct", d, h, g, ref, x, mask)`` or ``("decode", d, h, g, ref, x, chunks)``."""
    def build(c):
        def fn(case):
            kind, d, h, g, ref, x, extra = case
            p = _params(ref)
            if kind == "direct":
                return attention_module_forward(c, p, x, h, g, extra)
            cache: Dict[str, Tensor] = {}
            outs, start = [], 0
            for n in extra:
                outs.append(attention_module_forward(c, p, x[:, start:start + n], h, g, None, cache, causal=True))
                start += n
            return torch.cat(outs, dim=1)
        return fn
    return list(generate(GQA_AXES, build))


CAUSAL_AXES = MODULE_AXES[:4] + [
    Axis("causal", "lower-right", {
        "missing": "no causal mask reaches the scores: every query sees the future",
        "future": "your mask is the upper triangle (triu): each query then sees the future, not the past; "
                  "the causal mask keeps keys j <= i, the lower triangle (.tril())",
        "no-diagonal": "your mask leaves out the diagonal (tril(-1), or j < i): a query may attend to its "
                       "own position, j <= i; the first query then has no key at all",
    }),
    MODULE_AXES[5],
]


def causal_attention_variants() -> List[Mistake]:
    """Variants of causal self-attention (a module that builds its own causal mask); ``fn(case)``
    with the case ``(d, h, ref, x)``, ``ref`` holding q_proj, k_proj, v_proj, out_proj."""
    def build(c):
        return lambda case: attention_module_forward(c, _params(case[2]), case[3], case[1], case[1], causal=True)
    return list(generate(CAUSAL_AXES, build))


# --------------------------------------------------------------------------- LayerNorm, FeedForward, block


LN_AXES = [
    Axis("variance", "biased", {"unbiased": "you use the unbiased variance (divide by D - 1, torch.var's "
                                            "default): LayerNorm divides by D (unbiased=False)"}),
    Axis("eps", "inside", {
        "outside": "you add eps to the standard deviation, outside the square root: eps goes inside, "
                   "√(var + eps)",
        "missing": "you never add eps: √(var + eps) keeps a token of near-constant features finite",
        "squared": "you add eps² (or eps outside after squaring): add eps itself to the variance",
    }),
    Axis("axis", "last", {
        "positions": "you normalise over the positions (dim=-2): each token is normalised over its own "
                     "D features, dim=-1",
        "all": "you normalise over the positions and features together: each token is normalised on its "
               "own, over dim=-1",
    }),
    Axis("affine", "both", {
        "none": "the learnable weight and bias are never applied: y = weight · x̂ + bias",
        "weight-only": "the bias is never added: y = weight · x̂ + bias",
        "bias-only": "the weight never multiplies: y = weight · x̂ + bias",
        "swapped": "you swap the weight and the bias (bias · x̂ + weight): y = weight · x̂ + bias",
    }),
]


def layer_norm_forward(c: Dict[str, Any], x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    dims = {"last": (-1,), "positions": (-2,), "all": (-2, -1)}[c["axis"]]
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=c["variance"] == "unbiased")
    how = c["eps"]
    if how == "inside":
        xhat = (x - mean) / torch.sqrt(var + eps)
    elif how == "outside":
        xhat = (x - mean) / (torch.sqrt(var) + eps)
    elif how == "squared":
        xhat = (x - mean) / torch.sqrt(var + eps * eps)
    else:
        xhat = (x - mean) / torch.sqrt(var)
    a = c["affine"]
    if a == "none":
        return xhat
    if a == "weight-only":
        return weight * xhat
    if a == "bias-only":
        return xhat + bias
    if a == "swapped":
        return bias * xhat + weight
    return weight * xhat + bias


def layer_norm_variants() -> List[Mistake]:
    """``fn(case)`` with the LayerNorm check's case ``(x, d, eps, weight, bias)``."""
    def build(c):
        return lambda case: layer_norm_forward(c, case[0], case[3], case[4], case[2])
    return list(generate(LN_AXES, build))


def _act(name: str, asked: str) -> Callable[[Tensor], Tensor]:
    """An activation by name: a few spelled out, any other one torch.nn.functional's of that name
    (so a new wrong activation is one more axis entry)."""
    name = asked if name == "asked" else name
    special = {
        "gelu-tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "none": lambda t: t,
        "sigmoid": torch.sigmoid,  # torch's own: the functional spellings are deprecated
        "tanh": torch.tanh,
    }
    return special.get(name) or getattr(torch.nn.functional, name)


_ACT_PHRASES = {
    "relu": "your FFN uses ReLU whatever activation is asked for",
    "gelu": "your FFN uses the exact GELU where ReLU is asked for",
    "gelu-tanh": "your FFN uses the tanh approximation of GELU: the step asks for the exact GELU, "
                 "x·Φ(x) with erf (F.gelu without approximate='tanh') where GELU is asked, ReLU otherwise",
    "none": "your FFN has no activation between fc1 and fc2 (two linear maps collapse into one)",
    "sigmoid": "your FFN uses a sigmoid as its activation",
    "silu": "your FFN uses SiLU (x·sigmoid(x)) as its activation",
}

FFN_AXES = [
    Axis("activation", "asked", _ACT_PHRASES),
    Axis("where", "between", {
        "after": "your FFN also applies the activation after fc2: fc2(act(fc1(x))) ends with fc2",
        "only-after": "your FFN applies the activation after fc2 instead of between fc1 and fc2",
    }),
    Axis("residual", "none", {
        "input": "your FFN adds its input back (x + ...): the residual connection belongs to the block, "
                 "x + FFN(LN(x)), so the FFN returns fc2(act(fc1(x))) alone",
    }),
]


def feed_forward_forward(c: Dict[str, Any], ffn: Any, x: Tensor, asked: str) -> Tensor:
    act = _act(c["activation"], asked)
    h = ffn.fc1(x)
    if c["where"] != "only-after":
        h = act(h)
    y = ffn.fc2(h)
    y = act(y) if c["where"] != "between" else y
    return x + y if c["residual"] == "input" else y


def feed_forward_variants(asked: str) -> List[Mistake]:
    """``fn(case)`` with the FeedForward check's case ``(x, d, f, activation, ref)``."""
    def build(c):
        return lambda case: feed_forward_forward(c, case[4], case[0], case[3])
    return list(generate(FFN_AXES, build, valid=lambda c: c["activation"] != asked))


BLOCK_AXES = [
    Axis("norms", "asked", {
        "other": "the norms sit where the other placement puts them: pre-norm is x + F(LN(x)), post-norm "
                 "LN(x + F(x))",
        "both": "you normalise both before the sub-layer and after the residual sum, LN(x + F(LN(x))): "
                "pre-norm is x + F(LN(x)), post-norm LN(x + F(x))",
        "sublayer": "you normalise the sub-layer's output inside the residual, x + LN(F(x)): pre-norm is "
                    "x + F(LN(x)), post-norm LN(x + F(x))",
        "none": "the LayerNorms are never applied",
        "twice": "you apply the norm twice to the residual sum, LN(LN(x + F(x))): once is enough",
    }),
    Axis("res1", "yes", {"no": "the attention sub-layer has no residual connection (x + ...)"}),
    Axis("res2", "yes", {"no": "the feed-forward sub-layer has no residual connection (h + ...)"}),
    Axis("ffn_input", "attention", {"x": "your FFN reads the block's input x instead of the attention "
                                         "sub-layer's output"}),
    Axis("norm_order", "1,2", {
        "2,1": "you use norm2 for the attention sub-layer and norm1 for the FFN",
        "1,1": "you use norm1 for both sub-layers: norm2 belongs to the FFN",
    }),
    Axis("final", "none", {"norm2": "you apply norm2 once more to the block's output: the last norm "
                                    "of a pre-norm block sits before the FFN"}),
    Axis("activation", "relu", {"gelu": "your FFN uses GELU where the block asks for ReLU",
                                "none": "your FFN has no activation"}),
    Axis("mask", "passed", {"dropped": "the mask never reaches the attention: pass it on, attn(h, mask)"}),
]


def block_forward(c: Dict[str, Any], ref: Any, x: Tensor, mask: Optional[Tensor], placement: str) -> Tensor:
    order = {"1,2": (ref.norm1, ref.norm2), "2,1": (ref.norm2, ref.norm1), "1,1": (ref.norm1, ref.norm1)}
    n1, n2 = order[c["norm_order"]]
    norms = c["norms"]
    style = {"asked": placement, "other": "post" if placement == "pre" else "pre"}.get(norms, norms)
    act = _act(c["activation"], "relu")

    def attn(h):
        return ref.attn(h, mask) if c["mask"] == "passed" and mask is not None else ref.attn(h)

    def ffn(h):
        return ref.ffn.fc2(act(ref.ffn.fc1(h)))

    def sub(h, f, norm, residual, src=None):
        """One sub-layer: ``f`` reads ``src`` (default ``h``), the residual adds ``h``."""
        src = h if src is None else src
        keep = h if residual == "yes" else 0
        if style == "pre":
            return keep + f(norm(src))
        if style == "post":
            return norm(keep + f(src))
        if style == "both":
            return norm(keep + f(norm(src)))
        if style == "sublayer":
            return keep + norm(f(src))
        if style == "twice":
            return norm(norm(keep + f(src)))
        return keep + f(src)

    h = sub(x, attn, n1, c["res1"])
    out = sub(h, ffn, n2, c["res2"], x if c["ffn_input"] == "x" else None)
    if c["final"] == "norm2":
        out = ref.norm2(out)
    return out


def block_variants() -> List[Mistake]:
    """``fn(case)`` with the block check's case ``(placement, d, h, f, ref, x, mask)``."""
    def build(c):
        return lambda case: block_forward(c, case[4], case[5], case[6], case[0])
    return list(generate(BLOCK_AXES, build))


ENCODER_AXES = [
    Axis("placement", "pre", {"post": "your blocks are post-norm, LN(x + F(x)): build them with "
                                      "norm_placement='pre', x + F(LN(x))"}),
    Axis("final", "after", {
        "missing": "the stack has no final LayerNorm: apply self.norm once, after the last block",
        "before": "you apply the final LayerNorm before the blocks: it belongs after the last block",
        "every": "you apply the final LayerNorm after every block: once, after the last block",
    }),
    Axis("blocks", "own", {
        "shared": "every layer is the same block object (a list repeating one module, [block] * L): build "
                  "a new TransformerBlock for each layer, so each has its own weights",
        "first-only": "only the first block is applied",
    }),
]


def encoder_forward(c: Dict[str, Any], ref: Any, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """A variant of the encoder ``ref`` (``blocks`` of pre-norm blocks, final ``norm``); a
    shared block takes the values of the last one (as copying the weights by name gives it)."""
    blocks = list(ref.blocks)
    if c["blocks"] == "shared":
        blocks = [blocks[-1]] * len(blocks)
    elif c["blocks"] == "first-only":
        blocks = blocks[:1]
    block_choice = {a.name: a.correct for a in BLOCK_AXES}
    if c["final"] == "before":
        x = ref.norm(x)
    for block in blocks:
        x = block_forward(block_choice, block, x, mask, c["placement"])
        if c["final"] == "every":
            x = ref.norm(x)
    return ref.norm(x) if c["final"] == "after" else x


def encoder_variants() -> List[Mistake]:
    """``fn(case)`` with the case ``(ref, x)``."""
    def build(c):
        return lambda case: encoder_forward(c, case[0], case[1])
    return list(generate(ENCODER_AXES, build))


# --------------------------------------------------------------------------- KVCache

KV_AXES = [
    Axis("axis", -2, {
        1: "you concatenate along the heads (dim=1): new positions go along the sequence axis, dim=-2 of "
           "(B, G, S, Dh)",
        -1: "you concatenate along the features (dim=-1): new positions go along the sequence axis, dim=-2",
        0: "you concatenate along the batch (dim=0): new positions go along the sequence axis, dim=-2",
    }),
    Axis("order", "old-first", {"new-first": "you put the new positions before the cached ones: the oldest "
                                             "come first, torch.cat([cached, new], dim=-2)"}),
    Axis("keep", "append", {"overwrite": "you overwrite the cache with the new keys and values instead of "
                                         "appending to it: update returns everything cached so far"}),
    Axis("pair", "k,v", {"v,k": "update returns (v, k): return the keys first, (k, v)"}),
]


def kv_cache_returns(c: Dict[str, Any], updates: Sequence[Tuple[Tensor, Tensor]]) -> List[Tuple[Tensor, Tensor]]:
    """What a variant of ``KVCache.update`` returns on each of ``updates``."""
    held: Dict[str, Tensor] = {}
    out = []
    for k, v in updates:
        for name, new in (("k", k), ("v", v)):
            if name not in held or c["keep"] == "overwrite":
                held[name] = new
            else:
                parts = [held[name], new] if c["order"] == "old-first" else [new, held[name]]
                held[name] = torch.cat(parts, dim=c["axis"])
        out.append((held["v"], held["k"]) if c["pair"] == "v,k" else (held["k"], held["v"]))
    return out


def kv_cache_variants() -> List[Mistake]:
    """``fn(updates)`` -> the list of pairs a variant's update returns."""
    def build(c):
        return lambda updates: kv_cache_returns(c, updates)
    return list(generate(KV_AXES, build))


# --------------------------------------------------------------------------- the search, for a step's check


def diagnose_search(result: CheckResult, seen: Sequence[Tuple[Any, Any]], mistakes: Iterable[Mistake],
                    variants: Callable[[], Iterable[Mistake]], produce: Callable[[Mistake, Any], Any],
                    variant_output: Callable[[Mistake, Any], Any], *,
                    sizes_of: Callable[[Any], Dict[str, int]] = lambda case: {},
                    what: str = "your function", prefix: str = "", atol: float = 1e-5,
                    expected: Optional[Callable[[Any], Any]] = None) -> bool:
    """Name what the learner did: the hand-written mistakes first (their advice is the most
    specific), then the generated variants, cheapest first; a shape error in course terms when no
    output is a tensor or nothing matched. ``expected(case)``: when given, a search only runs if
    some tensor output differs from it (else nothing needs explaining). True if something was named."""
    from ..frame.diagnosis import matching_mistake

    tensors = [(case, y) for case, y in seen if isinstance(y, Tensor)]
    if tensors and expected is not None:
        try:
            if all(matches(y, expected(case), atol=atol) for case, y in tensors):
                tensors = []
        except Exception:
            pass
    if tensors:
        m = matching_mistake(seen, mistakes, produce, atol=atol) or matching_mistake(
            seen, variants(), variant_output, atol=atol, cheapest_first=True)
        if m is not None:
            result.diagnose(prefix + m.advice)
            return True
    if diagnose_error(result, seen, sizes_of, prefix + what):
        return True
    if not any(isinstance(y, Tensor) for _, y in seen):
        for _, y in seen:
            if isinstance(y, LearnerError):
                result.diagnose(f"{prefix}{what} {y}.")
                return True
    return False


def with_explanation(error: Any, sizes: Dict[str, int]) -> str:
    """A learner's error, followed by what it means in the course's letters when it is a shape error."""
    why = explain_shape_error(str(error), sizes)
    return f"{error}" if why is None else f"{error} — {why}"
