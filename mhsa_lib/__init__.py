"""mhsa_lib: the course's reference implementation of multi-head self-attention.

Every check in ``autograder`` compares a learner's work with this library, and later
notebooks fall back on it when an earlier step is not yet right. Each module is taught
in one notebook and named after it:

=================  ===========================================================  ========
module             what                                                         notebook
=================  ===========================================================  ========
``attention``      softmax, causal / padding masks, scaled dot-product attention  01
``heads``          split_heads, merge_heads (and repeat_kv, re-exported by         02, 03
                   ``kv_cache``)
``multihead``      MultiHeadAttention, FusedMultiHeadAttention (one QKV matmul),   02, 03
                   attend_heads (the attention step every module shares),
                   attention_heads, attention_heads_loop (the heads, functional)
``cross``          CrossAttention (queries from x, keys and values from a memory   03
                   of another length S), DecoderBlock (encoder-decoder, pre-norm)
``block``          LayerNorm, FeedForward (ReLU / GELU), TransformerBlock          04
                   (pre-norm or post-norm, dropout; LayerNorm or RMSNorm, plain
                   or SwiGLU FFN)
``modern``         RMSNorm, SwiGLUFeedForward, swiglu_d_ff (SwiGLU's width at a    04
                   plain FFN's budget), block_costs (parameters and FLOPs of
                   attention projections, attention core and FFN)
``tradeoff``       head_tradeoff (parameters, FLOPs, score rank bound and KV     03
                   cache of one layer for several numbers of heads at one D)
``kv_cache``       repeat_kv, GroupedQueryAttention (MHA / GQA / MQA), KVCache,    05
                   StaticKVCache (pre-allocated), kv_cache_bytes
``interop``        weights to and from torch.nn.MultiheadAttention and             03, 04
                   torch.nn.TransformerEncoderLayer; mask polarity conversion
``positional``     sinusoidal_positional_encoding, shift_matrix (a shift is a      07
                   rotation), LearnedPositionalEmbedding, apply_rotary (RoPE),
                   alibi_slopes, alibi_bias (ALiBi)
``model``          TinyTransformer (embeddings, positions, blocks, head),          07
                   reversal_batch, sorting_batch (toy tasks that need attention)
``tiled``          online_softmax_merge (two blocks' running max and sum), tiled   08
                   attention over key blocks (no (T, S) matrix),
                   largest_intermediate (the largest tensor a call creates)
``viz``            heatmaps, layers x heads grids, difference maps (matplotlib,    all
                   imported on first use: ``import mhsa_lib.viz``)
=================  ===========================================================  ========

Shape legend, used in every docstring and reshape comment:

    B   batch size                      H   number of (query) heads
    T   query length                    Dh  per-head width, D / H (= d_k in the paper)
    S   key / value length              G   number of key/value heads (GQA; G = H is MHA)
    D   model width (d_model)           F   feed-forward width (d_ff)

Conventions: boolean masks with ``True`` = may attend; a causal mask with S > T is aligned
to the lower right; linear layers follow ``nn.Linear`` (y = x Wᵀ + b, W of shape (out, in));
scores are scaled by 1/√Dh, the per-head width.
"""

from . import interop as interop  # mhsa_lib.interop.mha_from_torch, block_to_torch, ...
from .attention import (
    BACKENDS,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
    softmax,
)
from .block import FeedForward, LayerNorm, TransformerBlock
from .cross import CrossAttention, DecoderBlock
from .heads import merge_heads, split_heads
from .kv_cache import GroupedQueryAttention, KVCache, StaticKVCache, kv_cache_bytes, repeat_kv
from .model import TinyTransformer, reversal_batch, sorting_batch
from .modern import RMSNorm, SwiGLUFeedForward, block_costs, swiglu_d_ff
from .multihead import (
    FusedMultiHeadAttention,
    MultiHeadAttention,
    attend_heads,
    attention_heads,
    attention_heads_loop,
)
from .positional import (
    LearnedPositionalEmbedding,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    shift_matrix,
    sinusoidal_positional_encoding,
)
from .tiled import largest_intermediate, online_softmax_merge, tiled_attention
from .tradeoff import head_tradeoff

#: The distribution this package comes in (see autograder.COURSE).
COURSE = "mhsa-course"

__all__ = [
    "BACKENDS",
    "causal_mask",
    "padding_mask",
    "scaled_dot_product_attention",
    "softmax",
    "split_heads",
    "merge_heads",
    "attend_heads",
    "attention_heads",
    "attention_heads_loop",
    "MultiHeadAttention",
    "FusedMultiHeadAttention",
    "CrossAttention",
    "DecoderBlock",
    "LayerNorm",
    "FeedForward",
    "TransformerBlock",
    "RMSNorm",
    "SwiGLUFeedForward",
    "swiglu_d_ff",
    "block_costs",
    "repeat_kv",
    "GroupedQueryAttention",
    "KVCache",
    "StaticKVCache",
    "kv_cache_bytes",
    "sinusoidal_positional_encoding",
    "shift_matrix",
    "LearnedPositionalEmbedding",
    "apply_rotary",
    "alibi_slopes",
    "alibi_bias",
    "TinyTransformer",
    "reversal_batch",
    "sorting_batch",
    "online_softmax_merge",
    "tiled_attention",
    "largest_intermediate",
    "head_tradeoff",
]
