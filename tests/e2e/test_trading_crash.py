"""SIGKILL the engine while 16 clients create and close 1,000 trades, in both modes; see
`tests/e2e/crash_trading.py` for the story and what is checked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.e2e.crash_trading import CRASH_ENV, run_crash_story
from tests.e2e.processes import Proc, free_port, wait_ready

REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = pytest.mark.slow


def test_embedded_server_killed_mid_trading(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    args = ["serve", "--data-dir", str(data_dir), "--port", str(port)]
    env = {**CRASH_ENV, "CASHMARKETS_PRICE_INTERVAL_MS": "100"}
    procs = [Proc(args, env, tmp_path / "serve0.log")]

    def kill_and_restart() -> None:
        procs[-1].stop(sig=signal.SIGKILL)
        procs.append(Proc(args, env, tmp_path / f"serve{len(procs)}.log"))
        wait_ready(procs[-1], url)

    try:
        wait_ready(procs[0], url)
        figures = run_crash_story([url], kill_and_restart, (["--data-dir", str(data_dir)], {**os.environ}))
    finally:
        for proc in procs:
            proc.stop()
    print(figures)
    assert figures["kills"] == 2 and figures["retries"] > 0  # the kills did land mid-request


@pytest.mark.postgres
@pytest.mark.redis
def test_distributed_engine_killed_mid_trading(tmp_path: Path, pg_url: str) -> None:
    stream = f"cashmarkets:test:{uuid.uuid4().hex}"
    env = {
        **CRASH_ENV,
        "CASHMARKETS_DATABASE_URL": pg_url,
        "CASHMARKETS_REDIS_URL": REDIS_URL,
        "CASHMARKETS_REDIS_STREAM": stream,
        "CASHMARKETS_JWT_SECRET": "test-secret-" + "x" * 40,
        "CASHMARKETS_FAUCET": "true",
        "CASHMARKETS_DATA_DIR": str(tmp_path / "engine"),
        "CASHMARKETS_PRICE_INTERVAL_MS": "100",
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs: dict[str, Proc] = {}
    engines: list[Proc] = []

    def kill_and_restart() -> None:
        engines[-1].stop(sig=signal.SIGKILL)
        # Down for longer than the command timeout: waiting requests get 504 and are retried with
        # their keys, so the log holds some commands twice (the engine's dedup answers the repeat).
        time.sleep(2.5)
        engines.append(Proc(["engine"], env, tmp_path / f"engine{len(engines)}.log"))

    try:
        engines.append(Proc(["engine"], env, tmp_path / "engine0.log"))
        procs["projector"] = Proc(["projector"], env, tmp_path / "projector.log")
        procs["poller"] = Proc(["poller"], env, tmp_path / "poller.log")
        for i, port in enumerate(ports):
            procs[f"api{i}"] = Proc(["api", "--port", str(port)], env, tmp_path / f"api{i}.log")
        for i, url in enumerate(urls):
            wait_ready(procs[f"api{i}"], url)
        figures = run_crash_story(urls, kill_and_restart, ([], {**os.environ, **env}))
    finally:
        for proc in [*procs.values(), *engines]:
            proc.stop()
        redis.Redis.from_url(REDIS_URL).delete(stream)
    print(figures)
    assert figures["kills"] == 2 and figures["retries"] > 0  # the kills did land mid-request
