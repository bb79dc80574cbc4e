"""The fake fal queue server against the real fal-client 1.0.3, unpatched.

fal-client reads FAL_QUEUE_RUN_HOST / FAL_RUN_HOST when it is imported, so every client here is a
fresh `python -c` process with the server's environment; the script prints its observations as JSON.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from storyboard_core.media import first_frame, probe_clip
from tests.fal_server import FalServer

KEY = "test-key-123"
NANO = "fal-ai/nano-banana-pro"
KLING = "fal-ai/kling-video/v2.6/pro/image-to-video"
BOARD = "A 2x2 grid of 4 cinematic panels:\nPanel 1: Coffee shop\nPanel 2: Park\nPanel 3: Kitchen\nPanel 4: Leaves fall"

PRELUDE = """
import json, sys, threading, time
import fal_client, httpx
from fal_client.client import Completed, FalClientHTTPError, InProgress, Queued

client = fal_client.SyncClient()  # the key comes from FAL_KEY
out = {}

def failure(call):
    try:
        call()
    except FalClientHTTPError as exc:
        return {"type": type(exc).__name__, "status_code": exc.status_code, "message": exc.message, "text": str(exc), "error_type": exc.error_type}
    return None

def download(url, dest):
    with httpx.Client() as http:  # trusts SSL_CERT_FILE, like the engine's own download client
        response = http.get(url)
        response.raise_for_status()
        open(dest, "wb").write(response.content)
        return response.headers["content-type"]
"""


def run_client(fal: FalServer, tmp_path: Path, script: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env.update(fal.env(), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + script + "\nprint(json.dumps(out))"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def fal(tmp_path):
    with FalServer(tmp_path / "fal", key=KEY) as server:
        yield server
    assert not server.errors


def test_text_to_image_then_image_to_video_through_fal_client(fal, tmp_path):
    fal.job_seconds = 0.6
    out = run_client(fal, tmp_path, f"""
handle = client.submit({NANO!r}, {{"prompt": {BOARD!r}, "aspect_ratio": "16:9"}})
out["status_url"] = handle.status_url
out["events"] = [type(e).__name__ for e in handle.iter_events(with_logs=True, interval=0.05)]
out["board"] = client.result({NANO!r}, handle.request_id)  # a handle built from FAL_QUEUE_RUN_HOST
out["board_type"] = download(out["board"]["images"][0]["url"], "board.png")
seen = []
out["clip"] = client.subscribe(
    {KLING!r},
    {{"prompt": "slow zoom", "start_image_url": fal_client.encode_file("board.png"), "duration": "2"}},
    with_logs=True, on_queue_update=seen.append, interval=0.05,
)
out["clip_logs"] = [e.logs for e in seen if isinstance(e, Completed)][0]
out["clip_type"] = download(out["clip"]["video"]["url"], "clip.mp4")
""")
    board, clip = fal.submissions
    assert (board.endpoint, board.kind, board.prompt, board.status) == (NANO, "text_to_image", BOARD, "COMPLETED")
    assert (clip.endpoint, clip.kind, clip.status) == (KLING, "image_to_video", "COMPLETED")
    assert clip.arguments["start_image_url"].startswith("data:image/png;base64,")
    # Status lives under owner/alias, as on fal; the client followed the URLs it was given.
    assert out["status_url"] == f"https://{fal.host}/fal-ai/nano-banana-pro/requests/{board.request_id}/status"
    assert any(r.path == f"/fal-ai/kling-video/requests/{clip.request_id}/status" for r in fal.requests)
    assert out["events"][0] == "Queued" and "InProgress" in out["events"] and out["events"][-1] == "Completed"
    assert board.t_done - board.t_submit == pytest.approx(0.6)
    assert out["clip_logs"] and out["clip_logs"][0]["level"] == "INFO"
    assert any(r.query == "logs=true" for r in fal.requests) and any(r.query == "logs=false" for r in fal.requests)

    image = out["board"]["images"][0]
    assert (image["content_type"], image["width"], image["height"], out["board_type"]) == ("image/png", 1280, 720, "image/png")
    assert Image.open(tmp_path / "board.png").size == (1280, 720)
    video = out["clip"]["video"]
    assert (video["content_type"], out["clip_type"]) == ("video/mp4", "video/mp4")
    assert video["file_size"] == (tmp_path / "clip.mp4").stat().st_size
    info = probe_clip(tmp_path / "clip.mp4")
    assert (info.codec, info.frames, info.width, info.height) == ("h264", 48, 1280, 720)
    # The clip animates the image that was sent: its first frame is the storyboard.
    frame = first_frame(tmp_path / "clip.mp4").convert("RGB")
    sent = Image.open(tmp_path / "board.png").convert("RGB")
    assert sum(abs(a - b) for a, b in zip(frame.resize((32, 18)).tobytes(), sent.resize((32, 18)).tobytes())) / (32 * 18 * 3) < 8

    assert all(r.had_valid_auth for r in fal.requests)
    assert [d.had_auth_header for d in fal.downloads] == [False, False]
    assert fal.max_in_flight == 1 and not fal.cancelled and not fal.rejections


def test_submit_faults_surface_as_fal_client_sees_them(fal, tmp_path):
    fal.fault("Leaves fall", "429")
    fal.fault("Coffee", "drop")
    fal.fault("Kitchen", "500", None)
    fal.fault("Park", "422:duration must be one of 5, 10")
    out = run_client(fal, tmp_path, f"""
