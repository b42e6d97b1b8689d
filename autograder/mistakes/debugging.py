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

from ..frame.mistakes import catalogue, mistake
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
    mistake('fix-block-refactored', RefactoredBlock,
            "your block still does what the refactor shipped: attention pre-norm, x + Attn(LN1(x)), but the FFN "
            "post-norm, LN2(x + FFN(x)). The spec is pre-norm in both sub-layers: x = x + FFN(LN2(x))."),
    mistake('fix-block-mixed-other-way', MixedOtherWay,
            "your block mixes the placements the other way: attention post-norm, LN1(x + Attn(x)), FFN pre-norm. "
            "Both sub-layers are pre-norm: x = x + Attn(LN1(x))."),
    mistake('fix-block-post-norm', PostNormBlock,
            'your block is post-norm in both sub-layers, LN(x + F(x)); the spec is pre-norm: x + F(LN(x)).'),
    mistake('fix-block-norm-on-output', NormOnOutputBlock,
            "your block computes x + LN(F(x)): the norm sits on the sub-layer's output. Pre-norm normalises the "
            "sub-layer's input: x + F(LN(x))."),
]

# --------------------------------------------------------------------------- incident 2: merge

ATTENTION_MISTAKES = [
    mistake('fix-attn-merge-no-transpose', MHAMergeNoTranspose,
            "the merge still reshapes (B, H, T, Dh) straight to (B, T, D): token t then receives pieces of other "
            "tokens. Transpose back first: out.transpose(1, 2).reshape(B, T, D)."),
    mistake('fix-attn-split-no-transpose', MHASplitNoTranspose,
            "the merge is right now, but the split is broken the same way: view (B, T, D) as (B, T, H, Dh), then "
            "transpose(1, 2)."),
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
    mistake('fix-encoder-post-norm', PostNormEncoder,
            "your blocks are still post-norm, LN(x + F(x)): the norm sits on the residual path, so in a deep stack "
            "the gradient reaching the first layers passes through every norm. Use norm_placement='pre'."),
    mistake('fix-encoder-no-final-norm', PreNormNoFinalNorm,
            "the blocks are pre-norm now, but the stack has no final LayerNorm: the residual stream grows with "
            "depth and reaches the output unnormalised. Apply self.norm after the last block."),
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
    mistake('fix-speed-not-causal', FastButNotCausal,
            "your module is fast but no longer causal: the mask went out with the loop. Build it in one vectorised "
            "call on the input's device, e.g. torch.ones(T, T, dtype=torch.bool, device=x.device).tril()."),
    mistake('fix-speed-wrong-triangle', FastUpperLeftWrong,
            "your mask is the upper triangle (triu): each query then sees the future, not the past. The causal mask "
            "keeps keys j <= i: .tril()."),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(BLOCK_MISTAKES, ATTENTION_MISTAKES, ENCODER_MISTAKES, SPEED_MISTAKES)
