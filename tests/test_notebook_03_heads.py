"""Notebook 03's section 7 (number of heads against head width) against its executed solution: every
number its text states is what the library computes or what the cells print — the table's columns
measured on real modules, the rank of every head's real scores at its bound, the lookup experiment's
equal parameter counts and falling accuracy — the checkpoints' arithmetic, the points the notebook's
table promises, and the time the notebook takes."""

from __future__ import annotations

import json
import re

import pytest
from conftest import NOTEBOOKS, SOLUTIONS, executed_notebook

import mhsa_lib
from autograder.checks import tradeoff as C
from autograder.checks.questions import QUESTIONS

NAME = "03_concat_and_output_projection"
PATH = SOLUTIONS / f"{NAME}.ipynb"
STEPS = ("check_head_tradeoff", "checkpoint_heads_fixed_d", "checkpoint_rank_bound")


def _cells(folder=SOLUTIONS):
    return json.loads((folder / f"{NAME}.ipynb").read_text(encoding="utf-8"))["cells"]


def _section() -> list:
    cells = _cells()
    start = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## 7. Number of heads"))
    end = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## 8. Two notations"))
    return cells[start:end]


def _markdown() -> str:
    text = "\n".join("".join(c["source"]) for c in _section() if c["cell_type"] == "markdown")
    return " ".join(text.split())


def _code() -> str:
    return "\n".join("".join(c["source"]) for c in _section() if c["cell_type"] == "code")


def test_the_text_states_the_numbers_asserted_below():
    """If the wording changes, the assertions here and in the executed test must change with it."""
    text = _markdown()
    for phrase in ("$4D^2 + 4D$", "$4 \\cdot 2TD^2 = 8TD^2$", "$H \\cdot 2 \\cdot 2T^2 D_h = 4T^2 D$",
                   "$\\min(D_h, T)$", "$2 \\cdot B \\cdot T \\cdot H \\cdot D_h = 2BTD$",
                   "`96 // 7` would silently drop 5 of them", "The table for `D = 64`, `T = 32` and `H` from 1 to 16",
                   "`B = 2` sequences", "from 32 (capped by `T`) down to 4", "The bound is reached",
                   "8 (key, value) pairs", "8 different keys drawn from 64 and values from 16",
                   "`D = 16` and `H` in 1, 2, 4, 8 (`Dh` = 16, 8, 4, 2)", "same parameter count",
                   "150 Adam steps on batches of 64, two seeds per `H`", "the same 2000 held-out sequences",
                   "`torch.set_num_threads(1)`, restored afterwards",
                   "the mean accuracy falls at every step from `H = 1` to `H = 8`",
                   "`H = 8` (heads 2 wide) ends more than 20 points below `H = 1`",
                   "above 7 others drawn from 64", "GPT-2 small: `D = 768`, `H = 12`, `Dh = 64`",
                   "[notebook 05](05_kv_cache_and_head_sharing.ipynb)"):
        assert phrase in text, phrase


