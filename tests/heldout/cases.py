"""Held-out answers to the graded steps, as learners write them (see README.md).

``Case(step, obj, cause)``: ``step`` is the check's name (``autograder.check_<step>``), ``obj`` the
learner's function or class, ``cause`` a list of groups; each group is a regular expression
(case-insensitive) that the failing lines and diagnoses must match for the mistake to count as
named. ``cause=None`` marks a correct answer, which must keep full marks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

import mhsa_lib


@dataclass
class Case:
    name: str
    step: str
    obj: Any
    cause: Optional[List[str]]
    #: for function steps: a call that shows the answer differs from the reference (None: the
    #: check alone decides)
    differs: Any = None


CASES: List[Case] = []


def case(step, cause=None, name=None):
    def register(obj):
        CASES.append(Case(name or obj.__name__, step, obj, cause))
        return obj
    return register


NEG_INF = float("-inf")

# =========================================================================== pairwise_scores


@case("pairwise_scores", [r"transpos|\.T\b|revers", r"last two|-2, ?-1|batch|\(B, ?D, ?S\)"])
def pairwise_big_T(q, k):
    return q @ k.T


@case("pairwise_scores", [r"transpos|swap|\(B, ?S, ?T\)|keys?\W.*rows|rows.*keys|K ?Q(ᵀ|\^T)|key j with query i"])
def pairwise_keys_first(q, k):
    return torch.einsum("btd,bsd->bst", q, k)


@case("pairwise_scores", [r"scal|sqrt|√|divid"])
def pairwise_scaled_already(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


@case("pairwise_scores")
def pairwise_loops(q, k):
    out = torch.zeros(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype)
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            out[b, i] = (k[b] * q[b, i]).sum(-1)
    return out


# =========================================================================== softmax


@case("softmax", [r"max", r"axis|dim|slice|same (axis|dim)"])
def softmax_max_over_last(x, dim=-1):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=dim, keepdim=True)


@case("softmax", [r"-inf|fully masked|all.masked|no allowed", r"nan|zero"])
def softmax_nan_on_masked_rows(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


@case("softmax", [r"keepdim|broadcast"])
def softmax_no_keepdim(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    e = torch.exp(x - m)
    return e / e.sum(dim=dim).unsqueeze(0) if e.ndim > 1 else e / e.sum()


@case("softmax", [r"exp"])
def softmax_forgot_exp(x, dim=-1):
    shifted = x - x.amax(dim=dim, keepdim=True)
    return shifted / shifted.sum(dim=dim, keepdim=True)


@case("softmax", [r"min"])
def softmax_subtracts_min(x, dim=-1):
    e = torch.exp(x - x.amin(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


@case("softmax", [r"log"])
def softmax_returns_log(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    return x - m - torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))


@case("softmax")
def softmax_logsumexp(x, dim=-1):
    lse = torch.logsumexp(x, dim=dim, keepdim=True)
    out = torch.exp(x - lse)
    return torch.where(torch.isneginf(lse), torch.zeros_like(out), out)


# =========================================================================== causal_mask


@case("causal_mask", [r"invert|polarity|upper|future|opposite|revers|~"])
def mask_upper(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_q if seq_len_k is None else seq_len_k
    return torch.ones(seq_len_q, s, dtype=torch.bool, device=device).triu(s - seq_len_q)


@case("causal_mask", [r"offset|align|lower.right|S ?- ?T|cache|top.left"])
def mask_top_left(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_q if seq_len_k is None else seq_len_k
    return torch.ones(seq_len_q, s, dtype=torch.bool, device=device).tril()


@case("causal_mask", [r"bool|dtype|additive|float|-inf"])
def mask_additive(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_q if seq_len_k is None else seq_len_k
    return torch.full((seq_len_q, s), NEG_INF, device=device).triu(s - seq_len_q + 1)


@case("causal_mask", [r"diagonal|itself|own (position|token)"])
def mask_strict(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_q if seq_len_k is None else seq_len_k
    i = torch.arange(seq_len_q, device=device)[:, None]
    j = torch.arange(s, device=device)[None, :]
    return j < i + (s - seq_len_q)


@case("causal_mask")
def mask_tril_offset(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_q if seq_len_k is None else seq_len_k
    return torch.ones(seq_len_q, s, device=device).tril(diagonal=s - seq_len_q).bool()


# =========================================================================== scaled_dot_product_attention


def _softmax(x):
    return mhsa_lib.softmax(x, dim=-1)


@case("scaled_dot_product_attention", [r"scal|sqrt|√"])
def attn_unscaled(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention", [r"sqrt|√|square root"])
def attn_divides_by_dk(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / q.shape[-1]
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention", [r"(with|by|to|of) (0|zero)\b|zeros?\b.*(fill|instead)|fill.*\b(0|zero)"])
def attn_fill_zero(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, 0.0)
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention", [r"invert|polarity|~mask|opposite|True (means|=)|revers"])
def attn_inverted_mask(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(mask, NEG_INF)
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention", [r"after (the )?softmax|before (the )?softmax"])
def attn_mask_after_softmax(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    w = _softmax(s)
    if mask is not None:
        w = w * mask
    return w @ v, w


@case("scaled_dot_product_attention", [r"transpose\(1, ?2\)|last two|-2, ?-1"])
def attn_transpose_1_2(q, k, v, mask=None):
    s = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention", [r"dim=-2|quer|axis|over the wrong"])
def attn_softmax_over_queries(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = mhsa_lib.softmax(s, dim=-2)
    return w @ v, w


@case("scaled_dot_product_attention", [r"d_?v|value|v\.shape|Dv"])
def attn_scale_by_dv(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention", [r"sqrt\(T\)|√T|sequence length|number of (queries|keys)|\bT\b"])
def attn_scale_by_length(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-2])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention", [r"fully|no allowed|all.(False|blocked|masked)|every key"])
def attn_finite_fill(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, -1e9)
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention", [r"multipl|\* ?sqrt|times"])
def attn_multiplies_scale(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) * math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention")
def attn_einsum_where(q, k, v, mask=None):
    s = torch.einsum("...td,...sd->...ts", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        s = torch.where(mask, s, torch.full_like(s, NEG_INF))
    w = mhsa_lib.softmax(s, dim=-1)
    return torch.einsum("...ts,...sd->...td", w, v), w


# =========================================================================== split_heads / merge_heads


@case("split_heads", [r"transpos|view.*(B, ?H|directly)|reshap\w* (straight|directly)|mix"])
def split_no_transpose(x, num_heads):
    b, t, d = x.shape
    return x.reshape(b, num_heads, t, d // num_heads)


@case("split_heads", [r"interleav|strid|every H|\(B, ?T, ?Dh, ?H\)|contiguous|slice|order"])
def split_head_minor(x, num_heads):
    b, t, d = x.shape
    return x.view(b, t, d // num_heads, num_heads).permute(0, 3, 1, 2)


@case("split_heads", [r"permut|axes|order|\(B, ?H, ?Dh, ?T\)|transpos"])
def split_wrong_permute(x, num_heads):
    b, t, d = x.shape
    return x.view(b, t, num_heads, d // num_heads).permute(0, 2, 3, 1)


@case("split_heads")
def split_chunks(x, num_heads):
    return torch.stack(x.chunk(num_heads, dim=-1), dim=1)


@case("merge_heads", [r"transpos|mix|interleav"])
def merge_no_transpose(x):
    b, h, t, dh = x.shape
    return x.reshape(b, t, h * dh)


@case("merge_heads", [r"order|interleav|head.?(major|first)|permut|strid"])
def merge_feature_major(x):
    b, h, t, dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, t, h * dh)


@case("merge_heads")
def merge_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


# =========================================================================== per-head attention (02)


def _attend(q, k, v, mask, scale):
    s = q @ k.transpose(-2, -1) / scale
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    return mhsa_lib.softmax(s, dim=-1) @ v


@case("attention_heads_loop", [r"\.T\b|transpos|layout|\(Dh, ?D\)|x @ w"])
def loop_no_T(x, w_q, w_k, w_v, mask=None):
    outs = []
    for wq, wk, wv in zip(w_q, w_k, w_v):
        q, k, v = x @ wq, x @ wk, x @ wv
        outs.append(_attend(q, k, v, mask, math.sqrt(q.shape[-1])))
    return torch.stack(outs, dim=1)


@case("attention_heads_loop", [r"sqrt\(D\)|d_model|model width|full width|Dh|head.?(dim|width)"])
def loop_scale_by_model_width(x, w_q, w_k, w_v, mask=None):
    outs = []
    for wq, wk, wv in zip(w_q, w_k, w_v):
        q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
        outs.append(_attend(q, k, v, mask, math.sqrt(x.shape[-1])))
    return torch.stack(outs, dim=1)


@case("attention_heads_loop", [r"head 0|first head|same weights|own weights|every head uses"])
def loop_first_head_everywhere(x, w_q, w_k, w_v, mask=None):
    outs = []
    for _ in range(len(w_q)):
        q, k, v = x @ w_q[0].T, x @ w_k[0].T, x @ w_v[0].T
        outs.append(_attend(q, k, v, mask, math.sqrt(q.shape[-1])))
    return torch.stack(outs, dim=1)


@case("attention_heads_loop", [r"stack|dim=1|axis|\(B, ?T, ?H, ?Dh\)|head axis"])
def loop_stack_wrong_axis(x, w_q, w_k, w_v, mask=None):
    outs = []
    for wq, wk, wv in zip(w_q, w_k, w_v):
        q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
        outs.append(_attend(q, k, v, mask, math.sqrt(q.shape[-1])))
    return torch.stack(outs, dim=2)


@case("attention_heads", [r"\.T\b|transpos|layout|x @ w"])
def heads_no_T(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (mhsa_lib.split_heads(x @ w, num_heads) for w in (w_q, w_k, w_v))
    return _attend(q, k, v, mask, math.sqrt(q.shape[-1]))


@case("attention_heads", [r"sqrt\(D\)|d_model|model width|full width|Dh|head.?(dim|width)"])
def heads_scale_by_model_width(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (mhsa_lib.split_heads(x @ w.T, num_heads) for w in (w_q, w_k, w_v))
    return _attend(q, k, v, mask, math.sqrt(x.shape[-1]))


@case("attention_heads", [r"shape|\(B, ?H, ?T, ?Dh\)|merg"])
def heads_returns_merged(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (mhsa_lib.split_heads(x @ w.T, num_heads) for w in (w_q, w_k, w_v))
    return mhsa_lib.merge_heads(_attend(q, k, v, mask, math.sqrt(q.shape[-1])))


@case("attention_heads", [r"mask"])
def heads_ignore_mask(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (mhsa_lib.split_heads(x @ w.T, num_heads) for w in (w_q, w_k, w_v))
    return _attend(q, k, v, None, math.sqrt(q.shape[-1]))


# =========================================================================== MultiHeadAttention (03)


class _MHABase(nn.Module):
    def __init__(self, d_model, num_heads, bias=True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model: expected a multiple of num_heads={num_heads}, got {d_model}")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def heads(self, x):
        return (mhsa_lib.split_heads(p(x), self.num_heads) for p in (self.q_proj, self.k_proj, self.v_proj))


@case("MultiHeadAttention", [r"out_proj|output projection|W\^?O"])
class MHANoOutProj(_MHABase):
    def forward(self, x, mask=None, return_weights=False):
        q, k, v = self.heads(x)
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        out = mhsa_lib.merge_heads(out)
        return (out, w) if return_weights else out


@case("MultiHeadAttention", [r"transpos|merg"])
class MHAMergeNoTranspose(_MHABase):
    def forward(self, x, mask=None, return_weights=False):
        q, k, v = self.heads(x)
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        b, h, t, dh = out.shape
        out = self.out_proj(out.reshape(b, t, h * dh))
        return (out, w) if return_weights else out


@case("MultiHeadAttention", [r"sqrt\(D\)|d_model|model width|full width|Dh|head.?(dim|width)"])
class MHAScaleByModelWidth(_MHABase):
    def forward(self, x, mask=None, return_weights=False):
        q, k, v = self.heads(x)
        s = q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1])
        if mask is not None:
            s = s.masked_fill(~mask, NEG_INF)
        w = mhsa_lib.softmax(s, dim=-1)
        out = self.out_proj(mhsa_lib.merge_heads(w @ v))
        return (out, w) if return_weights else out


@case("MultiHeadAttention", [r"head 0|first head|same (weights|slice)|own slice|every head uses"])
class MHAOneSliceForAll(_MHABase):
    def forward(self, x, mask=None, return_weights=False):
        dh, h = self.head_dim, self.num_heads
        q, k, v = (p(x)[..., :dh].unsqueeze(1).expand(-1, h, -1, -1) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        out = self.out_proj(mhsa_lib.merge_heads(out))
        return (out, w) if return_weights else out


@case("MultiHeadAttention", [r"average|mean|per.head|\(B, ?H, ?T, ?T\)"])
class MHAAveragedWeights(_MHABase):
    def forward(self, x, mask=None, return_weights=False):
        q, k, v = self.heads(x)
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        out = self.out_proj(mhsa_lib.merge_heads(out))
        return (out, w.mean(dim=1)) if return_weights else out


@case("MultiHeadAttention", [r"mask"])
class MHAIgnoresMask(_MHABase):
    def forward(self, x, mask=None, return_weights=False):
        q, k, v = self.heads(x)
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, None)
        out = self.out_proj(mhsa_lib.merge_heads(out))
        return (out, w) if return_weights else out


@case("MultiHeadAttention")
class MHAEinsum(_MHABase):
    def forward(self, x, mask=None, return_weights=False):
        b, t, d = x.shape
        h, dh = self.num_heads, self.head_dim
        q, k, v = (p(x).view(b, t, h, dh) for p in (self.q_proj, self.k_proj, self.v_proj))
        s = torch.einsum("bthe,bshe->bhts", q, k) / dh ** 0.5
        if mask is not None:
            s = s.masked_fill(~torch.as_tensor(mask, dtype=torch.bool).expand_as(s), NEG_INF)
        w = mhsa_lib.softmax(s, dim=-1)
        out = self.out_proj(torch.einsum("bhts,bshe->bthe", w, v).reshape(b, t, d))
        return (out, w) if return_weights else out


# =========================================================================== LayerNorm, FeedForward, TransformerBlock (04)


class _NormBase(nn.Module):
    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))


@case("LayerNorm", [r"unbiased|bessel|D ?- ?1|N ?- ?1|correction|divid\w* by D"])
class NormUnbiased(_NormBase):
    def forward(self, x):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + self.eps) * self.weight + self.bias


@case("LayerNorm", [r"eps", r"inside|outside|sqrt|√"])
class NormEpsOutside(_NormBase):
    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        sd = ((x - mu) ** 2).mean(-1, keepdim=True).sqrt()
        return (x - mu) / (sd + self.eps) * self.weight + self.bias


@case("LayerNorm", [r"axis|dim|last|feature|batch|token"])
class NormOverBatch(_NormBase):
    def forward(self, x):
        mu = x.mean(0, keepdim=True)
        var = x.var(0, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias


@case("LayerNorm", [r"weight|bias|gain|affine|shift"])
class NormNoAffine(_NormBase):
    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + self.eps)


@case("LayerNorm")
class NormRsqrt(_NormBase):
    def forward(self, x):
        xc = x - x.mean(dim=-1, keepdim=True)
        return xc * torch.rsqrt(xc.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight + self.bias


class _FFNBase(nn.Module):
    def __init__(self, d_model, d_ff, activation="relu"):
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation: expected 'relu' or 'gelu', got {activation!r}")
        self.activation = activation
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)


@case("FeedForward", [r"tanh|approximat|exact"])
class FFNTanhGelu(_FFNBase):
    def forward(self, x):
        h = self.fc1(x)
        h = F.relu(h) if self.activation == "relu" else F.gelu(h, approximate="tanh")
        return self.fc2(h)


@case("FeedForward", [r"after (fc2|the second|the output)|output|second (layer|linear)|last (layer|linear)|fc2"])
class FFNReluAtTheEnd(_FFNBase):
    def forward(self, x):
        act = F.relu if self.activation == "relu" else F.gelu
        return act(self.fc2(act(self.fc1(x))))


@case("FeedForward", [r"activation|gelu"])
class FFNAlwaysRelu(_FFNBase):
    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class _BlockBase(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, norm_placement="pre", dropout=0.0):
        super().__init__()
        if norm_placement not in ("pre", "post"):
            raise ValueError(f"norm_placement: expected 'pre' or 'post', got {norm_placement!r}")
        self.norm_placement = norm_placement
        self.attn = mhsa_lib.MultiHeadAttention(d_model, num_heads)
        self.ffn = mhsa_lib.FeedForward(d_model, d_ff)
        self.norm1 = mhsa_lib.LayerNorm(d_model)
        self.norm2 = mhsa_lib.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def post(self, x, mask):
        x = self.norm1(x + self.dropout(self.attn(x, mask)))
        return self.norm2(x + self.dropout(self.ffn(x)))


@case("TransformerBlock", [r"ffn|feed.?forward", r"\bx\b|attention('s)? (sub.?layer )?output|input of the block|residual stream|\bh\b|instead"])
class BlockFFNReadsInput(_BlockBase):
    def forward(self, x, mask=None):
        if self.norm_placement == "pre":
            h = x + self.dropout(self.attn(self.norm1(x), mask))
            return h + self.dropout(self.ffn(self.norm2(x)))
        return self.post(x, mask)


@case("TransformerBlock", [r"post|norm_placement|placement"])
class BlockAlwaysPre(_BlockBase):
    def forward(self, x, mask=None):
        x = x + self.dropout(self.attn(self.norm1(x), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


@case("TransformerBlock", [r"residual|skip|x \+"])
class BlockNoAttentionResidual(_BlockBase):
    def forward(self, x, mask=None):
        if self.norm_placement == "pre":
            h = self.dropout(self.attn(self.norm1(x), mask))
            return h + self.dropout(self.ffn(self.norm2(h)))
        return self.post(x, mask)


@case("TransformerBlock", [r"norm", r"before|after|placement|pre|input"])
class BlockNormAfterSublayer(_BlockBase):
    def forward(self, x, mask=None):
        if self.norm_placement == "pre":
            x = x + self.norm1(self.attn(x, mask))
            return x + self.norm2(self.ffn(x))
        return self.post(x, mask)


# =========================================================================== KVCache, repeat_kv, GQA (05)


class _CacheBase:
    def __init__(self):
        self.k = None
        self.v = None

    def __len__(self):
        return 0 if self.k is None else self.k.shape[-2]

    def reset(self):
        self.k = None
        self.v = None


@case("KVCache", [r"dim|axis|-2|position|sequence|feature"])
class CacheWrongAxis(_CacheBase):
    def update(self, k, v):
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], dim=-1), torch.cat([self.v, v], dim=-1)
        return self.k, self.v


@case("KVCache", [r"append|overwrit|replac|concat|keep|forget"])
class CacheOverwrites(_CacheBase):
    def update(self, k, v):
        self.k, self.v = k, v
        return self.k, self.v


@case("KVCache", [r"order|oldest|prepend|front|end|newest"])
class CachePrepends(_CacheBase):
    def update(self, k, v):
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([k, self.k], dim=-2), torch.cat([v, self.v], dim=-2)
        return self.k, self.v


@case("KVCache", [r"len|length|positions|shape\[-2\]|Dh|head.?dim"])
class CacheLenIsWidth(_CacheBase):
    def __len__(self):
        return 0 if self.k is None else self.k.shape[-1]

    def update(self, k, v):
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        return self.k, self.v


@case("repeat_kv", [r"repeat_interleave|next to each other|tile|tiled|j ?// ?n_rep|order|group|consecutive|adjacent"])
def repeat_tiled(x, n_rep):
    return x.repeat(1, n_rep, 1, 1)


@case("repeat_kv", [r"axis|dim|\bS\b|sequence|position|time"])
def repeat_wrong_axis(x, n_rep):
    return x.repeat_interleave(n_rep, dim=2)


@case("repeat_kv")
def repeat_index(x, n_rep):
    idx = torch.arange(x.shape[1] * n_rep) // n_rep
    return x[:, idx]


class _GQABase(nn.Module):
    def __init__(self, d_model, num_heads, num_kv_heads, bias=False):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model: expected a multiple of num_heads={num_heads}, got {d_model}")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads: expected a multiple of num_kv_heads={num_kv_heads}, got {num_heads}")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def finish(self, x, q, k, v, mask, causal):
        if causal:
            lower_right = mhsa_lib.causal_mask(q.shape[-2], k.shape[-2], device=x.device)
            mask = lower_right if mask is None else mask & lower_right
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(mhsa_lib.merge_heads(out))


@case("GroupedQueryAttention", [r"cache", r"repeat_kv|\bH\b|\bG\b|query heads|K/V heads|memory|kv heads|before|after"])
class GQACachesRepeated(_GQABase):
    def forward(self, x, mask=None, cache=None, *, causal=False):
        n_rep = self.num_heads // self.num_kv_heads
        q = mhsa_lib.split_heads(self.q_proj(x), self.num_heads)
        k = mhsa_lib.repeat_kv(mhsa_lib.split_heads(self.k_proj(x), self.num_kv_heads), n_rep)
        v = mhsa_lib.repeat_kv(mhsa_lib.split_heads(self.v_proj(x), self.num_kv_heads), n_rep)
        if cache is not None:
            k, v = cache.update(k, v)
        return self.finish(x, q, k, v, mask, causal)


@case("GroupedQueryAttention", [r"j ?// ?|group|pair|h ?% ?G|consecutive|next to each other|repeat_interleave|tile|order"])
class GQATiledHeads(_GQABase):
    def forward(self, x, mask=None, cache=None, *, causal=False):
        n_rep = self.num_heads // self.num_kv_heads
        q = mhsa_lib.split_heads(self.q_proj(x), self.num_heads)
        k = mhsa_lib.split_heads(self.k_proj(x), self.num_kv_heads)
        v = mhsa_lib.split_heads(self.v_proj(x), self.num_kv_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
        return self.finish(x, q, k, v, mask, causal)


@case("GroupedQueryAttention", [r"offset|cache|lower.right|S ?- ?T|align|position"])
class GQACausalIgnoresCache(_GQABase):
    def forward(self, x, mask=None, cache=None, *, causal=False):
        n_rep = self.num_heads // self.num_kv_heads
        q = mhsa_lib.split_heads(self.q_proj(x), self.num_heads)
        k = mhsa_lib.split_heads(self.k_proj(x), self.num_kv_heads)
        v = mhsa_lib.split_heads(self.v_proj(x), self.num_kv_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = mhsa_lib.repeat_kv(k, n_rep), mhsa_lib.repeat_kv(v, n_rep)
        if causal:
            t, s = q.shape[-2], k.shape[-2]
            tri = torch.ones(t, s, dtype=torch.bool, device=x.device).tril()
            mask = tri if mask is None else mask & tri
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(mhsa_lib.merge_heads(out))


# =========================================================================== sinusoidal positions (07)


def _angles(seq_len, d_model, start=0, full=False):
    pos = torch.arange(start, start + seq_len, dtype=torch.float32)[:, None]
    i = torch.arange(0, d_model, 1 if full else 2, dtype=torch.float32)
    return pos * 10000.0 ** (-i / d_model)


@case("sinusoidal_positional_encoding", [r"sin", r"cos"])
def pe_sin_cos_swapped(seq_len, d_model):
    a = _angles(seq_len, d_model)
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.cos(a), torch.sin(a)
    return pe


@case("sinusoidal_positional_encoding", [r"interleav|concat|halves|half|even|odd"])
def pe_halves(seq_len, d_model):
    a = _angles(seq_len, d_model)
    return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


@case("sinusoidal_positional_encoding", [r"2i|frequenc|exponent|i ?/ ?D|wavelength"])
def pe_exponent_over_all_features(seq_len, d_model):
    a = _angles(seq_len, d_model, full=True)
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(a[:, 0::2]), torch.cos(a[:, 1::2])
    return pe


@case("sinusoidal_positional_encoding", [r"start|position 0|off.by.one|arange|first position|from 1"])
def pe_positions_from_one(seq_len, d_model):
    a = _angles(seq_len, d_model, start=1)
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(a), torch.cos(a)
    return pe


@case("sinusoidal_positional_encoding")
def pe_stacked(seq_len, d_model):
    a = _angles(seq_len, d_model).double()
    return torch.stack([a.sin(), a.cos()], dim=-1).reshape(seq_len, d_model).float()


# =========================================================================== more, written in other ways


@case("pairwise_scores")
def pairwise_broadcast(q, k):
    return (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1)


@case("pairwise_scores", [r"transpos|swap|\(B, ?S, ?T\)|keys?\W.*rows|rows.*keys|K ?Q(ᵀ|\^T)|key j with query i"])
def pairwise_bmm_keys_first(q, k):
    return torch.bmm(k, q.transpose(1, 2))


@case("softmax", [r"spread|range|overflow|inf|stab|max"])
def softmax_shift_by_mean(x, dim=-1):
    e = torch.exp(x - x.mean(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


@case("softmax", [r"dim|axis|last"])
def softmax_flatten_last(x, dim=-1):
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


@case("causal_mask", [r"bool|dtype|float"])
def mask_float_ones(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_q if seq_len_k is None else seq_len_k
    return torch.ones(seq_len_q, s, device=device).tril(diagonal=s - seq_len_q)


@case("causal_mask", [r"offset|align|lower.right|S ?- ?T|cache|diagonal"])
def mask_offset_backwards(seq_len_q, seq_len_k=None, *, device=None):
    s = seq_len_q if seq_len_k is None else seq_len_k
    return torch.ones(seq_len_q, s, dtype=torch.bool, device=device).tril(diagonal=seq_len_q - s)


@case("scaled_dot_product_attention")
def attn_split_scale(q, k, v, mask=None):
    d = q.shape[-1]
    s = (q / d ** 0.25) @ (k / d ** 0.25).transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = mhsa_lib.softmax(s, dim=-1)
    return w @ v, w


@case("scaled_dot_product_attention", [r"output|after|weights @ v|scores"])
def attn_scales_output(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = _softmax(s)
    return (w @ v) / math.sqrt(q.shape[-1]), w


@case("scaled_dot_product_attention", [r"multipl|fill|-inf|\* ?mask"])
def attn_multiplies_by_mask(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s * mask
    w = _softmax(s)
    return w @ v, w


@case("scaled_dot_product_attention", [r"weights", r"transpos|\(\.\.\., ?S, ?T\)|keys.*rows|rows.*keys"])
def attn_returns_weights_transposed(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = _softmax(s)
    return w @ v, w.transpose(-2, -1)


@case("split_heads")
def split_reshape_negative_one(x, num_heads):
    b, t, _ = x.shape
    return x.reshape(b, t, num_heads, -1).transpose(2, 1).contiguous()


@case("merge_heads", [r"transpos|axes|\(B, ?H, ?Dh, ?T\)|order"])
def merge_wrong_transpose(x):
    b, h, t, dh = x.shape
    return x.transpose(2, 3).reshape(b, t, h * dh)


@case("merge_heads")
def merge_negative_one(x):
    return x.transpose(1, 2).flatten(2)


@case("attention_heads_loop", [r"shape|\(B, ?H, ?T, ?Dh\)|concat|stack|merg"])
def loop_concatenates_features(x, w_q, w_k, w_v, mask=None):
    outs = []
    for wq, wk, wv in zip(w_q, w_k, w_v):
        q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
        outs.append(_attend(q, k, v, mask, math.sqrt(q.shape[-1])))
    return torch.cat(outs, dim=-1)


@case("attention_heads", [r"invert|polarity|~mask|opposite|True (means|=)"])
def heads_inverted_mask(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (mhsa_lib.split_heads(x @ w.T, num_heads) for w in (w_q, w_k, w_v))
    return _attend(q, k, v, None if mask is None else ~mask, math.sqrt(q.shape[-1]))


@case("MultiHeadAttention", [r"v_proj|value"])
class MHAValuesFromKeys(_MHABase):
    def forward(self, x, mask=None, return_weights=False):
        q = mhsa_lib.split_heads(self.q_proj(x), self.num_heads)
        k = mhsa_lib.split_heads(self.k_proj(x), self.num_heads)
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, k, mask)
        out = self.out_proj(mhsa_lib.merge_heads(out))
        return (out, w) if return_weights else out


@case("MultiHeadAttention", [r"transpos|swap|keys|K ?Q|queries"])
class MHAKeysTimesQueries(_MHABase):
    def forward(self, x, mask=None, return_weights=False):
        q, k, v = self.heads(x)
        s = k @ q.transpose(-2, -1) / math.sqrt(self.head_dim)
        if mask is not None:
            s = s.masked_fill(~mask, NEG_INF)
        w = mhsa_lib.softmax(s, dim=-1)
        out = self.out_proj(mhsa_lib.merge_heads(w @ v))
        return (out, w) if return_weights else out


@case("LayerNorm", [r"eps"])
class NormIgnoresEps(_NormBase):
    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + 1e-12) * self.weight + self.bias


@case("LayerNorm", [r"axis|dim|last|feature|token|\(-2, ?-1\)|sequence"])
class NormOverTokensAndFeatures(_NormBase):
    def forward(self, x):
        mu = x.mean(dim=(-2, -1), keepdim=True)
        var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias


@case("FeedForward", [r"residual|x \+|add|skip|input"])
class FFNWithResidual(_FFNBase):
    def forward(self, x):
        act = F.relu if self.activation == "relu" else F.gelu
        return x + self.fc2(act(self.fc1(x)))


@case("TransformerBlock", [r"norm2|norm1|same norm|shared|twice|one norm|both"])
class BlockOneNormTwice(_BlockBase):
    def forward(self, x, mask=None):
        if self.norm_placement == "pre":
            x = x + self.dropout(self.attn(self.norm1(x), mask))
            return x + self.dropout(self.ffn(self.norm1(x)))
        return self.post(x, mask)


@case("TransformerBlock", [r"mask"])
class BlockDropsMask(_BlockBase):
    def forward(self, x, mask=None):
        if self.norm_placement == "pre":
            x = x + self.dropout(self.attn(self.norm1(x)))
            return x + self.dropout(self.ffn(self.norm2(x)))
        return self.post(x, None)


@case("KVCache", [r"reset|empt|forget"])
class CacheResetKeepsValues(_CacheBase):
    def reset(self):
        self.k = None

    def update(self, k, v):
        if self.k is None:
            self.k, self.v = k, v if self.v is None else torch.cat([self.v, v], dim=-2)
        else:
            self.k, self.v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        return self.k, self.v


@case("repeat_kv", [r"repeat_interleave|next to each other|tile|tiled|j ?// ?n_rep|order|group|consecutive|adjacent"])
def repeat_cat_copies(x, n_rep):
    return torch.cat([x] * n_rep, dim=1)


@case("GroupedQueryAttention", [r"causal|mask|future"])
class GQAIgnoresCausal(_GQABase):
    def forward(self, x, mask=None, cache=None, *, causal=False):
        n_rep = self.num_heads // self.num_kv_heads
        q = mhsa_lib.split_heads(self.q_proj(x), self.num_heads)
        k = mhsa_lib.split_heads(self.k_proj(x), self.num_kv_heads)
        v = mhsa_lib.split_heads(self.v_proj(x), self.num_kv_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = mhsa_lib.repeat_kv(k, n_rep), mhsa_lib.repeat_kv(v, n_rep)
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(mhsa_lib.merge_heads(out))


@case("sinusoidal_positional_encoding", [r"10000|base|frequenc|wavelength"])
def pe_base_thousand(seq_len, d_model):
    pos = torch.arange(seq_len, dtype=torch.float32)[:, None]
    a = pos * 1000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(a), torch.cos(a)
    return pe


@case("sinusoidal_positional_encoding", [r"frequenc|integer|exponent|2i|same|constant"])
def pe_integer_division(seq_len, d_model):
    pos = torch.arange(seq_len, dtype=torch.float32)[:, None]
    i = torch.arange(0, d_model, 2)
    a = pos * 10000.0 ** (-(i // d_model)).float()
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(a), torch.cos(a)
    return pe


# =========================================================================== head_tradeoff


@case("head_tradeoff", [r"params", r"four|4·D|W_?O|out(put)? proj"])
def tradeoff_three_projections(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """Counts the layer as W_Q, W_K, W_V only (the output projection left out of both counts)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    rows = []
    for h in n_heads_options:
        if d_model % h:
            raise ValueError(f"{h} heads do not divide d_model={d_model}")
        rows.append({"n_heads": h, "d_head": d_model // h, "params": 3 * (d_model * d_model + d_model),
                     "flops": 2 * 3 * seq_len * d_model * d_model + 4 * seq_len * seq_len * d_model,
                     "score_rank_bound": min(d_model // h, seq_len),
                     "kv_cache_bytes": 2 * batch * seq_len * d_model * bytes_per_value})
    return rows


@case("head_tradeoff", [r"kv_cache_bytes", r"B ?· ?T ?· ?D|all (the )?heads|every head|H ?·|· ?H\b"])
def tradeoff_cache_of_one_head(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """The cache of one head's keys and values (Dh wide), not all H heads'."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    rows = []
    for h in n_heads_options:
        if d_model % h:
            raise ValueError(f"{h} heads do not divide d_model={d_model}")
        d_head = d_model // h
        rows.append({"n_heads": h, "d_head": d_head, "params": 4 * d_model * d_model + 4 * d_model,
                     "flops": 8 * seq_len * d_model * d_model + 4 * seq_len * seq_len * d_model,
                     "score_rank_bound": min(d_head, seq_len),
                     "kv_cache_bytes": 2 * batch * seq_len * d_head * bytes_per_value})
    return rows


@case("head_tradeoff", [r"score_rank_bound", r"Dh|d_head|head width|per head|its .*features"])
def tradeoff_rank_is_seq_len(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """A (T, T) matrix, so rank T: the head width forgotten."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    rows = []
    for h in n_heads_options:
        if d_model % h:
            raise ValueError(f"{h} heads do not divide d_model={d_model}")
        rows.append({"n_heads": h, "d_head": d_model // h, "params": 4 * d_model * (d_model + 1),
                     "flops": 8 * seq_len * d_model**2 + 4 * seq_len**2 * d_model,
                     "score_rank_bound": seq_len,
                     "kv_cache_bytes": 2 * batch * seq_len * d_model * bytes_per_value})
    return rows


@case("head_tradeoff")
def tradeoff_with_kv_cache_bytes(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):
    """Correct: the cache through notebook 05's formula with one layer and G = H."""
    if not isinstance(seq_len, int) or seq_len <= 0:
        raise ValueError(f"seq_len: expected a positive int, got {seq_len!r}")
    table = []
    for n_heads in n_heads_options:
        if d_model % n_heads:
            raise ValueError(f"n_heads_options: {n_heads} does not divide d_model={d_model}")
        d_head = d_model // n_heads
        table.append(dict(n_heads=n_heads, d_head=d_head, params=4 * d_model**2 + 4 * d_model,
                          flops=2 * (4 * seq_len * d_model**2 + 2 * n_heads * seq_len**2 * d_head),
                          score_rank_bound=min(seq_len, d_head),
                          kv_cache_bytes=mhsa_lib.kv_cache_bytes(batch, seq_len, 1, n_heads, d_head, bytes_per_value)))
    return table


# =========================================================================== RMSNorm, SwiGLUFeedForward, block_costs (04)


class _RMSBase(nn.Module):
    def __init__(self, d_model, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))


@case("RMSNorm", [r"eps", r"leave|without|no eps|missing|forg"])
class RMSNoEps(_RMSBase):
    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True))


