"""Notebook 08's text against its executed solution: every number the text states is what the
cells print (the memory of the (T, T) scores, the gap to PyTorch, how the largest tensor grows
with T, the fused kernel's largest tensor), the points the table promises, and the time it takes."""

from __future__ import annotations

import re
import time

import nbformat
import pytest
from conftest import SOLUTIONS, executed_notebook

from autograder.checks import tiled as C

NAME = "08_attention_without_the_matrix"
PATH = SOLUTIONS / f"{NAME}.ipynb"


@pytest.fixture(scope="module")
def executed():
    start = time.perf_counter()
    report = executed_notebook(PATH)
    return report, time.perf_counter() - start


def _printed(report) -> str:
    parts = []
    for cell in report.executed.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                parts.append(o.get("text", ""))
    return "".join(parts)


def _text() -> str:
    cells = nbformat.read(str(PATH), as_version=4).cells
    return "\n".join(c.source for c in cells if c.cell_type == "markdown")


def test_the_text_states_the_numbers_asserted_below():
    """If the wording changes, the assertions below must change with it."""
    text = " ".join(_text().split())
    for phrase in ("At `T = 32768` that is 4096 MiB, 4 GiB", "32 heads would need 128 GiB",
                   "of the order of $10^{-7}$", "grows 4 times", "grows 2 times", "`(1, 1, 2048, 32)`",
                   "| `online_softmax_merge` | merge the softmax summaries", "| 3 |", "| 5 |",
                   "`T = S = 128` and `block_size = 16`"):
        assert phrase in text, phrase


def test_the_text_describes_the_checks_as_they_are():
    text = " ".join(_text().split())
    assert f"`T = S = {C.MEMORY_T}` and `block_size = {C.MEMORY_BLOCK}`" in text
    assert f"scores far from 0 (±{C.LARGE_SCORE:.0f})" in text
    assert C.STREAM_OFFSET == 1e4 and "rows of logits around ±10⁴" in text


@pytest.mark.slow
def test_the_scores_memory_is_as_stated(executed):
    printed = _printed(executed[0])
    found = re.search(r"T =\s+32768: the \(T, T\) scores take\s+(\d+) MiB per head", printed)
    assert found, printed[:500]
    mib = int(found.group(1))
    assert mib == 4096 and mib / 1024 == 4 and 32 * mib / 1024 == 128


@pytest.mark.slow
def test_tiled_matches_pytorch_to_float32_rounding(executed):
    printed = _printed(executed[0])
    gaps = [float(g) for g in re.findall(r"(?:vs PyTorch|vs mhsa_lib|causal vs PyTorch) ([\d.]+e[-+]\d+)", printed)]
    assert len(gaps) == 15, printed
    largest = float(re.search(r"largest difference: ([\d.]+e[-+]\d+)", printed).group(1))
    assert largest == pytest.approx(max(gaps), rel=0.05)
    assert 1e-8 <= largest < 1e-6  # "of the order of 1e-7"


@pytest.mark.slow
def test_the_largest_tensor_grows_as_stated(executed):
    printed = _printed(executed[0])
    ratios = re.findall(r"reference x([\d.]+), tiled x([\d.]+)", printed)
    assert len(ratios) == 3, printed
    for full, tiled in ratios:
        assert float(full) == 4.0 and float(tiled) == 2.0
    shapes = re.findall(r"tiled\s+\d+ KiB\s+\((\d+), (\d+), (\d+)\)", printed)
    assert [tuple(int(n) for n in s) for s in shapes] == [(1, t, 64) for t in (256, 512, 1024, 2048)]


@pytest.mark.slow
def test_the_fused_kernel_creates_no_t_by_t_matrix(executed):
    printed = _printed(executed[0])
    assert "F.scaled_dot_product_attention: largest tensor (1, 1, 2048, 32), 256 KiB" in printed
    assert "mhsa_lib backend='fast':        largest tensor (1, 1, 2048, 32), 256 KiB" in printed
    assert "the (T, T) scores would take 16384 KiB" in printed


@pytest.mark.slow
def test_full_marks_as_the_table_says_and_within_a_minute(executed):
    report, seconds = executed
    assert report.errors == [] and report.stopped_early is None
    points = {s.id: s.max_points for s in report.steps}
    assert points == {"check_online_softmax_merge": 3, "checkpoint_rescale_factor": 1, "check_tiled_attention": 5,
                      "checkpoint_memory_growth": 1, "checkpoint_flash_exact": 1}
    assert report.score == report.max_score == 11
    assert seconds < 60, f"notebook 08 took {seconds:.0f} s; it must run in at most 60 s"
