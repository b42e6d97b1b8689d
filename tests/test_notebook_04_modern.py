"""Notebook 04's modern-block and cost sections: every number their text states is what the
executed solution prints (or what the library computes), the measured claims about the two stacks
hold, the whole notebook still runs in under 60 s, and the untouched learner copy earns nothing."""

from __future__ import annotations

import json
import re

import pytest
from conftest import NOTEBOOKS, SOLUTIONS, executed_notebook

import mhsa_lib

NAME = "04_transformer_block"
MODERN_STEPS = ("check_rms_norm", "check_swiglu_feed_forward", "check_block_costs",
                "checkpoint_attention_vs_ffn", "checkpoint_rmsnorm_keeps")


@pytest.fixture(scope="module")
def solution():
    return executed_notebook(SOLUTIONS / f"{NAME}.ipynb")


@pytest.fixture(scope="module")
def learner():
    return executed_notebook(NOTEBOOKS / f"{NAME}.ipynb")


def _text(cells) -> str:
    parts = []
    for cell in cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                parts.append(o.get("text", ""))
            elif "data" in o:
                parts.append(str(o["data"].get("text/plain", "")))
    return "".join(parts)


def _markdown() -> str:
    nb = json.loads((SOLUTIONS / f"{NAME}.ipynb").read_text())
    start = next(i for i, c in enumerate(nb["cells"]) if "".join(c["source"]).startswith("## 10. The modern block"))
    return "\n".join("".join(c["source"]) for c in nb["cells"][start:] if c["cell_type"] == "markdown")


def test_stated_counts_are_the_librarys():
    """The numbers the text states, from the library (quick: no kernel)."""
    text = _markdown()
    d = 512
    f = mhsa_lib.swiglu_d_ff(d)
    stated = {
        "F = 1368": f == 1368,
        "2101248 weights": 3 * d * f == 2101248,
        "2097152 weights": 2 * d * 4 * d == 2097152,
        "2099712\nparameters": 2 * d * 4 * d + 4 * d + d == 2099712,
        "512 parameters for RMSNorm against 1024": True,
    }
    for words, holds in stated.items():
        assert words.replace("\n", " ") in text.replace("\n", " "), words
        assert holds, words
    assert abs(3 * d * f / (2 * d * 4 * d + 5 * d) - 1) < 1e-3  # "less than 0.1%"
    c = mhsa_lib.block_costs(768, 12, 3072, 1)
    assert "holds 4722432 of the block's 7084800" in text.replace("\n", " ")
    assert c["ffn_params"] == 4722432 and c["ffn_params"] + c["attn_proj_params"] == 7084800
    assert abs(c["ffn_params"] / 7084800 - 2 / 3) < 2e-3  # "two thirds"
    for t, key in ((3072, "ffn_flops"), (1536, "attn_proj_flops")):
        at, after = mhsa_lib.block_costs(768, 12, 3072, t), mhsa_lib.block_costs(768, 12, 3072, t + 1)
        assert at["attn_core_flops"] == at[key] and after["attn_core_flops"] > after[key]
    # the checkpoint: D = 1024, F = 4096 crosses at T = F; SwiGLU moves it to 1.5·F
    at = mhsa_lib.block_costs(1024, 16, 4096, 4096)
    assert at["attn_core_flops"] == at["ffn_flops"]
    sw = mhsa_lib.block_costs(1024, 16, 4096, 6144, ffn="swiglu")
    assert sw["attn_core_flops"] == sw["ffn_flops"]


@pytest.mark.slow
def test_solution_prints_what_the_text_says(solution):
    assert solution.stopped_early is None and solution.errors == [], solution.errors
    assert solution.seconds < 60, f"notebook 04 took {solution.seconds:.0f} s"
    steps = {s.id: s for s in solution.steps}
    for grade_id in MODERN_STEPS:
        assert steps[grade_id].passed and steps[grade_id].points == steps[grade_id].max_points, steps[grade_id]
    out = _text(solution.executed.cells)
    assert "plain FFN, F = 2048: 2099712 parameters (2097152 weights)" in out
    assert "SwiGLU, F = 1368: 2101248 parameters (+0.07% against the plain FFN)" in out
    assert "LayerNorm: 1024 parameters, RMSNorm: 512" in out
    assert "the core first exceeds the FFN at T = 3073, the projections at T = 1537" in out
    assert "parameters: attention 2362368, FFN 4722432 (66.7%)" in out
    measured = re.findall(r"^\s+(\w+)\s+(\d+)\s+(\d+)\s+([✓✗])$", out, flags=re.M)
    assert len(measured) == 5 and all(a == b and mark == "✓" for _, a, b, mark in measured), measured
    stacks = re.findall(r"stream RMS:\s+([\d. ]+)\n\s+grad norm:\s+([\d. ]+)\n.*largest / smallest: ([\d.]+)", out)
    assert len(stacks) == 2
    (classic_rms, _, classic_ratio), (modern_rms, _, modern_ratio) = stacks
    classic_rms, modern_rms = [float(v) for v in classic_rms.split()], [float(v) for v in modern_rms.split()]
    assert classic_rms == sorted(classic_rms) and modern_rms == sorted(modern_rms)  # grows with depth
    assert classic_rms[0] < classic_rms[-1] and modern_rms[0] < modern_rms[-1]
    assert modern_rms[-1] < classic_rms[-1]  # more slowly in the modern stack
    assert float(classic_ratio) < 2 and float(modern_ratio) < 2  # within a factor of 2
    timed = re.search(r"one thread, x \(8, 256, 512\): LayerNorm ([\d.]+) ms, RMSNorm ([\d.]+) ms", out)
    assert timed and float(timed.group(2)) < float(timed.group(1)), "the text says RMSNorm is the faster one"


@pytest.mark.slow
def test_untouched_learner_copy_runs_and_earns_nothing(learner):
    assert learner.stopped_early is None, learner.stopped_early
    assert [e for e in learner.errors if e[1] != "NotImplementedError"] == [], learner.errors
    steps = {s.id: s for s in learner.steps}
    assert set(MODERN_STEPS) <= set(steps)
    assert all(s.points == 0 for s in learner.steps), {s.id: s.points for s in learner.steps if s.points}
