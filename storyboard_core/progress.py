"""One line a person can follow when each panel starts and ends, with n/N done."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class StepProgress:
    """Counts attempts, running and finished panels of one step; thread-safe."""

    def __init__(self, step: str, total: int, emit: Callable[[str], None] = print):
        self.step = step
        self.total = total
        self.emit = emit
        self.done = 0
        self.failed = 0
        self.running = 0
        self.attempts: dict[int, int] = {}
        self._first_start: dict[int, float] = {}
        self._lock = threading.Lock()

    def started(self, index: int, name: str) -> int:
        """Record that panel `index` (1-based) starts an attempt; returns the attempt number."""
        with self._lock:
            attempt = self.attempts[index] = self.attempts.get(index, 0) + 1
            self._first_start.setdefault(index, time.monotonic())
            self.running += 1
            retry = f" (attempt {attempt})" if attempt > 1 else ""
            self.emit(f"[{self.step}] {name} started{retry}  {self.done}/{self.total} done, {self.running} running")
        return attempt

    def attempt_ended(self, index: int, name: str, *, transient_error: str | None = None) -> None:
        """An attempt is over. A transient failure gets its own line: the panel may be tried again."""
        with self._lock:
            self.running -= 1
            if transient_error is not None:
                attempt = self.attempts.get(index, 1)
                self.emit(f"[{self.step}] {name} attempt {attempt} failed: {transient_error}  {self.done}/{self.total} done")

    def finished(self, index: int, name: str, *, error: str | None = None, cached: bool = False) -> float:
        """Record that panel `index` is final; returns its seconds since its first attempt started."""
        with self._lock:
            seconds = round(time.monotonic() - self._first_start.get(index, time.monotonic()), 3)
            self.done += 1
            if cached:
                self.emit(f"[{self.step}] {name} reused from the output store (no call)  {self.done}/{self.total} done")
            elif error is None:
                self.emit(f"[{self.step}] {name} done in {seconds:.1f}s  {self.done}/{self.total} done")
            else:
                self.failed += 1
                self.emit(f"[{self.step}] {name} FAILED after {seconds:.1f}s: {error}  {self.done}/{self.total} done")
        return seconds
