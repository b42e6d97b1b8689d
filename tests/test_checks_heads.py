"""split_heads / merge_heads / repeat_kv checks: correct solutions written many ways earn full
marks; splitting or merging without the transpose, and other wrong layouts, lose points and are named."""

import pytest
import torch
from conftest import run_check

import mhsa_lib
from autograder import check_merge_heads, check_repeat_kv, check_split_heads
from autograder.checks import heads as C
from autograder.mistakes import heads as M

run = run_check


def split_view(x, num_heads):
    b, t, d = x.shape
    return x.view(b, t, num_heads, d // num_heads).transpose(1, 2)


def split_reshape_permute(x, num_heads):
    return x.reshape(x.shape[0], x.shape[1], num_heads, -1).permute(0, 2, 1, 3)


def split_chunks(x, num_heads):
    return torch.stack(x.chunk(num_heads, dim=-1), dim=1)


def split_loop(x, num_heads):
    dh = x.shape[-1] // num_heads
    return torch.stack([x[..., h * dh : (h + 1) * dh] for h in range(num_heads)], dim=1)


def merge_reshape(x):
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def merge_contiguous_view(x):
    b, h, t, dh = x.shape
    return x.permute(0, 2, 1, 3).contiguous().view(b, t, h * dh)


def merge_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def merge_flatten(x):
    return x.transpose(1, 2).flatten(start_dim=2)


@pytest.mark.parametrize("fn", [split_view, split_reshape_permute, split_chunks, split_loop])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_heads_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_split_heads, fn, capsys, seed=seed)
    assert points == 3.0, report


@pytest.mark.parametrize("fn", [merge_reshape, merge_contiguous_view, merge_cat, merge_flatten])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_heads_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_merge_heads, fn, capsys, seed=seed)
    assert points == 2.0, report


def test_hidden_cases_pass_correct_solutions(capsys):
    assert run(check_split_heads, split_view, capsys, hidden=True, seed=5)[0] == 3.0
    assert run(check_merge_heads, merge_cat, capsys, hidden=True, seed=5)[0] == 2.0


_PUBLIC_SPLIT = mhsa_lib.split_heads(C.SPLIT_PUBLIC_X, C.SPLIT_PUBLIC_H)
_PUBLIC_MERGE = mhsa_lib.merge_heads(C.MERGE_PUBLIC_X)


@pytest.mark.parametrize("fn,words", [
    (M.split_heads_view_no_transpose, "straight to (B, H, T, Dh)"),
    (M.split_heads_no_transpose, "(B, T, H, Dh)"),
    (M.split_heads_interleaved, "every H-th feature"),
    (M.split_heads_positions_last, "(B, H, Dh, T)"),
    (lambda x, num_heads: mhsa_lib.split_heads(x, num_heads), "calls mhsa_lib"),
    (lambda x, num_heads: _PUBLIC_SPLIT.clone(), "hard-coded"),
])
def test_split_heads_mistakes_lose_points_and_are_named(fn, words, capsys):
    points, report = run(check_split_heads, fn, capsys, seed=3)
    assert points < 3.0, report
    assert words in report, report


@pytest.mark.parametrize("fn,words", [
    (M.merge_heads_no_transpose, "without transposing back"),
    (M.merge_heads_interleaved, "ordered (Dh, H)"),
    (M.merge_heads_sum, "added the heads together"),
    (lambda x: mhsa_lib.merge_heads(x), "calls mhsa_lib"),
    (lambda x: _PUBLIC_MERGE.clone(), "hard-coded"),
    (lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1), "use .reshape(...) or .contiguous().view(...)"),
])
def test_merge_heads_mistakes_lose_points_and_are_named(fn, words, capsys):
    points, report = run(check_merge_heads, fn, capsys, seed=3)
    assert points < 2.0, report
    assert words in report, report


def test_every_heads_mistake_is_caught(capsys):
    for m in M.SPLIT_HEADS_MISTAKES:
        assert run(check_split_heads, m.fn, capsys, seed=8)[0] < 3.0, m.id
    for m in M.MERGE_HEADS_MISTAKES:
        assert run(check_merge_heads, m.fn, capsys, seed=8)[0] < 2.0, m.id


# --------------------------------------------------------------------------- repeat_kv


def repeat_kv_interleave(x, n_rep):
    return x.repeat_interleave(n_rep, dim=1)


def repeat_kv_expand(x, n_rep):
    if n_rep == 1:
        return x
    b, g, s, dh = x.shape
    return x[:, :, None, :, :].expand(b, g, n_rep, s, dh).reshape(b, g * n_rep, s, dh)


