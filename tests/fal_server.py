"""A local fake of fal.ai's queue API, spoken exactly as fal-client 1.0.3 uses it, for tests.

The protocol (fal-client builds only the submit URL itself, from FAL_QUEUE_RUN_HOST read when it
is imported; every later call uses the URLs the submit answer names):

    POST /{app}[/{path}]                       -> 200 {request_id, response_url, status_url, cancel_url, queue_position}
    GET  /{owner}/{alias}/requests/{id}/status?logs=true|false
                                               -> 202 {"status": "IN_QUEUE", "queue_position": n} or
                                                  202 {"status": "IN_PROGRESS", "logs": null|[...]} or
                                                  200 {"status": "COMPLETED", "logs", "metrics", ["error", "error_type"]}
    GET  /{owner}/{alias}/requests/{id}        -> 200 the model's output JSON (or the job's error)
    PUT  /{owner}/{alias}/requests/{id}/cancel -> 202 {"status": "CANCELLATION_REQUESTED"} | 400 ALREADY_COMPLETED
    GET  /files/{name}                         -> the media (fal's CDN: no key needed, none expected)

Every queue call must carry `Authorization: Key <key>`, else 401. Errors are JSON `{"detail": ...}`:
fal-client raises `FalClientHTTPError(message=detail, status_code, response_headers, response)`, and
itself retries 408/409/429 and dropped connections (10 tries).

    with FalServer(tmp_path / "fal", key="test-key-123") as fal:
        subprocess.run([...], env={**os.environ, **fal.env()})   # FAL_KEY, hosts, SSL_CERT_FILE
        fal.job_seconds = 0.3                    # submit -> COMPLETED; IN_QUEUE for the first third
        fal.job_seconds_for = {"Kitchen": 60.0}  # per prompt substring
        fal.fault("Leaves fall", "429")          # the next submission with that prompt gets a 429
        fal.fault("Kitchen", "500", None)        # 1st submission 500, 2nd normal, later ones normal
        fal.submissions, fal.submissions_for("Kitchen"), fal.max_in_flight, fal.cancelled, fal.requests

Faults, one per submission, taken in order: "429", "500", any "<code>[:<detail>]" (answered at
submit, not accepted); "422:<reason>" (fal's validation error body); "drop" (connection closed with
no answer); "never" (stays IN_PROGRESS until cancelled); "fail" / "fail:<reason>" (COMPLETED with an
error: the result is a 500 runner error / a 422 validation error); "slow-download:<seconds>",
"bad-content-type", "huge[:<bytes>]" (declares and streams that many bytes, default 2 GiB + 1),
"truncated" (declares the full length, sends half, closes) act on the media file.

Outputs are real: an argument holding a `data:image/...` URI (or a URL of a file served here) makes
the job image_to_video, an H.264 clip of `duration` seconds animated from that image; otherwise it is
text_to_image, a storyboard PNG of `aspect_ratio`. A job is COMPLETED when its time is up, whatever
the CPU is doing (so timeouts in tests are about the protocol, not the machine): its media renders
from submit on in a small pool, and the result call waits for it (as fal's result can take a moment).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import socket
import socketserver
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

from storyboard_core.media import render_clip, render_storyboard, save_image, storyboard_size

HUGE_BYTES = 2 * 1024**3 + 1
_FAULT = re.compile(r"[1-5]\d\d(:.*)?|drop|never|fail(:.*)?|slow-download:\d+(\.\d+)?|bad-content-type|huge(:\d+)?|truncated", re.S)
_CODE = re.compile(r"(\d{3})(?::(.*))?", re.S)
_REQUEST_PATH = re.compile(r"^/(?P<app>.+?)/requests/(?P<id>[^/]+)(?P<action>/status|/cancel)?/?$")
_MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".mp4": "video/mp4"}
_CHUNK = 64 * 1024


@dataclass
class Submission:
    """One accepted submit. Times are `time.monotonic()`; `t_done` is when it COMPLETED, failed or was cancelled."""

    endpoint: str
    request_id: str
    prompt: str
    arguments: dict[str, Any]
    kind: str  # "text_to_image" | "image_to_video"
    t_submit: float
    seconds: float
    fault: str | None = None
    t_done: float | None = None
    cancelled: bool = False
    error: str | None = None
    file: Path | None = None
    size: tuple[int, int] | None = None
    image: Path | None = field(default=None, repr=False)
    rendered: Future[None] | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        now = time.monotonic()
        if self.cancelled:
            return "CANCELLED"
        if self.t_done is not None and now >= self.t_done:
            return "FAILED" if self.error else "COMPLETED"
        return "IN_QUEUE" if now < self.t_submit + self.seconds / 3 else "IN_PROGRESS"


@dataclass(frozen=True)
class Rejection:
    """A submit answered with an error (or dropped): fal never accepted it, so it is not a submission."""

    endpoint: str
    prompt: str
    fault: str
    status: int | None  # None: the connection was dropped


@dataclass
class Request:
    """One queue API call (media downloads are in `downloads`: fal's CDN takes no key)."""

    method: str
    path: str
    query: str
    had_valid_auth: bool
    status: int | None = None


@dataclass
class Download:
    name: str
    request_id: str | None
    had_auth_header: bool  # the key must never be sent to the media host
    status: int
    bytes_sent: int = 0


@dataclass(frozen=True)
class _Reply:
    code: int
    payload: Any
    headers: tuple[tuple[str, str], ...] = ()


_DROP = _Reply(0, None)  # close the connection without answering


def _json_reply(code: int, payload: Any, **headers: str) -> _Reply:
    return _Reply(code, payload, tuple((k.replace("_", "-"), v) for k, v in headers.items()))


def _validation_error(reason: str, arguments: dict[str, Any]) -> _Reply:
    """fal's model error: `detail` is a list of {loc, msg, type, url}; loc names the argument the reason starts with."""
    name = next((k for k in arguments if reason.startswith(k)), None)
    loc = ["body", name] if name else ["body"]
    error = {"loc": loc, "msg": reason, "type": "value_error", "url": "https://docs.fal.ai/errors/#value_error"}
    return _json_reply(422, {"detail": [error]}, X_Fal_Retryable="false")


def _request_error(code: int, detail: str | None = None) -> _Reply:
    """fal's request error: a string `detail` and an `error_type`, also in the X-Fal-Error-Type header."""
    error_type = {429: "rate_limited", 500: "internal_error", 503: "runner_scheduling_failure", 504: "request_timeout"}.get(code, "bad_request")
    return _json_reply(code, {"detail": detail or HTTPStatus(code).phrase, "error_type": error_type}, X_Fal_Error_Type=error_type)


def _decode_data_uri(uri: str) -> tuple[bytes, str]:
    """`data:image/png;base64,...` -> (bytes, ".png")."""
    header, _, data = uri.partition(",")
    mime = header[5:].split(";")[0].lower()
    suffix = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}.get(mime)
    if suffix is None or ";base64" not in header:
        raise ValueError(f"unsupported image data URI ({header[:40]!r})")
    try:
        return base64.b64decode(data, validate=True), suffix
    except binascii.Error as exc:
        raise ValueError(f"invalid base64 in image data URI: {exc}") from None


