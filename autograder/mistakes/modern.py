"""Known mistakes in notebook 04's modern block (RMSNorm, SwiGLUFeedForward) and its cost
accounting (block_costs): an RMSNorm that subtracts the mean (a LayerNorm without shift, or
torch.var), puts eps outside the square root or leaves it out, forgets the square root,
normalises over the wrong axis or forgets its gain; a SwiGLU with its gate and up branches
swapped, SiLU on the product or on both branches, GELU, ReLU or a bare sigmoid instead of SiLU,
the branches added, or no down projection; a cost count with a multiply-add as 1 FLOP, no output
projection, the attention core linear in T, the biases miscounted, one FFN matrix, or 4·D for F.

The modules keep the course's layout (RMSNorm: weight; SwiGLU: gate_proj, up_proj, down_proj)
so the checks can copy the same weights into them and compare outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..frame.mistakes import SAME_OUTPUT, mistake

# --------------------------------------------------------------------------- RMSNorm


class BuggyRMSNorm(nn.Module):
    """A readable RMSNorm over the last axis; subclasses switch one bug on."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RMSNormSubtractsMean(BuggyRMSNorm):
    """Centres each token first: a LayerNorm with a gain and no shift."""

    def forward(self, x):
        c = x - x.mean(-1, keepdim=True)
        return c / torch.sqrt(c.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RMSNormEpsOutsideSqrt(BuggyRMSNorm):
    def forward(self, x):
        return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps) * self.weight


class RMSNormWrongAxis(BuggyRMSNorm):
    """The mean square over the positions (dim=-2) instead of over each token's features."""

    def forward(self, x):
        return x / torch.sqrt(x.pow(2).mean(-2, keepdim=True) + self.eps) * self.weight


class RMSNormNoGain(BuggyRMSNorm):
    """Has a weight but never multiplies by it."""

    def forward(self, x):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class RMSNormNormNotRMS(BuggyRMSNorm):
    """Divides by the L2 norm of the token (a sum of squares, not their mean)."""

    def forward(self, x):
        return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + self.eps) * self.weight


class RMSNormNoEps(BuggyRMSNorm):
    """No eps at all: x * rsqrt(mean(x²))."""

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)) * self.weight


class RMSNormNoSqrt(BuggyRMSNorm):
    """Divides by the mean square itself, without its square root."""

    def forward(self, x):
        return x / (x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RMSNormVariance(BuggyRMSNorm):
    """Divides by the root of torch.var (centred, and over D - 1) instead of the mean square."""

    def forward(self, x):
        return x / torch.sqrt(x.var(-1, keepdim=True) + self.eps) * self.weight


class RMSNormCallsTorch(BuggyRMSNorm):
    def forward(self, x):
        return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)


RMS_NORM_MISTAKES = [
    mistake("rms-subtracts-mean", RMSNormSubtractsMean,
            "you subtract each token's mean first: that is LayerNorm (without its shift). RMSNorm divides x itself "
            "by its root mean square, x / sqrt(mean(x²) + eps), with no centring."),
    mistake("rms-eps-outside-sqrt", RMSNormEpsOutsideSqrt,
            "you add eps to the root mean square, x / (sqrt(mean(x²)) + eps): eps goes inside the square root, "
            "x / sqrt(mean(x²) + eps)."),
    mistake("rms-wrong-axis", RMSNormWrongAxis,
            "you take the mean square over the positions (dim=-2): each token is normalised over its own "
            "features, the last axis, mean(dim=-1, keepdim=True)."),
    mistake("rms-no-gain", RMSNormNoGain,
            "the normalisation is right, but the gain is not applied: return normed * self.weight."),
    mistake("rms-l2-norm", RMSNormNormNotRMS,
            "you divide by the length of the token (the square root of the SUM of squares): RMSNorm divides by "
            "the root MEAN square, so a token of D features equal to 1 stays 1; use .mean(dim=-1), not .sum."),
    mistake("rms-no-eps", RMSNormNoEps,
            "you leave eps out: x / sqrt(mean(x²)) ignores RMSNorm(D, eps=...) and blows up on tokens near 0. "
            "Add eps to the mean square, inside the square root: x / sqrt(mean(x²) + eps)."),
    mistake("rms-no-sqrt", RMSNormNoSqrt,
            "you divide by the mean square itself, not by its square root: x / sqrt(mean(x²) + eps) (torch.sqrt "
            "or torch.rsqrt), so that a token scaled by c comes out the same."),
    mistake("rms-variance", RMSNormVariance,
            "you divide by the variance's root (x.var / x.std): the variance subtracts each token's mean first "
            "(and torch.var divides by D - 1). RMSNorm uses the mean of the squares of x itself, "
            "x.pow(2).mean(dim=-1, keepdim=True), with no centring."),
    mistake("rms-calls-torch", RMSNormCallsTorch, "Calls F.rms_norm.", flags=[SAME_OUTPUT]),
]


