"""The model registry: every model a pipeline step may name, one small entry each.

An entry says which engine runs the model, the provider's endpoint, which step params the model
accepts (and their allowed values), the provider's argument names where they differ from ours, the
durations it can make, and its price. Adding a model is adding one `Model(...)` to `MODELS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

StepKind = Literal["text_to_image", "split_image", "image_to_video"]
STEP_KINDS: tuple[StepKind, ...] = ("text_to_image", "split_image", "image_to_video")

# An option is either the tuple of values it may take, or the type its value must have.
Option = tuple[Any, ...] | type


@dataclass(frozen=True)
class Price:
    """What one call costs: a price per call plus a price per second of output video, which some
    models raise when they also generate a sound track."""

    per_call_usd: float = 0.0
    per_second_usd: float = 0.0
    audio_per_second_usd: float | None = None

    def cost(self, seconds: float = 0.0, *, audio: bool = False) -> float:
        per_second = self.audio_per_second_usd if audio and self.audio_per_second_usd is not None else self.per_second_usd
        return round(self.per_call_usd + per_second * seconds, 6)

    def describe(self) -> str:
        if self.per_second_usd:
            audio = f" (${self.audio_per_second_usd:.3f}/s with audio)" if self.audio_per_second_usd else ""
            return f"${self.per_second_usd:.3f}/s{audio}"
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
    # Our param name -> {our value: the provider's value}, where the provider spells values its own way.
    values: Mapping[str, Mapping[Any, Any]] = field(default_factory=dict)
    # Arguments always sent unless the step sets them.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Clip lengths the model can make, in seconds; empty means 0.5..60 s. The provider gets
    # `duration_format.format(seconds)` ("5", or "8s" for Veo).
    durations: tuple[str, ...] = ()
    duration_format: str = "{}"
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
                value = self.values.get(name, {}).get(value, value)
                arguments[self.rename.get(name, name)] = value
        return arguments

    def duration_argument(self, seconds: float) -> str:
        text = str(int(seconds)) if seconds == int(seconds) else str(seconds)
        return self.duration_format.format(text)

    def cost(self, arguments: Mapping[str, Any], seconds: float = 0.0) -> float:
        """The provider's price for one call with these (provider) arguments."""
        return self.price.cost(seconds if self.kind == "image_to_video" else 0.0, audio=bool(arguments.get("generate_audio")))


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
# Endpoint ids and argument names are from each model's page on fal.ai (the URL in `source`, whose
# llms.txt gives the live schema), read in November 2026. Prices are fal's list prices then: check
# https://fal.ai/pricing before a large run. Where fal's default adds a sound track (which costs
# more, and which a storyboard panel rarely wants), the entry turns it off; `generate_audio: true`
# in a step turns it back on, and the estimate and the manifest use the audio price.

_FAL = "https://fal.ai/models/"

register(
    Model(
        "nano_banana_pro",
        "text_to_image",
        "fal",
        endpoint="fal-ai/nano-banana-pro",
        options={"aspect_ratio": ASPECT_RATIOS, "resolution": ("1K", "2K", "4K")},
        defaults={"num_images": 1, "output_format": "png"},
        price=Price(per_call_usd=0.15),
        source=_FAL + "fal-ai/nano-banana-pro ($0.15 per image; 4K is billed double)",
    )
)

# FLUX takes a named size instead of an aspect ratio.
_FLUX_SIZES = {"16:9": "landscape_16_9", "4:3": "landscape_4_3", "1:1": "square_hd", "3:4": "portrait_4_3", "9:16": "portrait_16_9"}
_FLUX_OPTIONS: Mapping[str, Option] = {
    "aspect_ratio": tuple(_FLUX_SIZES),
    "num_inference_steps": int,
    "guidance_scale": float,
    "seed": int,
}
flux_dev = register(
    Model(
        "flux_dev",
        "text_to_image",
        "fal",
        endpoint="fal-ai/flux/dev",
        options=_FLUX_OPTIONS,
        rename={"aspect_ratio": "image_size"},
        values={"aspect_ratio": _FLUX_SIZES},
        defaults={"num_images": 1, "output_format": "png", "image_size": "landscape_16_9"},
        price=Price(per_call_usd=0.025),
        source=_FAL + "fal-ai/flux/dev ($0.025 per megapixel, billed per started megapixel)",
    )
)
# The same arguments as FLUX [dev]; fewer steps, a lower price.
register(
    replace(
        flux_dev,
        key="flux_schnell",
        endpoint="fal-ai/flux/schnell",
        price=Price(per_call_usd=0.003),
        source=_FAL + "fal-ai/flux/schnell ($0.003 per megapixel)",
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
        image_argument="start_image_url",
        defaults={"generate_audio": False},
        price=Price(per_second_usd=0.07, audio_per_second_usd=0.14),
        source=_FAL + "fal-ai/kling-video/v2.6/pro/image-to-video ($0.07/s, $0.14/s with audio)",
    )
)
register(
    Model(
        "kling_2_1",
        "image_to_video",
        "fal",
        endpoint="fal-ai/kling-video/v2.1/standard/image-to-video",
        options={"negative_prompt": str, "cfg_scale": float},
        durations=("5", "10"),
        price=Price(per_second_usd=0.05),
        source=_FAL + "fal-ai/kling-video/v2.1/standard/image-to-video ($0.25 per 5 s clip)",
    )
)
register(
    Model(
        "hailuo",
        "image_to_video",
        "fal",
        endpoint="fal-ai/minimax/hailuo-02/standard/image-to-video",
        options={"prompt_optimizer": bool, "resolution": ("512P", "768P")},
        durations=("6", "10"),
        price=Price(per_second_usd=0.045),
        source=_FAL + "fal-ai/minimax/hailuo-02/standard/image-to-video ($0.045/s at 768P)",
    )
)
register(
    Model(
        "veo_3_1_fast",
        "image_to_video",
        "fal",
        endpoint="fal-ai/veo3.1/fast/image-to-video",
        options={
            "aspect_ratio": ("auto", "16:9", "9:16"),
            "resolution": ("720p", "1080p"),
            "generate_audio": bool,
            "negative_prompt": str,
            "seed": int,
        },
        durations=("4", "6", "8"),
        duration_format="{}s",
        defaults={"generate_audio": False},
        price=Price(per_second_usd=0.10, audio_per_second_usd=0.15),
        source=_FAL + "fal-ai/veo3.1/fast/image-to-video ($0.10/s, $0.15/s with audio, 720p/1080p)",
    )
)
register(
    Model(
        "seedance_1_5_pro",
        "image_to_video",
        "fal",
        endpoint="fal-ai/bytedance/seedance/v1.5/pro/image-to-video",
        options={
            "aspect_ratio": ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16", "auto"),
            "resolution": ("480p", "720p", "1080p"),
            "camera_fixed": bool,
            "generate_audio": bool,
            "seed": int,
        },
        durations=tuple(str(s) for s in range(4, 13)),
        defaults={"generate_audio": False},
        # Billed by video tokens (height x width x fps x seconds / 1024); these are the 720p rates.
        price=Price(per_second_usd=0.026, audio_per_second_usd=0.052),
        source=_FAL + "fal-ai/bytedance/seedance/v1.5/pro/image-to-video (~$0.26 per 720p 5 s clip with audio)",
    )
)
