"""No false failures on correct code of any style.

Every function step and every module step is answered correctly in the styles of well-known code
bases (tests/styles: nanoGPT, minGPT, the Annotated Transformer, d2l, Hugging Face's GPT-2,
Llama/torchtune, einsum everywhere, assert-style validation, float64, helpers named like other
steps), run as notebook cells; each earns full marks with no note that blames an earlier step.
Where a style differs from the spec for real, it loses exactly the part that says so.

The isolation (an earlier step that fails its own check is swapped for the reference while a later
step is checked) swaps only the learner's answer to that earlier step, never a helper that shares
its name, and never where the swap would cost points; and every module check gives a result, never
an exception, for any nn.Module a learner can build (lazy layers, parametrizations, weight norm,
buffers, containers, hooks, float64, **kwargs, tuple outputs)."""

from __future__ import annotations

import pytest
import torch
from conftest import run_check
from styles import run_cells
from styles.functions import FUNCTION_STYLES
from styles.modules import (
    BLOCK_A2B2,
    CONV1D,
    CONV1D_FEED_FORWARD,
    CONV1D_MULTI_HEAD,
    GQA_INIT,
    LAYER_NORM_A2B2,
    MODULE_STYLES,
    NANOGPT_FUSED,
)
from torch import nn

import autograder
import autograder.checks  # registers every step
import mhsa_lib
from autograder.frame.registry import answers_step, get

SWAP_NOTE = "does not pass its own check yet"


def _check(step: str):
    return getattr(autograder, get(step).check_name)


def _cases(styles: dict):
    return [pytest.param(step, notebook, cells, id=f"{step}: {style}")
            for step, (notebook, entries) in styles.items() for style, cells in entries]


def _full_marks(step: str, obj, capsys, seed: int = 1):
    points, report = run_check(_check(step), obj, capsys, seed=seed)
    assert points == get(step).points, report
    assert SWAP_NOTE not in report, report
    return report


@pytest.mark.parametrize("step, notebook, cells", _cases(FUNCTION_STYLES))
def test_function_steps_in_every_style_earn_full_marks(step, notebook, cells, capsys):
    namespace = run_cells(notebook, cells)
    _full_marks(step, namespace[step], capsys)


@pytest.mark.parametrize("step, notebook, cells", _cases(MODULE_STYLES))
def test_module_steps_in_every_style_earn_full_marks(step, notebook, cells, capsys):
    namespace = run_cells(notebook, cells)
    _full_marks(step, namespace[step], capsys)


def test_every_function_and_module_step_has_styles():
    graded = {s.name for s in autograder.frame.steps() if s.kind in ("function", "module", "warmup")}
    assert graded <= set(FUNCTION_STYLES) | set(MODULE_STYLES), graded - set(FUNCTION_STYLES) - set(MODULE_STYLES)
    assert all(len(entries) >= 2 for _, entries in {**FUNCTION_STYLES, **MODULE_STYLES}.values())


def test_a_layer_norm_with_a2_b2_loses_only_the_structure_part(capsys):
    """The Annotated Transformer's names for the gain and shift are not the spec's weight and bias:
    the structure part says so; the rest (its values are found by position) holds."""
    namespace = run_cells("04", [LAYER_NORM_A2B2])
    points, report = run_check(autograder.check_layer_norm, namespace["LayerNorm"], capsys, seed=1)
    assert points == 2.57, report
    assert "no nn.Parameter named weight" in report and "no nn.Parameter named bias" in report
    assert report.count("✗") == 1


def test_an_annotated_transformer_block_loses_only_the_structure_part(capsys):
    """Its own LayerNorm (a_2, b_2) written in the block's cell is part of the block: never swapped
    for mhsa_lib's, no note; the structure part says the norms have no weight; the wiring is right."""
    namespace = run_cells("04", BLOCK_A2B2)
    points, report = run_check(autograder.check_transformer_block, namespace["TransformerBlock"], capsys, seed=1)
    assert points == 4.55, report
    assert "norm1 is missing or has no weight" in report
    assert SWAP_NOTE not in report and report.count("✗") == 1


