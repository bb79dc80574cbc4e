"""Engines chosen by configuration: each model names its engine; `--offline` puts every step on `local`.

Tests and plugins add engines with `register_engine(name, factory)` and select them by name, the
same way `local` and `fal` are selected: nothing is patched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from storyboard_core.engines.base import (
    ClipJob,
    Engine,
    Generated,
    GenerationError,
    ImageJob,
    PermanentError,
    TransientError,
)

__all__ = [
    "ClipJob",
    "Engine",
    "EngineConfigError",
    "Generated",
    "GenerationError",
    "ImageJob",
    "PermanentError",
    "TransientError",
    "engine_names",
    "fal_engine",
    "register_engine",
    "resolve_engines",
    "unregister_engine",
]


class EngineConfigError(Exception):
    """An engine cannot be set up (missing key, unknown engine name): a user mistake, exit 2."""


def _local() -> Engine:
    from storyboard_core.engines.local import LocalEngine

    return LocalEngine()


def fal_engine(key: str | None = None) -> Engine:
    """The fal engine with `key`, else $FAL_KEY; a clear error when there is neither."""
    key = (key or os.environ.get("FAL_KEY", "")).strip()
    if not key:
        raise EngineConfigError(
            "FAL_KEY is not set: this pipeline uses fal.ai models, which need an API key. "
            "Set the FAL_KEY environment variable (https://fal.ai/dashboard/keys), or name a Prefect "
            "Secret block holding it in STORYBOARD_FAL_KEY_SECRET, "
            "or run with --offline to render every step on the local engine."
        )
    from storyboard_core.engines.fal import FalEngine

    return FalEngine(key=key)


_FACTORIES: dict[str, Callable[[], Engine]] = {"local": _local, "fal": fal_engine}


def register_engine(name: str, factory: Callable[[], Engine]) -> None:
    """Make `factory()` the engine used for `name` (a model's engine, or the `engine=` override)."""
    _FACTORIES[name] = factory


def unregister_engine(name: str) -> None:
    _FACTORIES.pop(name, None)


def engine_names() -> list[str]:
    return sorted(_FACTORIES)


def resolve_engines(needed: Iterable[str], override: str | None = None) -> dict[str, Engine]:
    """One engine per engine name in `needed`; with `override`, that one engine serves them all."""
    names = {override} if override else set(needed)
    unknown = sorted(n for n in names if n not in _FACTORIES)
    if unknown:
        raise EngineConfigError(f"unknown engine {', '.join(unknown)}; choose one of {', '.join(engine_names())}.")
    built = {name: _FACTORIES[name]() for name in sorted(names)}
    if override:
        return {name: built[override] for name in set(needed)}
    return built
