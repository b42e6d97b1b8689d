"""Step check for notebook 03's trade-off table: ``head_tradeoff``.

The learner's table is compared row by row with the closed forms of :mod:`mhsa_lib.tradeoff`
on a public case and on random ones (D, T, B and the bytes per value all drawn, T both below and
above some head widths, so that the cap of the rank bound shows, and B above 1, so that a count
that ignores or misuses the batch shows). A number of heads that does not divide D, and a
sequence length of 0, must raise a ValueError. A wrong table is matched against the known
mistakes (:mod:`autograder.mistakes.tradeoff`), first whole, then one column at a time, and a
column no known mistake explains gets its formula.

Shape letters: B batch, T length, D model width, H heads, Dh = D / H head width.
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import mhsa_lib
from mhsa_lib.tradeoff import TRADEOFF_KEYS

from ..frame import CheckResult, LearnerError, attempt, describe_failures, distinct_sizes
from ..frame.registry import step
from ..frame.shortcuts import find_shortcuts
from ..mistakes import tradeoff as M
from .heads import HARD_CODED

HEAD_TRADEOFF_POINTS = 2.0

#: Public case: D = 512, H from 1 to 16, T = 128, one sequence in float32.
TRADEOFF_PUBLIC_ARGS = (512, [1, 2, 4, 8, 16], 128)

#: Bad input the function must refuse with a ValueError.
BAD_HEADS_ARGS = (96, [4, 7], 16)
BAD_LENGTH_ARGS = (96, [4], 0)

#: What each column is, for a wrong column no known mistake explains.
FORMULAS = {
    "n_heads": "H, the number of heads of that row, in the order given",
    "d_head": "Dh = D / H",
    "params": "4·D² + 4·D (four nn.Linear(D, D) with biases)",
    "flops": "8·T·D² for the four projections + 4·T²·D for QKᵀ and weights @ V (one sequence, a multiply-add = 2)",
    "score_rank_bound": "min(Dh, T)",
    "kv_cache_bytes": "2 (keys and values) · B · T · D · bytes_per_value",
}


def _expected(args: Sequence[Any]) -> List[Dict[str, int]]:
    return mhsa_lib.head_tradeoff(*args)


def _number(v: Any) -> Optional[float]:
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    if not isinstance(v, numbers.Number) or isinstance(v, (bool, complex)):
        return None
    return float(v)


def _as_table(y: Any) -> Optional[List[Dict[str, float]]]:
    """The learner's answer as a list of {key: number}, or None if it is not that."""
    if not isinstance(y, (list, tuple)):
        return None
    table = []
    for row in y:
        if not isinstance(row, dict) or any(k not in row for k in TRADEOFF_KEYS):
            return None
        values = {k: _number(row[k]) for k in TRADEOFF_KEYS}
        if any(v is None for v in values.values()):
            return None
        table.append(values)
    return table


