"""Correct answers to the course's steps written the way well-known code bases write them (nanoGPT,
minGPT, the Annotated Transformer, d2l, Hugging Face's GPT-2, Llama and torchtune), each our own
code in that style, never copied. Each answer is a list of notebook cells (source text) run the way
a Jupyter kernel runs them: every cell compiled from a file of its own, as IPython names it, into
one namespace that starts with the notebook's own set-up (its imports, and the library steps it
takes from ``mhsa_lib``)."""

from __future__ import annotations

from typing import Dict, Sequence

#: What each notebook's set-up cell puts in the namespace before the learner's answers.
SETUP: Dict[str, str] = {
    "00": "import math\nimport torch\n",
    "01": "import math\nimport torch\nimport torch.nn.functional as F\nimport mhsa_lib\n",
    "02": "import math\nimport torch\nimport mhsa_lib\nfrom mhsa_lib import scaled_dot_product_attention\n",
    "03": ("import math\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\nimport mhsa_lib\n"
           "from mhsa_lib import scaled_dot_product_attention\nfrom mhsa_lib import split_heads\n"),
    "04": ("import math\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\nimport mhsa_lib\n"
           "from mhsa_lib import MultiHeadAttention\n"),
    "05": ("import math\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\nimport mhsa_lib\n"
           "from mhsa_lib import causal_mask\nfrom mhsa_lib import merge_heads, split_heads\n"
           "from mhsa_lib import scaled_dot_product_attention\n"),
    "07": "import math\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\nimport mhsa_lib\n",
    "08": "import math\nimport torch\nimport torch.nn.functional as F\nimport mhsa_lib\n",
}

_KERNEL = 40417  # the cells' files live in /tmp/ipykernel_<this>/, as a Jupyter kernel's do


def run_cells(notebook: str, cells: Sequence[str]) -> dict:
    """The namespace of a notebook after its set-up cell and then ``cells``, each cell compiled
    from its own file (so code knows which cell defined it, as in a kernel)."""
    if notebook not in SETUP:
        raise ValueError(f"notebook: expected one of {sorted(SETUP)}, got {notebook!r}")
    namespace: dict = {"__name__": "__main__"}
    for i, source in enumerate([SETUP[notebook], *cells]):
        exec(compile(source, f"/tmp/ipykernel_{_KERNEL}/{notebook}_{i}_{abs(hash(source)) % 10**8}.py", "exec"),
             namespace)
    return namespace
