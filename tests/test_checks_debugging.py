"""Notebook 06's checks: each incident's repair, written in different correct ways, earns full
marks; the code as shipped and the other wrong repairs lose points and are named; the head
probe is graded on correct and broken modules; the speed fix must keep the outputs and beat the
slow version in the same run."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check
from torch import nn

import mhsa_lib
from autograder.checks import debugging as C
from autograder.mistakes import debugging as M

run = run_check


# --------------------------------------------------------------------------- incident 1


class FixedBlock(M._Block):
    placement = ("pre", "pre")


class FixedBlockWritten(nn.Module):
    def __init__(self, d_model, num_heads, d_ff):
        super().__init__()
        self.attn = mhsa_lib.MultiHeadAttention(d_model, num_heads)
        self.ffn = mhsa_lib.FeedForward(d_model, d_ff)
        self.norm1 = mhsa_lib.LayerNorm(d_model)
        self.norm2 = mhsa_lib.LayerNorm(d_model)

    def forward(self, x, mask=None):
        h = x + self.attn(self.norm1(x), mask)
        return h + self.ffn(self.norm2(h))


@pytest.mark.parametrize("cls", [FixedBlock, FixedBlockWritten])
def test_fixed_block_full_marks(cls, capsys):
    points, out = run(C.check_fixed_block, cls, capsys, hidden=True, seed=3)
    assert points == C.BLOCK_POINTS, out


BLOCK_WORDS = {"fix-block-refactored": "as the refactor shipped", "fix-block-mixed-other-way": "other way",
               "fix-block-post-norm": "post-norm in both", "fix-block-norm-on-output": "x + LN(F(x))"}


@pytest.mark.parametrize("mistake", M.BLOCK_MISTAKES, ids=lambda m: m.id)
def test_block_mistakes(mistake, capsys):
    points, out = run(C.check_fixed_block, mistake.fn, capsys, seed=3)
    assert points < C.BLOCK_POINTS
    assert BLOCK_WORDS[mistake.id].split()[0] in out


def test_block_shortcut(capsys):
    class Shortcut(FixedBlock):
        def forward(self, x, mask=None):
            ref = mhsa_lib.TransformerBlock(x.shape[-1], self.attn.num_heads, self.ffn.fc1.out_features).to(x.dtype)
            ref.load_state_dict(self.state_dict())
            return ref(x, mask)

    points, out = run(C.check_fixed_block, Shortcut, capsys, seed=3)
    assert points == 0.0 and "TransformerBlock" in out


# --------------------------------------------------------------------------- incident 2


class FixedAttention(M.MHAMergeNoTranspose):
    merge_no_transpose = False


def test_fixed_attention(capsys):
    points, out = run(C.check_fixed_attention, FixedAttention, capsys, hidden=True, seed=2)
    assert points == C.ATTENTION_POINTS, out
    points, out = run(C.check_fixed_attention, M.MHAMergeNoTranspose, capsys, seed=2)
    assert points == 0.0 and "Transpose back first" in out
    points, out = run(C.check_fixed_attention, M.MHASplitNoTranspose, capsys, seed=2)
    assert points < C.ATTENTION_POINTS and "split is broken" in out


def permutation_probe(module):
    d = module.q_proj.in_features
    x = torch.randn(2, 7, d, dtype=module.q_proj.weight.dtype)
    perm = torch.randperm(7)
    with torch.no_grad():
        return torch.allclose(module(x[:, perm]), module(x)[:, perm], atol=1e-5)


def head_independence_probe(module):
    d, h = module.q_proj.in_features, module.num_heads
    dh = d // h
    x = torch.randn(1, 5, d, dtype=module.q_proj.weight.dtype)
    with torch.no_grad():
        before = module(x)
        saved = module.out_proj.weight.clone()
        module.out_proj.weight[:, dh:] = 0  # only head 0's features reach the output
        only0 = module(x)
        module.q_proj.weight[dh:2 * dh] += 1.0  # change head 1's queries
        after = module(x)
        module.q_proj.weight[dh:2 * dh] -= 1.0
        module.out_proj.weight.copy_(saved)
    return bool(torch.allclose(only0, after, atol=1e-5)) and before.shape == x.shape


@pytest.mark.parametrize("probe", [permutation_probe, head_independence_probe])
def test_probes_full_marks(probe, capsys):
    points, out = run(C.check_head_probe, probe, capsys, hidden=True, seed=5)
    assert points == C.PROBE_POINTS, out


def test_weak_probes(capsys):
    """A probe is scored on what it separates: a constant answer earns nothing (see
    tests/test_probe_scoring.py for the whole family of answers that must earn 0)."""
    points, out = run(C.check_head_probe, M.probe_shape_only, capsys, seed=5)
    assert points == 0.0 and "accepts a broken module" in out
    points, out = run(C.check_head_probe, lambda m: False, capsys, seed=5)
    assert points == 0.0 and "does not separate" in out

    def stub(module):
        raise NotImplementedError()

    points, out = run(C.check_head_probe, stub, capsys)
    assert points == 0.0 and "not implemented yet" in out


# --------------------------------------------------------------------------- incident 3


class StableEncoder(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, num_layers):
        super().__init__()
        self.blocks = nn.ModuleList(mhsa_lib.TransformerBlock(d_model, num_heads, d_ff, "pre") for _ in range(num_layers))
        self.norm = mhsa_lib.LayerNorm(d_model)

    def forward(self, x, mask=None):
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


def test_stable_encoder(capsys):
    points, out = run(C.check_stable_encoder, StableEncoder, capsys, hidden=True, seed=7)
    assert points == C.ENCODER_POINTS, out
    points, out = run(C.check_stable_encoder, M.PostNormEncoder, capsys, seed=7)
    assert points == 0.0 and "still post-norm" in out
    points, out = run(C.check_stable_encoder, M.PreNormNoFinalNorm, capsys, seed=7)
    assert points == 0.0 and "no final LayerNorm" in out


# --------------------------------------------------------------------------- incident 4


class FastTril(M.SlowCausalAttention):
    def forward(self, x):
        b, t, d = x.shape
        h = self.num_heads
        q, k, v = (p(x).view(b, t, h, d // h).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        scores = (q @ k.transpose(-2, -1) / math.sqrt(d // h)).masked_fill(~mask, float("-inf"))
        return self.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class FastSdpa(M.SlowCausalAttention):
    def forward(self, x):
        b, t, d = x.shape
        h = self.num_heads
        q, k, v = (p(x).view(b, t, h, d // h).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class FastLazy(FastSdpa):
    """The fix written with nn.LazyLinear layers, which learn their input width from the first call."""

    def __init__(self, d_model, num_heads):
        super().__init__(d_model, num_heads)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, nn.LazyLinear(d_model))


@pytest.mark.parametrize("cls", [FastTril, FastSdpa, FastLazy])
def test_fast_attention_full_marks(cls, capsys):
    points, out = run(C.check_fast_causal_attention, cls, capsys, seed=1)
    assert points == C.SPEED_POINTS, out


def test_unfixed_and_wrong_fast_versions(capsys):
    points, out = run(C.check_fast_causal_attention, M.SlowCausalAttention, capsys, seed=1)
    assert points == 2.0 and "✗ at least" in out
    points, out = run(C.check_fast_causal_attention, M.FastButNotCausal, capsys, seed=1)
    assert points == 0.0 and "no longer causal" in out
    points, out = run(C.check_fast_causal_attention, M.FastUpperLeftWrong, capsys, seed=1)
    assert points == 0.0 and "triu" in out


def test_unfinished_encoder_constructor_says_not_implemented(capsys):
    from autograder import check_stable_encoder

    class StableEncoder(nn.Module):
        def __init__(self, d_model, num_heads, d_ff, num_layers):
            super().__init__()
            raise NotImplementedError()

    assert check_stable_encoder(StableEncoder) == 0.0
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "random sizes" not in out


# --------------------------------------------------------------------------- answers as learners write them
# Wrong repairs lose points and are named (from the generated variants where no hand-written
# mistake fits); correct repairs, in other styles, earn full marks.


class _BlockFfnReadsInput(M.RefactoredBlock):
    def forward(self, x, mask=None):
        h = x + self.attn(self.norm1(x), mask)
        return h + self.ffn(self.norm2(x))  # the FFN reads x, not h


class _BlockExtraOutputNorm(M.RefactoredBlock):
    def forward(self, x, mask=None):
        h = x + self.attn(self.norm1(x), mask)
        return self.norm2(h + self.ffn(self.norm2(h)))


class _BlockKwargs(M.RefactoredBlock):
    def forward(self, x, mask=None, **kwargs):
        x = x + self.attn(self.norm1(x), mask, **kwargs)
        x = x + self.ffn(self.norm2(x))
        return x


class _AttentionMerge(mhsa_lib.MultiHeadAttention):
    def forward(self, x, mask=None):
        b, t, d = x.shape
        h = self.num_heads
        q, k, v = (p(x).view(b, t, h, d // h).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, _ = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(self.merge(out))


class _AttentionMergeDimMajor(_AttentionMerge):
    def merge(self, out):
        b, h, t, dh = out.shape
        return out.permute(0, 2, 3, 1).reshape(b, t, h * dh)


class _AttentionMergeEinsum(_AttentionMerge):
    def merge(self, out):
        b, h, t, dh = out.shape
        return torch.einsum("bhtd->bthd", out).reshape(b, t, h * dh)


class _EncoderOneSharedBlock(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, num_layers):
        super().__init__()
        block = mhsa_lib.TransformerBlock(d_model, num_heads, d_ff, "pre")
        self.blocks = nn.ModuleList([block] * num_layers)
        self.norm = mhsa_lib.LayerNorm(d_model)

    def forward(self, x, mask=None):
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class _EncoderNormFirst(M.PreNormNoFinalNorm):
    def forward(self, x, mask=None):
        x = self.norm(x)
        for block in self.blocks:
            x = block(x, mask)
        return x


class _EncoderDeepcopyTorchNorm(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, num_layers):
        super().__init__()
        import copy

        block = mhsa_lib.TransformerBlock(d_model, num_heads, d_ff, norm_placement="pre")
        self.blocks = nn.ModuleList(copy.deepcopy(block) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x, mask=None):
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class _CausalWithMakeMask(M.SlowCausalAttention):
    """Incident 4 as the notebook ships it: the mask built by ``make_mask``, which a repair replaces."""

    def make_mask(self, t, device):
        mask = torch.zeros(t, t, dtype=torch.bool)
        for i in range(t):
            for j in range(t):
                mask[i, j] = j <= i
        return mask.to(device)

    def forward(self, x):
        b, t, d = x.shape
        h = self.num_heads
        q, k, v = (p(x).view(b, t, h, d // h).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        s = (q @ k.transpose(-2, -1) / math.sqrt(d // h)).masked_fill(~self.make_mask(t, x.device), float("-inf"))
        return self.out_proj((torch.softmax(s, -1) @ v).transpose(1, 2).reshape(b, t, d))


class _CausalNoDiagonal(_CausalWithMakeMask):
    def make_mask(self, t, device):
        return torch.ones(t, t, dtype=torch.bool, device=device).tril(-1)


class _CausalNotTriu(_CausalWithMakeMask):
    def make_mask(self, t, device):
        return ~torch.ones(t, t, dtype=torch.bool, device=device).triu(1)


class _CausalBuffer(_CausalWithMakeMask):
    """nanoGPT's way: one triangle built once, as a buffer, sliced per call."""

    def __init__(self, d_model, num_heads, max_len=512):
        super().__init__(d_model, num_heads)
        self.register_buffer("tri", torch.tril(torch.ones(max_len, max_len)).bool(), persistent=False)

    def make_mask(self, t, device):
        return self.tri[:t, :t]


