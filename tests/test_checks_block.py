"""Notebook 04's checks (LayerNorm, FeedForward, TransformerBlock): correct solutions written many
ways (lazy layers too) earn full marks; the known mistakes of LayerNorm, the FFN and the block's
wiring lose points and are named; broken submissions are reported, never raised."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check
from torch import nn

import mhsa_lib
from autograder import check_feed_forward, check_layer_norm, check_transformer_block, fallback
from autograder.checks import block as C
from autograder.mistakes import block as M

run = run_check


# --------------------------------------------------------------------------- LayerNorm


class LayerNormManual(nn.Module):
    """Correct: mean and biased variance written out."""

    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class LayerNormVarMean(nn.Module):
    """Correct: torch.var_mean(correction=0) and rsqrt, extra keyword argument."""

    def __init__(self, d_model, eps=1e-5, elementwise_affine=True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=-1, correction=0, keepdim=True)
        return torch.addcmul(self.bias, (x - mean) * torch.rsqrt(var + self.eps), self.weight)


class LayerNormLoop(nn.Module):
    """Correct: one token at a time, torch.var(unbiased=False), computed in float64 inside."""

    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1]).double()
        rows = []
        for token in flat:
            centred = token - token.mean()
            rows.append(centred / (token.var(unbiased=False) + self.eps).sqrt())
        out = torch.stack(rows).reshape(x.shape).to(x.dtype)
        return out * self.weight + self.bias


LN_SOLUTIONS = [M.BuggyLayerNorm, LayerNormManual, LayerNormVarMean, LayerNormLoop]


@pytest.mark.parametrize("cls", LN_SOLUTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layer_norm_full_marks_for_correct_solutions(cls, seed, capsys):
    points, report = run(check_layer_norm, cls, capsys, seed=seed)
    assert points == 3.0, report
    assert "All checks pass" in report


def test_layer_norm_hidden_cases(capsys):
    points, report = run(check_layer_norm, LayerNormVarMean, capsys, hidden=True, seed=5)
    assert points == 3.0 and "all checks pass" in report, report


_LN_PUBLIC_ANSWER = C._ln_reference(4, 1e-5, C.LN_PUBLIC_WEIGHT, C.LN_PUBLIC_BIAS)(C.LN_PUBLIC_X).detach()


class LayerNormHardCoded(LayerNormManual):
    def forward(self, x):
        return _LN_PUBLIC_ANSWER.to(x.dtype)


class LayerNormViaNN(nn.Module):
    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.inner = nn.LayerNorm(d_model, eps)
        self.weight, self.bias = self.inner.weight, self.inner.bias

    def forward(self, x):
        return self.inner(x)


class LayerNormViaLibrary(LayerNormManual):
    def forward(self, x):
        ln = mhsa_lib.LayerNorm(x.shape[-1], self.eps).to(x.dtype)
        ln.weight, ln.bias = self.weight, self.bias
        return ln(x)


@pytest.mark.parametrize("cls,words", [
    (M.LayerNormWrongAxis, "over the positions (dim=-2)"),
    (M.LayerNormUnbiased, "unbiased variance"),
    (M.LayerNormEpsOutsideSqrt, "eps goes inside the square root"),
    (M.LayerNormNoEps, "eps is not used"),
    (M.LayerNormNoAffine, "weight and bias are not applied"),
    (M.LayerNormCallsTorch, "calls torch's layer_norm"),
    (LayerNormViaNN, "calls torch's layer_norm"),
    (LayerNormViaLibrary, "calls mhsa_lib (LayerNorm"),
    (LayerNormHardCoded, "hard-coded"),
])
@pytest.mark.parametrize("seed", [3, 4])
def test_layer_norm_mistakes_lose_points_and_are_named(cls, words, seed, capsys):
    points, report = run(check_layer_norm, cls, capsys, seed=seed)
    assert points < 3.0, report
    assert words in report, report


def test_layer_norm_plain_tensor_parameters_are_explained(capsys):
    class LayerNormTensors(LayerNormManual):
        def __init__(self, d_model, eps=1e-5):
            nn.Module.__init__(self)
            self.eps = eps
            self.weight, self.bias = torch.ones(d_model), torch.zeros(d_model)

    points, report = run(check_layer_norm, LayerNormTensors, capsys, seed=0)
    assert points < 3.0 and "wrap it in nn.Parameter" in report, report


# --------------------------------------------------------------------------- FeedForward


class FeedForwardFunctional(nn.Module):
    """Correct: F.relu / F.gelu."""

    def __init__(self, d_model, d_ff, activation="relu"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.act = F.relu if activation == "relu" else F.gelu

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class FeedForwardModules(nn.Module):
    """Correct: activation modules chosen from a dict, nn.Dropout (identity in eval mode)."""

    def __init__(self, d_model, d_ff, activation="relu", dropout=0.1):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU()}[activation]
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x))))


class FeedForwardEinsum(nn.Module):
    """Correct: einsum with the layers' weights, erf GELU written out, ReLU as a max."""

    def __init__(self, d_model, d_ff, activation="relu"):
        super().__init__()
        self.activation = activation
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x):
        h = torch.einsum("...d,fd->...f", x, self.fc1.weight) + self.fc1.bias  # (..., F)
        if self.activation == "gelu":
            h = h * 0.5 * (1 + torch.erf(h / math.sqrt(2)))
        else:
            h = torch.maximum(h, torch.zeros_like(h))
        return torch.einsum("...f,df->...d", h, self.fc2.weight) + self.fc2.bias


