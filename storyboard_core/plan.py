"""What a pipeline will do, before it does it: steps, calls, workers, estimated cost, what is cached.

The estimate follows the pipeline through the output store: a cached storyboard is split in memory
to learn its panels' content hashes, so a re-run knows which clips it already has. Where an earlier
step still has to be paid for, its outputs are unknown and every call after it counts as paid.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storyboard_core import media
from storyboard_core.registry import Model
from storyboard_core.spec import Pipeline, PlannedStep
from storyboard_core.store import OutputStore, clip_key, image_key


class BudgetError(Exception):
    """The estimate is over the limit: refused before any paid call."""


@dataclass(frozen=True)
class StepEstimate:
    step: PlannedStep
    engine: str
    calls: int
    cached: int
    cost_usd: float


def engine_names(spec: Pipeline, override: str | None) -> dict[str, str]:
    """Registry engine name -> the engine that serves it in this run (`--offline` maps all to local)."""
    return {s.model.engine: override or s.model.engine for s in spec.steps}


def call_cost(model: Model, engine: str, arguments: Mapping[str, Any], seconds: float = 0.0) -> float:
    """What one new call costs on `engine`: the model's price, or nothing on the local engine."""
    return 0.0 if engine == "local" else model.cost(arguments, seconds)


def estimate(spec: Pipeline, store: OutputStore, *, override: str | None = None, fresh: bool = False) -> list[StepEstimate]:
    names = engine_names(spec, override)
    rows = []
    # The images coming into the next step, as encoded bytes, while they are known without paying.
    images: list[bytes] | None = [spec.input.read_bytes()] if spec.input else None
    for step in spec.steps:
        engine = names[step.model.engine]
        arguments = step.model.provider_arguments(step.model_params)
        if step.kind == "text_to_image":
            prompt = step.params.prompt or spec.prompt or ""
            key = image_key(engine, step.model, prompt, arguments)
            hit = not fresh and store.has(key, ".png")
            images = [store.output_path(key, ".png").read_bytes()] if hit else None
            rows.append(StepEstimate(step, engine, 1, int(hit), 0.0 if hit else call_cost(step.model, engine, arguments)))
        elif step.kind == "split_image":
            if images is not None:
                suffix = f".{step.params.output_format}"
                panels = media.split_grid(io.BytesIO(images[0]), step.params.rows_cols)
                images = [media.encode_image(panel, suffix) for panel in panels]
            rows.append(StepEstimate(step, "local", 0, 0, 0.0))
        else:
            seconds = step.params.duration_seconds
            hits = 0
            if images is not None and not fresh:
                hits = sum(
                    store.has(clip_key(engine, step.model, step.params.prompt_for(i), arguments, image, seconds), ".mp4")
                    for i, image in enumerate(images)
                )
            rows.append(StepEstimate(step, engine, step.outputs, hits, (step.outputs - hits) * call_cost(step.model, engine, arguments, seconds)))
            images = None
    return rows


def check_budget(spec: Pipeline, store: OutputStore, *, override: str | None, fresh: bool, limit: float | None) -> float:
    """The estimated cost of the run; raises BudgetError when it is over `limit` (or the pipeline's max_cost_usd)."""
    limit = limit if limit is not None else spec.max_cost_usd
    total = round(sum(r.cost_usd for r in estimate(spec, store, override=override, fresh=fresh)), 6)
    if limit is not None and total > limit:
        raise BudgetError(
            f"{spec.source}: the run would cost an estimated ${total:.2f}, over the limit of ${limit:.2f} "
            f"(max_cost_usd / --max-cost); nothing was run. Raise the limit, or run fewer or cheaper steps."
        )
    return total


def describe_plan(spec: Pipeline, store: OutputStore, out: Path, *, override: str | None = None, fresh: bool = False) -> str:
    rows = estimate(spec, store, override=override, fresh=fresh)
    lines = [f"pipeline {spec.name!r} from {spec.source}", f"output_dir: {out}", f"output store: {store.root}", ""]
    header = (
        f"{'#':>2}  {'step':<22} {'type':<15} {'model':<16} {'engine':<9} {'calls':>5} {'cached':>6} "
        f"{'workers':>7}  {'price':>11}  {'estimate':>9}"
    )
    lines += [header, "-" * len(header)]
    for row in rows:
        step = row.step
        workers = str(step.params.workers) if step.kind == "image_to_video" else "-"
        price = "free" if row.engine == "local" or not row.calls else step.model.price.describe()
        lines.append(
            f"{step.position:>2}  {step.name:<22} {step.kind:<15} {step.model.key:<16} {row.engine:<9} "
            f"{row.calls:>5} {row.cached:>6} {workers:>7}  {price:>11}  ${row.cost_usd:>8.2f}"
        )
    total = sum(r.cost_usd for r in rows)
    lines += ["-" * len(header), f"{'estimated total (cached calls cost 0)':>{len(header) - 11}}  ${total:>8.2f}"]
    limit = spec.max_cost_usd
    if limit is not None:
        lines.append(f"{'limit (max_cost_usd)':>{len(header) - 11}}  ${limit:>8.2f}")
    for row in rows:
        if row.step.kind == "image_to_video":
            p = row.step.params
            mode = f"in parallel, {p.workers} at a time" if p.parallel else "one at a time"
            lines.append(f"{row.step.name}: {row.step.outputs} clips of {p.duration}s, {mode}")
    return "\n".join(lines)
