"""A learner's first exercise in a real browser: `./course start` serves a copy of the learner
notebooks, headless Chromium (driven by Playwright) opens notebook 01, types a wrong `softmax` into
its answer cell, runs the set-up, the imports, the answer and its check cell, and reads the ✗ with
its diagnosis from the page; then a correct `softmax` gets full marks, and a plot appears as a PNG
image.

It uses the system's Chromium (Debian's `chromium`, which `./course test` installs when it runs as
root with apt-get), not a browser downloaded by Playwright. It skips, saying why, only when no
Chromium is installed or it cannot start. Screenshots of each stage are written under the test's
tmp folder; on a failure they are also copied, with JupyterLab's log and the browser console, to
test-artifacts/browser/ in the repository, and the assertion message names both folders.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_scaled_dot_product_attention.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"

# As root Chromium needs --no-sandbox; without the background-networking flags it tries to reach
# Google's services and the closed network of a build machine refuses the connections.
CHROMIUM_ARGS = [
    "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]

# The mistake: no max-subtraction, so large logits overflow exp and give NaN.
WRONG_SOFTMAX = '''def softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
'''

# A correct answer, written differently from the course's solution.
RIGHT_SOFTMAX = '''def softmax(x, dim=-1):
    top = x.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(x - top)
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)
'''

POINTS = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*points")
PROMPT_DONE = re.compile(r"^\[(\d+)\]:$")
STARTUP_S = 240  # `./course start` may first re-install .venv's requirements (its own stamp)
STEP_MS = 60_000  # one cell's run, one page load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here (`chromium` or `chromium-browser` on PATH): `./course test` installs Debian's "
                "chromium with apt-get when it runs as root; elsewhere install it yourself")


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _report(source: str) -> str:
    """What check_softmax prints for `source` run here, in the test's own process."""
    import torch

    from autograder import check_softmax

    namespace = {"torch": torch}
    exec(compile(source, "<softmax>", "exec"), namespace)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        check_softmax(namespace["softmax"])
    return out.getvalue()


def _diagnosis(report: str) -> str:
    """The first sentence of the report's diagnosis (the part after 'Diagnosis:')."""
    match = re.search(r"Diagnosis:\s*(.+?\.)(\s|$)", report, re.S)
    assert match, f"the check gave the wrong softmax no diagnosis:\n{report}"
    return _normalise(match.group(1))