out["leaves"] = client.subscribe({KLING!r}, {{"prompt": "Leaves fall"}}, interval=0.05)
out["coffee"] = client.subscribe({KLING!r}, {{"prompt": "Coffee"}}, interval=0.05)
out["kitchen_1"] = failure(lambda: client.submit({KLING!r}, {{"prompt": "Kitchen"}}))
out["kitchen_2"] = client.subscribe({KLING!r}, {{"prompt": "Kitchen"}}, interval=0.05)
out["park"] = failure(lambda: client.submit({KLING!r}, {{"prompt": "Park", "duration": "7"}}))
out["wrong_key"] = failure(lambda: fal_client.SyncClient(key="wrong-key").submit({NANO!r}, {{"prompt": "x"}}))
""")
    # fal-client retried the 429 and the dropped connection itself: one accepted job each.
    assert "images" in out["leaves"] and "images" in out["coffee"] and "images" in out["kitchen_2"]
    assert [(r.prompt, r.fault, r.status) for r in fal.rejections] == [
        ("Leaves fall", "429", 429), ("Coffee", "drop", None), ("Kitchen", "500", 500), ("Park", "422:duration must be one of 5, 10", 422),
    ]
    assert [fal.submissions_for(p) for p in ("Leaves fall", "Coffee", "Kitchen", "Park")] == [1, 1, 1, 0]

    assert out["kitchen_1"]["status_code"] == 500 and out["kitchen_1"]["error_type"] == "internal_error"
    park = out["park"]
    assert (park["type"], park["status_code"]) == ("FalClientHTTPError", 422)
    assert park["message"] == [{"loc": ["body", "duration"], "msg": "duration must be one of 5, 10", "type": "value_error", "url": "https://docs.fal.ai/errors/#value_error"}]
    assert "duration must be one of 5, 10" in park["text"]

    assert out["wrong_key"]["status_code"] == 401
    refused = [r for r in fal.requests if not r.had_valid_auth]
    assert [(r.method, r.path, r.status) for r in refused] == [("POST", f"/{NANO}", 401)]
    assert len(fal.submissions) == 3


def test_a_request_that_never_finishes_is_cancelled_and_failures_complete_with_an_error(fal, tmp_path):
    fal.job_seconds = 0.1
    fal.fault("stuck", "never")
    fal.fault("crash", "fail")
    fal.fault("policy", "fail:content policy violation")
    out = run_client(fal, tmp_path, f"""
