"""The "yours vs reference" pictures of the feedback pages: every step that has one draws it from
a correct answer, from a wrong one, and gives none (without raising) when the answer cannot even
be called. Run here in a plain namespace standing in for the grading kernel."""

from __future__ import annotations

import base64
import json
import re
import types

import pytest
import torch
from conftest import SOLUTIONS

import mhsa_lib
from autograder.grading import worker


def _attention_heads(x, w_q, w_k, w_v, num_heads, mask=None):
    q, k, v = (mhsa_lib.split_heads(x @ w.T, num_heads) for w in (w_q, w_k, w_v))
    return mhsa_lib.attend_heads(q, k, v, mask)[0]


def _attention_heads_loop(x, w_q, w_k, w_v, mask=None):
    heads = [mhsa_lib.scaled_dot_product_attention(x @ a.T, x @ b.T, x @ c.T, mask)[0] for a, b, c in zip(w_q, w_k, w_v)]
    return torch.stack(heads, dim=1)


#: A correct answer of each pictured step, written as a learner might (not always mhsa_lib's code).
CORRECT = {
    "check_pairwise_scores": lambda q, k: torch.einsum("btd,bsd->bts", q, k),
    "check_softmax": lambda x, dim=-1: torch.softmax(x, dim=dim),
    "check_scaled_dot_product_attention": mhsa_lib.scaled_dot_product_attention,
    "check_causal_mask": lambda t, s=None, *, device=None: mhsa_lib.causal_mask(t, s, device=device),
    "check_split_heads": lambda x, h: x.reshape(x.shape[0], x.shape[1], h, -1).permute(0, 2, 1, 3),
    "check_merge_heads": mhsa_lib.merge_heads,
    "check_attention_heads": _attention_heads,
    "check_attention_heads_loop": _attention_heads_loop,
    "check_repeat_kv": lambda x, n: x.repeat_interleave(n, dim=1),
    "check_sinusoidal_positional_encoding": lambda t, d: mhsa_lib.sinusoidal_positional_encoding(t, d),
}

#: A typical mistake of each: still drawable, and different from the reference.
WRONG = {
    "check_pairwise_scores": lambda q, k: q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5,
    "check_softmax": lambda x, dim=-1: torch.softmax(x, dim=0),
    "check_scaled_dot_product_attention": lambda q, k, v, mask=None: (
        (lambda w: (w @ v, w))(torch.softmax(q @ k.transpose(-2, -1), -1))),
    "check_causal_mask": lambda t, s=None, *, device=None: ~mhsa_lib.causal_mask(t, s, device=device),
    "check_split_heads": lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1),
    "check_merge_heads": lambda x: x.reshape(x.shape[0], x.shape[2], -1),
    "check_attention_heads": lambda x, w_q, w_k, w_v, h, mask=None: _attention_heads(x, w_q, w_k, w_v, h) * 2,
    "check_attention_heads_loop": lambda x, w_q, w_k, w_v, mask=None: _attention_heads_loop(x, w_k, w_q, w_v),
    "check_repeat_kv": lambda x, n: x.repeat(1, n, 1, 1),
    "check_sinusoidal_positional_encoding": lambda t, d: mhsa_lib.sinusoidal_positional_encoding(t, d).flip(1),
}


def _picture(check, fn):
    """What the grading kernel returns for a learner function ``fn`` of the step ``check``: the
    base64 text of a PNG, or "" when no picture could be drawn."""
    user_ns = {"learner_fn": fn}
    shell = types.SimpleNamespace(user_ns=user_ns)
    ns = {"get_ipython": lambda: shell, "__builtins__": __builtins__}
    exec(worker._PICTURE_CODE, ns)
    return ns["_grading_picture"]("learner_fn", worker.pictures()[check])


def _is_png(text):
    return bool(text) and base64.b64decode(text).startswith(b"\x89PNG\r\n\x1a\n")


def test_every_pictured_check_is_a_step_of_the_course():
    used = set()
    for path in SOLUTIONS.glob("[0-9][0-9]_*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            used |= set(re.findall(r"\b(check_\w+)\(", "".join(cell["source"])))
    assert set(worker.pictures()) <= used, set(worker.pictures()) - used
    assert set(worker.pictures()) == set(CORRECT) == set(WRONG)


@pytest.mark.parametrize("check", sorted(worker.pictures()))
def test_picture_from_a_correct_and_a_wrong_answer(check):
    assert _is_png(_picture(check, CORRECT[check]))
    assert _is_png(_picture(check, WRONG[check]))


@pytest.mark.parametrize("check", sorted(worker.pictures()))
def test_no_picture_when_the_answer_cannot_be_drawn(check):
    def not_done(*args, **kwargs):
        raise NotImplementedError

    assert _picture(check, not_done) == ""
    assert _picture(check, lambda *a, **k: "not a tensor") == ""


def test_the_title_names_the_axes_and_the_worst_place():
    """The difference panel of a map that is not attention weights names its own axes."""
    titles = []
    real = mhsa_lib.viz.difference_map

    def spy(yours, reference, **kwargs):
        titles.append(kwargs.get("title"))
        return real(yours, reference, **kwargs)

    mhsa_lib.viz.difference_map = spy
    try:
        assert _is_png(_picture("check_sinusoidal_positional_encoding", WRONG["check_sinusoidal_positional_encoding"]))
        assert _is_png(_picture("check_causal_mask", CORRECT["check_causal_mask"]))
    finally:
        mhsa_lib.viz.difference_map = real
    assert re.fullmatch(r"largest \|difference\| [0-9.e+-]+ at position \d+, feature \d+", titles[0]), titles[0]
    assert titles[1] == "largest |difference| 0 at query 0, key 0"
