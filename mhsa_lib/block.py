"""LayerNorm, the position-wise feed-forward network and the Transformer block (notebook 04).

Shape letters (see the package docstring): B batch, T length, D model width, H heads,
F feed-forward width.

A block is two sub-layers, each wrapped in a residual connection and a LayerNorm. Where the
norm sits is the one difference between the two classic placements::

    pre-norm  (GPT-2, most modern models):  x = x + Attn(LN1(x));   x = x + FFN(LN2(x))
    post-norm (the original Transformer):   x = LN1(x + Attn(x));   x = LN2(x + FFN(x))

Pre-norm keeps an identity path from input to output, which is why deep pre-norm stacks train
without warm-up tricks; post-norm normalises the residual stream itself after every sub-layer.
(Xiao & Zhu write the post-norm sub-layer as LNorm(F(H) + H).)
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import check_choice, check_dropout, check_positive_int
from .modern import FFN_KINDS, RMSNorm, SwiGLUFeedForward
from .multihead import MultiHeadAttention

__all__ = ["LayerNorm", "FeedForward", "TransformerBlock", "ACTIVATIONS", "NORM_PLACEMENTS", "NORM_KINDS"]

#: The feed-forward activations by name (GELU: the exact, erf-based one).
_ACTIVATION_FNS: Dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}
ACTIVATIONS = tuple(_ACTIVATION_FNS)
NORM_PLACEMENTS = ("pre", "post")
#: The norms a block can use: LayerNorm (``"layer"``) or RMSNorm (``"rms"``).
NORM_KINDS = ("layer", "rms")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class LayerNorm(nn.Module):
    """Layer normalisation over the last axis (the D features of each token).

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, with the mean and the *biased*
    variance (divide by D, not D - 1) of each token's features; float16/bfloat16 inputs are
    normalised in float32 and cast back.

    Args:
        d_model: D, the size of the normalised (last) axis.
        eps: added to the variance so that a constant token does not divide by zero.
        device, dtype: where and in which dtype to create the parameters (keyword-only).

    Attributes:
        weight: (D,) gain, initialised to 1.
        bias: (D,) shift, initialised to 0.
    """

    def __init__(
        self,
        d_model: int,
        eps: float = 1e-5,
        *,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        if not eps > 0:
            raise ValueError(f"eps: expected a positive float, got {eps!r}")
        self.d_model = d_model
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(d_model, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise each token.

        Args:
            x: (..., D), typically (B, T, D).

        Returns:
            Same shape and dtype as ``x``.

        Raises:
            ValueError: if the last axis of ``x`` is not D.
        """
        if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[-1] != self.d_model:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape (..., D) with D=d_model={self.d_model}, got {got}")
        work = x.float() if x.dtype in _LOW_PRECISION else x
        mean = work.mean(dim=-1, keepdim=True)  # (..., 1)
        var = work.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1), divides by D
        normed = (work - mean) * torch.rsqrt(var + self.eps)  # (..., D)
        return (normed * self.weight + self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, eps={self.eps}"


class FeedForward(nn.Module):
    """The position-wise feed-forward network: ``fc2(act(fc1(x)))``, applied to each token.

    Args:
        d_model: D, input and output width.
        d_ff: F, the hidden width (4·D in the original Transformer).
        activation: ``"relu"`` or ``"gelu"`` (the exact, erf-based GELU, as in
            ``nn.TransformerEncoderLayer``). Without it the two maps collapse into one linear map.
        dropout: dropout probability after the activation (training mode only; keyword-only).
        bias, device, dtype: passed to both ``nn.Linear`` layers (keyword-only).

    Attributes:
        fc1: ``nn.Linear(D, F)``.
        fc2: ``nn.Linear(F, D)``.

    Raises:
        ValueError: on an unknown activation or a dropout outside [0, 1).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "relu",
        *,
        dropout: float = 0.0,
        bias: bool = True,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("d_ff", d_ff)
        check_dropout(dropout)
        self.activation = activation  # checked and resolved to its function by the setter
        kw = {"bias": bias, "device": device, "dtype": dtype}
        self.fc1 = nn.Linear(d_model, d_ff, **kw)
        self.fc2 = nn.Linear(d_ff, d_model, **kw)
        self.dropout = nn.Dropout(dropout)

    @property
    def activation(self) -> str:
        """The activation's name, ``"relu"`` or ``"gelu"`` (settable)."""
        return self._activation

    @activation.setter
    def activation(self, name: str) -> None:
        check_choice("activation", name, ACTIVATIONS)
        self._activation = name
        self._act = _ACTIVATION_FNS[name]

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (..., D). Returns: (..., D)."""
        h = self._act(self.fc1(x))  # (..., D) -> (..., F)
        return self.fc2(self.dropout(h))  # (..., F) -> (..., D)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class TransformerBlock(nn.Module):
    """One Transformer encoder block: self-attention and a feed-forward network, each with a
    residual connection and a LayerNorm, placed before (``"pre"``) or after (``"post"``).

    Args:
        d_model: D, the model width.
        num_heads: H; must divide D.
        d_ff: F, the feed-forward hidden width.
        norm_placement: ``"pre"`` (``x + F(LN(x))``) or ``"post"`` (``LN(x + F(x))``).
        dropout: probability for dropout on each sub-layer's output before the residual add,
            and after the FFN activation (as ``nn.TransformerEncoderLayer`` does; it also drops
            attention weights, which this block does not). Active in training mode only.
        activation: ``"relu"`` or ``"gelu"`` (keyword-only, like everything below).
        eps: the norms' epsilon.
        bias: whether the linear layers have biases.
        norm: ``"layer"`` (:class:`LayerNorm`, the default) or ``"rms"``
            (:class:`~mhsa_lib.modern.RMSNorm`, the modern block's).
        ffn: ``"mlp"`` (:class:`FeedForward` with ``activation``, the default) or ``"swiglu"``
            (:class:`~mhsa_lib.modern.SwiGLUFeedForward` with hidden width ``d_ff``; then
            ``activation`` plays no part).
        backend: ``"reference"`` or ``"fast"``, the attention core used by ``attn``.
        device, dtype: where and in which dtype to create the parameters.

    Attributes:
        attn: :class:`~mhsa_lib.multihead.MultiHeadAttention`.
        ffn: :class:`FeedForward` (or :class:`~mhsa_lib.modern.SwiGLUFeedForward`).
        norm1: :class:`LayerNorm` (or RMSNorm) before (pre) or after (post) the attention sub-layer.
        norm2: :class:`LayerNorm` (or RMSNorm) before (pre) or after (post) the feed-forward sub-layer.

    Raises:
        ValueError: on a bad ``norm_placement``, ``activation``, ``norm``, ``ffn`` or ``dropout``,
            or D not a multiple of H.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        norm_placement: str = "pre",
        dropout: float = 0.0,
        *,
        activation: str = "relu",
        eps: float = 1e-5,
        bias: bool = True,
        backend: str = "reference",
        norm: str = "layer",
        ffn: str = "mlp",
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        check_choice("norm_placement", norm_placement, NORM_PLACEMENTS)
        check_choice("norm", norm, NORM_KINDS)
        check_choice("ffn", ffn, FFN_KINDS)
        check_dropout(dropout)
        self.norm_placement = norm_placement
        kw = {"device": device, "dtype": dtype}
        self.attn = MultiHeadAttention(d_model, num_heads, bias, backend=backend, **kw)
        if ffn == "mlp":
            self.ffn = FeedForward(d_model, d_ff, activation, dropout=dropout, bias=bias, **kw)
        else:
            check_choice("activation", activation, ACTIVATIONS)
            self.ffn = SwiGLUFeedForward(d_model, d_ff, dropout=dropout, bias=bias, **kw)
        norm_cls = LayerNorm if norm == "layer" else RMSNorm
        self.norm1 = norm_cls(d_model, eps, **kw)
        self.norm2 = norm_cls(d_model, eps, **kw)
        self.dropout = nn.Dropout(dropout)  # on each sub-layer's output, before the residual

    @property
    def backend(self) -> str:
        """The attention core, ``"reference"`` or ``"fast"`` (settable)."""
        return self.attn.backend

    @backend.setter
    def backend(self, value: str) -> None:
        self.attn.backend = value

    def forward(
        self,
        x: Tensor,
        mask: Optional[Tensor] = None,
        *,
        causal: bool = False,
        return_weights: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Apply the block.

        Args:
            x: (B, T, D).
            mask: optional bool tensor, ``True`` = may attend, broadcastable to (B, H, T, T)
                (a 3-D mask is read as (B, T, T) or (B, 1, T)).
            causal: also block future tokens (keyword-only).
            return_weights: also return the attention weights this pass used (keyword-only;
                the attention then runs on the reference path, whatever ``backend`` says).

        Returns:
            (B, T, D), or ``(out, weights)`` with weights (B, H, T, T) if ``return_weights``.
        """
        if self.norm_placement == "pre":
            a, weights = self._self_attention(self.norm1(x), mask, causal, return_weights)
            x = x + self.dropout(a)
            out = x + self.dropout(self.ffn(self.norm2(x)))
        else:
            a, weights = self._self_attention(x, mask, causal, return_weights)
            x = self.norm1(x + self.dropout(a))
            out = self.norm2(x + self.dropout(self.ffn(x)))
        return (out, weights) if return_weights else out

    def _self_attention(
        self, h: Tensor, mask: Optional[Tensor], causal: bool, return_weights: bool
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """``attn`` on ``h`` (B, T, D): the output, and the weights (B, H, T, T) if asked for."""
        if return_weights:
            return self.attn(h, mask, return_weights=True, causal=causal)
        return self.attn(h, mask, causal=causal), None

    def extra_repr(self) -> str:
        kinds = "" if isinstance(self.norm1, LayerNorm) else ", norm='rms'"
        kinds += "" if isinstance(self.ffn, FeedForward) else ", ffn='swiglu'"
        return f"norm_placement={self.norm_placement!r}{kinds}"
