"""Module steps (and the KV cache) answered in the styles of well-known code bases (see the
package's docstring). Each entry: (style, cells); the graded object is the namespace's name of
the step."""

# --------------------------------------------------------------------------- LayerNorm (notebook 04)

LAYER_NORM = [
    ("nanoGPT-like: rsqrt, the weight and bias as in the spec", [
        "class LayerNorm(nn.Module):\n"
        "    def __init__(self, d_model, eps=1e-5):\n"
        "        super().__init__()\n"
        "        self.eps = eps\n"
        "        self.weight = nn.Parameter(torch.ones(d_model))\n"
        "        self.bias = nn.Parameter(torch.zeros(d_model))\n"
        "    def forward(self, x):\n"
        "        mu = x.mean(-1, keepdim=True)\n"
        "        var = (x - mu).pow(2).mean(-1, keepdim=True)\n"
        "        return (x - mu) * torch.rsqrt(var + self.eps) * self.weight + self.bias\n"]),
    ("var_mean, float64 inside, assert-style validation", [
        "class LayerNorm(nn.Module):\n"
        "    def __init__(self, d_model, eps=1e-5):\n"
        "        super().__init__()\n"
        "        assert d_model > 0\n"
        "        self.d_model, self.eps = d_model, eps\n"
        "        self.weight = nn.Parameter(torch.ones(d_model))\n"
        "        self.bias = nn.Parameter(torch.zeros(d_model))\n"
        "    def forward(self, x):\n"
        "        assert x.shape[-1] == self.d_model, f'expected (..., {self.d_model}), got {tuple(x.shape)}'\n"
        "        var, mean = torch.var_mean(x.double(), dim=-1, keepdim=True, unbiased=False)\n"
        "        y = ((x.double() - mean) / (var + self.eps).sqrt()).to(x.dtype)\n"
        "        return torch.addcmul(self.bias, y, self.weight)\n"]),
]

#: The Annotated Transformer names its gain and shift a_2 and b_2: a genuine difference from the
#: spec (weight, bias), which costs exactly the structure part.
LAYER_NORM_A2B2 = (
    "class LayerNorm(nn.Module):\n"
    "    def __init__(self, features, eps=1e-5):\n"
    "        super().__init__()\n"
    "        self.a_2 = nn.Parameter(torch.ones(features))\n"
    "        self.b_2 = nn.Parameter(torch.zeros(features))\n"
    "        self.eps = eps\n"
    "    def forward(self, x):\n"
    "        mean = x.mean(-1, keepdim=True)\n"
    "        var = x.var(-1, keepdim=True, unbiased=False)\n"
    "        return self.a_2 * (x - mean) / torch.sqrt(var + self.eps) + self.b_2\n")

# --------------------------------------------------------------------------- FeedForward (notebook 04)

FEED_FORWARD = [
    ("d2l: LazyLinear layers", [
        "class FeedForward(nn.Module):\n"
        "    def __init__(self, d_model, d_ff, activation='relu'):\n"
        "        super().__init__()\n"
        "        if activation not in ('relu', 'gelu'):\n"
        "            raise ValueError(activation)\n"
        "        self.fc1 = nn.LazyLinear(d_ff)\n"
        "        self.fc2 = nn.LazyLinear(d_model)\n"
        "        self.act = nn.ReLU() if activation == 'relu' else nn.GELU()\n"
        "    def forward(self, x):\n"
        "        return self.fc2(self.act(self.fc1(x)))\n"]),
    ("nanoGPT MLP: a ModuleDict of activations, dropout 0, the layers also in a Sequential", [
        "class FeedForward(nn.Module):\n"
        "    def __init__(self, d_model, d_ff, activation='relu'):\n"
        "        super().__init__()\n"
        "        if activation not in ('relu', 'gelu'):\n"
        "            raise ValueError(f'activation: {activation!r}')\n"
        "        self.fc1 = nn.Linear(d_model, d_ff)\n"
        "        self.fc2 = nn.Linear(d_ff, d_model)\n"
        "        self.acts = nn.ModuleDict({'relu': nn.ReLU(), 'gelu': nn.GELU(approximate='none')})\n"
        "        self.net = nn.Sequential(self.fc1, self.acts[activation], self.fc2, nn.Dropout(0.0))\n"
        "    def forward(self, x, **kwargs):\n"
        "        return self.net(x)\n"]),
    ("float64 layers, weight norm as a parametrization", [
        "class FeedForward(nn.Module):\n"
        "    def __init__(self, d_model, d_ff, activation='relu'):\n"
        "        super().__init__()\n"
        "        if activation not in ('relu', 'gelu'):\n"
        "            raise ValueError(activation)\n"
        "        self.activation = activation\n"
        "        self.fc1 = nn.utils.parametrizations.weight_norm(nn.Linear(d_model, d_ff, dtype=torch.float64))\n"
        "        self.fc2 = nn.Linear(d_ff, d_model, dtype=torch.float64)\n"
        "    def forward(self, x):\n"
        "        h = self.fc1(x.to(self.fc2.weight.dtype))\n"
        "        h = F.relu(h) if self.activation == 'relu' else F.gelu(h)\n"
        "        return self.fc2(h).to(x.dtype)\n"]),
]

