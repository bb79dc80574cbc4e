"""A real Prefect server and worker on 127.0.0.1, started as subprocesses for tests.

    server = start_server(tmp / "prefect-home")        # `prefect server start`, waits for /api/health
    server.prefect("work-pool", "create", "pool", "--type", "process")
    worker = start_worker(server, "pool", cwd=ROOT)    # `prefect worker start --pool pool`
    ...
    stop(worker); server.stop()

The server gets its own PREFECT_HOME (so its own sqlite database) and binds 127.0.0.1 on a free port,
set with PREFECT_SERVER_API_HOST / PREFECT_SERVER_API_PORT (with `--port` the UI keeps calling :4200).
Every process runs in its own session: `stop` signals only the processes started here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def base_env(home: Path) -> dict[str, str]:
    """The environment of every Prefect process of one test server: its home, no telemetry, no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="INFO",
        PREFECT_CLI_COLORS="false",
        PREFECT_CLI_WRAP_LINES="false",
        NO_COLOR="1",
    )
    return env


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log: Path
    _file: IO[bytes] = field(repr=False)

    def output(self) -> str:
        if not self._file.closed:
            self._file.flush()
        return self.log.read_text(errors="replace")


def spawn(args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    file = log.open("wb")
    popen = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    return Process(popen, log, file)


def stop(process: Process, grace: float = 5.0) -> None:
    """SIGINT, SIGINT again, then SIGKILL: a worker ignores a single SIGTERM for 15 s and more."""
    popen = process.popen
    for sig in (signal.SIGINT, signal.SIGINT):
        if popen.poll() is not None:
            break
        _signal_group(popen, sig)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    if popen.poll() is None:
        _signal_group(popen, signal.SIGKILL)
        popen.wait(10)
    else:  # the leader is gone; its children (uvicorn, flow runs) may not be
        _signal_group(popen, signal.SIGKILL)
    process._file.close()


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)  # the session started for this process: only what it spawned
    except ProcessLookupError:
        pass


@dataclass
class PrefectServer:
    port: int
    home: Path
    process: Process
    started_in: float  # seconds from spawn to a healthy API

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a client or a worker of this server."""
        return {**base_env(self.home), "PREFECT_API_URL": self.api_url, **extra}

    def prefect(self, *args: str, cwd: Path | None = None, timeout: float = 120, **env: str) -> str:
        """Run a `prefect` CLI command against this server; returns its output, raises on failure."""
        done = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", *args],
            env=self.env(**env), cwd=cwd, capture_output=True, text=True, timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done.stdout + done.stderr

    def stop(self) -> None:
        stop(self.process)


def start_server(home: Path, *, timeout: float = 90) -> PrefectServer:
    """`prefect server start` on a free port of 127.0.0.1 with a fresh PREFECT_HOME; waits until healthy."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = base_env(home)
    env.update(PREFECT_SERVER_API_HOST=HOST, PREFECT_SERVER_API_PORT=str(port))
    started = time.monotonic()
    process = spawn([sys.executable, "-m", "prefect", "server", "start"], env, home / "server.log")
    server = PrefectServer(port, home, process, 0.0)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"prefect server exited {process.popen.returncode}:\n{process.output()}")
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                server.started_in = round(time.monotonic() - started, 1)
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"prefect server not healthy after {timeout} s:\n{process.output()}")


def start_worker(
    server: PrefectServer, pool: str, *, cwd: Path, log: Path, query_seconds: float = 1, **env: str
) -> Process:
    """`prefect worker start --pool POOL`, polling every `query_seconds` (default 10 s: most of a run's latency)."""
    worker_env = server.env(PREFECT_WORKER_QUERY_SECONDS=str(query_seconds), **env)
    args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    return spawn(args, worker_env, log, cwd=cwd)
