"""How close the flow's parallel panels come to the ideal, against a plain ThreadPoolExecutor.

A simulated engine sleeps L seconds per clip. For N = 4, 9, 16 panels and max_workers 1, 4, N it
prints the flow's wall time, the ideal ceil(N/W)·L, the efficiency (ideal / wall), the same work
through a plain ThreadPoolExecutor on the same engine, and the most clips seen in flight.
It also measures Prefect's fixed costs: the first run's server start, and a run's end with and
without flow-run heartbeats.

    python bench/parallel.py            # L = 2 s (takes ~3 minutes)
    python bench/parallel.py --latency 0.5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings  # noqa: E402

from flows.storyboard import storyboard  # noqa: E402
from storyboard_core.engines import ClipJob, register_engine  # noqa: E402
from storyboard_core.engines.simulated import SimulatedEngine  # noqa: E402
from storyboard_core.registry import lookup  # noqa: E402


def pipeline_file(folder: Path, panels: int, workers: int) -> Path:
    Image.new("RGB", (32 * panels, 24), "gray").save(folder / "board.png")
    spec = {
        "name": f"bench_{panels}_{workers}",
        "input": "board.png",
        "steps": [
            {"name": "split", "type": "split_image", "model": "local", "params": {"grid": f"1x{panels}" if panels <= 8 else f"{math.isqrt(panels)}x{math.isqrt(panels)}"}},
            {"name": "animate", "type": "image_to_video", "model": "local",
             # One prompt per panel, so that no two panels are the same request.
             "params": {"parallel": True, "max_workers": workers, "duration": 1,
                        "prompts": [f"drift {n}" for n in range(1, panels + 1)]}},
        ],
        "output_dir": str(folder / "out"),
    }
    path = folder / f"bench_{panels}_{workers}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def flow_wall(engine: SimulatedEngine, path: Path) -> float:
    register_engine("simulated", lambda: engine)
    start = time.perf_counter()
    # fresh: every clip is made (the output store would otherwise serve them from the last run);
    # its own store, so the project's is untouched; the progress lines are not the figures.
    with contextlib.redirect_stdout(io.StringIO()):
        state = storyboard(
            pipeline=str(path), engine="simulated", fresh=True, cache_dir=str(path.parent / "cache"), return_state=True
        )
    wall = time.perf_counter() - start
    assert state.is_completed(), state.message
    return wall


def executor_wall(engine: SimulatedEngine, panels: int, workers: int, folder: Path) -> float:
    model = lookup("image_to_video", "local")
    jobs = [ClipJob(image=folder / "board.png", prompt=f"drift {n}", duration=1) for n in range(1, panels + 1)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda ij: engine.image_to_video(model, ij[1], folder / "ref" / f"{ij[0]}.mp4"), enumerate(jobs)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per simulated clip (L)")
    parser.add_argument("--panels", type=int, nargs="+", default=[4, 9, 16])
    args = parser.parse_args()
    latency = args.latency

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        warm = pipeline_file(folder, 1, 1)
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            first = flow_wall(SimulatedEngine(), warm)
            no_heartbeat = min(flow_wall(SimulatedEngine(), warm) for _ in range(3))
        with_heartbeat = min(flow_wall(SimulatedEngine(), warm) for _ in range(3))
        print(f"first flow run in this process (starts Prefect's temporary server): {first:.2f} s")
        print(f"a one-panel run, heartbeats off: {no_heartbeat:.2f} s; heartbeats on (Prefect default): {with_heartbeat:.2f} s")
        print()
        print(f"L = {latency:.1f} s per clip")
        print(f"{'N':>3} {'W':>3} {'ideal s':>8} {'flow s':>8} {'eff':>6} {'executor s':>11} {'flow-exec':>10} {'peak':>5}")
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            for panels in args.panels:
                for workers in sorted({1, 4, panels}):
                    path = pipeline_file(folder, panels, workers)
                    engine = SimulatedEngine(latency=latency)
                    wall = flow_wall(engine, path)
                    reference = executor_wall(SimulatedEngine(latency=latency), panels, workers, folder)
                    ideal = math.ceil(panels / workers) * latency
                    print(
                        f"{panels:>3} {workers:>3} {ideal:>8.2f} {wall:>8.2f} {ideal / wall:>6.0%} "
                        f"{reference:>11.2f} {wall - reference:>+10.2f} {engine.max_in_flight:>5}"
                    )
                    assert engine.max_in_flight <= workers and len(engine.calls) == panels


if __name__ == "__main__":
    main()