# --------------------------------------------------------------------------- MultiHeadAttention (notebook 03)

_MHA_INIT = (
    "    def __init__(self, d_model, num_heads, bias=True):\n"
    "        super().__init__()\n"
    "        if d_model % num_heads != 0:\n"
    "            raise ValueError(f'd_model={d_model} is not a multiple of num_heads={num_heads}')\n"
    "        self.n_head, self.n_embd = num_heads, d_model\n")

MULTI_HEAD = [
    ("d2l: LazyLinear projections, transpose_qkv / transpose_output helpers", [
        "def transpose_qkv(X, num_heads):\n"
        "    X = X.reshape(X.shape[0], X.shape[1], num_heads, -1)\n"
        "    return X.permute(0, 2, 1, 3)\n"
        "\n"
        "def transpose_output(X):\n"
        "    X = X.permute(0, 2, 1, 3)\n"
        "    return X.reshape(X.shape[0], X.shape[1], -1)\n"
        "\n"
        "class MultiHeadAttention(nn.Module):\n"
        + _MHA_INIT +
        "        self.q_proj = nn.LazyLinear(d_model, bias=bias)\n"
        "        self.k_proj = nn.LazyLinear(d_model, bias=bias)\n"
        "        self.v_proj = nn.LazyLinear(d_model, bias=bias)\n"
        "        self.out_proj = nn.LazyLinear(d_model, bias=bias)\n"
        "    def forward(self, x, mask=None, return_weights=False):\n"
        "        q, k, v = (transpose_qkv(f(x), self.n_head) for f in (self.q_proj, self.k_proj, self.v_proj))\n"
        "        out, w = scaled_dot_product_attention(q, k, v, mask)\n"
        "        out = self.out_proj(transpose_output(out))\n"
        "        return (out, w) if return_weights else out\n"]),
    ("nanoGPT: fused q/k/v matmul, a causal `bias` buffer, view/transpose", [
        "class MultiHeadAttention(nn.Module):\n"
        + _MHA_INIT +
        "        self.q_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.k_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.v_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.register_buffer('bias', torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64), persistent=False)\n"
        "    def forward(self, x, mask=None, return_weights=False):\n"
        "        B, T, C = x.size()\n"
        "        w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])\n"
        "        b = None if self.q_proj.bias is None else torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])\n"
        "        q, k, v = F.linear(x, w, b).split(self.n_embd, dim=2)\n"
        "        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)\n"
        "        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)\n"
        "        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)\n"
        "        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))\n"
        "        if mask is not None:\n"
        "            att = att.masked_fill(~mask, float('-inf'))\n"
        "        att = F.softmax(att, dim=-1)\n"
        "        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)\n"
        "        y = self.out_proj(y)\n"
        "        return (y, att) if return_weights else y\n"]),
    ("minGPT: attn_drop and resid_drop at 0, masked_fill(mask == 0)", [
        "class MultiHeadAttention(nn.Module):\n"
        + _MHA_INIT +
        "        self.q_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.k_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.v_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.attn_drop = nn.Dropout(0.0)\n"
        "        self.resid_drop = nn.Dropout(0.0)\n"
        "    def forward(self, x, mask=None, return_weights=False):\n"
        "        B, T, C = x.size()\n"
        "        k = self.k_proj(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)\n"
        "        q = self.q_proj(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)\n"
        "        v = self.v_proj(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)\n"
        "        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))\n"
        "        if mask is not None:\n"
        "            att = att.masked_fill(mask == 0, float('-inf'))\n"
        "        att = self.attn_drop(F.softmax(att, dim=-1))\n"
        "        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)\n"
        "        y = self.resid_drop(self.out_proj(y))\n"
        "        return (y, att) if return_weights else y\n"]),
    ("Annotated Transformer: clones of nn.Linear, an `attention` helper function", [
        "import copy\n"
        "\n"
        "def clones(module, N):\n"
        "    return nn.ModuleList([copy.deepcopy(module) for _ in range(N)])\n"
        "\n"
        "def attention(query, key, value, mask=None, dropout=None):\n"
        "    d_k = query.size(-1)\n"
        "    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)\n"
        "    if mask is not None:\n"
        "        scores = scores.masked_fill(mask == 0, float('-inf'))\n"
        "    p_attn = scores.softmax(dim=-1)\n"
        "    if dropout is not None:\n"
        "        p_attn = dropout(p_attn)\n"
        "    return torch.matmul(p_attn, value), p_attn\n"
        "\n"
        "class MultiHeadAttention(nn.Module):\n"
        + _MHA_INIT +
        "        self.d_k = d_model // num_heads\n"
        "        self.q_proj, self.k_proj, self.v_proj, self.out_proj = clones(nn.Linear(d_model, d_model, bias=bias), 4)\n"
        "        self.attn = None\n"
        "        self.dropout = nn.Dropout(p=0.0)\n"
        "    def forward(self, x, mask=None, return_weights=False):\n"
        "        nbatches = x.size(0)\n"
        "        query, key, value = [lin(x).view(nbatches, -1, self.n_head, self.d_k).transpose(1, 2)\n"
        "                             for lin in (self.q_proj, self.k_proj, self.v_proj)]\n"
        "        x, self.attn = attention(query, key, value, mask=mask, dropout=self.dropout)\n"
        "        x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.n_head * self.d_k)\n"
        "        out = self.out_proj(x)\n"
        "        return (out, self.attn) if return_weights else out\n"]),
    ("Hugging Face GPT-2: Conv1D-like addmm with the transposed weight, _split_heads/_attn/_merge_heads,"
     " finfo.min masking", [
        "class MultiHeadAttention(nn.Module):\n"
        + _MHA_INIT +
        "        self.head_dim = d_model // num_heads\n"
        "        self.q_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.k_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.v_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "    @staticmethod\n"
        "    def _conv1d(layer, x):\n"
        "        size_out = x.size()[:-1] + (layer.out_features,)\n"
        "        w = layer.weight.t()  # (in, out), as Conv1D stores it\n"
        "        b = layer.bias if layer.bias is not None else torch.zeros(layer.out_features, dtype=x.dtype)\n"
        "        return torch.addmm(b, x.reshape(-1, x.size(-1)), w).view(size_out)\n"
        "    def _split_heads(self, tensor):\n"
        "        new_shape = tensor.size()[:-1] + (self.n_head, self.head_dim)\n"
        "        return tensor.view(new_shape).permute(0, 2, 1, 3)\n"
        "    def _merge_heads(self, tensor):\n"
        "        tensor = tensor.permute(0, 2, 1, 3).contiguous()\n"
        "        return tensor.view(tensor.size()[:-2] + (self.n_head * self.head_dim,))\n"
        "    def _attn(self, query, key, value, attention_mask=None):\n"
        "        attn_weights = torch.matmul(query, key.transpose(-1, -2)) / torch.full(\n"
        "            [], value.size(-1) ** 0.5, dtype=query.dtype)\n"
        "        if attention_mask is not None:\n"
        "            mask_value = torch.finfo(attn_weights.dtype).min\n"
        "            attn_weights = torch.where(attention_mask, attn_weights, mask_value)\n"
        "        attn_weights = nn.functional.softmax(attn_weights, dim=-1)\n"
        "        return torch.matmul(attn_weights, value), attn_weights\n"
        "    def forward(self, hidden_states, mask=None, return_weights=False, **kwargs):\n"
        "        query, key, value = (self._split_heads(self._conv1d(p, hidden_states))\n"
        "                             for p in (self.q_proj, self.k_proj, self.v_proj))\n"
        "        attn_output, attn_weights = self._attn(query, key, value, mask)\n"
        "        attn_output = self._conv1d(self.out_proj, self._merge_heads(attn_output))\n"
        "        return (attn_output, attn_weights) if return_weights else attn_output\n"]),
    ("Llama/torchtune: a scaled_dot_product_attention helper with PyTorch's arguments, same cell", [
        "def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,\n"
        "                                 scale=None):\n"
        "    scale = query.size(-1) ** -0.5 if scale is None else scale\n"
        "    attn = query @ key.transpose(-2, -1) * scale\n"
        "    if is_causal:\n"
        "        attn_mask = torch.ones(attn.shape[-2:], dtype=torch.bool).tril()\n"
        "    if attn_mask is not None:\n"
        "        attn = attn.masked_fill(~attn_mask, float('-inf'))\n"
        "    attn = attn.softmax(-1)\n"
        "    return attn @ value, attn\n"
        "\n"
        "class MultiHeadAttention(nn.Module):\n"
        + _MHA_INIT +
        "        self.head_dim = d_model // num_heads\n"
        "        self.q_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.k_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.v_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "    def forward(self, x, mask=None, return_weights=False):\n"
        "        bsz, seq_len, _ = x.shape\n"
        "        q = self.q_proj(x).view(bsz, seq_len, self.n_head, self.head_dim).transpose(1, 2)\n"
        "        k = self.k_proj(x).view(bsz, seq_len, self.n_head, self.head_dim).transpose(1, 2)\n"
        "        v = self.v_proj(x).view(bsz, seq_len, self.n_head, self.head_dim).transpose(1, 2)\n"
        "        output, attn = scaled_dot_product_attention(q, k, v, attn_mask=mask)\n"
        "        output = output.transpose(1, 2).contiguous().view(bsz, seq_len, -1)\n"
        "        output = self.out_proj(output)\n"
        "        return (output, attn) if return_weights else output\n"]),
    ("einsum everywhere, float64 layers, forward hooks, a merge_heads helper of the notebook's own in an "
     "earlier cell", [
        "def merge_heads(x):\n"
        "    return torch.einsum('bhtd->bthd', x).flatten(-2)\n",
        "class MultiHeadAttention(nn.Module):\n"
        + _MHA_INIT +
        "        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (\n"
        "            nn.Linear(d_model, d_model, bias=bias, dtype=torch.float64) for _ in range(4))\n"
        "        self.calls = 0\n"
        "        self.register_forward_hook(lambda module, args, out: setattr(module, 'calls', module.calls + 1))\n"
        "    def forward(self, x, mask=None, return_weights=False):\n"
        "        assert x.dim() == 3, 'x: (B, T, D)'\n"
        "        h = self.n_head\n"
        "        q, k, v = (f(x.double()).unflatten(-1, (h, -1)) for f in (self.q_proj, self.k_proj, self.v_proj))\n"
        "        s = torch.einsum('bthd,bshd->bhts', q, k) / math.sqrt(q.shape[-1])\n"
        "        if mask is not None:\n"
        "            s = s.masked_fill(~mask, float('-inf'))\n"
        "        w = torch.softmax(s, dim=-1)\n"
        "        out = self.out_proj(merge_heads(torch.einsum('bhts,bshd->bhtd', w, v))).to(x.dtype)\n"
        "        return (out, w.to(x.dtype)) if return_weights else out\n"]),
]