stuck = client.submit({KLING!r}, {{"prompt": "stuck"}})
time.sleep(0.5)
out["before"] = type(stuck.status()).__name__
stuck.cancel()
after = stuck.status()
out["after"] = [type(after).__name__, after.error, after.error_type]
out["stuck_result"] = failure(stuck.get)
crash = client.submit({NANO!r}, {{"prompt": "crash"}})
status = [e for e in crash.iter_events(interval=0.05)][-1]
out["crash"] = [status.error, status.error_type, failure(crash.get)]
out["policy"] = failure(lambda: client.subscribe({NANO!r}, {{"prompt": "policy"}}, interval=0.05))
done = client.submit({NANO!r}, {{"prompt": "fine"}})
done.get(interval=0.05)
out["cancel_done"] = failure(done.cancel)
""")
    stuck = fal.submissions[0]
    assert out["before"] == "InProgress"
    assert out["after"] == ["Completed", "Request was cancelled", "client_cancelled"]
    assert out["stuck_result"]["status_code"] == 499
    assert fal.cancelled == [stuck.request_id] and stuck.status == "CANCELLED"
    assert out["crash"][:2] == ["Runner crashed while processing the request", "runner_server_error"]
    assert out["crash"][2]["status_code"] == 500
    assert out["policy"]["status_code"] == 422 and out["policy"]["message"][0]["msg"] == "content policy violation"
    assert out["cancel_done"]["status_code"] == 400 and "ALREADY_COMPLETED" in out["cancel_done"]["text"]
    assert [s.status for s in fal.submissions] == ["CANCELLED", "FAILED", "FAILED", "COMPLETED"]


def test_max_in_flight_counts_concurrent_jobs(fal, tmp_path):
    fal.job_seconds = 0.5
    fal.job_seconds_for = {"quick": 0.05}
    run_client(fal, tmp_path, f"""
threads = [threading.Thread(target=client.subscribe, args=({NANO!r}, {{"prompt": f"board {{n}}"}}), kwargs={{"interval": 0.05}}) for n in range(3)]
for t in threads: t.start()
for t in threads: t.join()
client.subscribe({NANO!r}, {{"prompt": "quick one"}}, interval=0.05)
""")
    assert fal.max_in_flight == 3
    quick = fal.submissions[-1]
    assert quick.seconds == 0.05 and all(s.status == "COMPLETED" for s in fal.submissions)


def test_download_faults(fal, tmp_path):
    fal.job_seconds = 0.05
    fal.fault("slow", "slow-download:1")
    fal.fault("html", "bad-content-type")
    fal.fault("huge", "huge:5000000")
    fal.fault("cut", "truncated")
    out = run_client(fal, tmp_path, f"""
def fetch(prompt):
    url = client.subscribe({NANO!r}, {{"prompt": prompt}}, interval=0.05)["images"][0]["url"]
    started = time.monotonic()
    try:
        with httpx.Client() as http:
            response = http.get(url)
        return [response.headers["content-type"], response.headers["content-length"], len(response.content), time.monotonic() - started]
    except httpx.HTTPError as exc:
        return [type(exc).__name__]
for prompt in ("slow", "html", "huge", "cut", "plain"):
    out[prompt] = fetch(prompt)
""")
    plain = out["plain"]
    assert plain[0] == "image/png" and int(plain[1]) == plain[2] > 1000
    assert out["slow"][:3] == plain[:3] and out["slow"][3] >= 0.9
    assert out["html"][0] == "text/html; charset=utf-8"
    assert out["huge"][1:3] == ["5000000", 5000000]
    assert out["cut"] == ["RemoteProtocolError"]


def test_fault_names_are_checked_and_the_server_stops(tmp_path):
    with FalServer(tmp_path / "fal", key=KEY) as fal:
        with pytest.raises(ValueError, match="unknown fal fault"):
            fal.fault("x", "explode")
        host, ca = fal.host, fal.ca_file
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as http:
            assert http.get(f"https://{host}/fal-ai/x/requests/nope/status").status_code == 401
            assert http.get(f"https://{host}/fal-ai/x/requests/nope/status", headers={"Authorization": f"Key {KEY}"}).status_code == 404
    started = time.monotonic()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://{host}/", verify=False, timeout=2)
    assert time.monotonic() - started < 2
