"""How a check's report is shown: plain text wrapped at word boundaries everywhere; in a notebook
whose front end renders HTML, one output with the same plain text and an HTML form with the ✓ / ✗
marks in colour, and under a failed step whose result is a map, the "yours vs expected" picture.
The test cell's value (the points) and stderr are untouched. A check runs its own tensors on one
thread, and puts the learner's thread setting back afterwards."""

from __future__ import annotations

import base64
import html
import re
import sys
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401 - loaded before a test stands in for IPython, which it inspects
import pytest  # noqa: E402
import torch  # noqa: E402

from autograder import check_concept, check_softmax  # noqa: E402
from autograder.checks.questions import QUESTIONS  # noqa: E402
from autograder.frame import results  # noqa: E402
from autograder.frame.pictures import picture_png  # noqa: E402
from autograder.frame.registry import get  # noqa: E402
from autograder.frame.results import CheckResult, report_html, show  # noqa: E402

LONG = ("the weights of query 3 sum to 0.25 instead of 1 over the keys, which is what a softmax over "
        "the wrong axis gives when the scores are square, and the same holds for queries 4 and 5")


def _result(detail=LONG, passed=False):
    r = CheckResult("softmax", 3.0, seed=7)
    r.add("public case: rows sum to 1", 1.0, True)
    r.add("random cases: equal to the reference", 2.0, passed, detail)
    r.diagnose("you normalised over dim=0 " + "and over the batch " * 8)
    return r


def test_long_lines_wrap_at_word_boundaries():
    text = _result().report()
    words = " ".join(f"✗ random cases: equal to the reference: {LONG}".split())
    assert words in " ".join(text.split())  # no word was cut or lost
    for line in text.splitlines():
        assert len(line) <= 100 or " " not in line.strip(), line
    lines = text.splitlines()
    i = next(k for k, l in enumerate(lines) if "✗" in l)
    assert lines[i + 1].startswith("    ") and not lines[i + 1].startswith("     ")  # a hanging indent


def test_a_detail_of_several_lines_keeps_its_lines():
    text = _result(detail="first line\n  second line, indented").report()
    assert "\n  second line, indented" in text


def test_the_html_form_has_the_same_text_with_coloured_marks():
    r = _result(detail="<script>alert(1)</script> & more")
    text = r.report()
    page = report_html(text)
    assert "white-space: pre-wrap" in page
    assert re.search(r'<span style="color: #1a7f37[^"]*">✓</span>', page)
    assert re.search(r'<span style="color: #cf222e[^"]*">✗</span>', page)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert html.unescape(re.sub(r"<[^>]+>", "", page)) == text


class _Kernel:
    """A stand-in for IPython inside a Jupyter kernel: collects what is displayed."""

    def __init__(self, monkeypatch):
        self.shown = []
        shell = types.SimpleNamespace(kernel=object())
        ipython = types.ModuleType("IPython")
        ipython.get_ipython = lambda: shell
        ipython.version_info = (8, 30, 0)  # matplotlib asks
        display = types.ModuleType("IPython.display")
        display.display = lambda obj, raw=False: self.shown.append((obj, raw))
        ipython.display = display
        monkeypatch.setitem(sys.modules, "IPython", ipython)
        monkeypatch.setitem(sys.modules, "IPython.display", display)
        monkeypatch.delenv(results.PLAIN_ENV, raising=False)


def test_outside_a_kernel_the_report_is_printed(capsys):
    r = _result()
    show(r)
    out = capsys.readouterr()
    assert out.out == r.report() + "\n" and out.err == ""


def test_in_a_kernel_one_output_carries_both_forms(monkeypatch, capsys):
    kernel = _Kernel(monkeypatch)
    r = _result()
    show(r)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    ((bundle, raw),) = kernel.shown
    assert raw and bundle["text/plain"] == r.report() and bundle["text/html"] == report_html(r.report())


def test_the_plain_setting_prints_even_in_a_kernel(monkeypatch, capsys):
    kernel = _Kernel(monkeypatch)
    monkeypatch.setenv(results.PLAIN_ENV, "1")
    r = _result()
    show(r)
    assert capsys.readouterr().out == r.report() + "\n" and kernel.shown == []


def own_softmax(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    e = (x - torch.where(torch.isfinite(m), m, torch.zeros_like(m))).exp()
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))  # an all -inf slice gives zeros


def softmax_over_queries(x, dim=-1):
    return torch.softmax(x, dim=0 if x.dim() > 1 else -1)


