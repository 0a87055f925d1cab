"""Configuration from `CASHMARKETS_*` environment variables (every one is listed in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

ENV_PREFIX = "CASHMARKETS_"
COOKIE_SAMESITE_VALUES = ("lax", "strict")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str:
    """The RFC 6454 origin of an http(s) URL as browsers send it in `Origin`: lower-case scheme and
    host, the port only when not the scheme's default. ValueError for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{url!r} is not an http(s)://host[:port] URL")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")


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
    # The platform store: unset means SQLite `store.db` in the data directory; or postgresql://…
    database_url: str | None = None

    # Prices (`serve`, `poller`): a seeded random walk (default, no network needed), Backpack,
    # a recorded file (replay) or none. The interval is the walk's step and, for Backpack and
    # replays, the coalescing window: at most one tick per symbol per interval enters the log.
    price_source: str = "synthetic"
    price_seed: int = 1
    price_interval_ms: int = 250
    backpack_url: str = "wss://ws.backpack.exchange"
    price_replay_file: str | None = None
    price_replay_speed: float = 1.0  # 0 = as fast as possible
    # No update for this long: the symbol is stale (metric; the engine refuses trading on it).
    price_stale_after_s: float = 10.0
    # The engine's C hot paths (core/_native.c) when built; false: the pure-Python paths, which
    # give the same results (the reference the C is tested against), only slower.
    native: bool = True
    # Every process (`serve`, `api`, `engine`, `projector`, `poller`, `gateway`) serves Prometheus
    # metrics on this port when set (one port per process on a host).
    metrics_port: int | None = None
    # `/metrics` on the HTTP API's own port answers only `Authorization: Bearer <this>` (else, and
    # when unset, 404 as an unknown path): scrape CASHMARKETS_METRICS_PORT instead.
    metrics_token: str | None = None
    # Log records the projector writes per SQL transaction.
    projector_batch_records: int = 2_000
    # "One per deployment" roles (projector, chart scheduler) hold a lease this long, renewed every
    # fifth of it; a holder cut off from the store stops acting before it expires, and only then
    # may another process take over (docs/decisions/018). SQLite: a file lock, no expiry.
    lease_ttl_s: float = 5.0
    # Embedded mode: run the projector as a supervised child process (its SQL work then leaves this
    # process's GIL alone; docs/decisions/009) rather than as a task in the server's event loop.
    projector_process: bool = True

    # ---- WebSocket gateway (docs/websocket.md) ---------------------------------------------------
    # Unset: the HTTP port + 1; 0: any free port (reported by GET /api/v1/info).
    ws_port: int | None = None
    ws_subscriptions_per_connection: int = 64
    ws_commands_in_flight_per_connection: int = 16
    # Running at once over all of one user's connections to one gateway process (each process
    # counts its own); more wait their turn.
    ws_commands_in_flight_per_user: int = 32
    ws_message_bytes_max: int = 64 * 1024
    ws_connections_per_ip: int = 1_000
    ws_connections_per_user: int = 32
    ws_outbound_buffer_bytes_max: int = 4 * 1024 * 1024
    ws_ping_idle_s: float = 20.0
    ws_pong_timeout_s: float = 10.0

    # ---- HTTP API --------------------------------------------------------------------------------
    # HS256 secret for access tokens; unset in embedded mode: generated once into <data_dir>/jwt.secret.
    jwt_secret: str | None = None
    # 32 bytes as 64 hex digits: seals API-key secrets at rest; unset in embedded mode: generated
    # once into <data_dir>/apikey.key. Distributed: the same in every API process.
    apikey_master_key: str | None = None
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    # Where the server is reached by browsers: magic links and wallet sign-in messages name it.
    public_url: str | None = None
    smtp_url: str | None = None
    mail_from: str = "Cash Markets <no-reply@localhost>"
    magic_link_ttl_s: int = 900
    wallet_nonce_ttl_s: int = 300
    # Development money: on by default in embedded mode only.
    faucet: bool | None = None
    # The chart game's round scheduler; None: on in embedded mode (distributed: later, its own process).
    chartgame: bool | None = None
    # Beacons: "local" (a key in <data_dir>/beacon.key; no internet needed) or "drand" (relays below).
    beacon_source: str = "local"
    # The local beacon's key (64 hex digits); unset in embedded mode: generated into
    # <data_dir>/beacon.key. Distributed: the same for the scheduler and every API process.
    beacon_key: str | None = None
    drand_relays: str = "https://api.drand.sh,https://drand.cloudflare.com"
    # The chart game's chain adapter: "none", or "aptos" (the round_seed module in move/round_seed:
    # chain commitments and one on-chain seed per round; docs/fairness.md).
    chain_adapter: str = "none"
    aptos_node_url: str | None = None  # a fullnode's REST API, e.g. https://fullnode.testnet.aptoslabs.com/v1
    aptos_private_key: str | None = None  # the operator account's Ed25519 key (AIP-80 or hex)
    aptos_module_address: str | None = None  # where round_seed is published; default: the operator's
    # The spot market maker (runtime/marketmaker.py); None: on in embedded mode, off in distributed.
    spot_bot: bool | None = None
    spot_bot_interval_s: float = 0.5
    demo_balance: str = "5000"  # USDC credited at signup when the faucet is on (not counted below)
    # The most the faucet gives one user per asset and UTC day, in the asset's units; also the most
    # per request. An asset not listed is not given.
    faucet_daily_max: str = "USDC=10000,BTC=1,ETH=10,SOL=100"
    request_body_max_bytes: int = 64 * 1024
    command_timeout_s: float = 5.0
    # An Idempotency-Key whose request never answered (its API process died) is free again after
    # this: a running request's process renews its claim every third of it (store/idempotency.py).
    idempotency_lease_s: float = 3.0
    # /ready is 503 while the projection (what reads are served from) is further behind the
    # engine than this (runtime/projection_health.py defines the lag).
    ready_max_lag_ms: int = 5000
    rate_limit_ip_per_s: float = 100.0
    rate_limit_ip_burst: int = 200
    rate_limit_user_per_s: float = 50.0
    rate_limit_user_burst: int = 100
    # The session cookies (authToken, csrfToken). Secure: None = on when the public URL is https.
    cookie_secure: bool | None = None
    cookie_samesite: str = "lax"  # or "strict"
    # Origins (comma-separated, e.g. https://app.example.com) allowed to make cookie-authenticated
    # state changes (api/csrf.py); unset: the origin of the public URL only.
    allowed_origins: str | None = None
    # Password sign-ins per account: this many failures in a row are free, then each further one
    # locks the account's password sign-in for 1 s, doubling per failure up to the maximum (429
    # too_many_failed_signins with Retry-After, no hashing); a success resets.
    signin_failures_free: int = 5
    signin_lockout_max_s: float = 60.0
    # argon2 hashes at once per API process (each takes ~64 MiB and a core for a few hundred ms),
    # and callers that may wait for a turn; beyond that, 503 password_hashing_busy.
    password_hashes_concurrent: int = 1
    password_hashes_waiting_max: int = 16
    # Proxies whose X-Forwarded-For is believed (comma-separated IPs, or "*"): per-IP rate limits
    # must see the client, not the load balancer. They are not held to http_connections_per_ip.
    forwarded_allow_ips: str = "127.0.0.1"
    # Half-open connections (docs/decisions/017): a client has this long to send a request's
    # headers (from connecting; on a kept-alive connection, from the request's first byte), else
    # it is closed; the gateway's WebSocket upgrade request too. 0: no timeout.
    http_header_timeout_s: float = 10.0
    # Open HTTP connections per TCP peer address (the peer holds the descriptor, whatever
    # X-Forwarded-For says); more are closed at once with a 503. The gateway: connections per
    # address still before their upgrade. 0: no limit.
    http_connections_per_ip: int = 256
    # The soft RLIMIT_NOFILE every long-running process sets at start; unset: the hard limit.
    # 0: leave it as inherited.
    open_files_limit: int | None = None

    def __post_init__(self) -> None:
        # Refused at start (from_env turns these into "bad configuration: ..."), not at first use.
        self.cookie_samesite = self.cookie_samesite.strip().lower()
        if self.cookie_samesite not in COOKIE_SAMESITE_VALUES:
            wrong = self.cookie_samesite
            raise ValueError(f"CASHMARKETS_COOKIE_SAMESITE must be lax or strict, not {wrong!r}")
        try:
            self.origins  # noqa: B018 (parsed for the check)
        except ValueError as exc:
            name = "ALLOWED_ORIGINS" if self.allowed_origins is not None else "PUBLIC_URL"
            raise ValueError(f"CASHMARKETS_{name}: {exc}") from None

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
        # msgspec converts no str to Path: do it here, for the environment and for callers alike.
        if isinstance(raw.get("data_dir"), str):
            raw["data_dir"] = Path(str(raw["data_dir"]))
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SystemExit(f"bad configuration: {exc}") from exc

    @property
    def distributed(self) -> bool:
        return bool(self.database_url and self.redis_url)

    @property
    def faucet_enabled(self) -> bool:
        return (not self.distributed) if self.faucet is None else self.faucet

    @property
    def chartgame_enabled(self) -> bool:
        return (not self.distributed) if self.chartgame is None else self.chartgame

    @property
    def spot_bot_enabled(self) -> bool:
        return (not self.distributed) if self.spot_bot is None else self.spot_bot

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return urlsplit(self.base_url).scheme.lower() == "https"

    @property
    def origins(self) -> frozenset[str]:
        """The allowed origins, normalized (`origin_of`); default: the public URL's. ValueError for
        a malformed entry or public URL."""
        if self.allowed_origins is None:
            try:
                return frozenset([origin_of(self.base_url)])
            except ValueError:
                if self.public_url is not None:
                    raise
                return frozenset()  # e.g. HOST "::" and no public URL: only CSRF tokens will do
        found: set[str] = set()
        for entry in (e.strip() for e in self.allowed_origins.split(",")):
            if not entry:
                continue
            parts = urlsplit(entry)
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"{entry!r}: an origin is scheme://host[:port], without a path")
            found.add(origin_of(entry))
        if not found:
            raise ValueError("no origin given")
        return frozenset(found)

    @property
    def gateway_port(self) -> int:
        return self.port + 1 if self.ws_port is None else self.ws_port

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.db"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store.db"


def native_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """CASHMARKETS_NATIVE alone, parsed as Settings parses it: for code that builds engines without
    the whole Settings (tests, tools), which an unrelated bad variable must not stop."""
    env = os.environ if environ is None else environ
    name = ENV_PREFIX + "NATIVE"
    return Settings.from_env({name: env[name]} if name in env else {}).native