def test_the_stated_counts_are_the_librarys():
    assert 96 % 7 == 5 and 96 // 7 == 13
    assert 768 // 12 == 64
    rows = mhsa_lib.head_tradeoff(64, [1, 2, 4, 8, 16], 32, batch=2)
    assert [r["score_rank_bound"] for r in rows] == [32, 32, 16, 8, 4]
    for r in rows:
        assert r["params"] == 4 * 64**2 + 4 * 64
        assert r["flops"] == 8 * 32 * 64**2 + 4 * 32**2 * 64
        assert r["kv_cache_bytes"] == 2 * 2 * 32 * 64 * 4
    # the experiment's widths
    assert [16 // h for h in (1, 2, 4, 8)] == [16, 8, 4, 2]


def test_the_experiment_is_set_up_as_stated():
    code = _code()
    assert "N_KEYS, N_VALUES, N_PAIRS, D_task = 64, 16, 8, 16" in code
    assert "def train_lookup(num_heads, seed, steps=150):" in code
    assert "lookup_batch(64, gen)" in code and "lookup_batch(2000, torch.Generator().manual_seed(1000))" in code
    assert "for h in [1, 2, 4, 8]:" in code and "for seed in (0, 1)" in code
    assert "torch.set_num_threads(1)" in code and "torch.set_num_threads(threads)" in code
    assert "torch.optim.Adam" in code and "self.attn = MHA(D_task, num_heads)" in code


def test_the_checkpoints_are_the_librarys_arithmetic():
    one, sixteen = mhsa_lib.head_tradeoff(512, [1, 16], 128)
    assert (one["score_rank_bound"], sixteen["score_rank_bound"]) == (128, 32)
    assert all(one[k] == sixteen[k] for k in ("params", "flops", "kv_cache_bytes"))
    assert QUESTIONS["03.heads_fixed_d"].answer == "a" and "128 down to 32" in QUESTIONS["03.heads_fixed_d"].options["a"]
    (row,) = mhsa_lib.head_tradeoff(64, [16], 10)
    assert row["score_rank_bound"] == 4 and QUESTIONS["03.rank_bound"].options["d"].startswith("4,")
    assert C.HEAD_TRADEOFF_POINTS == 2


def test_the_notebooks_table_promises_these_points():
    intro = " ".join("".join(_cells()[0]["source"]).split())
    assert "| `head_tradeoff` |" in intro and "several `H` at one `D` | 2 |" in intro
    assert "| eight checkpoints |" in intro and "cross-attention's weights and masks | 9 |" in intro
    points = {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"].get("points")
              for c in _cells() if c["metadata"].get("nbgrader", {}).get("grade")}
    assert points["check_head_tradeoff"] == 2
    assert sum(p for k, p in points.items() if k.startswith("checkpoint_")) == 9


def _printed(report) -> str:
    return "".join(o.get("text", "") for cell in report.executed.cells for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream")


@pytest.fixture(scope="module")
def executed():
    return executed_notebook(PATH)


@pytest.mark.slow
def test_the_table_and_its_measurements_are_as_stated(executed):
    assert executed.errors == [] and executed.stopped_early is None, executed.errors
    printed = _printed(executed)
    rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", printed, flags=re.M)
    expected = mhsa_lib.head_tradeoff(64, [1, 2, 4, 8, 16], 32, batch=2)
    assert [tuple(int(v) for v in r) for r in rows] == [tuple(e.values()) for e in expected], rows
    assert "params, flops and KV cache bytes equal the measured ones for every H: True" in printed
    ranks = re.findall(r"H = +(\d+), Dh = +(\d+): ranks of the +\d+ heads' \(32, 32\) scores from (\d+) to (\d+), "
                       r"bound (\d+)", printed)
    assert [int(h) for h, *_ in ranks] == [1, 2, 4, 8, 16]
    for h, dh, low, high, bound in ranks:
        assert int(low) == int(high) == int(bound) == min(int(dh), 32), (h, low, high, bound)


@pytest.mark.slow
def test_the_lookup_experiment_is_as_stated(executed):
    printed = _printed(executed)
    found = re.findall(r"H = (\d), Dh = +(\d+): (\d+) parameters, accuracy ([\d.]+) ([\d.]+), mean ([\d.]+)", printed)
    assert [int(h) for h, *_ in found] == [1, 2, 4, 8], printed[-3000:]
    assert len({n for _, _, n, *_ in found}) == 1, "the same parameter count for every H"
    means = [(float(a) + float(b)) / 2 for *_, a, b, _ in found]
    assert all(x > y for x, y in zip(means, means[1:])), f"the mean accuracy falls at every step: {means}"
    assert means[0] - means[-1] > 0.20, f"H = 8 more than 20 points below H = 1: {means}"
    assert re.search(r"8 runs in [\d.]+ s on one thread \(chance: 0\.062\)", printed)


@pytest.mark.slow
def test_full_marks_and_within_a_minute(executed):
    assert executed.score == executed.max_score
    steps = {s.id: s for s in executed.steps}
    for grade_id in STEPS:
        assert steps[grade_id].passed and steps[grade_id].points == steps[grade_id].max_points, steps[grade_id]
    assert executed.seconds < 60, f"notebook 03 took {executed.seconds:.0f} s; it must run in at most 60 s"


@pytest.mark.slow
def test_the_untouched_learner_copy_earns_nothing_here():
    learner = executed_notebook(NOTEBOOKS / f"{NAME}.ipynb")
    assert learner.stopped_early is None, learner.stopped_early
    steps = {s.id: s for s in learner.steps}
    assert set(STEPS) <= set(steps)
    assert all(steps[s].points == 0 for s in STEPS), {s: steps[s].points for s in STEPS}
