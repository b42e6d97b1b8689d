"""Known mistakes in the capstone model of notebook 07 (a small Transformer that learns to sort
tokens), as model classes written the way learners write them. Each is trained like a correct
model; the capstone check recognises them from what the trained model does (its probes), not
from its outputs on fixed inputs, so a mistake's ``fn`` builds an untrained model.

Shape letters: B batch, T positions, V vocabulary size, D model width.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mhsa_lib

from ..frame.mistakes import SAME_OUTPUT, catalogue, mistake

VOCAB, SEQ_LEN = 12, 10


class SortingModel(nn.Module):
    """Token embedding, optional learned positions, pre-norm blocks, final norm, logits."""

    def __init__(self, d_model: int = 32, positions: bool = True, attention: Optional[nn.Module] = None):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Parameter(torch.randn(SEQ_LEN, d_model) * 0.02) if positions else None
        self.layers = nn.ModuleList([mhsa_lib.TransformerBlock(d_model, 4, 2 * d_model) for _ in range(2)])
        if attention is not None:
            for layer in self.layers:
                layer.attn = attention
        self.ln = mhsa_lib.LayerNorm(d_model)
        self.out = nn.Linear(d_model, VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.tok(tokens)
        if self.pos is not None:
            h = h + self.pos[: tokens.shape[1]]
        for layer in self.layers:
            h = layer(h)
        return self.out(self.ln(h))


class IdentityAttention(nn.Module):
    """An attention sub-layer that returns its input: every position sees only itself."""

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, **kwargs) -> Tensor:
        return x


def model_without_positions() -> nn.Module:
    return SortingModel(positions=False)


def model_with_identity_attention() -> nn.Module:
    return SortingModel(attention=IdentityAttention())


class SortsTheInput(nn.Module):
    """Computes the answer with torch's sort instead of learning it."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, tokens: Tensor) -> Tensor:
        return F.one_hot(tokens.sort(dim=1).values, VOCAB).float() * self.scale


CAPSTONE_MISTAKES = [
    mistake("capstone-identity-attention", model_with_identity_attention,
            "each output sees only its own token, as if attention were the identity: the t-th smallest "
            "token depends on the whole sequence. Check that every block's attention runs on the whole "
            "sequence and its output is added to the residual stream."),
    mistake("capstone-no-positions", model_without_positions,
            "your model is permutation-equivariant: it cannot tell position 0 (the smallest) from position 9 "
            "(the largest). Add the positional encoding to the token embeddings before the first block."),
    mistake("capstone-sorts-the-input", SortsTheInput,
            "your model computes the answer (torch's sort) instead of learning it with attention.",
            flags=[SAME_OUTPUT]),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(CAPSTONE_MISTAKES)
