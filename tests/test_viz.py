"""Tests for mhsa_lib.viz: figures come back, nothing is shown, data and labels are right."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from mhsa_lib import MultiHeadAttention  # noqa: E402
from mhsa_lib.viz import attention_grid, attention_heatmap, difference_map  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_seed")

TOKENS = ["the", "cat", "sat", "down", "."]


@pytest.fixture
def weights():
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3).eval()
    _, w = mha(torch.randn(2, 5, 12), causal=True, return_weights=True)
    return w.detach()  # (B=2, H=3, T=5, S=5)


def test_heatmap_draws_the_chosen_head_with_labels(weights):
    fig = attention_heatmap(weights, head=2, batch=1, query_labels=TOKENS, annotate=True)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert np.allclose(ax.images[0].get_array(), weights[1, 2].detach().numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == TOKENS
    assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS  # keys default to queries
    assert ax.get_title() == "head 2" and len(ax.texts) == 25
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # renders headless, no pyplot
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_heatmap_into_existing_axes_and_numpy_input():
    fig = Figure()
    ax = fig.add_subplot()
    grid = np.eye(3)
    assert attention_heatmap(grid, ax=ax, title="identity") is fig
    assert ax.get_title() == "identity"
    assert np.array_equal(ax.images[0].get_array(), grid)


def test_grid_is_layers_by_heads(weights):
    layers = [weights, weights.flip(-1)]
    fig = attention_grid(layers, batch=1, query_labels=TOKENS, layer_names=["first", "second"])
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 2 * 3
    assert np.allclose(heat[3 + 1].images[0].get_array(), weights.flip(-1)[1, 1].numpy())
    assert heat[0].get_ylabel() == "first" and heat[3].get_ylabel() == "second"
    assert heat[2].get_title() == "head 2"
    stacked = attention_grid(torch.stack([weights[0], weights[1]]))  # (L, H, T, S)
    assert len([ax for ax in stacked.axes if ax.images]) == 6


def test_difference_map_points_at_the_largest_difference(weights):
    yours = weights.clone()
    yours[0, 0, 3, 1] += 0.4
    fig = difference_map(yours, weights, query_labels=TOKENS)
    panels = [ax for ax in fig.axes if ax.images][:3]
    assert [ax.get_title() for ax in panels] == ["yours", "reference", "yours - reference"]
    diff = panels[2].images[0].get_array()
    assert np.isclose(diff[3, 1], 0.4) and np.isclose(np.abs(diff).sum(), 0.4)
    assert "query 3, key 1" in fig._suptitle.get_text()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda w: attention_heatmap(w, query_labels=["a", "b"]), r"query_labels: expected 5 labels, got 2"),
        (lambda w: attention_heatmap(w, head=3), r"head: expected an index in \[0, 3\), got 3"),
        (lambda w: attention_heatmap(w[0, 0, 0]), r"weights: expected \(T, S\), \(H, T, S\) or \(B, H, T, S\), got shape \(5,\)"),
        (lambda w: difference_map(w[0], w), r"yours: expected the shape of reference \(2, 3, 5, 5\), got \(3, 5, 5\)"),
        (lambda w: attention_grid([w, w[:, :2]]), r"weights: expected every layer to have the same \(H, T, S\)"),
        (lambda w: attention_heatmap([[1.0]]), r"weights: expected a torch.Tensor or numpy array, got list"),
    ],
)
def test_errors_name_the_argument(weights, call, match):
    with pytest.raises(ValueError, match=match):
        call(weights)


def test_import_mhsa_lib_does_not_import_matplotlib():
    code = "import sys, mhsa_lib, mhsa_lib.viz; assert 'matplotlib' not in sys.modules, 'imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_pyplot_figures_are_left_open(weights):
    attention_heatmap(weights)
    assert "matplotlib.pyplot" not in sys.modules or not __import__("matplotlib.pyplot").pyplot.get_fignums()


def test_figures_render_themselves_as_png_for_jupyter():
    """A returned figure shows as a cell's last expression even without the inline backend."""
    import mhsa_lib.viz as viz

    weights = torch.softmax(torch.randn(2, 4, 4), dim=-1)
    figures = [
        viz.attention_heatmap(weights[0]),
        viz.attention_grid([weights, weights]),
        viz.difference_map(weights[0], weights[0].flip(0)),
    ]
    for fig in figures:
        png = fig._repr_png_()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
