"""The real thing on 127.0.0.1: `prefect server start`, the process pool, `prefect deploy` from this
checkout, a worker, `prefect deployment run`, the artifacts through the REST API, and the run's page in
the Prefect UI in headless Chromium.

One server for the module (its own PREFECT_HOME in the test's temp folder); the worker and the runs
use a temporary output store (STORYBOARD_CACHE_DIR), so nothing is shared with the project's cache.
"""

from __future__ import annotations

import contextvars
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.prefect_server import PrefectServer, Process, start_server, start_worker, stop

ROOT = Path(__file__).resolve().parent.parent
LOVE_STORY = ROOT / "input" / "pipelines" / "storyboard" / "love_story_parallel_test.yaml"
POOL = "storyboard-process"
CHROMIUM = "/usr/bin/chromium"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def small_pipeline(name: str) -> str:
    """A two-panel pipeline on the local engine: fast, and real PNGs and MP4s."""
    return yaml.safe_dump(
        {
            "name": name,
            "prompt": "two panels: a door opens, a bird flies",
            "steps": [
                {"name": "board", "type": "text_to_image", "model": "local", "params": {"aspect_ratio": "16:9"}},
                {"name": "split", "type": "split_image", "model": "local", "params": {"grid": "1x2", "naming": "shot_{n}"}},
                {
                    "name": "animate",
                    "type": "image_to_video",
                    "model": "local",
                    "params": {"parallel": True, "duration": 1, "prompts": ["the door opens", "the bird flies"]},
                },
            ],
        },
        sort_keys=False,
    )


# --- the server and the deployed runs ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = start_server(tmp_path_factory.mktemp("prefect-server") / "home")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Deployed:
    folder: Path
    love_story: str  # flow run ids
    from_text: str
    worker: Process


def flow_run_id(cli_output: str) -> str:
    found = re.search(r"UUID: ([0-9a-f-]{36})", cli_output)
    assert found, cli_output
    return found.group(1)


