"""Known mistakes in loading the weights of torch's ``nn.MultiheadAttention`` into the course's
MultiHeadAttention (notebook 03, ``load_mha_from_torch``), written as learners write them."""

from __future__ import annotations

from typing import List

import torch

from ..frame.mistakes import Mistake, catalogue, mistake

# --------------------------------------------------------------------------- loading weights


def load_qkv_order_swapped(module, torch_mha):
    d = torch_mha.embed_dim
    w = torch_mha.in_proj_weight
    with torch.no_grad():
        module.k_proj.weight.copy_(w[:d])  # [W_q; W_k; W_v] read as [W_k; W_q; W_v]
        module.q_proj.weight.copy_(w[d : 2 * d])
        module.v_proj.weight.copy_(w[2 * d :])
        _copy_biases(module, torch_mha)
        module.out_proj.weight.copy_(torch_mha.out_proj.weight)
    return module


def load_transposed(module, torch_mha):
    d = torch_mha.embed_dim
    w = torch_mha.in_proj_weight
    with torch.no_grad():
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            getattr(module, name).weight.copy_(w[i * d : (i + 1) * d].T)
        _copy_biases(module, torch_mha)
        module.out_proj.weight.copy_(torch_mha.out_proj.weight.T)
    return module


def load_without_biases(module, torch_mha):
    d = torch_mha.embed_dim
    w = torch_mha.in_proj_weight
    with torch.no_grad():
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            getattr(module, name).weight.copy_(w[i * d : (i + 1) * d])
        module.out_proj.weight.copy_(torch_mha.out_proj.weight)
    return module


def load_without_out_proj(module, torch_mha):
    d = torch_mha.embed_dim
    w = torch_mha.in_proj_weight
    with torch.no_grad():
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            getattr(module, name).weight.copy_(w[i * d : (i + 1) * d])
        _copy_biases(module, torch_mha)
    return module


def _copy_biases(module, torch_mha):
    d = torch_mha.embed_dim
    if torch_mha.in_proj_bias is not None and module.q_proj.bias is not None:
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            getattr(module, name).bias.copy_(torch_mha.in_proj_bias[i * d : (i + 1) * d])
        module.out_proj.bias.copy_(torch_mha.out_proj.bias)


LOAD_MISTAKES: List[Mistake] = [
    mistake("load-qkv-swapped", load_qkv_order_swapped,
            "a projection holds another one's block: in_proj_weight stacks [W_q; W_k; W_v] along dim 0, "
            "so W_q is rows [0, D), W_k rows [D, 2D) and W_v rows [2D, 3D)."),
    mistake("load-transposed", load_transposed,
            "the weights are transposed: in_proj_weight already has nn.Linear's (out, in) layout, so copy "
            "its blocks as they are, without .T."),
    mistake("load-no-biases", load_without_biases,
            "the biases were not copied: in_proj_bias stacks the three biases like the weights, and "
            "out_proj has its own bias."),
    mistake("load-no-out-proj", load_without_out_proj,
            "out_proj was not copied: nn.MultiheadAttention keeps W^O in its own out_proj."),
]


#: Every mistake of this module by id.
CATALOGUE = catalogue(LOAD_MISTAKES)
