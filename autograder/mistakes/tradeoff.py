"""Known mistakes in notebook 03's trade-off table (head_tradeoff): parameters without the
biases; the attention core counted for one head, or FLOPs counted for the whole batch, or a
multiply-add as 1 FLOP; the score rank bound as D instead of Dh, or Dh without the cap T; a KV
cache of the keys only, or of one sequence whatever the batch; a head width by floor division
that accepts a number of heads that does not divide D.

Each is written as a learner writes it, with the step's signature
``head_tradeoff(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4)``.
"""

from __future__ import annotations

from ..frame.mistakes import SAME_OUTPUT, mistake


def _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, *, check=True, params_bias=True,
          core_heads=None, flops_batch=1, mac=2, rank=None, kv_tensors=2, kv_batch=None):
    """The table with one count switched to a known wrong form (``rank(dh, d, t)``)."""
    if check and (not isinstance(seq_len, int) or seq_len < 1):
        raise ValueError(f"seq_len: expected a positive int, got {seq_len!r}")
    rows = []
    for h in n_heads_options:
        if check and d_model % h:
            raise ValueError(f"n_heads_options: expected numbers of heads that divide d_model={d_model}, got {h}")
        dh = d_model // h
        d, t = d_model, seq_len
        heads = h if core_heads is None else core_heads
        rows.append({
            "n_heads": h,
            "d_head": dh,
            "params": 4 * d * d + (4 * d if params_bias else 0),
            "flops": flops_batch * mac * (4 * t * d * d + heads * 2 * t * t * dh),
            "score_rank_bound": min(dh, t) if rank is None else rank(dh, d, t),
            "kv_cache_bytes": kv_tensors * (batch if kv_batch is None else kv_batch) * t * h * dh * bytes_per_value,
        })
    return rows


def tradeoff_no_biases(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """Four D×D weight matrices, the four D-wide biases forgotten."""
    return _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, params_bias=False)


def tradeoff_core_one_head(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """QKᵀ and weights @ V counted for one head of width Dh, not H of them."""
    return _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, core_heads=1)


def tradeoff_flops_times_batch(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """FLOPs for the whole batch, where the table asks for one sequence."""
    return _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, flops_batch=batch)


def tradeoff_mac_as_one(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """A multiply-add counted as 1 FLOP."""
    return _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, mac=1)


def tradeoff_rank_d_model(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """The rank bound from the model width: min(D, T), as if a head saw all D features."""
    return _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, rank=lambda dh, d, t: min(d, t))


def tradeoff_rank_ignores_t(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """The rank bound as Dh even when the (T, T) matrix is smaller than that."""
    return _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, rank=lambda dh, d, t: dh)


def tradeoff_kv_keys_only(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """The cache holds the keys; the values forgotten."""
    return _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, kv_tensors=1)


def tradeoff_kv_one_sequence(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """The cache of one sequence, whatever the batch."""
    return _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, kv_batch=1)


def tradeoff_floor_division(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """d_head = d_model // H with no check: H = 5 with D = 64 gives heads of 12 features that
    cover only 60 of the 64."""
    return _rows(d_model, n_heads_options, seq_len, batch, bytes_per_value, check=False)


#: The mistakes a table's values reveal, searched in this order.
TRADEOFF_MISTAKES = [
    mistake("tradeoff-no-biases", tradeoff_no_biases,
            "your params leave the biases out: the course's MultiHeadAttention has four nn.Linear(D, D) with a "
            "bias each, 4·D² weights and 4·D biases."),
    mistake("tradeoff-core-one-head", tradeoff_core_one_head,
            "your flops count the attention core of one head: each of the H heads computes QKᵀ and weights @ V "
            "with Dh = D/H features, T²·Dh multiply-adds per product, so the core is 4·T²·D FLOPs in all, "
            "whatever H."),
    mistake("tradeoff-flops-times-batch", tradeoff_flops_times_batch,
            "your flops grow with batch: the table's FLOPs are for one sequence (multiply by B for a batch); "
            "only the KV cache is counted for the batch."),
    mistake("tradeoff-mac-as-one", tradeoff_mac_as_one,
            "your flops are half the expected ones: you count a multiply-add as 1 FLOP. A multiply-add is 2 "
            "FLOPs, so (T, D) @ (D, D) costs 2·T·D·D."),
    mistake("tradeoff-rank-d-model", tradeoff_rank_d_model,
            "your score_rank_bound does not shrink with the head width (min(D, T), or T): one head's scores are Q_h K_hᵀ, a product through "
            "its Dh = D/H features, so their rank is at most min(Dh, T)."),
    mistake("tradeoff-rank-ignores-t", tradeoff_rank_ignores_t,
            "your score_rank_bound is Dh even when T is smaller: a (T, T) matrix has rank at most T, so the "
            "bound is min(Dh, T)."),
    mistake("tradeoff-kv-keys-only", tradeoff_kv_keys_only,
            "your kv_cache_bytes count the keys only: the cache keeps the values too, 2·B·T·D numbers."),
    mistake("tradeoff-kv-one-sequence", tradeoff_kv_one_sequence,
            "your kv_cache_bytes ignore batch: each of the B sequences keeps its own keys and values, "
            "2·B·T·D numbers."),
    mistake("tradeoff-floor-division", tradeoff_floor_division,
            "your function accepts a number of heads that does not divide d_model: d_model // H then leaves "
            "features to no head (H = 5 with D = 64 gives 5 heads of 12, 60 features). Raise a ValueError that "
            "names n_heads_options, the bad H and d_model.",
            flags=(SAME_OUTPUT,)),
]
