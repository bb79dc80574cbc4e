"""An engine that stands in for a hosted model: it takes a set time per call and fails on cue.

Tests and benchmarks select it with `register_engine("simulated", lambda: engine)`. It counts what
a provider would see: calls per prompt, calls in flight and the most in flight at once. Its outputs
are small placeholder files (the local engine makes real media; this one measures scheduling).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from storyboard_core.engines.base import ClipJob, Generated, GenerationError, ImageJob
from storyboard_core.files import atomic_path
from storyboard_core.registry import Model


@dataclass
class Call:
    prompt: str
    started: float
    ended: float = 0.0
    error: str | None = None


@dataclass
class SimulatedEngine:
    name = "simulated"
    # Seconds per call, or a function of the prompt.
    latency: float | Callable[[str], float] = 0.0
    # prompt substring -> errors to raise on that prompt's successive calls (None: succeed).
    faults: dict[str, list[GenerationError | None]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._per_prompt: Counter[str] = Counter()

    def calls_for(self, prompt: str) -> int:
        with self._lock:
            return self._per_prompt[prompt]

    def text_to_image(self, model: Model, job: ImageJob, dest: Path) -> Generated:
        from storyboard_core.engines.local import LocalEngine

        self._run(job.prompt)
        return LocalEngine().text_to_image(model, job, dest)

    def image_to_video(self, model: Model, job: ClipJob, dest: Path) -> Generated:
        self._run(job.prompt)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(f"simulated clip of {job.image.name}: {job.prompt}\n".encode())
        return Generated(dest, request_id=f"sim-{len(self.calls)}")

    def _run(self, prompt: str) -> None:
        with self._lock:
            self._per_prompt[prompt] += 1
            attempt = self._per_prompt[prompt]
            call = Call(prompt, time.monotonic())
            self.calls.append(call)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.latency(prompt) if callable(self.latency) else self.latency)
            error = self._fault(prompt, attempt)
            if error is not None:
                call.error = str(error)
                raise error
        finally:
            with self._lock:
                self.in_flight -= 1
                call.ended = time.monotonic()

    def _fault(self, prompt: str, attempt: int) -> GenerationError | None:
        for needle, script in self.faults.items():
            if needle in prompt and attempt <= len(script):
                return script[attempt - 1]
        return None
