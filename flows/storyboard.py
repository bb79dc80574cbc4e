"""The storyboard flow: prompt → storyboard grid → panels → one clip per panel, in parallel.

Run it:  python flows/storyboard.py [PIPELINE.yaml] [--offline] [--output-dir DIR] [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_PIPELINE = PROJECT_ROOT / "input" / "pipelines" / "storyboard" / "demo_local.yaml"

if __name__ == "__main__":
    # A command-line run prints its own lines: each panel's start, failed attempts, end, and the
    # run's outcome. Prefect's console lines would repeat them with tracebacks (a task whose retries
    # ran out logs its exception at ERROR), and the temporary server's telemetry logs sqlite
    # 'database is locked' tracebacks. Every log still goes to the Prefect API, where the UI shows
    # it. Set before Prefect is imported; set the variable yourself to see more.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.path.insert(0, str(PROJECT_ROOT))

from prefect import flow, unmapped
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from storyboard_core.engines import (
    ClipJob,
    Engine,
    EngineConfigError,
    GenerationError,
    ImageJob,
    fal_engine,
    register_engine,
    resolve_engines,
)
from storyboard_core.manifest import Manifest, Output, StepRecord
from storyboard_core.plan import BudgetError, call_cost, check_budget, describe_plan, engine_names
from storyboard_core.progress import StepProgress
from storyboard_core.spec import Pipeline, PipelineError, PlannedStep, load_pipeline, parse_pipeline
from storyboard_core.store import OutputStore, clip_key, image_key
from tasks.artifacts import add_secret, advance_progress, publish_results, start_progress
from tasks.steps import animate_panel, for_step, generate_image, split_image

DEFAULT_STORE = PROJECT_ROOT / ".storyboard" / "cache"


def fal_engine_with_secret_block() -> Engine:
    """$FAL_KEY, else the Prefect Secret block named in $STORYBOARD_FAL_KEY_SECRET (where a worker keeps it)."""
    block = os.environ.get("STORYBOARD_FAL_KEY_SECRET", "").strip()
    if os.environ.get("FAL_KEY", "").strip() or not block:
        return fal_engine()
    from prefect.blocks.system import Secret

    try:
        key = Secret.load(block).get()
    except ValueError as exc:
        raise EngineConfigError(f"the Prefect Secret block {block!r} named in STORYBOARD_FAL_KEY_SECRET cannot be loaded: {exc}") from None
    add_secret(str(key))  # artifacts redact it like $FAL_KEY
    return fal_engine(str(key))


register_engine("fal", fal_engine_with_secret_block)


def output_store(cache_dir: str | None = None) -> OutputStore:
    """The project's output store: `--cache-dir`, else $STORYBOARD_CACHE_DIR, else .storyboard/cache."""
    return OutputStore(Path(cache_dir or os.environ.get("STORYBOARD_CACHE_DIR") or DEFAULT_STORE))


def read_pipeline(pipeline: str) -> Pipeline:
    """A pipeline given as a path to a YAML file, or as the YAML text itself (deployment parameter)."""
    if "\n" in pipeline:
        return parse_pipeline(pipeline, Path("<pipeline parameter>"))
    return load_pipeline(pipeline)


def _flow_run_name() -> str:
    pipeline = flow_run.parameters.get("pipeline") or str(DEMO_PIPELINE)
    try:
        return read_pipeline(pipeline).name
    except PipelineError:
        return "invalid-pipeline"


@dataclass
class Run:
    """What every step of one run shares."""

    spec: Pipeline
    out: Path
    store: OutputStore
    manifest: Manifest
    engines: dict[str, Engine]  # by the registry's engine name
    engine_names: dict[str, str]  # registry engine name -> the engine that serves it
    fresh: bool

    def engine(self, step: PlannedStep) -> tuple[str, Engine]:
        return self.engine_names[step.model.engine], self.engines[step.model.engine]


@flow(name="storyboard", flow_run_name=_flow_run_name, persist_result=False)
def storyboard(
    pipeline: str = str(DEMO_PIPELINE),
    offline: bool = False,
    output_dir: str | None = None,
    engine: str | None = None,
    fresh: bool = False,
    max_cost: float | None = None,
    cache_dir: str | None = None,
) -> State[Any]:
    """Run a storyboard pipeline file. `offline` renders every step on the local engine."""
    spec = read_pipeline(pipeline)
    override = "local" if offline else engine
    store = output_store(cache_dir)
    check_budget(spec, store, override=override, fresh=fresh, limit=max_cost)
    out = Path(output_dir) if output_dir else spec.output_dir
    run = Run(
        spec, out, store, start_manifest(spec, out),
        resolve_engines({s.model.engine for s in spec.steps}, override), engine_names(spec, override), fresh,
    )

    images: list[Path] = [spec.input] if spec.input else []
    for step in spec.steps:
        run.manifest.set_status(step.name, "running")
        if step.kind == "text_to_image":
            images = make_storyboard(run, step)
        elif step.kind == "split_image":
            images = cut_panels(run, step, images[0])
        else:
            images = animate_panels(run, step, images)
        record = run.manifest.step(step.name)
        run.manifest.set_status(step.name, "failed" if record.failed else "completed")
        if not images or (record.failed and step.kind != "image_to_video"):
            break

    return finish(run)


