"""The progress bar of a grading run: one line on stdout with a bar, counts and an ETA."""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional, TextIO


class Progress:
    """One line of progress on stdout: a bar, counts and an ETA; redrawn in place on a terminal,
    one line per finished submission otherwise (logs, CI)."""

    def __init__(self, total: int, workers: int, stream: Optional[TextIO] = None, enabled: bool = True):
        self.total = total
        self.workers = max(1, workers)
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.done = 0
        self.problems = 0
        self.started = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.Lock()

    @staticmethod
    def _clock(seconds: float) -> str:
        seconds = int(round(max(0.0, seconds)))
        return f"{seconds // 60}:{seconds % 60:02d}"

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        if self.done:
            eta = elapsed / self.done * (self.total - self.done)
            eta_s = self._clock(eta)
        else:
            eta_s = "?"
        running = min(self.workers, self.total - self.done)
        return (f"[{bar}] {self.done}/{self.total} graded, {self.problems} with problems, {running} running, "
                f"elapsed {self._clock(elapsed)}, ETA {eta_s}")

    def update(self, label: str = "", problem: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.problems += bool(problem)
            if not self.enabled:
                return
            if self.tty:
                self.stream.write("\r\x1b[K" + self.line())
                if self.done == self.total:
                    self.stream.write("\n")
            else:
                self.stream.write(self.line() + (f"  {label}" if label else "") + "\n")
            self.stream.flush()
