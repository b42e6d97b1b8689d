"""Notebook 05's checks (GroupedQueryAttention, KVCache, kv_cache_bytes; repeat_kv is checked with
the heads): correct solutions written many ways earn full marks; the known mistakes (heads paired
wrongly, a causal mask that ignores the cache, a cache that holds the repeated keys, a cache grown
along the wrong axis or in the wrong order, a size in bytes missing a factor, mhsa_lib's own
versions) lose points and are named; broken submissions are reported, never raised."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_check
from torch import nn

import mhsa_lib
from autograder import (
    check_grouped_query_attention,
    check_kv_cache,
    check_kv_cache_bytes,
    fallback,
)
from autograder.checks import kv_cache as C
from autograder.mistakes import kv_cache as M

run = run_check


# --------------------------------------------------------------------------- GroupedQueryAttention


def repeat_kv_expand(x, n_rep):
    b, g, s, dh = x.shape
    return x[:, :, None].expand(b, g, n_rep, s, dh).reshape(b, g * n_rep, s, dh)


class GQAExpand(nn.Module):
    """Correct: repeat_kv as expand + reshape, mhsa_lib's causal_mask (allowed), no causal shortcut."""

    def __init__(self, d_model, num_heads, num_kv_heads, bias=False):
        super().__init__()
        if d_model % num_heads or num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must divide d_model and be divisible by num_kv_heads={num_kv_heads}")
        self.h, self.g, self.dh = num_heads, num_kv_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, num_kv_heads * self.dh, bias=bias)
        self.v_proj = nn.Linear(d_model, num_kv_heads * self.dh, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, mask=None, cache=None, *, causal=False):
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = repeat_kv_expand(k, self.h // self.g), repeat_kv_expand(v, self.h // self.g)
        if causal:
            lower_right = mhsa_lib.causal_mask(t, k.shape[-2])
            mask = lower_right if mask is None else mask & lower_right
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class GQAEinsumGrouped(GQAExpand):
    """Correct: no repeat at all; queries grouped as (B, G, H/G, T, Dh) and einsum against the shared K/V."""

    def forward(self, x, mask=None, cache=None, *, causal=False):
        b, t, d = x.shape
        r = self.h // self.g
        q = self.q_proj(x).view(b, t, self.g, r, self.dh).permute(0, 2, 3, 1, 4)  # (B, G, r, T, Dh)
        k = self.k_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        s = k.shape[-2]
        scores = torch.einsum("bgrtd,bgsd->bgrts", q, k) / math.sqrt(self.dh)
        allowed = torch.ones(t, s, dtype=torch.bool)
        if causal:
            allowed = torch.tensor([[j <= s - t + i for j in range(s)] for i in range(t)])
        if mask is not None:
            allowed = allowed & mask.view(*mask.shape[:-3], 1, *mask.shape[-3:]) if mask.ndim == 4 else allowed & mask
        w = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        out = torch.einsum("bgrts,bgsd->btgrd", torch.nan_to_num(w), v).reshape(b, t, d)
        return self.out_proj(out)


class GQAFused(GQAExpand):
    """Correct: F.scaled_dot_product_attention with an explicit lower-right mask (allowed here)."""

    def forward(self, x, mask=None, cache=None, causal=False):
        b, t, d = x.shape
        q = self.q_proj(x).unflatten(-1, (self.h, self.dh)).transpose(1, 2)
        k = self.k_proj(x).unflatten(-1, (self.g, self.dh)).transpose(1, 2)
        v = self.v_proj(x).unflatten(-1, (self.g, self.dh)).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        s = k.shape[-2]
        if causal:
            tri = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
            mask = tri if mask is None else mask & tri
        n = self.h // self.g
        out = F.scaled_dot_product_attention(q, k.repeat_interleave(n, 1), v.repeat_interleave(n, 1), attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).flatten(2))


GQA_SOLUTIONS = [M.BuggyGroupedQueryAttention, GQAExpand, GQAEinsumGrouped, GQAFused]


