"""The fal engine end to end: the real CLI and the real fal-client against a local fal-protocol server.

fal-client reads its hosts when it is imported, so every run here is a fresh `python flows/storyboard.py`
process pointed at the test server with FAL_QUEUE_RUN_HOST / FAL_RUN_HOST / SSL_CERT_FILE.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from storyboard_core.media import first_frame, probe_clip
from tests.fal_server import FalServer

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "flows" / "storyboard.py"
LOVE_STORY = ROOT / "input/pipelines/storyboard/love_story_parallel_test.yaml"
KEY = "fal-test-key-5f2b9c-DO-NOT-LEAK"
PROMPTS = yaml.safe_load(LOVE_STORY.read_text())["steps"][2]["params"]["prompts"]


@pytest.fixture
def fal(tmp_path):
    with FalServer(tmp_path / "fal", key=KEY) as server:
        server.job_seconds = 0.6
        yield server
        assert not server.errors


def environment(tmp_path: Path, fal: FalServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FAL_"))}
    env.update(fal.env())
    env["PREFECT_HOME"] = str(tmp_path / ".prefect")
    env["STORYBOARD_CACHE_DIR"] = str(tmp_path / "cache")
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def run_cli(tmp_path: Path, fal: FalServer, pipeline: Path, out: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLI), str(pipeline), "--output-dir", str(out), *args],
        cwd=tmp_path, env=environment(tmp_path, fal, **extra), capture_output=True, text=True, timeout=300,
    )


def love_story(tmp_path: Path, *, retry_delay: float = 0, **params) -> Path:
    """The love story as written, with fast retries and any step params overridden."""
    spec = yaml.safe_load(LOVE_STORY.read_text())
    spec["steps"][2]["retry_delay_seconds"] = retry_delay
    spec["steps"][2]["params"].update(params)
    path = tmp_path / "love_story.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def clips(manifest: dict) -> list[dict]:
    return manifest["steps"][2]["outputs"]


def assert_no_key_anywhere(tmp_path: Path, *outputs: str) -> None:
    """The key is in no output, no log line, no manifest, no Prefect database or result file."""
    for text in outputs:
        assert KEY not in text
    secret = KEY.encode()
    for path in tmp_path.rglob("*"):
        if path.is_file() and "fal" not in path.relative_to(tmp_path).parts[:1]:
            assert secret not in path.read_bytes(), path


def test_love_story_runs_through_fal_client_with_every_clip_in_its_slot(tmp_path, fal):
    fal.job_seconds = 2.0  # long enough that the four clips overlap on a busy machine
    out = tmp_path / "love"
    result = run_cli(tmp_path, fal, LOVE_STORY, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr

    manifest = manifest_of(out)
    assert manifest["status"] == "completed"
    by_prompt = {s.prompt: s for s in fal.submissions}
    for n, clip in enumerate(clips(manifest), start=1):
        assert (clip["index"], clip["status"], clip["prompt"]) == (n, "completed", PROMPTS[n - 1])
        # The request id fal gave for this panel's prompt, so a user can find the job on fal's side.
        assert clip["request_id"] == by_prompt[PROMPTS[n - 1]].request_id
        assert clip["cost_usd"] == pytest.approx(0.35) and clip["cached"] is False
        info = probe_clip(out / clip["path"])
        assert (info.codec, info.frames) == ("h264", 120)
        # The server animated the image it was sent: the clip starts on this panel, not another.
        frame = np.asarray(first_frame(out / clip["path"]).convert("RGB"), dtype=float)
        diffs = [
            np.abs(frame - np.asarray(Image.open(out / "split_scenes" / f"scene_{m}.png").convert("RGB").resize(frame.shape[1::-1]), dtype=float)).mean()
            for m in range(1, 5)
        ]
        assert int(np.argmin(diffs)) == n - 1
    assert manifest["steps"][0]["outputs"][0]["request_id"] == by_prompt[yaml.safe_load(LOVE_STORY.read_text())["prompt"]].request_id
    assert manifest["total_cost_usd"] == pytest.approx(0.15 + 4 * 0.35)

    # The endpoints of the registry, the panel as a data URI under Kling's own argument name.
    kling = [s for s in fal.submissions if s.endpoint == "fal-ai/kling-video/v2.6/pro/image-to-video"]
    assert len(kling) == 4 and len(fal.submissions) == 5
    assert all(s.arguments["start_image_url"].startswith("data:image/png;base64,") for s in kling)
    assert all(s.arguments["duration"] == "5" and s.arguments["generate_audio"] is False for s in kling)
    # max_workers 4: the server saw 4 clips in flight at once, never more.
    assert fal.max_in_flight == 4
    assert all(r.had_valid_auth for r in fal.requests)
    assert_no_key_anywhere(tmp_path, result.stdout, result.stderr)


def test_transient_faults_are_retried_and_rejections_are_not(tmp_path, fal):
    fal.fault(PROMPTS[0], "429")  # fal-client itself retries a 429
    fal.fault(PROMPTS[1], "500", None)  # our task retries a 500
    fal.fault(PROMPTS[2], "drop", None)  # a dropped connection
    fal.fault(PROMPTS[3], "422:duration must be one of 5, 10")
    out = tmp_path / "love"
    result = run_cli(tmp_path, fal, love_story(tmp_path), out)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr

    outputs = clips(manifest_of(out))
    assert [o["status"] for o in outputs] == ["completed", "completed", "completed", "failed"]
    assert outputs[1]["attempts"] == 2
    assert "HTTP 422" in outputs[3]["error"] and "duration must be one of 5, 10" in outputs[3]["error"]
    assert outputs[3]["attempts"] == 1 and outputs[3]["cost_usd"] in (0, None)
    assert fal.submissions_for(PROMPTS[3]) == 0  # rejected at submit: never accepted, never retried
    assert [fal.submissions_for(p) for p in PROMPTS[:3]] == [1, 1, 1]
    # The 429, the 500 and the dropped connection reached the server, and were got through.
    assert sorted(r.fault for r in fal.rejections) == ["422:duration must be one of 5, 10", "429", "500", "drop"]
    for o in outputs[:3]:
        assert probe_clip(out / o["path"]).frames == 120
    assert not (out / "animate_parallel" / "scene_4.mp4").exists()
    assert_no_key_anywhere(tmp_path, result.stdout, result.stderr)


def test_a_request_that_never_finishes_is_cancelled_after_the_timeout(tmp_path, fal):
    fal.fault(PROMPTS[2], "never")
    out = tmp_path / "love"
    started = time.monotonic()
    result = run_cli(tmp_path, fal, love_story(tmp_path, timeout=10), out)
    assert result.returncode == 1, result.stdout + result.stderr
    outputs = clips(manifest_of(out))
    assert [o["status"] for o in outputs] == ["completed", "completed", "failed", "completed"]
    assert "did not finish within 10 s" in outputs[2]["error"] and "cancelled" in outputs[2]["error"]
    assert outputs[2]["request_id"] in fal.cancelled
    assert fal.submissions_for(PROMPTS[2]) == 1  # a stuck request is not paid for again
    assert time.monotonic() - started < 120


def test_slow_and_wrong_downloads(tmp_path, fal):
    fal.fault(PROMPTS[0], "slow-download:2")
    fal.fault(PROMPTS[1], "bad-content-type")
    fal.fault(PROMPTS[2], "500", "500", "500")  # more 500s than the step's 2 retries
    out = tmp_path / "love"
    result = run_cli(tmp_path, fal, love_story(tmp_path), out)
    assert result.returncode == 1
    outputs = clips(manifest_of(out))
    assert [o["status"] for o in outputs] == ["completed", "failed", "failed", "completed"]
    assert probe_clip(out / outputs[0]["path"]).frames == 120
    assert "content type" in outputs[1]["error"]
    assert outputs[2]["attempts"] == 3 and "HTTP 500" in outputs[2]["error"]
    # Each failed attempt is one line for a person, not a traceback.
    assert result.stdout.count("scene_3 attempt") == 3 and "Traceback" not in result.stdout + result.stderr
    assert not (out / "animate_parallel" / "scene_2.mp4").exists()
    assert not [p for p in out.rglob("*") if ".partial" in p.name]


def test_a_wrong_key_fails_clearly_without_showing_it(tmp_path, fal):
    out = tmp_path / "love"
    result = run_cli(tmp_path, fal, LOVE_STORY, out, FAL_KEY="wrong-key-0000")
    assert result.returncode == 1
    storyboard = manifest_of(out)["steps"][0]["outputs"][0]
    assert storyboard["status"] == "failed" and "HTTP 401" in storyboard["error"] and "FAL_KEY" in storyboard["error"]
    assert fal.submissions_for("") == 0
    assert "wrong-key-0000" not in result.stdout + result.stderr + (out / "manifest.json").read_text()


# --- never pay twice ---------------------------------------------------------------------------


def test_the_same_pipeline_run_twice_submits_each_clip_once(tmp_path, fal):
    pipeline = love_story(tmp_path)
    first = run_cli(tmp_path, fal, pipeline, tmp_path / "one")
    assert first.returncode == 0, first.stderr
    # Another output_dir, the same requests: everything comes from the project's store.
    second = run_cli(tmp_path, fal, pipeline, tmp_path / "two")
    assert second.returncode == 0, second.stderr
    assert len(fal.submissions) == 5
    manifest = manifest_of(tmp_path / "two")
    assert [o["cached"] for o in clips(manifest)] == [True] * 4
    assert manifest["total_cost_usd"] == 0
    for o in clips(manifest):
        assert probe_clip(tmp_path / "two" / o["path"]).frames == 120


def test_rerun_after_partial_failure_pays_only_for_what_failed(tmp_path, fal):
    fal.fault(PROMPTS[3], "422:content policy")
    pipeline = love_story(tmp_path)
    out = tmp_path / "love"
    assert run_cli(tmp_path, fal, pipeline, out).returncode == 1
    # The provider accepts it now (the fault was for the first attempt only).
    rerun = run_cli(tmp_path, fal, pipeline, out)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert [fal.submissions_for(p) for p in PROMPTS] == [1, 1, 1, 1]
    outputs = clips(manifest_of(out))
    assert [o["cached"] for o in outputs] == [True, True, True, False]
    assert manifest_of(out)["total_cost_usd"] == pytest.approx(0.35)

    # A changed prompt for panel 3 regenerates panel 3 only.
    spec = yaml.safe_load(pipeline.read_text())
    spec["steps"][2]["params"]["prompts"][2] = "Kitchen warmth, slow dolly in"
    pipeline.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert run_cli(tmp_path, fal, pipeline, out).returncode == 0
    assert fal.submissions_for("slow dolly in") == 1
    assert sum(fal.submissions_for(p) for p in PROMPTS) == 4 and len(fal.submissions) == 6

    # A deleted clip is regenerated, not returned broken; the others stay cached.
    for path in (tmp_path / "cache" / "outputs").glob("*.mp4"):
        if path.read_bytes() == (out / "animate_parallel" / "scene_1.mp4").read_bytes():
            path.unlink()
    (out / "animate_parallel" / "scene_1.mp4").unlink()
    assert run_cli(tmp_path, fal, pipeline, out).returncode == 0
    assert fal.submissions_for(PROMPTS[0]) == 2 and len(fal.submissions) == 7
    assert probe_clip(out / "animate_parallel" / "scene_1.mp4").frames == 120


def test_after_sigkill_mid_run_the_rerun_submits_only_the_unfinished_clips(tmp_path, fal):
    fal.job_seconds_for = {PROMPTS[2]: 60.0, PROMPTS[3]: 60.0}
    pipeline = love_story(tmp_path)
    out = tmp_path / "love"
    process = subprocess.Popen(
        [sys.executable, str(CLI), str(pipeline), "--output-dir", str(out)],
        cwd=tmp_path, env=environment(tmp_path, fal), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            manifest = out / "manifest.json"
            if manifest.exists():
                done = [o["status"] for o in clips(json.loads(manifest.read_text()))]
                if done.count("completed") == 2 and fal.submissions_for(PROMPTS[2]) == 1:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the first two clips never finished")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    # What a kill leaves: a valid manifest, no half-written file under a final name.
    killed = manifest_of(out)
    assert [o["status"] for o in clips(killed)][:2] == ["completed", "completed"]
    for path in (out / "animate_parallel").glob("*.mp4"):
        assert probe_clip(path).frames == 120

    fal.job_seconds_for = {}
    rerun = run_cli(tmp_path, fal, pipeline, out)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert [fal.submissions_for(p) for p in PROMPTS] == [1, 1, 2, 2]
    manifest = manifest_of(out)
    assert manifest["status"] == "completed"
    assert [o["cached"] for o in clips(manifest)] == [True, True, False, False]
    for o in clips(manifest):
        assert probe_clip(out / o["path"]).frames == 120


def total_line(plan: str) -> str:
    return next(line for line in plan.splitlines() if "estimated total" in line).rstrip()


def test_dry_run_shows_cost_and_cache_and_writes_nothing(tmp_path, fal):
    pipeline = love_story(tmp_path)
    before = run_cli(tmp_path, fal, pipeline, tmp_path / "plan", "--dry-run")
    assert before.returncode == 0 and total_line(before.stdout).endswith("1.55")
    assert not (tmp_path / "plan").exists() and not fal.requests
    assert run_cli(tmp_path, fal, pipeline, tmp_path / "run").returncode == 0
    after = run_cli(tmp_path, fal, pipeline, tmp_path / "plan", "--dry-run")
    assert total_line(after.stdout).endswith("0.00") and not (tmp_path / "plan").exists()
    refused = run_cli(tmp_path, fal, pipeline, tmp_path / "capped", "--fresh", "--max-cost", "1")
    assert refused.returncode == 2 and "1.55" in refused.stderr and "1.00" in refused.stderr
    assert not (tmp_path / "capped").exists() and len(fal.submissions) == 5
