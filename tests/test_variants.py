"""The variant generator of the check frame (autograder/frame/variants.py)."""

import pytest
import torch

from autograder.frame.diagnosis import matching_mistake
from autograder.frame.variants import Axis, count, generate


def _scaled_softmax(choices):
    def fn(x):
        y = x / choices["scale"]
        return torch.softmax(y, dim=choices["dim"])
    return fn


AXES = [Axis("scale", 1.0, {2.0: "you divide by 2", 4.0: "you divide by 4"}),
        Axis("dim", -1, {0: "you normalise over the first axis"})]


def test_variants_fewest_changes_first_and_named():
    found = list(generate(AXES, _scaled_softmax))
    assert [m.id for m in found] == ["scale=2.0", "scale=4.0", "dim=0", "scale=2.0,dim=0", "scale=4.0,dim=0"]
    assert found[3].advice == "You divide by 2; and you normalise over the first axis"
    assert count(AXES) == len(found)


def test_a_learner_output_is_matched_to_its_variant():
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    learner = torch.softmax(x / 4.0, dim=0)
    m = matching_mistake([(x, learner)], generate(AXES, _scaled_softmax), lambda m, case: m.fn(case))
    assert m is not None and m.id == "scale=4.0,dim=0"
    assert matching_mistake([(x, torch.softmax(x, -1))], generate(AXES, _scaled_softmax),
                            lambda m, case: m.fn(case)) is None


def test_bad_axes_are_refused():
    with pytest.raises(ValueError, match="correct choice"):
        Axis("scale", 1.0, {1.0: "same"})
    with pytest.raises(ValueError, match="distinct names"):
        list(generate([AXES[0], AXES[0]], _scaled_softmax))
