"""mhsa_lib.tradeoff: head_tradeoff against what real modules measure — the parameters of the
library's MultiHeadAttention, FlopCounterMode on its forward pass, the bytes of a real KVCache
after T tokens, the rank of one head's real scores — and against notebook 04's block_costs; bad
arguments are refused with the argument's name."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mhsa_lib
from mhsa_lib.tradeoff import TRADEOFF_KEYS, head_tradeoff

CASES = [(48, (1, 2, 3, 4, 6, 8, 12, 16, 24, 48), 7, 3, 4), (64, (8, 1, 4), 40, 1, 2), (30, (5, 3, 15), 11, 2, 4)]


@pytest.mark.parametrize("d,hs,t,b,nbytes", CASES)
def test_rows_match_real_modules(d, hs, t, b, nbytes):
    rows = head_tradeoff(d, hs, t, batch=b, bytes_per_value=nbytes)
    assert [r["n_heads"] for r in rows] == list(hs)
    dtype = {4: torch.float32, 2: torch.float16}[nbytes]
    for h, row in zip(hs, rows):
        assert tuple(row) == TRADEOFF_KEYS and all(type(v) is int for v in row.values())
        assert row["d_head"] == d // h
        mha = mhsa_lib.MultiHeadAttention(d, h).eval()
        assert row["params"] == sum(p.numel() for p in mha.parameters())
        x = torch.randn(1, t, d)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            mha(x)
        assert row["flops"] == counter.get_total_flops()
        gqa = mhsa_lib.GroupedQueryAttention(d, h, h, bias=True).to(dtype).eval()
        cache = mhsa_lib.KVCache()
        with torch.no_grad():
            gqa(torch.randn(b, t, d).to(dtype), cache=cache)
        assert row["kv_cache_bytes"] == sum(z.numel() * z.element_size() for z in (cache.k, cache.v))
        assert row["kv_cache_bytes"] == mhsa_lib.kv_cache_bytes(b, t, 1, h, d // h, nbytes)


@pytest.mark.parametrize("d,hs,t,b,nbytes", CASES)
def test_flops_and_params_are_block_costs_attention_parts(d, hs, t, b, nbytes):
    for h, row in zip(hs, head_tradeoff(d, hs, t, b, nbytes)):
        c = mhsa_lib.block_costs(d, h, 4 * d, t)
        assert row["params"] == c["attn_proj_params"]
        assert row["flops"] == c["attn_proj_flops"] + c["attn_core_flops"]


@pytest.mark.parametrize("d,hs,t", [(32, (1, 2, 4, 8, 16), 12), (24, (1, 3, 6, 24), 40)])
def test_one_heads_real_scores_reach_the_rank_bound(d, hs, t):
    """Random weights and inputs: the rank of a head's scores is the bound, never more."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, t, d, generator=g, dtype=torch.float64)
    for h, row in zip(hs, head_tradeoff(d, hs, t)):
        mha = mhsa_lib.MultiHeadAttention(d, h).double()
        q = mhsa_lib.split_heads(mha.q_proj(x), h)  # (1, H, T, Dh)
        k = mhsa_lib.split_heads(mha.k_proj(x), h)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(d // h))[0].detach()  # (H, T, T)
        ranks = torch.linalg.matrix_rank(scores).tolist()
        assert ranks == [row["score_rank_bound"]] * h, (h, ranks)


def test_nothing_but_the_width_and_rank_depends_on_h():
    rows = head_tradeoff(64, [1, 2, 4, 8, 16, 32, 64], 16)
    for key in ("params", "flops", "kv_cache_bytes"):
        assert len({r[key] for r in rows}) == 1, key
    assert [r["score_rank_bound"] for r in rows] == [16, 16, 16, 8, 4, 2, 1]
    assert rows[0] == {"n_heads": 1, "d_head": 64, "params": 16640, "flops": 2 * 4 * 16 * 64 * 64 + 4 * 16 * 16 * 64,
                       "score_rank_bound": 16, "kv_cache_bytes": 2 * 16 * 64 * 4}


@pytest.mark.parametrize("call,message", [
    (lambda: head_tradeoff(64, [3], 8), r"^n_heads_options: expected numbers of heads that divide d_model=64 .* got 3$"),
    (lambda: head_tradeoff(64, [2, 0], 8), r"^n_heads_options: expected positive ints, got 0 in \[2, 0\]$"),
    (lambda: head_tradeoff(64, [2, True], 8), r"^n_heads_options: expected positive ints, got True"),
    (lambda: head_tradeoff(64, [2.0], 8), r"^n_heads_options: expected positive ints, got 2.0"),
    (lambda: head_tradeoff(64, [], 8), r"^n_heads_options: expected a non-empty list or tuple .* got \[\]$"),
    (lambda: head_tradeoff(64, 4, 8), r"^n_heads_options: expected a non-empty list or tuple .* got 4$"),
    (lambda: head_tradeoff(0, [1], 8), r"^d_model: expected a positive int, got 0$"),
    (lambda: head_tradeoff(64, [1], -1), r"^seq_len: expected a positive int, got -1$"),
    (lambda: head_tradeoff(64, [1], 8, batch=0), r"^batch: expected a positive int, got 0$"),
    (lambda: head_tradeoff(64, [1], 8, bytes_per_value=1.5), r"^bytes_per_value: expected a positive int, got 1.5$"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
