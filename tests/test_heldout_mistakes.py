"""How well the checks name mistakes they were not written against (tests/heldout/).

Every held-out wrong answer must lose points on its own step, every held-out correct answer must
keep full marks, and at least 80 % of the wrong answers must be named precisely: the report's
failing lines and diagnoses match every group of the case's cause (see tests/heldout/README.md).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from conftest import run_check

import autograder

HELDOUT = Path(__file__).resolve().parent / "heldout"
#: The share of held-out mistakes the reports must name precisely.
PRECISE_GOAL = 0.80
#: One fixed draw of the random cases, so that a run is reproducible.
SEED = 12345


def _load_cases():
    spec = importlib.util.spec_from_file_location("heldout_cases", HELDOUT / "cases.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["heldout_cases"] = module
    spec.loader.exec_module(module)
    return module.CASES


CASES = _load_cases()
WRONG = [c for c in CASES if c.cause is not None]
RIGHT = [c for c in CASES if c.cause is None]


def _check(step):
    from autograder.checks import steps_by_name

    return getattr(autograder, steps_by_name()[step].check_name)


def _findings(report: str) -> str:
    """The report's failing lines and diagnoses, line wraps undone."""
    keep, current = [], None
    for line in report.splitlines():
        text = line.strip()
        if text.startswith(("✗", "Diagnosis:", "Note:")):
            current = [text]
            keep.append(current)
        elif current is not None and line.startswith("    ") and not text.startswith(("✓", "(")):
            current.append(text)
        else:
            current = None
    return "\n".join(" ".join(part) for part in keep)


def _named(case, report: str) -> bool:
    found = _findings(report)
    return all(re.search(group, found, re.IGNORECASE) for group in case.cause)


def _run(case, capsys, split=False):
    """Points, maximum and report of the case's check (with ``split``, also run as class grading
    runs it, probe apart and judge, which must agree)."""
    check = _check(case.step)
    if split:
        run_check(check, case.obj, capsys, seed=SEED)
    points = check(case.obj, seed=SEED)
    report = capsys.readouterr().out
    return points, check.step.points, report


def test_the_suite_is_large_and_spans_the_steps():
    assert len(WRONG) >= 40, f"only {len(WRONG)} held-out mistakes"
    from autograder.checks import steps_by_name

    known = steps_by_name()
    for c in CASES:
        assert c.step in known, f"{c.name}: no step {c.step!r}"
    assert len({c.step for c in WRONG}) >= 14


@pytest.mark.slow  # about a minute: every held-out answer through its check
@pytest.mark.parametrize("case", RIGHT, ids=[c.name for c in RIGHT])
def test_correct_unusual_answers_keep_full_marks(case, capsys):
    points, top, report = _run(case, capsys, split=True)
    assert points == pytest.approx(top), f"{case.name} is correct but got {points}/{top}:\n{report}"


@pytest.mark.slow  # about a minute: every held-out answer through its check
def test_every_mistake_loses_points_and_most_are_named(capsys):
    rows, lost, named = [], 0, 0
    for case in WRONG:
        points, top, report = _run(case, capsys)
        loses = points < top - 1e-9
        is_named = loses and _named(case, report)
        lost += loses
        named += is_named
        first = (_findings(report).splitlines() or ["(no failing line or diagnosis)"])
        diag = [l for l in first if l.startswith("Diagnosis:")] or first
        rows.append(f"{case.step:<31} {case.name:<32} {points:>5g}/{top:<3g} "
                    f"{'named' if is_named else ('LOSES' if loses else 'PASSES')}  {diag[0][:110]}")
    table = "\n".join(rows)
    print(table)
    rate = named / len(WRONG)
    assert lost == len(WRONG), f"{len(WRONG) - lost} held-out mistake(s) keep full marks:\n{table}"
    assert rate >= PRECISE_GOAL, f"{named}/{len(WRONG)} = {rate:.0%} named precisely (goal {PRECISE_GOAL:.0%}):\n{table}"


