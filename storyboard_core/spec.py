"""The pipeline file: its schema, and validation that reports every problem before anything runs.

Each problem names the file, the step (position and name) and the field, with the valid choices
where there are some. `load_pipeline` raises `PipelineError` carrying all of them at once.
"""

from __future__ import annotations

import math
import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from storyboard_core.media import parse_grid
from storyboard_core.registry import STEP_KINDS, Model, StepKind, keys, lookup

_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PipelineError(Exception):
    """A pipeline file that cannot run. `problems` holds one sentence per mistake."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextToImageParams(BaseModel):
    # Unknown keys are the model's own arguments; they are checked against the registry entry.
    model_config = ConfigDict(extra="allow", frozen=True)
    prompt: str | None = None


class SplitImageParams(_Strict):
    grid: str = "2x2"
    naming: str = "panel_{n}"
    output_format: Literal["png", "jpg", "webp"] = "png"

    @field_validator("grid")
    @classmethod
    def _grid(cls, value: str) -> str:
        parse_grid(value)
        return value

    @field_validator("naming")
    @classmethod
    def _naming(cls, value: str) -> str:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        if fields != {"n"}:
            raise ValueError('must contain "{n}" (the 1-based panel number) and no other {placeholder}')
        name = value.replace("{n}", "1")
        if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
            raise ValueError("must be a plain file name, not a path")
        return value

    @property
    def rows_cols(self) -> tuple[int, int]:
        return parse_grid(self.grid)

    def panel_name(self, n: int) -> str:
        return self.naming.format(n=n)


class ImageToVideoParams(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    prompt: str | None = None
    prompts: list[str] = Field(default_factory=list)
    parallel: bool = False
    max_workers: int = Field(default=4, ge=1, le=64)
    duration: str | int | float = "5"
    timeout: float = Field(default=900.0, gt=0, description="seconds before a clip is cancelled")

    @property
    def duration_seconds(self) -> float:
        return float(self.duration)

    @property
    def workers(self) -> int:
        """How many clips run at once: `max_workers` when parallel, else one at a time."""
        return self.max_workers if self.parallel else 1

    def prompt_for(self, index: int) -> str:
        """The motion prompt of panel `index` (0-based): its own, else the step's default."""
        if index < len(self.prompts) and self.prompts[index]:
            return self.prompts[index]
        return self.prompt or ""


PARAMS: dict[StepKind, type[BaseModel]] = {
    "text_to_image": TextToImageParams,
    "split_image": SplitImageParams,
    "image_to_video": ImageToVideoParams,
}


class Step(_Strict):
    name: str
    type: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    retries: int = Field(default=2, ge=0, le=10)
    retry_delay_seconds: float = Field(default=10.0, ge=0, le=600)


