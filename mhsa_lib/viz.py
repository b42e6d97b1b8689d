"""Pictures of attention: one head's heatmap, a layers x heads grid, "yours vs reference".

Shape letters (see the package docstring): B batch, H heads, T query length, S key length,
L layers.

Each function returns a ``matplotlib.figure.Figure`` built without ``pyplot``: nothing is
shown, no global figure list grows, and it works on a headless machine (save it with
``fig.savefig("attn.png")``). In Jupyter, the figure displays as a cell's last expression
(it renders itself as a PNG, whatever the backend); ``IPython.display.display(fig)`` also works. Rows are queries (who attends), columns keys
(attended to), so each row of a weights heatmap sums to 1.

matplotlib is imported on first use, so ``import mhsa_lib`` does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch

if TYPE_CHECKING:  # only for type hints; matplotlib is imported lazily below
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["attention_heatmap", "attention_grid", "difference_map"]

ArrayLike = Union[torch.Tensor, np.ndarray]


def attention_heatmap(
    weights: ArrayLike,
    *,
    head: int = 0,
    batch: int = 0,
    query_labels: Optional[Sequence[str]] = None,
    key_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    ax: Optional["Axes"] = None,
    cmap: str = "viridis",
    annotate: bool = False,
) -> "Figure":
    """Heatmap of one head's attention weights, with token labels.

    Args:
        weights: (T, S), (H, T, S) or (B, H, T, S), a tensor or an array; e.g. the weights
            from ``MultiHeadAttention(...)(x, return_weights=True)``.
        head, batch: which head and which batch element to draw (ignored where the axis is
            absent).
        query_labels: T strings for the rows (default: positions).
        key_labels: S strings for the columns (default: ``query_labels`` when S == T).
        title: default "head {head}".
        ax: draw into this Axes instead of a new figure.
        cmap: a matplotlib colormap name.
        annotate: write each weight in its cell (for small T and S).

    Returns:
        The figure holding the heatmap.

    Raises:
        ValueError: on a rank other than 2-4, an index out of range, or labels whose count
            does not match T or S.
    """
    grid = _select(weights, head, batch)  # (T, S)
    fig, ax = _figure_and_axes(ax, grid.shape)
    _draw(ax, grid, query_labels, key_labels, cmap, vmin=0.0, vmax=max(float(grid.max()), 1e-12))
    if annotate:
        for (i, j), value in np.ndenumerate(grid):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 0.5 * grid.max() else "black")
    ax.set_title(f"head {head}" if title is None else title)
    fig.colorbar(ax.images[-1], ax=ax, label="weight")
    return fig


def attention_grid(
    weights: Union[ArrayLike, Sequence[ArrayLike]],
    *,
    batch: int = 0,
    query_labels: Optional[Sequence[str]] = None,
    key_labels: Optional[Sequence[str]] = None,
    layer_names: Optional[Sequence[str]] = None,
    cmap: str = "viridis",
    cell_size: float = 2.0,
) -> "Figure":
    """A layers x heads grid of heatmaps, one per head of each layer (all on one colour scale).

    Args:
        weights: one entry per layer, each (H, T, S) or (B, H, T, S); or one (L, H, T, S)
            array.
        batch: which batch element to draw.
        query_labels, key_labels: as in :func:`attention_heatmap`; drawn on the outer axes.
        layer_names: L row titles (default "layer 0", "layer 1", …).
        cmap: a matplotlib colormap name.
        cell_size: inches per heatmap.

    Returns:
        The figure; ``fig.axes[l * H + h]`` is layer ``l``, head ``h``.

    Raises:
        ValueError: if the layers have different numbers of heads or shapes.
    """
    if isinstance(weights, (torch.Tensor, np.ndarray)):
        layers = [weights[i] for i in range(weights.shape[0])]  # (L, H, T, S) -> L x (H, T, S)
    else:
        layers = list(weights)
    if not layers:
        raise ValueError("weights: expected at least one layer, got none")
    grids = []
    for i, layer in enumerate(layers):
        layer = _to_numpy(f"weights[{i}]", layer)
        if layer.ndim == 4:
            layer = layer[_index("batch", batch, layer.shape[0])]  # (B, H, T, S) -> (H, T, S)
        if layer.ndim != 3:
            raise ValueError(
                f"weights[{i}]: expected (H, T, S) or (B, H, T, S), got shape {layer.shape}"
            )
        grids.append(layer)
    if any(g.shape != grids[0].shape for g in grids):
        raise ValueError(
            f"weights: expected every layer to have the same (H, T, S), "
            f"got {[g.shape for g in grids]}"
        )
    if layer_names is not None and len(layer_names) != len(grids):
        raise ValueError(f"layer_names: expected {len(grids)} names, got {len(layer_names)}")
    num_layers, (num_heads, _, _) = len(grids), grids[0].shape
    fig = _new_figure(figsize=(cell_size * num_heads + 1, cell_size * num_layers), layout="constrained")
    axes = np.asarray(fig.subplots(num_layers, num_heads, squeeze=False))  # (L, H) of Axes
    vmax = max(max(float(g.max()) for g in grids), 1e-12)
    for l, grid in enumerate(grids):
        for h in range(num_heads):
            ax = axes[l, h]
            _draw(ax, grid[h], query_labels, key_labels, cmap, vmin=0.0, vmax=vmax)
            if l == 0:
                ax.set_title(f"head {h}")
            if h == 0:
                ax.set_ylabel(layer_names[l] if layer_names is not None else f"layer {l}")
            else:
                ax.set_ylabel("")
                ax.set_yticklabels([])
            if l != num_layers - 1:
                ax.set_xlabel("")
                ax.set_xticklabels([])
    fig.colorbar(axes[0, 0].images[0], ax=axes.ravel().tolist(), label="weight", shrink=0.8)
    return fig


def difference_map(
    yours: ArrayLike,
    reference: ArrayLike,
    *,
    head: int = 0,
    batch: int = 0,
    query_labels: Optional[Sequence[str]] = None,
    key_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
) -> "Figure":
    """Three panels for feedback: your weights, the reference, and yours minus the reference.

    The difference uses a diverging colormap centred on 0 (red: yours too high, blue: too
    low), and the title gives the largest absolute difference and where it is.

    Args:
        yours, reference: same shape, (T, S), (H, T, S) or (B, H, T, S).
        head, batch: which head / batch element to draw.
        query_labels, key_labels: as in :func:`attention_heatmap`.
        title: a title for the whole figure (default: the largest difference).

    Returns:
        The figure; ``fig.axes[:3]`` are yours, reference, difference.

    Raises:
        ValueError: if the shapes differ.
    """
    a, b = _to_numpy("yours", yours), _to_numpy("reference", reference)
    if a.shape != b.shape:
        raise ValueError(f"yours: expected the shape of reference {b.shape}, got {a.shape}")
    mine, ref = _select(a, head, batch), _select(b, head, batch)  # (T, S) each
    diff = mine - ref
    worst = np.unravel_index(np.argmax(np.abs(diff)), diff.shape)
    fig = _new_figure(figsize=(4.0 * 3 + 1.5, 4.0), layout="constrained")
    axes = fig.subplots(1, 3)
    vmax = max(float(max(mine.max(), ref.max())), 1e-12)
    for ax, grid, name in ((axes[0], mine, "yours"), (axes[1], ref, "reference")):
        low = min(0.0, float(grid.min()))
        _draw(ax, grid, query_labels, key_labels, "viridis", vmin=low, vmax=vmax)
        ax.set_title(name)
    fig.colorbar(axes[1].images[0], ax=axes[:2].tolist(), shrink=0.8)
    span = max(float(np.abs(diff).max()), 1e-12)
    _draw(axes[2], diff, query_labels, key_labels, "RdBu_r", vmin=-span, vmax=span)
    axes[2].set_title("yours - reference")
    axes[2].add_patch(_box(worst))
    fig.colorbar(axes[2].images[0], ax=axes[2], shrink=0.8)
    if title is None:
        title = f"largest |difference| {np.abs(diff).max():.3g} at query {worst[0]}, key {worst[1]}"
    fig.suptitle(title)
    return fig


# --- helpers ----------------------------------------------------------------------------------


_FIGURE_CLASS = None


def _new_figure(**kwargs) -> "Figure":
    """A Figure, outside pyplot, that Jupyter shows as a PNG even without the inline backend."""
    global _FIGURE_CLASS
    if _FIGURE_CLASS is None:
        import io

        from matplotlib.figure import Figure

        class AttentionFigure(Figure):
            def _repr_png_(self) -> bytes:
                buffer = io.BytesIO()
                self.savefig(buffer, format="png", dpi=100)
                return buffer.getvalue()

        _FIGURE_CLASS = AttentionFigure
    return _FIGURE_CLASS(**kwargs)


def _to_numpy(name: str, x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    raise ValueError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _index(name: str, i: int, size: int) -> int:
    if not isinstance(i, int) or not -size <= i < size:
        raise ValueError(f"{name}: expected an index in [0, {size}), got {i!r}")
    return i


def _select(weights: object, head: int, batch: int) -> np.ndarray:
    """(T, S), (H, T, S) or (B, H, T, S) -> (T, S)."""
    w = _to_numpy("weights", weights)
    if w.ndim == 4:
        w = w[_index("batch", batch, w.shape[0])]  # (B, H, T, S) -> (H, T, S)
    if w.ndim == 3:
        w = w[_index("head", head, w.shape[0])]  # (H, T, S) -> (T, S)
    if w.ndim != 2:
        raise ValueError(
            f"weights: expected (T, S), (H, T, S) or (B, H, T, S), got shape {w.shape}"
        )
    return w


def _figure_and_axes(ax: Optional["Axes"], shape: tuple) -> tuple:
    if ax is not None:
        return ax.figure, ax
    rows, cols = shape
    size = (min(2.0 + 0.45 * cols, 14.0), min(1.5 + 0.45 * rows, 14.0))  # inches, grows with T, S
    fig = _new_figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _draw(ax, grid, query_labels, key_labels, cmap, vmin, vmax) -> None:
    rows, cols = grid.shape
    if key_labels is None and query_labels is not None and rows == cols:
        key_labels = query_labels
    ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    for name, labels, n, set_ticks, set_labels in (
        ("query_labels", query_labels, rows, ax.set_yticks, ax.set_yticklabels),
        ("key_labels", key_labels, cols, ax.set_xticks, ax.set_xticklabels),
    ):
        if labels is None:
            continue
        if len(labels) != n:
            raise ValueError(f"{name}: expected {n} labels, got {len(labels)}")
        set_ticks(range(n))
        set_labels([str(t) for t in labels], **({"rotation": 90} if name == "key_labels" else {}))
    ax.set_xlabel("key")
    ax.set_ylabel("query")


def _box(cell: tuple):
    from matplotlib.patches import Rectangle

    i, j = cell
    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2)