@case("RMSNorm", [r"sqrt|square root", r"not (by )?its|without|itself|forg"])
class RMSForgotSqrt(_RMSBase):
    def forward(self, x):
        return self.weight * x / (x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


@case("RMSNorm", [r"positions|other tokens|sequence", r"own|last axis|dim=-1"])
class RMSOverWholeSequence(_RMSBase):
    def forward(self, x):
        rms = torch.sqrt(x.pow(2).mean(dim=(-2, -1), keepdim=True) + self.eps)
        return self.weight * x / rms


@case("RMSNorm", [r"subtract|centr|\.var|variance|std|LayerNorm"])
class RMSUsesVariance(_RMSBase):
    def forward(self, x):
        return self.weight * x / torch.sqrt(x.var(dim=-1, keepdim=True) + self.eps)


@case("RMSNorm", [r"plain tensor|wrap|not trained"])
class RMSPlainTensorGain(nn.Module):
    def __init__(self, d_model, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.ones(d_model)

    def forward(self, x):
        return self.weight * x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


@case("RMSNorm")
class RMSNormByVectorNorm(_RMSBase):
    def forward(self, x):
        d = x.shape[-1]
        ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() / d
        return x * (ms + self.eps).rsqrt() * self.weight


class _SwiGLUBase(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)


@case("SwiGLUFeedForward", [r"has a bias|bias=False"])
class SwiGLUWithBiases(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff)
        self.up_proj = nn.Linear(d_model, d_ff)
        self.down_proj = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@case("SwiGLUFeedForward", [r"relu"])
class SwiGLUWithRelu(_SwiGLUBase):
    def forward(self, x):
        return self.down_proj(torch.relu(self.gate_proj(x)) * self.up_proj(x))


@case("SwiGLUFeedForward", [r"\badd|sum", r"multipl|product"])
class SwiGLUAddsBranches(_SwiGLUBase):
    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) + self.up_proj(x))


