"""The engine interface: what every generation backend (local, fal, test doubles) provides.

An engine turns one request into one file at `dest`. It never writes a partial file under `dest`
(use `storyboard_core.files.atomic_path`). It raises `TransientError` for failures worth retrying
(rate limits, 5xx, timeouts, dropped connections) and `PermanentError` for the rest (a rejected
request); the Prefect layer decides retries from that distinction alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from storyboard_core.registry import Model


@dataclass(frozen=True)
class ImageJob:
    """Make one image from a text prompt."""

    prompt: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipJob:
    """Animate one image into a clip of `duration` seconds."""

    image: Path
    prompt: str
    duration: float
    arguments: Mapping[str, Any] = field(default_factory=dict)
    timeout_seconds: float = 900.0


@dataclass(frozen=True)
class Generated:
    """What an engine made: the file, and the provider's id for the job when there is one."""

    path: Path
    request_id: str | None = None
    # True when the file came from the output store rather than a new call.
    cached: bool = False


class GenerationError(Exception):
    """A generation failed. `transient` says whether trying again may succeed."""

    transient = False

    def __init__(self, message: str, *, request_id: str | None = None):
        super().__init__(message)
        self.request_id = request_id


class TransientError(GenerationError):
    """Rate limited, server error, timeout, dropped connection: worth retrying."""

    transient = True


class PermanentError(GenerationError):
    """The provider rejected the request (bad argument, content policy): retrying cannot help."""

    transient = False


class Engine(Protocol):
    """A generation backend. Implementations must be safe to call from several threads at once."""

    name: str

    def text_to_image(self, model: Model, job: ImageJob, dest: Path) -> Generated: ...

    def image_to_video(self, model: Model, job: ClipJob, dest: Path) -> Generated: ...