# --------------------------------------------------------------------------- SwiGLU


class BuggySwiGLU(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)); subclasses switch one bug on."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.gate_proj(x)
        return self.down_proj(gate * torch.sigmoid(gate) * self.up_proj(x))


class SwiGLUSwapped(BuggySwiGLU):
    """SiLU on the up branch, the gate branch linear: gate and up swapped."""

    def forward(self, x):
        return self.down_proj(self.gate_proj(x) * F.silu(self.up_proj(x)))


class SwiGLUSiluOnProduct(BuggySwiGLU):
    """SiLU applied after the gating, to the product of both branches."""

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x) * self.up_proj(x)))


class SwiGLUGelu(BuggySwiGLU):
    """GELU where SiLU is asked for (that is GeGLU)."""

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x)) * self.up_proj(x))


class SwiGLUSigmoid(BuggySwiGLU):
    """A bare sigmoid gate (the original GLU) instead of SiLU, z·sigmoid(z)."""

    def forward(self, x):
        return self.down_proj(torch.sigmoid(self.gate_proj(x)) * self.up_proj(x))


class SwiGLURelu(BuggySwiGLU):
    """A ReLU gate (that is ReGLU)."""

    def forward(self, x):
        return self.down_proj(torch.relu(self.gate_proj(x)) * self.up_proj(x))


class SwiGLUSum(BuggySwiGLU):
    """The two branches added instead of multiplied."""

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) + self.up_proj(x))


class SwiGLUSiluOnBoth(BuggySwiGLU):
    """SiLU on the up branch as well as on the gate."""

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * F.silu(self.up_proj(x)))


class SwiGLUNoDown(BuggySwiGLU):
    """Returns the gated product itself, of width F: down_proj is never applied."""

    def forward(self, x):
        return F.silu(self.gate_proj(x)) * self.up_proj(x)


SWIGLU_MISTAKES = [
    mistake("swiglu-swapped", SwiGLUSwapped,
            "SiLU is on the up branch and the gate branch is linear: gate and up are swapped. The gate goes "
            "through SiLU, silu(gate_proj(x)) * up_proj(x)."),
    mistake("swiglu-silu-on-product", SwiGLUSiluOnProduct,
            "you apply SiLU to the product of both branches: only the gate branch goes through SiLU, and the "
            "product silu(gate_proj(x)) * up_proj(x) is what down_proj gets."),
    mistake("swiglu-gelu", SwiGLUGelu,
            "you use GELU on the gate (that is GeGLU): SwiGLU's gate is SiLU, z · sigmoid(z) (F.silu)."),
    mistake("swiglu-sigmoid", SwiGLUSigmoid,
            "your gate is a bare sigmoid(gate_proj(x)) (the original GLU): SiLU is z · sigmoid(z), the gate "
            "value times its sigmoid (F.silu)."),
    mistake("swiglu-relu", SwiGLURelu,
            "your gate is a ReLU (that is ReGLU): SwiGLU's gate is SiLU, z · sigmoid(z) (F.silu), smooth and "
            "slightly negative below 0."),
    mistake("swiglu-sum", SwiGLUSum,
            "you add the two branches: SwiGLU multiplies them element by element, silu(gate_proj(x)) * "
            "up_proj(x), so the gate scales the up branch."),
    mistake("swiglu-silu-on-both", SwiGLUSiluOnBoth,
            "you apply SiLU to the up branch too: only the gate goes through SiLU; up_proj(x) stays linear, "
            "silu(gate_proj(x)) * up_proj(x)."),
    mistake("swiglu-no-down", SwiGLUNoDown,
            "you return the gated product (width F) without down_proj: the FFN must map back to D, "
            "down_proj(silu(gate_proj(x)) * up_proj(x))."),
]


# --------------------------------------------------------------------------- block_costs


