"""A private PostgreSQL cluster, and a TCP proxy that can cut one client off, for the fencing
tests (a database restart, a holder cut off from its store). The shared server on 127.0.0.1:5432
is never touched; only the cluster this module started is stopped (through `pg_ctl` on its own
data directory).

    with private_postgres() as pg:          # initdb + pg_ctl start as the postgres user
        url = pg.create_database("cm")      # postgresql+asyncpg://postgres@127.0.0.1:<port>/cm
        with TcpProxy(pg.port) as proxy:    # 127.0.0.1:<proxy.port> -> the cluster
            proxy.cut()                     # open connections closed, new ones refused
            pg.restart(down_s=1.0)          # pg_ctl stop -m immediate, then start again
            proxy.heal()
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tests.support.ports import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin")
    return found[-1]


def _as_postgres(args: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """PostgreSQL's tools refuse to run as root: run them as `postgres`."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout_s, check=False)


class PrivatePostgres:
    """initdb into a fresh directory owned by `postgres` (trust auth); listens on 127.0.0.1:port
    and on a socket in that directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="cm-fence-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        done = _as_postgres(
            [_pg_bin("initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "--no-sync"]
        )
        assert done.returncode == 0, done.stderr

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "pg.log")
        done = _as_postgres(
            [_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"]
        )
        assert done.returncode == 0, done.stdout + done.stderr + self.log()

    def kill(self) -> None:
        """`pg_ctl stop -m immediate`: every session ends at once, as in a crash."""
        if (self.data / "postmaster.pid").exists():
            done = _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
            assert done.returncode == 0, done.stdout + done.stderr

    def restart(self, down_s: float = 0.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()

    def create_database(self, name: str) -> str:
        psql = [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        done = _as_postgres([*psql, "-c", f'CREATE DATABASE "{name}"'])
        assert done.returncode == 0, done.stderr
        return self.url(name)

    def log(self) -> str:
        path = self.directory / "pg.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


class TcpProxy:
    """127.0.0.1:<port> forwarded to 127.0.0.1:<target>, on its own thread. `cut()` closes every
    forwarded connection and refuses new ones (a client cut off from the server) until `heal()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="tcp-proxy", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        assert self._started.wait(10), "proxy did not start"
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set(False), self._loop).result(10)

    def heal(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set(True), self._loop).result(10)

    async def _set(self, open_: bool) -> None:
        self._open = open_
        if not open_:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}