FFN_SOLUTIONS = [M.BuggyFeedForward, FeedForwardFunctional, FeedForwardModules, FeedForwardEinsum]


@pytest.mark.parametrize("cls", FFN_SOLUTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_feed_forward_full_marks_for_correct_solutions(cls, seed, capsys):
    points, report = run(check_feed_forward, cls, capsys, seed=seed)
    assert points == 2.0, report


def test_feed_forward_hidden_cases(capsys):
    points, report = run(check_feed_forward, FeedForwardEinsum, capsys, hidden=True, seed=5)
    assert points == 2.0 and "all checks pass" in report, report


class FeedForwardMixesPositions(FeedForwardFunctional):
    """Not position-wise: adds the mean over the positions."""

    def forward(self, x):
        y = super().forward(x)
        return y + y.mean(dim=-2, keepdim=True)


class FeedForwardSkipAndTanh(FeedForwardFunctional):
    """A skip connection added inside the FFN, and the tanh GELU: two mistakes at once."""

    def __init__(self, d_model, d_ff, activation="relu"):
        super().__init__(d_model, d_ff, activation)
        self.act = torch.relu if activation == "relu" else nn.GELU(approximate="tanh")

    def forward(self, x):
        out = self.fc2(self.act(self.fc1(x)))
        out += x
        return out


@pytest.mark.parametrize("cls,words", [
    (M.FeedForwardNoActivation, "no non-linearity between fc1 and fc2"),
    (M.FeedForwardActivationAfterOutput, "after fc2 as well"),
    (M.FeedForwardGeluTanh, "tanh approximation"),
    (M.FeedForwardIgnoresActivation, "ReLU whatever `activation` says"),
    (M.FeedForwardCallsLibrary, "calls mhsa_lib (FeedForward"),
    (FeedForwardMixesPositions, "changing the first token changes the output at other positions"),
    (M.FeedForwardWithResidual, "the residual connection belongs to the block"),
    (FeedForwardSkipAndTanh, "adds its input back"),
])
def test_feed_forward_mistakes_lose_points_and_are_named(cls, words, capsys):
    points, report = run(check_feed_forward, cls, capsys, seed=3)
    assert points < 2.0, report
    assert words in report, report


# --------------------------------------------------------------------------- TransformerBlock


class EinsumAttention(nn.Module):
    """The learner's own MHA from notebook 03 (einsum, causal-safe), reused inside their block."""

    def __init__(self, d_model, num_heads):
        super().__init__()
        self.h = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, x, mask=None):
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.h, -1) for p in (self.q_proj, self.k_proj, self.v_proj))
        s = torch.einsum("bthe,bshe->bhts", q, k) / math.sqrt(d // self.h)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.nan_to_num(torch.softmax(s, dim=-1))
        return self.out_proj(torch.einsum("bhts,bshe->bthe", w, v).reshape(b, t, d))


class BlockOwnParts(nn.Module):
    """Correct: own attention, nn.LayerNorm norms (allowed here), FFN written inline, a helper per placement."""

    def __init__(self, d_model, num_heads, d_ff, norm_placement="pre", dropout=0.0):
        super().__init__()
        if norm_placement not in ("pre", "post"):
            raise ValueError(norm_placement)
        self.pre = norm_placement == "pre"
        self.attn = EinsumAttention(d_model, num_heads)
        self.ffn = FeedForwardFunctional(d_model, d_ff)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def _residual(self, x, f, norm, drop):
        if self.pre:
            return x + drop(f(norm(x)))
        return norm(x + drop(f(x)))

    def forward(self, x, mask=None):
        x = self._residual(x, lambda h: self.attn(h, mask), self.norm1, self.drop1)
        return self._residual(x, self.ffn, self.norm2, self.drop2)


class BlockBranches(nn.Module):
    """Correct: explicit if/else in forward, the learner's LayerNorm, F.dropout with training=self.training."""

    def __init__(self, d_model, num_heads, d_ff, norm_placement="pre", dropout=0.0, activation="relu"):
        super().__init__()
        self.norm_placement, self.p = norm_placement, dropout
        self.attn = mhsa_lib.MultiHeadAttention(d_model, num_heads)
        self.ffn = FeedForwardEinsum(d_model, d_ff, activation)
        self.norm1, self.norm2 = LayerNormLoop(d_model), LayerNormManual(d_model)

    def forward(self, x, mask=None):
        drop = lambda h: F.dropout(h, self.p, training=self.training)  # noqa: E731
        if self.norm_placement == "pre":
            x = x + drop(self.attn(self.norm1(x), mask))
            x = x + drop(self.ffn(self.norm2(x)))
        else:
            x = self.norm1(x + drop(self.attn(x, mask)))
            x = self.norm2(x + drop(self.ffn(x)))
        return x


BLOCK_SOLUTIONS = [M.BuggyTransformerBlock, BlockOwnParts, BlockBranches]


@pytest.mark.parametrize("cls", BLOCK_SOLUTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_block_full_marks_for_correct_solutions(cls, seed, capsys):
    points, report = run(check_transformer_block, cls, capsys, seed=seed)
    assert points == 5.0, report
    assert "mhsa_lib's (or your own) MultiHeadAttention, LayerNorm and FeedForward" in report


def test_block_hidden_cases(capsys):
    points, report = run(check_transformer_block, BlockOwnParts, capsys, hidden=True, seed=5)
    assert points == 5.0 and "all checks pass" in report, report


class BlockWithTorchLayer(M.BuggyTransformerBlock):
    """Keeps torch's own encoder layer and hands it the work."""

    def __init__(self, d_model, num_heads, d_ff, norm_placement="pre", dropout=0.0):
        super().__init__(d_model, num_heads, d_ff, norm_placement, dropout)
        self.layer = nn.TransformerEncoderLayer(d_model, num_heads, d_ff, dropout, batch_first=True,
                                                norm_first=norm_placement == "pre")

    def forward(self, x, mask=None):
        return self.layer(x, src_mask=None if mask is None else ~mask)


@pytest.mark.parametrize("cls,words", [
    (M.BlockPlacementSwapped, "the other placement's output"),
    (M.BlockNormInsideResidual, "x + LN(F(x))"),
    (M.BlockNormedResidual, "LN(x) + F(LN(x))"),
    (M.BlockNoResidual, "residual connection is missing"),
    (M.BlockDropoutInEval, "dropout is active in eval mode"),
    (M.BlockMaskNotPassed, "mask is not passed to the attention"),
    (M.BlockSharedNorm, "both sub-layers use norm1"),
    (M.BlockCallsLibrary, "uses mhsa_lib (TransformerBlock"),
    (BlockWithTorchLayer, "uses torch's TransformerEncoderLayer"),
])
def test_block_mistakes_lose_points_and_are_named(cls, words, capsys):
    points, report = run(check_transformer_block, cls, capsys, seed=3)
    assert points < 5.0, report
    assert words in report, report


def test_block_one_placement_wrong_is_named_for_that_placement(capsys):
    class PostWrong(M.BuggyTransformerBlock):
        def _sublayer(self, x, f, norm):
            if self.norm_placement == "post":
                return x + norm(f(x))  # x + LN(F(x)) only in the post-norm branch
            return super()._sublayer(x, f, norm)

    points, report = run(check_transformer_block, PostWrong, capsys, seed=0)
    assert 0 < points < 5.0
    assert "norm_placement='post': your block computes x + LN(F(x))" in report
    assert "Diagnosis: norm_placement='pre'" not in report
    assert "✓ random cases, norm_placement='pre'" in report


def test_block_one_norm_object_for_both_sublayers_is_caught(capsys):
    class OneNorm(M.BuggyTransformerBlock):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self.norm2 = self.norm1

    points, report = run(check_transformer_block, OneNorm, capsys, seed=0)
    assert points < 5.0 and "norm1 and norm2 are the same module" in report, report


def test_block_dropout_scaled_in_eval_mode_is_caught(capsys):
    class ScalesInEval(M.BuggyTransformerBlock):
        def _dropout(self, h):
            return h * (1 - self.p)  # the old "scale at test time" convention

    points, report = run(check_transformer_block, ScalesInEval, capsys, seed=0)
    assert points < 5.0 and "in eval mode dropout must change nothing" in report, report


# --------------------------------------------------------------------------- lazy layers


class FeedForwardLazy(nn.Module):
    """Correct: nn.LazyLinear layers, whose input width is known only after a first forward pass."""

    def __init__(self, d_model, d_ff, activation="relu"):
        super().__init__()
        self.fc1, self.fc2 = nn.LazyLinear(d_ff), nn.LazyLinear(d_model)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LazyAttention(EinsumAttention):
    """EinsumAttention with nn.LazyLinear projections."""

    def __init__(self, d_model, num_heads):
        nn.Module.__init__(self)
        self.h = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.LazyLinear(d_model) for _ in range(4))


class BlockLazy(BlockOwnParts):
    """Correct: every linear layer of the block (attention and FFN) is an nn.LazyLinear."""

    def __init__(self, d_model, num_heads, d_ff, norm_placement="pre", dropout=0.0):
        super().__init__(d_model, num_heads, d_ff, norm_placement, dropout)
        self.attn = LazyAttention(d_model, num_heads)
        self.ffn = FeedForwardLazy(d_model, d_ff)


@pytest.mark.parametrize("check,cls,points", [(check_feed_forward, FeedForwardLazy, 2.0),
                                              (check_transformer_block, BlockLazy, 5.0)])
def test_lazy_layers_earn_full_marks(check, cls, points, capsys):
    got, report = run(check, cls, capsys, seed=0)
    assert got == points, report
    assert "All checks pass" in report, report


# --------------------------------------------------------------------------- every mistake, robustness


def test_every_mistake_in_the_module_is_tested_above():
    """Each buggy variant in autograder.mistakes.block is in a test that asserts it loses points."""
    tested = set()
    for name in ("test_layer_norm_mistakes_lose_points_and_are_named",
                 "test_feed_forward_mistakes_lose_points_and_are_named",
                 "test_block_mistakes_lose_points_and_are_named"):
        marks = [m for m in globals()[name].pytestmark if m.name == "parametrize" and m.args[0] == "cls,words"]
        tested |= {cls for cls, _ in marks[0].args[1]}
    for mistake in M.LAYER_NORM_MISTAKES + M.FEED_FORWARD_MISTAKES + M.TRANSFORMER_BLOCK_MISTAKES:
        assert mistake.fn in tested, mistake.id


class _NotYet(nn.Module):
    def __init__(self, *args, **kw):
        raise NotImplementedError()


class _ForwardNotYet(nn.Module):
    """__init__ done, forward still the release's stub."""

    def __init__(self, *args, **kw):
        super().__init__()
        self.inner = {1: M.BuggyLayerNorm, 2: M.BuggyFeedForward}.get(len(args), M.BuggyTransformerBlock)(*args, **kw)
        for name, module in self.inner.named_children():
            setattr(self, name, module)
        for name, p in self.inner.named_parameters(recurse=False):
            setattr(self, name, p)

    def forward(self, *args, **kw):
        raise NotImplementedError()


class _Crashes(M.BuggyTransformerBlock):
    def forward(self, x, mask=None):
        return x @ x  # (B, T, D) @ (B, T, D): a shape error


@pytest.mark.parametrize("check", [check_layer_norm, check_feed_forward, check_transformer_block])
@pytest.mark.parametrize("cls,words", [
    (_NotYet, "not implemented yet"),
    (_ForwardNotYet, "not implemented yet"),
    (lambda *a, **k: None, "expected an nn.Module"),
    (42, "expected a function"),
])
def test_broken_submissions_are_reported_not_raised(check, cls, words, capsys):
    points, report = run(check, cls, capsys, seed=0)
    assert points == 0.0
    assert words in report, report


def test_block_that_raises_in_forward_is_reported(capsys):
    points, report = run(check_transformer_block, _Crashes, capsys, seed=0)
    assert points < 1.0 and "raised RuntimeError" in report, report


@pytest.mark.parametrize("check,cls", [(check_layer_norm, LayerNormManual),
                                       (check_feed_forward, FeedForwardFunctional),
                                       (check_transformer_block, BlockOwnParts)])
def test_checks_leave_the_global_random_state_alone(check, cls):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check(cls, seed=0, quiet=True)
    assert torch.equal(torch.rand(3), expected)


def test_fallback_uses_the_learners_class_only_when_it_passes(capsys):
    assert fallback("LayerNorm", LayerNormManual) is LayerNormManual
    assert fallback("FeedForward", M.FeedForwardNoActivation) is mhsa_lib.FeedForward
    assert fallback("TransformerBlock", BlockBranches) is BlockBranches
    assert "mhsa_lib.FeedForward instead" in capsys.readouterr().out


# --------------------------------------------------------------------------- generated variants
# Mistakes no hand-written mutant models, named from the generated variants
# (autograder/checks/variants_modules.py) in the learner's terms.


class LayerNormOverTokenAndPositions(LayerNormManual):
    def forward(self, x):
        mean = x.mean(dim=(-2, -1), keepdim=True)
        var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class LayerNormWeightOnly(LayerNormManual):
    def forward(self, x):
        mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
        return self.weight * (x - mean) * torch.rsqrt(var + self.eps)


class LayerNormSwappedAffineUnbiased(LayerNormManual):
    def forward(self, x):
        xhat = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + self.eps)
        return xhat * self.bias + self.weight


