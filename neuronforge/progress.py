"""Progress lines for long steps: done/total, rate and ETA, at least every 10 seconds.

A step that encodes a corpus, converts a model or plays a prompt suite runs for minutes; its log should say how far
it is and when it will finish, even while one slow batch runs. `Progress` counts what is done, and a ticker thread
writes a line whenever `every_s` passed since the last one — so a line comes at least every `every_s` seconds, and
never more than one per `every_s` however fast the work advances.

    with Progress("corpus_embeddings", "chunks", total=None, log=context.log) as progress:
        progress.set_total(estimate, approximate=True)
        progress.advance(32)                  # encoded now: counts towards the rate
        progress.advance(512, skipped=True)   # already on disk: done, but not in the rate
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class _Log(Protocol):
    def info(self, msg: str) -> None: ...


PERCENT = "%"


def _rate(rate: float) -> str:
    return f"{rate:,.1f}" if rate >= 1 or rate == 0 else f"{rate:.2g}"


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(
        self,
        what: str,
        unit: str,
        total: float | None,
        log: _Log | None,
        *,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what = what
        self.unit = unit
        self.total = total
        self.approximate = False
        self.done = 0.0
        self.skipped = 0.0
        self.log = log
        self.every_s = every_s
        self.clock = clock
        self.note = ""  # a phase or a detail shown after the numbers ("loading the model", "shard 3/9")
        self.started = clock()
        self.last_line = self.started
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ counting
    def advance(self, n: float = 1, *, skipped: bool = False) -> None:
        with self._lock:
            self.done += n
            if skipped:
                self.skipped += n

    def set_total(self, total: float | None, *, approximate: bool = False) -> None:
        with self._lock:
            self.total, self.approximate = total, approximate

    def set_note(self, note: str) -> None:
        with self._lock:
            self.note = note

    # ------------------------------------------------------------------------------------------------ reporting
    def rate(self) -> float:
        """Units per second of work done in this step (what was skipped costs nothing, so it is left out)."""
        elapsed = self.clock() - self.started
        return (self.done - self.skipped) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        with self._lock:
            done, total, approximate, note = self.done, self.total, self.approximate, self.note
        rate = self.rate()
        elapsed = duration(self.clock() - self.started)
        if self.unit == PERCENT:
            # Work measured as a share of the whole (weighted phases): "35% done"; a rate in %/s says nothing.
            head, rate_part = f"{self.what}: {min(done / (total or 100), 1):.0%} done", None
        elif total:
            tilde = "~" if approximate else ""
            head = f"{self.what}: {done:,.0f}/{tilde}{total:,.0f} {self.unit} ({min(done / total, 1):.0%})"
            rate_part = f"{_rate(rate)} {self.unit}/s"
        else:
            head, rate_part = f"{self.what}: {done:,.0f} {self.unit}", f"{_rate(rate)} {self.unit}/s"
        parts = [head, *([rate_part] if rate_part else []), f"{elapsed} elapsed"]
        if total and done < total:
            parts.append(f"ETA {'~' if approximate else ''}{duration((total - done) / rate)}" if rate > 0 else "ETA ?")
        return ", ".join(parts) + (f" — {note}" if note else "")

    def maybe_log(self) -> bool:
        """Write a line if `every_s` passed since the last one; True if it did."""
        now = self.clock()
        if now - self.last_line < self.every_s:
            return False
        self.last_line = now
        if self.log is not None:
            self.log.info(self.line())
        return True

    # ------------------------------------------------------------------------------------------------ the ticker
    def __enter__(self) -> Progress:
        self._ticker = threading.Thread(target=self._tick, name=f"progress:{self.what}", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        # A closing line when there was something to report (a step that finished in a blink says nothing).
        if exc_type is None and self.log is not None and (self.done or self.last_line > self.started):
            self.log.info(f"{self.line()} — done")

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.every_s / 4)):
            self.maybe_log()
