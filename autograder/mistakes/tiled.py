"""Known mistakes in notebook 08's steps (online_softmax_merge, tiled_attention).

Each is a small, runnable, wrong implementation, written the way learners write it. The checks
in :mod:`autograder.checks.tiled` recognise a learner's output by matching it against these,
and tests/test_checks_tiled.py proves every one of them loses points and is named.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mhsa_lib._validate import broadcast_shapes

from ..frame.mistakes import SAME_OUTPUT, catalogue, mistake

# --------------------------------------------------------------------------- the merge


def _shift(m):
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def merge_no_rescale(m1, l1, m2, l2):
    return torch.maximum(m1, m2), l1 + l2


def merge_sign_flipped(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    s = _shift(m)
    return m, l1 * torch.exp(s - m1).nan_to_num(posinf=0.0) + l2 * torch.exp(s - m2).nan_to_num(posinf=0.0)


def merge_rescale_first_only(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, l1 * torch.exp(m1 - _shift(m)) + l2  # as if the second block always held the new max


def merge_empty_nan(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, l1 * torch.exp(m1 - m) + l2 * torch.exp(m2 - m)  # -inf - (-inf) is NaN


def merge_min(m1, l1, m2, l2):
    m = torch.minimum(m1, m2)
    s = _shift(m)
    return m, l1 * torch.exp(m1 - s) + l2 * torch.exp(m2 - s)


def merge_relative_to_first(m1, l1, m2, l2):
    """l2 brought to the first block's maximum, and the sum kept there: correct only when m1 >= m2."""
    return torch.maximum(m1, m2), l1 + l2 * torch.exp(m2 - m1)


def merge_returns_log(m1, l1, m2, l2):
    """The merged sum returned as its logarithm."""
    m = torch.maximum(m1, m2)
    s = _shift(m)
    return m, torch.log(l1 * torch.exp(m1 - s) + l2 * torch.exp(m2 - s))


def merge_returns_l_first(m1, l1, m2, l2):
    """The right pair in the wrong order, (l, m)."""
    m = torch.maximum(m1, m2)
    s = _shift(m)
    return l1 * torch.exp(m1 - s) + l2 * torch.exp(m2 - s), m


MERGE_MISTAKES = [
    mistake('merge-no-rescale', merge_no_rescale,
            'you add l1 + l2 as they are, but each sum was taken relative to its own maximum: '
            'rescale each to the common maximum m = max(m1, m2) first, l = l1·exp(m1 - m) + l2·exp(m2 - m).'),
    mistake('merge-sign-flipped', merge_sign_flipped,
            'your rescaling factor is upside down: exp(m - m1) is >= 1 and grows the old sum. Going from '
            'the old maximum m1 to the larger m multiplies by exp(m1 - m) <= 1.'),
    mistake('merge-rescale-one-side', merge_rescale_first_only,
            'you rescale only l1 and add l2 unchanged, as if the second block always held the larger '
            'maximum; when m1 > m2, l2 must be rescaled too: l2·exp(m2 - m).'),
    mistake('merge-empty-nan', merge_empty_nan,
            'two empty blocks (m = -inf, l = 0) give NaN: exp(-inf - (-inf)) is exp(NaN). Where '
            'max(m1, m2) is -inf, shift by 0 instead (torch.where(torch.isfinite(m), m, 0)), so the result is (-inf, 0).'),
    mistake('merge-relative-to-first', merge_relative_to_first,
            'you bring l2 to the first block\'s maximum, l1 + l2·exp(m2 - m1), and keep the sum relative to m1: '
            'when m2 > m1 that sum is relative to the wrong maximum (and exp(m2 - m1) can overflow). Rescale both '
            'to the common maximum m = max(m1, m2): l = l1·exp(m1 - m) + l2·exp(m2 - m).'),
    mistake('merge-returns-log', merge_returns_log,
            'your l is the logarithm of the merged sum: keep l a plain sum of exponentials, '
            'l = l1·exp(m1 - m) + l2·exp(m2 - m) (m + log(l) is then the row\'s logsumexp).'),
    mistake('merge-returns-l-first', merge_returns_l_first,
            'you return (l, m): the merge returns the pair in the order it receives them, (m, l), the maximum first.'),
    mistake('merge-min', merge_min,
            'you keep the smaller maximum: the merged m must be the larger one, torch.maximum(m1, m2), '
            'or exp(m1 - m) can overflow.'),
]


