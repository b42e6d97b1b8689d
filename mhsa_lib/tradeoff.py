"""Number of heads against head width at a fixed model width (notebook 03, section 7).

Shape letters (see the package docstring): B batch, T length, D model width, H heads,
Dh = D / H head width.

:func:`head_tradeoff` tabulates, for each H, what one self-attention layer (the course's
``MultiHeadAttention``: Q, K, V and output projections, each ``nn.Linear(D, D)`` with a bias)
costs and what one of its heads can express:

- parameters and forward FLOPs do not depend on H (H heads of width D/H do the work of one
  head of width D);
- the rank of one head's (T, T) score matrix is at most ``min(Dh, T)``: it shrinks as H grows;
- the KV cache of plain multi-head attention holds D keys and D values per token, whatever H
  (sharing key/value heads, GQA and MQA, is what shrinks it: notebook 05).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from ._validate import check_positive_int

__all__ = ["head_tradeoff", "TRADEOFF_KEYS"]

#: The keys of each row of :func:`head_tradeoff`, in the order the notebook shows them.
TRADEOFF_KEYS = ("n_heads", "d_head", "params", "flops", "score_rank_bound", "kv_cache_bytes")


def _is_int(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


def head_tradeoff(
    d_model: int,
    n_heads_options: Sequence[int],
    seq_len: int,
    batch: int = 1,
    bytes_per_value: int = 4,
) -> List[Dict[str, int]]:
    """The trade-off table of one self-attention layer at a fixed D, one row per number of heads.

    Each row is a dict of ints:

    - ``n_heads``: H;  ``d_head``: Dh = D / H;
    - ``params``: ``4·D² + 4·D``, the weights and biases of the four ``nn.Linear(D, D)``
      projections (Q, K, V, output);
    - ``flops``: the forward FLOPs of one sequence of T tokens, counted as ``block_costs``
      counts them (notebook 04): matrix products only, a multiply-add as 2 FLOPs (as
      ``torch.utils.flop_counter.FlopCounterMode`` does); the four projections ``8·T·D²`` plus
      the attention core (``QKᵀ`` and ``weights @ V``, H products of T²·Dh multiply-adds each)
      ``4·T²·D``;
    - ``score_rank_bound``: ``min(Dh, T)``, the largest rank one head's (T, T) matrix of scores
      ``Q_h K_hᵀ / √Dh`` can have (a product through Dh features);
    - ``kv_cache_bytes``: the keys and values a KV cache holds for this layer after T tokens of
      B sequences: ``2 · B · T · H · Dh · bytes_per_value = 2·B·T·D·bytes_per_value``.

    Args:
        d_model: D.
        n_heads_options: the numbers of heads H to tabulate, in order (a list or tuple of
            positive ints that divide D).
        seq_len: T.
        batch: B, the sequences whose KV cache is counted (FLOPs are for one sequence).
        bytes_per_value: the size of one cached number: 4 for float32, 2 for float16/bfloat16.

    Returns:
        A list with one dict per entry of ``n_heads_options``, keys :data:`TRADEOFF_KEYS`.

    Raises:
        ValueError: on a size that is not a positive int, an empty or non-sequence
            ``n_heads_options``, or a number of heads that does not divide D.
    """
    check_positive_int("d_model", d_model)
    if not isinstance(n_heads_options, (list, tuple)) or not n_heads_options:
        raise ValueError(f"n_heads_options: expected a non-empty list or tuple of numbers of heads, "
                         f"got {n_heads_options!r}")
    for h in n_heads_options:
        if not _is_int(h) or h < 1:
            raise ValueError(f"n_heads_options: expected positive ints, got {h!r} in {list(n_heads_options)}")
        if d_model % h != 0:
            raise ValueError(f"n_heads_options: expected numbers of heads that divide d_model={d_model} (each "
                             f"head gets d_model / H features), got {h}")
    check_positive_int("seq_len", seq_len)
    check_positive_int("batch", batch)
    check_positive_int("bytes_per_value", bytes_per_value)
    d, t = d_model, seq_len
    rows = []
    for h in n_heads_options:
        dh = d // h
        rows.append({
            "n_heads": h,
            "d_head": dh,
            "params": 4 * d * d + 4 * d,
            "flops": 2 * 4 * t * d * d + h * 2 * 2 * t * t * dh,
            "score_rank_bound": min(dh, t),
            "kv_cache_bytes": 2 * batch * t * h * dh * bytes_per_value,
        })
    return rows
