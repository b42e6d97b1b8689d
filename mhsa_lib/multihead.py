"""Multi-head attention: projections, heads, attention, merge, output projection (notebook 03).

Shape letters (see the package docstring): B batch, T query length, S key length, D model
width, H heads, Dh = D / H per-head width, G key/value heads.

The whole module in one line, in the notation of "Attention Is All You Need"::

    MultiHead(X) = Concat(head_1, …, head_H) W^O,   head_h = Attention(X W_h^Q, X W_h^K, X W_h^V)

(Xiao & Zhu write the same as Merge(head_1, …, head_H) W^head with head_h = Att_qkv(…).)
Instead of H small matrices per projection, one ``nn.Linear(D, D)`` computes every head at
once: head ``h`` owns output features ``[h·Dh, (h+1)·Dh)``, the layout of
``torch.nn.MultiheadAttention``.

Two classes share one ``forward``:

* :class:`MultiHeadAttention`: separate ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``
  (the readable layout, and the one every check uses);
* :class:`FusedMultiHeadAttention`: one ``qkv_proj = nn.Linear(D, 3D)`` whose weight stacks
  [W_q; W_k; W_v] (the layout of ``nn.MultiheadAttention.in_proj_weight``): one matmul instead
  of three. Convert with ``FusedMultiHeadAttention.from_separate`` / ``.to_separate()``.

:func:`attend_heads` is the attention step shared by these modules and by
``GroupedQueryAttention``: it takes heads already split, checks them and the mask (and an
optional causal mask aligned to the lower right), and calls the chosen backend of
:data:`mhsa_lib.attention.ATTENTION_BACKENDS`, which shares key/value heads between query heads.
The three modules share one frame (arguments, projections, heads, attention, merge, output
projection): ``_MultiHeadBase`` here; ``GroupedQueryAttention`` only adds ``num_kv_heads`` and a
KV cache.

:func:`attention_heads` and :func:`attention_heads_loop` are the functional steps of notebook 02
(projection matrices in, per-head outputs out), the references its checks compare with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import check_heads, check_input, check_qkv, check_tensor, heads_mask
from .attention import BACKENDS, HAS_ENABLE_GQA, get_backend, scaled_dot_product_attention  # noqa: F401  (re-exported)
from .heads import merge_heads, split_heads

__all__ = [
    "attend_heads",
    "attention_heads",
    "attention_heads_loop",
    "MultiHeadAttention",
    "FusedMultiHeadAttention",
]


def attend_heads(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor] = None,
    *,
    causal: bool = False,
    backend: str = "reference",
) -> Tuple[Tensor, Optional[Tensor]]:
    """Attention over split heads, with H query heads sharing G key/value heads.

    Args:
        q: (B, H, T, Dh) queries.
        k: (B, G, S, Dh) keys; G must divide H (G = H is plain multi-head attention).
        v: (B, G, S, Dh) values.
        mask: optional bool tensor, ``True`` = may attend, broadcastable to (B, H, T, S). A 3-D
            mask is read as (B, T, S) (or (B, 1, S) from :func:`mhsa_lib.padding_mask`) and
            shared by every head.
        causal: also block future keys, aligned to the lower right: query ``i`` sits at
            absolute position ``S - T + i`` (so with a KV cache the new queries see the whole
            past). Unlike ``F.scaled_dot_product_attention(is_causal=True)``, which aligns to
            the upper left when S != T.
        backend: a name in :data:`mhsa_lib.attention.BACKENDS` (``"reference"`` or ``"fast"``).

    Returns:
        ``(out, weights)``: out (B, H, T, Dh); weights (B, H, T, S), or ``None`` with
        ``backend="fast"``.

    Raises:
        ValueError: on a bad backend, ranks or head counts that do not fit, or a mask that is
            not bool or not broadcastable to (B, H, T, S).
    """
    attend = get_backend(backend)
    expected = {"q": "(B, H, T, Dh)", "k": "(B, G, S, Dh)", "v": "(B, G, S, Dh)"}
    for (name, shape), x in zip(expected.items(), (q, k, v)):
        if not isinstance(x, Tensor) or x.ndim != 4:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a 4-D tensor {shape}, got {got}")
    batch, num_heads, q_len, _ = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    if kv_heads == 0 or num_heads % kv_heads != 0 or v.shape[1] != kv_heads:
        raise ValueError(
            f"k, v: expected a number of heads G that divides H={num_heads} of q, "
            f"got k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    check_qkv(q, k, v, shared_kv_heads=True)
    if mask is not None:
        mask = heads_mask(mask, (batch, num_heads, q_len, k_len), q.device)
    # With one query (a decoding step) the lower-right causal mask allows every key.
    causal = causal and q_len > 1
    return attend(q, k, v, mask, causal, num_heads // kv_heads)


def attention_heads(
    x: Tensor,
    w_q: Tensor,
    w_k: Tensor,
    w_v: Tensor,
    num_heads: int,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Every head's attention output, from the three projection matrices (no output projection).

    ``x @ w.T`` projects (as ``nn.Linear`` without bias), :func:`~mhsa_lib.heads.split_heads`
    gives head ``h`` features ``[h·Dh, (h+1)·Dh)``, and each head attends with scores scaled by
    1/√Dh.

    Args:
        x: (B, T, D).
        w_q, w_k, w_v: (D, D) each (rows are output features, ``nn.Linear``'s layout).
        num_heads: H; must divide D.
        mask: optional bool tensor, ``True`` = may attend, broadcastable to (B, H, T, T) (read
            like the mask of :func:`mhsa_lib.attention.scaled_dot_product_attention`).

    Returns:
        (B, H, T, Dh): head ``h``'s output at ``[:, h]``, not yet merged.

    Raises:
        ValueError: naming the argument whose shape, dtype or value does not fit.
    """
    check_tensor("x", x, 3, "(B, T, D)")
    for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)):
        check_tensor(name, w, 2, "(D, D)")
        if w.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"{name}: expected (D, D) with D={x.shape[-1]} like x {tuple(x.shape)}, "
                f"got shape {tuple(w.shape)}"
            )
    q, k, v = (split_heads(x @ w.T, num_heads) for w in (w_q, w_k, w_v))  # (B, H, T, Dh) each
    return scaled_dot_product_attention(q, k, v, mask)[0]  # (B, H, T, Dh)


