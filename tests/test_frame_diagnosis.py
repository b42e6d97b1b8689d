"""The one search that names a known mistake from a learner's outputs (autograder/frame/diagnosis.py):
single tensors, pairs of tensors, bool masks, errors among the outputs, the order of the cases."""

import pytest
import torch

from autograder.frame.diagnosis import anything, matching_mistake, same_mask, same_pair
from autograder.frame.errors import LearnerError
from autograder.frame.mistakes import SAME_OUTPUT, mistake

_GEN = torch.Generator().manual_seed(3)
X = torch.randn(3, 4, generator=_GEN, dtype=torch.float64)


def _produce(m, case):
    return m.fn(case)


def test_a_single_tensor_is_matched_and_a_same_output_mistake_is_skipped():
    hidden = mistake("library", lambda x: x * 2, "calls the library", flags=(SAME_OUTPUT,))
    doubled = mistake("double", lambda x: x * 2, "doubles")
    assert matching_mistake([(X, X * 2)], [hidden, doubled], _produce) is doubled
    assert matching_mistake([(X, X * 3)], [hidden, doubled], _produce) is None


def test_pairs_of_tensors_need_both_parts_to_match():
    swapped = mistake("swapped", lambda x: (x.T, x), "swaps")
    right_first = mistake("first", lambda x: (x, x.T), "right order")
    found = matching_mistake([(X, (X, X.T))], [swapped, right_first], _produce, same=same_pair, usable=anything)
    assert found is right_first
    assert matching_mistake([(X, (X, X))], [swapped, right_first], _produce, same=same_pair, usable=anything) is None
    assert matching_mistake([(X, [X, X.T])], [right_first], _produce, same=same_pair, usable=anything) is right_first


def test_bool_masks_compare_dtype_shape_and_entries():
    lower = mistake("lower", lambda n: torch.ones(n, n, dtype=torch.bool).tril(), "lower")
    upper = mistake("upper", lambda n: torch.ones(n, n, dtype=torch.bool).triu(), "upper")
    learner = torch.ones(4, 4, dtype=torch.bool).triu()
    assert matching_mistake([(4, learner)], [lower, upper], _produce, same=same_mask, usable=anything) is upper
    as_float = learner.float()  # same entries, another dtype: not the mistake
    assert matching_mistake([(4, as_float)], [lower, upper], _produce, same=same_mask, usable=anything) is None


def test_an_error_among_the_outputs_is_left_out_or_rules_out_as_asked():
    double = mistake("double", lambda x: x * 2, "doubles")
    seen = [(X, X * 2), (X + 1, LearnerError("raised ValueError: no"))]
    assert matching_mistake(seen, [double], _produce) is double  # tensors only: the error is left out
    assert matching_mistake(seen, [double], _produce, usable=anything) is None  # every output must match
    assert matching_mistake([(X, LearnerError("raised ValueError: no"))], [double], _produce) is None
    assert matching_mistake([], [double], _produce, usable=anything) is None


def test_a_mistake_that_raises_explains_nothing_and_the_search_goes_on():
    def broken(x):
        raise RuntimeError("cannot run")
    double = mistake("double", lambda x: x * 2, "doubles")
    assert matching_mistake([(X, X * 2)], [mistake("broken", broken), double], _produce) is double


def test_cheapest_first_runs_the_smallest_output_first():
    order = []

    def record(m, case):
        order.append(case.numel())
        return case * 5  # never the learner's: every mistake stops at its first case

    big, small = torch.zeros(6, 6, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    seen = [(big + 1, big), (small + 1, small)]
    matching_mistake(seen, [mistake("m", None)], record, cheapest_first=True)
    assert order == [2]
    order.clear()
    matching_mistake(seen, [mistake("m", None)], record)
    assert order == [36]


def test_tolerances_are_used():
    near = mistake("near", lambda x: x + 1e-3, "adds")
    assert matching_mistake([(X, X)], [near], _produce) is None
    assert matching_mistake([(X, X)], [near], _produce, atol=1e-2) is near


def test_produce_must_be_callable():
    with pytest.raises(TypeError, match="produce must be callable"):
        matching_mistake([(X, X)], [], "not a function")