# --------------------------------------------------------------------------- tiled attention


def _tiled(q, k, v, block_size, mask=None, causal=False, *, rescale=True, flip=False, m0=float("-inf"),
           drop_tail=False, short_blocks=False, causal_local=False, causal_upper_left=False,
           guard_empty=True, scale=None, use_mask=True, invert_mask=False, per_block_softmax=False,
           normalise=True):
    """The one template the tiled-attention mistakes below vary."""
    t, s = q.shape[-2], k.shape[-2]
    lead = broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    m = torch.full(lead + (t, 1), m0, dtype=q.dtype)
    l = torch.zeros(lead + (t, 1), dtype=q.dtype)  # noqa: E741
    acc = torch.zeros(lead + (t, v.shape[-1]), dtype=q.dtype)
    end = s - s % block_size if drop_tail else s
    i = torch.arange(t).unsqueeze(-1)
    for start in range(0, end, block_size):
        stop = min(start + block_size - (1 if short_blocks else 0), s)
        sc = q @ k[..., start:stop, :].transpose(-2, -1) * scale
        allowed = None
        if mask is not None and use_mask:
            allowed = mask if mask.shape[-1] == 1 else mask[..., start:stop]
            allowed = ~allowed if invert_mask else allowed
        if causal:
            j = torch.arange(stop - start) if causal_local else torch.arange(start, stop)
            c = j.unsqueeze(0) <= i + (0 if causal_upper_left else s - t)
            allowed = c if allowed is None else allowed & c
        if allowed is not None:
            sc = sc.masked_fill(~allowed, float("-inf"))
        if per_block_softmax:  # each block's own softmax, the blocks' outputs added
            acc = acc + torch.nan_to_num(torch.softmax(sc, -1), nan=0.0) @ v[..., start:stop, :]
            continue
        m_new = torch.maximum(m, sc.amax(-1, keepdim=True))
        sh = _shift(m_new)
        p = torch.exp(sc - sh)
        if not rescale:
            alpha = torch.ones_like(m)
        elif flip:
            alpha = torch.exp(sh - m).nan_to_num(posinf=0.0)
        else:
            alpha = torch.exp(m - sh)
        l = l * alpha + p.sum(-1, keepdim=True)  # noqa: E741
        acc = acc * alpha + p @ v[..., start:stop, :]
        m = m_new
    if per_block_softmax or not normalise:
        return acc
    return acc / torch.where(l > 0, l, torch.ones_like(l)) if guard_empty else acc / l


def tiled_no_rescale(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, rescale=False)


def tiled_rescale_sign_flipped(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, flip=True)


def tiled_max_starts_at_zero(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, m0=0.0)


def tiled_drops_last_block(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, drop_tail=True)


def tiled_block_off_by_one(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, short_blocks=True)


def tiled_causal_per_block(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, causal_local=True)


def tiled_causal_upper_left(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, causal_upper_left=True)


def tiled_masked_row_nan(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, guard_empty=False)


def tiled_no_scale(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, scale=1.0)


def tiled_ignores_mask(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, use_mask=False)


def tiled_inverted_mask(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, invert_mask=True)


def tiled_softmax_per_block(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, per_block_softmax=True)


def tiled_scale_by_value_width(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, scale=1.0 / math.sqrt(v.shape[-1]))


def tiled_never_divides(q, k, v, block_size, mask=None, causal=False):
    return _tiled(q, k, v, block_size, mask, causal, normalise=False)


def tiled_full_matrix(q, k, v, block_size, mask=None, causal=False):
    # The whole (T, S) score matrix at once: right answer, none of the point of tiling.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    t, s = scores.shape[-2:]
    if causal:
        c = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
        mask = c if mask is None else mask & c
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(scores, -1), nan=0.0) @ v


