"""`manifest.json`: what a run made, step by step and panel by panel, rewritten atomically as it goes.

Panels finish on several threads; every update takes the lock and rewrites the whole file through a
temporary name, so a reader (or a crash) only ever sees a complete manifest.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from storyboard_core.files import write_json_atomic

Status = Literal["pending", "running", "completed", "failed", "skipped"]


@dataclass
class Output:
    index: int  # 1-based, panel order
    name: str
    status: Status = "pending"
    path: str | None = None
    prompt: str | None = None
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    request_id: str | None = None
    cost_usd: float = 0.0
    cached: bool = False


@dataclass
class StepRecord:
    name: str
    type: str
    model: str
    status: Status = "pending"
    outputs: list[Output] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return round(sum(o.cost_usd for o in self.outputs), 6)

    @property
    def failed(self) -> list[Output]:
        return [o for o in self.outputs if o.status == "failed"]


class Manifest:
    def __init__(self, path: Path, pipeline: str, steps: list[StepRecord]):
        self.path = path
        self.pipeline = pipeline
        self.status: Status = "running"
        self.steps = steps
        self.started_at = _now()
        self.finished_at: str | None = None
        self._lock = threading.Lock()

    def step(self, name: str) -> StepRecord:
        return next(s for s in self.steps if s.name == name)

    def update(self, step: str, index: int, **changes: Any) -> Output:
        """Change one output (1-based `index`) of `step` and rewrite the file."""
        with self._lock:
            output = self.step(step).outputs[index - 1]
            for key, value in changes.items():
                setattr(output, key, value)
            self._write()
            return output

    def set_status(self, step: str | None, status: Status) -> None:
        with self._lock:
            if step is None:
                self.status = status
                self.finished_at = _now() if status in ("completed", "failed") else None
            else:
                self.step(step).status = status
            self._write()

    @property
    def total_cost_usd(self) -> float:
        return round(sum(s.cost_usd for s in self.steps), 6)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "total_cost_usd": self.total_cost_usd,
            "steps": [
                {
                    "name": s.name,
                    "type": s.type,
                    "model": s.model,
                    "status": s.status,
                    "cost_usd": s.cost_usd,
                    "outputs": [asdict(o) for o in s.outputs],
                }
                for s in self.steps
            ],
        }

    def write(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        write_json_atomic(self.path, self.to_dict())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