@pytest.mark.parametrize("step, cells, points", [
    ("FeedForward", [CONV1D, CONV1D_FEED_FORWARD], 1.75),
    ("MultiHeadAttention", [CONV1D, CONV1D_MULTI_HEAD], 5.4),
], ids=["FeedForward", "MultiHeadAttention"])
def test_gpt2_conv1d_layers_lose_only_the_structure_part(step, cells, points, capsys):
    """GPT-2's Conv1D layers (weight stored (in, out)) are not the spec's nn.Linear: the structure
    part says so; the values, masks and head probes all hold (the reference's weights reach the
    layers in their own layout)."""
    namespace = run_cells("03", cells)
    got, report = run_check(_check(step), namespace[step], capsys, seed=1)
    assert got == points, report
    assert "fc1 is Conv1D" in report or "q_proj is Conv1D" in report
    assert report.count("✗") == 1 and SWAP_NOTE not in report


def test_nanogpts_fused_c_attn_is_named_as_the_difference_it_is(capsys):
    """One fused c_attn (D, 3D) and a c_proj instead of the spec's q_proj, k_proj, v_proj and
    out_proj: the reference's weights reach it by rows, so it computes the right function and loses
    only the structure part, which says exactly what differs; no exception, no note."""
    namespace = run_cells("03", [NANOGPT_FUSED])
    points, report = run_check(autograder.check_multi_head_attention, namespace["MultiHeadAttention"], capsys,
                               seed=1)
    assert points == pytest.approx(5.4), report
    assert "q_proj is NoneType, expected nn.Linear(12, 12)" in report
    assert "✓ public case" in report and "each head uses its own rows" in report
    assert SWAP_NOTE not in report


# --------------------------------------------------------------------------- the isolation


_MHA_USING = (
    "class MultiHeadAttention(nn.Module):\n"
    "    def __init__(self, d_model, num_heads, bias=True):\n"
    "        super().__init__()\n"
    "        if d_model % num_heads:\n"
    "            raise ValueError('d_model')\n"
    "        self.h = num_heads\n"
    "        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (\n"
    "            nn.Linear(d_model, d_model, bias=bias) for _ in range(4))\n"
    "    def forward(self, x, mask=None, return_weights=False):\n"
    "{body}"
    "        out = self.out_proj(merge_heads(o))\n"
    "        return (out, w) if return_weights else out\n")
_STANDARD_BODY = (
    "        q, k, v = (split_heads(f(x), self.h) for f in (self.q_proj, self.k_proj, self.v_proj))\n"
    "        o, w = scaled_dot_product_attention(q, k, v, mask)\n")
_MERGE_NO_TRANSPOSE = "def merge_heads(x):\n    b, h, t, d = x.shape\n    return x.reshape(b, t, h * d)\n"
_MERGE_RIGHT = "def merge_heads(x):\n    return x.transpose(1, 2).flatten(2)\n"


def test_a_wrong_earlier_answer_in_its_own_cell_is_swapped_and_said(capsys):
    """The notebook's own merge_heads, answered wrongly in its cell: the module is checked with
    mhsa_lib's merge_heads, earns full marks for itself, and the report says why."""
    namespace = run_cells("03", [_MERGE_NO_TRANSPOSE, _MHA_USING.format(body=_STANDARD_BODY)])
    points, report = run_check(autograder.check_multi_head_attention, namespace["MultiHeadAttention"], capsys,
                               seed=2)
    assert points == 6.0, report
    assert f"your merge_heads {SWAP_NOTE}" in report
    assert namespace["merge_heads"].__module__ == "__main__"  # the learner's own is put back


def test_a_wrong_helper_written_in_the_answers_own_cell_is_part_of_the_answer(capsys):
    """The same wrong merge_heads, written in the module's own cell: it is the module's code, the
    module is wrong, and no note blames an earlier step."""
    namespace = run_cells("03", [_MERGE_NO_TRANSPOSE + "\n" + _MHA_USING.format(body=_STANDARD_BODY)])
    points, report = run_check(autograder.check_multi_head_attention, namespace["MultiHeadAttention"], capsys,
                               seed=2)
    assert points < 6.0, report
    assert SWAP_NOTE not in report