def attention_heads_loop(
    x: Tensor,
    w_q: Sequence[Tensor],
    w_k: Sequence[Tensor],
    w_v: Sequence[Tensor],
    mask: Optional[Tensor] = None,
) -> Tensor:
    """:func:`attention_heads` with one small matrix per head: head ``h`` uses
    ``w_q[h]``, ``w_k[h]``, ``w_v[h]``, each (Dh, D).

    Stacking the per-head matrices row-wise gives the (H·Dh, D) matrices of
    :func:`attention_heads`, whose output this is.

    Args:
        x: (B, T, D).
        w_q, w_k, w_v: sequences of H tensors (Dh, D), one per head.
        mask: optional bool tensor, ``True`` = may attend, broadcastable to (B, H, T, T).

    Returns:
        (B, H, T, Dh).

    Raises:
        ValueError: if the three sequences are empty, differ in length, or hold matrices of
            different shapes.
    """
    lists = {"w_q": w_q, "w_k": w_k, "w_v": w_v}
    for name, ws in lists.items():
        if isinstance(ws, Tensor) or not isinstance(ws, Sequence) or len(ws) == 0:
            got = f"a tensor {tuple(ws.shape)}" if isinstance(ws, Tensor) else repr(type(ws).__name__)
            raise ValueError(f"{name}: expected a non-empty list of per-head (Dh, D) tensors, got {got}")
        for h, w in enumerate(ws):
            check_tensor(f"{name}[{h}]", w, 2, "(Dh, D)")
            if w.shape != ws[0].shape:
                raise ValueError(
                    f"{name}[{h}]: expected shape {tuple(ws[0].shape)} like {name}[0], "
                    f"got {tuple(w.shape)}"
                )
    num_heads = len(w_q)
    for name in ("w_k", "w_v"):
        if len(lists[name]) != num_heads:
            raise ValueError(
                f"{name}: expected {num_heads} heads like w_q, got {len(lists[name])}"
            )
    stacked = (torch.cat(list(ws), dim=0) for ws in (w_q, w_k, w_v))  # H x (Dh, D) -> (H*Dh, D)
    return attention_heads(x, *stacked, num_heads, mask)