# --------------------------------------------------------------------------- TransformerBlock (notebook 04)

_BLOCK_FORWARD = (
    "    def forward(self, x, mask=None):\n"
    "        if self.norm_placement == 'pre':\n"
    "            x = x + self.drop(self.attn(self.norm1(x), mask))\n"
    "            return x + self.drop(self.ffn(self.norm2(x)))\n"
    "        x = self.norm1(x + self.drop(self.attn(x, mask)))\n"
    "        return self.norm2(x + self.drop(self.ffn(x)))\n")

_BLOCK_INIT = (
    "    def __init__(self, d_model, num_heads, d_ff, norm_placement='pre', dropout=0.0):\n"
    "        super().__init__()\n"
    "        if norm_placement not in ('pre', 'post'):\n"
    "            raise ValueError(f'norm_placement: {norm_placement!r}')\n"
    "        self.norm_placement = norm_placement\n"
    "        self.drop = nn.Dropout(dropout)\n")

TRANSFORMER_BLOCK = [
    ("nanoGPT: a Block with its own LayerNorm(ndim, bias) helper class and an MLP, in one cell", [
        "class LayerNorm(nn.Module):\n"
        "    def __init__(self, ndim, bias):\n"
        "        super().__init__()\n"
        "        self.weight = nn.Parameter(torch.ones(ndim))\n"
        "        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None\n"
        "    def forward(self, input):\n"
        "        mu = input.mean(-1, keepdim=True)\n"
        "        y = (input - mu) * torch.rsqrt(input.var(-1, keepdim=True, unbiased=False) + 1e-5) * self.weight\n"
        "        return y if self.bias is None else y + self.bias\n"
        "\n"
        "class MLP(nn.Module):\n"
        "    def __init__(self, n_embd, d_ff):\n"
        "        super().__init__()\n"
        "        self.fc1 = nn.Linear(n_embd, d_ff)\n"
        "        self.fc2 = nn.Linear(d_ff, n_embd)\n"
        "    def forward(self, x):\n"
        "        return self.fc2(F.relu(self.fc1(x)))\n"
        "\n"
        "class TransformerBlock(nn.Module):\n"
        + _BLOCK_INIT +
        "        self.norm1 = LayerNorm(d_model, bias=True)\n"
        "        self.attn = MultiHeadAttention(d_model, num_heads)\n"
        "        self.norm2 = LayerNorm(d_model, bias=True)\n"
        "        self.ffn = MLP(d_model, d_ff)\n"
        + _BLOCK_FORWARD]),
    ("the notebook's own LayerNorm and FeedForward from earlier cells, a feed_forward helper named like"
     " nothing graded", [
        LAYER_NORM[0][1][0],
        FEED_FORWARD[1][1][0],
        "class TransformerBlock(nn.Module):\n"
        + _BLOCK_INIT +
        "        self.attn = MultiHeadAttention(d_model, num_heads)\n"
        "        self.ffn = FeedForward(d_model, d_ff)\n"
        "        self.norm1, self.norm2 = LayerNorm(d_model), LayerNorm(d_model)\n"
        + _BLOCK_FORWARD]),
    ("minGPT: ln_1/ln_2 aliases of norm1/norm2, mlp ModuleDict, lazy FFN layers", [
        "class TransformerBlock(nn.Module):\n"
        + _BLOCK_INIT +
        "        self.norm1 = self.ln_1 = mhsa_lib.LayerNorm(d_model)\n"
        "        self.attn = MultiHeadAttention(d_model, num_heads)\n"
        "        self.norm2 = self.ln_2 = mhsa_lib.LayerNorm(d_model)\n"
        "        self.ffn = nn.ModuleDict(dict(fc1=nn.LazyLinear(d_ff), act=nn.ReLU(), fc2=nn.LazyLinear(d_model)))\n"
        "        m = self.ffn\n"
        "        self.mlpf = lambda x: m.fc2(m.act(m.fc1(x)))\n"
        "    def forward(self, x, mask=None):\n"
        "        if self.norm_placement == 'pre':\n"
        "            x = x + self.drop(self.attn(self.ln_1(x), mask))\n"
        "            return x + self.drop(self.mlpf(self.ln_2(x)))\n"
        "        x = self.ln_1(x + self.drop(self.attn(x, mask)))\n"
        "        return self.ln_2(x + self.drop(self.mlpf(x)))\n"]),
]