def start_manifest(spec: Pipeline, out: Path) -> Manifest:
    records = [
        StepRecord(step.name, step.kind, step.model.key, outputs=[Output(i, step.kind) for i in range(1, step.outputs + 1)])
        for step in spec.steps
    ]
    manifest = Manifest(out / "manifest.json", spec.name, records)
    manifest.write()
    return manifest


def make_storyboard(run: Run, step: PlannedStep) -> list[Path]:
    prompt = step.params.prompt or run.spec.prompt or ""
    dest = run.out / step.name / "storyboard.png"
    job = ImageJob(prompt=prompt, arguments=step.model.provider_arguments(step.model_params))
    engine_name, engine = run.engine(step)
    key = image_key(engine_name, step.model, job.prompt, job.arguments)
    blob = prepare(run, key, ".png")
    run.manifest.update(step.name, 1, name=dest.stem, status="running", prompt=prompt)
    state = for_step(generate_image, step, run.store.results, fresh=run.fresh)(
        key, engine, step.model, job, blob, return_state=True
    )
    if state.is_completed():
        made = state.result()
        cached = made.cached or state.name == "Cached"
        run.store.place(key, ".png", dest)
        run.manifest.update(
            step.name, 1, status="completed", path=_rel(dest, run.out), request_id=made.request_id,
            cost_usd=0.0 if cached else call_cost(step.model, engine_name, job.arguments), cached=cached,
            attempts=0 if cached else 1,
        )
        return [dest]
    run.manifest.update(step.name, 1, status="failed", error=_error_text(state.result(raise_on_failure=False)))
    return []


def cut_panels(run: Run, step: PlannedStep, image: Path) -> list[Path]:
    panels = split_image(image, step.params, run.out / step.name)
    for index, path in enumerate(panels, start=1):
        run.manifest.update(step.name, index, name=path.stem, status="completed", path=_rel(path, run.out), attempts=1)
    return panels


def animate_panels(run: Run, step: PlannedStep, panels: list[Path]) -> list[Path]:
    """One task run per panel, at most `max_workers` at once; results recorded in panel order."""
    engine_name, engine = run.engine(step)
    names = [panel.stem for panel in panels]
    arguments = step.model.provider_arguments(step.model_params)
    jobs = [
        ClipJob(
            image=panel,
            prompt=step.params.prompt_for(i),
            duration=step.params.duration_seconds,
            arguments=arguments,
            timeout_seconds=step.params.timeout,
        )
        for i, panel in enumerate(panels)
    ]
    keys = [clip_key(engine_name, step.model, job.prompt, arguments, job.image, job.duration) for job in jobs]
    for index, (name, job) in enumerate(zip(names, jobs), start=1):
        run.manifest.update(step.name, index, name=name, prompt=job.prompt)
    progress = StepProgress(step.name, len(panels))
    clips = [run.out / step.name / f"{name}.mp4" for name in names]
    price = call_cost(step.model, engine_name, arguments, step.params.duration_seconds)
    bar = start_progress(step.name, len(panels))  # the flow run's progress artifact, moved as panels finish

    with ThreadPoolTaskRunner(max_workers=step.params.workers) as runner:
        futures = runner.map(
            for_step(animate_panel, step, run.store.results, fresh=run.fresh),
            {
                "step": unmapped(step.name),
                "panel": names,
                "index": list(range(1, len(panels) + 1)),
                "key": keys,
                "engine": unmapped(engine),
                "model": unmapped(step.model),
                "job": jobs,
                "dest": [prepare(run, key, ".mp4") for key in keys],
                "progress": unmapped(progress),
            },
        )
        position = {future.task_run_id: index for index, future in enumerate(futures, start=1)}
        for future in as_completed(futures):
            index = position[future.task_run_id]
            name = names[index - 1]
            result = future.result(raise_on_failure=False)
            attempts = progress.attempts.get(index, 0)
            if future.state.is_completed():
                cached = result.cached or future.state.name == "Cached"
                run.store.place(keys[index - 1], ".mp4", clips[index - 1])
                seconds = progress.finished(index, name, cached=cached)
                run.manifest.update(
                    step.name, index, status="completed", path=_rel(clips[index - 1], run.out), attempts=attempts,
                    seconds=seconds, request_id=result.request_id, cost_usd=0.0 if cached else price, cached=cached,
                )
            else:
                error = _error_text(result)
                seconds = progress.finished(index, name, error=error)
                run.manifest.update(
                    step.name, index, status="failed", error=error, attempts=attempts, seconds=seconds,
                    request_id=getattr(result, "request_id", None),
                )
            advance_progress(bar, progress.done, progress.total, step_name=step.name, failed=progress.failed)
    return clips


