"""What a run made, as Prefect artifacts on its flow-run page.

- a progress bar per image_to_video step, moved as each panel finishes (`start_progress`, `advance_progress`);
- a table with one row per panel of the run's last step, and a markdown summary: totals, failures and
  their reasons, where the files are, what it cost (`publish_results`, from the manifest).

Table and summary are keyed by the pipeline (`storyboard-love-story-parallel-test-panels`, `...-summary`):
they show on the Artifacts page, each run adding a version. Each function is one or two API calls. An
artifact is a report, not a result: if the API refuses one, the run logs a warning and goes on.

Artifacts are stored on the server and shown to everyone who can open the UI: every text that goes
into one passes through `redact`, so a provider key that ended up in an error message never does.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.exceptions import MissingContextError

from storyboard_core.manifest import Manifest, Output, StepRecord

P = ParamSpec("P")
R = TypeVar("R")

TABLE_COLUMNS = ("index", "name", "prompt", "status", "attempts", "seconds", "cost_usd", "cached", "path", "error")

# Environment variables whose values must never reach an artifact (or the warning about one).
SECRET_VARIABLES = ("FAL_KEY",)
REDACTED = "[redacted]"
# Keys that came from elsewhere (a Prefect Secret block): see add_secret.
_added_secrets: set[str] = set()


def add_secret(value: str) -> None:
    """Hide `value` from every artifact of this process too (a key loaded from a Secret block)."""
    if value.strip():
        _added_secrets.add(value.strip())


def _secrets() -> list[str]:
    """The secret values to hide: each whole key, and each part of an `id:secret` key; longest first."""
    keys = {os.environ.get(variable, "").strip() for variable in SECRET_VARIABLES} | _added_secrets
    values: set[str] = set()
    for key in filter(None, keys):
        values.add(key)
        values.update(part for part in key.split(":") if len(part) >= 8)
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    for secret in _secrets():
        text = text.replace(secret, REDACTED)
    return text


def _never_fails(function: Callable[P, R]) -> Callable[P, R | None]:
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return function(*args, **kwargs)
        except Exception as exc:  # an artifact must never fail the run it reports on
            try:
                logger: logging.Logger | logging.LoggerAdapter[Any] = get_run_logger()
            except MissingContextError:
                logger = logging.getLogger(__name__)
            logger.warning("artifact not written (%s): %s: %s", function.__name__, type(exc).__name__, redact(str(exc)))
            return None

    return wrapper


def artifact_key(pipeline: str, what: str) -> str:
    """`storyboard-<pipeline>-<what>` in the only characters Prefect accepts: lowercase letters, digits, dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"storyboard-{pipeline}-{what}".lower())
    return slug.strip("-")


@_never_fails
def start_progress(step_name: str, total: int) -> UUID:
    """A progress bar at 0 % for a step of `total` panels; returns its id for `advance_progress`."""
    return create_progress_artifact(progress=0.0, description=_progress_text(step_name, 0, total))


@_never_fails
def advance_progress(artifact_id: UUID | None, done: int, total: int, *, step_name: str = "", failed: int = 0) -> None:
    """Move the bar to `done` of `total` (finished panels, failed ones included)."""
    if artifact_id is None:  # start_progress could not create it
        return
    percent = 100.0 * done / total if total else 100.0
    update_progress_artifact(artifact_id, percent, description=_progress_text(step_name, done, total, failed))


def _progress_text(step_name: str, done: int, total: int, failed: int = 0) -> str:
    text = f"{step_name}: {done}/{total} panels finished" if step_name else f"{done}/{total} panels finished"
    return text + (f", {failed} failed" if failed else "")


@_never_fails
def publish_results(manifest: Manifest) -> None:
    """The panel table and the run summary, from the manifest (call it once the run's status is final)."""
    create_table_artifact(
        table=[{column: redact(v) if isinstance(v, str) else v for column, v in row.items()} for row in panel_rows(manifest)],
        key=artifact_key(manifest.pipeline, "panels"),
        description=f"{manifest.pipeline}: one row per panel of the last step, in panel order",
    )
    create_markdown_artifact(
        markdown=redact(summary_markdown(manifest)),
        key=artifact_key(manifest.pipeline, "summary"),
        description=f"{manifest.pipeline}: {manifest.status}",
    )


def panel_step(manifest: Manifest) -> StepRecord:
    """The step whose outputs are the run's panels: the last image_to_video step, else the last step."""
    videos = [s for s in manifest.steps if s.type == "image_to_video"]
    return videos[-1] if videos else manifest.steps[-1]


def output_dir(manifest: Manifest) -> Path:
    return manifest.path.parent.resolve()


def panel_rows(manifest: Manifest) -> list[dict[str, Any]]:
    out = output_dir(manifest)
    return [
        {
            "index": o.index,
            "name": o.name,
            "prompt": o.prompt or "",
            "status": o.status,
            "attempts": o.attempts,
            "seconds": round(o.seconds, 2) or 0.0,  # never "-0.0" for a panel reused at once
            "cost_usd": o.cost_usd,
            "cached": o.cached,
            "path": str(out / o.path) if o.path else "",
            "error": o.error or "",
        }
        for o in panel_step(manifest).outputs
    ]


def summary_markdown(manifest: Manifest) -> str:
    out = output_dir(manifest)
    step = panel_step(manifest)
    made = sum(o.status == "completed" for o in step.outputs)
    lines = [
        f"# {manifest.pipeline}: {manifest.status}",
        "",
        f"**{made} of {len(step.outputs)}** {step.name} outputs made; "
        f"total cost **${manifest.total_cost_usd:.2f}** (outputs reused from the store cost nothing).",
        "",
        "| step | type | model | status | made | failed | cost |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in manifest.steps:
        done = sum(o.status == "completed" for o in s.outputs)
        lines.append(
            f"| {s.name} | {s.type} | {s.model} | {s.status} | {done}/{len(s.outputs)} | {len(s.failed)} | ${s.cost_usd:.2f} |"
        )
    failures = [(s, o) for s in manifest.steps for o in s.outputs if o.status == "failed"]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {_failure(s, o)}" for s, o in failures]
    lines += ["", "## Files", "", f"- output folder: `{out}`", f"- manifest: `{manifest.path.resolve()}`"]
    lines += [f"- {o.name}: `{o.path}`" for o in step.outputs if o.path]
    return "\n".join(lines) + "\n"


def _failure(step: StepRecord, output: Output) -> str:
    attempts = f"{output.attempts} attempt{'s' if output.attempts != 1 else ''}"
    reason = " ".join((output.error or "no reason recorded").split())
    return f"**{step.name}[{output.name}]** after {attempts}: {reason}"