class _MultiHeadBase(nn.Module):
    """The frame every attention module shares: argument checks, projections, heads (H query
    heads, G key/value heads), attention, merge, output projection.

    Subclasses create ``out_proj`` and either call :meth:`_separate_projections` (``q_proj``,
    ``k_proj``, ``v_proj``) or override :meth:`_project`; their ``forward`` calls
    :meth:`_attend`.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_kv_heads: Optional[int] = None,
        *,
        backend: str = "reference",
    ) -> None:
        super().__init__()
        check_heads(d_model, num_heads, num_kv_heads)
        get_backend(backend)
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        self.head_dim = d_model // num_heads
        self.backend = backend

    def _separate_projections(
        self,
        bias: bool,
        device: Union[torch.device, str, None],
        dtype: Optional[torch.dtype],
    ) -> None:
        """``q_proj`` (D -> D), ``k_proj`` and ``v_proj`` (D -> G·Dh), ``out_proj`` (D -> D)."""
        kw = {"bias": bias, "device": device, "dtype": dtype}
        kv_width = self.num_kv_heads * self.head_dim  # G*Dh (= D when G = H)
        self.q_proj = nn.Linear(self.d_model, self.d_model, **kw)
        self.k_proj = nn.Linear(self.d_model, kv_width, **kw)
        self.v_proj = nn.Linear(self.d_model, kv_width, **kw)
        self.out_proj = nn.Linear(self.d_model, self.d_model, **kw)

    def _project(self, x: Tensor, kv: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Queries (B, T, D) from ``x``; keys and values (B, S, G·Dh) from ``kv``."""
        return self.q_proj(x), self.k_proj(kv), self.v_proj(kv)

    def _attend(
        self,
        x: Tensor,
        mask: Optional[Tensor] = None,
        *,
        kv: Optional[Tensor] = None,
        cache=None,
        causal: bool = False,
        return_weights: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """The forward pass of every subclass (see their ``forward`` for the arguments)."""
        check_input("x", x, self.d_model)
        if kv is None:
            kv = x
        else:
            check_input("kv", kv, self.d_model)
            if kv.shape[0] != x.shape[0]:
                raise ValueError(
                    f"kv: expected batch size B={x.shape[0]} like x, got shape {tuple(kv.shape)}"
                )
        if mask is not None:  # check before a cache grows, so a bad call leaves it as it was
            past = 0 if cache is None else len(cache)
            scores = (x.shape[0], self.num_heads, x.shape[1], past + kv.shape[1])  # (B, H, T, S)
            mask = heads_mask(mask, scores, x.device)
        q, k, v = self._project(x, kv)  # (B, T, D), (B, S, G*Dh), (B, S, G*Dh)
        q = split_heads(q, self.num_heads)  # (B, T, D) -> (B, H, T, Dh)
        k = split_heads(k, self.num_kv_heads)  # (B, S, G*Dh) -> (B, G, S, Dh)
        v = split_heads(v, self.num_kv_heads)  # (B, S, G*Dh) -> (B, G, S, Dh)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, G, S, Dh) each, S = cached + new
        backend = "reference" if return_weights else self.backend
        out, weights = attend_heads(q, k, v, mask, causal=causal, backend=backend)  # (B, H, T, Dh)
        out = self.out_proj(merge_heads(out))  # (B, H, T, Dh) -> (B, T, D) -> (B, T, D)
        return (out, weights) if return_weights else out

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"backend={self.backend!r}"
        )


