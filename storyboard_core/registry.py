"""The model registry: every model a pipeline step may name, one small entry each.

An entry says which engine runs the model, the provider's endpoint, which step params the model
accepts (and their allowed values), the provider's argument names where they differ from ours, the
durations it can make, and its price. Adding a model is adding one `Model(...)` to `MODELS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

StepKind = Literal["text_to_image", "split_image", "image_to_video"]
STEP_KINDS: tuple[StepKind, ...] = ("text_to_image", "split_image", "image_to_video")

# An option is either the tuple of values it may take, or the type its value must have.
Option = tuple[Any, ...] | type


@dataclass(frozen=True)
class Price:
    """What one call costs: a fixed price per call plus a price per second of output video."""

    per_call_usd: float = 0.0
    per_second_usd: float = 0.0

    def cost(self, seconds: float = 0.0) -> float:
        return round(self.per_call_usd + self.per_second_usd * seconds, 6)

    def describe(self) -> str:
        if self.per_second_usd:
            return f"${self.per_second_usd:.3f}/s"
        return f"${self.per_call_usd:.3f}/call"


@dataclass(frozen=True)
class Model:
    key: str
    kind: StepKind
    engine: str
    endpoint: str = ""
    # Step params the model takes, passed through to the provider (checked before any call).
    options: Mapping[str, Option] = field(default_factory=dict)
    # Our param name -> the provider's argument name, where they differ.
    rename: Mapping[str, str] = field(default_factory=dict)
    # Arguments always sent unless the step sets them.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Clip lengths the model can make, as the strings the provider expects; empty means 1..60 s.
    durations: tuple[str, ...] = ()
    # The provider's argument names for the prompt and the input image.
    prompt_argument: str = "prompt"
    image_argument: str = "image_url"
    price: Price = Price()
    # Where the endpoint id, arguments and price were taken from.
    source: str = ""

    def provider_arguments(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The model's own arguments from a step's params: defaults, then the params it accepts, renamed."""
        arguments = dict(self.defaults)
        for name, value in params.items():
            if name in self.options:
                arguments[self.rename.get(name, name)] = value
        return arguments


ASPECT_RATIOS = ("21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16")

_LOCAL_SOURCE = "this project: rendered on the CPU with Pillow and PyAV, no network, no key"

MODELS: dict[tuple[StepKind, str], Model] = {}


def register(model: Model) -> Model:
    MODELS[(model.kind, model.key)] = model
    return model


def lookup(kind: StepKind, key: str) -> Model | None:
    return MODELS.get((kind, key))


def keys(kind: StepKind) -> list[str]:
    return sorted(key for (k, key) in MODELS if k == kind)


# --- local: the offline engine; every step type has it --------------------------------------
register(Model("local", "text_to_image", "local", options={"aspect_ratio": ASPECT_RATIOS}, source=_LOCAL_SOURCE))
register(Model("local", "split_image", "local", source=_LOCAL_SOURCE))
register(
    Model(
        "local",
        "image_to_video",
        "local",
        options={"aspect_ratio": ASPECT_RATIOS, "negative_prompt": str, "cfg_scale": float},
        source=_LOCAL_SOURCE,
    )
)


# --- fal.ai: hosted models, run by the fal engine --------------------------------------------
register(
    Model(
        "nano_banana_pro",
        "text_to_image",
        "fal",
        endpoint="fal-ai/nano-banana-pro",
        options={"aspect_ratio": ASPECT_RATIOS, "resolution": ("1K", "2K", "4K")},
        defaults={"num_images": 1, "output_format": "png"},
        price=Price(per_call_usd=0.15),
        source="fal.ai model page fal-ai/nano-banana-pro",
    )
)
register(
    Model(
        "kling_2_6_pro",
        "image_to_video",
        "fal",
        endpoint="fal-ai/kling-video/v2.6/pro/image-to-video",
        options={"negative_prompt": str, "cfg_scale": float, "generate_audio": bool},
        durations=("5", "10"),
        image_argument="image_url",
        price=Price(per_second_usd=0.07),
        source="fal.ai model page fal-ai/kling-video/v2.6/pro/image-to-video",
    )
)