def _cells(notebook: Path) -> dict:
    """Indices of the cells the test runs, found from the notebook's own metadata and source."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]

    def grade_id(cell):
        return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")

    def source(cell):
        text = cell["source"]
        return text if isinstance(text, str) else "".join(text)

    def first(what, test, start=0):
        for i in range(start, len(cells)):
            if cells[i]["cell_type"] == "code" and test(cells[i]):
                return i
        raise AssertionError(f"{notebook.name} has no {what}")

    imports = first("cell importing the checks", lambda c: "from autograder import" in source(c))
    return {
        "set-up": first("course set-up cell", lambda c: grade_id(c) == "course_setup"),
        "imports": imports,
        "answer": first("softmax answer cell", lambda c: grade_id(c) == "softmax"),
        "check": first("softmax check cell", lambda c: re.search(r"\bcheck_softmax\(", source(c)) is not None
                       and c.get("metadata", {}).get("nbgrader", {}).get("grade")),
        "plot": first("plot after the imports", lambda c: "plt.show()" in source(c), imports + 1),
    }


@pytest.fixture
def lab(tmp_path):
    """JupyterLab started by `./course start` on a copy of notebooks/: (url, folder, log)."""
    folder = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", folder)
    marker = "served-from-the-copy.txt"  # only in the copy: the repository's notebooks stay untouched
    (folder / marker).write_text("", encoding="utf-8")
    port, token = _free_port(), "browser-test"
    # The test's own JupyterLab user settings: every cell in the page (no virtual scrolling), so the
    # n-th cell of the page is the n-th of the file; and no news toast over the notebook.
    for plugin, values in (("notebook-extension/tracker", {"windowingMode": "none"}),
                           ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False})):
        path = tmp_path / "lab-settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
    )
    log = tmp_path / "jupyterlab.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [str(ROOT / "course"), "start", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--ServerApp.token={token}", f"--notebook-dir={folder}"],
            cwd=str(tmp_path), env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, contents = time.monotonic() + STARTUP_S, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=5) as response:
                    contents = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.5)
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        assert contents is not None, (
            f"`./course start` exited with status {proc.returncode}" if proc.poll() is not None
            else f"`./course start` did not answer within {STARTUP_S} s") + f"; its log:\n{tail}"
        names = {item["name"] for item in contents["content"]}
        assert {NOTEBOOK, marker} <= names, (
            f"`./course start --notebook-dir={folder}` serves {sorted(names)}, not that folder; its log:\n{tail}")
        yield f"{base}/lab/tree/{NOTEBOOK}?token={token}", folder, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


@pytest.fixture
def page(tmp_path):
    """A page of headless Chromium with a new, empty profile."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed here: `./course test` installs it from "
                                      "requirements-test.txt")
    executable = _chromium()
    with sync_api.sync_playwright() as playwright:
        args = CHROMIUM_ARGS + (["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=executable, args=args, headless=True,
                viewport={"width": 1400, "height": 1000})
        except sync_api.Error as e:
            pytest.skip(f"{executable} cannot start here: {str(e).strip().splitlines()[0]}")
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


class _Run:
    """The steps of the test, each leaving a screenshot; a failure keeps them in test-artifacts/."""

    def __init__(self, page, tmp_path, log):
        self.page, self.log = page, log
        self.shots = tmp_path / "screenshots"
        self.shots.mkdir()
        self.count = 0
        self.console = []
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"page error: {error}"))

    def snap(self, name):
        self.count += 1
        with contextlib.suppress(Exception):  # a screenshot must never hide the real failure
            self.page.screenshot(path=str(self.shots / f"{self.count:02d}-{name}.png"), full_page=False)

    def keep(self) -> str:
        """Copy the screenshots, JupyterLab's log and the browser console to test-artifacts/."""
        self.snap("failure")
        (self.shots / "console.txt").write_text("\n".join(self.console) + "\n", encoding="utf-8")
        with contextlib.suppress(OSError):
            shutil.copy(self.log, self.shots / "jupyterlab.log")
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        shutil.copytree(self.shots, ARTIFACTS)
        return f"screenshots, JupyterLab's log and the browser console: {self.shots} (kept in {ARTIFACTS})"

    def cell(self, index):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)

    def prompt(self, index) -> str:
        return self.cell(index).locator(".jp-InputArea-prompt").first.inner_text().strip()

    def run(self, index, timeout_ms=STEP_MS):
        """Select cell `index` in command mode, run it in place (Ctrl+Enter), wait for its number."""
        before = self.prompt(index)
        cell = self.cell(index)
        cell.scroll_into_view_if_needed()
        cell.locator(".jp-InputArea-prompt").first.click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+Enter")
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            now = self.prompt(index)
            if PROMPT_DONE.match(now) and now != before:
                break
            assert time.monotonic() < deadline, f"cell {index} did not finish within {timeout_ms / 1000:.0f} s (prompt {now!r})"
            self.page.wait_for_timeout(200)
        self.snap(f"ran-cell-{index}")

    def output(self, index) -> str:
        return self.cell(index).locator(".jp-OutputArea").first.inner_text()

    def type_into(self, index, source):
        """Replace the text of cell `index`'s editor: select all in it, then type."""
        editor = self.cell(index).locator(".cm-content").first
        editor.scroll_into_view_if_needed()
        editor.click()
        self.page.keyboard.press("Control+a")
        self.page.keyboard.press("Delete")
        self.page.keyboard.insert_text(source)
        shown = editor.inner_text()
        assert _normalise(shown) == _normalise(source), f"cell {index}'s editor shows\n{shown}\ninstead of\n{source}"
        self.page.keyboard.press("Escape")
        self.snap(f"typed-cell-{index}")

    def wait_idle(self, timeout_ms=STEP_MS):
        """Wait for the notebook's kernel to be started and idle (the toolbar's status circle)."""
        self.page.wait_for_function(
            """() => {
                const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
                const status = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
                return status !== null && status.getAttribute('data-status') === 'idle';
            }""", timeout=timeout_ms)