def test_a_same_named_helper_of_another_layout_is_never_swapped_in_where_it_costs(capsys):
    """split_heads redefined in its own cell with the step's signature but the (B, T, H, Dh) layout
    (it fails split_heads' check), used consistently by a correct module: swapping in mhsa_lib's
    would break the module, so the check keeps the learner's, full marks, no note."""
    helper = "def split_heads(x, num_heads):\n    return x.unflatten(-1, (num_heads, -1))\n"
    body = ("        q, k, v = (split_heads(f(x), self.h).transpose(1, 2)\n"
            "                   for f in (self.q_proj, self.k_proj, self.v_proj))\n"
            "        o, w = scaled_dot_product_attention(q, k, v, mask)\n")
    namespace = run_cells("03", [_MERGE_RIGHT, helper, _MHA_USING.format(body=body)])
    assert autograder.check_split_heads(namespace["split_heads"], seed=0, quiet=True) < 3.0
    report = _full_marks("MultiHeadAttention", namespace["MultiHeadAttention"], capsys, seed=3)
    assert "split_heads" not in report


def test_llamas_repeat_kv_on_its_own_layout_keeps_a_correct_gqa_whole(capsys):
    """Llama's repeat_kv repeats axis 2 of its (B, S, G, Dh) layout: in a cell of its own, with the
    step's name and signature, it is the notebook's repeat_kv answer and fails that check; the GQA
    built on it (in Llama's layout) is right, and swapping mhsa_lib's in would break it, so the
    check keeps the learner's: full marks, no note."""
    helper = ("def repeat_kv(x, n_rep):\n"
              "    bs, slen, n_kv_heads, head_dim = x.shape\n"
              "    if n_rep == 1:\n"
              "        return x\n"
              "    return (x[:, :, :, None, :].expand(bs, slen, n_kv_heads, n_rep, head_dim)\n"
              "            .reshape(bs, slen, n_kv_heads * n_rep, head_dim))\n")
    gqa = ("class GroupedQueryAttention(nn.Module):\n" + GQA_INIT +
           "        self.q_proj = nn.Linear(d_model, d_model, bias=bias)\n"
           "        self.k_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)\n"
           "        self.v_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)\n"
           "        self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
           "    def forward(self, x, mask=None, cache=None, *, causal=False):\n"
           "        b, t, _ = x.shape\n"
           "        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)\n"
           "        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim)\n"
           "        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim)\n"
           "        if cache is not None:\n"
           "            k, v = cache.update(k.transpose(1, 2), v.transpose(1, 2))\n"
           "            k, v = k.transpose(1, 2), v.transpose(1, 2)\n"
           "        k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)  # (B, S, H, Dh)\n"
           "        if causal:\n"
           "            lower = causal_mask(t, k.shape[1], device=x.device)\n"
           "            mask = lower if mask is None else mask & lower\n"
           "        out, _ = scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)\n"
           "        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))\n")
    namespace = run_cells("05", [helper, gqa])
    assert answers_step(namespace["repeat_kv"], get("repeat_kv"), namespace["GroupedQueryAttention"])
    assert autograder.check_repeat_kv(namespace["repeat_kv"], seed=0, quiet=True) < 2.0
    _full_marks("GroupedQueryAttention", namespace["GroupedQueryAttention"], capsys, seed=6)


def test_a_helper_with_torchs_arguments_in_another_cell_is_not_the_step(capsys):
    """scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False) returning
    only the output, in a cell of its own: another signature, so never checked as the notebook-01
    step nor swapped."""
    helper = ("def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False):\n"
              "    s = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])\n"
              "    if attn_mask is not None:\n"
              "        s = s.masked_fill(~attn_mask, float('-inf'))\n"
              "    return s.softmax(-1) @ value\n")
    body = ("        q, k, v = (split_heads(f(x), self.h) for f in (self.q_proj, self.k_proj, self.v_proj))\n"
            "        o = scaled_dot_product_attention(q, k, v, attn_mask=mask)\n"
            "        w = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(\n"
            "            ~mask if mask is not None else torch.zeros((), dtype=torch.bool), float('-inf')).softmax(-1)\n")
    namespace = run_cells("03", [_MERGE_RIGHT, helper, _MHA_USING.format(body=body)])
    assert not answers_step(namespace["scaled_dot_product_attention"], get("scaled_dot_product_attention"),
                            namespace["MultiHeadAttention"])
    _full_marks("MultiHeadAttention", namespace["MultiHeadAttention"], capsys, seed=4)


