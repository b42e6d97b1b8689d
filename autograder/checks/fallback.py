"""Use the learner's function where its check passes, ``mhsa_lib``'s where it does not yet.

Later cells of a notebook call ``fallback(step, fn)`` so that one stuck step never blocks the
rest of the notebook, and they say so.
"""

from __future__ import annotations

from typing import Callable, Dict

import mhsa_lib

from ..core import latest

_REFERENCE: Dict[str, Callable] = {
    "softmax": mhsa_lib.softmax,
    "causal_mask": mhsa_lib.causal_mask,
    "scaled_dot_product_attention": mhsa_lib.scaled_dot_product_attention,
    "pairwise_scores": lambda q, k: q @ k.transpose(-2, -1),
}


_REFERENCE_NAMES = {"pairwise_scores": "the reference q @ k.transpose(-2, -1)"}


def _checks() -> Dict[str, Callable]:
    from . import attention, warmups

    return {
        "softmax": attention.check_softmax,
        "causal_mask": attention.check_causal_mask,
        "scaled_dot_product_attention": attention.check_scaled_dot_product_attention,
        "pairwise_scores": warmups.check_pairwise_scores,
    }


def fallback(step: str, fn: Callable) -> Callable:
    """Return ``fn`` if it passes the check of ``step``, else the reference, with a note saying so.

    The latest check of this very function is reused; otherwise the check runs quietly now.
    """
    if step not in _REFERENCE:
        raise ValueError(f"step: expected one of {sorted(_REFERENCE)}, got {step!r}")
    result = latest(step)
    if result is None or result.fn_id != id(fn):
        _checks()[step](fn, quiet=True)
        result = latest(step)
    if result is not None and result.passed:
        return fn
    print(
        f"Note: your {step} does not pass its check yet ({result.points:g}/{result.max_points:g} points), "
        f"so the cells below use {_REFERENCE_NAMES.get(step, 'mhsa_lib.' + step)} instead. "
        "Once yours passes, rerun from here to use your own."
    )
    return _REFERENCE[step]