#: The Annotated Transformer's block, with its LayerNorm of a_2 and b_2 (a genuine difference from
#: the spec, whose norm1 and norm2 have a weight and a bias): it costs exactly the structure part.
BLOCK_A2B2 = [
    LAYER_NORM_A2B2 +
    "\n"
    "class PositionwiseFeedForward(nn.Module):\n"
    "    def __init__(self, d_model, d_ff, dropout=0.0):\n"
    "        super().__init__()\n"
    "        self.fc1 = nn.Linear(d_model, d_ff)\n"
    "        self.fc2 = nn.Linear(d_ff, d_model)\n"
    "        self.dropout = nn.Dropout(dropout)\n"
    "    def forward(self, x):\n"
    "        return self.fc2(self.dropout(self.fc1(x).relu()))\n"
    "\n"
    "class TransformerBlock(nn.Module):\n"
    + _BLOCK_INIT +
    "        self.attn = MultiHeadAttention(d_model, num_heads)\n"
    "        self.ffn = PositionwiseFeedForward(d_model, d_ff)\n"
    "        self.norm1 = LayerNorm(d_model)\n"
    "        self.norm2 = LayerNorm(d_model)\n"
    "    def sublayer(self, x, norm, fn):\n"
    "        if self.norm_placement == 'pre':\n"
    "            return x + self.drop(fn(norm(x)))\n"
    "        return norm(x + self.drop(fn(x)))\n"
    "    def forward(self, x, mask=None):\n"
    "        x = self.sublayer(x, self.norm1, lambda x: self.attn(x, mask))\n"
    "        return self.sublayer(x, self.norm2, self.ffn)\n",
]