@case("SwiGLUFeedForward", [r"up (branch )?too|both branches|up_proj\(x\) stays linear|silu on (the )?up"])
class SwiGLUSiluOnBoth(_SwiGLUBase):
    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * F.silu(self.up_proj(x)))


@case("SwiGLUFeedForward")
class SwiGLUByHand(_SwiGLUBase):
    def forward(self, x):
        g = self.gate_proj(x)
        return self.down_proj(g * torch.sigmoid(g) * self.up_proj(x))


def _costs_right(d, h, f, t):
    return {
        "attn_proj_params": 4 * d * d + 4 * d,
        "attn_proj_flops": 8 * t * d * d,
        "attn_core_flops": 4 * t * t * d,
        "ffn_params": 2 * d * f + f + d,
        "ffn_flops": 4 * t * d * f,
    }


@case("block_costs", [r"fc2|second|two matri|both|4·T·D·F|each of"])
def costs_ffn_one_matrix(d_model, num_heads, d_ff, seq_len):
    c = _costs_right(d_model, num_heads, d_ff, seq_len)
    c["ffn_flops"] = 2 * seq_len * d_model * d_ff
    return c


@case("block_costs", [r"\bint\b", r"float"])
def costs_true_division(d_model, num_heads, d_ff, seq_len):
    head_dim = d_model / num_heads
    c = _costs_right(d_model, num_heads, d_ff, seq_len)
    c["attn_core_flops"] = num_heads * 2 * (2 * seq_len * seq_len * head_dim)
    return c