def prepare(run: Run, key: str, suffix: str) -> Path:
    """The store path for a request; with `fresh`, the old file is dropped so the request runs again."""
    if run.fresh:
        run.store.forget(key, suffix)
    else:
        run.store.forget_if_missing(key, suffix)
    return run.store.output_path(key, suffix)


def finish(run: Run) -> State[Any]:
    manifest = run.manifest
    if not run.spec.save_intermediates:
        for step in run.spec.steps[:-1]:
            shutil.rmtree(run.out / step.name, ignore_errors=True)
            for output in manifest.step(step.name).outputs:
                manifest.update(step.name, output.index, path=None)
    failed = [(s.name, o) for s in manifest.steps for o in s.outputs if o.status != "completed"]
    manifest.set_status(None, "failed" if failed else "completed")
    publish_results(manifest)  # the panel table and the summary artifacts; never fails the run
    summary = manifest.to_dict()
    if failed:
        names = ", ".join(f"{step}[{o.name}]" for step, o in failed)
        return Failed(message=f"{len(failed)} output(s) not made: {names}", data=summary)
    return Completed(message=f"{run.spec.name}: every output made", data=summary)


def _rel(path: Path, out: Path) -> str:
    try:
        return str(path.relative_to(out))
    except ValueError:
        return str(path)


def _error_text(exc: BaseException | Any) -> str:
    if isinstance(exc, GenerationError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python flows/storyboard.py",
        description="Run a storyboard pipeline: storyboard grid → panels → one clip per panel.",
    )
    parser.add_argument("pipeline", nargs="?", default=str(DEMO_PIPELINE), help="pipeline YAML (default: the offline demo)")
    parser.add_argument("--offline", action="store_true", help="render every step on the local engine (no network, no key)")
    parser.add_argument("--output-dir", help="write here instead of the pipeline's output_dir")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan and its cost; write nothing")
    parser.add_argument("--fresh", action="store_true", help="ignore the output store: make (and pay for) every output again")
    parser.add_argument("--max-cost", type=float, metavar="USD", help="refuse to run if the estimate is over this (overrides max_cost_usd)")
    parser.add_argument("--cache-dir", help="the output store (default: $STORYBOARD_CACHE_DIR or .storyboard/cache in the project)")
    parser.add_argument("--list-cache", action="store_true", help="list what the output store holds, and exit")
    parser.add_argument("--clear-cache", action="store_true", help="empty the output store (the next runs pay again), and exit")
    args = parser.parse_args(argv)

    store = output_store(args.cache_dir)
    if args.list_cache or args.clear_cache:
        return manage_store(store, clear=args.clear_cache)

    override = "local" if args.offline else None
    try:
        spec = load_pipeline(args.pipeline)
        if args.dry_run:
            print(describe_plan(spec, store, _out(args, spec), override=override, fresh=args.fresh))
            return 0
        check_budget(spec, store, override=override, fresh=args.fresh, limit=args.max_cost)
        resolve_engines({s.model.engine for s in spec.steps}, override)  # a missing key fails here, before any step
    except (PipelineError, EngineConfigError, BudgetError) as exc:
        problems = exc.problems if isinstance(exc, PipelineError) else [str(exc)]
        print("error: the pipeline cannot run:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 2

    out = _out(args, spec)
    print(f"storyboard: {spec.name} → {out}")
    # Heartbeats tell a server that a deployed run is alive; a local run has none to tell, and the
    # heartbeat thread costs ~1 s at the end of every flow run. Deployed runs keep them.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        state = storyboard(
            pipeline=str(spec.source), offline=args.offline, output_dir=str(out), fresh=args.fresh,
            max_cost=args.max_cost, cache_dir=str(store.root), return_state=True,
        )
    return report(state, out)


def _out(args: argparse.Namespace, spec: Pipeline) -> Path:
    return Path(args.output_dir) if args.output_dir else spec.output_dir


def manage_store(store: OutputStore, *, clear: bool) -> int:
    entries = store.entries()
    if clear:
        store.clear()
        print(f"cleared {len(entries)} output(s) from {store.root}")
        return 0
    for entry in entries:
        print(f"{entry.bytes:>12,}  {entry.path.name}")
    print(f"{len(entries)} output(s), {sum(e.bytes for e in entries):,} bytes in {store.root}")
    return 0


def report(state: State[Any], out: Path) -> int:
    manifest = out / "manifest.json"
    if state.is_completed():
        print(f"done: every output made; manifest at {manifest}")
        return 0
    print(f"finished with failures: {state.message}; manifest at {manifest}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
