"""The storyboard flow: prompt → storyboard grid → panels → one clip per panel, in parallel.

Run it:  python flows/storyboard.py [PIPELINE.yaml] [--offline] [--output-dir DIR] [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_PIPELINE = PROJECT_ROOT / "input" / "pipelines" / "storyboard" / "demo_local.yaml"

if __name__ == "__main__":
    # A command-line run prints its own progress lines; Prefect's console lines (and the temporary
    # server's telemetry, which logs sqlite 'database is locked' tracebacks) would bury them.
    # Runs still send everything to the Prefect API. Set before Prefect is imported.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.path.insert(0, str(PROJECT_ROOT))

from prefect import flow, unmapped
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from storyboard_core.engines import ClipJob, Engine, EngineConfigError, ImageJob, resolve_engines
from storyboard_core.manifest import Manifest, Output, StepRecord
from storyboard_core.plan import describe_plan
from storyboard_core.progress import StepProgress
from storyboard_core.spec import Pipeline, PipelineError, PlannedStep, load_pipeline, parse_pipeline
from tasks.steps import animate_panel, for_step, generate_image, split_image


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


@flow(name="storyboard", flow_run_name=_flow_run_name, persist_result=False)
def storyboard(
    pipeline: str = str(DEMO_PIPELINE),
    offline: bool = False,
    output_dir: str | None = None,
    engine: str | None = None,
) -> State[Any]:
    """Run a storyboard pipeline file. `offline` renders every step on the local engine."""
    spec = read_pipeline(pipeline)
    out = Path(output_dir) if output_dir else spec.output_dir
    engines = resolve_engines({s.model.engine for s in spec.steps}, "local" if offline else engine)
    manifest = start_manifest(spec, out)

    images: list[Path] = [spec.input] if spec.input else []
    for step in spec.steps:
        manifest.set_status(step.name, "running")
        if step.kind == "text_to_image":
            images = make_storyboard(step, spec, engines[step.model.engine], out, manifest)
        elif step.kind == "split_image":
            images = cut_panels(step, images[0], out, manifest)
        else:
            images = animate_panels(step, images, engines[step.model.engine], out, manifest)
        record = manifest.step(step.name)
        manifest.set_status(step.name, "failed" if record.failed else "completed")
        if not images or (record.failed and step.kind != "image_to_video"):
            break

    return finish(spec, manifest, out)


def start_manifest(spec: Pipeline, out: Path) -> Manifest:
    records = []
    for step in spec.steps:
        names = [f"{step.kind}"] * step.outputs
        records.append(
            StepRecord(step.name, step.kind, step.model.key, outputs=[Output(i, n) for i, n in enumerate(names, 1)])
        )
    manifest = Manifest(out / "manifest.json", spec.name, records)
    manifest.write()
    return manifest


def make_storyboard(step: PlannedStep, spec: Pipeline, engine: Engine, out: Path, manifest: Manifest) -> list[Path]:
    prompt = step.params.prompt or spec.prompt or ""
    dest = out / step.name / "storyboard.png"
    job = ImageJob(prompt=prompt, arguments=step.model.provider_arguments(step.model_params))
    manifest.update(step.name, 1, name=dest.stem, status="running", prompt=prompt)
    state = for_step(generate_image, step)(engine, step.model, job, dest, return_state=True)
    if state.is_completed():
        made = state.result()
        manifest.update(
            step.name, 1, status="completed", path=_rel(made.path, out), request_id=made.request_id,
            cost_usd=step.model.price.cost(), attempts=1,
        )
        return [made.path]
    manifest.update(step.name, 1, status="failed", error=_error_text(state.result(raise_on_failure=False)))
    return []


def cut_panels(step: PlannedStep, image: Path, out: Path, manifest: Manifest) -> list[Path]:
    panels = split_image(image, step.params, out / step.name)
    for index, path in enumerate(panels, start=1):
        manifest.update(step.name, index, name=path.stem, status="completed", path=_rel(path, out), attempts=1)
    return panels


def animate_panels(step: PlannedStep, panels: list[Path], engine: Engine, out: Path, manifest: Manifest) -> list[Path]:
    """One task run per panel, at most `max_workers` at once; results recorded in panel order."""
    names = [panel.stem for panel in panels]
    jobs = [
        ClipJob(
            image=panel,
            prompt=step.params.prompt_for(i),
            duration=step.params.duration_seconds,
            arguments=step.model.provider_arguments(step.model_params),
            timeout_seconds=step.params.timeout,
        )
        for i, panel in enumerate(panels)
    ]
    for index, (name, job) in enumerate(zip(names, jobs), start=1):
        manifest.update(step.name, index, name=name, prompt=job.prompt)
    progress = StepProgress(step.name, len(panels))

    with ThreadPoolTaskRunner(max_workers=step.params.workers) as runner:
        futures = runner.map(
            for_step(animate_panel, step),
            {
                "step": unmapped(step.name),
                "panel": names,
                "index": list(range(1, len(panels) + 1)),
                "engine": unmapped(engine),
                "model": unmapped(step.model),
                "job": jobs,
                "dest": [out / step.name / f"{name}.mp4" for name in names],
                "progress": unmapped(progress),
            },
        )
        position = {future.task_run_id: index for index, future in enumerate(futures, start=1)}
        for future in as_completed(futures):
            index = position[future.task_run_id]
            result = future.result(raise_on_failure=False)
            attempts = progress.attempts.get(index, 0)
            if future.state.is_completed():
                seconds = progress.finished(index, names[index - 1])
                manifest.update(
                    step.name, index, status="completed", path=_rel(result.path, out), attempts=attempts,
                    seconds=seconds, request_id=result.request_id,
                    cost_usd=step.model.price.cost(step.params.duration_seconds),
                )
            else:
                error = _error_text(result)
                seconds = progress.finished(index, names[index - 1], error)
                manifest.update(
                    step.name, index, status="failed", error=error, attempts=attempts, seconds=seconds,
                    request_id=getattr(result, "request_id", None),
                )
    return [out / step.name / f"{name}.mp4" for name in names]


def finish(spec: Pipeline, manifest: Manifest, out: Path) -> State[Any]:
    if not spec.save_intermediates:
        for step in spec.steps[:-1]:
            shutil.rmtree(out / step.name, ignore_errors=True)
            for output in manifest.step(step.name).outputs:
                manifest.update(step.name, output.index, path=None)
    failed = [(s.name, o) for s in manifest.steps for o in s.outputs if o.status != "completed"]
    manifest.set_status(None, "failed" if failed else "completed")
    summary = manifest.to_dict()
    if failed:
        names = ", ".join(f"{step}[{o.name}]" for step, o in failed)
        return Failed(message=f"{len(failed)} output(s) not made: {names}", data=summary)
    return Completed(message=f"{spec.name}: every output made", data=summary)


def _rel(path: Path, out: Path) -> str:
    try:
        return str(path.relative_to(out))
    except ValueError:
        return str(path)


def _error_text(exc: BaseException | Any) -> str:
    from storyboard_core.engines import GenerationError

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
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; write nothing")
    args = parser.parse_args(argv)

    try:
        spec = load_pipeline(args.pipeline)
        engine = "local" if args.offline else None
        if not args.dry_run:
            resolve_engines({s.model.engine for s in spec.steps}, engine)  # a missing key fails here, before any step
    except (PipelineError, EngineConfigError) as exc:
        problems = exc.problems if isinstance(exc, PipelineError) else [str(exc)]
        print("error: the pipeline cannot run:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 2

    out = Path(args.output_dir) if args.output_dir else spec.output_dir
    if args.dry_run:
        print(describe_plan(spec, out, offline=args.offline))
        return 0

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    print(f"storyboard: {spec.name} → {out}")
    # Heartbeats tell a server that a deployed run is alive; a local run has none to tell, and the
    # heartbeat thread costs ~1 s at the end of every flow run. Deployed runs keep them.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        state = storyboard(pipeline=str(spec.source), offline=args.offline, output_dir=str(out), return_state=True)
    return report(state, out)


def report(state: State[Any], out: Path) -> int:
    manifest = out / "manifest.json"
    if state.is_completed():
        print(f"done: every output made; manifest at {manifest}")
        return 0
    print(f"finished with failures: {state.message}; manifest at {manifest}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
