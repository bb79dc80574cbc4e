"""The pipeline steps as Prefect tasks: a thin layer over the engines and media of storyboard_core.

Each engine call is one task run, so Prefect retries exactly the call that failed, and only when
the engine says the failure is transient; a rejected request fails its panel at once.

Generation tasks are cached by their request key (see storyboard_core.store), with results persisted
in the project's output store: a new run, in a new process, gets every clip already made from the
cache and pays only for the missing ones. Prefect's default policy would not do: it includes the flow
run id (never reused) and TASK_SOURCE (every edit of the task would pay for every clip again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import State
from prefect.tasks import exponential_backoff

from storyboard_core import media
from storyboard_core.engines import ClipJob, Engine, Generated, GenerationError, ImageJob
from storyboard_core.progress import StepProgress
from storyboard_core.registry import Model
from storyboard_core.spec import PlannedStep, SplitImageParams
from tasks.limits import provider_slot


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry rate limits, server errors and timeouts; never a rejected request or a bug of ours."""
    try:
        state.result()
    except GenerationError as exc:
        return exc.transient
    except Exception:
        return False
    return False


def by_request_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return parameters["key"]


_GENERATION = dict(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_key_fn=by_request_key,
    persist_result=True,
)


@task(name="text_to_image", **_GENERATION)
def generate_image(key: str, engine: Engine, model: Model, job: ImageJob, dest: Path) -> Generated:
    if dest.is_file():  # made by a run that died before Prefect recorded it: never pay twice
        return Generated(dest, cached=True)
    with provider_slot(engine.name):
        return engine.text_to_image(model, job, dest)


@task(name="split_image", cache_policy=NO_CACHE)
def split_image(image: Path, params: SplitImageParams, folder: Path) -> list[Path]:
    panels = media.split_grid(image, params.rows_cols)
    paths = []
    for n, panel in enumerate(panels, start=1):
        dest = folder / f"{params.panel_name(n)}.{params.output_format}"
        media.save_image(panel, dest)
        paths.append(dest)
    return paths


@task(name="image_to_video", task_run_name="{step}[{panel}]", **_GENERATION)
def animate_panel(
    step: str,
    panel: str,
    index: int,
    key: str,
    engine: Engine,
    model: Model,
    job: ClipJob,
    dest: Path,
    progress: StepProgress,
) -> Generated:
    if dest.is_file():  # made by a run that died before Prefect recorded it: never pay twice
        return Generated(dest, cached=True)
    with provider_slot(engine.name):  # "started" once the provider's slot is ours, not while waiting for it
        progress.started(index, panel)
        transient_error = None
        try:
            return engine.image_to_video(model, job, dest)
        except GenerationError as exc:
            transient_error = str(exc) if exc.transient else None
            raise
        finally:
            progress.attempt_ended(index, panel, transient_error=transient_error)


def for_step(generation_task: Task[..., Any], step: PlannedStep, results: Path, *, fresh: bool) -> Task[..., Any]:
    """The task with the step's retries and backoff, its results kept in `results`; `fresh` skips the cache."""
    return generation_task.with_options(
        retries=step.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=step.retry_delay_seconds),
        result_storage=results,
        refresh_cache=fresh,
    )
