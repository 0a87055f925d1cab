"""SIGKILL the engine while 16 clients create and close 1,000 trades, in both modes; see
`tests/e2e/crash_trading.py` for the story and what is checked."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.crash_trading import CRASH_ENV, run_crash_story
from tests.e2e.processes import Proc, distributed_cluster, free_port, wait_ready

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
    env = {**CRASH_ENV, "CASHMARKETS_PRICE_INTERVAL_MS": "100"}
    with distributed_cluster(tmp_path, pg_url, env, poller=True) as cluster:
        # Down for longer than the command timeout: waiting requests get 504 and are retried with
        # their keys, so the log holds some commands twice (the engine's dedup answers the repeat).
        figures = run_crash_story(
            cluster.urls,
            lambda: cluster.restart("engine", ["engine"], down_s=2.5),
            ([], {**os.environ, **cluster.env}),
        )
    print(figures)
    assert figures["kills"] == 2 and figures["retries"] > 0  # the kills did land mid-request