class FeedForwardSiLU(FeedForwardFunctional):
    def forward(self, x):
        return self.fc2(F.silu(self.fc1(x)))


class FeedForwardActivationLast(FeedForwardFunctional):
    def forward(self, x):
        return self.act(self.fc2(self.fc1(x)))


class BlockFFNReadsInput(BlockOwnParts):
    """The FFN reads x, not the attention sub-layer's output."""

    def forward(self, x, mask=None):
        h = self._residual(x, lambda t: self.attn(t, mask), self.norm1, self.drop1)
        if self.pre:
            return h + self.ffn(self.norm2(x))
        return self.norm2(h + self.ffn(x))


class BlockNoFFNResidual(BlockOwnParts):
    def forward(self, x, mask=None):
        h = self._residual(x, lambda t: self.attn(t, mask), self.norm1, self.drop1)
        return self.ffn(self.norm2(h)) if self.pre else self.norm2(self.ffn(h))


class BlockFinalNorm(BlockOwnParts):
    def forward(self, x, mask=None):
        y = super().forward(x, mask)
        return self.norm2(y) if self.pre else y


class BlockPostNormTwice(BlockOwnParts):
    """Post-norm that normalises each residual sum twice (pre-norm is right)."""

    def _residual(self, x, f, norm, drop):
        return x + drop(f(norm(x))) if self.pre else norm(norm(x + drop(f(x))))


