"""The storyboard flow on a real Prefect server, with a simulated engine that counts what it sees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from flows.storyboard import storyboard
from storyboard_core.engines import PermanentError, TransientError
from storyboard_core.engines.simulated import SimulatedEngine

pytestmark = pytest.mark.usefixtures("prefect_api")


def make_pipeline(
    tmp_path: Path, *, grid: str = "2x2", retries: int | None = None, model: str = "local", **params
) -> Path:
    rows, cols = (int(x) for x in grid.split("x"))
    board = Image.new("RGB", (cols * 32, rows * 24))
    for n in range(rows * cols):
        r, c = divmod(n, cols)
        board.paste((40 * n % 256, 90, 200 - 10 * n), (c * 32, r * 24, (c + 1) * 32, (r + 1) * 24))
    board.save(tmp_path / "board.png")
    animate = {"name": "animate", "type": "image_to_video", "model": model, "params": {"duration": 1, **params}}
    if retries is not None:
        animate["retries"] = retries
    animate["retry_delay_seconds"] = 0
    spec = {
        "name": "flow_test",
        "input": "board.png",
        "steps": [
            {"name": "split", "type": "split_image", "model": "local", "params": {"grid": grid, "naming": "scene_{n}"}},
            animate,
        ],
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(path: Path, use_engine, engine: SimulatedEngine, **options):
    use_engine(engine)
    state = storyboard(
        pipeline=str(path), engine="simulated", cache_dir=str(path.parent / "cache"), return_state=True, **options
    )
    manifest = json.loads((path.parent / "out" / "manifest.json").read_text())
    return state, manifest


def clip_outputs(manifest: dict) -> list[dict]:
    return manifest["steps"][-1]["outputs"]


def prompts(n: int) -> list[str]:
    return [f"motion for panel {i}" for i in range(1, n + 1)]


def test_parallel_runs_max_workers_at_once(tmp_path, use_engine):
    engine = SimulatedEngine(latency=0.4)
    path = make_pipeline(tmp_path, grid="3x3", parallel=True, max_workers=3, prompts=prompts(9))
    state, manifest = run(path, use_engine, engine)
    assert state.is_completed()
    assert engine.max_in_flight == 3  # never more, and reached
    assert [o["status"] for o in clip_outputs(manifest)] == ["completed"] * 9


def test_parallel_default_is_four_workers(tmp_path, use_engine):
    engine = SimulatedEngine(latency=0.4)
    path = make_pipeline(tmp_path, grid="2x3", parallel=True, prompt="drift")
    state, _ = run(path, use_engine, engine)
    assert state.is_completed() and engine.max_in_flight == 4


def test_parallel_false_runs_one_at_a_time(tmp_path, use_engine):
    engine = SimulatedEngine(latency=0.1)
    path = make_pipeline(tmp_path, grid="2x2", parallel=False, max_workers=4, prompt="drift")
    state, _ = run(path, use_engine, engine)
    assert state.is_completed() and engine.max_in_flight == 1 and len(engine.calls) == 4
    spans = sorted((c.started, c.ended) for c in engine.calls)
    assert all(prev_end <= start for (_, prev_end), (start, _) in zip(spans, spans[1:]))


def test_each_panel_gets_its_own_prompt(tmp_path, use_engine):
    engine = SimulatedEngine()
    path = make_pipeline(tmp_path, grid="2x2", parallel=True, prompts=prompts(4))
    _, manifest = run(path, use_engine, engine)
    assert sorted(c.prompt for c in engine.calls) == prompts(4)
    outputs = clip_outputs(manifest)
    assert [o["prompt"] for o in outputs] == prompts(4)
    for o in outputs:  # each clip was made from its own panel, with its own prompt
        text = (tmp_path / "out" / o["path"]).read_text()
        assert text == f"simulated clip of scene_{o['index']}.png: {o['prompt']}\n"


def test_results_keep_panel_order_when_panels_finish_out_of_order(tmp_path, use_engine):
    # Panel 1 is the slowest, panel 4 the fastest: they finish in reverse order.
    engine = SimulatedEngine(latency=lambda prompt: 0.8 - 0.2 * int(prompt.rsplit(" ", 1)[1]))
    path = make_pipeline(tmp_path, grid="2x2", parallel=True, prompts=prompts(4))
    state, manifest = run(path, use_engine, engine)
    finish_order = [c.prompt for c in sorted(engine.calls, key=lambda c: c.ended)]
    assert finish_order == list(reversed(prompts(4)))
    outputs = clip_outputs(manifest)
    assert [o["index"] for o in outputs] == [1, 2, 3, 4]
    assert [o["path"] for o in outputs] == [f"animate/scene_{n}.mp4" for n in range(1, 5)]


def test_one_failed_panel_keeps_its_slot_and_the_others_complete(tmp_path, use_engine):
    engine = SimulatedEngine(latency=0.2, faults={"panel 2": [PermanentError("content policy: rejected")]})
    path = make_pipeline(tmp_path, grid="2x2", parallel=True, prompts=prompts(4))
    state, manifest = run(path, use_engine, engine)
    assert state.is_failed()
    outputs = clip_outputs(manifest)
    assert [o["status"] for o in outputs] == ["completed", "failed", "completed", "completed"]
    assert outputs[1]["error"] == "content policy: rejected" and outputs[1]["path"] is None
    assert engine.calls_for("motion for panel 2") == 1  # permanent: not retried
    assert manifest["status"] == "failed" and manifest["steps"][-1]["status"] == "failed"
    for o in outputs[0], outputs[2], outputs[3]:
        assert (tmp_path / "out" / o["path"]).is_file()


def test_transient_failure_retries_only_that_panel(tmp_path, use_engine):
    engine = SimulatedEngine(latency=0.1, faults={"panel 3": [TransientError("429 rate limited"), None]})
    path = make_pipeline(tmp_path, grid="2x2", parallel=True, prompts=prompts(4))
    state, manifest = run(path, use_engine, engine)
    assert state.is_completed()
    assert [engine.calls_for(p) for p in prompts(4)] == [1, 1, 2, 1]
    assert [o["attempts"] for o in clip_outputs(manifest)] == [1, 1, 2, 1]


def test_retries_run_out_after_the_steps_retry_count(tmp_path, use_engine, capsys):
    always = [TransientError("503 unavailable")] * 10
    engine = SimulatedEngine(faults={"panel 1": always})
    path = make_pipeline(tmp_path, grid="1x2", retries=1, parallel=True, prompts=prompts(2))
    state, manifest = run(path, use_engine, engine)
    assert state.is_failed()
    assert engine.calls_for("motion for panel 1") == 2  # first try + 1 retry
    first = clip_outputs(manifest)[0]
    assert first["status"] == "failed" and first["attempts"] == 2 and "503" in first["error"]
    # A person sees each failed attempt, the retry, and the end.
    lines = [line for line in capsys.readouterr().out.splitlines() if "scene_1" in line]
    events = [re.match(r"\S+ scene_1 (started(?: \(attempt \d\))?|attempt \d failed|FAILED)", line)[1] for line in lines]
    assert events == ["started", "attempt 1 failed", "started (attempt 2)", "attempt 2 failed", "FAILED"]


def test_default_retries_are_two(tmp_path, use_engine):
    engine = SimulatedEngine(faults={"panel 1": [TransientError("timeout")] * 10})
    path = make_pipeline(tmp_path, grid="1x1", prompts=prompts(1))
    state, _ = run(path, use_engine, engine)
    assert state.is_failed() and engine.calls_for("motion for panel 1") == 3


# --- resume: never pay twice ---------------------------------------------------------------


def test_second_run_reuses_every_clip(tmp_path, use_engine):
    path = make_pipeline(tmp_path, grid="2x2", parallel=True, prompts=prompts(4), model="kling_2_6_pro", duration="5")
    first_engine = SimulatedEngine()
    state, first = run(path, use_engine, first_engine)
    assert state.is_completed() and len(first_engine.calls) == 4
    assert [o["cost_usd"] for o in clip_outputs(first)] == [0.35] * 4 and first["total_cost_usd"] == 1.4
    again = SimulatedEngine()
    state, second = run(path, use_engine, again)
    assert state.is_completed() and again.calls == []
    outputs = clip_outputs(second)
    assert [o["cached"] for o in outputs] == [True] * 4 and second["total_cost_usd"] == 0
    for o in outputs:
        assert (tmp_path / "out" / o["path"]).read_text().endswith(f"{o['prompt']}\n")


def test_rerun_after_partial_failure_pays_only_for_the_failed_panel(tmp_path, use_engine):
    path = make_pipeline(tmp_path, grid="2x2", parallel=True, prompts=prompts(4))
    failing = SimulatedEngine(faults={"panel 2": [PermanentError("rejected")]})
    state, _ = run(path, use_engine, failing)
    assert state.is_failed()
    healthy = SimulatedEngine()
    state, manifest = run(path, use_engine, healthy)
    assert state.is_completed()
    assert [c.prompt for c in healthy.calls] == ["motion for panel 2"]
    assert [o["cached"] for o in clip_outputs(manifest)] == [True, False, True, True]


def test_changed_prompt_regenerates_only_that_panel(tmp_path, use_engine):
    run(make_pipeline(tmp_path, grid="2x2", parallel=True, prompts=prompts(4)), use_engine, SimulatedEngine())
    changed = prompts(4)
    changed[2] = "a new motion for panel 3"
    engine = SimulatedEngine()
    state, manifest = run(make_pipeline(tmp_path, grid="2x2", parallel=True, prompts=changed), use_engine, engine)
    assert state.is_completed() and [c.prompt for c in engine.calls] == ["a new motion for panel 3"]


def test_deleted_files_are_restored_or_regenerated(tmp_path, use_engine):
    path = make_pipeline(tmp_path, grid="1x2", parallel=True, prompts=prompts(2))
    _, manifest = run(path, use_engine, SimulatedEngine())
    # The output file deleted: put back from the store, no call.
    (tmp_path / "out" / clip_outputs(manifest)[0]["path"]).unlink()
    engine = SimulatedEngine()
    state, _ = run(path, use_engine, engine)
    assert state.is_completed() and engine.calls == []
    assert (tmp_path / "out" / clip_outputs(manifest)[0]["path"]).is_file()
    # The stored file deleted: the cache entry is stale, so the clip is made again, not returned broken.
    stored = sorted((tmp_path / "cache" / "outputs").glob("image-to-video-*.mp4"))
    assert len(stored) == 2
    stored[0].unlink()
    engine = SimulatedEngine()
    state, manifest = run(path, use_engine, engine)
    assert state.is_completed() and len(engine.calls) == 1
    assert all((tmp_path / "out" / o["path"]).is_file() for o in clip_outputs(manifest))


def test_another_output_dir_reuses_the_paid_clips(tmp_path, use_engine):
    path = make_pipeline(tmp_path, grid="1x2", parallel=True, prompts=prompts(2))
    run(path, use_engine, SimulatedEngine())
    engine = SimulatedEngine()
    use_engine(engine)
    other = tmp_path / "elsewhere"
    state = storyboard(pipeline=str(path), engine="simulated", cache_dir=str(tmp_path / "cache"),
                       output_dir=str(other), return_state=True)
    assert state.is_completed() and engine.calls == []
    assert sorted(p.name for p in (other / "animate").iterdir()) == ["scene_1.mp4", "scene_2.mp4"]


def test_fresh_makes_everything_again(tmp_path, use_engine):
    path = make_pipeline(tmp_path, grid="1x2", parallel=True, prompts=prompts(2))
    run(path, use_engine, SimulatedEngine())
    engine = SimulatedEngine()
    state, manifest = run(path, use_engine, engine, fresh=True)
    assert state.is_completed() and len(engine.calls) == 2
    assert [o["cached"] for o in clip_outputs(manifest)] == [False, False]


def test_budget_over_the_limit_is_refused_before_any_call(tmp_path, use_engine):
    path = make_pipeline(tmp_path, grid="2x2", parallel=True, prompts=prompts(4), model="kling_2_6_pro", duration="5")
    engine = SimulatedEngine()
    use_engine(engine)
    state = storyboard(pipeline=str(path), engine="simulated", cache_dir=str(tmp_path / "cache"), max_cost=1.0,
                       return_state=True)
    assert state.is_failed() and engine.calls == []
    assert "$1.40" in state.message and "$1.00" in state.message
    assert not (tmp_path / "out").exists()