@case("block_costs", [r"d_ff|4·D|4 ?\* ?D", r"instead|ignor|given|argument"])
def costs_ffn_four_d(d_model, num_heads, d_ff, seq_len):
    hidden = 4 * d_model
    c = _costs_right(d_model, num_heads, hidden, seq_len)
    return c


@case("block_costs")
def costs_layer_by_layer(d_model, num_heads, d_ff, seq_len):
    def linear(n_in, n_out):
        return n_in * n_out + n_out, 2 * seq_len * n_in * n_out

    proj = [linear(d_model, d_model) for _ in range(4)]
    ffn = [linear(d_model, d_ff), linear(d_ff, d_model)]
    dh = d_model // num_heads
    core = num_heads * (2 * seq_len * dh * seq_len + 2 * seq_len * seq_len * dh)
    return {
        "attn_proj_params": sum(p for p, _ in proj), "attn_proj_flops": sum(f for _, f in proj),
        "attn_core_flops": core,
        "ffn_params": sum(p for p, _ in ffn), "ffn_flops": sum(f for _, f in ffn),
    }


# =========================================================================== CrossAttention (03)


class _CrossBase(nn.Module):
    def __init__(self, d_model, num_heads):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model: expected a multiple of num_heads={num_heads}, got {d_model}")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split(self, t):
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)