def api(server: PrefectServer, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.request(method, f"{server.api_url}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def wait_for(server: PrefectServer, run_id: str, timeout: float = 240) -> dict[str, Any]:
    """The flow run once it is in a final state."""
    deadline = time.monotonic() + timeout
    while True:
        run = api(server, "GET", f"/flow_runs/{run_id}")
        if run["state_type"] in FINAL or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


@pytest.fixture(scope="module")
def deployed(server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """Both deployments, made by the README's commands, each run once by one worker (at the same time)."""
    folder = tmp_path_factory.mktemp("deployed")
    server.prefect("work-pool", "create", POOL, "--type", "process")
    server.prefect("deploy", "--all", "--prefect-file", "deployments/prefect.yaml", cwd=ROOT)
    worker = start_worker(server, POOL, cwd=ROOT, log=folder / "worker.log", STORYBOARD_CACHE_DIR=str(folder / "cache"))
    try:
        love_story = flow_run_id(
            server.prefect(
                "deployment", "run", "storyboard/love-story-parallel",
                "--param", "offline=true", "--param", f"output_dir={folder / 'love'}", cwd=ROOT,
            )
        )
        from_text = flow_run_id(
            server.prefect(
                "deployment", "run", "storyboard/storyboard", "--params",
                json.dumps({"pipeline": small_pipeline("from_text"), "output_dir": str(folder / "text")}), cwd=ROOT,
            )
        )
        for run_id in (love_story, from_text):
            wait_for(server, run_id)
    finally:
        stop(worker)  # frees the CPU for Chromium; the runs are over
    yield Deployed(folder, love_story, from_text, worker)


def artifacts(server: PrefectServer, run_id: str) -> dict[str, dict[str, Any]]:
    """The run's artifacts by type (progress, table, markdown), with table data decoded."""
    found = api(server, "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    by_type = {a["type"]: a for a in found}
    assert len(by_type) == len(found), [a["type"] for a in found]  # one of each
    if "table" in by_type and isinstance(by_type["table"]["data"], str):
        by_type["table"]["data"] = json.loads(by_type["table"]["data"])
    return by_type


def task_run_names(server: PrefectServer, run_id: str) -> list[str]:
    runs = api(server, "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    return sorted(r["name"] for r in runs)


# --- deployments ------------------------------------------------------------------------------


def test_love_story_deployment_runs_on_a_worker_with_clips_and_artifacts(server: PrefectServer, deployed: Deployed):
    run = api(server, "GET", f"/flow_runs/{deployed.love_story}")
    assert run["state_type"] == "COMPLETED", deployed.worker.output()
    assert run["name"] == "love_story_parallel_test"
    assert api(server, "GET", f"/deployments/{run['deployment_id']}")["name"] == "love-story-parallel"

    out = deployed.folder / "love"
    clips = [out / "animate_parallel" / f"scene_{n}.mp4" for n in range(1, 5)]
    assert all(clip.is_file() and clip.stat().st_size > 1000 for clip in clips)
    assert json.loads((out / "manifest.json").read_text())["status"] == "completed"

    names = task_run_names(server, deployed.love_story)
    assert len(names) == 6  # storyboard, split, and one task run per panel, named after it
    assert names[:4] == [f"animate_parallel[scene_{n}]" for n in range(1, 5)]

    found = artifacts(server, deployed.love_story)
    assert set(found) == {"progress", "table", "markdown"}
    assert found["progress"]["data"] == 100
    rows = found["table"]["data"]
    prompts = yaml.safe_load(LOVE_STORY.read_text())["steps"][2]["params"]["prompts"]
    assert [row["index"] for row in rows] == [1, 2, 3, 4]
    assert [row["prompt"] for row in rows] == prompts
    assert [row["status"] for row in rows] == ["completed"] * 4
    assert [row["path"] for row in rows] == [str(clip.resolve()) for clip in clips]
    assert all(row["error"] == "" and row["cost_usd"] == 0 for row in rows)
    assert found["table"]["key"] == "storyboard-love-story-parallel-test-panels"
    summary = found["markdown"]["data"]
    assert "love_story_parallel_test: completed" in summary and "**4 of 4**" in summary
    assert str(out.resolve()) in summary and "$0.00" in summary


def test_generic_deployment_takes_the_pipeline_as_yaml_text(server: PrefectServer, deployed: Deployed):
    run = api(server, "GET", f"/flow_runs/{deployed.from_text}")
    assert run["state_type"] == "COMPLETED", deployed.worker.output()
    assert run["name"] == "from_text"
    assert api(server, "GET", f"/deployments/{run['deployment_id']}")["name"] == "storyboard"
    assert all((deployed.folder / "text" / "animate" / f"shot_{n}.mp4").is_file() for n in (1, 2))
    rows = artifacts(server, deployed.from_text)["table"]["data"]
    assert [(row["name"], row["prompt"], row["status"]) for row in rows] == [
        ("shot_1", "the door opens", "completed"),
        ("shot_2", "the bird flies", "completed"),
    ]


def test_deployments_point_at_this_checkout_and_take_the_documented_parameters(server: PrefectServer, deployed: Deployed):
    generic = api(server, "GET", "/deployments/name/storyboard/storyboard")
    love = api(server, "GET", "/deployments/name/storyboard/love-story-parallel")
    for deployment in (generic, love):
        assert deployment["work_pool_name"] == POOL
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
    assert love["parameters"] == {"pipeline": "input/pipelines/storyboard/love_story_parallel_test.yaml"}
    assert {"pipeline", "offline", "output_dir"} <= set(generic["parameter_openapi_schema"]["properties"])


# --- local runs -------------------------------------------------------------------------------


def test_command_line_run_reports_to_the_server_in_prefect_api_url(server: PrefectServer, tmp_path: Path):
    pipeline = tmp_path / "cli_run.yaml"
    pipeline.write_text(small_pipeline("cli_run"))
    done = subprocess.run(
        [sys.executable, "flows/storyboard.py", str(pipeline), "--output-dir", str(tmp_path / "out"),
         "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT, env=server.env(), capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = api(server, "POST", "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["cli_run"]}}})
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    assert task_run_names(server, runs[0]["id"])[:2] == ["animate[shot_1]", "animate[shot_2]"]
    assert [row["status"] for row in artifacts(server, runs[0]["id"])["table"]["data"]] == ["completed"] * 2


# --- the UI -----------------------------------------------------------------------------------


def test_ui_shows_the_run_its_panel_task_runs_and_the_table(server: PrefectServer, deployed: Deployed):
    from playwright.sync_api import sync_playwright

    screenshots = deployed.folder / "screenshots"
    screenshots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # No sandbox as root in a container; nothing else that would reach the network.
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            # A new context is a new, empty profile.
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{server.ui_url}/runs/flow-run/{deployed.love_story}")
            page.get_by_text("love_story_parallel_test", exact=True).first.wait_for()
            page.get_by_text("Completed", exact=True).first.wait_for()
            page.get_by_text("love-story-parallel", exact=True).first.wait_for()  # its deployment

            page.locator("li.p-tab", has_text="Task Runs").click()
            for n in range(1, 5):
                page.get_by_text(f"animate_parallel[scene_{n}]", exact=True).wait_for()
            page.screenshot(path=screenshots / "task-runs.png", full_page=True)

            page.locator("li.p-tab", has_text="Artifacts").click()
            page.get_by_text("animate_parallel: 4/4 panels finished").wait_for()
            page.get_by_text("storyboard-love-story-parallel-test-panels").click()
            prompts = yaml.safe_load(LOVE_STORY.read_text())["steps"][2]["params"]["prompts"]
            for prompt in prompts:  # the table itself, rendered row by row
                page.get_by_text(prompt, exact=True).wait_for()
            page.screenshot(path=screenshots / "table.png", full_page=True)
        finally:
            browser.close()
    assert (screenshots / "task-runs.png").stat().st_size > 10_000
    assert (screenshots / "table.png").stat().st_size > 10_000


# --- the provider limit across runs -----------------------------------------------------------


@pytest.mark.usefixtures("prefect_api")
def test_two_runs_never_exceed_the_provider_limit(tmp_path: Path, use_engine):
    """Two flow runs at once, 4 panels and max_workers 4 each, against a provider limit of 2."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from flows.storyboard import storyboard
    from storyboard_core.engines.simulated import SimulatedEngine
    from tasks.limits import limit_name

    class LimitedProvider(SimulatedEngine):
        name = "limited-provider"  # its own limit: other tests' simulated engine stays unlimited

    engine = use_engine(LimitedProvider(latency=0.5), name="limited-provider")
    limit = limit_name(engine.name)
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=2))

    states: dict[str, Any] = {}
    spans: dict[str, tuple[float, float]] = {}

    def run(label: str) -> None:
        spec = yaml.safe_load(small_pipeline(label))
        spec["steps"][1]["params"]["grid"] = "2x2"
        spec["steps"][2]["params"].update(max_workers=4, prompts=[f"{label} panel {n}" for n in range(1, 5)])
        path = tmp_path / f"{label}.yaml"
        path.write_text(yaml.safe_dump(spec))
        started = time.monotonic()
        states[label] = storyboard(
            pipeline=str(path), engine="limited-provider", output_dir=str(tmp_path / label),
            cache_dir=str(tmp_path / "cache"), return_state=True,
        )
        spans[label] = (started, time.monotonic())

    # Each thread runs in a copy of this context: the test server's settings, heartbeats off.
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(run, label)) for label in ("first", "second")]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(limit)

    assert all(state.is_completed() for state in states.values()) and len(states) == 2
    clip_calls = [call for call in engine.calls if call.prompt.startswith(("first panel", "second panel"))]
    assert len(clip_calls) == 8
    assert engine.max_in_flight == 2  # never more, and reached
    # Both runs were going at once, so without the limit up to 8 clips (4 each) would have been in flight.
    (start_1, end_1), (start_2, end_2) = spans["first"], spans["second"]
    assert start_2 < end_1 and start_1 < end_2


@pytest.mark.usefixtures("prefect_api")
def test_fal_limit_is_created_by_default_and_other_engines_only_honour_an_existing_one():
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.limits import find_limit, limit_for

    with get_client(sync_client=True) as client:
        for name in ("storyboard-fal", "storyboard-local"):
            try:
                client.delete_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                pass
        try:
            assert find_limit("fal") == "storyboard-fal"
            assert client.read_global_concurrency_limit_by_name("storyboard-fal").limit == 4
            client.update_global_concurrency_limit("storyboard-fal", GlobalConcurrencyLimitUpdate(limit=9))
            assert find_limit("fal") == "storyboard-fal"
            assert client.read_global_concurrency_limit_by_name("storyboard-fal").limit == 9  # the operator's size stays

            assert find_limit("local") is None
            with pytest.raises(ObjectNotFound):  # never created by a run
                client.read_global_concurrency_limit_by_name("storyboard-local")
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="storyboard-local", limit=2))
            assert find_limit("local") == "storyboard-local"

            # Without a server (a temporary one per process), no limit: its leases die with the process.
            with temporary_settings(updates={PREFECT_API_URL: None}):
                assert limit_for("fal") is None
        finally:
            client.delete_global_concurrency_limit_by_name("storyboard-fal")
            client.delete_global_concurrency_limit_by_name("storyboard-local")