def _inputs(step):
    """Inputs on which a wrong answer to a function step must differ from mhsa_lib's: ordinary
    random ones and the edge cases each notebook asks for (large spreads, fully masked rows,
    S > T, distinct sizes)."""
    import torch

    g = torch.Generator().manual_seed(0)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    if step == "pairwise_scores":
        return [((r(2, 3, 4), r(2, 5, 4)), {})]
    if step == "softmax":
        masked = r(3, 5)
        masked[1] = float("-inf")
        return [((r(3, 5),), {"dim": 0}), ((r(3, 5, scale=300.0),), {}), ((masked,), {})]
    if step == "causal_mask":
        return [((4,), {}), ((3, 6), {})]
    if step == "scaled_dot_product_attention":
        mask = torch.rand(3, 5, generator=g) > 0.3
        mask[0] = False
        return [((r(2, 3, 4), r(2, 5, 4), r(2, 5, 6)), {"mask": mask}), ((r(2, 2, 3, 4), r(2, 2, 5, 4), r(2, 2, 5, 6)), {})]
    if step == "split_heads":
        return [((r(2, 3, 12), 4), {})]
    if step == "merge_heads":
        return [((r(2, 4, 3, 5),), {})]
    if step == "repeat_kv":
        return [((r(2, 3, 5, 4), 2), {})]
    if step == "sinusoidal_positional_encoding":
        return [((7, 10), {})]
    if step in ("attention_heads_loop", "attention_heads"):
        x = r(2, 5, 8)
        w = [r(8, 8) for _ in range(3)]
        mask = torch.ones(5, 5, dtype=torch.bool).tril()
        if step == "attention_heads":
            return [((x, *w, 2), {"mask": mask})]
        return [((x, *[list(m.chunk(2, dim=0)) for m in w]), {"mask": mask})]
    if step == "apply_rotary":
        return [((r(5, 6), 2), {}), ((r(2, 3, 4, 8), 7), {})]
    if step == "online_softmax_merge":
        x1, x2 = r(3, 4, scale=3.0), r(3, 5, scale=3.0) + 2.0
        x1[0] = float("-inf")
        x2[0] = float("-inf")  # row 0: two empty blocks
        x2[1] = float("-inf")
        summary = [(x.amax(-1).nan_to_num(neginf=float("-inf")),
                    torch.exp(x - torch.where(torch.isfinite(x.amax(-1)), x.amax(-1), 0.0)[:, None]).sum(-1))
                   for x in (x1, x2)]
        return [((*summary[0], *summary[1]), {})]
    if step == "tiled_attention":
        q, k, v = r(2, 4, 3), r(2, 7, 3), r(2, 7, 5)
        mask = torch.rand(2, 4, 7, generator=g) > 0.4
        mask[:, :, 0] = True
        return [((q, k, v, 3), {}), ((q, k, v, 3, mask), {}), ((q, k, v, 2), {"causal": True})]
    return []


def _same(a, b):
    import torch

    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(map(_same, a, b))
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(torch.allclose(a.double(), b.double(), atol=1e-6, equal_nan=False))


FUNCTION_WRONG = [c for c in WRONG if _inputs(c.step)]


@pytest.mark.parametrize("case", FUNCTION_WRONG, ids=[c.name for c in FUNCTION_WRONG])
def test_each_held_out_wrong_function_really_differs_from_the_reference(case):
    """So that the suite measures the checks and not the cases: every wrong function answer gives
    another result than mhsa_lib's on the inputs the notebook cares about (or raises)."""
    import mhsa_lib

    reference = getattr(mhsa_lib, case.step, None) or (lambda q, k: q @ k.transpose(-2, -1))  # the warm-up
    differs = False
    for args, kwargs in _inputs(case.step):
        want = reference(*args, **kwargs)
        try:
            got = case.obj(*args, **kwargs)
        except Exception:
            differs = True
            continue
        differs = differs or not _same(got, want)
    assert differs, f"{case.name} gives mhsa_lib.{case.step}'s results on every input"