class BlockGelu(BlockOwnParts):
    def __init__(self, d_model, num_heads, d_ff, norm_placement="pre", dropout=0.0):
        super().__init__(d_model, num_heads, d_ff, norm_placement, dropout)
        self.ffn.act = F.gelu


@pytest.mark.parametrize("check,cls,words", [
    (check_layer_norm, LayerNormOverTokenAndPositions, "over the positions and features together"),
    (check_layer_norm, LayerNormWeightOnly, "the bias is never added"),
    (check_layer_norm, LayerNormSwappedAffineUnbiased, "swap the weight and the bias"),
    (check_layer_norm, LayerNormSwappedAffineUnbiased, "unbiased variance"),
    (check_feed_forward, FeedForwardSiLU, "uses SiLU"),
    (check_feed_forward, FeedForwardActivationLast, "after fc2 instead of between"),
    (check_transformer_block, BlockFFNReadsInput, "FFN reads the block's input x"),
    (check_transformer_block, BlockNoFFNResidual, "feed-forward sub-layer has no residual"),
    (check_transformer_block, BlockFinalNorm, "norm2 once more"),
    (check_transformer_block, BlockGelu, "GELU where the block asks for ReLU"),
    (check_transformer_block, BlockPostNormTwice, "norm_placement='post': You apply the norm twice"),
])
def test_block_variants_are_named(check, cls, words, capsys):
    points, report = run(check, cls, capsys, seed=3)
    assert points < check.step.points, report
    assert words.lower() in report.lower(), report


