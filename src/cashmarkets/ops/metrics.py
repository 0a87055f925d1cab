"""Prometheus metrics, one registry per process.

cashmarkets_http_request_duration_seconds{route,method,status}   histogram
cashmarkets_commands_total{type,outcome}                          counter (submitted/applied/rejected)
cashmarkets_engine_apply_seconds                                  histogram, per batch, per command
cashmarkets_log_append_seconds                                    histogram, per batch
cashmarkets_projector_lag_commands                                gauge (engine seq - projected seq)
cashmarkets_ws_connections{codec}, cashmarkets_ws_subscriptions{topic}   gauges
cashmarkets_ws_messages_sent_total{codec}, _bytes_sent_total{codec}        counters
cashmarkets_ws_disconnects_total{reason}                          counter (slow_consumer, limits, ...)
cashmarkets_ws_fanout_seconds                                     histogram, per published message
cashmarkets_http_connections                                      gauge, open HTTP connections
cashmarkets_connections_closed_total{server,reason}               counter (per_ip_limit, header_timeout)
process_open_fds, process_max_fds, ...                            the process (Linux /proc)
cashmarkets_rate_limited_total{kind}                              counter (429 per IP / user)
cashmarkets_password_hashing_busy_total                           counter (503: hashing queue full)
cashmarkets_signin_locked_total                                   counter (429: account locked)
cashmarkets_dependency_up{dependency}                             gauge, 1/0: redis, postgres reachable
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_LATENCY = Histogram(
    "cashmarkets_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["route", "method", "status"],
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COMMANDS = Counter(
    "cashmarkets_commands_total", "Commands by type and outcome", ["type", "outcome"], registry=REGISTRY
)
APPLY_SECONDS = Histogram(
    "cashmarkets_engine_apply_seconds",
    "Engine apply time per command (batch time / batch size)",
    registry=REGISTRY,
    buckets=(1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3),
)
APPEND_SECONDS = Histogram(
    "cashmarkets_log_append_seconds",
    "Command log append time per batch (durable)",
    registry=REGISTRY,
    buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1),
)
PROJECTOR_LAG = Gauge(
    "cashmarkets_projector_lag_commands",
    "Commands applied by the engine but not yet projected",
    registry=REGISTRY,
)
WS_CONNECTIONS = Gauge(
    "cashmarkets_ws_connections", "Open WebSocket connections by codec", ["codec"], registry=REGISTRY
)
WS_SUBSCRIPTIONS = Gauge(
    "cashmarkets_ws_subscriptions", "WebSocket subscriptions by topic", ["topic"], registry=REGISTRY
)
WS_SENT = Counter("cashmarkets_ws_messages_sent_total", "WebSocket frames sent", ["codec"], registry=REGISTRY)
WS_SENT_BYTES = Counter(
    "cashmarkets_ws_bytes_sent_total", "WebSocket payload bytes sent", ["codec"], registry=REGISTRY
)
WS_DISCONNECTS = Counter(
    "cashmarkets_ws_disconnects_total",
    "WebSocket connections closed by the server",
    ["reason"],
    registry=REGISTRY,
)
WS_FANOUT_SECONDS = Histogram(
    "cashmarkets_ws_fanout_seconds",
    "Time to hand one message to every subscriber of its topic (messages with subscribers only)",
    registry=REGISTRY,
    buckets=(1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 7.5e-3, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1),
)
HTTP_CONNECTIONS = Gauge("cashmarkets_http_connections", "Open HTTP connections", registry=REGISTRY)
CONNECTIONS_CLOSED = Counter(
    "cashmarkets_connections_closed_total",
    "Connections closed before a request was read: over the per-address limit, or headers too slow",
    ["server", "reason"],
    registry=REGISTRY,
)
# Open descriptors against the limit (process_open_fds / process_max_fds), CPU, memory.
ProcessCollector(registry=REGISTRY)
RATE_LIMITED = Counter("cashmarkets_rate_limited_total", "Requests answered 429", ["kind"], registry=REGISTRY)
PASSWORD_HASHING_BUSY = Counter(
    "cashmarkets_password_hashing_busy_total",
    "Sign-ins and sign-ups answered 503: every password-hashing turn taken and the queue full",
    registry=REGISTRY,
)
SIGNIN_LOCKED = Counter(
    "cashmarkets_signin_locked_total",
    "Password sign-ins refused (429) while the account is locked after failures",
    registry=REGISTRY,
)
DEPENDENCY_UP = Gauge(
    "cashmarkets_dependency_up",
    "1 while this process reaches the dependency, 0 while it waits for it (ops/dependencies.py)",
    ["dependency"],
    registry=REGISTRY,
)


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve_port(host: str, port: int) -> Any:
    """Serve this process's registry at http://host:port/metrics from a daemon thread; returns the
    server (`stop_port` it)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server


def stop_port(server: Any) -> None:
    server.shutdown()
    server.server_close()