def _costs(d, f, t, *, mac=2, projections=4, core_t=None, proj_bias=None, ffn_bias=None, core_products=2,
           ffn_products=2):
    """The cost dict, with one count switched to a known wrong form."""
    core_t = t * t if core_t is None else core_t
    return {
        "attn_proj_params": projections * d * d + (projections * d if proj_bias is None else proj_bias),
        "attn_proj_flops": mac * projections * t * d * d,
        "attn_core_flops": mac * core_products * core_t * d,
        "ffn_params": 2 * d * f + (f + d if ffn_bias is None else ffn_bias),
        "ffn_flops": mac * ffn_products * t * d * f,
    }


def costs_mac_as_one(d_model, num_heads, d_ff, seq_len):
    return _costs(d_model, d_ff, seq_len, mac=1)


def costs_no_out_proj(d_model, num_heads, d_ff, seq_len):
    return _costs(d_model, d_ff, seq_len, projections=3)


def costs_core_linear(d_model, num_heads, d_ff, seq_len):
    return _costs(d_model, d_ff, seq_len, core_t=seq_len)


def costs_no_biases(d_model, num_heads, d_ff, seq_len):
    return _costs(d_model, d_ff, seq_len, proj_bias=0, ffn_bias=0)


def costs_ffn_biases_d(d_model, num_heads, d_ff, seq_len):
    """Both FFN biases counted as D wide (fc1's is F wide)."""
    return _costs(d_model, d_ff, seq_len, ffn_bias=2 * d_model)


def costs_core_one_product(d_model, num_heads, d_ff, seq_len):
    """Only QKᵀ in the attention core, weights @ V forgotten."""
    return _costs(d_model, d_ff, seq_len, core_products=1)


def costs_core_per_head(d_model, num_heads, d_ff, seq_len):
    """The core counted with Dh instead of D (one head only)."""
    c = _costs(d_model, d_ff, seq_len)
    c["attn_core_flops"] //= num_heads
    return c


def costs_ffn_one_matrix(d_model, num_heads, d_ff, seq_len):
    """ffn_flops of fc1 only: fc2 forgotten."""
    return _costs(d_model, d_ff, seq_len, ffn_products=1)


def costs_ffn_four_d(d_model, num_heads, d_ff, seq_len):
    """The FFN counted with a hidden width of 4·D, whatever d_ff is."""
    return _costs(d_model, 4 * d_model, seq_len)


BLOCK_COSTS_MISTAKES = [
    mistake("costs-mac-as-one", costs_mac_as_one,
            "your FLOPs are half the expected ones: you count a multiply-add as 1 FLOP. A multiply-add is 2 FLOPs "
            "(one multiply, one add), so (T, D) @ (D, D) costs 2·T·D·D."),
    mistake("costs-no-out-proj", costs_no_out_proj,
            "you count three attention projections: Q, K and V, but the output projection W_O (D, D) is a fourth "
            "(4·D² weights, 4·D biases, 8·T·D² FLOPs)."),
    mistake("costs-core-linear", costs_core_linear,
            "your attention core grows linearly with T: every query meets every key, so QKᵀ is (T, Dh) @ (Dh, T) "
            "per head, T²·Dh multiply-adds, and weights @ V the same: 4·T²·D FLOPs."),
    mistake("costs-no-biases", costs_no_biases,
            "your parameter counts leave the biases out: the linear layers here have biases (4·D for the four "
            "projections, F + D for fc1 and fc2)."),
    mistake("costs-ffn-biases-d", costs_ffn_biases_d,
            "your FFN biases are miscounted: fc1's bias has F entries (one per hidden unit) and fc2's D, F + D in all."),
    mistake("costs-core-one-product", costs_core_one_product,
            "your attention core counts QKᵀ only: weights @ V, (T, T) @ (T, Dh) per head, costs as much again."),
    mistake("costs-ffn-one-matrix", costs_ffn_one_matrix,
            "your ffn_flops count one of the FFN's two matrices: fc1 (T, D) @ (D, F) and fc2 (T, F) @ (F, D) "
            "cost 2·T·D·F each, 4·T·D·F in all."),
    mistake("costs-ffn-four-d", costs_ffn_four_d,
            "your FFN counts use a hidden width of 4·D instead of d_ff: use the F you are given (4·D is only "
            "the usual choice), 2·D·F + F + D parameters and 4·T·D·F FLOPs."),
    mistake("costs-core-per-head", costs_core_per_head,
            "your attention core counts one head: H heads of width Dh = D/H each cost T²·Dh multiply-adds per "
            "product, T²·D in all."),
]