def test_block_final_norm_is_named_for_pre_norm_only(capsys):
    points, report = run(check_transformer_block, BlockFinalNorm, capsys, seed=1)
    assert "norm_placement='pre': You apply norm2 once more" in report, report
    assert "norm_placement='post'" not in report.split("Diagnosis")[-1], report


@pytest.mark.parametrize("check,cls", [(check_layer_norm, LayerNormManual),
                                       (check_feed_forward, FeedForwardFunctional),
                                       (check_transformer_block, BlockOwnParts)])
def test_block_correct_styles_get_no_diagnosis(check, cls, capsys):
    points, report = run(check, cls, capsys, seed=8)
    assert points == check.step.points and "Diagnosis" not in report, report


# --------------------------------------------------------------------------- answers as learners write them
# Wrong ones lose points and are named; correct ones, in other styles, earn full marks.


class _LNParams(nn.Module):
    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))


class _LNUnbiased(_LNParams):
    def forward(self, x):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + self.eps) * self.weight + self.bias


class _LNNoAffine(_LNParams):
    def forward(self, x):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + self.eps)


class _LNFloat64Rsqrt(_LNParams):
    def forward(self, x):
        x64 = x.double()
        mu = x64.mean(-1, keepdim=True)
        var = ((x64 - mu) ** 2).mean(-1, keepdim=True)
        return ((x64 - mu) * torch.rsqrt(var + self.eps) * self.weight.double() + self.bias.double()).to(x.dtype)


