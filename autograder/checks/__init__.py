"""Step checks, one module per ``mhsa_lib`` module (same names), plus the checkpoints."""

from .attention import check_causal_mask, check_scaled_dot_product_attention, check_softmax
from .capstone import check_capstone
from .block import check_feed_forward, check_layer_norm, check_transformer_block
from .concepts import check_concept
from .debugging import (
    check_fast_causal_attention,
    check_fixed_attention,
    check_fixed_block,
    check_head_probe,
    check_stable_encoder,
)
from .fallback import fallback
from .heads import check_merge_heads, check_split_heads
from .kv_cache import check_grouped_query_attention, check_kv_cache, check_kv_cache_bytes, check_repeat_kv
from .positional import check_sinusoidal_positional_encoding
from .multihead import (
    check_attention_heads,
    check_attention_heads_loop,
    check_load_mha_from_torch,
    check_multi_head_attention,
)
from .warmups import check_pairwise_scores

__all__ = [
    "check_capstone",
    "check_attention_heads",
    "check_attention_heads_loop",
    "check_causal_mask",
    "check_concept",
    "check_fast_causal_attention",
    "check_fixed_attention",
    "check_fixed_block",
    "check_head_probe",
    "check_stable_encoder",
    "check_feed_forward",
    "check_grouped_query_attention",
    "check_kv_cache",
    "check_kv_cache_bytes",
    "check_layer_norm",
    "check_load_mha_from_torch",
    "check_merge_heads",
    "check_multi_head_attention",
    "check_pairwise_scores",
    "check_repeat_kv",
    "check_scaled_dot_product_attention",
    "check_sinusoidal_positional_encoding",
    "check_softmax",
    "check_split_heads",
    "check_transformer_block",
    "fallback",
]
