"""Function steps answered in the styles of well-known code bases (see the package's docstring).

Each entry: (step, notebook, style, cells); the graded object is the namespace's name of the step."""

PAIRWISE = [
    ("einsum", ['def pairwise_scores(q, k):\n    return torch.einsum("btd,bsd->bts", q, k)\n']),
    ("assert-style validation, bmm", [
        "def pairwise_scores(q, k):\n"
        "    assert q.dim() == 3 and k.dim() == 3, 'q, k: (B, T, D), (B, S, D)'\n"
        "    assert q.shape[-1] == k.shape[-1]\n"
        "    return torch.bmm(q, k.transpose(1, 2))\n"]),
]

SOFTMAX = [
    ("logsumexp, all -inf rows as zeros", [
        "def softmax(x, dim=-1):\n"
        "    lse = torch.logsumexp(x, dim=dim, keepdim=True)\n"
        "    safe = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)\n"
        "    return torch.exp(x - safe)\n"]),
    ("assert-style validation, amax and nan_to_num", [
        "def softmax(x, dim=-1):\n"
        "    assert torch.is_floating_point(x), f'expected a float tensor, got {x.dtype}'\n"
        "    m = x.amax(dim, keepdim=True).detach()\n"
        "    m = m.masked_fill(~torch.isfinite(m), 0)\n"
        "    e = (x - m).exp()\n"
        "    s = e.sum(dim, keepdim=True)\n"
        "    return torch.nan_to_num(e / s, nan=0.0)\n"]),
]

CAUSAL_MASK = [
    ("nanoGPT tril of ones, offset to the lower right", [
        "def causal_mask(seq_len_q, seq_len_k=None, *, device=None):\n"
        "    S = seq_len_q if seq_len_k is None else seq_len_k\n"
        "    return torch.tril(torch.ones(seq_len_q, S, device=device), diagonal=S - seq_len_q).bool()\n"]),
    ("Llama -inf triu, then == 0", [
        "def causal_mask(seq_len_q, seq_len_k=None, *, device=None):\n"
        "    seq_len_k = seq_len_k or seq_len_q\n"
        "    bias = torch.full((seq_len_q, seq_len_k), float('-inf'), device=device)\n"
        "    bias = torch.triu(bias, diagonal=seq_len_k - seq_len_q + 1)\n"
        "    return bias == 0\n"]),
]

_SOFTMAX_HELPER = (
    "def softmax(x, dim=-1):\n"
    "    m = x.amax(dim, keepdim=True)\n"
    "    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))\n"
    "    e = torch.exp(x - m)\n"
    "    s = e.sum(dim, keepdim=True)\n"
    "    return e / torch.where(s > 0, s, torch.ones_like(s))\n")