def test_what_counts_as_the_answer_to_an_earlier_step():
    namespace = run_cells("04", [
        "class LayerNorm(nn.Module):\n    def __init__(self, d_model, eps=1e-5):\n        super().__init__()\n",
        "class Helper(nn.Module):\n    def __init__(self, ndim, bias):\n        super().__init__()\n",
        "def FeedForward(d_model, d_ff, activation='relu'):\n    return None\n",
        "class Block(nn.Module):\n    def forward(self, x):\n        return x\n\nclass Norm(nn.Module):\n"
        "    def __init__(self, d_model, eps=1e-5):\n        super().__init__()\n",
    ])
    ln, ffn = get("LayerNorm"), get("FeedForward")
    block = namespace["Block"]
    assert answers_step(namespace["LayerNorm"], ln, block)  # own cell, the step's signature and kind
    assert not answers_step(namespace["Helper"], ln, block)  # another signature
    assert not answers_step(namespace["FeedForward"], ffn, block)  # a function for a class step
    assert not answers_step(namespace["Norm"], ln, block)  # written in the block's own cell
    assert not answers_step(nn.LayerNorm, ln, block)  # torch's
    assert not answers_step(mhsa_lib.LayerNorm, ln, block)  # the library's
    assert not answers_step(torch.softmax, get("softmax"), block)  # a builtin


# --------------------------------------------------------------------------- any nn.Module


_ODD_MODULES = {
    "forward returns a tuple, like nn.MultiheadAttention": (
        "class Odd(nn.Module):\n"
        "    def __init__(self, d_model, *args, **kwargs):\n"
        "        super().__init__()\n"
        "        self.mha = nn.MultiheadAttention(d_model, 1, batch_first=True)\n"
        "    def forward(self, x, *args, **kwargs):\n"
        "        return self.mha(x, x, x)\n"),
    "lazy layers whose forward needs a keyword argument": (
        "class Odd(nn.Module):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        super().__init__()\n"
        "        self.q_proj = nn.LazyLinear(4)\n"
        "    def forward(self, x, mask=None, *, scale):\n"
        "        return self.q_proj(x) * scale\n"),
    "a parametrization without right_inverse, an old-style weight norm, a raising hook": (
        "class Twice(nn.Module):\n"
        "    def forward(self, w):\n"
        "        return 2 * w\n"
        "\n"
        "class Odd(nn.Module):\n"
        "    def __init__(self, d_model, *args, **kwargs):\n"
        "        super().__init__()\n"
        "        self.q_proj = nn.Linear(d_model, d_model)\n"
        "        nn.utils.parametrize.register_parametrization(self.q_proj, 'weight', Twice())\n"
        "        self.out_proj = nn.utils.weight_norm(nn.Linear(d_model, d_model))\n"
        "        self.register_buffer('steps', torch.zeros(()))\n"
        "        self.register_forward_pre_hook(lambda m, a: None if m.steps.add_(1) < 5 else 1 / 0)\n"
        "    def forward(self, x, mask=None, **kwargs):\n"
        "        return self.out_proj(self.q_proj(x))\n"),
    "float64 layers in containers that return the wrong width": (
        "class Odd(nn.Module):\n"
        "    def __init__(self, d_model, *args, **kwargs):\n"
        "        super().__init__()\n"
        "        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(d_model, 3, dtype=torch.float64))])\n"
        "        self.extra = nn.ModuleDict({'norm': nn.LayerNorm(3)})\n"
        "    def forward(self, x, mask=None, **kwargs):\n"
        "        return self.extra['norm'](self.layers[0](x.double()))\n"),
}

_MODULE_CHECKS = ["LayerNorm", "FeedForward", "MultiHeadAttention", "TransformerBlock", "GroupedQueryAttention",
                  "FixedBlock", "FixedAttention", "StableEncoder", "FastCausalAttention"]


