"""Notebook 06's head probe is scored as a test that must separate correct modules from broken
ones: answers that ignore the module (always True, always False), the inverted answer and a
random one earn nothing; a probe that catches one of the two bugs earns half; correct probes
written in different ways earn full marks."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import run_check

from autograder.checks import debugging as C
from autograder.mistakes import debugging as M


def permutation_probe(module):
    d = module.q_proj.in_features
    x = torch.randn(2, 7, d, dtype=module.q_proj.weight.dtype)
    perm = torch.randperm(7)
    with torch.no_grad():
        return torch.allclose(module(x[:, perm]), module(x)[:, perm], atol=1e-5)


def reversal_probe(module):
    """Written differently: reversing the tokens, a relative tolerance, a tensor as the verdict."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, module.q_proj.in_features, generator=gen, dtype=module.q_proj.weight.dtype)
    with torch.no_grad():
        y, y_rev = module(x), module(x.flip(1))
    return ((y.flip(1) - y_rev).abs() <= 1e-5 + 1e-4 * y.abs()).all()


def _random_probe(seed):
    rng = random.Random(seed)
    return lambda module: rng.random() < 0.5


CONSTANT_AND_WORSE = {
    "always True": lambda module: True,
    "always False": lambda module: False,
    "always torch.tensor(True)": lambda module: torch.tensor(True),
    "inverted": lambda module: not permutation_probe(module),
    "shape only (always True in effect)": M.probe_shape_only,
    "not a verdict": lambda module: "yes",
}


@pytest.mark.parametrize("name", sorted(CONSTANT_AND_WORSE))
@pytest.mark.parametrize("hidden", [False, True])
def test_answers_that_do_not_separate_earn_nothing(name, hidden, capsys):
    points, out = run_check(C.check_head_probe, CONSTANT_AND_WORSE[name], capsys, hidden=hidden, seed=11)
    assert points == 0.0, out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("hidden", [False, True])
def test_a_random_answer_earns_nothing(seed, hidden, capsys):
    # (called directly: run_check's second, split run would draw other random answers)
    points = C.check_head_probe(_random_probe(seed), seed=seed, hidden=hidden)
    out = capsys.readouterr().out
    assert points == 0.0, out
    assert "answered differently" in out or "does not separate" in out or "accepts a broken" in out


def test_a_probe_that_changes_its_mind_is_named(capsys):
    calls = []

    def flip_flop(module):
        calls.append(1)
        return len(calls) % 2 == 1

    points, out = run_check(C.check_head_probe, flip_flop, capsys, seed=3)
    assert points == 0.0 and "answered differently" in out


@pytest.mark.parametrize("probe", [permutation_probe, reversal_probe])
@pytest.mark.parametrize("hidden", [False, True])
def test_correct_probes_written_differently_earn_full_marks(probe, hidden, capsys):
    points, out = run_check(C.check_head_probe, probe, capsys, hidden=hidden, seed=7)
    assert points == C.PROBE_POINTS, out


def test_a_probe_that_catches_one_bug_earns_half(capsys):
    def merge_only(module):  # right about correct modules and the merge bug, fooled by the split bug
        return isinstance(module, M.MHASplitNoTranspose) or bool(permutation_probe(module))

    points, out = run_check(C.check_head_probe, merge_only, capsys, seed=4)
    assert points == C.PROBE_POINTS / 2, out
    assert "accepts a broken module" in out


def test_a_probe_that_also_rejects_correct_modules_earns_nothing(capsys):
    victim = []

    def too_strict(module):  # catches both bugs, but rejects the first correct module it meets
        ok = bool(permutation_probe(module))
        if ok and not victim:
            victim.append(module)
        return ok and module is not victim[0]

    # (called directly: run_check's second, split run would meet other modules first)
    points = C.check_head_probe(too_strict, hidden=True, seed=9)
    out = " ".join(capsys.readouterr().out.split())
    assert points == 0.0, out
    assert "rejects correct modules too" in out
