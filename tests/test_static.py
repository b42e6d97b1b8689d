"""Reading a submission's source for forbidden shortcuts (autograder.grading.static): every way a
learner writes a forbidden call is found, the course's own solutions and allowed uses never are."""

from __future__ import annotations

import nbformat
import pytest
from conftest import SOLUTIONS

import autograder.checks  # noqa: F401  (registers every step)
from autograder.frame import get
from autograder.grading import judging
from autograder.grading import nbgrader_tools as nbt
from autograder.grading.static import shortcuts_in_source


def _nb(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def found(step, subject, *sources):
    nb = _nb(*sources)
    return shortcuts_in_source(nb, len(nb.cells), subject, get(step).forbidden)


@pytest.mark.parametrize("sources,words", [
    (("import torch\ndef softmax(x, dim=-1):\n    return torch.softmax(x, dim)",), "torch's softmax"),
    (("import torch.nn.functional as F\ndef softmax(x, dim=-1):\n    return F.softmax(x, dim=dim)",), "torch's softmax"),
    (("def softmax(x, dim=-1):\n    return x.softmax(dim)",), "torch's softmax"),
    (("from torch.nn.functional import softmax as sm\ndef softmax(x, dim=-1):\n    return sm(x, dim)",),
     "torch's softmax"),
    (("import torch\ndef _norm(x, d):\n    return torch.log_softmax(x, d).exp()",
      "def softmax(x, dim=-1):\n    return _norm(x, dim)"), "torch's log_softmax"),
    (("import mhsa_lib\ndef softmax(x, dim=-1):\n    return mhsa_lib.softmax(x, dim)",), "mhsa_lib (softmax)"),
    (("from mhsa_lib import softmax as ref\ndef softmax(x, dim=-1):\n    return ref(x, dim)",), "mhsa_lib (softmax)"),
    (("%matplotlib inline\nimport torch\nsoftmax = lambda x, dim=-1: torch.softmax(x, dim)",), "torch's softmax"),
])
def test_forbidden_softmax_written_many_ways(sources, words):
    assert words in found("softmax", "softmax", *sources)


def test_allowed_uses_are_not_flagged():
    attention = ("import torch, math, mhsa_lib\n"
                 "def softmax(x, dim=-1):\n    e = torch.exp(x - x.amax(dim, keepdim=True))\n"
                 "    return e / e.sum(dim, keepdim=True)\n"
                 "def scaled_dot_product_attention(q, k, v, mask=None):\n"
                 "    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
                 "    w = torch.softmax(s, dim=-1) if mask is None else softmax(s.masked_fill(~mask, -1e9))\n"
                 "    return w @ v, w\n")
    assert found("scaled_dot_product_attention", "scaled_dot_product_attention", attention) == []
    assert found("softmax", "softmax", attention) == []
    mha = ("import torch\nfrom torch import nn\nfrom mhsa_lib import scaled_dot_product_attention, split_heads\n"
           "class MultiHeadAttention(nn.Module):\n"
           "    def forward(self, x, mask=None):\n"
           "        return scaled_dot_product_attention(split_heads(x, 2), split_heads(x, 2), split_heads(x, 2))\n")
    assert found("MultiHeadAttention", "MultiHeadAttention", mha) == []


def test_forbidden_uses_in_other_steps():
    assert found("scaled_dot_product_attention", "scaled_dot_product_attention",
                 "import torch.nn.functional as F\ndef scaled_dot_product_attention(q, k, v, mask=None):\n"
                 "    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None") \
        == ["torch's scaled_dot_product_attention"]
    assert found("causal_mask", "causal_mask", "import mhsa_lib\ndef causal_mask(t, s=None):\n"
                 "    return mhsa_lib.causal_mask(t, s)") == ["mhsa_lib (causal_mask)"]
    assert "torch's MultiheadAttention" in found(
        "MultiHeadAttention", "MultiHeadAttention",
        "from torch import nn\nclass MultiHeadAttention(nn.Module):\n    def __init__(self, d, h):\n"
        "        super().__init__()\n        self.inner = nn.MultiheadAttention(d, h, batch_first=True)\n")
    assert found("LayerNorm", "LayerNorm", "import torch.nn.functional as F\nfrom torch import nn\n"
                 "class LayerNorm(nn.Module):\n    def forward(self, x):\n"
                 "        return F.layer_norm(x, x.shape[-1:])") == ["torch's layer_norm"]


def test_the_last_definition_before_the_test_cell_counts():
    nb = _nb("import torch\ndef softmax(x, dim=-1):\n    return torch.softmax(x, dim)",
             "def softmax(x, dim=-1):\n    e = (x - x.amax(dim, keepdim=True)).exp()\n    return e / e.sum(dim, keepdim=True)",
             "import torch\ndef softmax(x, dim=-1):\n    return torch.softmax(x, dim)")
    assert shortcuts_in_source(nb, 2, "softmax", get("softmax").forbidden) == []
    assert shortcuts_in_source(nb, 3, "softmax", get("softmax").forbidden) == ["torch's softmax"]


@pytest.mark.parametrize("path", sorted(SOLUTIONS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_the_course_solutions_use_no_shortcut(path):
    nb = nbformat.read(str(path), as_version=4)
    calls = judging.plan(nb)
    assert calls, "every course notebook has judged test cells"
    assert judging.shortcuts_in(nb, calls) == {}, [nbt.grade_id(c) for c in nb.cells if nbt.is_test_cell(c)]
