"""The fal engine: hosted models on fal.ai, through the official `fal-client` queue API.

One call is: submit (fal answers with a request id at once), poll the request's status until it
is COMPLETED, fetch the result, download the media it names. What each failure means here:

- fal-client retries 408/409/429 and dropped connections itself (10 tries, exponential with
  jitter). What still fails after that is a `TransientError`, and the Prefect task retries the
  whole call later (minutes, not the 0.1 s steps of fal-client), with its own backoff.
- A status poll that fails after fal-client's retries does not give the request up: it was paid
  for, so we keep polling the same request until the step's timeout, instead of submitting again.
- 4xx answers other than those (422: the model rejected an argument; 401/403: the key) are a
  `PermanentError` carrying fal's reason: retrying cannot help.
- A request that is not COMPLETED within the step's `timeout` is cancelled on fal's side and fails
  its panel (not retried: a stuck request would be paid again at every retry).
- A finished request whose download fails raises `TransientError`; the engine remembers the
  finished request, so the retry downloads it again instead of paying for a new one.

Hosts: fal-client builds every URL from `FAL_QUEUE_RUN_HOST` / `FAL_RUN_HOST` (read when fal_client
is imported) over https, and httpx trusts `SSL_CERT_FILE`; media downloads use the same trust.

The key lives only inside fal-client's HTTP client, which sends it to the queue host. It is never
sent with media downloads (the media host is fal's CDN, not the API), never stored on this
object, and never part of its repr, so it cannot reach logs, manifests or exceptions from here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fal_client
import httpx
from fal_client.client import Completed as FalCompleted
from fal_client.client import FalClientHTTPError

from storyboard_core.engines.base import (
    ClipJob,
    Generated,
    GenerationError,
    ImageJob,
    PermanentError,
    TransientError,
)
from storyboard_core.files import atomic_path
from storyboard_core.registry import Model

# Answers worth asking again later; every other 4xx is the request's own fault.
TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529})
MAX_DOWNLOAD_BYTES = 2 * 1024**3
_CHUNK = 1 << 20


class FalEngine:
    name = "fal"

    def __init__(
        self,
        key: str,
        *,
        poll_seconds: float = 5.0,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        download_timeout: float = 300.0,
    ) -> None:
        # Status is polled at 0.25 s, slowing by half each time to `poll_seconds`: a quick job is
        # seen at once, a two-minute clip costs about 30 polls instead of fal-client's 1,200.
        self._poll_seconds = poll_seconds
        self._max_download_bytes = max_download_bytes
        self._download_timeout = download_timeout
        self._client = fal_client.SyncClient(key=key)
        # Requests that finished but whose media was not yet saved: dest -> (request id, media URL).
        self._finished: dict[Path, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "FalEngine()"

    # --- the engine interface ---------------------------------------------------------------

    def text_to_image(self, model: Model, job: ImageJob, dest: Path) -> Generated:
        arguments = {**job.arguments, model.prompt_argument: job.prompt}
        return self._generate(model, arguments, dest, timeout=900.0, expect="image/")

    def image_to_video(self, model: Model, job: ClipJob, dest: Path) -> Generated:
        arguments = {
            **job.arguments,
            model.prompt_argument: job.prompt,
            # A data URI: fal-client's upload goes to fal's storage host, which a proxy or a test
            # server configured through FAL_QUEUE_RUN_HOST would not reach.
            model.image_argument: fal_client.encode_file(job.image),
            "duration": model.duration_argument(job.duration),
        }
        return self._generate(model, arguments, dest, timeout=job.timeout_seconds, expect="video/")

    # --- one call ---------------------------------------------------------------------------

    def _generate(self, model: Model, arguments: Mapping[str, Any], dest: Path, *, timeout: float, expect: str) -> Generated:
        with self._lock:
            finished = self._finished.get(dest)
        if finished is None:
            request_id, result = self._run(model, arguments, timeout)
            finished = (request_id, _media_url(result, request_id))
            with self._lock:
                self._finished[dest] = finished
        request_id, url = finished
        self._download(url, dest, expect=expect, request_id=request_id)
        with self._lock:
            self._finished.pop(dest, None)
        return Generated(dest, request_id=request_id)

    def _run(self, model: Model, arguments: Mapping[str, Any], timeout: float) -> tuple[str, Any]:
        try:
            handle = self._client.submit(model.endpoint, arguments=dict(arguments))
        except Exception as exc:
            raise _classify(exc, f"fal {model.endpoint}: submit") from None
        deadline = time.monotonic() + timeout
        for wait in _poll_waits(self._poll_seconds):
            status = self._status(handle, model)
            if isinstance(status, FalCompleted):
                if status.error:
                    raise PermanentError(f"fal {model.endpoint}: request {handle.request_id} failed: {status.error}", request_id=handle.request_id)
                break
            left = deadline - time.monotonic()
            if left <= 0:
                _cancel(handle)
                raise PermanentError(
                    f"fal {model.endpoint}: request {handle.request_id} did not finish within {timeout:g} s; cancelled it",
                    request_id=handle.request_id,
                )
            time.sleep(min(wait, left))
        try:
            return handle.request_id, handle.get()
        except Exception as exc:
            raise _classify(exc, f"fal {model.endpoint}: result of request {handle.request_id}", handle.request_id) from None

    def _status(self, handle: fal_client.SyncRequestHandle, model: Model) -> fal_client.Status | None:
        try:
            return handle.status()
        except Exception as exc:
            error = _classify(exc, f"fal {model.endpoint}: status of request {handle.request_id}", handle.request_id)
            if error.transient:
                return None  # keep polling the request we paid for; the deadline still applies
            raise error from None

    # --- media ------------------------------------------------------------------------------

    def _download(self, url: str, dest: Path, *, expect: str, request_id: str) -> None:
        """Stream `url` to a temporary file beside `dest`, checked, then renamed into place."""
        where = f"fal request {request_id}: download"
        parts = urlsplit(url)
        if parts.scheme != "https" and parts.netloc not in _configured_hosts():
            raise PermanentError(f"{where}: refusing {parts.scheme}:// media URL; only https is accepted", request_id=request_id)
        try:
            # A client of our own: fal-client's would send the key to the media host.
            with httpx.Client(timeout=httpx.Timeout(self._download_timeout, connect=30.0), follow_redirects=True) as http:
                with http.stream("GET", url) as response:
                    if response.status_code != 200:
                        error = TransientError if response.status_code in TRANSIENT_STATUS or response.status_code == 404 else PermanentError
                        raise error(f"{where}: HTTP {response.status_code}", request_id=request_id)
                    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if not content_type.startswith(expect):
                        raise PermanentError(f"{where}: expected {expect}*, got content type {content_type or 'none'!r}", request_id=request_id)
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > self._max_download_bytes:
                        raise PermanentError(f"{where}: {declared:,} bytes is over the {self._max_download_bytes:,}-byte cap", request_id=request_id)
                    with atomic_path(dest) as tmp, tmp.open("wb") as out:
                        size = 0
                        for chunk in response.iter_bytes(_CHUNK):
                            size += len(chunk)
                            if size > self._max_download_bytes:
                                raise PermanentError(f"{where}: over the {self._max_download_bytes:,}-byte cap", request_id=request_id)
                            out.write(chunk)
                        if declared and size != declared:
                            raise TransientError(f"{where}: got {size:,} of {declared:,} bytes", request_id=request_id)
        except GenerationError:
            raise
        except httpx.HTTPError as exc:
            raise TransientError(f"{where}: {type(exc).__name__}: {exc}", request_id=request_id) from None


def _poll_waits(longest: float) -> Iterable[float]:
    wait = min(0.25, longest)
    while True:
        yield wait
        wait = min(longest, wait * 1.5)


def _cancel(handle: fal_client.SyncRequestHandle) -> None:
    try:
        handle.cancel()
    except Exception:  # the request fails either way; a failed cancel must not hide why
        pass


def _configured_hosts() -> set[str]:
    """Hosts the user pointed fal-client at: media served there may be plain http."""
    return {h for h in (os.environ.get("FAL_QUEUE_RUN_HOST"), os.environ.get("FAL_RUN_HOST")) if h}


def _media_url(result: Any, request_id: str) -> str:
    """The media URL in a fal result: `video.url` for clips, `images[0].url` (or `image.url`) for images."""
    if isinstance(result, dict):
        for media in (result.get("video"), result.get("image"), *(result.get("images") or [])[:1]):
            if isinstance(media, dict) and isinstance(media.get("url"), str):
                return media["url"]
    raise PermanentError(f"fal request {request_id}: the result names no video or image URL", request_id=request_id)


def _classify(exc: Exception, where: str, request_id: str | None = None) -> GenerationError:
    """fal-client's and httpx's exceptions as ours, with fal's reason and without the request's headers."""
    if isinstance(exc, FalClientHTTPError):
        reason = _reason(exc.message)
        if exc.status_code in TRANSIENT_STATUS:
            return TransientError(f"{where}: HTTP {exc.status_code}: {reason}", request_id=request_id)
        if exc.status_code in (401, 403):
            return PermanentError(f"{where}: HTTP {exc.status_code}: fal refused the key in FAL_KEY ({reason})", request_id=request_id)
        return PermanentError(f"{where}: HTTP {exc.status_code}: {reason}", request_id=request_id)
    if isinstance(exc, httpx.HTTPError):
        return TransientError(f"{where}: {type(exc).__name__}: {exc}", request_id=request_id)
    return PermanentError(f"{where}: {type(exc).__name__}: {exc}", request_id=request_id)


def _reason(detail: Any) -> str:
    """fal's error detail as one line: a validation error lists `field: message` for each problem."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}".strip(": "))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)[:500]
