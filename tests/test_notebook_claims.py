"""What the notebooks' text claims, kept true: the statements that a number or a picture can
contradict are checked here against the library (quick) and, in tests/test_notebooks.py, against
the executed notebooks (slow)."""

from __future__ import annotations

import re

import nbformat
import pytest
import torch
import torch.nn.functional as F
from conftest import SOLUTIONS

import mhsa_lib

NAMES = sorted(p.stem for p in SOLUTIONS.glob("*.ipynb"))


def _cells(name):
    return nbformat.read(str(SOLUTIONS / f"{name}.ipynb"), as_version=4).cells


def _text(name):
    return "\n".join(c.source for c in _cells(name) if c.cell_type == "markdown")


@pytest.mark.parametrize("name", NAMES)
def test_every_timing_pins_its_threads_and_says_so(name):
    """A timed comparison on a machine with other work runs on one thread (else it measures the
    load), and the notebook tells the learner so."""
    cells = _cells(name)
    code = [c.source for c in cells if c.cell_type == "code"]
    # A notebook may pin once for everything, in its set-up cell, saying why.
    pinned_globally = any(re.search(r"^\s*torch\.set_num_threads\(1\)", src, re.M) and "thread" in src.lower()
                          for src in code[:2])
    for src in code:
        if "perf_counter" not in src or pinned_globally:
            continue
        assert "set_num_threads(1)" in src, f"{name}: a timing cell does not pin its threads:\n{src[:300]}"
        assert re.search(r"#.*thread|thread.*#|\"\"\"[^\"]*thread", src, re.I | re.S), \
            f"{name}: a timing cell does not say that it runs on one thread"


def test_positional_encoding_picture_is_described_as_drawn():
    """07 draws pe.T: features are rows, the fastest wave (feature 0) at the top."""
    pe = mhsa_lib.sinusoidal_positional_encoding(64, 32)
    sign_changes = (pe[1:] * pe[:-1] < 0).sum(dim=0)  # along the positions, per feature
    assert sign_changes[0] > sign_changes[2] > sign_changes[-2]  # fast at the top row, slow below
    drawn = [c.source for c in _cells("07_capstone_tiny_transformer") if "imshow(pe.T" in c.source]
    assert drawn, "07 no longer draws pe.T: update the text that describes the picture"
    text = _text("07_capstone_tiny_transformer")
    assert "each row is a wave" in text and "fast at the top" in text
    assert "each column is a wave" not in text


def test_gpt2_gelu_is_the_tanh_approximation_and_the_gap_is_as_stated():
    text = _text("04_transformer_block")
    assert "GPT-2 used\nits tanh approximation" in text or re.search(r"GPT-2 used\s+its tanh approximation", text)
    assert not re.search(r"BERT and GPT-2 use GELU", text)
    x = torch.linspace(-12, 12, 400001, dtype=torch.float64)
    gap = (F.gelu(x) - F.gelu(x, approximate="tanh")).abs().max().item()
    assert 1e-4 < gap < 1e-3  # "differs from the exact GELU by less than 0.001 but is a different function"


@pytest.mark.parametrize("name", ["04_transformer_block", "06_debugging_transformer_blocks"])
def test_pre_norm_is_not_claimed_to_need_no_warm_up_in_general(name):
    text = re.sub(r"\s+", " ", _text(name))
    assert not re.search(r"trains deep stacks without warm-up|without a long warm-up", text)
    assert re.search(r"less warm-up|larger learning rates", text)


def test_the_softmax_jacobian_plot_is_described_exactly():
    text = re.sub(r"\s+", " ", _text("01_scaled_dot_product_attention"))
    assert "Almost no learning signal reaches the queries and keys." not in text
    assert "saturated row" in text and "Jacobian itself" in text
    # The Jacobian of a one-hot row is zero, of a uniform row is not: the claim's two cases.
    for p, small in [(torch.tensor([1.0, 0, 0, 0]), True), (torch.full((4,), 0.25), False)]:
        jac = torch.diag(p) - torch.outer(p, p)
        assert (jac.norm() < 1e-6) == small


@pytest.mark.parametrize("name", NAMES)
def test_printed_tensors_keep_one_precision(name):
    code = [c.source for c in _cells(name) if c.cell_type == "code"]
    assert any("set_printoptions(precision=3, sci_mode=False)" in src for src in code), \
        f"{name}: set torch's print options once (precision=3, sci_mode=False)"