def _probe_rolled_float64(module):
    import copy

    m = copy.deepcopy(module).double()
    x = torch.randn(3, 5, m.q_proj.weight.shape[1], dtype=torch.float64)
    with torch.no_grad():
        return (m(torch.roll(x, 2, 1)) - torch.roll(m(x), 2, 1)).abs().max().item() < 1e-8


def _probe_returns_tensor(module):
    x = torch.randn(1, 6, module.q_proj.in_features)
    p = torch.randperm(6)
    with torch.no_grad():
        return torch.isclose(module(x)[:, p], module(x[:, p]), atol=1e-4).all()


def _probe_exact_equality(module):
    x = torch.randn(2, 7, module.q_proj.in_features)
    perm = torch.randperm(7)
    with torch.no_grad():
        return bool(torch.equal(module(x[:, perm]), module(x)[:, perm]))


LEARNER_ANSWERS = [
    # (check, answer, full marks?, words the report must hold)
    (C.check_fixed_block, _BlockFfnReadsInput, False, ["FFN reads the block's input x"]),
    (C.check_fixed_block, _BlockExtraOutputNorm, False, ["norm2 once more"]),
    (C.check_fixed_block, _BlockKwargs, True, []),
    (C.check_fixed_attention, _AttentionMergeDimMajor, False, ["features ordered (Dh, H)"]),
    (C.check_fixed_attention, _AttentionMergeEinsum, True, []),
    (C.check_head_probe, _probe_exact_equality, False, ["tolerance"]),
    (C.check_head_probe, _probe_rolled_float64, True, []),
    (C.check_head_probe, _probe_returns_tensor, True, []),
    (C.check_stable_encoder, _EncoderOneSharedBlock, False, ["same block object"]),
    (C.check_stable_encoder, _EncoderNormFirst, False, ["final LayerNorm before the blocks"]),
    (C.check_stable_encoder, _EncoderDeepcopyTorchNorm, True, []),
    (C.check_fast_causal_attention, _CausalNoDiagonal, False, ["leaves out the diagonal"]),
    (C.check_fast_causal_attention, _CausalNotTriu, True, []),
    (C.check_fast_causal_attention, _CausalBuffer, True, []),
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


@pytest.mark.parametrize("check, cls", [(C.check_fixed_attention, _AttentionMergeDimMajor),
                                        (C.check_fast_causal_attention, _CausalNoDiagonal)])
def test_attention_repairs_show_no_feed_forward_width(check, cls, capsys):
    """The random sizes of an attention module name B, T, D and H; it has no F."""
    points, out = run(check, cls, capsys, hidden=True, seed=2)
    assert "random sizes (B, T, H, Dh all different)" in out and ", F=" not in out, out