class _MultiHeadForward(_MultiHeadBase):
    """The ``forward`` of the two multi-head layouts (self- or cross-attention, no cache)."""

    def forward(
        self,
        x: Tensor,
        mask: Optional[Tensor] = None,
        return_weights: bool = False,
        *,
        kv: Optional[Tensor] = None,
        causal: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Self-attention over ``x`` (or cross-attention from ``x`` to ``kv``).

        Args:
            x: (B, T, D) input; the queries (and, without ``kv``, the keys and values).
            mask: optional bool tensor, ``True`` = may attend, broadcastable to (B, H, T, S);
                a 3-D mask is read as (B, T, S) or (B, 1, S) and shared by all heads.
            return_weights: also return the attention weights (computed on the reference
                path, whatever ``self.backend`` says, since the fast kernels never form them).
            kv: optional (B, S, D) sequence to attend to (cross-attention); default ``x``.
            causal: block future keys (lower-right aligned causal mask, combined with
                ``mask``).

        Returns:
            out (B, T, D), or ``(out, weights)`` with weights (B, H, T, S) if
            ``return_weights``.

        Raises:
            ValueError: if ``x`` or ``kv`` is not (B, ·, D), or the mask does not fit.
        """
        return self._attend(x, mask, kv=kv, causal=causal, return_weights=return_weights)


class MultiHeadAttention(_MultiHeadForward):
    """Multi-head attention with separate query, key, value and output projections.

    Args:
        d_model: D, the model width.
        num_heads: H; must divide D. Each head works in Dh = D / H dimensions and scores are
            scaled by 1/√Dh.
        bias: whether the four projections have a bias (``nn.MultiheadAttention`` has one).
        backend: ``"reference"`` (readable, can return weights) or ``"fast"``
            (``F.scaled_dot_product_attention``). Keyword-only; may be changed later by
            assigning ``module.backend``.
        device, dtype: where and in which dtype to create the parameters.

    Attributes:
        q_proj, k_proj, v_proj, out_proj: ``nn.Linear(D, D)``; head ``h`` owns output features
            ``[h·Dh, (h+1)·Dh)`` of the first three and input features ``[h·Dh, (h+1)·Dh)``
            of ``out_proj``.

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


class FusedMultiHeadAttention(_MultiHeadForward):
    """The same module with one fused query/key/value projection: one matmul instead of three.

    Same arguments as :class:`MultiHeadAttention`. ``qkv_proj.weight`` (3D, D) stacks
    [W_q; W_k; W_v] in that order, exactly like ``nn.MultiheadAttention.in_proj_weight``.

    Attributes:
        qkv_proj: ``nn.Linear(D, 3D)``.
        out_proj: ``nn.Linear(D, D)``.
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
        kw = {"bias": bias, "device": device, "dtype": dtype}
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, **kw)
        self.out_proj = nn.Linear(d_model, d_model, **kw)

    def _project(self, x: Tensor, kv: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        d = self.d_model
        if kv is x:  # self-attention: all three from one matmul
            qkv = self.qkv_proj(x)  # (B, T, D) -> (B, T, 3D)
            q, k, v = qkv.split(d, dim=-1)  # (B, T, 3D) -> 3 x (B, T, D)
            return q, k, v
        # Cross-attention: rows [0, D) of the weight make queries, rows [D, 3D) keys and values.
        w, b = self.qkv_proj.weight, self.qkv_proj.bias
        q = F.linear(x, w[:d], None if b is None else b[:d])  # (B, T, D)
        k, v = F.linear(kv, w[d:], None if b is None else b[d:]).split(d, dim=-1)  # 2 x (B, S, D)
        return q, k, v

    @classmethod
    def from_separate(cls, mha: MultiHeadAttention) -> "FusedMultiHeadAttention":
        """A fused copy of ``mha`` (same weights, backend, device and dtype)."""
        p = mha.q_proj.weight
        bias = mha.q_proj.bias is not None
        fused = cls(mha.d_model, mha.num_heads, bias, backend=mha.backend,
                    device=p.device, dtype=p.dtype)
        with torch.no_grad():
            fused.qkv_proj.weight.copy_(
                torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight])  # (3D, D)
            )
            if bias:
                biases = [mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]
                fused.qkv_proj.bias.copy_(torch.cat(biases))  # (3D,)
        fused.out_proj.load_state_dict(mha.out_proj.state_dict())
        return fused

    def to_separate(self) -> MultiHeadAttention:
        """A :class:`MultiHeadAttention` copy of this module (same weights)."""
        p = self.qkv_proj.weight
        bias = self.qkv_proj.bias is not None
        mha = MultiHeadAttention(self.d_model, self.num_heads, bias, backend=self.backend,
                                 device=p.device, dtype=p.dtype)
        with torch.no_grad():
            for i, proj in enumerate((mha.q_proj, mha.k_proj, mha.v_proj)):
                rows = slice(i * self.d_model, (i + 1) * self.d_model)  # block i of [W_q; W_k; W_v]
                proj.weight.copy_(self.qkv_proj.weight[rows])
                if bias:
                    proj.bias.copy_(self.qkv_proj.bias[rows])
        mha.out_proj.load_state_dict(self.out_proj.state_dict())
        return mha