class _FFNAlwaysGelu(nn.Module):
    def __init__(self, d_model, d_ff, activation="relu"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _FFNSequential(nn.Module):
    def __init__(self, d_model, d_ff, activation="relu", dropout=0.0):
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation: expected 'relu' or 'gelu', got {activation!r}")
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.net = nn.Sequential(self.fc1, nn.ReLU() if activation == "relu" else nn.GELU(), self.fc2)

    def forward(self, x):
        return self.net(x)


class _BlockParts(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, norm_placement="pre", dropout=0.0, **kwargs):
        super().__init__()
        if norm_placement not in ("pre", "post"):
            raise ValueError(f"norm_placement: expected 'pre' or 'post', got {norm_placement!r}")
        self.placement = norm_placement
        self.attn = mhsa_lib.MultiHeadAttention(d_model, num_heads)
        self.ffn = mhsa_lib.FeedForward(d_model, d_ff)
        self.norm1, self.norm2 = mhsa_lib.LayerNorm(d_model), mhsa_lib.LayerNorm(d_model)


class _BlockAlwaysPost(_BlockParts):
    def forward(self, x, mask=None):
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.ffn(x))


class _BlockKwargs(_BlockParts):
    def forward(self, x, mask=None, **kwargs):
        if self.placement == "pre":
            x = x + self.attn(self.norm1(x), mask=mask, **kwargs)
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.attn(x, mask=mask, **kwargs))
        return self.norm2(x + self.ffn(x))


LEARNER_ANSWERS = [
    # (check, answer, full marks?, words the report must hold)
    (check_layer_norm, _LNUnbiased, False, ["unbiased variance"]),
    (check_layer_norm, _LNNoAffine, False, ["weight and bias are not applied"]),
    (check_layer_norm, _LNFloat64Rsqrt, True, []),
    (check_feed_forward, _FFNAlwaysGelu, False, ["GELU where ReLU is asked for"]),
    (check_feed_forward, _FFNSequential, True, []),
    (check_transformer_block, _BlockAlwaysPost, False, ["the other placement"]),
    (check_transformer_block, _BlockKwargs, True, []),
]


@pytest.mark.parametrize("check, answer, full, words", LEARNER_ANSWERS,
                         ids=[f"{c.step.name}-{a.__name__}" for c, a, _, _ in LEARNER_ANSWERS])
def test_learner_answers(check, answer, full, words, capsys):
    points, out = run(check, answer, capsys, hidden=True, seed=11)
    if full:
        assert points == check.step.points, out
    else:
        assert points < check.step.points, out
        for word in words:
            assert word in out, out
