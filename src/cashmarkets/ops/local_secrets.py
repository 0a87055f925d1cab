"""Keys a deployment must share (JWT, API-key sealing, the local beacon): configured, or in embedded
mode generated once into the data directory (0600) and read back at every start."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cashmarkets.ops.settings import Settings


def local_secret(
    settings: Settings, configured: str | None, filename: str, env: str, make: Callable[[], str]
) -> str:
    """`configured` if given; else (embedded only) the content of `filename`, made by `make`
    the first time. `env` names the variable in the error of a distributed process without it."""
    if configured:
        return configured
    if settings.distributed:
        # Every API process must use the same key: it has to be given.
        raise SystemExit(f"distributed mode needs {env} (the same in every API process)")
    path = Path(settings.data_dir) / filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(make())
    return path.read_text().strip()
