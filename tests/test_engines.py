"""Engine selection and the fal engine's rules that need no server: keys, error reasons, result shapes."""

from __future__ import annotations

import itertools

import httpx
import pytest
from fal_client.client import FalClientHTTPError

from storyboard_core.engines import EngineConfigError, resolve_engines
from storyboard_core.engines.fal import FalEngine, _classify, _media_url, _poll_waits
from storyboard_core.registry import MODELS, lookup


def http_error(status: int, detail) -> FalClientHTTPError:
    response = httpx.Response(status, json={"detail": detail}, request=httpx.Request("POST", "https://queue.fal.run/x"))
    return FalClientHTTPError(detail, status, dict(response.headers), response=response)


def test_a_missing_key_names_the_variable_and_the_offline_way(monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.delenv("STORYBOARD_FAL_KEY_SECRET", raising=False)
    with pytest.raises(EngineConfigError, match=r"FAL_KEY is not set.*--offline"):
        resolve_engines({"fal"})
    # --offline: every model on the local engine, no key needed.
    engines = resolve_engines({"fal", "local"}, override="local")
    assert {e.name for e in engines.values()} == {"local"}


def test_the_key_is_not_in_the_engines_repr_or_attributes(monkeypatch):
    monkeypatch.setenv("FAL_KEY", "sekret-123")
    engine = resolve_engines({"fal"})["fal"]
    assert isinstance(engine, FalEngine)
    assert "sekret-123" not in repr(engine) and "sekret-123" not in repr(vars(engine))


@pytest.mark.parametrize(
    ("status", "transient"), [(429, True), (408, True), (500, True), (503, True), (422, False), (400, False), (404, False)]
)
def test_http_errors_are_classified_by_status(status, transient):
    assert _classify(http_error(status, "nope"), "submit").transient is transient


def test_a_validation_error_carries_fals_reason_field_by_field():
    detail = [{"loc": ["body", "duration"], "msg": "must be 5 or 10", "type": "value_error"}]
    error = _classify(http_error(422, detail), "fal kling: submit")
    assert str(error) == "fal kling: submit: HTTP 422: duration: must be 5 or 10"


def test_a_refused_key_says_which_variable_without_the_key():
    error = _classify(http_error(401, "Invalid key"), "submit")
    assert "FAL_KEY" in str(error) and not error.transient


def test_connection_errors_are_transient():
    assert _classify(httpx.ConnectError("refused"), "submit").transient


def test_media_url_is_found_for_clips_and_images():
    assert _media_url({"video": {"url": "https://v3.fal.media/a.mp4"}}, "r") == "https://v3.fal.media/a.mp4"
    assert _media_url({"images": [{"url": "https://v3.fal.media/b.png"}]}, "r") == "https://v3.fal.media/b.png"
    with pytest.raises(Exception, match="names no video or image URL"):
        _media_url({"detail": "?"}, "r")


def test_polling_starts_fast_and_settles_at_the_longest_wait():
    waits = list(itertools.islice(_poll_waits(5.0), 12))
    assert waits[0] == 0.25 and waits[-1] == 5.0 and waits == sorted(waits)
    # A two-minute clip is about 30 polls.
    total, polls = 0.0, 0
    for wait in _poll_waits(5.0):
        total, polls = total + wait, polls + 1
        if total >= 120:
            break
    assert 25 <= polls <= 35


def test_every_hosted_model_has_an_endpoint_a_price_and_a_source():
    hosted = [m for m in MODELS.values() if m.engine == "fal"]
    assert {m.key for m in hosted} >= {
        "nano_banana_pro", "flux_dev", "flux_schnell",
        "kling_2_6_pro", "kling_2_1", "hailuo", "veo_3_1_fast", "seedance_1_5_pro",
    }
    for model in hosted:
        assert model.endpoint and model.source.startswith("https://fal.ai/models/" + model.endpoint)
        assert model.price.per_call_usd or model.price.per_second_usd


def test_model_arguments_are_renamed_and_priced():
    veo = lookup("image_to_video", "veo_3_1_fast")
    assert veo.duration_argument(8) == "8s"
    silent = veo.provider_arguments({"resolution": "1080p"})
    assert silent == {"generate_audio": False, "resolution": "1080p"}
    assert veo.cost(silent, 8) == pytest.approx(0.80)
    assert veo.cost(veo.provider_arguments({"generate_audio": True}), 8) == pytest.approx(1.20)
    flux = lookup("text_to_image", "flux_dev")
    assert flux.provider_arguments({"aspect_ratio": "9:16"})["image_size"] == "portrait_16_9"


def test_a_secret_block_supplies_the_key_on_a_worker(prefect_api, monkeypatch):
    from prefect.blocks.system import Secret

    from flows.storyboard import fal_engine_with_secret_block

    Secret(value="block-key-456").save("storyboard-fal-key", overwrite=True)
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.setenv("STORYBOARD_FAL_KEY_SECRET", "storyboard-fal-key")
    engine = fal_engine_with_secret_block()
    assert isinstance(engine, FalEngine) and engine._client.key == "block-key-456"
    # Artifacts hide a key from a block as they hide $FAL_KEY.
    from tasks.artifacts import redact

    assert "block-key-456" not in redact("error: key block-key-456 refused")
    monkeypatch.setenv("STORYBOARD_FAL_KEY_SECRET", "no-such-block")
    with pytest.raises(EngineConfigError, match="no-such-block"):
        fal_engine_with_secret_block()
