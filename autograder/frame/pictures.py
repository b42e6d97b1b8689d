"""The "yours vs expected" picture of a failed step whose result is a map, drawn in the notebook
right under the check's report.

Each such step declares its picture in the registry (``Step.picture``): code that sets ``yours``
and ``ref`` (same shape) from ``fn``, the learner's function or class, on a small public example
drawn from ``g`` (a generator seeded 0, never the hidden cases); for a map that is not attention
weights it also names its two axes in ``axes``. ``call(f, *args)`` calls anything else of the
learner's (the forward of the module ``fn`` built) under the same time limit. The declaration runs
with torch's global random state saved and restored, so building a module for the picture leaves
the learner's random numbers as they were. The class feedback draws the same declarations.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Optional

from .calls import run_safely
from .errors import LearnerError

#: Seconds one call of the learner's function may take while the picture is drawn.
TIME_LIMIT = 5.0


def picture_png(setup: Optional[str], fn: Any, *, dpi: int = 70) -> Optional[bytes]:
    """The picture (PNG bytes) of ``fn`` against the reference as ``setup`` declares it, or
    ``None`` when there is none to draw: no declaration, the learner's function fails or returns
    something that is not a map of the reference's shape, or drawing fails. Never raises, never
    writes to stdout or stderr."""
    if not setup or not callable(fn):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _draw(setup, fn, dpi)
    except Exception:  # noqa: BLE001 - whatever the learner's function did, the report stands alone
        return None


def _draw(setup: str, fn: Any, dpi: int) -> Optional[bytes]:
    import matplotlib.pyplot as plt
    import torch

    import mhsa_lib
    from mhsa_lib import viz

    def call(f: Any, *args: Any, **kwargs: Any) -> Any:
        out = run_safely(f, args, kwargs, TIME_LIMIT)
        if isinstance(out, LearnerError):
            raise out
        return out

    def learner(*args: Any, **kwargs: Any) -> Any:
        return call(fn, *args, **kwargs)

    scope = {"torch": torch, "mhsa_lib": mhsa_lib, "g": torch.Generator().manual_seed(0), "fn": learner,
             "call": call}
    with torch.random.fork_rng(devices=[]):
        exec(setup, scope)  # the step's own declaration (course code), not the learner's
    yours, ref = scope.get("yours"), scope.get("ref")
    if not isinstance(yours, torch.Tensor) or not isinstance(ref, torch.Tensor) or yours.shape != ref.shape:
        return None
    yours, ref = yours.detach().cpu().float(), ref.detach().cpu().float()
    if yours.ndim < 2 or not torch.isfinite(ref).all():
        return None
    rows, cols = scope.get("axes", ("query", "key"))
    title = None
    if yours.ndim == 2:
        diff = (yours - ref).abs().nan_to_num(float("inf"))
        i, j = divmod(int(diff.argmax()), diff.shape[1])
        title = f"largest |difference| {float(diff.max()):.3g} at {rows} {i}, {cols} {j}"
    fig = viz.difference_map(yours, ref, title=title)
    try:
        for ax in fig.axes[:3]:  # yours, reference, difference
            ax.set_ylabel(rows)
            ax.set_xlabel(cols)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()

