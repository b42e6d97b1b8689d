"""The capstone check: a model written the learner's way, trained with the notebook's budget,
earns full marks; the same model with attention replaced by the identity, or without positions,
stays under the threshold and is diagnosed; shortcuts, stubs and broken models earn nothing."""

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check
from torch import nn

import mhsa_lib
from autograder.checks.model import CAPSTONE_POINTS, SEQ_LEN, THRESHOLD, VOCAB, accuracy, check_capstone
from autograder.mistakes import model as M


def run(model, capsys, **kw):
    return run_check(check_capstone, model, capsys, **kw)


# A model written the learner's way (learned positions, a plain loop over mhsa_lib's blocks),
# unlike mhsa_lib.TinyTransformer; the known mistakes are variants of the same class.
LearnerModel = M.SortingModel


def train(model, steps=400):
    """The notebook's budget: 400 Adam steps of 128 fresh sequences, one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(1)
        for _ in range(steps):
            x, y = mhsa_lib.sorting_batch(128, SEQ_LEN, VOCAB, gen)
            loss = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    return train(LearnerModel())


@pytest.fixture(scope="module")
def identity_attention():
    torch.manual_seed(0)
    return train(M.model_with_identity_attention())


@pytest.mark.parametrize("hidden", [False, True])
def test_trained_model_earns_full_marks(trained, hidden, capsys):
    points, out = run(trained, capsys, hidden=hidden, seed=4)
    assert points == CAPSTONE_POINTS, out


def test_check_is_deterministic_and_leaves_the_model_alone(trained, capsys):
    trained.train()
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    rng = torch.get_rng_state()
    first = accuracy(trained, 1000, 2024)
    run(trained, capsys, seed=4)
    assert accuracy(trained, 1000, 2024) == first
    assert trained.training  # mode restored
    assert all(torch.equal(v, state[k]) for k, v in trained.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    trained.eval()


def test_identity_attention_stays_under_the_threshold(identity_attention, capsys):
    acc = accuracy(identity_attention, 1000, 2024)
    assert acc < THRESHOLD - 0.3, acc  # about 0.36 with the notebook's budget
    points, out = run(identity_attention, capsys, seed=4)
    assert points <= 0.5 * CAPSTONE_POINTS
    assert "as if attention were the identity" in out


def test_model_without_positions_is_diagnosed(capsys):
    torch.manual_seed(0)
    model = train(M.model_without_positions(), steps=60)
    points, out = run(model, capsys, seed=4)
    assert points < CAPSTONE_POINTS and "permutation-equivariant" in out


def test_untrained_model_loses_the_accuracy_points(capsys):
    torch.manual_seed(0)
    points, out = run(LearnerModel().eval(), capsys, seed=4)
    assert points <= 0.25 * CAPSTONE_POINTS + 1e-9  # interface and probes only
    assert "✗ held-out accuracy" in out


def test_library_model_and_computed_answers_earn_nothing(capsys):
    torch.manual_seed(0)
    points, out = run(mhsa_lib.TinyTransformer(VOCAB, 16, 2, 32, 1, SEQ_LEN), capsys, seed=4)
    assert points == 0.0 and "TinyTransformer" in out

    points, out = run(M.SortsTheInput(), capsys, seed=4)
    assert points == 0.0 and "torch's sort" in out


def test_missing_stub_and_broken_models(capsys):
    points, out = run(None, capsys)
    assert points == 0.0 and "no trained model yet" in out

    class Stub(nn.Module):
        def forward(self, tokens):
            raise NotImplementedError()

    points, out = run(Stub(), capsys)
    assert points == 0.0 and "not implemented yet" in out

    class WrongShape(LearnerModel):
        def forward(self, tokens):
            return super().forward(tokens).transpose(1, 2)  # (B, V, T)

    points, out = run(WrongShape(), capsys, seed=1)
    assert points == 0.0 and "expected logits (B, T, V)" in out

    points, out = run(lambda tokens: tokens, capsys)
    assert points == 0.0 and "nn.Module" in out


def test_the_mistakes_module_matches_the_task():
    assert (M.VOCAB, M.SEQ_LEN) == (VOCAB, SEQ_LEN)
    assert {m.id for m in M.CAPSTONE_MISTAKES} == {"capstone-identity-attention", "capstone-no-positions",
                                                   "capstone-sorts-the-input"}