@pytest.mark.parametrize("odd", list(_ODD_MODULES))
@pytest.mark.parametrize("step", _MODULE_CHECKS)
def test_every_module_check_survives_any_module(step, odd, capsys):
    namespace = run_cells("05", [_ODD_MODULES[odd]])
    points, report = run_check(_check(step), namespace["Odd"], capsys, seed=5)
    assert 0.0 <= points < get(step).points, report
    assert "✗" in report  # the report says what is wrong


# --------------------------------------------------------------------------- in a real kernel


_KERNEL_LAYER_NORM_WRONG = (  # the notebook's LayerNorm step, answered wrongly (divides by D - 1)
    "class LayerNorm(nn.Module):\n"
    "    def __init__(self, d_model, eps=1e-5):\n"
    "        super().__init__()\n"
    "        self.eps = eps\n"
    "        self.weight = nn.Parameter(torch.ones(d_model))\n"
    "        self.bias = nn.Parameter(torch.zeros(d_model))\n"
    "    def forward(self, x):\n"
    "        mu, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)\n"
    "        return (x - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias\n")
_KERNEL_BLOCK_USING_ANSWERS = (
    "class UsesTheAnswers(nn.Module):\n"
    "    def __init__(self, d_model, num_heads, d_ff, norm_placement='pre', dropout=0.0):\n"
    "        super().__init__()\n"
    "        self.norm_placement = norm_placement\n"
    "        self.attn = MultiHeadAttention(d_model, num_heads)\n"
    "        self.ffn = mhsa_lib.FeedForward(d_model, d_ff)\n"
    "        self.norm1, self.norm2 = LayerNorm(d_model), LayerNorm(d_model)\n"
    "        self.drop = nn.Dropout(dropout)\n"
    "    def forward(self, x, mask=None):\n"
    "        if self.norm_placement == 'pre':\n"
    "            x = x + self.drop(self.attn(self.norm1(x), mask))\n"
    "            return x + self.drop(self.ffn(self.norm2(x)))\n"
    "        x = self.norm1(x + self.drop(self.attn(x, mask)))\n"
    "        return self.norm2(x + self.drop(self.ffn(x)))\n")


@pytest.mark.slow
def test_in_a_kernel_the_isolation_tells_answers_from_helpers(tmp_path):
    """``./course check`` runs the cells in a Jupyter kernel: a block built on the notebook's wrong
    LayerNorm answer (its own cell) is checked with mhsa_lib's and says so; nanoGPT's block, with
    its own LayerNorm(ndim, bias) helper in its cell (which rebinds the name), earns full marks and
    no note."""
    import json

    from conftest import code, graded_cell, notebook, run_cli, solution, write
    from styles.modules import TRANSFORMER_BLOCK

    nanogpt = dict(TRANSFORMER_BLOCK)["nanoGPT: a Block with its own LayerNorm(ndim, bias) helper class and an MLP, "
                                      "in one cell"][0]
    cells = [
        code("import torch\nfrom torch import nn\nimport torch.nn.functional as F\nimport mhsa_lib\n"
             "from mhsa_lib import MultiHeadAttention\n"
             "from autograder import check_layer_norm, check_transformer_block\n"),
        solution("LayerNorm", _KERNEL_LAYER_NORM_WRONG),
        graded_cell("check_layer_norm", 3, "check_layer_norm(LayerNorm, seed=1)"),
        solution("UsesTheAnswers", _KERNEL_BLOCK_USING_ANSWERS),
        graded_cell("check_uses_the_answers", 5, "check_transformer_block(UsesTheAnswers, seed=1)"),
        solution("TransformerBlock", nanogpt),
        graded_cell("check_transformer_block", 5, "check_transformer_block(TransformerBlock, seed=1)"),
    ]
    path = write(notebook(cells), tmp_path / "styles.ipynb")
    proc = run_cli("check", path, "--json", "--timeout", "120", timeout=600)
    assert proc.returncode == 0, proc.stderr
    steps = {s["id"]: s for s in json.loads(proc.stdout)["steps"]}
    assert steps["check_layer_norm"]["points"] < 3.0
    uses, nano = steps["check_uses_the_answers"], steps["check_transformer_block"]
    assert uses["points"] == 5.0 and f"your LayerNorm {SWAP_NOTE}" in " ".join(uses["message"].split()), uses
    assert nano["points"] == 5.0 and SWAP_NOTE not in nano["message"], nano