@case("CrossAttention", [r"values?.{0,40}(from x|decoder)|v_proj\(x\)"])
class CrossValuesFromDecoder(_CrossBase):
    def forward(self, x, memory, memory_mask=None, return_weights=False):
        q, k, v = self.split(self.q_proj(x)), self.split(self.k_proj(memory)), self.split(self.v_proj(x))
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, memory_mask)
        out = self.out_proj(mhsa_lib.merge_heads(out))
        return (out, w) if return_weights else out


@case("CrossAttention", [r"softmax|sum to 1", r"quer|dim=-2|axis|over the keys|memory positions|last axis"])
class CrossSoftmaxOverQueries(_CrossBase):
    def forward(self, x, memory, memory_mask=None, return_weights=False):
        q, k, v = self.split(self.q_proj(x)), self.split(self.k_proj(memory)), self.split(self.v_proj(memory))
        s = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if memory_mask is not None:
            s = s.masked_fill(~memory_mask, NEG_INF)
        w = torch.softmax(s, dim=-2)
        out = self.out_proj(mhsa_lib.merge_heads(w @ v))
        return (out, w) if return_weights else out


@case("CrossAttention", [r"polarity|True ?= ?(blocked|may attend)|invert|~"])
class CrossMaskPolarity(_CrossBase):
    def forward(self, x, memory, memory_mask=None, return_weights=False):
        q, k, v = self.split(self.q_proj(x)), self.split(self.k_proj(memory)), self.split(self.v_proj(memory))
        s = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if memory_mask is not None:
            s = s.masked_fill(memory_mask, NEG_INF)
        w = torch.softmax(s, dim=-1)
        out = self.out_proj(mhsa_lib.merge_heads(w @ v))
        return (out, w) if return_weights else out


