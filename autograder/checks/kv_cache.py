"""Step checks for notebook 05: ``repeat_kv``, ``GroupedQueryAttention``, ``KVCache`` and
``kv_cache_bytes``.

The central probe is cache == no cache: decoding a sequence piece by piece (a prompt, then one
token at a time, then several at once) with ``causal=True`` must give the outputs of full causal
attention over the whole sequence, which holds only when the causal mask is aligned to the lower
right (new query i sits at absolute position S - T + i). ``GroupedQueryAttention`` is checked with
``mhsa_lib.KVCache`` and ``KVCache`` with ``mhsa_lib.GroupedQueryAttention``, so each step is
graded on its own. After decoding, the GQA check also looks at what the cache holds: G key/value
heads, not the H heads that repeat_kv makes (a cache of H heads gives the right outputs and saves
no memory).

Every look at the learner's objects is an observation (:mod:`autograder.frame.observe`): the
learner's caches are stateful, so their updates and lengths are observed in the same order in the
probe and in the judge. The course's own objects (references, known mistakes) run here, unrecorded
(:func:`_run_here`).

Shape letters: B batch, T new tokens, S cached + new positions, D model width, H query heads,
G key/value heads, Dh = D / H.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

import mhsa_lib

from ..frame import (
    CheckResult,
    Comparison,
    LearnerError,
    attempt,
    call,
    close,
    compare,
    describe_failures,
    distinct_sizes,
    find_shortcuts,
    matches,
    observe,
    randn,
    run_safely,
)
from ..frame.diagnosis import matching_mistake
from ..frame.modules import build, diagnose_modules, materialise, not_implemented, reference
from ..frame.registry import step
from ..mistakes import kv_cache as M
from . import variants_modules as V
from .heads import HARD_CODED, describe_output

GQA_POINTS = 5.0
KV_CACHE_POINTS = 3.0
KV_CACHE_BYTES_POINTS = 2.0

GQA_LIBRARY = ("GroupedQueryAttention", "attend_heads", "MultiHeadAttention", "_MultiHeadBase")
GQA_TORCH = ("multi_head_attention_forward",)
KV_CACHE_LIBRARY = ("KVCache", "StaticKVCache")

# (H, G) pairs with 1 < G < H, where repeat and repeat_interleave pair heads differently.
_GROUPED = ((4, 2), (6, 2), (6, 3), (8, 2), (8, 4))


# --------------------------------------------------------------------------- GroupedQueryAttention


def _gqa_reference(d: int, h: int, g: int, gen: torch.Generator) -> nn.Module:
    return reference(mhsa_lib.GroupedQueryAttention(d, h, g), gen)


def _gqa_sizes(gen: torch.Generator) -> Tuple[int, int, int, int, int]:
    h, g = _GROUPED[int(torch.randint(0, len(_GROUPED), (1,), generator=gen))]
    b, t, dh = [n for n in distinct_sizes(gen, 6, 2, 9) if n not in (h, g)][:3]
    return b, t, h, g, dh


def _chunks(gen: torch.Generator) -> List[int]:
    """A prompt, two single tokens, three tokens at once, one more token."""
    return [int(torch.randint(3, 6, (1,), generator=gen)), 1, 1, 3, 1]


def _run_here(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Like :func:`attempt`, for the course's own code (a reference, a known mistake) with the course's
    own objects: run in this process in the probe and in the judge alike, never recorded."""
    try:
        return run_safely(fn, args, kwargs)
    except LearnerError as e:
        return e


def _causal_hint(y: Any) -> Any:
    if isinstance(y, LearnerError) and "causal" in str(y) and "keyword" in str(y):
        return LearnerError(f"{y} — forward needs a keyword argument causal=False: with causal=True "
                            "it blocks future keys, aligned to the lower right")
    return y


def decode(module: Any, x: Tensor, chunks: Sequence[int], cache: Any, runner: Callable = attempt) -> Any:
    """Feed ``x`` (B, S, D) in pieces with ``causal=True`` and one cache; the outputs joined (B, S, D).

    ``runner``: :func:`attempt` (an observation: the learner's module, or the learner's cache) or
    :func:`_run_here` (the course's module and cache)."""
    outs, start = [], 0
    for n in chunks:
        y = _causal_hint(runner(module, x[:, start : start + n].clone(), cache=cache, causal=True))
        if isinstance(y, LearnerError):
            return y
        if not isinstance(y, Tensor) or tuple(y.shape) != (x.shape[0], n, x.shape[2]):
            return LearnerError(f"a step of {n} token(s) returned {describe_output(y)}, expected (B, T, D) = "
                                f"{(x.shape[0], n, x.shape[2])}")
        outs.append(y)
        start += n
    return torch.cat(outs, dim=1)


