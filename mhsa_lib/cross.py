"""Cross-attention: queries from one sequence, keys and values from another (notebook 03).

Shape letters (see the package docstring): B batch, T query length (the decoder's sequence), S
key/value length (the encoder's output, the *memory*), D model width, H heads, Dh = D / H.

In an encoder-decoder transformer each decoder position asks a question of the whole source
sentence: its query comes from the decoder's own stream ``x`` (B, T, D), the keys and values from
the encoder's memory (B, S, D), which has the same width D. The scores are therefore (T, S) per
head, not square, and the output has the decoder's shape (B, T, D)::

    CrossAttention(x, memory) = Concat(head_1, …, head_H) W^O,
    head_h = Attention(x W_h^Q, memory W_h^K, memory W_h^V)

Masks: a padding mask over the memory's positions, (B, 1, 1, S), hides the source sentence's
padding from every query. There is no causal mask: the whole source sentence is known before the
decoder starts, so a decoder position may read every source position; the decoder's own future is
hidden by the causal mask of its *self*-attention, not here.

:class:`CrossAttention` is :class:`mhsa_lib.MultiHeadAttention` called with ``kv=memory``, with
the memory as a required argument; :class:`DecoderBlock` is the pre-norm encoder-decoder block:
masked self-attention, cross-attention over the memory, feed-forward, each in a residual branch.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ._validate import check_input
from .block import FeedForward, LayerNorm
from .multihead import MultiHeadAttention, _MultiHeadBase

__all__ = ["CrossAttention", "DecoderBlock"]


class CrossAttention(_MultiHeadBase):
    """Multi-head cross-attention: queries from ``x``, keys and values from ``memory``.

    Args:
        d_model: D, the width of both the decoder's stream and the memory.
        num_heads: H; must divide D. Scores are scaled by 1/√Dh, as in self-attention (not by
            the memory's length S, nor by D).
        bias: whether the four projections have a bias.
        backend: ``"reference"`` or ``"fast"`` (keyword-only).
        device, dtype: where and in which dtype to create the parameters.

    Attributes:
        q_proj: ``nn.Linear(D, D)`` applied to ``x``.
        k_proj, v_proj: ``nn.Linear(D, D)`` applied to ``memory``.
        out_proj: ``nn.Linear(D, D)``.

    Raises:
        ValueError: if D is not a multiple of H, or on an unknown backend.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        bias: bool = True,
        *,
        backend: str = "reference",
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(d_model, num_heads, backend=backend)
        self._separate_projections(bias, device, dtype)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Optional[Tensor] = None,
        return_weights: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Every position of ``x`` attends to every (unmasked) position of ``memory``.

        Args:
            x: (B, T, D) the decoder's stream: the queries.
            memory: (B, S, D) the encoder's output: the keys and values.
            memory_mask: optional bool tensor, ``True`` = may attend, broadcastable to
                (B, H, T, S): usually a padding mask over the memory, (B, 1, 1, S).
            return_weights: also return the attention weights (B, H, T, S).

        Returns:
            out (B, T, D), or ``(out, weights)`` with weights (B, H, T, S).

        Raises:
            ValueError: if ``x`` or ``memory`` is not (B, ·, D), their batch sizes differ, or
                the mask does not broadcast to (B, H, T, S).
        """
        check_input("memory", memory, self.d_model)
        return self._attend(x, memory_mask, kv=memory, return_weights=return_weights)


class DecoderBlock(nn.Module):
    """A pre-norm decoder block of an encoder-decoder transformer::

        x = x + SelfAttention(LN1(x), self_mask)          # causal: the decoder's own past
        x = x + CrossAttention(LN2(x), memory, memory_mask)  # the whole source, less padding
        x = x + FFN(LN3(x))

    Args:
        d_model: D (of the decoder and of the memory).
        num_heads: H; must divide D.
        d_ff: F, the feed-forward width.

    Attributes:
        self_attn (:class:`MultiHeadAttention`), cross_attn (:class:`CrossAttention`),
        ffn (:class:`FeedForward`), norm1, norm2, norm3 (:class:`LayerNorm`).
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.cross_attn = CrossAttention(d_model, num_heads)
        self.ffn = FeedForward(d_model, d_ff)
        self.norm1 = LayerNorm(d_model)
        self.norm2 = LayerNorm(d_model)
        self.norm3 = LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """(B, T, D), (B, S, D) -> (B, T, D).

        Args:
            x: (B, T, D) the decoder's stream.
            memory: (B, S, D) the encoder's output.
            self_mask: optional mask broadcastable to (B, H, T, T), usually causal (T, T).
            memory_mask: optional mask broadcastable to (B, H, T, S), usually padding (B, 1, 1, S).
        """
        check_input("x", x, self.norm1.weight.shape[0])
        x = x + self.self_attn(self.norm1(x), self_mask)  # (B, T, D)
        x = x + self.cross_attn(self.norm2(x), memory, memory_mask)  # (B, T, D)
        return x + self.ffn(self.norm3(x))  # (B, T, D)
