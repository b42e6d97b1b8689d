"""The grader's side of class grading, without a kernel: test cells read as check calls, seeds per
class, probe cells, and judging records from files (what a sandboxed run leaves behind)."""

from __future__ import annotations

import torch

import autograder.checks  # noqa: F401  (registers every step)
from autograder.grading import judging
from autograder.grading.judging import CheckCall


def softmax_good(x, dim=-1):  # a slice that is all -inf gives zeros, as the notebook asks
    m = x.amax(dim, keepdim=True)
    e = torch.exp(x - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    total = e.sum(dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def softmax_leaky(x, dim=-1):
    raise ValueError("SECRET-" + repr(x.tolist()))


def test_a_test_cell_is_read_as_check_calls():
    calls = judging.plan_cell("check_softmax(softmax)\n### BEGIN HIDDEN TESTS\n"
                              "check_softmax(softmax, hidden=True)\n### END HIDDEN TESTS\n")
    assert calls == [CheckCall("check_softmax", "softmax", "softmax", False),
                     CheckCall("check_softmax", "softmax", "softmax", True)]
    assert judging.plan_cell('check_concept("01.why_scale", answer_why_scale)') == [
        CheckCall("check_concept", "01.why_scale", "answer_why_scale", False)]
    for other in ("assert softmax(1) == 1", "check_softmax(softmax, seed=3)", "print(check_softmax(softmax))",
                  "check_nothing(f)", 'check_concept("no.such", f)', "check_softmax(", ""):
        assert judging.plan_cell(other) is None, other


def test_seeds_are_one_set_per_class():
    a = judging.class_seed("secret", "01", "softmax", True)
    assert a == judging.class_seed("secret", "01", "softmax", True)
    assert len({a, judging.class_seed("secret", "01", "softmax", False), judging.class_seed("other", "01", "softmax", True),
                judging.class_seed("secret", "02", "softmax", True), judging.class_seed("secret", "01", "causal_mask", True)}) == 5


def test_the_probe_cell_only_observes():
    calls = [CheckCall("check_softmax", "softmax", "softmax", False)]
    source = judging.probe_cell_source("nb01-softmax", calls, {calls[0]: 17}, judging.OBSERVATIONS)
    assert "probe_cell" in source and "check_softmax" not in source and "lambda: (softmax)" in source
    compile(source, "<probe cell>", "exec")


def _judge(tmp_path, fn, hidden=False, shortcuts=None):
    from autograder.grading.probing import probe_cell

    call = CheckCall("check_softmax", "softmax", "softmax", hidden)
    seeds = {call: 11}
    path = judging.record_path(str(tmp_path), "cell", 0)
    probe_cell([("softmax", lambda: fn, 11, hidden, path)])
    return judging.judge_cell([call], seeds, tmp_path, "cell", shortcuts)


def test_judging_a_record_scores_it_and_a_missing_one_earns_nothing(tmp_path):
    assert _judge(tmp_path / "a", softmax_good).points == 3.0
    call = CheckCall("check_softmax", "softmax", "softmax", False)
    missing = judging.judge_cell([call], {call: 11}, tmp_path / "nothing", "cell")
    assert missing.points == 0.0 and "nothing was observed" in missing.report
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "cell-0.zip").write_bytes(b"PK\x03\x04 not a record")
    bad = judging.judge_cell([call], {call: 11}, forged, "cell")
    assert bad.points == 0.0 and "could not be read" in bad.report


def test_hidden_reports_hold_no_details_of_the_cases(tmp_path):
    judged = _judge(tmp_path, softmax_leaky, hidden=True)
    assert judged.points == 0.0
    assert "SECRET" not in judged.report and "seed" not in judged.report and "[" not in judged.report
    public = _judge(tmp_path / "p", softmax_leaky)
    # The judge quotes the exception's type and line, never its text: the student's code chooses
    # it, and could fill it with what it kept of hidden cases seen earlier.
    assert "SECRET" not in public.report and "raised ValueError (line" in public.report


def test_a_shortcut_seen_in_the_source_earns_nothing(tmp_path):
    judged = _judge(tmp_path, softmax_good, shortcuts={0: ["torch's softmax"]})
    assert judged.points == 0.0 and "torch's softmax (seen in its source)" in judged.report


def test_judged_outputs_are_what_nbgrader_scores():
    from autograder.grading.nbgrader_tools import score_test_cell

    cell = {"metadata": {"nbgrader": {"grade": True, "points": 3, "grade_id": "x", "solution": False}},
            "outputs": judging.judged_outputs(judging.Judged(1.5, "softmax: 1.5 / 3 points"))}
    assert score_test_cell(cell).points == 1.5