#: Hugging Face's GPT-2 stores its projections as Conv1D layers, weight (in, out) and x @ W + b:
#: not the spec's nn.Linear (a genuine difference, which costs exactly the structure part; the
#: checks give such a layer the reference's weights in its own layout).
CONV1D = (
    "class Conv1D(nn.Module):\n"
    "    def __init__(self, nf, nx):\n"
    "        super().__init__()\n"
    "        self.nf = nf\n"
    "        self.weight = nn.Parameter(torch.empty(nx, nf))\n"
    "        self.bias = nn.Parameter(torch.zeros(nf))\n"
    "        nn.init.normal_(self.weight, std=0.02)\n"
    "    def forward(self, x):\n"
    "        size_out = x.size()[:-1] + (self.nf,)\n"
    "        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)\n"
    "        return x.view(size_out)\n")
CONV1D_FEED_FORWARD = (
    "class FeedForward(nn.Module):\n"
    "    def __init__(self, d_model, d_ff, activation='relu'):\n"
    "        super().__init__()\n"
    "        if activation not in ('relu', 'gelu'):\n"
    "            raise ValueError(activation)\n"
    "        self.fc1 = Conv1D(d_ff, d_model)\n"
    "        self.fc2 = Conv1D(d_model, d_ff)\n"
    "        self.act = nn.ReLU() if activation == 'relu' else nn.GELU()\n"
    "    def forward(self, x):\n"
    "        return self.fc2(self.act(self.fc1(x)))\n")
CONV1D_MULTI_HEAD = (
    "class MultiHeadAttention(nn.Module):\n"
    + _MHA_INIT +
    "        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (Conv1D(d_model, d_model) for _ in range(4))\n"
    "    def forward(self, x, mask=None, return_weights=False):\n"
    "        q, k, v = (split_heads(f(x), self.n_head) for f in (self.q_proj, self.k_proj, self.v_proj))\n"
    "        o, w = scaled_dot_product_attention(q, k, v, mask)\n"
    "        out = self.out_proj(o.transpose(1, 2).flatten(2))\n"
    "        return (out, w) if return_weights else out\n")

#: nanoGPT's own attention fuses the three projections into one c_attn = nn.Linear(D, 3D) and
#: names the output projection c_proj: not the spec's four projections, so the check cannot give
#: it the reference's weights (a genuine difference it names).
NANOGPT_FUSED = (
    "class MultiHeadAttention(nn.Module):\n"
    + _MHA_INIT +
    "        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=bias)\n"
    "        self.c_proj = nn.Linear(d_model, d_model, bias=bias)\n"
    "        self.register_buffer('bias', torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64))\n"
    "    def forward(self, x, mask=None, return_weights=False):\n"
    "        B, T, C = x.size()\n"
    "        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)\n"
    "        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))\n"
    "        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))\n"
    "        if mask is not None:\n"
    "            att = att.masked_fill(~mask, float('-inf'))\n"
    "        att = F.softmax(att, dim=-1)\n"
    "        y = self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, C))\n"
    "        return (y, att) if return_weights else y\n")

# --------------------------------------------------------------------------- notebook 05

