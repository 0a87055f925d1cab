"""Black-box, distributed mode: `cashmarkets chartgame` schedules rounds through Redis; a player
trades over an API process during the live round; a second scheduler stands by until the lease is free."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import Cluster, Proc, distributed_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
CG = "/api/v1/chartgame"


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    with distributed_cluster(tmp_path, pg_url) as running:
        yield running


def test_the_scheduler_runs_rounds_through_redis(cluster: Cluster) -> None:
    env = {**cluster.env, "CASHMARKETS_DATA_DIR": str(cluster.tmp / "scheduler")}
    first = cluster.procs["chartgame"] = Proc(["chartgame"], env, cluster.tmp / "chartgame.log")
    second = cluster.procs["chartgame2"] = Proc(["chartgame"], env, cluster.tmp / "chartgame2.log")
    with httpx.Client(base_url=cluster.urls[0], timeout=15) as http:
        token = http.post(
            "/api/v1/signup", json={"email": "d@example.com", "password": "correct horse battery"}
        ).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        opened = None
        while time.monotonic() < deadline:
            assert first.alive() and second.alive(), first.output() + second.output()
            r = http.post(
                f"{CG}/positions",
                json={"game": "btc-30s", "side": "long", "stake": "10", "leverage": 2},
                headers=h,
            )
            if r.status_code == 200:
                opened = r.json()
                break
            assert r.json()["code"] == "round_not_open", r.text
            time.sleep(0.5)
        assert opened is not None, first.output() + second.output()
        time.sleep(1.0)
        closed = http.post(f"{CG}/positions/{opened['positionId']}/close", headers=h)
        assert closed.status_code == 200 and closed.json()["status"] == "closed"
        with httpx.Client(base_url=cluster.urls[1], timeout=15) as other:
            while time.monotonic() < deadline:
                rounds = other.get(f"{CG}/games/btc-30s/rounds").json()["rounds"]
                if rounds and rounds[0]["candles"] >= 20:
                    break
                time.sleep(0.5)
            assert rounds and rounds[0]["status"] in ("open", "settled") and rounds[0]["candles"] >= 20
    # One scheduler runs; the other stands by (the lease is held).
    running = [p for p in (first, second) if "chart scheduler running" in p.output()]
    waiting = [p for p in (first, second) if "waiting for another holder of the lease" in p.output()]
    assert len(running) == 1 and len(waiting) == 1 and running[0] is not waiting[0]
    assert running[0].stop() == 0, running[0].output()
