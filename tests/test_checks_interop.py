"""load_mha_from_torch check (notebook 03): correct loaders written in other styles earn full
marks; each known loading mistake loses points and is named."""

import pytest
import torch
from conftest import run_check

import mhsa_lib
from autograder import check_load_mha_from_torch
from autograder.mistakes import interop as M

run = run_check



def load_chunks(module, torch_mha):
    wq, wk, wv = torch_mha.in_proj_weight.chunk(3)
    bq, bk, bv = torch_mha.in_proj_bias.chunk(3)
    with torch.no_grad():
        for layer, w, b in ((module.q_proj, wq, bq), (module.k_proj, wk, bk), (module.v_proj, wv, bv)):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        module.out_proj.load_state_dict(torch_mha.out_proj.state_dict())
    return module


def load_state_dict_style(module, torch_mha):
    d = torch_mha.embed_dim
    sd = torch_mha.state_dict()
    new = {}
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        new[f"{name}.weight"] = sd["in_proj_weight"][i * d : (i + 1) * d]
        new[f"{name}.bias"] = sd["in_proj_bias"][i * d : (i + 1) * d]
    new["out_proj.weight"], new["out_proj.bias"] = sd["out_proj.weight"], sd["out_proj.bias"]
    module.load_state_dict(new)  # returns nothing useful: the module is changed in place


@pytest.mark.parametrize("fn", [load_chunks, load_state_dict_style])
def test_load_full_marks_for_correct_solutions(fn, capsys):
    points, report = run(check_load_mha_from_torch, fn, capsys, seed=0)
    assert points == 2.0, report


@pytest.mark.parametrize("fn,words", [
    (M.load_qkv_order_swapped, "holds W_k"),
    (M.load_transposed, "transposed"),
    (M.load_without_biases, "biases were not copied"),
    (M.load_without_out_proj, "out_proj.weight was not copied"),
    (lambda module, torch_mha: mhsa_lib.interop.load_mha_from_torch(module, torch_mha), "2 / 2"),
])
def test_load_mistakes(fn, words, capsys):
    points, report = run(check_load_mha_from_torch, fn, capsys, seed=0)
    assert words in report, report
    if words != "2 / 2":
        assert points < 2.0


def test_every_loading_mistake_is_tested_above():
    marks = [m for m in test_load_mistakes.pytestmark if m.name == "parametrize"]
    tested = {fn for fn, _ in marks[0].args[1]}
    for mistake in M.LOAD_MISTAKES:
        assert mistake.fn in tested, mistake.id


def test_a_loader_that_raises_or_is_missing_earns_nothing(capsys):
    def broken(module, torch_mha):
        raise KeyError("in_proj_weight")

    points, report = run(check_load_mha_from_torch, broken, capsys, seed=0)
    assert points == 0.0 and "KeyError" in report, report
    points, report = run(check_load_mha_from_torch, None, capsys, seed=0)
    assert points == 0.0 and "expected a function" in report, report
