"""What a pipeline will do, before it does it: steps, calls, workers and estimated cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storyboard_core.spec import Pipeline, PlannedStep


@dataclass(frozen=True)
class StepEstimate:
    step: PlannedStep
    calls: int
    engine: str
    cost_usd: float


def estimate(spec: Pipeline, *, offline: bool = False) -> list[StepEstimate]:
    rows = []
    for step in spec.steps:
        calls = 0 if step.kind == "split_image" else step.outputs
        engine = "local" if offline else step.model.engine
        seconds = step.params.duration_seconds if step.kind == "image_to_video" else 0.0
        cost = 0.0 if engine == "local" else round(calls * step.model.price.cost(seconds), 6)
        rows.append(StepEstimate(step, calls, engine, cost))
    return rows


def describe_plan(spec: Pipeline, out: Path, *, offline: bool = False) -> str:
    rows = estimate(spec, offline=offline)
    lines = [f"pipeline {spec.name!r} from {spec.source}", f"output_dir: {out}", ""]
    header = f"{'#':>2}  {'step':<22} {'type':<15} {'model':<18} {'engine':<6} {'calls':>5}  {'workers':>7}  {'price':>12}  {'estimate':>9}"
    lines += [header, "-" * len(header)]
    for row in rows:
        step = row.step
        workers = str(step.params.workers) if step.kind == "image_to_video" else "-"
        price = "free" if row.engine == "local" else step.model.price.describe()
        lines.append(
            f"{step.position:>2}  {step.name:<22} {step.kind:<15} {step.model.key:<18} {row.engine:<6} "
            f"{row.calls:>5}  {workers:>7}  {price:>12}  ${row.cost_usd:>8.2f}"
        )
    total = sum(r.cost_usd for r in rows)
    lines += ["-" * len(header), f"{'estimated total':>{len(header) - 11}}  ${total:>8.2f}"]
    for row in rows:
        if row.step.kind == "image_to_video":
            p = row.step.params
            mode = f"in parallel, {p.workers} at a time" if p.parallel else "one at a time"
            lines.append(f"{row.step.name}: {row.step.outputs} clips of {p.duration}s, {mode}")
    return "\n".join(lines)
