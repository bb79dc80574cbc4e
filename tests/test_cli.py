"""The command line as a person runs it: `python flows/storyboard.py ...` in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from storyboard_core.media import first_frame, probe_clip

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "flows" / "storyboard.py"
LOVE_STORY = ROOT / "input/pipelines/storyboard/love_story_parallel_test.yaml"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "FAL_KEY"}
    environment["PREFECT_HOME"] = str(cwd / ".prefect")
    environment["STORYBOARD_CACHE_DIR"] = str(cwd / "cache")
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(CLI), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "database is locked" not in output, output


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    result = cli(str(LOVE_STORY), "--dry-run", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for fragment in ("generate_storyboard", "split_scenes", "animate_parallel", "kling_2_6_pro", "in parallel, 4 at a time"):
        assert fragment in result.stdout
    assert not (tmp_path / "out").exists()
    assert_clean(result)


def test_invalid_pipeline_exits_2_with_the_problem_and_writes_nothing(tmp_path):
    spec = yaml.safe_load(LOVE_STORY.read_text())
    spec["steps"][2]["params"]["max_workers"] = 0
    spec["steps"][1]["type"] = "cut_image"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    result = cli(str(bad), "--offline", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert f'{bad}: step 2 "split_scenes": field type' in result.stderr
    assert f'{bad}: step 3 "animate_parallel": field params.max_workers' in result.stderr
    assert not (tmp_path / "out").exists()
    assert_clean(result)


def test_bad_arguments_exit_2(tmp_path):
    assert cli("--no-such-flag", cwd=tmp_path).returncode == 2
    missing = cli(str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert missing.returncode == 2 and "missing.yaml" in missing.stderr
    assert_clean(missing)


def test_fal_models_without_a_key_exit_2_naming_the_variable(tmp_path):
    result = cli(str(LOVE_STORY), "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert "FAL_KEY" in result.stderr and "--offline" in result.stderr
    assert not (tmp_path / "out").exists()
    assert_clean(result)


def test_demo_runs_offline_with_no_arguments(tmp_path):
    result = cli(cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    out = tmp_path / "output" / "demo_local"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    clips = manifest["steps"][-1]["outputs"]
    assert [c["path"] for c in clips] == [f"animate_parallel/scene_{n}.mp4" for n in range(1, 5)]
    for clip in clips:
        info = probe_clip(out / clip["path"])
        assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.frames == 72
    assert "4/4 done" in result.stdout


def test_love_story_offline_end_to_end(tmp_path):
    out = tmp_path / "love"
    result = cli(str(LOVE_STORY), "--offline", "--output-dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pipeline"] == "love_story_parallel_test" and manifest["status"] == "completed"
    assert [s["status"] for s in manifest["steps"]] == ["completed"] * 3
    clips = manifest["steps"][2]["outputs"]
    prompts = yaml.safe_load(LOVE_STORY.read_text())["steps"][2]["params"]["prompts"]
    assert [c["prompt"] for c in clips] == prompts
    for n, clip in enumerate(clips, start=1):
        assert clip["index"] == n and clip["status"] == "completed" and clip["attempts"] == 1
        path = out / clip["path"]
        info = probe_clip(path)
        assert (info.codec, info.pix_fmt, info.frames) == ("h264", "yuv420p", 120)
        assert info.width % 2 == 0 and info.height % 2 == 0
        # The clip's first frame is its own panel, not another one.
        frame = np.asarray(first_frame(path).convert("RGB"), dtype=float)
        diffs = []
        for m in range(1, 5):
            from PIL import Image

            panel = Image.open(out / "split_scenes" / f"scene_{m}.png").convert("RGB").resize(frame.shape[1::-1])
            diffs.append(np.abs(frame - np.asarray(panel, dtype=float)).mean())
        assert min(range(4), key=diffs.__getitem__) == n - 1 and diffs[n - 1] < 12
    # one line when each panel starts and ends, with n/N done
    lines = result.stdout.splitlines()
    assert sum("started" in line for line in lines) == 4
    assert [line.split()[-2] for line in lines if " done in " in line][-1] == "4/4"
    assert not list(out.rglob("*.partial*"))