class PipelineFile(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    prompt: str | None = None
    input: str | None = None
    steps: list[Step] = Field(min_length=1)
    output_dir: str | None = None
    save_intermediates: bool = True
    max_cost_usd: float | None = Field(default=None, ge=0)


class PlannedStep(BaseModel):
    """A validated, enabled step with its registry entry and typed params."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    position: int
    name: str
    kind: StepKind
    model: Model
    params: Any
    retries: int
    retry_delay_seconds: float
    # Model arguments from the step's params (everything that is not one of our own fields).
    model_params: dict[str, Any]
    # How many images the step produces (text_to_image: 1, split: rows*cols, image_to_video: clips).
    outputs: int

    @property
    def label(self) -> str:
        return f'step {self.position} "{self.name}"'


class Pipeline(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    source: Path
    name: str
    description: str
    prompt: str | None
    input: Path | None
    steps: list[PlannedStep]
    output_dir: Path
    save_intermediates: bool
    max_cost_usd: float | None


def load_pipeline(path: str | Path) -> Pipeline:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError([f"{path}: cannot read the pipeline file: {exc.strerror or exc}."]) from None
    return parse_pipeline(text, path)


def parse_pipeline(text: str, path: Path) -> Pipeline:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PipelineError([f"{path}: not valid YAML{at}: {problem}."]) from None
    if not isinstance(raw, dict):
        raise PipelineError([f"{path}: a pipeline is a YAML mapping with name, prompt and steps; got {type(raw).__name__}."])

    problems: list[str] = []
    steps_raw = raw.get("steps")
    top = {k: v for k, v in raw.items() if k != "steps"}
    try:
        PipelineFile.model_validate({**top, "steps": [{"name": "x", "type": "x", "model": "x"}]})
    except ValidationError as exc:
        problems += [f"{path}: field {_loc(e['loc'])}: {_msg(e, PipelineFile)}" for e in exc.errors()]
    if not isinstance(steps_raw, list) or not steps_raw:
        problems.append(f"{path}: field steps: must be a non-empty list of steps.")
        raise PipelineError(problems)

    planned: list[PlannedStep] = []
    seen: set[str] = set()
    for position, step_raw in enumerate(steps_raw, start=1):
        step, step_problems = _validate_step(path, position, step_raw, seen)
        problems += step_problems
        if step is not None and step_raw.get("enabled", True):
            planned.append(step)
    if problems:
        raise PipelineError(problems)

    spec = PipelineFile.model_validate({**top, "steps": [s for s in steps_raw]})
    input_path = (path.parent / spec.input).resolve() if spec.input else None
    plan = _plan(path, spec, planned, input_path)
    return Pipeline(
        source=path,
        name=spec.name,
        description=spec.description,
        prompt=spec.prompt,
        input=input_path,
        steps=plan,
        output_dir=Path(spec.output_dir or f"output/{spec.name}"),
        save_intermediates=spec.save_intermediates,
        max_cost_usd=spec.max_cost_usd,
    )


def _validate_step(path: Path, position: int, raw: Any, seen: set[str]) -> tuple[Any, list[str]]:
    if not isinstance(raw, dict):
        return None, [f"{path}: step {position}: must be a mapping with name, type, model and params."]
    name = raw.get("name")
    where = f'{path}: step {position} "{name}"' if name else f"{path}: step {position}"
    problems: list[str] = []
    try:
        step = Step.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{where}: field {_loc(e['loc'])}: {_msg(e, Step)}" for e in exc.errors()]
        # Keep checking what can be checked (type, model, params) so every mistake shows at once.
        fields = {"name": name if isinstance(name, str) else f"step{position}", "type": "", "model": ""}
        usable = {k: v for k, v in raw.items() if k in ("type", "model", "params") and not any(
            e["loc"][0] == k for e in exc.errors())}
        step = Step.model_validate({**fields, **usable})
        if not step.type or not step.model:
            return None, problems
    if not _STEP_NAME.match(step.name):
        problems.append(f"{where}: field name: use letters, digits, '_', '-' and '.' only (it names a folder).")
    if step.name in seen:
        problems.append(f"{where}: field name: another step is already named {step.name!r}; step names must be unique.")
    seen.add(step.name)
    if step.type not in STEP_KINDS:
        problems.append(f"{where}: field type: unknown step type {step.type!r}; choose one of {', '.join(STEP_KINDS)}.")
        return None, problems
    kind: StepKind = step.type  # type: ignore[assignment]
    model = lookup(kind, step.model)
    if model is None:
        problems.append(f"{where}: field model: unknown {kind} model {step.model!r}; choose one of {', '.join(keys(kind))}.")
        return None, problems
    try:
        params = PARAMS[kind].model_validate(step.params)
    except ValidationError as exc:
        return None, problems + [f"{where}: field params.{_loc(e['loc'])}: {_msg(e, PARAMS[kind])}" for e in exc.errors()]

    model_params = dict(params.model_extra or {})
    problems += [f"{where}: field params.{p}" for p in _check_model_params(model, model_params)]
    if kind == "image_to_video":
        problems += [f"{where}: field params.duration: {p}" for p in _check_duration(model, params.duration)]
    if problems:
        return None, problems
    planned = PlannedStep(
        position=position,
        name=step.name,
        kind=kind,
        model=model,
        params=params,
        retries=step.retries,
        retry_delay_seconds=step.retry_delay_seconds,
        model_params=model_params,
        outputs=0,
    )
    return planned, []


def _check_model_params(model: Model, params: dict[str, Any]) -> list[str]:
    problems = []
    for name, value in params.items():
        option = model.options.get(name)
        if option is None:
            accepted = ", ".join(sorted(model.options)) or "none"
            problems.append(f"{name}: model {model.key!r} does not take {name!r}; it takes: {accepted}.")
        elif isinstance(option, tuple) and value not in option:
            problems.append(f"{name}: {value!r} is not allowed for model {model.key!r}; choose one of {', '.join(map(str, option))}.")
        elif isinstance(option, type) and not _is_instance(value, option):
            problems.append(f"{name}: must be a {option.__name__} for model {model.key!r}, got {value!r}.")
    return problems


def _is_instance(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_duration(model: Model, duration: Any) -> list[str]:
    try:
        seconds = float(duration)
    except (TypeError, ValueError):
        return [f"{duration!r} is not a number of seconds."]
    if model.durations:
        if _duration_text(seconds) not in model.durations:
            allowed = ", ".join(model.durations)
            return [f"model {model.key!r} makes clips of {allowed} seconds, not {duration!r}."]
        return []
    if not (math.isfinite(seconds) and 0.5 <= seconds <= 60):
        return [f"must be between 0.5 and 60 seconds, got {duration!r}."]
    return []


def _duration_text(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else str(seconds)


def _plan(path: Path, spec: PipelineFile, steps: list[PlannedStep], input_path: Path | None) -> list[PlannedStep]:
    """Check that each step gets the images it needs from the one before, and count outputs."""
    problems: list[str] = []
    if not steps:
        raise PipelineError([f"{path}: field steps: every step is disabled; nothing to run."])
    if input_path is not None and not input_path.is_file():
        problems.append(f"{path}: field input: no image at {input_path}.")
    available: int | None = 1 if input_path is not None else None  # images coming into the next step
    planned = []
    for i, step in enumerate(steps):
        where = f"{path}: {step.label} ({step.kind})"
        if step.kind == "text_to_image":
            if i == 0 and input_path is not None:
                problems.append(f"{where}: field type: the pipeline has an input image, so it cannot start with text_to_image; remove input or the step.")
            if not (step.params.prompt or spec.prompt):
                problems.append(f"{where}: field params.prompt: text_to_image needs a prompt (in the step's params or the pipeline's top-level prompt).")
            outputs = 1
        elif available is None:
            problems.append(f"{where}: field type: {step.kind} needs an image; put a text_to_image step before it or set the pipeline's input.")
            outputs = 0
        elif step.kind == "split_image":
            if available != 1:
                problems.append(f"{where}: field type: split_image cuts one image, but the step before makes {available}.")
            rows, cols = step.params.rows_cols
            outputs = rows * cols
        else:
            outputs = available
            if len(step.params.prompts) > available:
                problems.append(f"{where}: field params.prompts: {len(step.params.prompts)} prompts for {available} panels.")
            if not step.params.prompt and len(step.params.prompts) < available:
                problems.append(f"{where}: field params.prompt: panels {len(step.params.prompts) + 1}..{available} have no prompt; add them to prompts or set a default prompt.")
        available = outputs if step.kind != "image_to_video" else None
        planned.append(step.model_copy(update={"outputs": outputs}))
    if problems:
        raise PipelineError(problems)
    return planned


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _msg(error: dict[str, Any], schema: type[BaseModel]) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown field; the fields are: {', '.join(schema.model_fields)}."
    if error["type"] == "missing":
        return "is required."
    message = error["msg"].removeprefix("Value error, ")
    return f"{message} (got {error['input']!r})." if "input" in error and not isinstance(error["input"], dict) else f"{message}."