def _points(text: str):
    found = POINTS.search(text)
    assert found, f"no 'N / M points' in the check cell's output:\n{text}"
    return float(found.group(1)), float(found.group(2))


@pytest.mark.slow
def test_a_learner_fixes_softmax_in_the_browser(lab, page, tmp_path):
    url, folder, log = lab
    cells = _cells(folder / NOTEBOOK)
    expected_diagnosis = _diagnosis(_report(WRONG_SOFTMAX))
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # what an earlier failure kept would mislead
    run = _Run(page, tmp_path, log)
    try:
        page.goto(url, timeout=STEP_MS)
        run.cell(cells["check"]).wait_for(timeout=STEP_MS)
        run.wait_idle()
        run.snap("opened")

        run.run(cells["set-up"])
        run.run(cells["imports"])
        run.type_into(cells["answer"], WRONG_SOFTMAX)
        run.run(cells["answer"])
        run.run(cells["check"])
        wrong = run.output(cells["check"])
        got, most = _points(wrong)
        assert got < most, f"the wrong softmax got {got} / {most}:\n{wrong}"
        assert "✗" in wrong, f"no ✗ in the check cell's output:\n{wrong}"
        assert expected_diagnosis in _normalise(wrong), (
            f"the page does not show the diagnosis {expected_diagnosis!r}:\n{wrong}")

        run.type_into(cells["answer"], RIGHT_SOFTMAX)
        run.run(cells["answer"])
        run.run(cells["check"])
        right = run.output(cells["check"])
        got, most = _points(right)
        assert got == most, f"the correct softmax got {got} / {most}:\n{right}"
        assert "✗" not in right, f"a ✗ for the correct softmax:\n{right}"

        run.run(cells["plot"])
        image = run.cell(cells["plot"]).locator(".jp-OutputArea img").first
        image.wait_for(timeout=STEP_MS)
        src = image.get_attribute("src") or ""
        assert src.startswith("data:image/png"), f"the plot's image is not a PNG: src={src[:80]!r}"
        width = image.evaluate("img => img.naturalWidth")
        assert width > 0, "the plot's PNG did not decode (naturalWidth 0)"
        run.snap("done")
    except Exception as e:
        raise AssertionError(f"{type(e).__name__}: {e}\n{run.keep()}") from e


# The test's premises, checked quickly (no kernel, no browser).


def test_the_cells_it_runs_are_found_in_notebook_01():
    notebook = ROOT / "notebooks" / NOTEBOOK
    cells = _cells(notebook)
    sources = ["".join(c["source"]) for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"]]
    assert cells["set-up"] < cells["imports"] < cells["answer"] < cells["check"] < cells["plot"], cells
    assert "raise NotImplementedError" in sources[cells["answer"]], "the answer cell should be the learner's stub"
    assert "check_softmax" in sources[cells["check"]]
    assert "plt.show()" in sources[cells["plot"]]


def test_the_typed_answers_get_what_the_browser_test_expects():
    wrong = _report(WRONG_SOFTMAX)
    got, most = _points(wrong)
    assert got < most and "✗" in wrong
    assert "max" in _diagnosis(wrong)
    right = _report(RIGHT_SOFTMAX)
    got, most = _points(right)
    assert got == most and "✗" not in right, right


def test_without_chromium_it_skips_saying_why(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="no Chromium here"):
        _chromium()
