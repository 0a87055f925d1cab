"""Database URLs and engines for the platform store: SQLite (embedded, `store.db` in the data
directory) or PostgreSQL, both through SQLAlchemy's asyncio layer (aiosqlite, asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

STORE_FILE_NAME = "store.db"

# Scheme (lower case) -> the async driver's scheme.
_ASYNC_SCHEMES = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}

# Applied to every new SQLite connection. WAL lets readers run beside the writer; FULL fsyncs
# every commit; SQLite enforces foreign keys only when asked, per connection.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)

PG_POOL_SIZE = 10
PG_MAX_OVERFLOW = 10


def database_url(raw: str | None, data_dir: Path) -> str:
    """The async SQLAlchemy URL for `CASHMARKETS_DATABASE_URL` (`raw`).

    Unset or empty: the embedded SQLite store, `<data_dir>/store.db` as an absolute path.
    `postgresql://` and `postgres://` become `postgresql+asyncpg://`, `sqlite://` becomes
    `sqlite+aiosqlite://`; a URL that already names one of those drivers is returned unchanged.
    """
    if raw is None or raw.strip() == "":
        path = (Path(data_dir).expanduser() / STORE_FILE_NAME).resolve()
        return f"sqlite+aiosqlite:///{path.as_posix()}"
    return _to_async(raw.strip())


def _to_async(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    target = _ASYNC_SCHEMES.get(scheme.lower()) if sep else None
    if target is None:
        raise ValueError(
            f"unsupported database URL {_redacted(url)!r}: expected postgresql://, postgres://, "
            "postgresql+asyncpg://, sqlite:/// or sqlite+aiosqlite:///"
        )
    return f"{target}://{rest}"


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.partition("://")[0] + "://…"


def is_postgres(url: str) -> bool:
    return url.partition("://")[0].lower().partition("+")[0] in ("postgresql", "postgres")


def is_sqlite(url: str) -> bool:
    return url.partition("://")[0].lower().partition("+")[0] == "sqlite"


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url` (sync spellings are accepted and mapped to the async driver).

    SQLite: the file's directory is created and `SQLITE_PRAGMAS` run on every new connection.
    PostgreSQL: a pool of 10 (+10 overflow) connections, checked before use. `kwargs` go to
    `create_async_engine` and win over these defaults.
    """
    url = _to_async(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _apply_sqlite_pragmas)
        return engine
    options: dict[str, Any] = {
        "pool_size": PG_POOL_SIZE,
        "max_overflow": PG_MAX_OVERFLOW,
        "pool_pre_ping": True,
    }
    if "poolclass" in kwargs:  # e.g. NullPool, which takes no size options
        options = {"pool_pre_ping": True}
    options.update(kwargs)
    return create_async_engine(url, **options)


def _apply_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()