def test_a_failed_map_step_shows_yours_vs_expected_under_its_report(monkeypatch, capsys):
    quiet = check_softmax(softmax_over_queries, seed=3, quiet=True)
    kernel = _Kernel(monkeypatch)
    points = check_softmax(softmax_over_queries, seed=3)
    assert type(points) is float and points == quiet < 3.0  # the cell's value is unchanged
    assert capsys.readouterr().err == ""
    (report, _), (picture, _) = kernel.shown
    assert "✗" in report["text/plain"]
    assert base64.b64decode(picture["image/png"]).startswith(b"\x89PNG")
    assert "yours vs expected" in picture["text/plain"]


def test_no_picture_for_a_pass_a_hidden_run_or_a_step_without_one(monkeypatch):
    kernel = _Kernel(monkeypatch)
    assert check_softmax(own_softmax, seed=3) == 3.0
    check_softmax(softmax_over_queries, seed=3, hidden=True)
    qid = next(k for k, q in QUESTIONS.items() if q.kind == "choice")
    wrong = next(o for o in QUESTIONS[qid].options if o != QUESTIONS[qid].answer)
    check_concept(qid, lambda: wrong)
    assert len(kernel.shown) == 3 and all("image/png" not in bundle for bundle, _ in kernel.shown)


@pytest.mark.parametrize("fn", [
    lambda x, dim=-1: 1 / 0,
    lambda x, dim=-1: x[:2],  # not the reference's shape
    lambda x, dim=-1: "not a tensor",
    lambda x, dim=-1: print("noise", file=sys.stderr) or torch.full_like(x, float("nan")),
])
def test_the_picture_is_skipped_quietly_for_hostile_functions(fn, capsys):
    png = picture_png(get("softmax").picture, fn)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    assert png is None or png.startswith(b"\x89PNG")
    assert picture_png(None, fn) is None and picture_png(get("softmax").picture, "not callable") is None


def test_a_check_runs_on_one_thread_and_restores_the_setting():
    before = torch.get_num_threads()
    seen = []

    def spy(x, dim=-1):
        seen.append(torch.get_num_threads())
        torch.set_num_threads(3)  # a learner's function that changes it
        return torch.softmax(x, dim=dim)

    try:
        torch.set_num_threads(2)
        check_softmax(spy, seed=1, quiet=True)
        assert seen and seen[0] == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_in_a_real_kernel_the_cell_keeps_its_points_and_shows_both_forms(tmp_path):
    """A test cell run by Jupyter: one display with text/plain and text/html, the picture, the
    points as the cell's value, nothing on stderr; and with the plain setting, the same text on
    stdout (what ``./course check`` reads)."""
    import os

    from conftest import code, graded_cell, notebook

    from autograder.grading import engine
    from autograder.grading import nbgrader_tools as nbt

    cells = lambda: [  # noqa: E731 - fresh cells for each run (a run fills in its cells' outputs)
        code("import torch\nfrom autograder import check_softmax\n"
             "def softmax(x, dim=-1):  # over the wrong axis\n"
             "    d = 0 if x.dim() > 1 else -1\n"
             "    e = (x - x.amax(dim=d, keepdim=True)).exp()\n"
             "    return e / e.sum(dim=d, keepdim=True)"),
        graded_cell("check_softmax", 3, "check_softmax(softmax, seed=3)"),
    ]
    limits = engine.Limits(cell_timeout=120, total_timeout=300, memory_mb=0)
    runs = {}
    for plain in (False, True):
        env = {k: v for k, v in os.environ.items() if k != results.PLAIN_ENV}
        if plain:
            env[results.PLAIN_ENV] = "1"
        graded = engine.run(engine.prepare(notebook(cells())), tmp_path, limits, env=env)
        runs[plain] = graded.nb.cells[1]
        step, = graded.steps
        assert step.points < 3
    rich, plain = runs[False], runs[True]
    kinds = [o["output_type"] for o in rich.outputs]
    assert kinds == ["display_data", "display_data", "execute_result"], kinds
    text = rich.outputs[0]["data"]["text/plain"]
    assert "✗" in text and "color:" in rich.outputs[0]["data"]["text/html"]
    assert "image/png" in rich.outputs[1]["data"]
    assert nbt.score_test_cell(rich).points == nbt.score_test_cell(plain).points == float(
        rich.outputs[2]["data"]["text/plain"])
    streams = [o for o in plain.outputs if o["output_type"] == "stream"]
    assert [o["name"] for o in streams] == ["stdout"] and streams[0]["text"].rstrip("\n") == text
