"""Start and stop real `cashmarkets` processes for black-box tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import redis

from tests.support.ports import free_port


class Proc:
    """A `cashmarkets …` subprocess whose output goes to a file (read it when a test fails)."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log: IO[Any] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cashmarkets.cli", *args],
            # The gateway on any free port: the HTTP port + 1 (its default) may be taken here.
            # No market maker: the stories count every deposit (a test may turn it on).
            env={
                **os.environ,
                "CASHMARKETS_WS_PORT": "0",
                "CASHMARKETS_SPOT_BOT": "0",
                "CASHMARKETS_CHARTGAME": "0",
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,  # e.g. resource limits, in the child before exec
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        if self.alive():
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._log.close()
        return code


def wait_ready(proc: Proc, base_url: str, timeout_s: float = 60) -> None:
    """Until GET /ready answers 200 (or the process dies, or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.alive(), f"process exited early:\n{proc.output()}"
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base_url} not ready in {timeout_s} s:\n{proc.output()}")


REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Cluster:
    """Distributed mode on this machine: engine, projector, two APIs (and a poller when asked)."""

    urls: list[str]
    procs: dict[str, Proc]
    env: dict[str, str]
    tmp: Path
    retired: list[Proc] = field(default_factory=list)

    def restart(self, name: str, args: list[str], *, sig: int = signal.SIGKILL, down_s: float = 0.0) -> None:
        """Stop `name` with `sig`, wait `down_s`, start it again with `args`."""
        old = self.procs[name]
        old.stop(sig=sig)
        self.retired.append(old)
        time.sleep(down_s)
        self.procs[name] = Proc(args, self.env, self.tmp / f"{name}{len(self.retired)}.log")


@contextmanager
def distributed_cluster(
    tmp_path: Path, pg_url: str, extra_env: dict[str, str] | None = None, *, poller: bool = False
) -> Iterator[Cluster]:
    stream = f"cashmarkets:test:{uuid.uuid4().hex}"
    env = {
        "CASHMARKETS_DATABASE_URL": pg_url,
        "CASHMARKETS_REDIS_URL": REDIS_URL,
        "CASHMARKETS_REDIS_STREAM": stream,
        "CASHMARKETS_JWT_SECRET": "test-secret-" + "x" * 40,
        "CASHMARKETS_APIKEY_MASTER_KEY": "ab" * 32,
        "CASHMARKETS_BEACON_KEY": "cd" * 32,
        "CASHMARKETS_FAUCET": "true",
        "CASHMARKETS_DATA_DIR": str(tmp_path / "engine"),
        "CASHMARKETS_SNAPSHOT_INTERVAL_S": "0.5",
        **(extra_env or {}),
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    procs: dict[str, Proc] = {}
    ports = [free_port(), free_port()]
    cluster = Cluster([f"http://127.0.0.1:{p}" for p in ports], procs, env, tmp_path)
    try:
        procs["engine"] = Proc(["engine"], env, tmp_path / "engine.log")
        procs["projector"] = Proc(["projector"], env, tmp_path / "projector.log")
        if poller:
            procs["poller"] = Proc(["poller"], env, tmp_path / "poller.log")
        for i, port in enumerate(ports):
            procs[f"api{i}"] = Proc(["api", "--port", str(port)], env, tmp_path / f"api{i}.log")
        for i, url in enumerate(cluster.urls):
            wait_ready(procs[f"api{i}"], url)
        yield cluster
    finally:
        for proc in [*procs.values(), *cluster.retired]:
            proc.stop()
        redis.Redis.from_url(REDIS_URL).delete(stream)
