"""Known mistakes in notebook 04's steps (LayerNorm, FeedForward, TransformerBlock): a LayerNorm
over the wrong axis, with the unbiased variance, with eps misplaced or missing, or without its
weight and bias; an FFN without (or with an extra, or the wrong) activation; a block with its
placements swapped, the norm or the residual wired wrongly, dropout active in eval mode, the mask
dropped or one LayerNorm for both sub-layers; and answers that call torch's or the library's
version of the step.

Each is a small class with the course's fixed layout (LayerNorm: weight, bias; FeedForward: fc1,
fc2; TransformerBlock: attn, ffn, norm1, norm2), written the way the bug is usually written, so
the checks can copy the same weights into it and compare outputs.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mhsa_lib

from ..frame.mistakes import SAME_OUTPUT, catalogue, mistake

# --------------------------------------------------------------------------- LayerNorm


class BuggyLayerNorm(nn.Module):
    """A readable LayerNorm over the last axis (biased variance); subclasses switch one bug on."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def normalise(self, x: Tensor, dim: int = -1, unbiased: bool = False) -> Tensor:
        mean = x.mean(dim, keepdim=True)
        var = x.var(dim, keepdim=True, unbiased=unbiased)
        return (x - mean) / torch.sqrt(var + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.normalise(x) * self.weight + self.bias


class LayerNormWrongAxis(BuggyLayerNorm):
    """Normalises each feature over the positions (dim=-2) instead of each token over its features."""

    def forward(self, x):
        return self.normalise(x, dim=-2) * self.weight + self.bias


class LayerNormUnbiased(BuggyLayerNorm):
    """torch.var's default: divides by D - 1."""

    def forward(self, x):
        return self.normalise(x, unbiased=True) * self.weight + self.bias


class LayerNormEpsOutsideSqrt(BuggyLayerNorm):
    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.var(-1, keepdim=True, unbiased=False).sqrt()
        return (x - mean) / (std + self.eps) * self.weight + self.bias


class LayerNormNoEps(BuggyLayerNorm):
    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        return (x - mean) / x.var(-1, keepdim=True, unbiased=False).sqrt() * self.weight + self.bias


class LayerNormNoAffine(BuggyLayerNorm):
    """Has weight and bias but never applies them."""

    def forward(self, x):
        return self.normalise(x)


class LayerNormCallsTorch(BuggyLayerNorm):
    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


LAYER_NORM_MISTAKES = [
    mistake('ln-wrong-axis', LayerNormWrongAxis,
            "you normalise over the positions (dim=-2), not over each token's features: the mean and variance of a "
            "token are taken over the last axis, dim=-1 (keepdim=True)."),
    mistake('ln-unbiased', LayerNormUnbiased,
            "you use the unbiased variance (dividing by D - 1; torch.var's default): LayerNorm divides by D, "
            "x.var(dim=-1, unbiased=False, keepdim=True) or ((x - mean) ** 2).mean(dim=-1, keepdim=True)."),
    mistake('ln-eps-outside-sqrt', LayerNormEpsOutsideSqrt,
            "you add eps to the standard deviation, (x - mean) / (sqrt(var) + eps): eps goes inside the square root, "
            "(x - mean) / sqrt(var + eps)."),
    mistake('ln-no-eps', LayerNormNoEps,
            "eps is not used: divide by sqrt(var + eps), so that a token with (almost) constant features does not "
            "divide by (almost) zero."),
    mistake('ln-no-affine', LayerNormNoAffine,
            "the normalisation is right, but weight and bias are not applied: return normalised * self.weight + "
            "self.bias."),
    mistake('ln-calls-torch', LayerNormCallsTorch,
            'Calls F.layer_norm.', flags=[SAME_OUTPUT]),
]


# --------------------------------------------------------------------------- FeedForward


class BuggyFeedForward(nn.Module):
    """fc2(act(fc1(x))); subclasses switch one bug on."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu"):
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation: expected 'relu' or 'gelu', got {activation!r}")
        self.activation = activation
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def act(self, h: Tensor) -> Tensor:
        if self.activation == "relu":
            return torch.clamp(h, min=0)
        return 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, T, D) -> (B, T, F) -> (B, T, D)


class FeedForwardNoActivation(BuggyFeedForward):
    """Two linear maps with nothing between them: one linear map in disguise."""

    def forward(self, x):
        return self.fc2(self.fc1(x))


class FeedForwardActivationAfterOutput(BuggyFeedForward):
    def forward(self, x):
        return self.act(self.fc2(self.act(self.fc1(x))))


class FeedForwardGeluTanh(BuggyFeedForward):
    """The tanh approximation of GELU where the exact, erf-based one is asked for."""

    def act(self, h):
        return F.gelu(h, approximate="tanh") if self.activation == "gelu" else F.relu(h)


class FeedForwardIgnoresActivation(BuggyFeedForward):
    """Always ReLU, whatever ``activation`` says."""

    def act(self, h):
        return F.relu(h)


class FeedForwardWithResidual(BuggyFeedForward):
    """Adds its input back: the block's residual connection, taken inside the FFN."""

    def forward(self, x):
        return x + super().forward(x)


class FeedForwardCallsLibrary(BuggyFeedForward):
    """Hands the work to mhsa_lib.FeedForward."""

    def forward(self, x):
        inner = mhsa_lib.FeedForward(self.fc1.in_features, self.fc1.out_features, self.activation)
        inner.fc1, inner.fc2 = self.fc1, self.fc2
        return inner(x)


FEED_FORWARD_MISTAKES = [
    mistake('ffn-no-activation', FeedForwardNoActivation,
            "there is no non-linearity between fc1 and fc2: two linear maps in a row are just one linear map, "
            "fc2(fc1(x)) = x·(W2·W1)ᵀ + b. Apply the activation to fc1's output: fc2(act(fc1(x)))."),
    mistake('ffn-activation-after-output', FeedForwardActivationAfterOutput,
            "you apply the activation after fc2 as well: the FFN is fc2(act(fc1(x))), with fc2's output left as it is "
            "(it goes into the residual sum)."),
    mistake('ffn-gelu-tanh', FeedForwardGeluTanh,
            "you use the tanh approximation of GELU; the course's (and nn.TransformerEncoderLayer's) GELU is the exact "
            "one: x·Φ(x) = 0.5·x·(1 + erf(x/√2)), F.gelu(x) with its default approximate='none'."),
    mistake('ffn-ignores-activation', FeedForwardIgnoresActivation,
            "you apply ReLU whatever `activation` says: use GELU when activation='gelu' (store the choice in "
            "__init__)."),
    mistake('ffn-adds-residual', FeedForwardWithResidual,
            "your FFN adds its input back, x + fc2(act(fc1(x))): the residual connection belongs to the block "
            "(x + FFN(LN(x))), so the FFN returns fc2(act(fc1(x))) alone."),
    mistake('ffn-calls-library', FeedForwardCallsLibrary,
            'Calls mhsa_lib.FeedForward.', flags=[SAME_OUTPUT]),
]


# --------------------------------------------------------------------------- TransformerBlock


class BuggyTransformerBlock(nn.Module):
    """A block wired from mhsa_lib's sub-modules (allowed in this step); subclasses switch one bug on.

    ``residual`` picks the wiring of each sub-layer F with its norm LN:
    ``"ok"``: pre-norm x + F(LN(x)), post-norm LN(x + F(x));
    ``"norm_inside"``: x + LN(F(x));  ``"normed_residual"``: LN(x) + F(LN(x));
    ``"none"``: F(LN(x)) (pre) or LN(F(x)) (post).
    """

    swapped = False
    residual = "ok"
    dropout_always = False
    ignore_mask = False
    shared_norm = False

    def __init__(self, d_model: int, num_heads: int, d_ff: int, norm_placement: str = "pre",
                 dropout: float = 0.0):
        super().__init__()
        if norm_placement not in ("pre", "post"):
            raise ValueError(f"norm_placement: expected 'pre' or 'post', got {norm_placement!r}")
        self.norm_placement = norm_placement
        self.p = dropout
        self.attn = mhsa_lib.MultiHeadAttention(d_model, num_heads)
        self.ffn = mhsa_lib.FeedForward(d_model, d_ff, dropout=dropout)
        self.norm1 = mhsa_lib.LayerNorm(d_model)
        self.norm2 = mhsa_lib.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def _dropout(self, h: Tensor) -> Tensor:
        # F.dropout's `training` defaults to True: it keeps dropping in eval mode.
        return F.dropout(h, self.p) if self.dropout_always else self.drop(h)

    def _sublayer(self, x: Tensor, f, norm) -> Tensor:
        pre = (self.norm_placement == "pre") != self.swapped
        if self.residual == "norm_inside":
            return x + norm(self._dropout(f(x)))
        if self.residual == "normed_residual":
            h = norm(x)
            return h + self._dropout(f(h))
        if self.residual == "none":
            return self._dropout(f(norm(x))) if pre else norm(self._dropout(f(x)))
        return x + self._dropout(f(norm(x))) if pre else norm(x + self._dropout(f(x)))

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        mask = None if self.ignore_mask else mask
        x = self._sublayer(x, lambda h: self.attn(h, mask), self.norm1)
        return self._sublayer(x, self.ffn, self.norm1 if self.shared_norm else self.norm2)


class BlockPlacementSwapped(BuggyTransformerBlock):
    swapped = True


class BlockNormInsideResidual(BuggyTransformerBlock):
    residual = "norm_inside"


class BlockNormedResidual(BuggyTransformerBlock):
    residual = "normed_residual"


class BlockNoResidual(BuggyTransformerBlock):
    residual = "none"


class BlockDropoutInEval(BuggyTransformerBlock):
    dropout_always = True


class BlockMaskNotPassed(BuggyTransformerBlock):
    ignore_mask = True


class BlockSharedNorm(BuggyTransformerBlock):
    shared_norm = True


class BlockCallsLibrary(BuggyTransformerBlock):
    """Wraps mhsa_lib.TransformerBlock, its sub-modules exposed under the course's names."""

    def __init__(self, d_model, num_heads, d_ff, norm_placement="pre", dropout=0.0):
        super().__init__(d_model, num_heads, d_ff, norm_placement, dropout)
        self.inner = mhsa_lib.TransformerBlock(d_model, num_heads, d_ff, norm_placement, dropout)
        self.attn, self.ffn = self.inner.attn, self.inner.ffn
        self.norm1, self.norm2 = self.inner.norm1, self.inner.norm2

    def forward(self, x, mask=None):
        return self.inner(x, mask)


TRANSFORMER_BLOCK_MISTAKES = [
    mistake('block-placement-swapped', BlockPlacementSwapped,
            "your block gives the other placement's output: pre-norm normalises the input of each sub-layer, x + "
            "F(LN(x)); post-norm normalises after the residual sum, LN(x + F(x)). Check which branch runs for each "
            "norm_placement."),
    mistake('block-norm-inside-residual', BlockNormInsideResidual,
            "your block computes x + LN(F(x)): the norm is applied to the sub-layer's output inside the residual. "
            "Pre-norm is x + F(LN(x)) (norm before F); post-norm is LN(x + F(x)) (norm after the sum)."),
    mistake('block-normed-residual', BlockNormedResidual,
            "your block computes LN(x) + F(LN(x)): the residual adds the normalised x. Keep the raw x on the residual "
            "path: h = LN(x); x = x + F(h)."),
    mistake('block-no-residual', BlockNoResidual,
            "the residual connection is missing: each sub-layer's output must be added to its input (x + F(LN(x)) for "
            "pre-norm, LN(x + F(x)) for post-norm)."),
    mistake('block-dropout-in-eval', BlockDropoutInEval,
            "dropout is active in eval mode: the output changes from call to call after .eval(). Use nn.Dropout "
            "modules (they switch off in eval mode), or F.dropout(x, p, training=self.training) — F.dropout's training "
            "argument defaults to True."),
    mistake('block-mask-not-passed', BlockMaskNotPassed,
            "the mask is not passed to the attention: forward(x, mask) gives the same output as forward(x). Call "
            "self.attn(h, mask)."),
    mistake('block-shared-norm', BlockSharedNorm,
            "both sub-layers use norm1: the FFN sub-layer needs its own LayerNorm, norm2, with its own weight and "
            "bias."),
    mistake('block-calls-library', BlockCallsLibrary,
            'Calls mhsa_lib.TransformerBlock.', flags=[SAME_OUTPUT]),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(LAYER_NORM_MISTAKES, FEED_FORWARD_MISTAKES, TRANSFORMER_BLOCK_MISTAKES)