GQA_INIT = (
    "    def __init__(self, d_model, num_heads, num_kv_heads, bias=False):\n"
    "        super().__init__()\n"
    "        if d_model % num_heads:\n"
    "            raise ValueError(f'd_model={d_model}, num_heads={num_heads}')\n"
    "        if num_heads % num_kv_heads:\n"
    "            raise ValueError(f'num_heads={num_heads}, num_kv_heads={num_kv_heads}')\n"
    "        self.n_heads, self.n_kv_heads = num_heads, num_kv_heads\n"
    "        self.head_dim = d_model // num_heads\n"
    "        self.n_rep = num_heads // num_kv_heads\n")

_REPEAT_KV = (
    "def repeat_kv(x, n_rep):\n"
    "    bs, n_kv_heads, slen, head_dim = x.shape\n"
    "    if n_rep == 1:\n"
    "        return x\n"
    "    return x[:, :, None].expand(bs, n_kv_heads, n_rep, slen, head_dim).reshape(bs, -1, slen, head_dim)\n")

GROUPED_QUERY = [
    ("Llama: wq/wk/wv/wo aliases, (B, T, H, Dh) layout, a repeat_kv of the notebook's own in an earlier cell", [
        _REPEAT_KV,
        "class GroupedQueryAttention(nn.Module):\n"
        + GQA_INIT +
        "        self.q_proj = self.wq = nn.Linear(d_model, num_heads * self.head_dim, bias=bias)\n"
        "        self.k_proj = self.wk = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)\n"
        "        self.v_proj = self.wv = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)\n"
        "        self.out_proj = self.wo = nn.Linear(num_heads * self.head_dim, d_model, bias=bias)\n"
        "    def forward(self, x, mask=None, cache=None, *, causal=False):\n"
        "        bsz, seqlen, _ = x.shape\n"
        "        xq = self.wq(x).view(bsz, seqlen, self.n_heads, self.head_dim).transpose(1, 2)\n"
        "        xk = self.wk(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)\n"
        "        xv = self.wv(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)\n"
        "        if cache is not None:\n"
        "            xk, xv = cache.update(xk, xv)\n"
        "        keys, values = repeat_kv(xk, self.n_rep), repeat_kv(xv, self.n_rep)\n"
        "        scores = torch.matmul(xq, keys.transpose(2, 3)) / math.sqrt(self.head_dim)\n"
        "        if causal:\n"
        "            S = keys.shape[-2]\n"
        "            cm = torch.full((seqlen, S), float('-inf')).triu(S - seqlen + 1)\n"
        "            scores = scores + cm.to(scores.dtype)\n"
        "        if mask is not None:\n"
        "            scores = scores.masked_fill(~mask, float('-inf'))\n"
        "        scores = F.softmax(scores.float(), dim=-1).type_as(xq)\n"
        "        output = torch.matmul(scores, values).transpose(1, 2).contiguous().view(bsz, seqlen, -1)\n"
        "        return self.wo(output)\n"]),
    ("torchtune: a scaled_dot_product_attention helper with other arguments and expand-based repeat, one cell", [
        "def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False):\n"
        "    if is_causal:\n"
        "        T, S = q.shape[-2], k.shape[-2]\n"
        "        causal = torch.ones(T, S, dtype=torch.bool).tril(S - T)\n"
        "        mask = causal if mask is None else mask & causal\n"
        "    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
        "    if mask is not None:\n"
        "        s = s.masked_fill(~mask, float('-inf'))\n"
        "    return s.softmax(-1) @ v\n"
        "\n"
        "class GroupedQueryAttention(nn.Module):\n"
        + GQA_INIT +
        "        self.q_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.k_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)\n"
        "        self.v_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)\n"
        "        self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "    def forward(self, x, mask=None, cache=None, *, causal=False):\n"
        "        b, s_x, _ = x.shape\n"
        "        q = self.q_proj(x).view(b, s_x, self.n_kv_heads, self.n_rep, self.head_dim)\n"
        "        q = q.reshape(b, s_x, -1, self.head_dim).transpose(1, 2)\n"
        "        k = self.k_proj(x).view(b, s_x, self.n_kv_heads, self.head_dim).transpose(1, 2)\n"
        "        v = self.v_proj(x).view(b, s_x, self.n_kv_heads, self.head_dim).transpose(1, 2)\n"
        "        if cache is not None:\n"
        "            k, v = cache.update(k, v)\n"
        "        k = k.unsqueeze(2).expand(-1, -1, self.n_rep, -1, -1).flatten(1, 2)\n"
        "        v = v.unsqueeze(2).expand(-1, -1, self.n_rep, -1, -1).flatten(1, 2)\n"
        "        out = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=causal)\n"
        "        return self.out_proj(out.transpose(1, 2).reshape(b, s_x, -1))\n"]),
    ("d2l: LazyLinear projections, einsum grouped scores without repeating", [
        "class GroupedQueryAttention(nn.Module):\n"
        + GQA_INIT +
        "        self.q_proj = nn.LazyLinear(d_model, bias=bias)\n"
        "        self.k_proj = nn.LazyLinear(num_kv_heads * self.head_dim, bias=bias)\n"
        "        self.v_proj = nn.LazyLinear(num_kv_heads * self.head_dim, bias=bias)\n"
        "        self.out_proj = nn.LazyLinear(d_model, bias=bias)\n"
        "    def forward(self, x, mask=None, cache=None, *, causal=False):\n"
        "        B, T, D = x.shape\n"
        "        G, R, Dh = self.n_kv_heads, self.n_rep, self.head_dim\n"
        "        q = self.q_proj(x).view(B, T, G, R, Dh)\n"
        "        k = self.k_proj(x).view(B, T, G, Dh).transpose(1, 2)\n"
        "        v = self.v_proj(x).view(B, T, G, Dh).transpose(1, 2)\n"
        "        if cache is not None:\n"
        "            k, v = cache.update(k, v)\n"
        "        s = torch.einsum('btgrd,bgsd->bgrts', q, k) / math.sqrt(Dh)\n"
        "        S = k.shape[-2]\n"
        "        s = s.reshape(B, G * R, T, S)  # query head g * R + r shares K/V head g\n"
        "        if causal:\n"
        "            s = s.masked_fill(~causal_mask(T, S, device=x.device), float('-inf'))\n"
        "        if mask is not None:\n"
        "            s = s.masked_fill(~mask, float('-inf'))\n"
        "        out = torch.einsum('bgrts,bgsd->btgrd', s.softmax(-1).view(B, G, R, T, S), v)\n"
        "        return self.out_proj(out.reshape(B, T, D))\n"]),
]

