"""Step checks, one module per ``mhsa_lib`` module (same names), plus the checkpoints."""

from .attention import check_causal_mask, check_scaled_dot_product_attention, check_softmax
from .concepts import check_concept
from .fallback import fallback
from .warmups import check_pairwise_scores

__all__ = [
    "check_causal_mask",
    "check_concept",
    "check_pairwise_scores",
    "check_scaled_dot_product_attention",
    "check_softmax",
    "fallback",
]