@case("CrossAttention", [r"transpos|merg"])
class CrossMergeWithoutTranspose(_CrossBase):
    def forward(self, x, memory, memory_mask=None, return_weights=False):
        q, k, v = self.split(self.q_proj(x)), self.split(self.k_proj(memory)), self.split(self.v_proj(memory))
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, memory_mask)
        b, h, t, dh = out.shape
        out = self.out_proj(out.reshape(b, t, h * dh))
        return (out, w) if return_weights else out


@case("CrossAttention")
class CrossEinsum(_CrossBase):
    def forward(self, x, memory, memory_mask=None, return_weights=False):
        b, t, d = x.shape
        s_len = memory.shape[1]
        h, dh = self.num_heads, self.head_dim
        q = self.q_proj(x).reshape(b, t, h, dh)
        k = self.k_proj(memory).reshape(b, s_len, h, dh)
        v = self.v_proj(memory).reshape(b, s_len, h, dh)
        scores = torch.einsum("bthe,bshe->bhts", q, k) * dh ** -0.5
        if memory_mask is not None:
            scores = torch.where(memory_mask, scores, torch.full_like(scores, NEG_INF))
        w = torch.softmax(scores, dim=-1)
        out = torch.einsum("bhts,bshe->bthe", w, v).reshape(b, t, d)
        out = self.out_proj(out)
        return (out, w) if return_weights else out