KV_CACHE = [
    ("Hugging Face DynamicCache-like: lists of chunks, k and v as properties", [
        "class KVCache:\n"
        "    def __init__(self):\n"
        "        self.key_cache, self.value_cache = [], []\n"
        "    @property\n"
        "    def k(self):\n"
        "        return torch.cat(self.key_cache, dim=-2) if self.key_cache else None\n"
        "    @property\n"
        "    def v(self):\n"
        "        return torch.cat(self.value_cache, dim=-2) if self.value_cache else None\n"
        "    def __len__(self):\n"
        "        return sum(k.shape[-2] for k in self.key_cache)\n"
        "    def update(self, k, v):\n"
        "        self.key_cache.append(k)\n"
        "        self.value_cache.append(v)\n"
        "        return self.k, self.v\n"
        "    def reset(self):\n"
        "        self.key_cache.clear()\n"
        "        self.value_cache.clear()\n"]),
    ("Llama: a preallocated buffer that doubles, k and v as views of its filled part", [
        "class KVCache:\n"
        "    def __init__(self):\n"
        "        self.reset()\n"
        "    def reset(self):\n"
        "        self.cache_k = self.cache_v = None\n"
        "        self.n = 0\n"
        "    @property\n"
        "    def k(self):\n"
        "        return None if self.cache_k is None else self.cache_k[:, :, :self.n]\n"
        "    @property\n"
        "    def v(self):\n"
        "        return None if self.cache_v is None else self.cache_v[:, :, :self.n]\n"
        "    def __len__(self):\n"
        "        return self.n\n"
        "    def update(self, k, v):\n"
        "        assert k.shape == v.shape and k.dim() == 4\n"
        "        t = k.shape[-2]\n"
        "        if self.cache_k is None or self.n + t > self.cache_k.shape[-2]:\n"
        "            size = max(2 * (self.n + t), 8)\n"
        "            new_k = k.new_zeros(*k.shape[:2], size, k.shape[-1])\n"
        "            new_v = v.new_zeros(*v.shape[:2], size, v.shape[-1])\n"
        "            if self.cache_k is not None:\n"
        "                new_k[:, :, :self.n] = self.cache_k[:, :, :self.n]\n"
        "                new_v[:, :, :self.n] = self.cache_v[:, :, :self.n]\n"
        "            self.cache_k, self.cache_v = new_k, new_v\n"
        "        self.cache_k[:, :, self.n:self.n + t] = k\n"
        "        self.cache_v[:, :, self.n:self.n + t] = v\n"
        "        self.n += t\n"
        "        return self.k, self.v\n"]),
]

# --------------------------------------------------------------------------- RMSNorm, SwiGLU (notebook 04)

RMS_NORM = [
    ("Llama: _norm in float32, then type_as, weight times the result", [
        "class RMSNorm(torch.nn.Module):\n"
        "    def __init__(self, dim: int, eps: float = 1e-6):\n"
        "        super().__init__()\n"
        "        self.eps = eps\n"
        "        self.weight = nn.Parameter(torch.ones(dim))\n"
        "    def _norm(self, x):\n"
        "        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)\n"
        "    def forward(self, x):\n"
        "        output = self._norm(x.float()).type_as(x)\n"
        "        return output * self.weight\n"]),
    ("Hugging Face LlamaRMSNorm: variance_epsilon, hidden_states, to(input_dtype)", [
        "class RMSNorm(nn.Module):\n"
        "    def __init__(self, hidden_size, eps=1e-6):\n"
        "        super().__init__()\n"
        "        self.weight = nn.Parameter(torch.ones(hidden_size))\n"
        "        self.variance_epsilon = eps\n"
        "    def forward(self, hidden_states):\n"
        "        input_dtype = hidden_states.dtype\n"
        "        variance = hidden_states.to(torch.float64).pow(2).mean(-1, keepdim=True)\n"
        "        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)\n"
        "        return self.weight * hidden_states.to(input_dtype)\n"]),
]

