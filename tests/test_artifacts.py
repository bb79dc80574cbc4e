"""The run's artifacts: the panel table, the summary and the progress bar, on a real Prefect server;
a provider key never reaches one, and an artifact that cannot be written never fails the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from storyboard_core.engines import PermanentError
from storyboard_core.engines.simulated import SimulatedEngine
from tasks import artifacts
from tests.test_flow import make_pipeline, prompts, run

pytestmark = pytest.mark.usefixtures("prefect_api")

FAKE_KEY = "0f3c9a1e-77b2-4c1d:8d2e61f0a9b34c7e95d1"


def run_artifacts(flow_run_id: UUID) -> dict[str, Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.type: a for a in found}


def test_failed_panel_is_in_the_table_and_summary_with_its_reason_and_no_key(tmp_path, use_engine, monkeypatch):
    monkeypatch.setenv("FAL_KEY", FAKE_KEY)
    leak = f"content policy: rejected (request sent with Authorization: Key {FAKE_KEY})"
    engine = SimulatedEngine(latency=0.05, faults={"panel 2": [PermanentError(leak)]})
    path = make_pipeline(tmp_path, grid="1x3", parallel=True, prompts=prompts(3))
    state, _ = run(path, use_engine, engine)
    assert state.is_failed()

    found = run_artifacts(state.state_details.flow_run_id)
    assert set(found) == {"progress", "table", "markdown"}
    assert found["progress"].data == 100
    rows = json.loads(found["table"].data) if isinstance(found["table"].data, str) else found["table"].data
    assert [tuple(row) for row in rows] == [artifacts.TABLE_COLUMNS] * 3
    assert [(r["index"], r["prompt"], r["status"]) for r in rows] == [
        (1, "motion for panel 1", "completed"),
        (2, "motion for panel 2", "failed"),
        (3, "motion for panel 3", "completed"),
    ]
    assert rows[1]["error"].startswith("content policy: rejected") and rows[1]["path"] == ""
    assert rows[0]["path"] == str((tmp_path / "out" / "animate" / "scene_1.mp4").resolve())
    summary = found["markdown"].data
    assert "flow_test: failed" in summary and "**2 of 3**" in summary
    assert "**animate[scene_2]** after 1 attempt: content policy: rejected" in summary
    assert str((tmp_path / "out").resolve()) in summary

    everything = json.dumps([a.model_dump(mode="json") for a in found.values()])
    assert "[redacted]" in everything
    assert FAKE_KEY not in everything and "8d2e61f0a9b34c7e95d1" not in everything


def test_an_artifact_that_cannot_be_written_never_fails_the_run(tmp_path, use_engine, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("the API refused the artifact")

    for name in ("create_table_artifact", "create_markdown_artifact", "create_progress_artifact", "update_progress_artifact"):
        monkeypatch.setattr(artifacts, name, refuse)
    path = make_pipeline(tmp_path, grid="1x2", parallel=True, prompt="drift")
    state, manifest = run(path, use_engine, SimulatedEngine())
    assert state.is_completed() and manifest["status"] == "completed"
    assert run_artifacts(state.state_details.flow_run_id) == {}


def test_summary_and_rows_from_a_manifest(tmp_path: Path):
    from storyboard_core.manifest import Manifest, Output, StepRecord

    manifest = Manifest(
        tmp_path / "manifest.json",
        "my story",
        [
            StepRecord("board", "text_to_image", "nano_banana_pro", "completed", [Output(1, "storyboard", "completed", "board/storyboard.png", cost_usd=0.15)]),
            StepRecord(
                "animate", "image_to_video", "kling_2_6_pro", "failed",
                [Output(1, "scene_1", "completed", "animate/scene_1.mp4", "p1", attempts=2, seconds=-0.0, cost_usd=0.35),
                 Output(2, "scene_2", "failed", None, "p2", "timed out\nafter 900 s", attempts=3, seconds=901.5)],
            ),
        ],
    )
    manifest.status = "failed"
    rows = artifacts.panel_rows(manifest)
    assert [r["name"] for r in rows] == ["scene_1", "scene_2"]  # the last image_to_video step's panels
    assert rows[0]["seconds"] == 0.0 and str(rows[0]["seconds"]) == "0.0"
    summary = artifacts.summary_markdown(manifest)
    assert "total cost **$0.50**" in summary
    assert "**animate[scene_2]** after 3 attempts: timed out after 900 s" in summary
    assert artifacts.artifact_key("My Story!", "panels") == "storyboard-my-story-panels"
