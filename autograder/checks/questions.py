"""The checkpoint question bank: one entry per conceptual checkpoint, keyed ``"NN.name"``.

``NN`` is the notebook that asks the question; its markdown cell holds the full wording of
the question and of every option, and the answer cell below it is ``answer_<name>()``.
Here each option has a short label (shown back to the learner in the report), the answer,
an explanation printed once the answer is right, and, for every wrong option of a multiple
choice, feedback that says what is wrong with it in the learner's own terms. Ordering
questions need no per-option feedback: the report names the pairs that are the wrong way
round, and partial credit counts the pairs in the right relative order, but only for an order
that keeps every *critical* precedence of the question (the ones its notebook insists on, such
as masking before the softmax): breaking one of those earns nothing.

The options of the multiple-choice questions are balanced over the bank: the right answer sits
at each letter about equally often, and is the longest (or the shortest) option about as often
as chance would have it, so that no strategy that ignores the question does better than chance
(``tests/test_concepts.py`` computes each one's expected score).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple


@dataclass(frozen=True)
class Question:
    """One checkpoint.

    kind "choice": ``options`` maps letters to short labels, ``answer`` is one letter.
    kind "order": ``options`` maps letters to the items, ``answer`` is the string of letters in
    the right order ("cab"); partial credit counts the pairs in the right relative order.
    ``critical`` lists the precedences that no partial credit may excuse, as
    ``(earlier, later, why)``: an order with ``later`` before ``earlier`` earns nothing, and the
    report says ``why``.
    """

    kind: str
    options: Dict[str, str]
    answer: str
    explanation: str
    feedback: Dict[str, str] = field(default_factory=dict)
    points: float = 1.0
    critical: Tuple[Tuple[str, str, str], ...] = ()

QUESTIONS: Dict[str, Question] = {
    # ------------------------------------------------------------------ 00_orientation
    "00.batched_matmul": Question(
        kind="choice",
        options={
            "a": "q @ k.transpose(-2, -1)",
            "b": "(q * k).sum(-1)",
            "c": "q @ k",
            "d": "q.transpose(-2, -1) @ k",
        },
        answer="a",
        explanation=(
            "k.transpose(-2, -1) turns k from (B, S, D) into (B, D, S); the batched matmul "
            "(B, T, D) @ (B, D, S) contracts the shared D axis and keeps the batch axis, "
            "giving (B, T, S): one dot product per (query, key) pair."
        ),
        feedback={
            "b": (
                "(q * k).sum(-1) multiplies query i with key i only (and needs T == S): it gives "
                "(B, T), the diagonal of the score matrix, not every (query, key) pair."
            ),
            "c": (
                "q @ k multiplies (B, T, D) by (B, S, D): the inner sizes D and S do not match, so "
                "it raises an error (and if S happened to equal D it would silently compute "
                "something meaningless). The key vectors must stand as columns: transpose k first."
            ),
            "d": (
                "q.transpose(-2, -1) @ k is (B, D, T) @ (B, S, D): it only runs when T == S, and then "
                "it gives (B, D, D), sums over the positions instead of over the features. "
                "Transpose k, not q."
            ),
        },
        points=1,
    ),
    "00.einsum_reading": Question(
        kind="choice",
        options={
            "a": "(B, H, T, S): the scores summed over the heads",
            "b": "(B, H, S, T): every key with every query, per head",
            "c": "(B, H, T, S): each query with each key, per head",
            "d": "(B, H, T, D): an elementwise product of q and k",
        },
        answer="c",
        explanation=(
            "The output letters are bhts, so the result is (B, H, T, S); d appears in both inputs "
            "but not in the output, so it is summed: out[b,h,t,s] = Σ_d q[b,h,t,d]·k[b,h,s,d], the "
            "dot product of query t with key s, separately for each batch entry and head."
        ),
        feedback={
            "a": (
                "h appears after the arrow, so it is kept, not summed: each head gets its own "
                "score matrix. Only d, which is missing from the output, is summed."
            ),
            "b": (
                "The order of the output letters is the order of the result's axes: 'bhts' puts "
                "t (the queries) before s (the keys), so the result is (B, H, T, S)."
            ),
            "d": (
                "An index that appears in the inputs but not after the arrow is summed over. d is "
                "missing from 'bhts', so it is summed away: nothing elementwise is left, and s "
                "appears in the output."
            ),
        },
        points=1,
    ),
    "00.fallback": Question(
        kind="choice",
        options={
            "a": "your softmax, as it is, since it got most points",
            "b": "nothing: an error until you fix your softmax",
            "c": "your softmax, patched by the check",
            "d": "the course's reference softmax, with a note",
        },
        answer="d",
        explanation=(
            "fallback(step, fn) hands back your function only when its check passed in this "
            "kernel; otherwise it hands back mhsa_lib's version and prints a note, so the rest of "
            "the notebook still runs and its plots are right. Fix the step, re-run its check, and "
            "later cells use your code again."
        ),
        feedback={
            "a": (
                "fallback only trusts a function whose check passed in this kernel. A partly "
                "correct softmax could make every later plot misleading, so it is replaced by the "
                "reference until its check passes."
            ),
            "b": (
                "That is exactly what fallback avoids: a step you are stuck on never blocks the "
                "rest of the notebook. It substitutes the reference and tells you so."
            ),
            "c": (
                "Checks never change your code; they only call it and report. fallback swaps in the "
                "reference implementation as a whole."
            ),
        },
        points=1,
    ),
    # ------------------------------------------------------------------ 01_scaled_dot_product_attention
    "01.softmax_axis": Question(
        kind="choice",
        options={
            "a": "dim=-2, over the queries",
            "b": "dim=-1, over the keys",
            "c": "over both last two axes at once",
            "d": "dim=0, over the batch",
        },
        answer="b",
        explanation=(
            "Row i of the (T, S) scores holds query i's score against every key. Each query "
            "spreads one unit of attention over the S keys, so each row must sum to 1: "
            "softmax over the last axis, dim=-1."
        ),
        feedback={
            "a": (
                "With dim=-2 each column sums to 1: every key would hand out one unit of attention "
                "over the queries. But the output for query i is a weighted average of the values, "
                "so the weights of query i (a row) are what must sum to 1."
            ),
            "c": (
                "If the whole (T, S) matrix summed to 1, each query's weights would sum to about "
                "1/T, and the output of each query would be a shrunken average of the values "
                "that depends on how many other queries there are."
            ),
            "d": (
                "The batch axis separates unrelated sequences: normalising across it would mix "
                "sentences that have nothing to do with each other. Each query's weights over its "
                "own keys must sum to 1."
            ),
        },
        points=1,
    ),
    "01.why_scale": Question(
        kind="choice",
        options={
            "a": "so that each row of weights sums to 1",
            "b": "so that exp cannot overflow inside the softmax",
            "c": "to average over the S keys",
            "d": "Var(q·k) grows like d_k; the scale keeps softmax from saturating",
        },
        answer="d",
        explanation=(
            "q·k is a sum of d_k products; with independent unit-variance entries its variance is "
            "d_k, so its typical size is √d_k. Dividing by √d_k keeps the scores at unit scale "
            "whatever the width: softmax stays soft, and its gradient does not vanish."
        ),
        feedback={
            "a": (
                "softmax already makes each row sum to 1, whatever the scale of its input. The "
                "scale changes how peaked the weights are, not what they sum to."
            ),
            "b": (
                "Overflow is the stable softmax's job (subtract the row maximum). Even a perfectly "
                "stable softmax saturates when scores are large: the point of 1/√d_k is to keep "
                "the weights from becoming one-hot and the gradients from vanishing."
            ),
            "c": (
                "The factor depends on d_k, the width of q and k, not on S, the number of keys. "
                "The weights already form an average over the keys (they sum to 1)."
            ),
        },
        points=1,
    ),
    "01.masked_row": Question(
        kind="choice",
        options={
            "a": "weights 0 and output 0",
            "b": "uniform weights 1/S over all the keys",
            "c": "NaN, so that the problem shows",
            "d": "the weights of the previous query",
        },
        answer="a",
        explanation=(
            "A query with no allowed key has nothing to average, so the course's convention is "
            "weights 0 and output 0. A NaN would spread through every later layer and through the "
            "gradients, poisoning the whole batch, even though such rows (padding queries) are "
            "usually ignored by the loss."
        ),
        feedback={
            "b": (
                "Uniform weights would make the query attend to keys it was told not to see "
                "(padding, or the future). A fully blocked query should take nothing from any key."
            ),
            "c": (
                "This is what a naive softmax gives (0/0), and it is a bug: one NaN row spreads to "
                "every later layer and to the gradients of the whole batch. The convention is 0."
            ),
            "d": (
                "Queries are independent of one another: borrowing another row's weights would "
                "give this query information its mask forbids. It takes nothing: weights 0, output 0."
            ),
        },
        points=1,
    ),
    "01.mask_polarity": Question(
        kind="choice",
        options={
            "a": "m, unchanged",
            "b": "m.float() * float('-inf')",
            "c": "~m",
            "d": "m.float()",
        },
        answer="c",
        explanation=(
            "nn.MultiheadAttention's boolean attn_mask means True = NOT allowed, the opposite of "
            "our convention (and of F.scaled_dot_product_attention). Inverting with ~m gives it "
            "the same meaning."
        ),
        feedback={
            "a": (
                "nn.MultiheadAttention reads a boolean True as 'blocked', so passing m unchanged "
                "blocks exactly the keys you meant to allow, and allows the ones you meant to block."
            ),
            "b": (
                "Where m is True this gives 1 · (−inf) = −inf, blocking the allowed keys; where m "
                "is False it gives 0 · (−inf) = NaN. An additive mask needs 0 where allowed and "
                "−inf where blocked."
            ),
            "d": (
                "A float mask is ADDED to the scores in nn.MultiheadAttention: adding 1.0 to "
                "allowed scores and 0.0 to blocked ones blocks nothing at all."
            ),
        },
        points=1,
    ),
    "01.steps_order": Question(
        kind="order",
        options={
            "a": "weights = softmax over the keys",
            "b": "project H to Q, K, V",
            "c": "out = weights @ V",
            "d": "scores = Q Kᵀ / √d_k",
            "e": "blocked scores set to −∞",
        },
        answer="bdeac",
        explanation=(
            "Project the input H to Q, K, V; score every query against every key and scale by "
            "1/√d_k; block the keys the mask forbids by setting their scores to −∞; softmax over "
            "the keys so each row sums to 1; mix the values with those weights."
        ),
        critical=(
            ("e", "a", "the mask acts on the scores, before the softmax: zeroing weights after the softmax "
                       "leaves rows that no longer sum to 1"),
            ("d", "a", "softmax turns the scaled scores into weights: the scores and their 1/√d_k scale "
                       "come first"),
            ("a", "c", "the values are mixed with the softmax weights, so the softmax comes before the "
                       "weighted sum"),
        ),
        points=2,
    ),
    # ------------------------------------------------------------------ 02_multiple_heads
    "02.why_heads": Question(
        kind="choice",
        options={
            "a": "H separate weightings of the positions, each on its own subspace",
            "b": "more parameters, and so more capacity to fit the data",
            "c": "sharper attention, since narrower heads have larger scores and peakier weights",
            "d": "they see tokens further away",
        },
        answer="a",
        explanation=(
            "One head gives each query a single set of weights, so its output is one average of "
            "the values: two things needed from two places come out blended. H heads give each "
            "query H independent weightings of the positions, each reading and writing its own "
            "Dh-wide slice of the features, at the same total width and cost."
        ),
        feedback={
            "b": (
                "At fixed D the count does not change: each head's matrices are (Dh, D) with "
                "Dh = D/H, and H of them make 3·D² for Q, K and V whatever H is. The gain is in how "
                "the same parameters are used, not in how many there are."
            ),
            "c": (
                "Each head divides its scores by √Dh, which brings their variance back to about 1 "
                "whatever the head width: narrower heads are not sharper. The gain is several "
                "independent weightings of the positions, not sharper ones."
            ),
            "d": (
                "Every head, like a single head, can attend to every key in the sequence (unless "
                "a mask forbids it): attention has no limited reach. Heads add several "
                "weightings of the positions, not range."
            ),
        },
        points=1,
    ),
    "02.param_count": Question(
        kind="choice",
        options={
            "a": "it doubles: each head has its own weights",
            "b": "it halves",
            "c": "it grows by a factor of 4",
            "d": "it stays 3·D²",
        },
        answer="d",
        explanation=(
            "Each head has three (Dh, D) matrices with Dh = D/H, so H heads have "
            "H · 3 · (D/H) · D = 3·D² parameters in Q, K and V, however D is cut into heads. "
            "Going from 8 to 16 heads halves each head's width and doubles their number."
        ),
        feedback={
            "a": (
                "Twice as many heads, yes, but each is half as wide: at D = 512, Dh drops from 64 to "
                "32, so each head's matrices shrink from 64×512 to 32×512. H · Dh · D stays D²."
            ),
            "b": (
                "Each head is half as wide, but there are twice as many of them: 16 heads × 32 "
                "features = 8 heads × 64 features = 512 rows per projection, as before."
            ),
            "c": (
                "Scores are computed within each head (a query of head h only meets keys of head h), "
                "never between pairs of heads, and scores are activations, not parameters. The "
                "projections stay three (D, D) matrices."
            ),
        },
        points=1,
    ),
    "02.scale_per_head": Question(
        kind="choice",
        options={
            "a": "√256 = 16, the model width",
            "b": "64, the head width",
            "c": "√64 = 8, from the head width",
            "d": "√4 = 2, from the head count",
        },
        answer="c",
        explanation=(
            "A head dots q_h and k_h, which are Dh = D/H = 64 wide; for unit-variance entries the "
            "dot product has variance 64, so dividing by √64 = 8 brings it back to 1. The model "
            "width D never enters a head's scores."
        ),
        feedback={
            "a": (
                "That is the classic 1/√D bug: the scores of each head are then √H = 2 times too "
                "small (variance 1/H instead of 1), so the weights start out close to uniform. "
                "The vectors being dotted are Dh = 64 wide, not 256."
            ),
            "b": (
                "Dividing by Dh itself over-corrects: the dot product's variance is Dh, so its "
                "typical size is √Dh; dividing by Dh leaves variance 1/Dh and nearly uniform "
                "weights. Use the square root of the head width."
            ),
            "d": (
                "The number of heads is not the width of anything being dotted. A head's scores "
                "are sums of Dh = 64 products, so their spread is √64 = 8."
            ),
        },
        points=1,
    ),
    # ------------------------------------------------------------------ 03_concat_and_output_projection
    "03.why_out_proj": Question(
        kind="choice",
        options={
            "a": "it brings the width back from H·Dh to D",
            "b": "it mixes the heads: each output feature combines every head",
            "c": "it applies the 1/√Dh scale to the merged heads",
            "d": "it makes the weights of each row sum to 1 again",
        },
        answer="b",
        explanation=(
            "After merging, features [h·Dh, (h+1)·Dh) hold head h's output and nothing else. "
            "W^O is a full (D, D) matrix, so every output feature is a learned combination of all "
            "the heads: out = Σ_h head_h · (W^O's block of columns for head h)ᵀ. Without it, the "
            "heads would never be combined before the next layer reads them."
        ),
        feedback={
            "a": (
                "The merged tensor is already D = H·Dh wide, so no change of width is needed: the "
                "output projection maps D to D. Its job is to mix the heads."
            ),
            "c": (
                "The scale belongs inside each head's attention, on the scores, before the "
                "softmax. W^O acts after the attention, on the merged outputs."
            ),
            "d": (
                "The softmax makes each row of weights sum to 1, inside every head. W^O is a "
                "linear map applied afterwards to the merged outputs; it does not touch the weights."
            ),
        },
        points=1,
    ),
    "03.torch_layout": Question(
        kind="choice",
        options={
            "a": "rows [3·h·Dh, 3·(h+1)·Dh), q, k and v of head h together",
            "b": "columns [h·Dh, (h+1)·Dh), since Linear uses the transpose",
            "c": "rows [D + h·Dh, D + (h+1)·Dh)",
            "d": "rows [h·Dh, (h+1)·Dh)",
        },
        answer="d",
        explanation=(
            "in_proj_weight (3D, D) stacks [W_q; W_k; W_v]: rows [0, D) are the query projection, "
            "and within it head h owns rows [h·Dh, (h+1)·Dh), the output features that split_heads "
            "gives to head h. Key rows start at D, value rows at 2D."
        ),
        feedback={
            "a": (
                "That interleaved layout (q, k, v of one head next to each other) is used by some "
                "other codebases, but not by nn.MultiheadAttention: its in_proj_weight is W_q, then "
                "W_k, then W_v, each (D, D), stacked along dim 0."
            ),
            "b": (
                "Columns are inputs in the nn.Linear layout (out, in): every head reads all D input "
                "features. A head owns output features, which are rows: [h·Dh, (h+1)·Dh)."
            ),
            "c": (
                "Rows [D, 2D) are the key projection (W_k), the second block of [W_q; W_k; W_v]. "
                "Head h's query rows are in the first block: [h·Dh, (h+1)·Dh)."
            ),
        },
        points=1,
    ),
    "03.fused_qkv": Question(
        kind="choice",
        options={
            "a": "it does fewer multiply-adds",
            "b": "q, k and v share one weight matrix, a third of the weights",
            "c": "one matmul instead of three: x read once, one launch",
            "d": "it leaves out the biases",
        },
        answer="c",
        explanation=(
            "The arithmetic is identical: (D, 3D) = three (D, D) blocks. But one (B·T, D) @ (D, 3D) "
            "product reads x once instead of three times, launches one kernel instead of three, "
            "and gives the hardware a larger, more efficient matrix to work on. The result is "
            "split back into q, k, v afterwards."
        ),
        feedback={
            "a": (
                "The fused weight is exactly W_q, W_k and W_v stacked, so it does exactly the same "
                "multiply-adds. The saving is in memory traffic and launch overhead, not arithmetic."
            ),
            "b": (
                "The three blocks of the fused (3D, D) weight are still three different matrices; "
                "fusing stacks them, it does not tie them. Sharing one matrix would make q = k = v."
            ),
            "d": (
                "The fused projection keeps the biases: its (3D,) bias is the three biases stacked, "
                "like nn.MultiheadAttention's in_proj_bias. The outputs are identical."
            ),
        },
        points=1,
    ),
    "03.steps_order": Question(
        kind="order",
        options={
            "a": "merge the heads: (B, H, T, Dh) -> (B, T, D)",
            "b": "project x to q, k, v",
            "c": "weights = softmax over the keys; out = weights @ v",
            "d": "split q, k, v into heads: (B, T, D) -> (B, H, T, Dh)",
            "e": "output projection W^O",
            "f": "scores = q kᵀ / √Dh per head, blocked scores set to −∞",
        },
        answer="bdfcae",
        explanation=(
            "Project x to q, k, v (one (D, D) map each); split each into H heads; per head, score "
            "every query against every key, scale by 1/√Dh and block the masked pairs; softmax over "
            "the keys and mix the values; merge the heads back into (B, T, D); and mix them with "
            "the output projection W^O."
        ),
        critical=(
            ("f", "c", "the mask acts on the scores, before the softmax: zeroing weights after the softmax "
                       "leaves rows that no longer sum to 1"),
            ("d", "f", "each head scores its own queries and keys: the split into heads comes before the "
                       "per-head scores"),
            ("c", "a", "the heads attend separately and are merged afterwards: merging first would mix "
                       "the heads before each has attended"),
            ("a", "e", "W^O mixes the heads, so it acts on the merged (B, T, D) tensor: the merge comes "
                       "before the output projection"),
        ),
        points=2,
    ),
    # ------------------------------------------------------------------ 04_transformer_block
    "04.sublayer_roles": Question(
        kind="choice",
        options={
            "a": "FFN mixes positions; attention per position; LN per token; residual carries x past",
            "b": "attention mixes positions; FFN per position; LN over the positions; residual carries x",
            "c": "attention mixes positions; FFN mixes the heads; LN per token; residual averages x in",
            "d": "attention mixes positions; FFN per position; LN per token; residual carries x",
        },
        answer="d",
        explanation=(
            "Attention is the only sub-layer in which a token's output depends on other tokens. The "
            "FFN applies the same two linear maps and activation to each token separately (changing "
            "one token changes only its own output). LayerNorm normalises each token over its own D "
            "features, and the residual adds the sub-layer's input to its output unchanged."
        ),
        feedback={
            "a": (
                "The other way round: the FFN is nn.Linear maps on the last axis, applied to each token "
                "on its own (change one token and only its FFN output changes), while attention's "
                "output at each position is a weighted average over all positions."
            ),
            "b": (
                "LayerNorm's mean and variance are taken over the D features of one token (the last "
                "axis), not over the positions: each token is normalised on its own, so its output "
                "does not depend on the other tokens. Normalising over positions or the batch is "
                "closer to BatchNorm."
            ),
            "c": (
                "The heads are mixed inside attention, by its output projection W^O; the FFN works on "
                "each token's D features. And the residual adds, it does not average: x + F(x) keeps x "
                "at full strength, which is what gives gradients a direct path."
            ),
        },
        points=1,
    ),
    "04.residual_shapes": Question(
        kind="choice",
        options={
            "a": "its output is added to its input, and blocks are stacked",
            "b": "LayerNorm only accepts inputs of width D, and every sub-layer feeds one",
            "c": "attention needs T queries and T keys",
            "d": "it need not: the FFN returns (B, T, F)",
        },
        answer="a",
        explanation=(
            "x + sublayer(x) only exists if the sub-layer returns the shape it was given, and the "
            "output of one block is the input of the next, so (B, T, D) in means (B, T, D) out at "
            "every level. Inside, a sub-layer may use other shapes: the FFN's hidden (B, T, F), the "
            "attention's heads (B, H, T, Dh)."
        ),
        feedback={
            "b": (
                "A LayerNorm of width D does need D features, but that is a consequence, not the "
                "reason: the sub-layer's output is added to its input by the residual connection, "
                "so it must have the input's shape."
            ),
            "c": (
                "In self-attention T queries meet T keys, but that fixes the weights' shape "
                "(B, H, T, T), not the output's. The output must be (B, T, D) because it is added to "
                "the input by the residual connection."
            ),
            "d": (
                "The FFN's hidden layer is (B, T, F), but fc2 brings it back to (B, T, D): its output "
                "is added to its input by the residual, so it must have the input's shape."
            ),
        },
        points=1,
    ),
    "04.pre_vs_post": Question(
        kind="choice",
        options={
            "a": "post-norm: normalising after every sub-layer keeps its gradients the best behaved at any depth",
            "b": "either: the two placements compute the same function",
            "c": "pre-norm: a plain-sum residual path; post-norm would need warm-up",
            "d": "pre-norm, because it has fewer parameters",
        },
        answer="c",
        explanation=(
            "In a pre-norm stack x_L = x_0 + Σ F_l(LN(x_l)): every block has an identity path to the "
            "output, so gradients reach it directly and deep stacks train with a plain schedule. "
            "Post-norm sends every gradient through the LayerNorms of all the blocks above, and its "
            "top layers start with large gradients: it needs a learning-rate warm-up, more so as "
            "the depth grows."
        ),
        feedback={
            "a": (
                "Normalising the residual stream after every sub-layer is what takes the identity "
                "path away: every gradient must pass through the LayerNorms of all the blocks above. "
                "At initialisation post-norm's gradients are largest next to the output, which is why "
                "post-norm needs a learning-rate warm-up, more so in deep stacks."
            ),
            "b": (
                "They are different functions: LN(x + F(x)) and x + F(LN(x)) differ for the same "
                "weights (section 6 loads a post-norm layer's weights into a pre-norm block and the "
                "outputs differ). They also train differently, as the gradient experiment shows."
            ),
            "d": (
                "Both placements have the same parameters: two LayerNorms, the attention and the FFN "
                "per block. The difference is where the norms sit, and so how gradients flow."
            ),
        },
        points=1,
    ),
    # ------------------------------------------------------------------ 07_capstone_tiny_transformer
    "07.why_positions": Question(
        kind="choice",
        options={
            "a": "nothing position-dependent: equal tokens, equal predictions",
            "b": "sorting, only more slowly, inferring positions from the data",
            "c": "sorting for short sequences only",
            "d": "sorting, if it has enough heads to tell positions apart",
        },
        answer="a",
        explanation=(
            "Without positions every block is permutation-equivariant, and so is the whole model: "
            "shuffling the input only shuffles the outputs. Two copies of the same digit get the "
            "same prediction, and position 0 cannot know it should hold the smallest digit."
        ),
        feedback={
            "b": (
                "No amount of training helps: a shuffled input gives the same outputs, shuffled, so "
                "the model cannot put the smallest digit at position 0 — it cannot tell position 0 "
                "from any other."
            ),
            "c": (
                "Length does not matter: even with two tokens, swapping them only swaps the outputs, "
                "so the model cannot know which output position is the first."
            ),
            "d": (
                "Every head is permutation-equivariant too, so any number of them is; heads add "
                "ways of mixing tokens, not knowledge of where the tokens stand."
            ),
        },
        points=1,
    ),
    "07.shift_map": Question(
        kind="choice",
        options={
            "a": "values would leave [-1, 1]",
            "b": "a shift by k is no longer one fixed linear map",
            "c": "position 0 would no longer be distinct from the others",
            "d": "nothing: any frequencies work the same",
        },
        answer="b",
        explanation=(
            "sin((p+k)ω) = sin(pω)cos(kω) + cos(pω)sin(kω) needs cos(pω) at the same frequency ω. "
            "With sin/cos pairs each pair is rotated by kω, a map that depends on k only; with a "
            "frequency per feature there is no such map, and 'k positions back' must be learned "
            "separately at every position."
        ),
        feedback={
            "a": (
                "Every feature would still be a sine or a cosine, so every value stays in [-1, 1]. "
                "What breaks is the relation between positions: think about PE[p + k]."
            ),
            "c": (
                "Position 0 would still be [0, 1, 0, 1, …] and distinct from the others. What breaks "
                "is how the encoding of p + k relates to that of p."
            ),
            "d": (
                "Try writing sin((p+k)ω) from the encoding of p: the angle-sum formula needs the "
                "cosine of the same angle pω, which a per-feature frequency does not provide."
            ),
        },
        points=1,
    ),
    "07.identity_attention": Question(
        kind="choice",
        options={
            "a": "it has too few parameters to learn to sort",
            "b": "each position sees only its own token and position",
            "c": "it ignores the positional encoding added to the embeddings",
            "d": "its loss cannot be computed without mixing",
        },
        answer="b",
        explanation=(
            "With attention replaced by the identity, nothing moves information between positions: "
            "the FFN and the norms work on each token alone. The t-th smallest digit depends on all "
            "the digits, so the best such a model can do is guess from its own digit and position."
        ),
        feedback={
            "a": (
                "The parameter count is not the issue: a model of the same size with attention "
                "learns the task. What attention brings is information from the other positions."
            ),
            "c": (
                "The positions are still added to the embeddings and used: the model learns that "
                "position 0 tends to be small. What it lacks is any view of the other tokens."
            ),
            "d": (
                "It trains fine, with the same loss; the loss just stops falling around 1.6, the "
                "best possible from one token and its position."
            ),
        },
        points=1,
    ),
    # ------------------------------------------------------------------ 05_kv_cache_and_head_sharing
    "05.why_cache": Question(
        kind="choice",
        options={
            "a": "the queries are cached too, so earlier scores can be reused",
            "b": "causal mask: they depend only on earlier tokens, which never change",
            "c": "keys and values are the same for every token",
            "d": "attention is linear in its input, so its parts add up step by step",
        },
        answer="b",
        explanation=(
            "A token's key and value in the first layer depend on that token alone, and in every "
            "later layer, through the causal mask, only on the tokens up to it. New tokens are "
            "appended after it, so none of this ever changes: computed once, they can be kept and "
            "reused by every later step."
        ),
        feedback={
            "a": (
                "The cache holds keys and values, not queries: each step needs the queries of the "
                "new tokens only, and their scores against the keys are new scores every time. The "
                "old keys and values can be kept because the causal mask keeps later tokens out of them."
            ),
            "c": (
                "Each token has its own key and value, k = x W_kᵀ for its own x: they differ from "
                "token to token. What makes them cacheable is that a token's key and value never "
                "change once computed, because the causal mask keeps later tokens out of them."
            ),
            "d": (
                "Attention is not linear in its input (the softmax, and the product of queries and "
                "keys). Caching works because of causality: an earlier token's keys and values depend "
                "only on tokens up to it, which never change as new tokens are appended."
            ),
        },
        points=1,
    ),
    "05.causal_offset": Question(
        kind="choice",
        options={
            "a": "key 0 only",
            "b": "keys 0 to 9",
            "c": "keys 7 to 9",
            "d": "keys 0 to 7",
        },
        answer="d",
        explanation=(
            "The 3 new tokens are the last 3 of the 10 positions, so new query i sits at absolute "
            "position S - T + i = 7 + i: the first one is token 7, and it may see every earlier "
            "token and itself, keys 0 to 7. That is the lower-right aligned mask, "
            "tril(diagonal=S - T) on the (T, S) scores."
        ),
        feedback={
            "a": (
                "That is the upper-left aligned mask (tril() without an offset): it treats the first "
                "new query as position 0 and hides the whole cached past from it. The new queries are "
                "the last T of the S positions: query i sits at position S - T + i = 7 + i."
            ),
            "b": (
                "Keys 8 and 9 belong to the two new tokens after it: seeing them would let the future "
                "leak in. Query i sits at position S - T + i = 7 + i and may see keys up to 7 + i."
            ),
            "c": (
                "The cached keys 0 to 6 are all in the past of every new token, so every new query may "
                "see them; and keys 8 and 9 are in the future of the first new query. It sees keys 0 "
                "to 7."
            ),
        },
        points=1,
    ),
    "05.gqa_pairing": Question(
        kind="choice",
        options={
            "a": "all four, averaged",
            "b": "K/V head 1",
            "c": "K/V head 2",
            "d": "K/V head 5",
        },
        answer="c",
        explanation=(
            "Each K/V head serves H / G = 2 neighbouring query heads: K/V head 0 serves query heads "
            "0 and 1, head 1 serves 2 and 3, head 2 serves 4 and 5. Query head j uses K/V head "
            "j // (H / G) = 5 // 2 = 2, which is what repeat_interleave (repeat_kv) produces."
        ),
        feedback={
            "a": (
                "A query head attends with exactly one K/V head; nothing is averaged. Each K/V head "
                "serves H / G = 2 neighbouring query heads: query head j uses K/V head j // 2."
            ),
            "b": (
                "5 % 4 = 1 is the pairing that tiling gives (x.repeat, heads 0 1 2 3 0 1 2 3), the "
                "classic GQA bug. Neighbouring query heads share a K/V head: query head j uses "
                "K/V head j // (H / G) = 5 // 2."
            ),
            "d": (
                "There are only G = 4 K/V heads, numbered 0 to 3. Each serves H / G = 2 neighbouring "
                "query heads: query head j uses K/V head j // 2."
            ),
        },
        points=1,
    ),
    "05.gqa_memory": Question(
        kind="choice",
        options={
            "a": "cache 32x smaller: all heads share K/V",
            "b": "cache 4x smaller; still 32 query heads",
            "c": "cache 4x smaller; now 8 query heads",
            "d": "cache unchanged; only the parameter count drops",
        },
        answer="b",
        explanation=(
            "The cache stores 2 · B · S · L · G · Dh numbers: the number of K/V heads G enters, the "
            "number of query heads does not. Going from G = 32 to G = 8 divides it by 4, while all "
            "32 query heads remain, in groups of 4 sharing one K/V head."
        ),
        feedback={
            "a": (
                "32 times would be multi-query attention, G = 1. The cache is proportional to the "
                "number of K/V heads G: 32 -> 8 divides it by 4."
            ),
            "c": (
                "The cache does shrink 4 times, but the query heads stay: q_proj is still "
                "nn.Linear(D, D), 32 heads of Dh. Only the keys and values are projected to 8 heads, "
                "each shared by a group of 4 query heads."
            ),
            "d": (
                "The cache holds the keys and values of the K/V heads, 2 · G · Dh numbers per token "
                "and layer: with G = 8 instead of 32 it is 4 times smaller. (k_proj and v_proj do "
                "shrink too, but the cache is the main saving at long contexts.)"
            ),
        },
        points=1,
    ),
    # ------------------------------------------------------------------ 06_debugging_transformer_blocks
    "06.loss_falls": Question(
        kind="choice",
        options={
            "a": "only that it learns something; test it against the spec",
            "b": "the refactor is correct: a wrong block would not train well",
            "c": "norm placement does not matter",
            "d": "the bug, if any, is in the optimiser",
        },
        answer="a",
        explanation=(
            "Pre-norm, post-norm and a mix of the two are all trainable blocks, so each one's loss "
            "falls. A falling loss tells you the model can learn; whether the code is the block "
            "of the spec takes a test that can fail: the same weights in the reference give the "
            "same output, or a property of the spec (zeroed sub-layer outputs give back x) holds."
        ),
        feedback={
            "b": (
                "A wrong block often trains fine: the refactored block, half pre-norm and half "
                "post-norm, is still a trainable function. Training converging cannot tell two "
                "architectures apart; an equality test against the spec with the same weights can."
            ),
            "c": (
                "Placement matters: it changes the function the block computes (the outputs "
                "differ with the same weights) and how deep stacks train (incident 3). A short "
                "run of one block is too weak a test to show either."
            ),
            "d": (
                "The optimiser did its job: it made the loss fall. The question is whether the "
                "forward pass is the specified block, and training says nothing about that; "
                "compare it with the spec under the same weights."
            ),
        },
        points=1,
    ),
    "06.merge_probe": Question(
        kind="choice",
        options={
            "a": "output shape (B, T, D) for several input shapes",
            "b": "the loss decreases over 100 steps",
            "c": "attention weights rows sum to 1",
            "d": "permuting the tokens permutes the output rows",
        },
        answer="d",
        explanation=(
            "Without a mask, self-attention is permutation-equivariant: each token's output "
            "depends on its own query and the set of keys and values. A merge that hands token t "
            "pieces of other tokens makes the output depend on positions, so shuffling the input "
            "no longer just shuffles the output. No reference implementation is needed."
        ),
        feedback={
            "a": (
                "The merge bug keeps the shape: reshaping (B, H, T, Dh) to (B, T, H·Dh) without "
                "the transpose has the same number of elements, so the shape is (B, T, D) either "
                "way. A shape test passes on the broken code."
            ),
            "b": (
                "The broken module still trains a little (the output projection partly adapts), "
                "so the loss does fall: too weak and too slow a test to catch the bug."
            ),
            "c": (
                "The weights are computed before the merge and are correct: each row still sums "
                "to 1. The bug is in how the heads' outputs are put back together, after the "
                "weights are used."
            ),
        },
        points=1,
    ),
    "06.fair_timing": Question(
        kind="choice",
        options={
            "a": "one call each, first call included",
            "b": "mean of 100 calls incl. the first, with all threads",
            "c": "warm-up, then the median of several calls, same input and threads",
            "d": "a whole training run each, on whichever machine is free",
        },
        answer="c",
        explanation=(
            "A warm-up call removes one-off costs (allocation, setup); the median of several calls "
            "ignores the odd run slowed down by another process; the same input and the same "
            "thread count make the two numbers comparable. Restore the thread count afterwards."
        ),
        feedback={
            "a": (
                "A single call is at the mercy of whatever else the machine was doing at that "
                "moment, and the first call also pays one-off costs (memory allocation, setup). "
                "Warm up once, then take the median of several calls."
            ),
            "b": (
                "Many calls help, but the mean is pulled by the first call's one-off costs and by "
                "any call slowed by another process; and with all threads on a shared machine, "
                "small operations spend their time waiting for each other. Warm up, take the "
                "median, and fix the thread count for both versions."
            ),
            "d": (
                "A whole training run measures much more than the attention (data, optimiser, "
                "logging), and two different machines cannot be compared at all. Time the module "
                "itself, both versions on the same machine, in the same session, with the same "
                "input and threads."
            ),
        },
        points=1,
    ),
    # ------------------------------------------------------------------ 08_attention_without_the_matrix
    "08.rescale_factor": Question(
        kind="choice",
        options={
            "a": "exp(m_old - m_new)",
            "b": "exp(m_new - m_old)",
            "c": "m_old / m_new",
            "d": "nothing: the old sum stays as it is",
        },
        answer="a",
        explanation=(
            "Each term of the old sum is exp(x - m_old); relative to the new maximum it must be "
            "exp(x - m_new) = exp(x - m_old) · exp(m_old - m_new). The factor is <= 1 because "
            "m_new >= m_old, so nothing can overflow; the running output is rescaled by the same factor."
        ),
        feedback={
            "b": (
                "exp(m_new - m_old) is >= 1: it would grow the old terms, as if their maximum had gone "
                "down. Write one old term: exp(x - m_old) must become exp(x - m_new); the ratio of the "
                "two is exp(m_old - m_new)."
            ),
            "c": (
                "The maxima sit in an exponent: shifting x by a constant divides exp(x) by exp(constant), "
                "not by the constant. A ratio of maxima is not even defined when m_new is 0 or -inf."
            ),
            "d": (
                "The old sum was taken relative to the old maximum and the new block's terms relative to "
                "the new one: added as they are, they are in different units, and the result is wrong "
                "whenever the maximum changes."
            ),
        },
        points=1,
    ),
    "08.memory_growth": Question(
        kind="choice",
        options={
            "a": "as T², like the reference: the same scores are computed",
            "b": "as T: one (T, block_size) block of scores at a time",
            "c": "it does not grow with T at all",
            "d": "as T · S / block_size",
        },
        answer="b",
        explanation=(
            "Every score is still computed (the work grows as T·S), but only one block of them is alive "
            "at a time: (T, block_size) scores plus the running max, sum and output, each of T rows. "
            "With block_size fixed that is proportional to T; the notebook's counter shows it doubling "
            "when T doubles, while the reference's (T, T) matrix quadruples."
        ),
        feedback={
            "a": (
                "The same scores are computed, but not kept: each block of scores is used and dropped "
                "before the next is formed. The memory counts what is alive at once, not what was ever computed."
            ),
            "c": (
                "Each query keeps a running max, a running sum and a running output (Dv numbers), and a "
                "block of scores has one row per query: all of that grows with T."
            ),
            "d": (
                "T · S / block_size counts something else: the number of entries is T·S in all, spread "
                "over S / block_size blocks, but only one block, T · block_size entries, exists at a time."
            ),
        },
        points=1,
    ),
    "08.flash_exact": Question(
        kind="choice",
        options={
            "a": "the same function up to rounding, the (T, S) matrix never stored",
            "b": "an approximation of attention that trades some accuracy for a lot of speed",
            "c": "attention that skips the keys whose weights are small",
            "d": "attention that only works with a causal mask",
        },
        answer="a",
        explanation=(
            "Flash and memory-efficient attention compute exactly softmax(QKᵀ/√d_k)V, as the tiled loop "
            "does: the running max and sum make the blockwise result equal to the full one up to float "
            "rounding. What they save is memory and memory traffic: blocks of scores live in fast on-chip "
            "memory and the (T, S) matrix is never written out."
        ),
        feedback={
            "b": (
                "Nothing is approximated: rescaling by exp(m_old - m_new) makes the blockwise sums exactly "
                "the full ones. The notebook's tiled attention matches F.scaled_dot_product_attention to "
                "float32 rounding."
            ),
            "c": (
                "Every key is scored and counted: the running sum includes every block. Kernels may skip "
                "blocks that a causal mask blocks entirely, but those have weight exactly 0."
            ),
            "d": (
                "The tiled loop works with any mask or none; a causal mask only lets a kernel skip the "
                "blocks it blocks entirely."
            ),
        },
        points=1,
    ),

    # ------------------------------------------------------------------ 03_concat_and_output_projection: cross-attention
    "03.cross_weights_shape": Question(
        kind="choice",
        options={
            "a": "(B, H, T, T)",
            "b": "(B, H, S, S)",
            "c": "(B, H, T, S)",
            "d": "(B, H, S, T)",
        },
        answer="c",
        explanation=(
            "Each of the T decoder positions (the queries) gets one weight per memory position (the "
            "keys): a (T, S) matrix per head, rows summing to 1 over the memory. The output, weights "
            "@ values, is (B, H, T, Dh): the decoder's length, whatever S is."
        ),
        feedback={
            "a": (
                "(T, T) is the decoder's self-attention: queries and keys from the same sequence. Here the "
                "keys come from the memory, which has S positions, so each row has S weights."
            ),
            "b": (
                "(S, S) would be the encoder's own self-attention. The rows are the queries, and the "
                "queries come from the decoder: T of them."
            ),
            "d": (
                "Rows are queries and columns are keys, as in q @ k.transpose(-2, -1): (T, Dh) @ (Dh, S) "
                "gives (T, S). (S, T) would have the memory asking the decoder."
            ),
        },
        points=1,
    ),
    "03.cross_no_causal": Question(
        kind="choice",
        options={
            "a": "a causal mask, so that decoder position t reads memory positions 0..t only",
            "b": "only a padding mask over the memory's positions, (B, 1, 1, S)",
            "c": "a causal mask and a padding mask, combined with &",
            "d": "no mask ever: the memory has no padding",
        },
        answer="b",
        explanation=(
            "The memory is the encoder's output for a source sequence known in full before the decoder "
            "starts: nothing in it is 'the future' of a decoder position, and T and S do not even count "
            "the same tokens. What must be hidden is the source batch's padding, on the last (memory) axis "
            "of the (B, H, T, S) scores. The decoder's own future is hidden by the causal mask of its "
            "self-attention, the sub-layer before."
        ),
        feedback={
            "a": (
                "Decoder position t and memory position t are different tokens of different sequences (often "
                "of different lengths): a causal mask over (T, S) would hide most of the source sentence from "
                "the first target words for no reason. The whole source is known before decoding starts."
            ),
            "c": (
                "The padding mask is right, the causal part is not: the source is known in full, so no memory "
                "position is in a decoder position's future. Causality belongs to the decoder's self-attention."
            ),
            "d": (
                "Source sentences of different lengths are padded to one S in a batch; without a padding mask "
                "the decoder attends to padding tokens and its output depends on how much padding there is."
            ),
        },
        points=1,
    ),

    # ------------------------------------------------------------------ 03_concat_and_output_projection: heads vs width
    "03.heads_fixed_d": Question(
        kind="choice",
        options={
            "a": "score_rank_bound: from 128 down to 32",
            "b": "params: sixteen sets of W_Q, W_K, W_V instead of one",
            "c": "flops: the attention core costs 16 times less",
            "d": "kv_cache_bytes: sixteen heads cache 16 times as much",
        },
        answer="a",
        explanation=(
            "At a fixed D the four projections stay (D, D) whatever H, so params and the projections' FLOPs "
            "do not move; the core is H products through Dh = D/H features, 4·T²·D FLOPs in all; the cache "
            "keeps H heads of Dh keys and values per token, D of each. Only what one head can express "
            "changes: its (T, T) scores have rank at most min(D/H, T) = min(512/16, 128) = 32, against 128 "
            "for one head."
        ),
        feedback={
            "b": (
                "Each head's W_Q is a (Dh, D) slice of one (D, D) matrix: sixteen slices of 32 rows hold as many "
                "weights as one matrix of 512 rows. The count is 4·D² + 4·D for every H."
            ),
            "c": (
                "Each head does 1/16 of the work, but there are 16 of them: H · T²·(D/H) multiply-adds per "
                "product is T²·D, whatever H."
            ),
            "d": (
                "Each head caches Dh = D/H keys and values per token, so H heads cache D of each, as one head "
                "of width D does. Only sharing key/value heads among query heads (GQA, MQA: notebook 05) "
                "shrinks the cache."
            ),
        },
        points=1,
    ),
    "03.rank_bound": Question(
        kind="choice",
        options={
            "a": "10, one per token",
            "b": "64, the width of the model",
            "c": "16, one per head",
            "d": "4, from the head width",
        },
        answer="d",
        explanation=(
            "A head's scores are Q_h K_hᵀ / √Dh with Q_h and K_h of shape (T, Dh): every score matrix that "
            "goes through Dh = 64/16 = 4 features has rank at most 4, however many tokens there are "
            "(min(Dh, T) = min(4, 10) = 4)."
        ),
        feedback={
            "a": (
                "A (10, 10) matrix could have rank 10, but this one is a product (10, 4) @ (4, 10): its rank "
                "cannot exceed 4. T caps the rank only when it is smaller than the head width."
            ),
            "b": (
                "One head never sees all 64 features: its queries and keys are its own Dh = D/H = 4 features, "
                "and a product through 4 features has rank at most 4."
            ),
            "c": (
                "The number of heads is how many such matrices there are, not the rank of one: each head's "
                "scores go through its own Dh = 64/16 = 4 features."
            ),
        },
        points=1,
    ),
}


# ---------------------------------------------------------------------- 04_transformer_block: the modern block
QUESTIONS.update({
    "04.attention_vs_ffn": Question(
        kind="choice",
        options={
            "a": "T > D = 1024",
            "b": "T > 256 (the core split over 16 heads)",
            "c": "never: the FFN has more parameters",
            "d": "T > F = 4096",
        },
        answer="d",
        explanation=(
            "The core is QKᵀ and weights @ V: T²·Dh multiply-adds each per head, T²·D over the H "
            "heads, 4·T²·D FLOPs in all. The FFN is (T, D) @ (D, F) and (T, F) @ (F, D), 4·T·D·F FLOPs. "
            "4·T²·D > 4·T·D·F exactly when T > F = 4096, whatever the number of heads."
        ),
        feedback={
            "a": (
                "The FFN's FLOPs are 4·T·D·F, not T·D²-sized alone: its width F = 4096 enters, so "
                "comparing 4·T²·D with 4·T·D·F gives T > F, not T > D."
            ),
            "b": (
                "Splitting into heads does not save work: each of the H heads costs T²·Dh per "
                "product, and H·Dh = D, so the core costs 4·T²·D FLOPs for any H. Only F decides the "
                "crossover with the FFN."
            ),
            "c": (
                "Parameters and FLOPs are different things: the core has no parameters at all but "
                "its cost grows with T², while the FFN's grows with T. For long enough sequences the "
                "core always wins; here from T > F = 4096."
            ),
        },
        points=1,
    ),
    "04.rmsnorm_keeps": Question(
        kind="choice",
        options={
            "a": "centres and scales like LayerNorm, only without a learned gain",
            "b": "normalises each feature over the positions of the sequence",
            "c": "divides by the root mean square, with a gain, no shift",
            "d": "LayerNorm with eps moved outside the square root",
        },
        answer="c",
        explanation=(
            "RMSNorm is x / sqrt(mean(x²) + eps) · g: one statistic (the mean square of the token's D "
            "features), a learned gain g and no shift. Scaling a token by c > 0 leaves its output "
            "unchanged; adding a constant to it does not."
        ),
        feedback={
            "a": (
                "Subtracting the mean is exactly what RMSNorm leaves out (that is LayerNorm); and it "
                "keeps the gain, a (D,) weight initialised to 1. It drops the shift."
            ),
            "b": (
                "Like LayerNorm, RMSNorm works on each token over its own D features (the last axis); "
                "normalising over the positions would mix tokens, and future tokens into past ones."
            ),
            "d": (
                "Moving eps is a bug, not a different norm. RMSNorm keeps eps inside the square root; "
                "what it drops is the mean subtraction and the shift."
            ),
        },
        points=1,
    ),
})


# --------------------------------------------------------------------------- 07 · rotary embeddings

QUESTIONS.update({
    "07.rope_cache_offset": Question(
        kind="choice",
        options={
            "a": "0: every decoding step is a sequence of its own",
            "b": "S, the cache length: the new token's position",
            "c": "S - 1, the position of the last cached key",
            "d": "none: rotate the whole cache again from offset 0 at every step instead",
        },
        answer="b",
        explanation=(
            "Row t of x is at position offset + t. The S cached keys sit at positions 0 … S-1 and were "
            "rotated once, when they were cached; the new token is the (S+1)-th, at position S, so its "
            "query and key are rotated with offset = S = len(cache). Then its score with the key at "
            "position s is turned by (s - S)·ω_i, exactly as when the whole sequence is rotated at once."
        ),
        feedback={
            "a": (
                "With offset 0 the new query is rotated as if it stood at position 0: its scores with the "
                "cached keys then depend on the wrong offsets (s - 0 instead of s - S). The notebook's "
                "cached-decoding comparison would print False."
            ),
            "c": (
                "Position S - 1 is taken by the last cached key; the new token comes after it. Counting from "
                "0, S keys fill positions 0 … S-1."
            ),
            "d": (
                "The cached keys are already rotated for their positions, which do not change; rotating them "
                "again is wasted work (and rotating from offset 0 at every step would rotate them twice)."
            ),
        },
        points=1,
    ),
})