@step("GroupedQueryAttention", forbidden=(GQA_TORCH + ("MultiheadAttention",), GQA_LIBRARY),
      points=GQA_POINTS, notebook="05_kv_cache_and_head_sharing", home="kv_cache",
      kind="module", reference=mhsa_lib.GroupedQueryAttention,
      isolate=("repeat_kv", "split_heads", "merge_heads", "scaled_dot_product_attention", "softmax"))
def check_grouped_query_attention(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``GroupedQueryAttention(d_model, num_heads, num_kv_heads, bias=False)`` with
    ``forward(x, mask=None, cache=None, *, causal=False)`` (max 5)."""
    module = attempt(cls, 12, 6, 2)
    if isinstance(module, LearnerError):
        result.zero_reason = f"GroupedQueryAttention(12, 6, 2) {module}"
        return
    try:
        problems = observe("structure", _gqa_structure, cls, module)
    except LearnerError as e:
        problems = [f"looking at GroupedQueryAttention(12, 6, 2)'s layers {e}"]
    result.add("structure: q_proj, out_proj nn.Linear(D, D); k_proj, v_proj nn.Linear(D, G·Dh); no "
               "biases by default; num_heads not divisible by num_kv_heads raises ValueError", 0.5,
               not problems, "; ".join(problems))

    seen: List[Tuple[Any, Any, Tensor]] = []

    def direct(d, h, g, ref, x, mask=None):
        mod = build(cls, (d, h, g), {}, ref)
        if isinstance(mod, str):
            return mod, None
        y = attempt(mod, x.clone(), mask) if mask is not None else attempt(mod, x.clone())
        e = ref(x, mask)
        seen.append((("direct", d, h, g, ref, x, mask), y, e))
        return y, e

    pub_gen = torch.Generator().manual_seed(2024)
    ref = _gqa_reference(8, 4, 2, pub_gen)
    x_pub = randn(pub_gen, 1, 3, 8, dtype=torch.float64)
    y, e = direct(8, 4, 2, ref, x_pub)
    if not_implemented(result, "GroupedQueryAttention", y):
        return
    c = _compare(y, e) if e is not None else None
    public_ok = bool(c and c.ok)
    result.add("public case: D=8, H=4, G=2, x (B=1, T=3, D=8), no mask", 1.0, public_ok,
               y if c is None else c.detail)

    fails = []
    for _ in range(4 if hidden else 2):
        b, t, h, g, dh = _gqa_sizes(gen)
        d = h * dh
        ref = _gqa_reference(d, h, g, gen)
        x = randn(gen, b, t, d, dtype=torch.float64)
        for label, mask in (("no mask", None), ("causal mask (T, T)", mhsa_lib.causal_mask(t))):
            y, e = direct(d, h, g, ref, x, mask)
            c = _compare(y, e) if e is not None else None
            if c is None or not c.ok:
                fails.append(f"B={b}, T={t}, D={d}, H={h}, G={g}, {label}: {y if c is None else c.detail}")
    result.add("random cases with 1 < G < H (B, T, Dh, H, G all different), without and with a causal mask",
               1.0, not fails, describe_failures(fails, 1))

    problems = _gqa_mha_mqa(cls, gen)
    result.add("probes: G = H equals multi-head attention with the same weights; G = 1 (multi-query) "
               "works", 0.75, not problems, "; ".join(problems))

    decode_fails, cache_unused, cached_heads = [], False, None
    for i in range(2 if hidden else 1):
        b, _, h, g, dh = _gqa_sizes(gen)
        d = h * dh
        ref = _gqa_reference(d, h, g, gen)
        chunks = _chunks(gen)
        x = randn(gen, b, sum(chunks), d, dtype=torch.float64)
        full = ref(x, causal=True)
        mod = build(cls, (d, h, g), {}, ref)
        if isinstance(mod, str):
            decode_fails.append(mod)
            continue
        y = _causal_hint(attempt(mod, x.clone(), causal=True))
        c = compare(y, full, what="forward(x, causal=True)")
        if not c.ok:
            decode_fails.append(f"H={h}, G={g}, S={x.shape[1]}: {y if isinstance(y, LearnerError) else c.detail}")
            if isinstance(y, LearnerError):
                continue
        cache = mhsa_lib.KVCache()
        y = decode(mod, x, chunks, cache)
        seen.append((("decode", d, h, g, ref, x, tuple(chunks)), y, full))
        c = compare(y, full, what="decoded output")
        held = _cached(cache)  # what the learner's forward left in the cache
        cache_unused |= isinstance(y, Tensor) and held["length"] == 0
        s = x.shape[1]
        if not c.ok:
            decode_fails.append(f"H={h}, G={g}, chunks {chunks}: {y if isinstance(y, LearnerError) else c.detail}")
        elif held.get("error"):
            decode_fails.append(f"H={h}, G={g}: reading the cache after decoding {held['error']}")
        elif held["length"] != s:
            decode_fails.append(f"after decoding {s} tokens the cache holds {held['length']} positions: "
                                "call cache.update(k, v) once per forward")
        else:
            problem = _cache_problem(held, (b, g, s, dh), h)
            if problem:
                decode_fails.append(f"H={h}, G={g}, after decoding {s} tokens: {problem}")
                if held.get("heads") == h != g:
                    cached_heads = cached_heads or (h, g)
    result.add("cache == no cache: with mhsa_lib.KVCache, a prompt then one token at a time, then three "
               "at once (causal=True), equals full causal attention over the whole sequence; the cache "
               "then holds the G key/value heads, (B, G, S, Dh)", 1.25,
               not decode_fails, describe_failures(decode_fails, 1))

    if not result.passed:
        def mistake_output(mistake, case):  # the course's own modules: run here, in both halves
            kind, d, h, g, ref, x, extra = case
            buggy = mistake.fn(d, h, g)
            theirs = dict(buggy.named_parameters())
            for name, p in ref.named_parameters():
                theirs[name].data = p.detach().clone()
            buggy = buggy.double().eval()
            if kind == "direct":
                return buggy(x, extra)
            return decode(buggy, x, extra, mhsa_lib.KVCache(), runner=_run_here)

        # Ignoring the cache and masking every cached key give the same outputs: the cache tells.
        skip = M.CATALOGUE["gqa-causal-blocks-cache" if cache_unused else "gqa-ignores-cache"]
        mistakes = [m for m in M.GQA_MISTAKES if m is not skip]
        pairs = [(case, y) for case, y, _ in seen]
        if not any(isinstance(y, Tensor) for _, y in pairs) and V.diagnose_error(
                result, pairs, _gqa_sizes_of, "your forward"):
            pass
        elif not diagnose_modules(result, seen, mistakes, None, mistake_output):
            differs = [(case, y) for case, y, e in seen if isinstance(y, Tensor) and not close(y, e, atol=1e-6)]
            m = matching_mistake(pairs, V.gqa_variants(), lambda variant, case: variant.fn(case), atol=1e-6,
                                 cheapest_first=True) if differs else None
            if m is not None:
                result.diagnose(m.advice)
            else:
                V.diagnose_error(result, pairs, _gqa_sizes_of, "your forward")
        if cached_heads:
            h, g = cached_heads
            result.diagnose(M.CATALOGUE["gqa-caches-repeated"].advice.format(h=h, g=g))
        if public_ok and fails:
            mod = build(cls, (8, 4, 2), {}, _gqa_reference(8, 4, 2, torch.Generator().manual_seed(2024)))
            if not isinstance(mod, str) and close(attempt(mod, randn(gen, 1, 3, 8, dtype=torch.float64)),
                                                 seen[0][2]):
                result.diagnose(HARD_CODED)
    ref = _gqa_reference(12, 4, 2, gen)
    mod = build(cls, (12, 4, 2), {}, ref)
    if not isinstance(mod, str):
        shortcuts = find_shortcuts(mod, (randn(gen, 2, 5, 12, dtype=torch.float64), mhsa_lib.causal_mask(5)),
                                   GQA_TORCH, forbid_library=GQA_LIBRARY)
        if shortcuts:
            result.zero_reason = (f"your GroupedQueryAttention calls {', '.join(shortcuts)}: build it yourself "
                                  "(your own or mhsa_lib's repeat_kv, split_heads and "
                                  "scaled_dot_product_attention are fine)")


def _cached_facts(cache: Any) -> dict:
    """What a cache of mhsa_lib.KVCache holds: its length, the shapes and dtypes of k and v."""
    k, v = getattr(cache, "k", None), getattr(cache, "v", None)

    def facts(t: Any) -> Any:
        if not isinstance(t, Tensor):
            return None if t is None else type(t).__name__
        return [list(t.shape), str(t.dtype).replace("torch.", "")]

    return {"length": len(cache), "k": facts(k), "v": facts(v)}


def _cached(cache: Any) -> dict:
    """:func:`_cached_facts` of the cache that the learner's forward filled, as an observation."""
    try:
        held = observe("what the cache holds", _cached_facts, cache)
    except LearnerError as e:
        return {"length": None, "k": None, "v": None, "error": str(e)}
    shape = held["k"][0] if isinstance(held.get("k"), list) else None
    held["heads"] = shape[1] if shape and len(shape) == 4 else None
    return held


def _cache_problem(held: dict, expected: Tuple[int, int, int, int], h: int) -> Optional[str]:
    """What is wrong with the cache's contents after decoding (or None): G heads, (B, G, S, Dh), float64."""
    b, g, s, dh = expected
    for what in ("k", "v"):
        got = held.get(what)
        if not isinstance(got, list):
            return f"the cache's {what} is {got}, expected a tensor (B, G, S, Dh) = {expected}"
        shape, dtype = tuple(got[0]), got[1]
        if shape != expected:
            heads = (f": H = {h} heads (the keys after repeat_kv) instead of G = {g}, "
                     f"{_bytes(b, h, s, dh)} where {_bytes(b, g, s, dh)} would do ({h // g}x the memory)"
                     if len(shape) == 4 and shape[1] == h != g else "")
            return f"the cache holds {what} of shape {shape}, expected (B, G, S, Dh) = {expected}{heads}"
        if dtype != "float64":
            return f"the cache holds {what} in {dtype}, expected float64 (the module's own dtype)"
    return None


def _bytes(b: int, heads: int, s: int, dh: int) -> str:
    """Memory of keys and values of ``heads`` heads in float64, said in bytes."""
    return f"{2 * b * heads * s * dh * 8} bytes"


def _gqa_sizes_of(case) -> dict:
    _, d, h, g, _, x, _ = case
    return {"B": x.shape[0], "T": x.shape[1], "D": d, "H": h, "G": g, "Dh": d // h}


def _gqa_structure(cls, module: Any) -> List[str]:
    if not isinstance(module, nn.Module):
        return [f"GroupedQueryAttention(12, 6, 2) built a {type(module).__name__}, expected an nn.Module"]
    problems = []
    materialise(module, torch.zeros(1, 2, 12))  # lazy layers learn their shapes
    shapes = {"q_proj": (12, 12), "k_proj": (12, 4), "v_proj": (12, 4), "out_proj": (12, 12)}
    for name, (i, o) in shapes.items():
        layer = getattr(module, name, None)
        if not isinstance(layer, nn.Linear):
            problems.append(f"{name} is {type(layer).__name__}, expected nn.Linear({i}, {o})")
        elif (layer.in_features, layer.out_features) != (i, o):
            problems.append(f"{name} is nn.Linear({layer.in_features}, {layer.out_features}), expected "
                            f"nn.Linear({i}, {o})" + (" (G·Dh = 2·2: keys and values have only G heads)"
                                                      if name in ("k_proj", "v_proj") else ""))
        elif layer.bias is not None:
            problems.append(f"{name} has a bias: the default is bias=False")
    bad = attempt(cls, 12, 6, 4)
    if not (isinstance(bad, LearnerError) and "ValueError" in str(bad)):
        problems.append("GroupedQueryAttention(12, 6, 4) should raise ValueError (6 query heads cannot "
                        "share 4 K/V heads evenly)")
    return problems


def _gqa_mha_mqa(cls, gen: torch.Generator) -> List[str]:
    b, t, h, dh = 2, 5, 3, 4
    d = h * dh
    problems = []
    mha = reference(mhsa_lib.MultiHeadAttention(d, h, bias=False), gen)
    mod = build(cls, (d, h, h), {}, mha)
    x = randn(gen, b, t, d, dtype=torch.float64)
    mask = mhsa_lib.causal_mask(t)
    if isinstance(mod, str):
        problems.append(f"G = H: {mod}")
    else:
        c = compare(attempt(mod, x.clone(), mask), mha(x, mask), what="output")
        if not c.ok:
            problems.append(f"G = H = {h} with a causal mask, compared with MultiHeadAttention: {c.detail}")
    ref = _gqa_reference(d, h, 1, gen)
    mod = build(cls, (d, h, 1), {}, ref)
    if isinstance(mod, str):
        problems.append(f"G = 1: {mod}")
    else:
        c = compare(attempt(mod, x.clone()), ref(x), what="output")
        if not c.ok:
            problems.append(f"G = 1 (multi-query): {c.detail}")
    return problems




# --------------------------------------------------------------------------- KVCache


def _kv_pair(gen: torch.Generator, b: int, g: int, t: int, dh: int, public: bool = False, start: int = 0):
    if public:
        k = torch.arange(start, start + b * g * t * dh, dtype=torch.float32).reshape(b, g, t, dh)
        return k, -k
    return randn(gen, b, g, t, dh), randn(gen, b, g, t, dh)


def _update(cache: Any, k: Tensor, v: Tensor) -> Any:
    update = getattr(cache, "update", None)
    if not callable(update):
        raise AttributeError("your KVCache has no method update(k, v)")
    return update(k, v)


def _replay(cls: Callable, updates: Sequence[Tuple[Tensor, Tensor]], runner: Callable = attempt):
    """Run the updates on a fresh cache: (cache, returned pairs, lengths after each) or a LearnerError.

    ``runner``: :func:`attempt` for the learner's class (each call an observation), :func:`_run_here`
    for a known mistake."""
    cache = runner(cls)
    if isinstance(cache, LearnerError):
        return cache
    returned, lengths = [], []
    for k, v in updates:
        got = runner(_update, cache, k.clone(), v.clone())
        if isinstance(got, LearnerError):
            return got
        returned.append(got)
        lengths.append(runner(len, cache))
    return cache, returned, lengths


def _pair_problem(got: Any, k: Tensor, v: Tensor) -> Optional[str]:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"update returned {describe_output(got)}, expected the pair (k, v) of everything cached"
    for what, a, e in (("k", got[0], k), ("v", got[1], v)):
        c = compare(a, e, what=f"returned {what}")
        if not c.ok:
            return c.detail
    return None


@step("KVCache", forbidden=((), KV_CACHE_LIBRARY),
      points=KV_CACHE_POINTS, notebook="05_kv_cache_and_head_sharing", home="kv_cache", kind="module",
      reference=mhsa_lib.KVCache)
def check_kv_cache(cls: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check a learner's ``KVCache()`` class: ``update(k, v) -> (k, v)`` (everything cached, oldest
    first, (B, G, S, Dh)), ``len(cache)`` = S, ``reset()`` (max 3)."""
    cache = attempt(cls)
    if isinstance(cache, LearnerError):
        result.zero_reason = f"KVCache() {cache}"
        return
    seen: List[Tuple[List[Tuple[Tensor, Tensor]], Any]] = []

    # Public case: B=1, G=2, Dh=3; two new positions, then one.
    updates = [_kv_pair(gen, 1, 2, 2, 3, public=True), _kv_pair(gen, 1, 2, 1, 3, public=True, start=100)]
    got = _replay(cls, updates)
    if isinstance(got, LearnerError) and got.kind == "not_implemented":
        result.zero_reason = f"KVCache {got}"
        return
    k_all = torch.cat([k for k, _ in updates], dim=-2)
    v_all = torch.cat([v for _, v in updates], dim=-2)
    public_k, public_v = k_all, v_all
    problem = str(got) if isinstance(got, LearnerError) else _pair_problem(got[1][-1], k_all, v_all)
    public_ok = problem is None
    result.add("public case: B=1, G=2, Dh=3; update with 2 positions, then 1: the second update returns "
               "all 3, oldest first, (B, G, S=3, Dh)", 1.0, public_ok, problem or "")
    seen.append((updates, got))

    fails = []
    for _ in range(5 if hidden else 3):
        b, g, dh = distinct_sizes(gen, 3, 2, 7)
        lengths = [int(torch.randint(2, 5, (1,), generator=gen))] + [
            int(torch.randint(1, 4, (1,), generator=gen)) for _ in range(int(torch.randint(2, 4, (1,), generator=gen)))]
        updates = [_kv_pair(gen, b, g, t, dh) for t in lengths]
        got = _replay(cls, updates)
        seen.append((updates, got))
        if isinstance(got, LearnerError):
            fails.append(f"B={b}, G={g}, Dh={dh}: {got}")
            continue
        for i in range(len(updates)):
            k_all = torch.cat([k for k, _ in updates[: i + 1]], dim=-2)
            v_all = torch.cat([v for _, v in updates[: i + 1]], dim=-2)
            problem = _pair_problem(got[1][i], k_all, v_all)
            if problem:
                fails.append(f"B={b}, G={g}, Dh={dh}, updates of {lengths} positions, update {i + 1}: {problem}")
                break
    result.add("random cases: several updates of 1 to 4 positions (B, G, Dh all different); each returns "
               "the concatenation of everything so far along the sequence axis", 1.0, not fails,
               describe_failures(fails, 1))

    problems = _kv_bookkeeping(cls, gen)
    result.add("bookkeeping: len(cache) is 0 when new and S after the updates; two caches are "
               "independent; reset() empties the cache", 0.5, not problems, "; ".join(problems))

    problems = _kv_decoding_probe(cls, gen)
    result.add("probe: mhsa_lib.GroupedQueryAttention decoding with your cache equals decoding with "
               "mhsa_lib.KVCache (and full causal attention)", 0.5, not problems, "; ".join(problems))

    if not result.passed:
        _diagnose_kv_cache(result, seen, problems)
        if public_ok and fails:
            other = _replay(cls, [_kv_pair(gen, 1, 2, 2, 3), _kv_pair(gen, 1, 2, 1, 3)])
            if not isinstance(other, LearnerError) and not _pair_problem(other[1][-1], public_k, public_v):
                result.diagnose(HARD_CODED)
    if result.zero_reason is None:
        b, g, dh = 2, 3, 4
        updates = [_kv_pair(gen, b, g, 2, dh), _kv_pair(gen, b, g, 1, dh)]
        shortcuts = find_shortcuts(lambda: _replay(cls, updates), (), (), forbid_library=KV_CACHE_LIBRARY)
        if shortcuts:
            result.zero_reason = (f"your KVCache uses {', '.join(shortcuts)}: write the cache yourself "
                                  "(torch.cat along the sequence axis)")
    _leave_empty(cls)


def _leave_empty(cls: Callable) -> None:
    """reset() a fresh cache at the end: a cache whose storage is shared on the class (a known
    mistake) would otherwise carry this check's updates into the next run of the check, which
    would then report otherwise. For a correct cache this changes nothing."""
    cache = attempt(cls)
    if isinstance(cache, LearnerError):
        return
    try:
        if observe("has reset()", _has_reset, cache):
            attempt(cache.reset)
    except LearnerError:
        pass


def _kv_bookkeeping(cls, gen: torch.Generator) -> List[str]:
    problems = []
    b, g, dh = 2, 3, 4
    first, second = attempt(cls), attempt(cls)
    if isinstance(first, LearnerError) or isinstance(second, LearnerError):
        return [str(first if isinstance(first, LearnerError) else second)]
    n = attempt(len, first)
    if n != 0:
        problems.append(f"len of a new cache is {n}, expected 0 (does every cache share storage created "
                        "on the class?)" if not isinstance(n, LearnerError)
                        else f"len(cache) {n}: define __len__ returning the number of cached positions S")
        if isinstance(n, LearnerError):
            return problems
    total = 0
    for t in (3, 1, 2):
        k, v = _kv_pair(gen, b, g, t, dh)
        attempt(_update, first, k, v)
        total += t
        n = attempt(len, first)
        if n != total:
            calls = (3, 1, 2).index(t) + 1
            hint = (f" ({calls} is the number of update calls: len counts the cached positions S, "
                    "k.shape[-2])" if n == calls else "")
            problems.append(f"after updates of {total} positions in all, len(cache) is {n}, expected S = {total}{hint}")
            break
    k, v = _kv_pair(gen, b, g, 2, dh)
    got = attempt(_update, second, k, v)
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[0], Tensor)
            and tuple(got[0].shape) == (b, g, 2, dh)):
        problems.append("a second cache is not independent of the first: it already holds the first one's "
                        "positions (create the storage in __init__, with self., not on the class)")
    try:
        has_reset = observe("has reset()", _has_reset, first)
    except LearnerError:
        has_reset = False
    if not has_reset:
        problems.append("no reset() method")
    else:
        r = attempt(first.reset)
        n = attempt(len, first)
        if isinstance(r, LearnerError) or n != 0:
            problems.append(f"after reset() len(cache) is {r if isinstance(r, LearnerError) else n}, expected 0")
        else:
            k, v = _kv_pair(gen, b, g, 1, dh)
            got = attempt(_update, first, k, v)
            if _pair_problem(got, k, v):
                problems.append("after reset() the next update does not return just the new positions")
    return problems


def _has_reset(cache: Any) -> bool:
    return callable(getattr(cache, "reset", None))


def _kv_decoding_probe(cls, gen: torch.Generator) -> List[str]:
    h, g, dh, b = 4, 2, 3, 2
    d = h * dh
    ref = _gqa_reference(d, h, g, gen)
    chunks = _chunks(gen)
    x = randn(gen, b, sum(chunks), d, dtype=torch.float64)
    theirs = attempt(cls)
    if isinstance(theirs, LearnerError):
        return [str(theirs)]
    expected = decode(ref, x, chunks, mhsa_lib.KVCache(), runner=_run_here)
    y = decode(ref, x, chunks, theirs)  # mhsa_lib's module with the learner's cache: observed
    c = compare(y, expected, what="decoded output")
    if not c.ok:
        return [str(y) if isinstance(y, LearnerError) else c.detail]
    return []


def _kv_variant(outputs):
    """The first generated variant of update whose returned pairs equal the learner's on every
    replay (the returned pairs of each update, in order)."""
    if not outputs:
        return None
    for variant in V.kv_cache_variants():
        try:
            if all(len(got[1]) == len(updates) and all(
                    isinstance(a, (tuple, list)) and len(a) == 2 and matches(a[0], e[0]) and matches(a[1], e[1])
                    for a, e in zip(got[1], variant.fn(updates))) for updates, got in outputs):
                return variant
        except Exception:  # a variant that cannot run on these updates explains nothing
            continue
    return None


def _diagnose_kv_cache(result: CheckResult, seen, probe_problems: List[str]) -> None:
    outputs = [(updates, got) for updates, got in seen if not isinstance(got, LearnerError)]
    if not outputs:
        for updates, got in seen:
            if isinstance(got, LearnerError):
                if "must match except in dimension 1" in str(got) or "must match except in dimension 0" in str(got):
                    result.diagnose(M.CATALOGUE["kv-cache-head-axis"].advice)
                elif "must match except in dimension 3" in str(got):
                    advice = V.KV_AXES[0].wrong[-1]
                    result.diagnose(advice[:1].upper() + advice[1:] + ".")
                else:
                    b, g, _, dh = updates[0][0].shape
                    why = V.explain_shape_error(str(got), {"B": b, "G": g, "Dh": dh})
                    result.diagnose(f"your cache {str(got).rstrip('.')}." if why is None
                                    else f"your cache failed on these shapes: {why}.")
                return
    for mistake in M.KV_CACHE_MISTAKES:
        if not mistake.by_output:
            continue  # update returns what a correct cache returns: another part catches it
        ok = True
        for updates, got in outputs:
            theirs = _replay(mistake.fn, updates, runner=_run_here)
            if isinstance(theirs, LearnerError):
                ok = False
                break
            for a, e in zip(got[1], theirs[1]):
                if not (isinstance(a, (tuple, list)) and len(a) == 2 and matches(a[0], e[0]) and matches(a[1], e[1])):
                    ok = False
                    break
            if not ok:
                break
        if ok and outputs:
            result.diagnose(mistake.advice)
            return
    m = _kv_variant(outputs)
    if m is not None:
        result.diagnose(m.advice)
        return
    for problem in probe_problems:
        if "decoded output" in problem:
            result.diagnose("decoding with your cache differs from decoding with mhsa_lib's: update must "
                            "return (k, v) holding every cached position, oldest first, (B, G, S, Dh).")
            return




# --------------------------------------------------------------------------- kv_cache_bytes

# Public case: a Llama-like model, 32 layers, G=8, Dh=128, S=4096, B=1 in bf16: 512 MiB.
BYTES_PUBLIC_ARGS = (1, 4096, 32, 8, 128)
BYTES_PUBLIC_ANSWER = 2 * 1 * 4096 * 32 * 8 * 128 * 2


def _number(v: Any) -> Optional[float]:
    if isinstance(v, Tensor) and v.numel() == 1:
        return float(v.item())
    if isinstance(v, numbers.Number) and not isinstance(v, bool):
        return float(v)
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@step("kv_cache_bytes", forbidden=((), ("kv_cache_bytes",)),
      points=KV_CACHE_BYTES_POINTS, notebook="05_kv_cache_and_head_sharing", home="kv_cache",
      reference=mhsa_lib.kv_cache_bytes)
def check_kv_cache_bytes(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``kv_cache_bytes(batch_size, seq_len, num_layers, num_kv_heads, head_dim,
    bytes_per_element=2) -> int`` (max 2)."""
    try:
        got = call(fn, *BYTES_PUBLIC_ARGS)
    except LearnerError as e:
        result.zero_reason = f"kv_cache_bytes{BYTES_PUBLIC_ARGS} {e}"
        return
    public_ok = _number(got) == BYTES_PUBLIC_ANSWER
    result.add("public case: B=1, S=4096, 32 layers, G=8, Dh=128, default 2 bytes (bf16): 536870912 bytes "
               "(512 MiB)", 0.5, public_ok, "" if public_ok else f"got {got!r}")
    seen: List[Tuple[Tuple, Any]] = [(BYTES_PUBLIC_ARGS, got)]

    fails = []
    for i in range(8 if hidden else 4):
        b, s, layers, g, dh = distinct_sizes(gen, 5, 1, 12)
        s, dh = s * 64, dh * 16  # realistic magnitudes, still all different
        bpe = (4, 1, 2)[i % 3]
        args = (b, s, layers, g, dh, bpe)
        y = attempt(fn, *args)
        seen.append((args, y))
        expected = 2 * b * s * layers * g * dh * bpe
        if isinstance(y, LearnerError) or _number(y) != expected:
            fails.append(f"kv_cache_bytes{args}: got {y!r}, expected {expected}")
    result.add("random cases (all sizes different; bytes_per_element 4, 1 and 2)", 1.0, not fails,
               describe_failures(fails, 1))

    not_int = [(args, y) for args, y in seen if not isinstance(y, LearnerError) and not _is_int(y)]
    result.add("returns a Python int", 0.5, not not_int,
               "" if not not_int else f"kv_cache_bytes{not_int[0][0]} returned {type(not_int[0][1]).__name__} "
               f"{not_int[0][1]!r}")

    if not result.passed:
        _diagnose_bytes(result, seen, not_int)
        if public_ok and fails and _number(attempt(fn, 3, 128, 2, 4, 64, 4)) == BYTES_PUBLIC_ANSWER:
            result.diagnose(HARD_CODED)
    shortcuts = find_shortcuts(fn, (2, 16, 3, 4, 8, 2), (), forbid_library=("kv_cache_bytes",))
    if shortcuts:
        result.zero_reason = f"your kv_cache_bytes calls {', '.join(shortcuts)}: compute the product yourself"
    return


def _diagnose_bytes(result: CheckResult, seen, not_int) -> None:
    for args, y in seen:
        if isinstance(y, LearnerError):
            result.diagnose(f"your function {y}.")
            return
    values = [(args, _number(y)) for args, y in seen]
    if all(v is not None for _, v in values):
        for mistake in M.KV_CACHE_BYTES_MISTAKES:
            if mistake.by_output and all(
                    float(_number(mistake.fn(*args))) == v for args, v in values):
                result.diagnose(mistake.advice)
                break
        else:
            _diagnose_ratio(result, [(v, float(mhsa_lib.kv_cache_bytes(*args))) for args, v in values])
    if not_int:
        y = not_int[0][1]
        if isinstance(y, Tensor):
            result.diagnose("you return a tensor: a size in bytes is a plain Python int; compute it with "
                            "Python ints (or convert with int(...)).")
        elif isinstance(y, float):
            result.diagnose("you return a float (from / or math.prod of floats, or ** with a float): a size "
                            "in bytes is an int; multiply the ints, and use // if you must divide.")
        else:
            result.diagnose(f"you return a {type(y).__name__}: return a Python int.")


#: Units a size may have been converted to, by how many bytes each holds.
_BYTE_UNITS = {2**10: "KiB", 2**20: "MiB", 2**30: "GiB", 10**3: "kB", 10**6: "MB", 10**9: "GB"}


def _diagnose_ratio(result: CheckResult, pairs: List[Tuple[float, float]]) -> None:
    """Every result the same multiple of the right one: a unit (a size in MiB, not bytes) or a
    factor too many or too few, named as such. ``pairs``: (yours, expected)."""
    if not pairs or any(e == 0 for _, e in pairs):
        return
    ratio = pairs[0][0] / pairs[0][1]
    if ratio <= 0 or ratio == 1 or any(abs(v / e - ratio) > 1e-9 * ratio for v, e in pairs):
        return
    unit = next((name for size, name in _BYTE_UNITS.items() if abs(ratio * size - 1) < 1e-9), None)
    if unit is not None:
        result.diagnose(f"your result is in {unit}, the size in bytes divided by {round(1 / ratio)}: return "
                        "the number of bytes itself.")
    else:
        result.diagnose(f"every result is {ratio:.6g} times the right one: a factor is missing or extra; the "
                        "size is 2 (keys and values) · B · S · layers · G · Dh · bytes_per_element.")


def _compare(y: Any, e: Tensor) -> Comparison:
    """:func:`compare` of a forward's output, the learner's error said as itself (the diagnosis
    explains a shape error in the course's letters)."""
    if isinstance(y, LearnerError):
        return Comparison(False, f"forward {y}")
    return compare(y, e, what="output")