def tiled_calls_sdpa(q, k, v, block_size, mask=None, causal=False):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


TILED_MISTAKES = [
    mistake('tiled-no-rescale', tiled_no_rescale,
            'when the running maximum grows, the sum and the output accumulated so far were computed '
            'relative to the old maximum: multiply both by exp(m_old - m_new) before adding the new block.'),
    mistake('tiled-rescale-sign', tiled_rescale_sign_flipped,
            'your rescaling factor is upside down: exp(m_new - m_old) >= 1 inflates what came before. '
            'Multiply the running sum and output by exp(m_old - m_new) (<= 1).'),
    mistake('tiled-max-init-zero', tiled_max_starts_at_zero,
            'your running maximum starts at 0 instead of -inf: when every score of a row is far below 0, '
            'exp(score - 0) underflows to 0 and the row comes out 0 or NaN. Start with torch.full(..., float("-inf")).'),
    mistake('tiled-drops-last-block', tiled_drops_last_block,
            'the last, shorter block is skipped when block_size does not divide S (range(0, S - S % block_size, ...) or S // block_size blocks): '
            'loop with range(0, S, block_size) and cut each block at min(start + block_size, S).'),
    mistake('tiled-block-off-by-one', tiled_block_off_by_one,
            'off by one at the block boundaries: each block leaves out its last key (k[start:start + block_size - 1]). '
            'Python slices exclude their end: k[..., start:start + block_size, :] is exactly block_size keys.'),
    mistake('tiled-causal-per-block', tiled_causal_per_block,
            'your causal mask restarts in every block: it compares the query index with the key index inside '
            'the block (0 … block_size - 1) instead of the key\'s position in the sequence, start + j.'),
    mistake('tiled-causal-upper-left', tiled_causal_upper_left,
            'your causal mask is aligned to the upper left when S > T: query i sits at position S - T + i, so '
            'it may see keys up to S - T + i (key <= i + S - T).'),
    mistake('tiled-masked-row-nan', tiled_masked_row_nan,
            'a query with no allowed key gives NaN: its running sum stays 0 and acc / l is 0/0. Divide by 1 '
            'where l is 0 (torch.where(l > 0, l, 1)), so that such a query gives 0.'),
    mistake('tiled-no-scale', tiled_no_scale,
            'no 1/√d_k scale: multiply each block of scores by 1/√d_k, d_k = q.shape[-1], as in attention.'),
    mistake('tiled-ignores-mask', tiled_ignores_mask,
            'your output is what attention gives with no mask: slice the mask to the block, '
            'mask[..., start:stop], and fill the blocked scores with -inf.'),
    mistake('tiled-inverted-mask', tiled_inverted_mask,
            'your mask is read as True = blocked (torch.nn.MultiheadAttention\'s polarity): the course\'s masks '
            'are True = may attend, so fill the scores with -inf where the mask is False, masked_fill(~mask_block, -inf).'),
    mistake('tiled-softmax-per-block', tiled_softmax_per_block,
            'you take a separate softmax in each block and add the blocks\' outputs: each block\'s weights then sum '
            'to 1 on their own. Keep a running max and sum across the blocks, rescale what came before by '
            'exp(m_old - m_new), and divide by the total sum once, after the last block.'),
    mistake('tiled-scale-by-value-width', tiled_scale_by_value_width,
            'you scale the scores by 1/√Dv, the values\' width: the scale is 1/√d_k, d_k = q.shape[-1] (the '
            'width the dot products run over).'),
    mistake('tiled-never-divides', tiled_never_divides,
            'you never divide by the running sum: after the last block, out = acc / l (with l = 1 where a query '
            'has no allowed key), so that each query\'s weights sum to 1.'),
    mistake('tiled-full-matrix', tiled_full_matrix,
            'Forms the whole (T, S) score matrix.', flags=[SAME_OUTPUT]),
    mistake('tiled-calls-sdpa', tiled_calls_sdpa,
            'Calls F.scaled_dot_product_attention.', flags=[SAME_OUTPUT]),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(MERGE_MISTAKES, TILED_MISTAKES)
