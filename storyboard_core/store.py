"""The output store: every generated file kept once, under the key of the request that made it.

A request key is a hash of what determines the output: the engine, the model and its endpoint, the
arguments sent, the prompt, the clip length and the *content* of the input image. It does not depend
on the run, the pipeline file, the output folder or this project's code, so a re-run, another
pipeline or an upgrade asks for the same key and finds the clip already paid for.

Layout under the store's root (default `.storyboard/cache` in the project):

    outputs/<key>.<ext>   the generated files
    results/<key>         Prefect's result records for the same keys (Prefect writes them)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storyboard_core.files import atomic_path, sha256_file
from storyboard_core.registry import Model


def request_key(
    engine: str,
    model: Model,
    prompt: str,
    arguments: Mapping[str, Any],
    *,
    image_sha256: str | None = None,
    duration: float | None = None,
) -> str:
    request = {
        "engine": engine,
        "model": model.key,
        "endpoint": model.endpoint,
        "arguments": dict(arguments),
        "prompt": prompt,
        "duration": duration,
        "image_sha256": image_sha256,
    }
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
    return f"{model.kind.replace('_', '-')}-{digest[:40]}"


def image_key(engine: str, model: Model, prompt: str, arguments: Mapping[str, Any]) -> str:
    return request_key(engine, model, prompt, arguments)


def clip_key(engine: str, model: Model, prompt: str, arguments: Mapping[str, Any], image: Path | bytes, duration: float) -> str:
    digest = hashlib.sha256(image).hexdigest() if isinstance(image, bytes) else sha256_file(image)
    return request_key(engine, model, prompt, arguments, image_sha256=digest, duration=duration)


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    bytes: int


class OutputStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.outputs = self.root / "outputs"
        self.results = self.root / "results"

    def output_path(self, key: str, suffix: str) -> Path:
        return self.outputs / f"{key}{suffix}"

    def has(self, key: str, suffix: str) -> bool:
        """Whether the request was made before and its file is still here."""
        return (self.results / key).is_file() and self.output_path(key, suffix).is_file()

    def forget_if_missing(self, key: str, suffix: str) -> None:
        """A record whose file was deleted must not be returned as a hit: drop it, so the request runs."""
        if not self.output_path(key, suffix).is_file():
            (self.results / key).unlink(missing_ok=True)

    def forget(self, key: str, suffix: str) -> None:
        (self.results / key).unlink(missing_ok=True)
        self.output_path(key, suffix).unlink(missing_ok=True)

    def place(self, key: str, suffix: str, dest: Path) -> Path:
        """Copy the stored file to `dest`, atomically. A copy, not a link: editing an output in place
        must not change what the store hands to the next run."""
        with atomic_path(dest) as tmp:
            shutil.copyfile(self.output_path(key, suffix), tmp)
        return dest

    def entries(self) -> list[Entry]:
        if not self.outputs.is_dir():
            return []
        return [Entry(p.stem, p, p.stat().st_size) for p in sorted(self.outputs.iterdir()) if not p.name.startswith(".")]

    def clear(self) -> int:
        count = len(self.entries())
        shutil.rmtree(self.root, ignore_errors=True)
        return count