@pytest.mark.parametrize("cls", GQA_SOLUTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_gqa_full_marks_for_correct_solutions(cls, seed, capsys):
    points, report = run(check_grouped_query_attention, cls, capsys, seed=seed)
    assert points == 5.0, report


def test_gqa_hidden_cases(capsys):
    points, report = run(check_grouped_query_attention, GQAEinsumGrouped, capsys, hidden=True, seed=5)
    assert points == 5.0 and "all checks pass" in report, report


class GQAIsCausalFlag(GQAExpand):
    """Uses F.scaled_dot_product_attention(is_causal=True): aligned to the upper left when S > T."""

    def forward(self, x, mask=None, cache=None, *, causal=False):
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        n = self.h // self.g
        out = F.scaled_dot_product_attention(q, k.repeat_interleave(n, 1), v.repeat_interleave(n, 1),
                                             attn_mask=mask, is_causal=causal and mask is None)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class GQANoCausalArgument(GQAExpand):
    def forward(self, x, mask=None, cache=None):
        return super().forward(x, mask, cache)


class GQACausalUnused(GQAExpand):
    """Takes causal and passes only the given mask on: the flag is dropped."""

    def forward(self, x, mask=None, cache=None, *, causal=False):
        b, t, d = x.shape
        q = self.q_proj(x).unflatten(-1, (self.h, self.dh)).transpose(1, 2)
        k = self.k_proj(x).unflatten(-1, (self.g, self.dh)).transpose(1, 2)
        v = self.v_proj(x).unflatten(-1, (self.g, self.dh)).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = k.repeat_interleave(self.h // self.g, dim=1), v.repeat_interleave(self.h // self.g, dim=1)
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(out.transpose(1, 2).flatten(-2))


class GQABiasByDefault(GQAExpand):
    def __init__(self, d_model, num_heads, num_kv_heads, bias=True):
        super().__init__(d_model, num_heads, num_kv_heads, bias)


@pytest.mark.parametrize("cls,words", [
    (M.GQATiled, "paired with K/V head j % G"),
    (M.GQACausalUpperLeft, "aligned to the upper left"),
    (GQAIsCausalFlag, "aligned to the upper left"),
    (M.GQACausalBlocksCache, "do not see the cached keys"),
    (M.GQAIgnoresCausalFlag, "causal=True changes nothing"),
    (GQACausalUnused, "causal=True changes nothing"),
    (M.GQAIgnoresCache, "the cache is not used"),
    (M.GQACachesRepeated, "the cache holds the keys after repeat_kv"),
    (M.GQACallsLibrary, "calls mhsa_lib (attend_heads)"),
    (GQANoCausalArgument, "needs a keyword argument causal=False"),
    (GQABiasByDefault, "the default is bias=False"),
])
def test_gqa_mistakes_lose_points_and_are_named(cls, words, capsys):
    points, report = run(check_grouped_query_attention, cls, capsys, seed=3)
    assert points < 5.0, report
    assert words in report, report


def test_gqa_caching_the_repeated_keys_loses_the_cache_part_only(capsys):
    """Outputs are right, but the cache holds H heads: only the cache part fails, and the diagnosis
    says why GQA then saves no memory."""
    points, report = run(check_grouped_query_attention, M.GQACachesRepeated, capsys, seed=0)
    assert 0.0 < points < 5.0, report
    assert report.count("✗") == 1 and "✗ cache == no cache" in report, report
    assert "instead of G" in report and "GQA saves no memory" in report, report
    assert "cache before repeating" in report, report


def test_gqa_without_the_divisibility_check_loses_the_structure_part(capsys):
    class NoCheck(GQAExpand):
        def __init__(self, d_model, num_heads, num_kv_heads, bias=False):
            nn.Module.__init__(self)
            self.h, self.g, self.dh = num_heads, num_kv_heads, d_model // num_heads
            self.q_proj, self.out_proj = nn.Linear(d_model, d_model, bias=False), nn.Linear(d_model, d_model, bias=False)
            self.k_proj = nn.Linear(d_model, num_kv_heads * self.dh, bias=False)
            self.v_proj = nn.Linear(d_model, num_kv_heads * self.dh, bias=False)

    points, report = run(check_grouped_query_attention, NoCheck, capsys, seed=0)
    assert points < 5.0 and "should raise ValueError" in report, report


# --------------------------------------------------------------------------- KVCache


class KVCacheLists:
    """Correct: lists of pieces, concatenated on every update."""

    def __init__(self):
        self.keys, self.values = [], []

    def __len__(self):
        return sum(k.shape[2] for k in self.keys)

    def update(self, k, v):
        self.keys.append(k)
        self.values.append(v)
        return torch.cat(self.keys, dim=2), torch.cat(self.values, dim=2)

    def reset(self):
        self.keys, self.values = [], []


class KVCacheCounter(nn.Module):
    """Correct: an nn.Module with a position counter, returns a list."""

    def __init__(self):
        super().__init__()
        self.k = self.v = None
        self.length = 0

    def __len__(self):
        return self.length

    def update(self, k, v):
        self.k = k if self.k is None else torch.cat((self.k, k), dim=-2)
        self.v = v if self.v is None else torch.cat((self.v, v), dim=-2)
        self.length += k.shape[-2]
        return [self.k, self.v]

    def reset(self):
        self.__init__()


KV_SOLUTIONS = [M.BuggyKVCache, KVCacheLists, KVCacheCounter]


@pytest.mark.parametrize("cls", KV_SOLUTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kv_cache_full_marks_for_correct_solutions(cls, seed, capsys):
    points, report = run(check_kv_cache, cls, capsys, seed=seed)
    assert points == 3.0, report


def test_kv_cache_hidden_cases(capsys):
    points, report = run(check_kv_cache, KVCacheLists, capsys, hidden=True, seed=5)
    assert points == 3.0 and "all checks pass" in report, report


_PUBLIC_UPDATES = [C._kv_pair(None, 1, 2, 2, 3, public=True), C._kv_pair(None, 1, 2, 1, 3, public=True, start=100)]
_PUBLIC_K = torch.cat([k for k, _ in _PUBLIC_UPDATES], dim=-2)


class KVCacheHardCoded(KVCacheLists):
    def update(self, k, v):
        super().update(k, v)
        return _PUBLIC_K.clone(), -_PUBLIC_K


@pytest.mark.parametrize("cls,words", [
    (M.KVCachePrepends, "new keys/values before the cached ones"),
    (M.KVCacheHeadAxis, "concatenate along the heads (dim=1)"),
    (M.KVCacheReturnsNew, "update returns only the new keys/values"),
    (M.KVCacheLenCountsUpdates, "is the number of update calls"),
    (M.KVCacheSharedState, "not independent of the first"),
    (M.KVCacheCallsLibrary, "uses mhsa_lib (KVCache"),
    (KVCacheHardCoded, "hard-coded"),
])
def test_kv_cache_mistakes_lose_points_and_are_named(cls, words, capsys):
    points, report = run(check_kv_cache, cls, capsys, seed=3)
    assert points < 3.0, report
    assert words in report, report


# --------------------------------------------------------------------------- kv_cache_bytes


def bytes_product(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


def bytes_math_prod(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    per_token_per_layer = 2 * num_kv_heads * head_dim * bytes_per_element  # K and V
    return math.prod([batch_size, seq_len, num_layers, per_token_per_layer])


def bytes_numpy(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return np.int64(2) * batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


@pytest.mark.parametrize("fn", [bytes_product, bytes_math_prod, bytes_numpy])
@pytest.mark.parametrize("seed", [0, 1])
def test_kv_cache_bytes_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_kv_cache_bytes, fn, capsys, seed=seed)
    assert points == 2.0, report


@pytest.mark.parametrize("fn,words", [
    (M.kv_cache_bytes_keys_only, "keys AND values"),
    (M.kv_cache_bytes_one_layer, "multiply by num_layers"),
    (M.kv_cache_bytes_fixed_two_bytes, "you assume 2 bytes per element"),
    (M.kv_cache_bytes_counts_elements, "you count elements, not bytes"),
    (M.kv_cache_bytes_no_batch, "leaves out batch_size"),
    (M.kv_cache_bytes_float, "you return a float"),
    (M.kv_cache_bytes_tensor, "you return a tensor"),
    (M.kv_cache_bytes_calls_library, "calls mhsa_lib (kv_cache_bytes)"),
    (lambda *args, **kw: C.BYTES_PUBLIC_ANSWER, "hard-coded"),
])
def test_kv_cache_bytes_mistakes_lose_points_and_are_named(fn, words, capsys):
    points, report = run(check_kv_cache_bytes, fn, capsys, seed=3)
    assert points < 2.0, report
    assert words in report, report


# --------------------------------------------------------------------------- every mistake, robustness


def test_every_mistake_in_the_module_is_tested_above():
    """Each buggy variant in autograder.mistakes.kv_cache is in a test that asserts it loses points."""
    tested = set()
    for name, arg in (("test_gqa_mistakes_lose_points_and_are_named", "cls,words"),
                      ("test_kv_cache_mistakes_lose_points_and_are_named", "cls,words"),
                      ("test_kv_cache_bytes_mistakes_lose_points_and_are_named", "fn,words")):
        marks = [m for m in globals()[name].pytestmark if m.name == "parametrize" and m.args[0] == arg]
        tested |= {obj for obj, _ in marks[0].args[1]}
    for mistake in M.GQA_MISTAKES + M.KV_CACHE_MISTAKES + M.KV_CACHE_BYTES_MISTAKES:
        assert mistake.fn in tested, mistake.id


class _NotYet(nn.Module):
    def __init__(self, *args, **kw):
        raise NotImplementedError()


class _GQAForwardNotYet(GQAExpand):
    def forward(self, x, mask=None, cache=None, *, causal=False):
        raise NotImplementedError()


class _CacheUpdateNotYet(KVCacheLists):
    def update(self, k, v):
        raise NotImplementedError()


def _not_yet(*args, **kw):
    raise NotImplementedError()


@pytest.mark.parametrize("check,obj,words", [
    (check_grouped_query_attention, _NotYet, "not implemented yet"),
    (check_grouped_query_attention, _GQAForwardNotYet, "not implemented yet"),
    (check_grouped_query_attention, lambda *a: None, "expected an nn.Module"),
    (check_kv_cache, _NotYet, "not implemented yet"),
    (check_kv_cache, _CacheUpdateNotYet, "not implemented yet"),
    (check_kv_cache, object, "no method update"),
    (check_kv_cache_bytes, _not_yet, "not implemented yet"),
    (check_kv_cache_bytes, lambda *a, **k: 1 / 0, "raised ZeroDivisionError"),
])
def test_broken_submissions_are_reported_not_raised(check, obj, words, capsys):
    points, report = run(check, obj, capsys, seed=0)
    assert points == 0.0 if words != "NoneType" else points < 2.0
    assert words in report, report


@pytest.mark.parametrize("check,obj", [(check_grouped_query_attention, GQAExpand), (check_kv_cache, KVCacheLists)])
def test_checks_leave_the_global_random_state_alone(check, obj):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check(obj, seed=0, quiet=True)
    assert torch.equal(torch.rand(3), expected)


def repeat_kv_index(x, n_rep):
    index = torch.arange(x.shape[1] * n_rep, device=x.device) // n_rep
    return x.index_select(1, index)


def test_fallback_uses_the_learners_objects_only_when_they_pass(capsys):
    assert fallback("repeat_kv", repeat_kv_index) is repeat_kv_index
    assert fallback("GroupedQueryAttention", M.GQATiled) is mhsa_lib.GroupedQueryAttention
    assert fallback("KVCache", KVCacheLists) is KVCacheLists
    assert fallback("kv_cache_bytes", M.kv_cache_bytes_float) is mhsa_lib.kv_cache_bytes
    assert "mhsa_lib.GroupedQueryAttention instead" in capsys.readouterr().out


# --------------------------------------------------------------------------- generated variants
# What a GQA module does with its cache, and how a cache grows, named from the generated variants
# (autograder/checks/variants_modules.py).


class GQACacheSwapped(GQAExpand):
    """Passes (v, k) to cache.update."""

    def forward(self, x, mask=None, cache=None, *, causal=False):
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(v, k)
        k, v = (t_.repeat_interleave(self.h // self.g, dim=1) for t_ in (k, v))
        if causal:
            lower_right = mhsa_lib.causal_mask(t, k.shape[-2])
            mask = lower_right if mask is None else mask & lower_right
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class GQATiledUnscaled(GQAExpand):
    """Groups tiled (head h uses K/V group h % G) and the scores never scaled: two choices wrong."""

    def forward(self, x, mask=None, cache=None, *, causal=False):
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = k.repeat(1, self.h // self.g, 1, 1), v.repeat(1, self.h // self.g, 1, 1)
        s = q @ k.transpose(-2, -1)
        allowed = mhsa_lib.causal_mask(t, k.shape[-2]) if causal else None
        if mask is not None:
            allowed = mask if allowed is None else allowed & mask
        if allowed is not None:
            s = s.masked_fill(~allowed, float("-inf"))
        return self.out_proj((torch.softmax(s, -1) @ v).transpose(1, 2).reshape(b, t, d))


class GQACachesAfterRepeat(GQAExpand):
    """Learner-style: repeats first (with repeat_interleave), then caches the H heads."""

    def forward(self, x, mask=None, cache=None, *, causal=False):
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.g, self.dh).transpose(1, 2).repeat_interleave(self.h // self.g, 1)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2).repeat_interleave(self.h // self.g, 1)
        if cache is not None:
            k, v = cache.update(k, v)
        if causal:
            lower_right = mhsa_lib.causal_mask(t, k.shape[-2])
            mask = lower_right if mask is None else mask & lower_right
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


@pytest.mark.parametrize("cls,words", [
    (GQACacheSwapped, "wrong order (v, k)"),
    (GQATiledUnscaled, "group h % G"),
    (GQATiledUnscaled, "do not scale the scores"),
])
def test_gqa_variants_are_named(cls, words, capsys):
    points, report = run(check_grouped_query_attention, cls, capsys, seed=2)
    assert points < 5.0, report
    assert words.lower() in report.lower(), report


def test_gqa_caching_after_repeat_kv_is_named_with_its_memory(capsys):
    points, report = run(check_grouped_query_attention, GQACachesAfterRepeat, capsys, seed=4)
    assert points < 5.0 and "✗ cache == no cache" in report, report
    assert "the keys after repeat_kv" in report and "x the memory" in report, report


class KVCacheFeatureAxis(KVCacheLists):
    def update(self, k, v):
        self.keys.append(k)
        self.values.append(v)
        return torch.cat(self.keys, dim=-1), torch.cat(self.values, dim=-1)


class KVCacheReturnsValuesFirst(KVCacheCounter):
    def update(self, k, v):
        k_all, v_all = super().update(k, v)
        return v_all, k_all


class KVCacheNewestFirstValuesFirst(KVCacheLists):
    def update(self, k, v):
        self.keys.insert(0, k)
        self.values.insert(0, v)
        return torch.cat(self.values, dim=2), torch.cat(self.keys, dim=2)


@pytest.mark.parametrize("cls,words", [
    (KVCacheFeatureAxis, "along the features (dim=-1)"),
    (KVCacheReturnsValuesFirst, "update returns (v, k)"),
    (KVCacheNewestFirstValuesFirst, "new positions before the cached ones"),
    (KVCacheNewestFirstValuesFirst, "update returns (v, k)"),
])
def test_kv_cache_variants_are_named(cls, words, capsys):
    points, report = run(check_kv_cache, cls, capsys, seed=1)
    assert points < 3.0, report
    assert words.lower() in report.lower(), report


@pytest.mark.parametrize("check,cls", [(check_grouped_query_attention, GQAExpand), (check_kv_cache, KVCacheLists)])
def test_kv_correct_styles_get_no_diagnosis(check, cls, capsys):
    points, report = run(check, cls, capsys, seed=7)
    assert points == check.step.points and "Diagnosis" not in report, report


class GQAKeysUntransposed(GQAExpand):
    """Keys and values as x @ W: W is (G·Dh, D), so the product fails on its shapes."""

    def forward(self, x, mask=None, cache=None, *, causal=False):
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = (x @ self.k_proj.weight).view(b, t, self.g, self.dh).transpose(1, 2)
        v = (x @ self.v_proj.weight).view(b, t, self.g, self.dh).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = repeat_kv_expand(k, self.h // self.g), repeat_kv_expand(v, self.h // self.g)
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


def test_gqa_shape_error_is_said_in_course_terms(capsys):
    points, report = run(check_grouped_query_attention, GQAKeysUntransposed, capsys, seed=0)
    assert points < 5.0, report
    assert "Diagnosis: your forward failed on these shapes: a matrix product of (B·T=" in report, report
    assert "is applied as x @ W.T" in report, report


# --------------------------------------------------------------------------- answers as learners write them
# Wrong ones lose points and are named; correct ones, in other styles, earn full marks.


class _CacheHeadsAxis:
    axis = 1

    def __init__(self):
        self.k = self.v = None

    def __len__(self):
        return 0 if self.k is None else self.k.shape[-2]

    def update(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], self.axis)
        self.v = v if self.v is None else torch.cat([self.v, v], self.axis)
        return self.k, self.v

    def reset(self):
        self.k = self.v = None


class _CacheNoReset(_CacheHeadsAxis):
    axis = -2

    def reset(self):
        pass


class _CacheOfChunks:
    def __init__(self):
        self.ks, self.vs = [], []

    @property
    def k(self):
        return torch.cat(self.ks, 2) if self.ks else None

    @property
    def v(self):
        return torch.cat(self.vs, 2) if self.vs else None

    def __len__(self):
        return sum(t.shape[2] for t in self.ks)

    def update(self, k, v):
        self.ks.append(k)
        self.vs.append(v)
        return self.k, self.v

    def reset(self):
        self.ks.clear()
        self.vs.clear()


class _GQATiled(nn.Module):
    def __init__(self, d_model, num_heads, num_kv_heads, bias=False):
        super().__init__()
        if d_model % num_heads or num_heads % num_kv_heads:
            raise ValueError(f"num_heads: expected a multiple of num_kv_heads, got {num_heads}, {num_kv_heads}")
        self.h, self.g = num_heads, num_kv_heads
        dh = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, num_kv_heads * dh, bias=bias)
        self.v_proj = nn.Linear(d_model, num_kv_heads * dh, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def share(self, t):
        return t.repeat(1, self.h // self.g, 1, 1)

    def causal(self, t, s):
        return mhsa_lib.causal_mask(t, s)

    def forward(self, x, mask=None, cache=None, *, causal=False):
        q = mhsa_lib.split_heads(self.q_proj(x), self.h)
        k, v = mhsa_lib.split_heads(self.k_proj(x), self.g), mhsa_lib.split_heads(self.v_proj(x), self.g)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = self.share(k), self.share(v)
        if causal:
            c = self.causal(q.shape[-2], k.shape[-2])
            mask = c if mask is None else mask & c
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(mhsa_lib.merge_heads(out))


class _GQAUpperLeft(_GQATiled):
    def share(self, t):
        return t.repeat_interleave(self.h // self.g, 1)

    def causal(self, t, s):
        return torch.ones(t, s, dtype=torch.bool).tril()


class _GQAGroupedEinsum(_GQATiled):
    """Grouped attention without repeating the keys: queries (B, G, H/G, T, Dh) against (B, G, S, Dh)."""

    def forward(self, x, mask=None, cache=None, *, causal=False):
        B, T, D = x.shape
        dh, r = D // self.h, self.h // self.g
        q = self.q_proj(x).view(B, T, self.g, r, dh).permute(0, 2, 3, 1, 4)
        k = self.k_proj(x).view(B, T, self.g, dh).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.g, dh).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        S = k.shape[-2]
        s = torch.einsum("bgrtd,bgsd->bgrts", q, k) / math.sqrt(dh)
        if causal:
            c = torch.ones(T, S, dtype=torch.bool).tril(S - T)
            mask = c if mask is None else mask & c
        if mask is not None:
            m = torch.broadcast_to(mask, (B, self.h, T, S)).reshape(B, self.g, r, T, S)
            s = s.masked_fill(~m, float("-inf"))
        w = torch.nan_to_num(torch.softmax(s, -1))
        return self.out_proj(torch.einsum("bgrts,bgsd->bgrtd", w, v).permute(0, 3, 1, 2, 4).reshape(B, T, D))


def _bytes_without_k_and_v(b, s, l, g, d, bytes_per_element=2):
    return b * s * l * g * d * bytes_per_element


def _bytes_in_mib(b, s, l, g, d, bytes_per_element=2):
    return 2 * b * s * l * g * d * bytes_per_element / 2**20


def _bytes_fixed_width(b, s, l, g, d, bytes_per_element=2):
    return 2 * b * s * l * g * d * 2


def _bytes_math_prod(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2, **kwargs):
    return int(math.prod((2, batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element)))


LEARNER_ANSWERS = [
    # (check, answer, full marks?, words the report must hold)
    (check_kv_cache, _CacheHeadsAxis, False, ["along the heads (dim=1)"]),
    (check_kv_cache, _CacheNoReset, False, ["reset"]),
    (check_kv_cache, _CacheOfChunks, True, []),
    (check_grouped_query_attention, _GQATiled, False, ["j // (H / G)"]),
    (check_grouped_query_attention, _GQAUpperLeft, False, ["upper left"]),
    (check_grouped_query_attention, _GQAGroupedEinsum, True, []),
    (check_kv_cache_bytes, _bytes_without_k_and_v, False, ["half the right one"]),
    (check_kv_cache_bytes, _bytes_in_mib, False, ["your result is in MiB"]),
    (check_kv_cache_bytes, _bytes_fixed_width, False, ["bytes_per_element"]),
    (check_kv_cache_bytes, _bytes_math_prod, True, []),
]


@pytest.mark.parametrize("check, answer, full, words", LEARNER_ANSWERS,
                         ids=[f"{c.step.name}-{a.__name__}" for c, a, _, _ in LEARNER_ANSWERS])
def test_learner_answers(check, answer, full, words, capsys):
    points, out = run_check(check, answer, capsys, hidden=True, seed=11)
    if full:
        assert points == check.step.points, out
    else:
        assert points < check.step.points, out
        for word in words:
            assert word in out, out


@pytest.mark.parametrize("factor, words", [(2**-30, "your result is in GiB"), (1e-3, "your result is in kB"),
                                           (8, "8 times the right one")])
def test_kv_cache_bytes_names_a_constant_ratio(factor, words, capsys):
    def scaled(b, s, l, g, d, bytes_per_element=2):
        return 2 * b * s * l * g * d * bytes_per_element * factor
    points, out = run_check(check_kv_cache_bytes, scaled, capsys, hidden=True, seed=5)
    assert points < check_kv_cache_bytes.step.points
    assert words in out, out
