"""The one reader of torch's shape-error messages (autograder/frame/shape_errors.py), on the
messages torch really raises, with both ways of naming sizes."""

import pytest
import torch

from autograder.frame.calls import attempt
from autograder.frame.shape_errors import Letters, SizeNames, parse_error, read_shape_error


def _message(fn, *args):
    """torch's own message for ``fn(*args)``, as a learner's error carries it."""
    error = attempt(fn, *args)
    raised = parse_error(str(error))
    assert raised is not None, error
    return raised


def test_a_matrix_product_names_both_operands_and_the_inner_sizes():
    raised = _message(lambda a, b: a @ b, torch.zeros(3, 4), torch.zeros(5, 4))
    assert raised.about_shapes
    letters = Letters({"T": 3, "S": 5, "D": 4})
    text = read_shape_error(raised.message, letters)
    assert "a matrix product of (T, D) by (S, D) failed" in text, text
    assert "the last size of the left (D) must equal the first size of the right (S)" in text, text
    assert "nn.Linear" not in text  # only where the step applies nn.Linear weights
    text = read_shape_error(raised.message, {"T": 3, "S": 5, "D": 4}, linear_weights=True)
    assert "(T=3, D=4) by (S=5, D=4)" in text and "is applied as x @ W.T" in text, text


def test_a_broadcast_names_the_sizes_and_the_axis():
    raised = _message(lambda a, b: a + b, torch.zeros(2, 3, 5), torch.zeros(2, 3, 7))
    text = read_shape_error(raised.message, SizeNames({"B": 2, "T": 3, "S": 5, "D": 7}))
    assert "met sizes S=5 and D=7 on axis 2" in text, text


def test_a_batched_product_says_what_the_right_operand_should_start_with():
    raised = _message(torch.bmm, torch.zeros(6, 5, 4), torch.zeros(6, 5, 4))
    text = read_shape_error(raised.message, {"B·H": 6, "Dh": 4, "T": 5})
    assert "should start with (B·H=6, Dh=4) but starts with (B·H=6, T=5)" in text, text


def test_a_view_that_cannot_hold_its_input():
    raised = _message(lambda x: x.view(2, 5, 3, 5), torch.zeros(2, 5, 12))
    text = read_shape_error(raised.message, {"B": 2, "T": 5, "H": 3, "D": 12})
    assert "a view/reshape to (B=2, T=5, H=3, T=5) of a tensor of 120 elements failed" in text, text
    assert "split D into H·Dh" in text  # heads in the case: the split is the likely culprit
    assert "H·Dh" not in read_shape_error(raised.message, Letters({"B": 2, "T": 5}))


def test_an_axis_out_of_range_counts_the_axes():
    raised = _message(lambda x: x.transpose(1, 2), torch.zeros(3, 4))
    text = read_shape_error(raised.message, Letters({"T": 3, "D": 4}), ndims=[2, 2])
    assert "axis 2 of a tensor that has only 2 axes (the inputs here have 2)" in text, text
    assert "count axes from the end" in text
    assert "(B, H, T, Dh) was meant" in read_shape_error(raised.message, {"H": 2})


def test_a_concatenation_and_bmm_and_einsum_and_dtypes():
    raised = _message(lambda a, b: torch.cat([a, b], dim=-2), torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    text = read_shape_error(raised.message, {"B": 2, "G": 3, "Dh": 4})
    assert "torch.cat along axis" in text and "Dh=4 and 5" in text, text
    raised = _message(torch.bmm, torch.zeros(2, 2, 3, 4), torch.zeros(2, 2, 4, 5))
    assert "torch.bmm takes only 3-D tensors" in read_shape_error(raised.message, Letters({}))
    raised = _message(lambda a, b: torch.einsum("td,sd->ts", a, b), torch.zeros(2, 3, 4), torch.zeros(2, 5, 4))
    assert "your einsum does not fit these shapes" in read_shape_error(raised.message, Letters({}))
    raised = _message(lambda a, b: a @ b, torch.zeros(3, 4), torch.zeros(4, 2, dtype=torch.float64))
    assert "different dtypes" in read_shape_error(raised.message, {})


def test_other_errors_are_not_read():
    assert read_shape_error("name 'q' is not defined", {"B": 2}) is None
    raised = parse_error("raised ZeroDivisionError: division by zero (line 1: 1 / 0)")
    assert raised.type == "ZeroDivisionError" and raised.line == "1 / 0" and not raised.about_shapes
    assert parse_error("not implemented yet") is None


def test_sizes_are_named_each_way():
    assert Letters({"T": 3, "Dv": 3, "S": 7}).shape((3, 7)) == "(3, S)"  # a shared size keeps its number
    assert Letters({"D": 4}).shape((4,)) == "(D,)"
    names = SizeNames({"B": 2, "T": 5, "H": 3, "Dh": 4, "D": 12})
    assert names.shape((10, 1, 6, 12, 7)) == "(B·T=10, 1, B·H=6, D=12, 7)"  # D is H·Dh by definition: no H·Dh
    assert SizeNames({"H": 2, "Dh": 2}).size(2) == "H/Dh=2"  # sizes that happen to be equal: both readings


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="message must be a str"):
        read_shape_error(None, {})
    with pytest.raises(TypeError, match="names must be"):
        read_shape_error("x", ["B"])
