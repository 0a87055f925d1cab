"""Configuration from `CASHMARKETS_*` environment variables (every one is listed in the README)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

ENV_PREFIX = "CASHMARKETS_"


class Settings(msgspec.Struct, kw_only=True):
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8000
    # Set to use a Redis Stream as the command log instead of the SQLite journal.
    redis_url: str | None = None
    redis_stream: str = "cashmarkets:log"
    snapshot_interval_s: float = 10.0
    snapshot_every_commands: int = 100_000
    trim_log: bool = False
    log_level: str = "info"
    # FULL fsyncs every batch (the no-loss promise); NORMAL survives a process kill but not a power cut.
    journal_synchronous: str = "FULL"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, overridden by CASHMARKETS_* variables, overridden by explicit arguments."""
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            value = env.get(ENV_PREFIX + field.name.upper())
            if value is not None and value != "":
                raw[field.name] = value
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SystemExit(f"bad configuration: {exc}") from exc

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.db"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store.db"
