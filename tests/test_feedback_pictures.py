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


def _rotary_complex(x, offset=0):
    t, dh = x.shape[-2], x.shape[-1]
    angle = torch.outer(torch.arange(offset, offset + t, dtype=torch.float64),
                        10000.0 ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh))
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], dh // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).reshape(x.shape).to(x.dtype)


def _rotary_halves_out(x, offset=0):
    """The right pairs, put back as two halves: q·k unchanged when q and k both go through it."""
    y = mhsa_lib.apply_rotary(x, offset)
    return torch.cat([y[..., 0::2], y[..., 1::2]], dim=-1)


def _tiled_full(q, k, v, block_size, mask=None, causal=False):
    t, s = q.shape[-2], k.shape[-2]
    allowed = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t) if causal else None
    return mhsa_lib.scaled_dot_product_attention(q, k, v, allowed)[0]


class _CrossByHand(torch.nn.Module):
    def __init__(self, d_model, num_heads):
        super().__init__()
        self.h = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (torch.nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, x, memory, memory_mask=None, return_weights=False, invert=False):
        q = mhsa_lib.split_heads(self.q_proj(x), self.h)
        k, v = (mhsa_lib.split_heads(p(memory), self.h) for p in (self.k_proj, self.v_proj))
        mask = None if memory_mask is None else (~memory_mask if invert else memory_mask)
        out, w = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        out = self.out_proj(mhsa_lib.merge_heads(out))
        return (out, w) if return_weights else out


class _CrossInvertedMask(_CrossByHand):
    def forward(self, x, memory, memory_mask=None, return_weights=False):
        return super().forward(x, memory, memory_mask, return_weights, invert=True)


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
    "check_apply_rotary": _rotary_complex,
    "check_tiled_attention": _tiled_full,
    "check_cross_attention": _CrossByHand,
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
    "check_apply_rotary": _rotary_halves_out,
    "check_tiled_attention": lambda q, k, v, block_size, mask=None, causal=False: _tiled_full(q, k, v, block_size),
    "check_cross_attention": _CrossInvertedMask,
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


def _drawn_maps(check, fn):
    """The (yours, reference) maps the picture of ``fn`` for ``check`` shows."""
    maps = []
    real = mhsa_lib.viz.difference_map

    def spy(yours, reference, **kwargs):
        maps.append((yours.clone(), reference.clone()))
        return real(yours, reference, **kwargs)

    mhsa_lib.viz.difference_map = spy
    try:
        assert _is_png(_picture(check, fn))
    finally:
        mhsa_lib.viz.difference_map = real
    assert len(maps) == 1
    return maps[0]


@pytest.mark.parametrize("check", sorted(worker.pictures()))
def test_picture_from_a_correct_and_a_wrong_answer(check):
    """Drawn for both; no difference for the correct answer, one for the wrong answer."""
    yours, ref = _drawn_maps(check, CORRECT[check])
    assert torch.allclose(yours, ref, atol=1e-5), (yours - ref).abs().max()
    yours, ref = _drawn_maps(check, WRONG[check])
    assert not torch.allclose(yours, ref, atol=1e-3)


def test_the_rotary_picture_shows_a_rotation_that_keeps_relative_scores_but_not_the_course_values():
    """Rotating q and k alike with another convention keeps every q·k: the picture meets your
    queries with the reference's keys, so the difference still shows."""
    q, k = torch.randn(6, 8), torch.randn(6, 8)
    same = _rotary_halves_out(q, 0) @ _rotary_halves_out(k, 0).T
    assert torch.allclose(same, mhsa_lib.apply_rotary(q, 0) @ mhsa_lib.apply_rotary(k, 0).T, atol=1e-5)
    yours, ref = _drawn_maps("check_apply_rotary", _rotary_halves_out)
    assert (yours - ref).abs().max() > 0.1
    assert torch.allclose(ref[1:, 1:], ref[:-1, :-1], atol=1e-5)  # the reference depends on the distance only


def test_building_a_module_for_the_picture_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert _is_png(_picture("check_cross_attention", _CrossInvertedMask))
    assert torch.equal(torch.get_rng_state(), before)


def test_a_module_that_hangs_while_listing_its_parameters_gives_no_picture(monkeypatch):
    from autograder.frame import pictures

    class Hangs(_CrossByHand):
        def named_parameters(self, *args, **kwargs):
            while True:
                pass

    monkeypatch.setattr(pictures, "TIME_LIMIT", 0.5)
    assert _picture("check_cross_attention", Hangs) == ""