def _show(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _table_problem(y: Any, expected: List[Dict[str, int]]) -> Optional[str]:
    """What differs between the learner's table and the expected one (None if nothing)."""
    if isinstance(y, LearnerError):
        return str(y)
    if not isinstance(y, (list, tuple)):
        return f"returned a {type(y).__name__}, expected a list with one dict per number of heads"
    if len(y) != len(expected):
        return f"returned {len(y)} rows, expected {len(expected)} (one per entry of n_heads_options, in order)"
    for i, row in enumerate(y):
        if not isinstance(row, dict):
            return f"row {i} is of type {type(row).__name__}, expected a dict with keys {', '.join(TRADEOFF_KEYS)}"
        missing = [k for k in TRADEOFF_KEYS if k not in row]
        if missing:
            return f"a row lacks {', '.join(missing)}"
    table = _as_table(y)
    if table is None:
        return "every value must be a number (an int)"
    for row, want in zip(table, expected):
        wrong = [f"{k} = {_show(row[k])}, expected {want[k]}" for k in TRADEOFF_KEYS if row[k] != want[k]]
        if wrong:
            return f"for H = {want['n_heads']}: " + "; ".join(wrong)
    return None


def _case(gen: torch.Generator, i: int) -> Tuple:
    """(d_model, n_heads_options, seq_len, batch, bytes_per_value): D with many divisors, T between
    the smallest and the largest head width, B > 1."""
    a, b, c = distinct_sizes(gen, 3, 2, 7)
    d = 4 * a * b * c * 2  # e.g. 2·3·5·8 = 240
    divisors = [h for h in range(1, d + 1) if d % h == 0]
    pick = torch.randperm(len(divisors) - 1, generator=gen)[:4].tolist()
    heads = [divisors[j + 1] for j in pick] + [1]  # four others, then one head of width D
    widths = sorted(d // h for h in heads)
    t = widths[len(widths) // 2] + 1 + int(torch.randint(0, 3, (1,), generator=gen))
    batch = 2 + int(torch.randint(0, 6, (1,), generator=gen))
    nbytes = (2, 4, 1)[i % 3]
    return (d, heads, t, batch, nbytes)


@step("head_tradeoff", forbidden=((), ("head_tradeoff",)),
      points=HEAD_TRADEOFF_POINTS, notebook="03_concat_and_output_projection", home="tradeoff",
      reference=mhsa_lib.head_tradeoff)
def check_head_tradeoff(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``head_tradeoff(d_model, n_heads_options, seq_len, batch=1, bytes_per_value=4) -> list``
    of one dict per number of heads (n_heads, d_head, params, flops, score_rank_bound,
    kv_cache_bytes) for one self-attention layer with biases (max 2)."""
    got = attempt(fn, *TRADEOFF_PUBLIC_ARGS)
    if isinstance(got, LearnerError):
        result.zero_reason = f"head_tradeoff{TRADEOFF_PUBLIC_ARGS} {got}"
        return
    expected = _expected(TRADEOFF_PUBLIC_ARGS)
    public_problem = _table_problem(got, expected)
    result.add(f"public case: D=512, H in [1, 2, 4, 8, 16], T=128: flops = {expected[0]['flops']} for every H, "
               f"score_rank_bound {expected[0]['score_rank_bound']} down to {expected[-1]['score_rank_bound']}",
               0.5, public_problem is None, public_problem or "")
    seen: List[Tuple[Tuple, Any]] = [(TRADEOFF_PUBLIC_ARGS + (1, 4), got)]

    fails = []
    for i in range(6 if hidden else 3):
        args = _case(gen, i)
        y = attempt(fn, *args)
        seen.append((args, y))
        problem = _table_problem(y, _expected(args))
        if problem:
            fails.append(f"head_tradeoff{args}: {problem}")
    result.add("random cases (D, T, B, bytes all drawn; T between the head widths; B > 1)", 0.75, not fails,
               describe_failures(fails, 1))

    not_int = [(args, y) for args, y in seen if isinstance(y, (list, tuple)) and any(
        isinstance(row, dict) and any(k in row and not (isinstance(row[k], numbers.Integral)
                                                         and not isinstance(row[k], bool)) for k in TRADEOFF_KEYS)
        for row in y)]
    unusable = [args for args, y in seen if _as_table(y) is None]
    detail = ""
    if not_int:
        row = next(r for r in not_int[0][1] if isinstance(r, dict))
        detail = f"head_tradeoff{not_int[0][0]} returned " + ", ".join(
            f"{k}: {type(row[k]).__name__}" for k in TRADEOFF_KEYS if k in row)
    elif unusable:
        detail = f"head_tradeoff{unusable[0]} gave no list of dicts of numbers"
    result.add("every value is a Python int", 0.25, not not_int and not unusable, detail)

    refused = _refusals(fn)
    result.add("bad input raises ValueError: H = 7 with d_model = 96 (the message names the 7), seq_len = 0",
               0.5, not refused, "; ".join(refused))

    if not result.passed:
        _diagnose(result, fn, seen, refused)
        public = _as_table(got)
        if public is not None and fails and _as_table(attempt(fn, 64, [1, 2, 4], 16)) == public:
            result.diagnose(HARD_CODED)
    shortcuts = find_shortcuts(fn, (64, [1, 4], 16), (), forbid_library=("head_tradeoff",))
    if shortcuts:
        result.zero_reason = f"your head_tradeoff calls {', '.join(shortcuts)}: build the table yourself"


def _refusals(fn: Any) -> List[str]:
    """What is wrong with the function's answers to bad input (empty if it refuses both well)."""
    problems = []
    bad = attempt(fn, *BAD_HEADS_ARGS)
    if not isinstance(bad, LearnerError):
        problems.append(f"head_tradeoff{BAD_HEADS_ARGS} returned a table: 7 heads cannot share 96 features "
                        "equally, raise ValueError")
    elif not str(bad).startswith("raised ValueError"):
        problems.append(f"head_tradeoff{BAD_HEADS_ARGS} {bad}: expected a ValueError")
    elif "7" not in str(bad).partition("ValueError")[2].split(" (line ")[0]:
        problems.append(f"head_tradeoff{BAD_HEADS_ARGS} {bad}: the message should name the bad number of heads, 7")
    bad = attempt(fn, *BAD_LENGTH_ARGS)
    if not isinstance(bad, LearnerError):
        problems.append(f"head_tradeoff{BAD_LENGTH_ARGS} returned a table: seq_len must be a positive int, "
                        "raise ValueError")
    elif not str(bad).startswith("raised ValueError"):
        problems.append(f"head_tradeoff{BAD_LENGTH_ARGS} {bad}: expected a ValueError")
    return problems


def _mistake_table(m, args) -> Optional[List[Dict[str, float]]]:
    try:
        return [{k: float(v) for k, v in row.items()} for row in m.fn(*args)]
    except Exception:
        return None


def _diagnose(result: CheckResult, fn: Any, seen, refused: List[str]) -> None:
    if any(problem.startswith(f"head_tradeoff{BAD_HEADS_ARGS} returned a table") for problem in refused) and \
            _as_table(attempt(fn, *BAD_HEADS_ARGS)) is not None:
        floor = next(m for m in M.TRADEOFF_MISTAKES if m.id == "tradeoff-floor-division")
        result.diagnose(floor.advice)
    for args, y in seen:
        if isinstance(y, LearnerError):
            result.diagnose(f"your function {y}.")
            return
    values = [(args, _as_table(y)) for args, y in seen]
    if any(v is None for _, v in values):
        return
    if any(len(v) != len(args[1]) for args, v in values):
        result.diagnose("your table needs one row per entry of n_heads_options, in the order given.")
        return
    by_output = [m for m in M.TRADEOFF_MISTAKES if m.by_output]
    for m in by_output:
        if all(_mistake_table(m, args) == v for args, v in values):
            result.diagnose(m.advice)
            return
    # One column at a time: name each mistake that explains the columns it touches; a wrong column
    # that none explains gets its formula.
    explained = set()
    for m in by_output:
        tables = [(_mistake_table(m, args), _expected(args), v) for args, v in values]
        if any(wrong is None for wrong, _, _ in tables):
            continue
        touched = {k for wrong, right, _ in tables for w, r in zip(wrong, right) for k in TRADEOFF_KEYS if w[k] != r[k]}
        if touched and all(row[k] == w[k] for wrong, _, v in tables for w, row in zip(wrong, v) for k in touched):
            result.diagnose(m.advice)
            explained |= touched
    for k in TRADEOFF_KEYS:
        if k in explained:
            continue
        wrong_rows = [(args, row, want) for args, v in values for row, want in zip(v, _expected(args))
                      if row[k] != want[k]]
        if wrong_rows:
            args, row, want = wrong_rows[0]
            result.diagnose(f"your {k} values match no mistake the check knows: for H = {want['n_heads']} in "
                            f"head_tradeoff{tuple(args)} it is {_show(row[k])}, expected {want[k]} = {FORMULAS[k]}.")