ATTENTION = [
    ("Annotated Transformer: attention(query, key, value, mask, dropout) helper", [
        _SOFTMAX_HELPER,
        "def attention(query, key, value, mask=None, dropout=None):\n"
        "    d_k = query.size(-1)\n"
        "    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)\n"
        "    if mask is not None:\n"
        "        scores = scores.masked_fill(mask == 0, float('-inf'))\n"
        "    p_attn = softmax(scores, dim=-1)\n"
        "    if dropout is not None:\n"
        "        p_attn = dropout(p_attn)\n"
        "    return torch.matmul(p_attn, value), p_attn\n"
        "\n"
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    return attention(q, k, v, mask)\n"]),
    ("PyTorch's reference code: additive attn_bias, a softmax helper in the same cell", [
        "def softmax(x):\n"
        "    x = x - torch.where(torch.isfinite(x.amax(-1, keepdim=True)), x.amax(-1, keepdim=True), 0.0)\n"
        "    e = x.exp()\n"
        "    return e / e.sum(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)\n"
        "\n"
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    L, S = q.size(-2), k.size(-2)\n"
        "    scale_factor = 1 / math.sqrt(q.size(-1))\n"
        "    attn_bias = torch.zeros(L, S, dtype=q.dtype, device=q.device)\n"
        "    if mask is not None:\n"
        "        attn_bias = attn_bias.masked_fill(mask.logical_not(), float('-inf'))\n"
        "    attn_weight = q @ k.transpose(-2, -1) * scale_factor\n"
        "    attn_weight = attn_weight + attn_bias\n"
        "    attn_weight = softmax(attn_weight)\n"
        "    return attn_weight @ v, attn_weight\n"]),
    ("einsum, float64 inside, the notebook's softmax from an earlier cell", [
        _SOFTMAX_HELPER,
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    assert q.shape[-1] == k.shape[-1], 'q and k need the same width'\n"
        "    scores = torch.einsum('...td,...sd->...ts', q.double(), k.double()) * q.shape[-1] ** -0.5\n"
        "    if mask is not None:\n"
        "        scores = scores.masked_fill(~mask, float('-inf'))\n"
        "    weights = softmax(scores, dim=-1).to(q.dtype)\n"
        "    return torch.einsum('...ts,...sd->...td', weights, v), weights\n"]),
]

SPLIT_HEADS = [
    ("d2l transpose_qkv", [
        "def split_heads(x, num_heads):\n"
        "    x = x.reshape(x.shape[0], x.shape[1], num_heads, -1)\n"
        "    return x.permute(0, 2, 1, 3)\n"]),
    ("nanoGPT view/transpose with assert", [
        "def split_heads(x, num_heads):\n"
        "    B, T, C = x.size()\n"
        "    assert C % num_heads == 0\n"
        "    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)\n"]),
    ("unflatten", ["def split_heads(x, num_heads):\n    return x.unflatten(-1, (num_heads, -1)).transpose(-3, -2)\n"]),
]

MERGE_HEADS = [
    ("d2l transpose_output", [
        "def merge_heads(x):\n"
        "    x = x.permute(0, 2, 1, 3)\n"
        "    return x.reshape(x.shape[0], x.shape[1], -1)\n"]),
    ("nanoGPT transpose, contiguous, view", [
        "def merge_heads(x):\n"
        "    B, nh, T, hs = x.size()\n"
        "    return x.transpose(1, 2).contiguous().view(B, T, nh * hs)\n"]),
    ("einsum-free flatten", ["def merge_heads(x):\n    return x.transpose(1, 2).flatten(-2)\n"]),
]

REPEAT_KV = [
    ("Llama expand, on the (B, G, S, Dh) layout", [
        "def repeat_kv(x, n_rep):\n"
        "    bs, n_kv_heads, slen, head_dim = x.shape\n"
        "    if n_rep == 1:\n"
        "        return x\n"
        "    return (x[:, :, None, :, :].expand(bs, n_kv_heads, n_rep, slen, head_dim)\n"
        "            .reshape(bs, n_kv_heads * n_rep, slen, head_dim))\n"]),
    ("torchtune repeat_interleave", ["def repeat_kv(x, n_rep):\n    return torch.repeat_interleave(x, n_rep, dim=1)\n"]),
]

HEADS_LOOP = [
    ("minGPT-like loop with F.linear and its own scores", [
        "import torch.nn.functional as F\n",
        "def attention_heads_loop(x, w_q, w_k, w_v, mask=None):\n"
        "    heads = []\n"
        "    for wq, wk, wv in zip(w_q, w_k, w_v):\n"
        "        q, k, v = F.linear(x, wq), F.linear(x, wk), F.linear(x, wv)\n"
        "        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))\n"
        "        if mask is not None:\n"
        "            att = att.masked_fill(mask == 0, float('-inf'))\n"
        "        heads.append(torch.softmax(att, dim=-1) @ v)\n"
        "    return torch.stack(heads, dim=1)\n"]),
    ("einsum per head", [
        "def attention_heads_loop(x, w_q, w_k, w_v, mask=None):\n"
        "    outs = [scaled_dot_product_attention(torch.einsum('btd,ed->bte', x, a),\n"
        "                                         torch.einsum('btd,ed->bte', x, b),\n"
        "                                         torch.einsum('btd,ed->bte', x, c), mask)[0]\n"
        "            for a, b, c in zip(w_q, w_k, w_v)]\n"
        "    return torch.stack(outs, 1)\n"]),
]

HEADS = [
    ("nanoGPT fused projection with a split_heads helper taking (B, T, H, Dh) to (B, H, T, Dh)", [
        "def split_heads(x, num_heads):\n"
        "    B, T, C = x.shape\n"
        "    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)\n",
        "def attention_heads(x, w_q, w_k, w_v, num_heads, mask=None):\n"
        "    B, T, C = x.size()\n"
        "    q, k, v = (x @ torch.cat([w_q, w_k, w_v]).T).split(C, dim=2)\n"
        "    q, k, v = (split_heads(t, num_heads) for t in (q, k, v))\n"
        "    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))\n"
        "    if mask is not None:\n"
        "        att = att.masked_fill(~mask, float('-inf'))\n"
        "    return torch.softmax(att, dim=-1) @ v\n"]),
    ("a split_heads helper of another signature in the same cell (the (B, T, H, Dh) layout)", [
        "def split_heads(x, batch, length, heads):\n"
        "    return x.view(batch, length, heads, -1)\n"
        "\n"
        "def attention_heads(x, w_q, w_k, w_v, num_heads, mask=None):\n"
        "    B, T, D = x.shape\n"
        "    q, k, v = (split_heads(x @ w.T, B, T, num_heads).transpose(1, 2) for w in (w_q, w_k, w_v))\n"
        "    return scaled_dot_product_attention(q, k, v, mask)[0]\n"]),
    ("einsum everywhere", [
        "def attention_heads(x, w_q, w_k, w_v, num_heads, mask=None):\n"
        "    B, T, D = x.shape\n"
        "    W = torch.stack([w_q, w_k, w_v]).view(3, num_heads, D // num_heads, D)\n"
        "    q, k, v = torch.einsum('btd,nhed->nbhte', x, W)\n"
        "    s = torch.einsum('bhte,bhse->bhts', q, k) / math.sqrt(D // num_heads)\n"
        "    if mask is not None:\n"
        "        s = s.masked_fill(~mask, float('-inf'))\n"
        "    return torch.einsum('bhts,bhse->bhte', s.softmax(-1), v)\n"]),
]

LOAD = [
    ("Hugging Face-like state-dict conversion", [
        "def load_mha_from_torch(module, torch_mha):\n"
        "    sd = torch_mha.state_dict()\n"
        "    new = {}\n"
        "    for name, w in zip(('q_proj', 'k_proj', 'v_proj'), sd['in_proj_weight'].chunk(3)):\n"
        "        new[f'{name}.weight'] = w\n"
        "    if 'in_proj_bias' in sd and module.q_proj.bias is not None:\n"
        "        for name, b in zip(('q_proj', 'k_proj', 'v_proj'), sd['in_proj_bias'].chunk(3)):\n"
        "            new[f'{name}.bias'] = b\n"
        "    new['out_proj.weight'] = sd['out_proj.weight']\n"
        "    if module.out_proj.bias is not None:\n"
        "        new['out_proj.bias'] = sd['out_proj.bias']\n"
        "    module.load_state_dict(new, strict=False)\n"
        "    return module\n"]),
    ("split by size, .data assignment of clones", [
        "def load_mha_from_torch(module, torch_mha):\n"
        "    D = torch_mha.embed_dim\n"
        "    ws = torch_mha.in_proj_weight.detach().split(D, dim=0)\n"
        "    bs = torch_mha.in_proj_bias.detach().split(D) if torch_mha.in_proj_bias is not None else (None,) * 3\n"
        "    for lin, w, b in zip((module.q_proj, module.k_proj, module.v_proj), ws, bs):\n"
        "        lin.weight.data = w.clone().to(lin.weight.dtype)\n"
        "        if b is not None and lin.bias is not None:\n"
        "            lin.bias.data = b.clone().to(lin.bias.dtype)\n"
        "    module.out_proj.weight.data = torch_mha.out_proj.weight.detach().clone().to(module.out_proj.weight.dtype)\n"
        "    if module.out_proj.bias is not None and torch_mha.out_proj.bias is not None:\n"
        "        module.out_proj.bias.data = torch_mha.out_proj.bias.detach().clone().to(module.out_proj.bias.dtype)\n"
        "    return module\n"]),
]

KV_CACHE_BYTES = [
    ("math.prod", [
        "def kv_cache_bytes(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):\n"
        "    return math.prod((2, batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element))\n"]),
    ("per layer, per token, assert-style validation", [
        "def kv_cache_bytes(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):\n"
        "    assert all(isinstance(n, int) and n >= 0 for n in (batch_size, seq_len, num_layers))\n"
        "    per_token = 2 * num_kv_heads * head_dim * bytes_per_element\n"
        "    return int(per_token * seq_len * batch_size * num_layers)\n"]),
]

BLOCK_COSTS = [
    ("per matrix product, a helper flops(m, k, n) = 2·m·k·n, per head", [
        "def block_costs(d_model, num_heads, d_ff, seq_len):\n"
        "    def flops(m, k, n):\n"
        "        return 2 * m * k * n\n"
        "    head_dim = d_model // num_heads\n"
        "    per_head = flops(seq_len, head_dim, seq_len) + flops(seq_len, seq_len, head_dim)\n"
        "    return {'attn_proj_params': 4 * d_model * d_model + 4 * d_model,\n"
        "            'attn_proj_flops': 4 * flops(seq_len, d_model, d_model),\n"
        "            'attn_core_flops': num_heads * per_head,\n"
        "            'ffn_params': 2 * d_model * d_ff + d_ff + d_model,\n"
        "            'ffn_flops': flops(seq_len, d_model, d_ff) + flops(seq_len, d_ff, d_model)}\n"]),
    ("parameters counted on real torch modules, assert-style validation", [
        "def block_costs(d_model, num_heads, d_ff, seq_len):\n"
        "    assert d_model % num_heads == 0, 'num_heads must divide d_model'\n"
        "    attn = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(4)])\n"
        "    ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))\n"
        "    n = lambda m: sum(p.numel() for p in m.parameters())\n"
        "    return dict(attn_proj_params=n(attn), attn_proj_flops=8 * seq_len * d_model ** 2,\n"
        "                attn_core_flops=4 * seq_len ** 2 * d_model, ffn_params=n(ffn),\n"
        "                ffn_flops=4 * seq_len * d_model * d_ff)\n"]),
]

HEAD_TRADEOFF = [
    ("a dataclass per row, asdict, one validation helper", [
        "from dataclasses import asdict, dataclass\n"
        "\n"
        "@dataclass\n"
        "class Row:\n"
        "    n_heads: int\n"
        "    d_head: int\n"
        "    params: int\n"
        "    flops: int\n"
        "    score_rank_bound: int\n"
        "    kv_cache_bytes: int\n",
        "def _positive(name, n):\n"
        "    if not isinstance(n, int) or n <= 0:\n"
        "        raise ValueError(f'{name}: expected a positive int, got {n!r}')\n"
        "\n"
        "def head_tradeoff(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):\n"
        "    for name, n in dict(d_model=d_model, seq_len=seq_len, batch=batch, bytes_per_value=bytes_per_value).items():\n"
        "        _positive(name, n)\n"
        "    rows = []\n"
        "    for h in n_heads_options:\n"
        "        _positive('n_heads', h)\n"
        "        if d_model % h:\n"
        "            raise ValueError(f'n_heads={h} must divide d_model={d_model}')\n"
        "        dh = d_model // h\n"
        "        proj = 4 * 2 * seq_len * d_model * d_model\n"
        "        core = h * 2 * (2 * seq_len * seq_len * dh)\n"
        "        rows.append(Row(h, dh, 4 * d_model * (d_model + 1), proj + core, min(dh, seq_len),\n"
        "                        2 * batch * seq_len * h * dh * bytes_per_value))\n"
        "    return [asdict(r) for r in rows]\n"]),
    ("FLOPs measured with FlopCounterMode on meta tensors, parameters on nn.Linear", [
        "from torch.utils.flop_counter import FlopCounterMode\n"
        "\n"
        "def head_tradeoff(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4):\n"
        "    if seq_len < 1:\n"
        "        raise ValueError(f'seq_len: expected >= 1, got {seq_len}')\n"
        "    layers = [nn.Linear(d_model, d_model, device='meta') for _ in range(4)]\n"
        "    table = []\n"
        "    for h in n_heads_options:\n"
        "        if d_model % h != 0:\n"
        "            raise ValueError(f'n_heads_options: {h} does not divide d_model {d_model}')\n"
        "        x = torch.empty(1, seq_len, d_model, device='meta')\n"
        "        with FlopCounterMode(display=False) as counter:\n"
        "            q, k, v = (split_heads(layer(x), h) for layer in layers[:3])\n"
        "            w = (q @ k.transpose(-2, -1)).softmax(-1)\n"
        "            layers[3]((w @ v).transpose(1, 2).reshape(1, seq_len, d_model))\n"
        "        table.append({'n_heads': h, 'd_head': d_model // h,\n"
        "                      'params': sum(p.numel() for layer in layers for p in layer.parameters()),\n"
        "                      'flops': counter.get_total_flops(), 'score_rank_bound': min(d_model // h, seq_len),\n"
        "                      'kv_cache_bytes': 2 * q.numel() * batch * bytes_per_value})\n"
        "    return table\n"]),
]

POSITIONAL = [
    ("Annotated Transformer exp-log div_term", [
        "def sinusoidal_positional_encoding(seq_len, d_model):\n"
        "    pe = torch.zeros(seq_len, d_model)\n"
        "    position = torch.arange(0, seq_len).unsqueeze(1)\n"
        "    div_term = torch.exp(torch.arange(0, d_model, 2) * -(math.log(10000.0) / d_model))\n"
        "    pe[:, 0::2] = torch.sin(position * div_term)\n"
        "    pe[:, 1::2] = torch.cos(position * div_term)\n"
        "    return pe\n"]),
    ("d2l pow, (1, T, D) then [0]", [
        "def sinusoidal_positional_encoding(seq_len, d_model):\n"
        "    P = torch.zeros((1, seq_len, d_model))\n"
        "    X = torch.arange(seq_len, dtype=torch.float32).reshape(-1, 1) / torch.pow(\n"
        "        10000, torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)\n"
        "    P[:, :, 0::2] = torch.sin(X)\n"
        "    P[:, :, 1::2] = torch.cos(X)\n"
        "    return P[0]\n"]),
    ("interleaved by stack, float64", [
        "def sinusoidal_positional_encoding(seq_len, d_model):\n"
        "    pos = torch.arange(seq_len, dtype=torch.float64)[:, None]\n"
        "    freq = 10000.0 ** (-torch.arange(d_model // 2, dtype=torch.float64) * 2 / d_model)\n"
        "    angle = pos * freq\n"
        "    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2).float()\n"]),
]

ROTARY = [
    ("RoFormer complex numbers, view_as_complex", [
        "def apply_rotary(x, offset=0):\n"
        "    t, dh = x.shape[-2], x.shape[-1]\n"
        "    freqs = 1.0 / (10000.0 ** (torch.arange(0, dh, 2)[: dh // 2].float() / dh))\n"
        "    freqs = torch.outer(torch.arange(offset, offset + t).float(), freqs)\n"
        "    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)\n"
        "    x_ = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))\n"
        "    return torch.view_as_real(x_ * freqs_cis).flatten(-2).type_as(x)\n"]),
    ("interleaved rotate-every-two with repeat_interleave", [
        "def rotate_every_two(x):\n"
        "    x1, x2 = x[..., ::2], x[..., 1::2]\n"
        "    return torch.stack((-x2, x1), dim=-1).flatten(-2)\n",
        "def apply_rotary(x, offset=0):\n"
        "    seq_len, dim = x.shape[-2], x.shape[-1]\n"
        "    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))\n"
        "    sinusoid = torch.einsum('i,j->ij', torch.arange(offset, offset + seq_len).float(), inv_freq)\n"
        "    sin = sinusoid.sin().repeat_interleave(2, dim=-1)\n"
        "    cos = sinusoid.cos().repeat_interleave(2, dim=-1)\n"
        "    return x * cos + rotate_every_two(x) * sin\n"]),
]

ONLINE_MERGE = [
    ("flash-attention paper notation, where guard", [
        "def online_softmax_merge(m1, l1, m2, l2):\n"
        "    m_new = torch.max(m1, m2)\n"
        "    m_safe = torch.where(m_new == float('-inf'), torch.zeros_like(m_new), m_new)\n"
        "    return m_new, torch.exp(m1 - m_safe) * l1 + torch.exp(m2 - m_safe) * l2\n"]),
    ("log space with logaddexp, float64 inside", [
        "def online_softmax_merge(m1, l1, m2, l2):\n"
        "    dtype = torch.promote_types(m1.dtype, l1.dtype)\n"
        "    m = torch.maximum(m1, m2).double()\n"
        "    lse = torch.logaddexp(m1.double() + l1.double().log(), m2.double() + l2.double().log())\n"
        "    l = torch.where(torch.isfinite(m), (lse - m).exp(), torch.zeros_like(lse)).nan_to_num(0.0)\n"
        "    return m.to(dtype), l.to(dtype)\n"]),
]

TILED = [
    ("flash-attention loop with the merge as a helper cell", [
        "def online_softmax_merge(m1, l1, m2, l2):\n"
        "    m = torch.maximum(m1, m2)\n"
        "    s = torch.where(torch.isfinite(m), m, torch.zeros_like(m))\n"
        "    return m, l1 * torch.exp(m1 - s) + l2 * torch.exp(m2 - s)\n",
        "def tiled_attention(q, k, v, block_size, mask=None, causal=False):\n"
        "    T, S = q.size(-2), k.size(-2)\n"
        "    m_i = q.new_full(q.shape[:-1] + (1,), float('-inf'))\n"
        "    l_i = q.new_zeros(q.shape[:-1] + (1,))\n"
        "    o_i = q.new_zeros(q.shape[:-1] + (v.size(-1),))\n"
        "    for j in range(0, S, block_size):\n"
        "        k_j, v_j = k[..., j:j + block_size, :], v[..., j:j + block_size, :]\n"
        "        s_ij = torch.matmul(q, k_j.transpose(-1, -2)) * q.size(-1) ** -0.5\n"
        "        if mask is not None:\n"
        "            s_ij = s_ij.masked_fill(~mask[..., j:j + block_size], float('-inf'))\n"
        "        if causal:\n"
        "            cols = torch.arange(j, j + k_j.size(-2))\n"
        "            rows = torch.arange(T)[:, None] + (S - T)\n"
        "            s_ij = s_ij.masked_fill(cols[None, :] > rows, float('-inf'))\n"
        "        m_ij = s_ij.amax(-1, keepdim=True)\n"
        "        m_new, l_new = online_softmax_merge(m_i, l_i, m_ij, torch.ones_like(m_ij))\n"
        "        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))\n"
        "        p_ij = torch.exp(s_ij - shift)\n"
        "        l_i = l_i * torch.exp(m_i - shift) + p_ij.sum(-1, keepdim=True)\n"
        "        o_i = o_i * torch.exp(m_i - shift) + p_ij @ v_j\n"
        "        m_i = m_new\n"
        "    return torch.where(l_i > 0, o_i / l_i, torch.zeros_like(o_i))\n"]),
    ("per-block softmax and logsumexp, einsum", [
        "def tiled_attention(q, k, v, block_size, mask=None, causal=False):\n"
        "    t, s = q.shape[-2], k.shape[-2]\n"
        "    out, lse = None, None\n"
        "    for start in range(0, s, block_size):\n"
        "        stop = min(s, start + block_size)\n"
        "        sc = torch.einsum('...td,...sd->...ts', q, k[..., start:stop, :]) / math.sqrt(q.shape[-1])\n"
        "        ok = torch.ones(sc.shape[-2:], dtype=torch.bool)\n"
        "        if mask is not None:\n"
        "            ok = ok & mask[..., start:stop]\n"
        "        if causal:\n"
        "            ok = ok & (torch.arange(start, stop)[None] <= torch.arange(t)[:, None] + s - t)\n"
        "        sc = sc.masked_fill(~ok, float('-inf'))\n"
        "        b_lse = torch.logsumexp(sc, -1, keepdim=True)\n"
        "        b_out = torch.einsum('...ts,...sd->...td', torch.softmax(sc, -1).nan_to_num(0.0), v[..., start:stop, :])\n"
        "        if out is None:\n"
        "            out, lse = b_out, b_lse\n"
        "            continue\n"
        "        new = torch.logaddexp(lse, b_lse)\n"
        "        out = out * (lse - new).exp().nan_to_num(0.0) + b_out * (b_lse - new).exp().nan_to_num(0.0)\n"
        "        lse = new\n"
        "    return out\n"]),
]

#: step -> (notebook, [(style, cells)])
FUNCTION_STYLES = {
    "pairwise_scores": ("00", PAIRWISE),
    "softmax": ("01", SOFTMAX),
    "causal_mask": ("01", CAUSAL_MASK),
    "scaled_dot_product_attention": ("01", ATTENTION),
    "split_heads": ("02", SPLIT_HEADS),
    "attention_heads_loop": ("02", HEADS_LOOP),
    "attention_heads": ("02", HEADS),
    "merge_heads": ("03", MERGE_HEADS),
    "load_mha_from_torch": ("03", LOAD),
    "head_tradeoff": ("03", HEAD_TRADEOFF),
    "repeat_kv": ("05", REPEAT_KV),
    "kv_cache_bytes": ("05", KV_CACHE_BYTES),
    "block_costs": ("04", BLOCK_COSTS),
    "sinusoidal_positional_encoding": ("07", POSITIONAL),
    "apply_rotary": ("07", ROTARY),
    "online_softmax_merge": ("08", ONLINE_MERGE),
    "tiled_attention": ("08", TILED),
}