SWIGLU = [
    ("Hugging Face LlamaMLP: act_fn = nn.SiLU(), gate/up/down names", [
        "class SwiGLUFeedForward(nn.Module):\n"
        "    def __init__(self, hidden_size, intermediate_size):\n"
        "        super().__init__()\n"
        "        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)\n"
        "        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)\n"
        "        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)\n"
        "        self.act_fn = nn.SiLU()\n"
        "    def forward(self, x):\n"
        "        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))\n"]),
    ("einsum with the weights, SiLU as x * sigmoid(x), assert-style validation", [
        "class SwiGLUFeedForward(nn.Module):\n"
        "    def __init__(self, d_model, d_ff):\n"
        "        super().__init__()\n"
        "        assert d_model > 0 and d_ff > 0\n"
        "        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)\n"
        "        self.up_proj = nn.Linear(d_model, d_ff, bias=False)\n"
        "        self.down_proj = nn.Linear(d_ff, d_model, bias=False)\n"
        "    def forward(self, x):\n"
        "        g = torch.einsum('...d,fd->...f', x, self.gate_proj.weight)\n"
        "        u = torch.einsum('...d,fd->...f', x, self.up_proj.weight)\n"
        "        return torch.einsum('...f,df->...d', g * torch.sigmoid(g) * u, self.down_proj.weight)\n"]),
]

# --------------------------------------------------------------------------- CrossAttention (notebook 03)

CROSS_ATTENTION = [
    ("Annotated Transformer: src_attn(x, memory, memory, src_mask), view/transpose, masked_fill(mask == 0)", [
        "class CrossAttention(nn.Module):\n"
        "    def __init__(self, d_model, num_heads, bias=True):\n"
        "        super().__init__()\n"
        "        assert_ok = d_model % num_heads == 0\n"
        "        if not assert_ok:\n"
        "            raise ValueError(f'd_model={d_model} is not a multiple of num_heads={num_heads}')\n"
        "        self.h, self.d_k = num_heads, d_model // num_heads\n"
        "        self.q_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.k_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.v_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "    def _attention(self, query, key, value, mask=None):\n"
        "        scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(query.size(-1))\n"
        "        if mask is not None:\n"
        "            scores = scores.masked_fill(mask == 0, -1e9)\n"
        "        p_attn = scores.softmax(dim=-1)\n"
        "        return torch.matmul(p_attn, value), p_attn\n"
        "    def forward(self, x, memory, memory_mask=None, return_weights=False):\n"
        "        nbatches = x.size(0)\n"
        "        query = self.q_proj(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)\n"
        "        key = self.k_proj(memory).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)\n"
        "        value = self.v_proj(memory).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)\n"
        "        out, attn = self._attention(query, key, value, mask=memory_mask)\n"
        "        out = out.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)\n"
        "        out = self.out_proj(out)\n"
        "        return (out, attn) if return_weights else out\n"]),
    ("einsum everywhere, heads unflattened from the feature axis, ~mask with -inf", [
        "class CrossAttention(nn.Module):\n"
        "    def __init__(self, d_model, num_heads, bias=True):\n"
        "        super().__init__()\n"
        "        if d_model % num_heads:\n"
        "            raise ValueError('num_heads must divide d_model')\n"
        "        self.num_heads = num_heads\n"
        "        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (\n"
        "            nn.Linear(d_model, d_model, bias=bias) for _ in range(4))\n"
        "    def forward(self, x, memory, memory_mask=None, return_weights=False):\n"
        "        h = self.num_heads\n"
        "        q = self.q_proj(x).unflatten(-1, (h, -1))\n"
        "        k = self.k_proj(memory).unflatten(-1, (h, -1))\n"
        "        v = self.v_proj(memory).unflatten(-1, (h, -1))\n"
        "        scores = torch.einsum('bthe,bshe->bhts', q, k) * q.shape[-1] ** -0.5\n"
        "        if memory_mask is not None:\n"
        "            scores = scores.masked_fill(~memory_mask, float('-inf'))\n"
        "        weights = torch.softmax(scores, dim=-1)\n"
        "        out = torch.einsum('bhts,bshe->bthe', weights, v).flatten(-2)\n"
        "        out = self.out_proj(out)\n"
        "        return (out, weights) if return_weights else out\n"]),
]

#: step -> (notebook, [(style, cells)])
MODULE_STYLES = {
    "LayerNorm": ("04", LAYER_NORM),
    "FeedForward": ("04", FEED_FORWARD),
    "MultiHeadAttention": ("03", MULTI_HEAD),
    "CrossAttention": ("03", CROSS_ATTENTION),
    "TransformerBlock": ("04", TRANSFORMER_BLOCK),
    "RMSNorm": ("04", RMS_NORM),
    "SwiGLUFeedForward": ("04", SWIGLU),
    "GroupedQueryAttention": ("05", GROUPED_QUERY),
    "KVCache": ("05", KV_CACHE),
}
