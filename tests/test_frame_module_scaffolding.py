"""The scaffolding the module checks share (autograder/frame/modules.py): building a learner's class
on cases against a reference, the layout of norms and linear layers, the token-wise and
position-wise probes, hard-coded answers and forbidden calls."""

import torch
from torch import nn

import mhsa_lib
from autograder.frame.compare import compare
from autograder.frame.mistakes import mistake
from autograder.frame.modules import (
    ModuleCases,
    answers_public_anyway,
    linear_layer_problems,
    mistake_with_reference,
    module_shortcuts,
    output_to_probe,
    parameter_problems,
    position_wise_problems,
    reference,
    token_wise_problems,
    tokens,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class MeanMixingFFN(nn.Module):
    """Not position-wise: every output position sees the mean over the positions."""

    def __init__(self, d, f, activation="relu"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x + x.mean(-2, keepdim=True))))


class SequenceNorm(nn.Module):
    """A LayerNorm over the positions and features together: tokens are not normalised on their own."""

    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps, self.weight, self.bias = eps, nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))

    def forward(self, x):
        mu = x.mean((-2, -1), keepdim=True)
        var = x.var((-2, -1), keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias


X_PUBLIC = tokens(torch.Generator().manual_seed(5), 1, 3, 4)


class PublicOnly(nn.Module):
    """Computes the public input's answer whatever the input."""

    def __init__(self, d, f, activation="relu"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(X_PUBLIC.to(x.dtype))))


def test_cases_keep_every_run_and_compare_with_the_reference():
    gen = _gen()
    cases = ModuleCases(mhsa_lib.FeedForward, lambda y, e: compare(y, e, what="output"))
    ref = reference(mhsa_lib.FeedForward(4, 6), gen)
    x = tokens(gen, 2, 3, 4)
    y, c = cases.compare((4, 6), {}, ref, x, "case 1")
    assert c.ok and y.shape == x.shape and len(cases.seen) == 1 and cases.seen[0][0] == "case 1"
    wrong = ModuleCases(MeanMixingFFN, lambda y, e: compare(y, e, what="output"))
    _, c = wrong.compare((4, 6), {}, ref, x, "case 1")
    assert not c.ok and "differ" in c.detail, c.detail


def test_a_class_that_cannot_be_built_fails_with_why_and_is_not_kept():
    class Broken(nn.Module):
        def __init__(self, d, f):
            raise ValueError("no")

    cases = ModuleCases(Broken, lambda y, e: compare(y, e))
    ref = reference(mhsa_lib.FeedForward(4, 6), _gen())
    y, c = cases.compare((4, 6), {}, ref, tokens(_gen(), 1, 3, 4), None)
    assert isinstance(y, str) and not c.ok and c.detail == y and "ValueError" in y and not cases.seen


def test_norm_parameters_and_linear_layers_are_inspected():
    assert parameter_problems(mhsa_lib.LayerNorm(7), "LayerNorm(7)", 7, {"weight": 1.0, "bias": 0.0}) == []
    shifted = mhsa_lib.LayerNorm(7)
    with torch.no_grad():
        shifted.bias.fill_(1.0)
    assert parameter_problems(shifted, "LayerNorm(7)", 7, {"weight": 1.0, "bias": 0.0}) == [
        "bias should start as all 0s"]
    problems = parameter_problems(mhsa_lib.LayerNorm(7), "RMSNorm(7)", 7, {"weight": 1.0}, {"bias": "no bias"})
    assert problems == ["no bias"]
    assert parameter_problems(object(), "RMSNorm(7)", 7, {"weight": 1.0}) == [
        "RMSNorm(7) built a object, expected an nn.Module"]

    ffn = mhsa_lib.FeedForward(5, 8)
    assert linear_layer_problems(ffn, "FeedForward(5, 8)", 5, {"fc1": (5, 8), "fc2": (8, 5)}, bias=True) == []
    problems = linear_layer_problems(ffn, "SwiGLU", 5, {"fc1": (5, 8), "fc3": (8, 5)}, bias=False, family="SwiGLU's")
    assert problems == ["fc1 has a bias: SwiGLU's linear layers have none (bias=False)",
                        "fc3 is NoneType, expected nn.Linear(8, 5, bias=False)"]
    swiglu = mhsa_lib.SwiGLUFeedForward(5, 8)
    assert linear_layer_problems(swiglu, "SwiGLU", 5, {"up_proj": (5, 8)}, bias=True) == [
        "up_proj is nn.Linear(5, 8, bias=False), expected nn.Linear(5, 8) with a bias"]


def test_the_position_wise_probes_catch_a_module_that_mixes_positions():
    gen = _gen(1)
    ref = reference(mhsa_lib.FeedForward(4, 9), gen)
    for cls, expect_problems in ((mhsa_lib.FeedForward, False), (MeanMixingFFN, True)):
        mod = cls(4, 9).double()
        mod.load_state_dict(ref.state_dict())
        x = tokens(gen, 2, 6, 4)
        y = output_to_probe(mod, x)
        problems = position_wise_problems(mod, ref, gen, x, y)
        assert bool(problems) == expect_problems, problems
    assert any("changing the first token" in p for p in problems)  # (a mean is blind to a permutation)
    assert output_to_probe(lambda x: x[0], x, "(B, T, D) = ") == [
        f"expected an output of shape (B, T, D) = {tuple(x.shape)} to probe"]


def test_the_token_wise_probes_catch_a_norm_over_the_sequence():
    gen = _gen(2)
    ref = mhsa_lib.LayerNorm(6).double()
    for mod, expect_problems in ((mhsa_lib.LayerNorm(6).double(), False), (SequenceNorm(6).double(), True)):
        x = tokens(gen, 3, 5, 6)
        problems = token_wise_problems(mod, ref, gen, x, mod(x), ((5, 6), (2, 3, 4, 6)))
        assert bool(problems) == expect_problems, problems
    assert any("changing the first token" in p for p in problems)


def test_a_hard_coded_answer_and_a_library_call_are_found():
    gen = _gen(3)
    ref = reference(mhsa_lib.FeedForward(4, 6), _gen(4))
    x_pub = X_PUBLIC
    assert answers_public_anyway(PublicOnly, (4, 6), {}, ref, x_pub, gen, built_on=x_pub)
    assert not answers_public_anyway(mhsa_lib.FeedForward, (4, 6), {}, ref, x_pub, gen, built_on=x_pub)

    class CallsTheLibrary(nn.Module):
        def __init__(self, d, f):
            super().__init__()
            self.inner = mhsa_lib.FeedForward(d, f)
            self.fc1, self.fc2 = self.inner.fc1, self.inner.fc2

        def forward(self, x):
            return self.inner(x)

    ref = reference(mhsa_lib.FeedForward(5, 7), gen)
    assert module_shortcuts(CallsTheLibrary, (5, 7), {}, ref, 5, gen, (), ("FeedForward",))
    assert not module_shortcuts(mhsa_lib.FeedForward, (5, 7), {}, ref, 5, gen, (), ("SwiGLUFeedForward",))


def test_a_mistake_runs_with_the_reference_parameters():
    ref = reference(mhsa_lib.FeedForward(4, 6), _gen(6))
    x = tokens(_gen(7), 2, 3, 4)
    same = mistake("same", lambda d, f: mhsa_lib.FeedForward(d, f))
    assert torch.allclose(mistake_with_reference(same, (4, 6), ref, x), ref(x))
