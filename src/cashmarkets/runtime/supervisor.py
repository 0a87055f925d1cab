"""A `cashmarkets` subcommand run as a supervised child of this process (embedded mode runs its
projector this way: see docs/decisions/009-embedded-projector-process.md).

The child gets SIGTERM if this process dies, even by SIGKILL (Linux `PR_SET_PDEATHSIG`), so no
orphan outlives `serve`; it is restarted with a capped backoff if it exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Final

import structlog

log = structlog.get_logger("cashmarkets.supervisor")

RESTART_DELAY_MIN_S: Final = 0.5
RESTART_DELAY_MAX_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: this process gets SIGTERM when its parent dies (a no-op elsewhere)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """`python -m cashmarkets.cli <args>`, kept running until `stop()`."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._started = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def run(self) -> None:
        """Start the child and restart it whenever it exits, until `stop()`."""
        delay_s = RESTART_DELAY_MIN_S
        while not self._stopping:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cashmarkets.cli",
                *self.args,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
            self._started.set()
            log.info("child started", child=self.name, pid=self.process.pid, restarts=self.restarts)
            loop = asyncio.get_running_loop()
            started_at = loop.time()
            code = await self.process.wait()
            if self._stopping:
                return
            if loop.time() - started_at > RESTART_DELAY_MAX_S:
                delay_s = RESTART_DELAY_MIN_S  # it ran fine for a while: start over quickly
            log.error("child exited; restarting", child=self.name, code=code, in_s=delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(RESTART_DELAY_MAX_S, delay_s * 2)
            self.restarts += 1

    async def wait_started(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self._started.wait(), timeout_s)

    async def stop(self) -> int | None:
        """SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL. Returns the exit code."""
        self._stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("child did not stop; killing", child=self.name, pid=process.pid)
            process.kill()
            return await process.wait()
