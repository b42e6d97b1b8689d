"""benchmarks/bench_checks.py: every step check has a correct answer from the solutions, each
is timed with its points, the busy processes start and stop, and the report shows each check's
time against the 0.5 s goal. (Its numbers are recorded in benchmarks/RESULTS.md; here only the
smallest runs, whose timings mean nothing.)"""

from __future__ import annotations

import importlib
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
bench = importlib.import_module("bench_checks")


@pytest.fixture(scope="module")
def answers():
    return bench.correct_answers()


def test_every_step_has_a_correct_answer_from_the_solutions(answers):
    from autograder.frame.registry import steps

    assert set(answers) == {s.name for s in steps()}


@pytest.mark.parametrize("name", ["softmax", "TransformerBlock", "FixedBlock", "heads_look_right", "01.steps_order"])
def test_the_solutions_answers_earn_full_marks(answers, name):
    row = bench.time_check(name, answers[name], repeats=0)
    assert row["points"] == row["max_points"] and row["cold_s"] > 0 and row["pinned"]


def test_a_run_reports_each_check_against_the_goal(capsys):
    result = bench.run(busy=0, repeats=1, only=["softmax", "01.why_scale"], compare=True)
    assert [(r["step"], r["pinned"]) for r in result["rows"]] == [
        ("softmax", True), ("softmax", False), ("01.why_scale", True), ("01.why_scale", False)]
    for r in result["rows"]:
        assert r["cold_s"] > 0 and r["median_s"] > 0 and r["worst_s"] >= r["max_s"]
    (g,) = result["goals"]
    assert g["target"] == 1.0 and g["op"] == "<=" and g["measured"] == pytest.approx(
        max(r["worst_s"] for r in result["rows"] if r["pinned"]) / bench.GOAL_S)
    assert result["not_correct"] == []
    bench.print_report(result)
    out = capsys.readouterr().out
    assert result["busy_threads"] == 1 and len(result["load_average"]) == 2
    assert "worst / goal" in out and "1 (pinned)" in out and "torch's" in out and "checks under 0.5 s" in out


def test_pinning_can_be_switched_off_and_back():
    from autograder.frame.registry import Step

    shipped = Step._run
    with bench.pinning(False):
        assert Step._run is not shipped
    assert Step._run is shipped


def test_busy_processes_start_and_stop():
    with bench.busy_processes(1) as procs:
        assert len(procs) == 1 and procs[0].is_alive()
    assert not procs[0].is_alive()
    with pytest.raises(ValueError, match="busy: expected a count >= 0, got -1"):
        with bench.busy_processes(-1):
            pass
    with pytest.raises(ValueError, match="busy threads: expected a count >= 0"):
        with bench.busy_processes(1, threads=-2):
            pass


def test_unknown_steps_are_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--busy", "0", "--steps", "softmax,nope"])
    assert "nope" in capsys.readouterr().err
