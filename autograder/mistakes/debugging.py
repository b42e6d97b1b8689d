"""The broken code of notebook 06's four incidents, and the other ways each fix goes wrong.

Every class keeps the course's layout (attn with q_proj/k_proj/v_proj/out_proj, ffn with
fc1/fc2, norm1, norm2; an encoder's blocks and final norm), so the checks in
:mod:`autograder.checks.debugging` can copy reference weights into them and name the one a
learner's repair still behaves like.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

import mhsa_lib

from .attention import Mistake
from .multihead import MHAMergeNoTranspose, MHASplitNoTranspose


# --------------------------------------------------------------------------- incident 1: norms


class _Block(nn.Module):
    """A block with the course's layout; ``placement`` says where each sub-layer's norm sits."""

    placement = ("pre", "pre")

    def __init__(self, d_model: int, num_heads: int, d_ff: int):
        super().__init__()
        self.attn = mhsa_lib.MultiHeadAttention(d_model, num_heads)
        self.ffn = mhsa_lib.FeedForward(d_model, d_ff)
        self.norm1 = mhsa_lib.LayerNorm(d_model)
        self.norm2 = mhsa_lib.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if self.placement[0] == "pre":
            x = x + self.attn(self.norm1(x), mask)
        else:
            x = self.norm1(x + self.attn(x, mask))
        if self.placement[1] == "pre":
            return x + self.ffn(self.norm2(x))
        return self.norm2(x + self.ffn(x))


class RefactoredBlock(_Block):
    """Incident 1 as shipped: attention pre-norm, FFN post-norm."""

    placement = ("pre", "post")


class MixedOtherWay(_Block):
    placement = ("post", "pre")


class PostNormBlock(_Block):
    placement = ("post", "post")


class NormOnOutputBlock(_Block):
    """x + LN(F(x)): the norm moved onto the sub-layer's output."""

    def forward(self, x, mask=None):
        x = x + self.norm1(self.attn(x, mask))
        return x + self.norm2(self.ffn(x))


BLOCK_MISTAKES = [
    Mistake("fix-block-refactored", RefactoredBlock, 14, "attention pre-norm, FFN post-norm (as shipped)"),
    Mistake("fix-block-mixed-other-way", MixedOtherWay, 14, "attention post-norm, FFN pre-norm"),
    Mistake("fix-block-post-norm", PostNormBlock, 14, "post-norm everywhere"),
    Mistake("fix-block-norm-on-output", NormOnOutputBlock, 15, "x + LN(F(x))"),
]

# --------------------------------------------------------------------------- incident 2: merge

ATTENTION_MISTAKES = [
    Mistake("fix-attn-merge-no-transpose", MHAMergeNoTranspose, 11, "merge without transpose (as shipped)"),
    Mistake("fix-attn-split-no-transpose", MHASplitNoTranspose, 10, "split without transpose"),
]


def probe_always_true(module) -> bool:
    return True


def probe_shape_only(module) -> bool:
    """Checks the output shape, which the merge bug keeps."""
    x = torch.randn(2, 5, module.q_proj.in_features, dtype=module.q_proj.weight.dtype)
    return tuple(module(x).shape) == tuple(x.shape)


# --------------------------------------------------------------------------- incident 3: deep stacks


class _Encoder(nn.Module):
    """L blocks and (maybe) a final norm: ``blocks`` (ModuleList), ``norm``."""

    placement = "pre"
    final_norm = True

    def __init__(self, d_model: int, num_heads: int, d_ff: int, num_layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            mhsa_lib.TransformerBlock(d_model, num_heads, d_ff, self.placement) for _ in range(num_layers)
        )
        self.norm = mhsa_lib.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) if self.final_norm else x


class PostNormEncoder(_Encoder):
    """Incident 3 as shipped: post-norm blocks (the final norm is then redundant but harmless)."""

    placement = "post"


class PreNormNoFinalNorm(_Encoder):
    final_norm = False


ENCODER_MISTAKES = [
    Mistake("fix-encoder-post-norm", PostNormEncoder, 14, "post-norm blocks (as shipped)"),
    Mistake("fix-encoder-no-final-norm", PreNormNoFinalNorm, None, "no final LayerNorm"),
]

# --------------------------------------------------------------------------- incident 4: speed


class SlowCausalAttention(nn.Module):
    """Incident 4 as shipped: causal self-attention whose mask is rebuilt, entry by entry, in
    Python on the CPU at every call, then copied to the input's device."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.num_heads
        q, k, v = (p(x).view(b, t, h, d // h).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        mask = torch.zeros(t, t, dtype=torch.bool)
        for i in range(t):
            for j in range(t):
                if j <= i:
                    mask[i, j] = True
        mask = mask.to(x.device)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // h)  # (B, H, T, T)
        scores = scores.masked_fill(~mask, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v  # (B, H, T, Dh)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class FastButNotCausal(SlowCausalAttention):
    """Fast, but the mask was dropped along with the loop."""

    def forward(self, x):
        b, t, d = x.shape
        h = self.num_heads
        q, k, v = (p(x).view(b, t, h, d // h).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class FastUpperLeftWrong(SlowCausalAttention):
    """Fast, but the triangle is the wrong one (triu: queries see the future, not the past)."""

    def forward(self, x):
        b, t, d = x.shape
        h = self.num_heads
        q, k, v = (p(x).view(b, t, h, d // h).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu()
        scores = (q @ k.transpose(-2, -1) / math.sqrt(d // h)).masked_fill(~mask, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


SPEED_MISTAKES = [
    Mistake("fix-speed-not-causal", FastButNotCausal, 13, "mask dropped"),
    Mistake("fix-speed-wrong-triangle", FastUpperLeftWrong, 9, "triu instead of tril"),
]
