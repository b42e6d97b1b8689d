"""The modern block's parts and the cost of a block's sub-layers (notebook 04).

Shape letters (see the package docstring): B batch, T length, D model width, H heads,
F feed-forward width.

- :class:`RMSNorm` rescales each token by the root mean square of its features, with a learned
  gain and no shift and no mean subtraction (Zhang & Sennrich, 2019; Llama, Mistral, Gemma).
- :class:`SwiGLUFeedForward` is the gated feed-forward network of those models:
  ``down_proj(silu(gate_proj(x)) * up_proj(x))``, three matrices instead of two, so at an equal
  parameter budget its hidden width is 2/3 of the plain FFN's (:func:`swiglu_d_ff`).
- :func:`block_costs` counts the parameters and forward FLOPs of a block's three parts: the
  attention projections, the attention core (``QKᵀ`` and ``weights @ V``) and the FFN.
"""

from __future__ import annotations

from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import check_choice, check_dropout, check_heads, check_positive_int

__all__ = ["RMSNorm", "SwiGLUFeedForward", "swiglu_d_ff", "block_costs", "FFN_KINDS", "COST_KEYS"]

FFN_KINDS = ("mlp", "swiglu")
#: The keys of :func:`block_costs`' answer, in the order the notebook shows them.
COST_KEYS = ("attn_proj_params", "attn_proj_flops", "attn_core_flops", "ffn_params", "ffn_flops")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last axis (the D features of each token).

    ``y = x / sqrt(mean(x²) + eps) * weight``: no mean is subtracted and there is no shift, so
    it costs one reduction instead of two; float16/bfloat16 inputs are normalised in float32
    and cast back. Equals ``torch.nn.RMSNorm(D, eps=eps)`` (torch 2.4 and later).

    Args:
        d_model: D, the size of the normalised (last) axis.
        eps: added to the mean square, inside the square root (1e-6 as in Llama).
        device, dtype: where and in which dtype to create the gain (keyword-only).

    Attributes:
        weight: (D,) gain, initialised to 1.
    """

    def __init__(
        self,
        d_model: int,
        eps: float = 1e-6,
        *,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
            raise ValueError(f"eps: expected a positive float, got {eps!r}")
        self.d_model = d_model
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (..., D). Returns: same shape and dtype.

        Raises:
            ValueError: if the last axis of ``x`` is not D.
        """
        if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[-1] != self.d_model:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape (..., D) with D=d_model={self.d_model}, got {got}")
        work = x.float() if x.dtype in _LOW_PRECISION else x
        mean_square = work.pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
        normed = work * torch.rsqrt(mean_square + self.eps)  # (..., D)
        return (normed * self.weight).to(x.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, eps={self.eps}"


class SwiGLUFeedForward(nn.Module):
    """The gated feed-forward network ``down_proj(silu(gate_proj(x)) * up_proj(x))``, per token.

    ``silu(z) = z · sigmoid(z)`` is applied to the gate branch only; the up branch is linear, and
    the product is projected back to D.

    Args:
        d_model: D, input and output width.
        d_ff: F, the hidden width of both branches (:func:`swiglu_d_ff` gives the width with
            the parameters of a plain 4·D FFN).
        dropout: dropout probability on the gated product (training mode only; keyword-only).
        bias: whether the three linear layers have biases (keyword-only; False, as in Llama).
        device, dtype: passed to the linear layers (keyword-only).

    Attributes:
        gate_proj: ``nn.Linear(D, F)``, the branch that goes through SiLU.
        up_proj: ``nn.Linear(D, F)``, the linear branch.
        down_proj: ``nn.Linear(F, D)``.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        *,
        dropout: float = 0.0,
        bias: bool = False,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("d_ff", d_ff)
        check_dropout(dropout)
        kw = {"bias": bias, "device": device, "dtype": dtype}
        self.gate_proj = nn.Linear(d_model, d_ff, **kw)
        self.up_proj = nn.Linear(d_model, d_ff, **kw)
        self.down_proj = nn.Linear(d_ff, d_model, **kw)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (..., D). Returns: (..., D)."""
        h = F.silu(self.gate_proj(x)) * self.up_proj(x)  # (..., F)
        return self.down_proj(self.dropout(h))  # (..., F) -> (..., D)


def swiglu_d_ff(d_model: int, multiple_of: int = 8) -> int:
    """SwiGLU's hidden width at the parameter budget of a plain FFN of width 4·D.

    Three (D, F) matrices instead of two: F = 2/3 · 4·D = 8·D/3, rounded up to a multiple of
    ``multiple_of`` (Llama rounds to 256 for its large widths).

    Raises:
        ValueError: if an argument is not a positive int.
    """
    check_positive_int("d_model", d_model)
    check_positive_int("multiple_of", multiple_of)
    width = 8 * d_model // 3
    return -(-width // multiple_of) * multiple_of


def block_costs(
    d_model: int,
    num_heads: int,
    d_ff: int,
    seq_len: int,
    *,
    ffn: str = "mlp",
    bias: bool = True,
) -> Dict[str, int]:
    """Parameters and forward FLOPs of one block's attention projections, attention core and FFN,
    for one sequence of ``seq_len`` tokens (multiply the FLOPs by B for a batch).

    FLOPs count the matrix products only, a multiply-add as 2 FLOPs (as
    ``torch.utils.flop_counter.FlopCounterMode`` does); the bias adds, the softmax, the norms,
    the activations and the residual adds (O(T·D) each) are left out. With T tokens:

    - attention projections: Q, K, V and the output, four (D, D) matrices applied to T tokens:
      ``4·D² (+ 4·D biases)`` parameters and ``4 · 2·T·D² = 8·T·D²`` FLOPs;
    - attention core: ``QKᵀ`` is H products of (T, Dh) by (Dh, T), T²·Dh multiply-adds each, so
      T²·D in all, and ``weights @ V`` the same: ``4·T²·D`` FLOPs, no parameters, and
      independent of H;
    - FFN (``"mlp"``): (D, F) and (F, D): ``2·D·F (+ F + D)`` parameters, ``4·T·D·F`` FLOPs;
      (``"swiglu"``): three matrices, ``3·D·F (+ 2·F + D)`` parameters, ``6·T·D·F`` FLOPs.

    Args:
        d_model: D.
        num_heads: H; must divide D (it changes no count).
        d_ff: F.
        seq_len: T.
        ffn: ``"mlp"`` (fc1, activation, fc2) or ``"swiglu"`` (keyword-only).
        bias: whether the linear layers have biases (keyword-only).

    Returns:
        A dict of ints with the keys of :data:`COST_KEYS`: ``attn_proj_params``,
        ``attn_proj_flops``, ``attn_core_flops``, ``ffn_params``, ``ffn_flops``.

    Raises:
        ValueError: on a size that is not a positive int, H not dividing D, or an unknown ffn.
    """
    for name, n in (("d_ff", d_ff), ("seq_len", seq_len)):
        check_positive_int(name, n)
    check_heads(d_model, num_heads)
    check_choice("ffn", ffn, FFN_KINDS)
    if not isinstance(bias, bool):
        raise ValueError(f"bias: expected True or False, got {bias!r}")
    d, f, t = d_model, d_ff, seq_len
    matrices = 2 if ffn == "mlp" else 3
    ffn_bias = (f + d) if ffn == "mlp" else (2 * f + d)
    return {
        "attn_proj_params": 4 * d * d + (4 * d if bias else 0),
        "attn_proj_flops": 2 * 4 * t * d * d,
        "attn_core_flops": 2 * 2 * t * t * d,
        "ffn_params": matrices * d * f + (ffn_bias if bias else 0),
        "ffn_flops": 2 * matrices * t * d * f,
    }
