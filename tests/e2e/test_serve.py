"""Black-box: `cashmarkets serve` on the embedded default answers /health and /ready, serves
/metrics on CASHMARKETS_METRICS_PORT only, stops cleanly on SIGTERM, and leaves a data directory
that verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.ports import free_port


def test_serve_answers_health_and_stops_cleanly(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cashmarkets.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        # port + 1 may be taken on this machine
        env={**os.environ, "CASHMARKETS_WS_PORT": "0", "CASHMARKETS_METRICS_PORT": str(metrics_port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).json()
        assert ready == {
            "ready": True,
            "checks": {"store": "ok", "engine": "ok", "projector": "ok"},
            "projectionLagMs": 0,
        }
        assert (data_dir / "journal.db").exists() and (data_dir / "store.db").exists()
        # Metrics on their own port, not on the public one (no CASHMARKETS_METRICS_TOKEN: 404).
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert scraped.status_code == 200 and "cashmarkets_projector_lag_commands" in scraped.text
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 404
        # The projector child does not try to take the same port too (it failed on it and then
        # hung, alive but projecting nothing): the welcome deposit reaches the store's ledger.
        signup = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/signup",
            json={"email": "serve@example.com", "password": "correct horse battery"},
            timeout=10,
        )
        assert signup.status_code == 201, signup.text
        auth = {"Authorization": f"Bearer {signup.json()['token']}"}
        deadline, ledger = time.monotonic() + 15, f"http://127.0.0.1:{port}/api/v1/ledger"
        while not httpx.get(ledger, headers=auth, timeout=5).json()["items"]:
            assert time.monotonic() < deadline, "the projector child projected nothing"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: -SIGTERM is a clean stop.
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
    output = proc.stdout.read().decode()  # type: ignore[union-attr]
    assert "Application shutdown complete" in output, output
    verify = subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", "replay", "--verify", "--data-dir", str(data_dir)],
        capture_output=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout


def test_users_set_role_makes_the_first_admin(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cashmarkets.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        env={**os.environ, "CASHMARKETS_WS_PORT": "0"},  # port + 1 may be taken on this machine
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not come up"
            time.sleep(0.1)
        credentials = {"email": "Boss@Example.com", "password": "correct horse battery"}
        assert httpx.post(f"{base}/api/v1/signup", json=credentials).status_code == 201
        cli = [sys.executable, "-m", "cashmarkets.cli", "users", "set-role"]
        missing = subprocess.run(
            [*cli, "nobody@example.com", "admin", "--data-dir", str(data_dir)], capture_output=True
        )
        assert missing.returncode == 1
        bad = subprocess.run(
            [*cli, "boss@example.com", "king", "--data-dir", str(data_dir)], capture_output=True
        )
        assert bad.returncode == 2
        done = subprocess.run(
            [*cli, "boss@example.com", "admin", "--data-dir", str(data_dir)], capture_output=True
        )
        assert done.returncode == 0, done.stderr
        token = httpx.post(f"{base}/api/v1/signin", json=credentials).json()["token"]
        listing = httpx.get(f"{base}/api/v1/admin/withdrawals", headers={"Authorization": f"Bearer {token}"})
        assert listing.status_code == 200 and listing.json() == {"items": [], "nextCursor": None}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