def _logs(sub: Submission) -> list[dict[str, str]]:
    stamp = datetime.now(timezone.utc).isoformat()
    return [{"message": f"{sub.kind}: {sub.prompt[:60]}", "level": "INFO", "source": "user", "timestamp": stamp}]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer has a Content-Length
    timeout = 60
    server: _HTTPServer

    def setup(self) -> None:
        # The TLS handshake happens here, in the connection's thread, so one slow client cannot stall accept().
        self.request.do_handshake()
        super().setup()
        self.server.fal._track(self.request, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fal._track(self.request, False)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: `requests` is the log
        pass

    def do_GET(self) -> None:
        self.server.fal._handle(self)

    do_POST = do_PUT = do_DELETE = do_GET


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fal: FalServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup of the address; loopback needs none.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):  # a client hanging up is normal
            self.fal.errors.append(repr(exc))


class FalServer:
    """fal's queue API on https://127.0.0.1:PORT, with a throwaway CA. Use as a context manager."""

    def __init__(self, root: Path, key: str = "test-key", *, job_seconds: float = 0.3) -> None:
        self.root = Path(root)
        self.key = key
        self.job_seconds = job_seconds
        self.job_seconds_for: dict[str, float] = {}
        self.reject_key = True  # False: accept any key (still recorded in `requests`)
        self.host = ""
        self.ca_file = self.root / "fal-ca.pem"
        self.errors: list[str] = []  # unexpected exceptions in the server: tests can assert there are none
        self._lock = threading.Lock()
        self._faults: dict[str, list[str | None]] = {}
        self._submissions: list[Submission] = []
        self._rejections: list[Rejection] = []
        self._requests: list[Request] = []
        self._downloads: list[Download] = []
        self._cancelled: list[str] = []
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="fal-render")

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FalServer:
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "inputs").mkdir(exist_ok=True)
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fal = self
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fal-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections would otherwise hold their threads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._thread.join(timeout=5)

    def env(self) -> dict[str, str]:
        """What a subprocess needs to send fal-client here (and to trust this server's certificate)."""
        return {"FAL_KEY": self.key, "FAL_QUEUE_RUN_HOST": self.host, "FAL_RUN_HOST": self.host, "SSL_CERT_FILE": str(self.ca_file)}

    # --- test controls and observations -----------------------------------------------------------

    def fault(self, prompt_substring: str, *faults: str | None) -> None:
        """Queue faults for successive submissions whose prompt contains the substring (None: a normal one)."""
        for fault in faults:
            if fault is not None and not _FAULT.fullmatch(fault):
                raise ValueError(f"unknown fal fault {fault!r}")
        with self._lock:
            self._faults.setdefault(prompt_substring, []).extend(faults)

    @property
    def submissions(self) -> list[Submission]:
        with self._lock:
            return list(self._submissions)

    @property
    def rejections(self) -> list[Rejection]:
        with self._lock:
            return list(self._rejections)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def downloads(self) -> list[Download]:
        with self._lock:
            return list(self._downloads)

    @property
    def cancelled(self) -> list[str]:
        with self._lock:
            return list(self._cancelled)

    def submissions_for(self, prompt_substring: str) -> int:
        with self._lock:
            return sum(prompt_substring in s.prompt for s in self._submissions)

    @property
    def max_in_flight(self) -> int:
        """The most jobs accepted and not yet completed, failed or cancelled at any one moment."""
        with self._lock:
            spans = [(s.t_submit, s.t_done if s.t_done is not None else math.inf) for s in self._submissions]
        # At equal times an end sorts before a start: back-to-back jobs never overlap.
        events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        most = current = 0
        for _, step in events:
            current += step
            most = max(most, current)
        return most

    # --- HTTP ---------------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, opened: bool) -> None:
        with self._lock:
            (self._conns.add if opened else self._conns.discard)(conn)

    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        if h.command == "GET" and url.path.startswith("/files/"):
            return self._serve_file(h, url.path.removeprefix("/files/"))
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        valid = h.headers.get("Authorization") == f"Key {self.key}"
        record = Request(h.command, url.path, url.query, valid)
        with self._lock:
            self._requests.append(record)
        if not valid and self.reject_key:
            detail = "No user found for Key ID and Secret" if h.headers.get("Authorization") else "Authentication is required"
            reply = _json_reply(401, {"detail": detail})
        elif match := _REQUEST_PATH.match(url.path):
            reply = self._request_call(h.command, match["id"], match["action"] or "", parse_qs(url.query))
        elif h.command == "POST":
            reply = self._submit(url.path.strip("/"), body)
        else:
            reply = _json_reply(405, {"detail": "Method Not Allowed"})
        record.status = reply.code or None
        if reply is _DROP:
            h.close_connection = True  # the handler returns without a byte: the client sees a dropped connection
            return
        data = json.dumps(reply.payload).encode()
        h.send_response(reply.code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers:
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    def _submit(self, endpoint: str, body: bytes) -> _Reply:
        try:
            arguments = json.loads(body or b"{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            return _json_reply(422, {"detail": [{"loc": ["body"], "msg": "Input should be a valid JSON object", "type": "json_invalid"}]})
        prompt = str(arguments.get("prompt", ""))
        with self._lock:
            fault = next((queue.pop(0) for sub, queue in self._faults.items() if sub in prompt and queue), None)
        if fault == "drop" or (fault and _CODE.fullmatch(fault)):
            reply = _DROP if fault == "drop" else self._fault_reply(fault, arguments)
            with self._lock:
                self._rejections.append(Rejection(endpoint, prompt, fault, reply.code or None))
            return reply
        try:
            image = self._input_image(arguments)
        except ValueError as exc:
            return _validation_error(str(exc), arguments)
        sub = Submission(
            endpoint=endpoint,
            request_id=str(uuid.uuid4()),
            prompt=prompt,
            arguments=arguments,
            kind="image_to_video" if image else "text_to_image",
            t_submit=time.monotonic(),
            seconds=next((s for k, s in self.job_seconds_for.items() if k in prompt), self.job_seconds),
            fault=fault,
        )
        if image:
            sub.image = self.root / "inputs" / f"{sub.request_id}{image[1]}"
            sub.image.write_bytes(image[0])
        if fault and fault.startswith("fail"):
            sub.error = fault.partition(":")[2] or "Runner crashed while processing the request"
        if fault != "never":
            sub.t_done = sub.t_submit + sub.seconds
        if not fault or not fault.startswith(("fail", "never")):
            sub.rendered = self._pool.submit(self._render, sub)
        with self._lock:
            self._submissions.append(sub)
        urls = self._urls(endpoint, sub.request_id)
        return _json_reply(200, {"request_id": sub.request_id, **urls, "queue_position": self._queue_position(sub), "status": "IN_QUEUE"})

    def _fault_reply(self, fault: str, arguments: dict[str, Any]) -> _Reply:
        code, detail = _CODE.fullmatch(fault).groups()  # type: ignore[union-attr]
        if code == "422":
            return _validation_error(detail or "invalid input", arguments)
        return _request_error(int(code), detail)

    def _input_image(self, arguments: dict[str, Any]) -> tuple[bytes, str] | None:
        """The image an image_to_video call animates: a data URI, or a file this server made."""
        files = f"https://{self.host}/files/"
        for value in arguments.values():
            if isinstance(value, str) and value.startswith("data:image/"):
                return _decode_data_uri(value)
            if isinstance(value, str) and value.startswith(files):
                path = self.root / "files" / Path(value.removeprefix(files)).name
                if path.suffix in (".png", ".jpg", ".webp") and path.exists():
                    return path.read_bytes(), path.suffix
        return None

    def _urls(self, endpoint: str, request_id: str) -> dict[str, str]:
        # As fal: status, result and cancel live under owner/alias only, without the endpoint's subpath.
        parts = endpoint.split("/")
        base = "/".join(parts[:3] if parts[0] in ("workflows", "comfy") else parts[:2])
        url = f"https://{self.host}/{base}/requests/{request_id}"
        return {"response_url": url, "status_url": f"{url}/status", "cancel_url": f"{url}/cancel"}

    def _queue_position(self, sub: Submission) -> int:
        with self._lock:
            return sum(1 for s in self._submissions if s.t_submit < sub.t_submit and s.status == "IN_QUEUE")

    def _request_call(self, method: str, request_id: str, action: str, query: dict[str, list[str]]) -> _Reply:
        with self._lock:
            sub = next((s for s in self._submissions if s.request_id == request_id), None)
        if sub is None:
            return _json_reply(404, {"detail": f"Request {request_id} not found", "status": "NOT_FOUND"})
        if (method, action) == ("GET", "/status"):
            return self._status(sub, query.get("logs", [""])[0] in ("1", "true"))
        if (method, action) == ("PUT", "/cancel"):
            return self._cancel(sub)
        if (method, action) == ("GET", ""):
            return self._result(sub)
        return _json_reply(405, {"detail": "Method Not Allowed"})

    def _status(self, sub: Submission, with_logs: bool) -> _Reply:
        state = sub.status
        payload: dict[str, Any] = {"status": state, "request_id": sub.request_id, **self._urls(sub.endpoint, sub.request_id)}
        if state == "IN_QUEUE":
            return _json_reply(202, {**payload, "queue_position": self._queue_position(sub)})
        payload["logs"] = _logs(sub) if with_logs else None  # fal-client reads data["logs"]: always present
        if state == "IN_PROGRESS":
            return _json_reply(202, payload)
        payload["status"] = "COMPLETED"  # failed and cancelled requests are COMPLETED with an error
        payload["metrics"] = {"inference_time": round((sub.t_done or time.monotonic()) - sub.t_submit, 3)}
        if state == "FAILED":
            payload.update(error=sub.error, error_type="validation_error" if (sub.fault or "").startswith("fail:") else "runner_server_error")
        elif state == "CANCELLED":
            payload.update(error="Request was cancelled", error_type="client_cancelled")
        return _json_reply(200, payload)

    def _cancel(self, sub: Submission) -> _Reply:
        with self._lock:
            if sub.status in ("COMPLETED", "FAILED"):
                return _json_reply(400, {"status": "ALREADY_COMPLETED"})
            if not sub.cancelled:
                sub.cancelled, sub.t_done = True, time.monotonic()
                self._cancelled.append(sub.request_id)
                if sub.rendered is not None:
                    sub.rendered.cancel()
        return _json_reply(202, {"status": "CANCELLATION_REQUESTED"})

    def _result(self, sub: Submission) -> _Reply:
        state = sub.status
        if state in ("IN_QUEUE", "IN_PROGRESS"):
            return _json_reply(400, {"detail": "Request is still in progress"})
        if state == "CANCELLED":
            return _request_error(499, "Request was cancelled")
        if state == "FAILED":
            if (sub.fault or "").startswith("fail:"):
                return _validation_error(sub.error or "", sub.arguments)
            return _json_reply(500, {"detail": sub.error, "error_type": "runner_server_error"}, X_Fal_Error_Type="runner_server_error")
        if not self._wait_rendered(sub) or sub.file is None:
            return _json_reply(500, {"detail": sub.error or "Output was not saved", "error_type": "runner_server_error"})
        file = sub.file
        media = {"url": f"https://{self.host}/files/{file.name}", "content_type": _MEDIA[file.suffix], "file_name": file.name, "file_size": file.stat().st_size}
        if sub.kind == "image_to_video":
            return _json_reply(200, {"video": media})
        width, height = sub.size or (0, 0)
        return _json_reply(200, {"images": [{**media, "width": width, "height": height}], "description": ""})

    # --- media --------------------------------------------------------------------------------------

    def _wait_rendered(self, sub: Submission) -> bool:
        try:
            assert sub.rendered is not None
            sub.rendered.result(timeout=120)
        except Exception:  # cancelled at shutdown, or the render failed (recorded in `errors`)
            return False
        return sub.file is not None

    def _render(self, sub: Submission) -> None:
        try:
            if sub.kind == "image_to_video":
                dest = self.root / "files" / f"{sub.request_id}.mp4"
                render_clip(sub.image, dest, float(sub.arguments.get("duration", 5)), motion=sub.prompt)  # type: ignore[arg-type]
            else:
                ratio = str(sub.arguments.get("aspect_ratio", "16:9"))
                size = storyboard_size(ratio if re.fullmatch(r"\d+:\d+", ratio) else "16:9")
                suffix = {"jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp"}.get(str(sub.arguments.get("output_format", "")).lower(), ".png")
                dest = save_image(render_storyboard(sub.prompt or "Panel 1: a storyboard", size), self.root / "files" / f"{sub.request_id}{suffix}")
                sub.size = size
        except Exception as exc:  # a broken input fails the job, as a model would, and is visible to the test
            with self._lock:
                self.errors.append(f"render {sub.request_id}: {exc!r}")
                sub.error = f"Generation failed: {exc}"
            return
        sub.file = dest

    def _serve_file(self, h: _Handler, name: str) -> None:
        with self._lock:
            sub = next((s for s in self._submissions if Path(name).stem == s.request_id), None)
        record = Download(name, sub.request_id if sub else None, "Authorization" in h.headers, 200)
        with self._lock:
            self._downloads.append(record)
        if sub is None or sub.status != "COMPLETED" or not self._wait_rendered(sub):
            record.status = 404
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        assert sub.file is not None
        fault = sub.fault or ""
        data = sub.file.read_bytes()
        length = max(int(fault.partition(":")[2] or HUGE_BYTES), len(data)) if fault.startswith("huge") else len(data)
        h.send_response(200)
        h.send_header("Content-Type", "text/html; charset=utf-8" if fault == "bad-content-type" else _MEDIA[sub.file.suffix])
        h.send_header("Content-Length", str(length))
        h.end_headers()
        if fault == "truncated":
            data, h.close_connection = data[: len(data) // 2], True
        pause = float(fault.partition(":")[2]) / 20 if fault.startswith("slow-download") else 0.0
        try:
            for chunk in _chunks(data, length if fault.startswith("huge") else len(data), pieces=20 if pause else None):
                if pause and self._stopping.wait(pause):
                    break
                h.wfile.write(chunk)
                record.bytes_sent += len(chunk)
        except (ConnectionError, ssl.SSLError, TimeoutError):  # the client stopped reading (a size cap)
            h.close_connection = True


def _chunks(data: bytes, length: int, pieces: int | None) -> Iterator[bytes]:
    """`data`, then zeros up to `length` (for "huge"), in `pieces` equal parts or 64 KiB chunks."""
    step = max(1, -(-len(data) // pieces)) if pieces else _CHUNK
    for start in range(0, len(data), step):
        yield data[start : start + step]
    padding = length - len(data)
    zeros = bytes(_CHUNK)
    while padding > 0:
        yield zeros[: min(padding, _CHUNK)]
        padding -= _CHUNK
