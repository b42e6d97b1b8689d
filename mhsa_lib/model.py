"""A small Transformer encoder built from the course's parts, and the toy task it learns (notebook 07).

Shape letters (see the package docstring): B batch, T length, D model width, H heads,
F feed-forward width, V vocabulary size, L layers.

Read top to bottom: tokens -> embeddings + positions -> L blocks -> final LayerNorm -> a linear
head that scores every vocabulary entry at every position::

    tokens (B, T) ─ embed ─> (B, T, D) ─ + pos (T, D) ─> blocks ─> norm ─> head ─> logits (B, T, V)

The toy tasks need attention. Reversal: the answer at position t is the token at position
T-1-t, which position t can only read by attending to it. Sorting: the answer at position t is
the t-th smallest token, which depends on every token of the sequence.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ._validate import check_choice
from .block import LayerNorm, TransformerBlock
from .positional import LearnedPositionalEmbedding, sinusoidal_positional_encoding

__all__ = ["TinyTransformer", "reversal_batch", "sorting_batch"]

POSITIONAL = ("sinusoidal", "learned", "none")


class TinyTransformer(nn.Module):
    """A pre-norm Transformer encoder that predicts one token per position.

    Args:
        vocab_size: V.
        d_model: D.
        num_heads: H.
        d_ff: F.
        num_layers: L, the number of :class:`~mhsa_lib.block.TransformerBlock`.
        max_len: the longest sequence (the size of a learned position table).
        positional: ``"sinusoidal"`` (a fixed buffer), ``"learned"`` (parameters) or ``"none"``.

    Attributes:
        embed: ``nn.Embedding(V, D)``; blocks: ``nn.ModuleList`` of L blocks; norm: the final
        :class:`~mhsa_lib.block.LayerNorm` (a pre-norm stack needs one before the head);
        head: ``nn.Linear(D, V)``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        max_len: int,
        *,
        positional: str = "sinusoidal",
    ) -> None:
        super().__init__()
        check_choice("positional", positional, POSITIONAL)
        self.positional = positional
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        if positional == "learned":
            self.pos = LearnedPositionalEmbedding(max_len, d_model)
        elif positional == "sinusoidal":
            # A buffer: saved with the model and moved by .to(device), never trained.
            self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model), persistent=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, num_heads, d_ff, "pre") for _ in range(num_layers)
        )
        self.norm = LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def positions(self, seq_len: int) -> Optional[Tensor]:
        """(T, D), or None without positional information."""
        if self.positional == "learned":
            return self.pos(seq_len)
        if self.positional == "sinusoidal":
            if seq_len > self.max_len:
                raise ValueError(f"tokens: expected at most max_len={self.max_len} positions, got {seq_len}")
            return self.pe[:seq_len]
        return None

    def forward(self, tokens: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """tokens (B, T) integer ids; mask optional, ``True`` = may attend. Returns logits (B, T, V)."""
        return self._run(tokens, mask, None)

    def attention_maps(self, tokens: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        """The attention weights of every layer: a list of L tensors (B, H, T, T), detached.

        They are the weights the forward pass itself computes: each block returns them
        (``return_weights=True``), after its own ``norm1``, on its own input.
        """
        maps: List[Tensor] = []
        self._run(tokens, mask, maps)
        return maps

    def _run(self, tokens: Tensor, mask: Optional[Tensor], maps: Optional[List[Tensor]]) -> Tensor:
        x = self.embed(tokens)  # (B, T) -> (B, T, D)
        pos = self.positions(tokens.shape[1])
        if pos is not None:
            x = x + pos  # (B, T, D) + (T, D)
        for block in self.blocks:
            if maps is None:
                x = block(x, mask)  # (B, T, D)
            else:
                x, w = block(x, mask, return_weights=True)  # (B, T, D), (B, H, T, T)
                maps.append(w.detach())
        return self.head(self.norm(x))  # (B, T, D) -> (B, T, V)


def reversal_batch(
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    generator: Optional[torch.Generator] = None,
    device=None,
) -> Tuple[Tensor, Tensor]:
    """A batch of the reversal task: inputs (B, T) uniform random tokens, targets (B, T) the
    same sequences reversed (target[t] = input[T-1-t])."""
    x = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    x = x.to(device) if device is not None else x
    return x, x.flip(1)


def sorting_batch(
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    generator: Optional[torch.Generator] = None,
    device=None,
) -> Tuple[Tensor, Tensor]:
    """A batch of the sorting task: inputs (B, T) uniform random tokens, targets (B, T) the same
    tokens in ascending order (target[t] = the t-th smallest input token, repeats kept)."""
    x = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    x = x.to(device) if device is not None else x
    return x, x.sort(dim=1).values