def repeat_kv_loop(x, n_rep):
    return torch.cat([x[:, j // n_rep : j // n_rep + 1] for j in range(x.shape[1] * n_rep)], dim=1)


def repeat_kv_index(x, n_rep):
    index = torch.arange(x.shape[1] * n_rep, device=x.device) // n_rep
    return x.index_select(1, index)


@pytest.mark.parametrize("fn", [repeat_kv_interleave, repeat_kv_expand, repeat_kv_loop, repeat_kv_index])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_repeat_kv_full_marks_for_correct_solutions(fn, seed, capsys):
    points, report = run(check_repeat_kv, fn, capsys, seed=seed)
    assert points == 2.0, report


_REPEAT_PUBLIC_ANSWER = mhsa_lib.repeat_kv(C.REPEAT_PUBLIC_X, C.REPEAT_PUBLIC_N)


@pytest.mark.parametrize("fn,words", [
    (M.repeat_kv_tiled, "query head j then uses K/V head j % G"),
    (M.repeat_kv_tiled, "your heads hold K/V heads [0, 1, 0, 1, 0, 1], expected [0, 0, 0, 1, 1, 1]"),
    (M.repeat_kv_sequence_axis, "repeat along the positions (dim=2)"),
    (M.repeat_kv_no_reshape, "you return (B, G, n_rep, S, Dh)"),
    (M.repeat_kv_calls_library, "calls mhsa_lib (repeat_kv)"),
    (lambda x, n_rep: _REPEAT_PUBLIC_ANSWER.clone(), "hard-coded"),
])
def test_repeat_kv_mistakes_lose_points_and_are_named(fn, words, capsys):
    points, report = run(check_repeat_kv, fn, capsys, seed=3)
    assert points < 2.0, report
    assert words in report, report


def _not_yet(*args, **kw):
    raise NotImplementedError()


@pytest.mark.parametrize("obj,words", [
    (_not_yet, "not implemented yet"),
    (lambda x, n_rep: None, "NoneType"),
    (42, "expected a function"),
])
def test_repeat_kv_unfinished_or_broken_answers(obj, words, capsys):
    points, report = run(check_repeat_kv, obj, capsys, seed=0)
    assert points == 0.0 and words in report, report


# --------------------------------------------------------------------------- generated variants
# Wrong layouts no hand-written mistake models: the check names them from the generated variants
# (autograder/checks/variants_modules.py), in the learner's terms.


def split_swaps_wrong_axes(x, num_heads):
    b, t, d = x.shape
    return x.view(b, t, num_heads, d // num_heads).transpose(2, 3)  # (B, T, Dh, H)


def split_features_then_positions(x, num_heads):
    b, t, d = x.shape
    heads = x.unflatten(-1, (num_heads, d // num_heads))  # (B, T, H, Dh)
    return torch.einsum("bthd->bhdt", heads)  # (B, H, Dh, T)


def split_features_take_heads_place(x, num_heads):
    b, t, d = x.shape
    return x.reshape(b, t, num_heads, -1).permute(0, 3, 1, 2)  # (B, Dh, T, H)


def split_dim_major_transposed(x, num_heads):
    b, t, d = x.shape
    return x.reshape(b, t, -1, num_heads).transpose(1, 2)  # view(B, T, Dh, H), then the usual swap


def split_dim_major_chunks(x, num_heads):
    # every H-th feature per head, written with slicing, then the positions and heads kept in order
    return torch.stack([x[..., h::num_heads] for h in range(num_heads)], dim=2)


def merge_mean_of_heads(x):
    return x.mean(dim=1)


def merge_swaps_positions_and_features(x):
    b, h, t, dh = x.shape
    return x.transpose(2, 3).reshape(b, t, h * dh)


def repeat_kv_on_features(x, n_rep):
    return torch.repeat_interleave(x, n_rep, dim=-1)


def repeat_kv_by_group_count(x, n_rep):
    return x.repeat_interleave(x.shape[1], dim=1)


@pytest.mark.parametrize("check,fn,words", [
    (check_split_heads, split_swaps_wrong_axes, "wrong pair of axes (2 and 3)"),
    (check_split_heads, split_dim_major_transposed, "dim-major"),
    (check_split_heads, split_features_then_positions, "head's positions and features are swapped"),
    (check_split_heads, split_features_take_heads_place, "(B, Dh, T, H)"),
    (check_split_heads, split_dim_major_chunks, "dim-major"),
    (check_merge_heads, merge_mean_of_heads, "average the heads"),
    (check_merge_heads, merge_swaps_positions_and_features, "swap the positions and features of each head"),
    (check_repeat_kv, repeat_kv_on_features, "along the features (dim=3)"),
    (check_repeat_kv, repeat_kv_by_group_count, "G times"),
])
def test_unmodelled_layouts_are_named_from_the_generated_variants(check, fn, words, capsys):
    points, report = run(check, fn, capsys, seed=4)
    assert points < check.step.points, report
    assert words in report, report


def test_split_heads_shape_error_is_said_in_course_terms(capsys):
    def split_wrong_count(x, num_heads):
        b, t, d = x.shape
        return x.view(b, t, num_heads, d // num_heads - 1).transpose(1, 2)

    points, report = run(check_split_heads, split_wrong_count, capsys, seed=1)
    assert points == 0.0, report
    assert "a view/reshape to (1, T/Dh=2, H=3, 1) of a tensor of 12 elements failed: the new shape must hold" in report, report


@pytest.mark.parametrize("check,fn", [(check_split_heads, split_chunks), (check_merge_heads, merge_cat),
                                      (check_repeat_kv, lambda x, n: x[:, :, None].expand(
                                          -1, -1, n, -1, -1).flatten(1, 2))])
def test_correct_solutions_get_no_diagnosis(check, fn, capsys):
    points, report = run(check, fn, capsys, seed=6)
    assert points == check.step.points and "Diagnosis" not in report, report


def test_a_new_wrong_choice_is_one_more_axis_entry(monkeypatch, capsys):
    """Transposing the batch and feature axes is in no axis: not named. One more entry in the
    'swap' axis, and nothing else, names it."""
    from autograder.checks import variants_modules as V
    from autograder.frame.variants import Axis

    def split_swaps_batch_and_features(x, num_heads):
        b, t, d = x.shape
        return x.view(b, t, num_heads, d // num_heads).transpose(0, 3)

    _, report = run(check_split_heads, split_swaps_batch_and_features, capsys, seed=2)
    assert "Diagnosis" not in report, report
    view, swap = V.SPLIT_AXES
    wider = Axis(swap.name, swap.correct, {**swap.wrong, "0,3": "you transpose the batch and feature axes"})
    monkeypatch.setattr(V, "SPLIT_AXES", [view, wider])
    _, report = run(check_split_heads, split_swaps_batch_and_features, capsys, seed=2)
    assert "Diagnosis: You transpose the batch and feature axes" in report, report


@pytest.mark.parametrize("message,sizes,words", [
    ("mat1 and mat2 shapes cannot be multiplied (10x12 and 4x12)", {"B": 2, "T": 5, "D": 12, "Dh": 4},
     "a matrix product of (B·T=10, D=12) by (Dh=4, D=12) failed"),
    ("Expected size for first two dimensions of batch2 tensor to be: [6, 4] but got: [6, 5].",
     {"B·H": 6, "Dh": 4, "T": 5}, "should start with (B·H=6, Dh=4) but starts with (B·H=6, T=5)"),
    ("The size of tensor a (5) must match the size of tensor b (7) at non-singleton dimension 3",
     {"T": 5, "S": 7}, "met sizes T=5 and S=7 on axis 3"),
    ("shape '[2, 5, 3, 5]' is invalid for input of size 120", {"B": 2, "T": 5, "H": 3, "D": 12},
     "a view/reshape to (B=2, T=5, H=3, T=5) of a tensor of 120 elements failed"),
    ("Dimension out of range (expected to be in range of [-3, 2], but got 3)", {}, "only 3 axes"),
    ("expected m1 and m2 to have the same dtype, but got: float != double", {}, "different dtypes"),
])
def test_shape_errors_are_said_in_course_letters(message, sizes, words):
    from autograder.checks.variants_modules import explain_shape_error

    assert words in explain_shape_error(message, sizes)


def test_other_errors_are_left_as_they_are():
    from autograder.checks.variants_modules import explain_shape_error

    assert explain_shape_error("name 'q' is not defined", {"B": 2}) is None


# --------------------------------------------------------------------------- answers as learners write them
# Wrong ones lose points and are named; correct ones, in other styles, earn full marks.

LEARNER_ANSWERS = [
    # (check, answer, full marks?, words the report must hold)
    (check_split_heads, lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1), False, ["straight to (B, H, T, Dh)"]),
    (check_split_heads, lambda x, h: x.reshape(x.shape[0], x.shape[1], -1, h).permute(0, 3, 1, 2), False,
     ["every H-th feature"]),
    (check_split_heads, lambda x, num_heads: x.unflatten(-1, (num_heads, -1)).permute(0, 2, 1, 3), True, []),
    (check_split_heads, lambda x, num_heads: torch.stack(x.chunk(num_heads, dim=-1), dim=1), True, []),
    (check_merge_heads, lambda x: x.reshape(x.shape[0], x.shape[2], -1), False, ["without transposing back"]),
    (check_merge_heads, lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1), False, ["(Dh, H)"]),
    (check_merge_heads, lambda x: torch.cat(x.unbind(1), dim=-1), True, []),
    (check_merge_heads, lambda x: x.permute(0, 2, 1, 3).flatten(2).contiguous(), True, []),
    (check_repeat_kv, lambda x, n: x.repeat(1, n, 1, 1), False, ["j // n_rep"]),
    (check_repeat_kv, lambda x, n_rep: torch.repeat_interleave(x, repeats=n_rep, dim=1), True, []),
    (check_repeat_kv, lambda x, n_rep: x.index_select(1, torch.arange(x.shape[1] * n_rep) // n_rep), True, []),
]


@pytest.mark.parametrize("check, answer, full, words", LEARNER_ANSWERS,
                         ids=[f"{c.step.name}-{i}" for i, (c, _, _, _) in enumerate(LEARNER_ANSWERS)])
def test_learner_answers(check, answer, full, words, capsys):
    points, out = run(check, answer, capsys, hidden=True, seed=11)
    if full:
        assert points == check.step.points, out
    else:
        assert points < check.step.points, out
        for word in words:
            assert word in out, out