# =========================================================================== apply_rotary (07)


def _rope_angles(t, dh, offset, dtype):
    pos = torch.arange(offset, offset + t, dtype=torch.float64)[:, None]
    inv = 10000.0 ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    ang = pos * inv
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


@case("apply_rotary", [r"interleav|halves|torch\.cat|adjacent"])
def rope_concatenates_halves(x, offset=0):
    cos, sin = _rope_angles(x.shape[-2], x.shape[-1], offset, x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


@case("apply_rotary", [r"in.place|overwr"])
def rope_in_place(x, offset=0):
    cos, sin = _rope_angles(x.shape[-2], x.shape[-1], offset, x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    x[..., 0::2] = a * cos - b * sin
    x[..., 1::2] = a * sin + b * cos
    return x


@case("apply_rotary", [r"frequenc|ω", r"pair 0|first pair|start|i ?= ?0|one pair too late"])
def rope_frequencies_from_one(x, offset=0):
    t, dh = x.shape[-2], x.shape[-1]
    pos = torch.arange(offset, offset + t, dtype=torch.float64)[:, None]
    inv = 1.0 / 10000.0 ** (torch.arange(2, dh + 2, 2, dtype=torch.float64) / dh)
    ang = pos * inv
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


@case("apply_rotary", [r"shape\[0\]|len\(x\)|first axis", r"shape\[-2\]|\bT\b"])
def rope_length_from_first_axis(x, offset=0):
    t, dh = x.shape[0], x.shape[-1]
    cos, sin = _rope_angles(t, dh, offset, x.dtype)
    cos, sin = cos[: x.shape[-2]], sin[: x.shape[-2]]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


@case("apply_rotary")
def rope_complex(x, offset=0):
    t, dh = x.shape[-2], x.shape[-1]
    pos = torch.arange(offset, offset + t, dtype=torch.float64)
    inv = 10000.0 ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    rot = torch.polar(torch.ones(t, dh // 2, dtype=torch.float64), torch.outer(pos, inv))
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], dh // 2, 2).contiguous())
    return torch.view_as_real(z * rot).reshape(x.shape).to(x.dtype)


# =========================================================================== online_softmax_merge, tiled_attention (08)


@case("online_softmax_merge", [r"m1", r"common maximum|both|max\(m1, ?m2\)"])
def merge_into_first_frame(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, l1 + l2 * torch.exp(m2 - m1).nan_to_num(nan=0.0)


@case("online_softmax_merge", [r"logarithm|plain sum"])
def merge_returns_log_sum(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, torch.logaddexp(m1 + torch.log(l1), m2 + torch.log(l2)) - torch.where(torch.isfinite(m), m, 0.0)


@case("online_softmax_merge", [r"\(l, ?m\)|order|swap"])
def merge_returns_l_first(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    s = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return l1 * torch.exp(m1 - s) + l2 * torch.exp(m2 - s), m


@case("online_softmax_merge")
def merge_by_where(m1, l1, m2, l2):
    first_bigger = m1 >= m2
    m = torch.where(first_bigger, m1, m2)
    small_m = torch.where(first_bigger, m2, m1)
    big_l = torch.where(first_bigger, l1, l2)
    small_l = torch.where(first_bigger, l2, l1)
    factor = torch.where(torch.isfinite(m), torch.exp(small_m - m), torch.zeros_like(m))
    return m, big_l + small_l * factor


def _tiled_loop(q, k, v, block_size, mask, causal, *, score_scale=None, per_block=False, normalise=True,
                polarity=True):
    t, s = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if score_scale is None else score_scale
    m = torch.full(q.shape[:-1], NEG_INF, dtype=q.dtype)
    l = torch.zeros(q.shape[:-1], dtype=q.dtype)  # noqa: E741
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for start in range(0, s, block_size):
        stop = min(start + block_size, s)
        sc = q @ k[..., start:stop, :].transpose(-2, -1) * scale
        allowed = torch.ones(t, stop - start, dtype=torch.bool)
        if mask is not None:
            blk = mask[..., start:stop]
            allowed = allowed & (blk if polarity else ~blk)
        if causal:
            allowed = allowed & (torch.arange(start, stop)[None, :] <= torch.arange(t)[:, None] + s - t)
        sc = sc.masked_fill(~allowed, NEG_INF)
        if per_block:
            w = torch.softmax(sc, dim=-1).nan_to_num(0.0)
            acc = acc + w @ v[..., start:stop, :]
            continue
        m_new = torch.maximum(m, sc.amax(-1))
        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        p = torch.exp(sc - shift[..., None])
        fix = torch.exp(m - shift)
        l = l * fix + p.sum(-1)  # noqa: E741
        acc = acc * fix[..., None] + p @ v[..., start:stop, :]
        m = m_new
    if per_block:
        return acc
    return acc / torch.where(l > 0, l, torch.ones_like(l))[..., None] if normalise else acc


@case("tiled_attention", [r"separate softmax|softmax in each block|each block.s (own )?(softmax|weights)|per.block"])
def tiled_softmax_per_block(q, k, v, block_size, mask=None, causal=False):
    return _tiled_loop(q, k, v, block_size, mask, causal, per_block=True)


@case("tiled_attention", [r"polarity|True ?= ?(blocked|may attend)|invert|~"])
def tiled_mask_polarity(q, k, v, block_size, mask=None, causal=False):
    return _tiled_loop(q, k, v, block_size, mask, causal, polarity=False)


@case("tiled_attention", [r"Dv|v\.shape|values?.? width", r"d_k|q\.shape\[-1\]"])
def tiled_scale_by_value_width(q, k, v, block_size, mask=None, causal=False):
    return _tiled_loop(q, k, v, block_size, mask, causal, score_scale=1.0 / math.sqrt(v.shape[-1]))


@case("tiled_attention", [r"divide by the (running )?sum|acc / l|/ l\b|normalis"])
def tiled_never_divides(q, k, v, block_size, mask=None, causal=False):
    return _tiled_loop(q, k, v, block_size, mask, causal, normalise=False)


@case("tiled_attention")
def tiled_logsumexp_two_pass(q, k, v, block_size, mask=None, causal=False):
    """Two passes over the key blocks, each block's scores computed anew: the logsumexp of each
    row first, then the weighted sum of the values."""
    t, s = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5

    def scores(start, stop):
        sc = (q @ k[..., start:stop, :].transpose(-2, -1)) * scale
        keep = torch.ones(t, stop - start, dtype=torch.bool)
        if mask is not None:
            keep = keep & mask[..., start:stop]
        if causal:
            keep = keep & (torch.arange(start, stop)[None, :] <= torch.arange(t)[:, None] + (s - t))
        return sc.masked_fill(~keep, NEG_INF)

    spans = [(start, min(start + block_size, s)) for start in range(0, s, block_size)]
    lse = torch.full(q.shape[:-1], NEG_INF, dtype=q.dtype)
    for start, stop in spans:
        lse = torch.logaddexp(lse, torch.logsumexp(scores(start, stop), dim=-1))
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for start, stop in spans:
        out = out + torch.exp(scores(start, stop) - safe[..., None]) @ v[..., start:stop, :]
    return out
