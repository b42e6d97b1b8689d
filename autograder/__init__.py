"""autograder: the course's step checks and grading tools.

In a notebook, each graded step is followed by a test cell such as::

    check_softmax(softmax)

which prints a report (each sub-part ✓/✗, and a diagnosis that names the mistake when the
output matches a known one) and returns the points earned as a plain float, which nbgrader
reads as the cell's partial credit. ``hidden=True`` adds random cases drawn at grading time.

Later cells call :func:`fallback` so that a step that is not yet right never blocks the rest
of the notebook.
"""

from .checks import (
    check_attention_heads,
    check_attention_heads_loop,
    check_causal_mask,
    check_concept,
    check_feed_forward,
    check_layer_norm,
    check_load_mha_from_torch,
    check_merge_heads,
    check_multi_head_attention,
    check_pairwise_scores,
    check_scaled_dot_product_attention,
    check_softmax,
    check_split_heads,
    check_transformer_block,
    fallback,
)
from .checks import __all__  # noqa: F401  (the same public names)
