"""Moving weights and masks between ``mhsa_lib`` and ``torch.nn`` (notebooks 03 and 04).

Shape letters (see the package docstring): B batch, T query length, S key length, D model
width, H heads, F feed-forward width.

Weight layouts (``nn.Linear`` convention everywhere: y = x Wᵀ + b, W of shape (out, in))::

    torch.nn.MultiheadAttention                 mhsa_lib.MultiHeadAttention
      in_proj_weight (3D, D) = [W_q; W_k; W_v]    q_proj.weight = rows [0, D)
                                                  k_proj.weight = rows [D, 2D)
                                                  v_proj.weight = rows [2D, 3D)
      in_proj_bias (3D,)                          the same split of the bias
      out_proj (Linear(D, D))                     out_proj
                                                (FusedMultiHeadAttention.qkv_proj = in_proj)

    torch.nn.TransformerEncoderLayer            mhsa_lib.TransformerBlock
      self_attn                                   attn
      linear1 (D -> F), linear2 (F -> D)          ffn.fc1, ffn.fc2
      norm1, norm2                                norm1, norm2 (same places in both)
      norm_first=True / False                     norm_placement="pre" / "post"

Both use the same head layout (head h owns features [h·Dh, (h+1)·Dh)), so copying weights
is enough; nothing is permuted.

Masks: ours are boolean with ``True`` = *may attend*. ``torch.nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer`` use boolean masks with the opposite meaning (``True`` = *blocked*)
and a separate ``key_padding_mask`` (B, S) with ``True`` = padding. Float masks in torch are
added to the scores (0 = allowed, -inf = blocked). The helpers below convert.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

from .block import FeedForward, LayerNorm, TransformerBlock
from .multihead import FusedMultiHeadAttention, MultiHeadAttention

__all__ = [
    "mask_to_torch",
    "mask_from_torch",
    "key_padding_mask_to_torch",
    "key_padding_mask_from_torch",
    "load_mha_from_torch",
    "load_mha_into_torch",
    "mha_from_torch",
    "mha_to_torch",
    "load_block_from_torch",
    "load_block_into_torch",
    "block_from_torch",
    "block_to_torch",
]

AnyMHA = Union[MultiHeadAttention, FusedMultiHeadAttention]


# --- masks -----------------------------------------------------------------------------------


def mask_to_torch(mask: Tensor) -> Tensor:
    """Our mask (``True`` = may attend) as a torch ``attn_mask`` (``True`` = blocked).

    Args:
        mask: bool, (T, S) or (B·H, T, S) for ``nn.MultiheadAttention``.

    Returns:
        ``~mask``, same shape.
    """
    _check_bool("mask", mask)
    return ~mask


def mask_from_torch(attn_mask: Tensor) -> Tensor:
    """A torch ``attn_mask`` as ours (``True`` = may attend).

    Args:
        attn_mask: bool (``True`` = blocked), or float additive (0 = allowed, -inf = blocked).

    Returns:
        A bool tensor of the same shape.

    Raises:
        ValueError: on a float mask with finite non-zero entries (a bias, not a mask: no
            boolean mask can express it), or another dtype.
    """
    if not isinstance(attn_mask, Tensor):
        raise ValueError(f"attn_mask: expected a torch.Tensor, got {type(attn_mask).__name__}")
    if attn_mask.dtype == torch.bool:
        return ~attn_mask
    if not attn_mask.dtype.is_floating_point:
        raise ValueError(f"attn_mask: expected dtype bool or floating point, got {attn_mask.dtype}")
    blocked = torch.isneginf(attn_mask)
    if bool((attn_mask[~blocked] != 0).any()):
        raise ValueError(
            "attn_mask: expected a float mask of only 0 (allowed) and -inf (blocked), "
            "got other finite values (an additive bias cannot become a boolean mask)"
        )
    return ~blocked


def key_padding_mask_to_torch(mask: Tensor) -> Tensor:
    """Our per-key mask as a torch ``key_padding_mask`` (B, S), ``True`` = padding.

    Args:
        mask: bool ``True`` = real token, (B, S), (B, 1, S) (from :func:`mhsa_lib.padding_mask`)
            or (B, 1, 1, S).

    Raises:
        ValueError: if ``mask`` is not bool or has a size other than 1 between B and S.
    """
    _check_bool("mask", mask)
    if mask.ndim < 2 or any(n != 1 for n in mask.shape[1:-1]):
        raise ValueError(
            f"mask: expected a per-key mask (B, S), (B, 1, S) or (B, 1, 1, S), "
            f"got shape {tuple(mask.shape)}"
        )
    return ~mask.reshape(mask.shape[0], mask.shape[-1])  # (B, [1, 1,] S) -> (B, S)


def key_padding_mask_from_torch(key_padding_mask: Tensor) -> Tensor:
    """A torch ``key_padding_mask`` (B, S) as our mask (B, 1, 1, S), ``True`` = may attend.

    The (B, 1, 1, S) shape broadcasts over the H heads and the T queries.

    Args:
        key_padding_mask: (B, S), bool ``True`` = padding, or float 0 / -inf.
    """
    if not isinstance(key_padding_mask, Tensor) or key_padding_mask.ndim != 2:
        is_tensor = isinstance(key_padding_mask, Tensor)
        got = tuple(key_padding_mask.shape) if is_tensor else type(key_padding_mask).__name__
        raise ValueError(f"key_padding_mask: expected a 2-D tensor (B, S), got {got}")
    allowed = mask_from_torch(key_padding_mask)  # (B, S)
    return allowed[:, None, None, :]  # (B, S) -> (B, 1, 1, S)


# --- nn.MultiheadAttention -------------------------------------------------------------------


def load_mha_from_torch(module: AnyMHA, torch_mha: nn.MultiheadAttention) -> AnyMHA:
    """Copy the weights of ``torch_mha`` into ``module`` (in place); returns ``module``.

    Raises:
        ValueError: if the widths, head counts or bias settings differ, or ``torch_mha`` uses
            features this module does not have (``kdim``/``vdim`` != D, ``add_bias_kv``).
    """
    _check_torch_mha(module, torch_mha)
    d = module.d_model
    w, b = torch_mha.in_proj_weight, torch_mha.in_proj_bias  # (3D, D), (3D,)
    with torch.no_grad():
        if isinstance(module, FusedMultiHeadAttention):
            module.qkv_proj.weight.copy_(w)
            if b is not None:
                module.qkv_proj.bias.copy_(b)
        else:
            for i, proj in enumerate((module.q_proj, module.k_proj, module.v_proj)):
                proj.weight.copy_(w[i * d:(i + 1) * d])  # block i of [W_q; W_k; W_v]
                if b is not None:
                    proj.bias.copy_(b[i * d:(i + 1) * d])
        module.out_proj.weight.copy_(torch_mha.out_proj.weight)
        if b is not None:
            module.out_proj.bias.copy_(torch_mha.out_proj.bias)
    return module


def load_mha_into_torch(torch_mha: nn.MultiheadAttention, module: AnyMHA) -> nn.MultiheadAttention:
    """Copy the weights of ``module`` into ``torch_mha`` (in place); returns ``torch_mha``."""
    _check_torch_mha(module, torch_mha)
    with torch.no_grad():
        if isinstance(module, FusedMultiHeadAttention):
            torch_mha.in_proj_weight.copy_(module.qkv_proj.weight)
            if torch_mha.in_proj_bias is not None:
                torch_mha.in_proj_bias.copy_(module.qkv_proj.bias)
        else:
            projs = (module.q_proj, module.k_proj, module.v_proj)
            torch_mha.in_proj_weight.copy_(torch.cat([p.weight for p in projs]))  # (3D, D)
            if torch_mha.in_proj_bias is not None:
                torch_mha.in_proj_bias.copy_(torch.cat([p.bias for p in projs]))  # (3D,)
        torch_mha.out_proj.weight.copy_(module.out_proj.weight)
        if torch_mha.in_proj_bias is not None:
            torch_mha.out_proj.bias.copy_(module.out_proj.bias)
    return torch_mha


def mha_from_torch(
    torch_mha: nn.MultiheadAttention, *, fused: bool = False, backend: str = "reference"
) -> AnyMHA:
    """A new :class:`MultiHeadAttention` (or the fused one) with the weights of ``torch_mha``."""
    w = torch_mha.in_proj_weight
    if w is None:
        raise ValueError(
            "torch_mha: expected kdim == vdim == embed_dim (one in_proj_weight), "
            "got separate projections"
        )
    cls = FusedMultiHeadAttention if fused else MultiHeadAttention
    module = cls(torch_mha.embed_dim, torch_mha.num_heads, torch_mha.in_proj_bias is not None,
                 backend=backend, device=w.device, dtype=w.dtype)
    return load_mha_from_torch(module, torch_mha)


def mha_to_torch(module: AnyMHA) -> nn.MultiheadAttention:
    """A new ``nn.MultiheadAttention(batch_first=True)`` with the weights of ``module``.

    Call it as ``torch_mha(x, x, x, attn_mask=mask_to_torch(mask), need_weights=False)``.
    """
    p = module.out_proj.weight
    torch_mha = nn.MultiheadAttention(
        module.d_model, module.num_heads, bias=module.out_proj.bias is not None,
        batch_first=True, device=p.device, dtype=p.dtype,
    )
    return load_mha_into_torch(torch_mha, module)


# --- nn.TransformerEncoderLayer --------------------------------------------------------------


def load_block_from_torch(
    block: TransformerBlock, layer: nn.TransformerEncoderLayer
) -> TransformerBlock:
    """Copy the weights of ``layer`` into ``block`` (in place); returns ``block``.

    Raises:
        ValueError: if the norm placement, activation, widths or bias settings differ.
    """
    _check_torch_layer(block, layer)
    load_mha_from_torch(block.attn, layer.self_attn)
    with torch.no_grad():
        for ours, theirs in ((block.ffn.fc1, layer.linear1), (block.ffn.fc2, layer.linear2)):
            ours.weight.copy_(theirs.weight)
            if theirs.bias is not None:
                ours.bias.copy_(theirs.bias)
        for ours, theirs in ((block.norm1, layer.norm1), (block.norm2, layer.norm2)):
            ours.weight.copy_(theirs.weight)
            # nn.LayerNorm(bias=False) has no shift: ours keeps one, fixed at 0
            ours.bias.copy_(theirs.bias if theirs.bias is not None else torch.zeros_like(ours.bias))
    return block


def load_block_into_torch(
    layer: nn.TransformerEncoderLayer, block: TransformerBlock
) -> nn.TransformerEncoderLayer:
    """Copy the weights of ``block`` into ``layer`` (in place); returns ``layer``."""
    _check_torch_layer(block, layer)
    load_mha_into_torch(layer.self_attn, block.attn)
    with torch.no_grad():
        for ours, theirs in ((block.ffn.fc1, layer.linear1), (block.ffn.fc2, layer.linear2)):
            theirs.weight.copy_(ours.weight)
            if theirs.bias is not None:
                theirs.bias.copy_(ours.bias)
        for ours, theirs in ((block.norm1, layer.norm1), (block.norm2, layer.norm2)):
            theirs.weight.copy_(ours.weight)
            if theirs.bias is None:
                if bool((ours.bias != 0).any()):
                    raise ValueError(
                        "layer: expected LayerNorms with a bias to receive a non-zero bias, "
                        "got bias=False"
                    )
            else:
                theirs.bias.copy_(ours.bias)
    return layer


def block_from_torch(
    layer: nn.TransformerEncoderLayer, *, backend: str = "reference"
) -> TransformerBlock:
    """A new :class:`TransformerBlock` with the configuration and weights of ``layer``."""
    w = layer.linear1.weight  # (F, D)
    block = TransformerBlock(
        w.shape[1], layer.self_attn.num_heads, w.shape[0],
        "pre" if layer.norm_first else "post", layer.dropout.p,
        activation=_torch_activation(layer), eps=layer.norm1.eps,
        bias=layer.linear1.bias is not None, backend=backend, device=w.device, dtype=w.dtype,
    )
    return load_block_from_torch(block, layer)


def block_to_torch(block: TransformerBlock) -> nn.TransformerEncoderLayer:
    """A new ``nn.TransformerEncoderLayer(batch_first=True)`` with the weights of ``block``.

    Call it as ``layer(x, src_mask=mask_to_torch(mask))`` or with
    ``src_key_padding_mask=key_padding_mask_to_torch(mask)``.

    Raises:
        ValueError: for a block with RMSNorm or a SwiGLU FFN, which torch's layer does not have.
    """
    if not isinstance(block.norm1, LayerNorm) or not isinstance(block.ffn, FeedForward):
        raise ValueError(
            "block: expected a block with LayerNorm and a plain FeedForward (nn.TransformerEncoderLayer "
            f"has no other), got norm1={type(block.norm1).__name__}, ffn={type(block.ffn).__name__}"
        )
    w = block.ffn.fc1.weight  # (F, D)
    layer = nn.TransformerEncoderLayer(
        w.shape[1], block.attn.num_heads, w.shape[0], block.dropout.p, block.ffn.activation,
        block.norm1.eps, batch_first=True, norm_first=block.norm_placement == "pre",
        bias=block.ffn.fc1.bias is not None, device=w.device, dtype=w.dtype,
    )
    return load_block_into_torch(layer, block)


# --- checks ----------------------------------------------------------------------------------


def _check_bool(name: str, mask: object) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name}: expected a bool tensor (True = may attend), got {got}")


def _check_torch_mha(module: AnyMHA, torch_mha: nn.MultiheadAttention) -> None:
    if torch_mha.in_proj_weight is None or torch_mha.bias_k is not None:
        raise ValueError(
            "torch_mha: expected kdim == vdim == embed_dim and add_bias_kv=False, "
            "got separate k/v projections or bias_k/bias_v"
        )
    if (torch_mha.embed_dim, torch_mha.num_heads) != (module.d_model, module.num_heads):
        raise ValueError(
            f"torch_mha: expected embed_dim={module.d_model}, num_heads={module.num_heads}, "
            f"got embed_dim={torch_mha.embed_dim}, num_heads={torch_mha.num_heads}"
        )
    ours = module.out_proj.bias is not None
    theirs = torch_mha.in_proj_bias is not None
    if ours != theirs:
        raise ValueError(f"torch_mha: expected bias={ours} like the module, got bias={theirs}")


def _torch_activation(layer: nn.TransformerEncoderLayer) -> str:
    code = getattr(layer, "activation_relu_or_gelu", 0)  # 1 = F.relu, 2 = F.gelu
    act = layer.activation
    if code == 1 or act is torch.nn.functional.relu or isinstance(act, nn.ReLU):
        return "relu"
    exact_gelu = isinstance(act, nn.GELU) and act.approximate == "none"
    if code == 2 or act is torch.nn.functional.gelu or exact_gelu:
        return "gelu"
    raise ValueError(f"layer: expected activation relu or gelu, got {act!r}")


def _check_torch_layer(block: TransformerBlock, layer: nn.TransformerEncoderLayer) -> None:
    placement = "pre" if layer.norm_first else "post"
    if placement != block.norm_placement:
        raise ValueError(
            f"layer: expected norm_first={block.norm_placement == 'pre'} for "
            f"norm_placement={block.norm_placement!r}, got norm_first={layer.norm_first}"
        )
    activation = _torch_activation(layer)
    if activation != block.ffn.activation:
        raise ValueError(f"layer: expected activation {block.ffn.activation!r}, got {activation!r}")
    if layer.linear1.weight.shape != block.ffn.fc1.weight.shape:
        raise ValueError(
            f"layer: expected linear1 of shape (F, D) = {tuple(block.ffn.fc1.weight.shape)}, "
            f"got {tuple(layer.linear1.weight.shape)}"
        )
    if (layer.linear1.bias is None) != (block.ffn.fc1.bias is None):
        ours, theirs = block.ffn.fc1.bias is not None, layer.linear1.bias is not None
        raise ValueError(f"layer: expected bias={ours} like the block, got bias={theirs}")
    _check_torch_mha(block.attn, layer.self_attn)
