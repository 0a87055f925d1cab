"""Another user's latency while a flood of password sign-ins runs, against a real `cashmarkets
serve` process on loopback (started and stopped here, like `bench http`).

Two phases of `duration_s` each, one after the other on the same server:

- idle: one signed-in user sends `GET /api/v1/balance` back to back on one keep-alive connection,
  `gap_ms` apart; nothing else runs.
- flood: `flood` workers, each on its own connection, send `POST /api/v1/signin` with a wrong
  password back to back (kind `unknown`: a fresh unknown email each time, which no per-account
  throttle stops; kind `one_account`: always the same existing account). After `warmup_s` the
  same user's balance reads are measured again, for `duration_s`.

A worker that gets 429 or 503 waits for its `Retry-After` (at most `backoff_cap_s`; 0: retries at
once, as a hostile client would; the per-IP rate limit, raised out of the way here as in
`bench http`, is what bounds such a client in a deployment).

Reported: p50/p99/max of the balance reads in each phase, the sign-in answers by status, and CPU
(server process tree, this client, the host) as in `bench http`. The host's other load is not
controlled: read `host_cpu_busy_percent` of the idle phase beside the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from cashmarkets.benchmarks.http import (
    PASSWORD,
    REQUEST_TIMEOUT_S,
    CpuSample,
    KindStats,
    _cpu_report,
    running_servers,
)

FLOOD_KINDS = ("unknown", "one_account")


async def _measure_reads(client: Any, headers: dict[str, str], duration_s: float, gap_ms: float) -> KindStats:
    import httpx

    stats = KindStats()
    clock = time.perf_counter_ns
    end = clock() + int(duration_s * 1e9)
    while clock() < end:
        t0 = clock()
        try:
            r = await client.get("/api/v1/balance", headers=headers)
            status, ok = str(r.status_code), r.status_code == 200
        except httpx.HTTPError as exc:
            status, ok = type(exc).__name__, False
        stats.add(clock() - t0, status, ok)
        if gap_ms > 0:
            await asyncio.sleep(gap_ms / 1000)
    return stats


async def run(
    flood: int = 64,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    gap_ms: float = 10.0,
    kind: str = "unknown",
    backoff_cap_s: float = 1.0,
    extra_env: dict[str, str] | None = None,
) -> dict[str, object]:
    if kind not in FLOOD_KINDS:
        raise ValueError(f"kind is one of {FLOOD_KINDS}")
    if flood < 1 or duration_s <= 0 or warmup_s < 0 or gap_ms < 0 or backoff_cap_s < 0:
        raise ValueError("flood >= 1, duration_s > 0, warmup_s, gap_ms and backoff_cap_s >= 0")
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    token_ttl_s = max(900, int(2 * duration_s + warmup_s) + 600)
    async with running_servers("embedded", token_ttl_s, extra_env) as (urls, setup, servers):
        url = urls[0]
        tag = uuid.uuid4().hex[:12]
        async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
            me = await client.post(
                "/api/v1/signup", json={"email": f"reader-{tag}@example.com", "password": PASSWORD}
            )
            if me.status_code != 201:
                raise RuntimeError(f"signup failed: {me.status_code} {me.text[:300]}")
            headers = {"Authorization": f"Bearer {me.json()['token']}"}
            client.cookies.clear()  # bearer only: a cookie session would need an Origin (CSRF)
            victim = f"victim-{tag}@example.com"
            if kind == "one_account":
                made = await client.post("/api/v1/signup", json={"email": victim, "password": PASSWORD})
                if made.status_code != 201:
                    raise RuntimeError(f"signup failed: {made.status_code} {made.text[:300]}")
            client.cookies.clear()

            idle_start = CpuSample(servers)
            idle = await _measure_reads(client, headers, duration_s, gap_ms)
            idle_cpu = _cpu_report(idle_start, CpuSample(servers))

            stop = asyncio.Event()
            signins = KindStats()

            async def flooder(i: int) -> None:
                n = 0
                async with httpx.AsyncClient(
                    base_url=url, timeout=REQUEST_TIMEOUT_S, trust_env=False
                ) as flood_client:
                    while not stop.is_set():
                        n += 1
                        email = victim if kind == "one_account" else f"nobody-{tag}-{i}-{n}@example.com"
                        t0 = time.perf_counter_ns()
                        wait = 0.0
                        try:
                            r = await flood_client.post(
                                "/api/v1/signin", json={"email": email, "password": "wrong password!"}
                            )
                            status = str(r.status_code)
                            if r.status_code in (429, 503):
                                with contextlib.suppress(ValueError):
                                    wait = min(backoff_cap_s, float(r.headers.get("retry-after", "1")))
                        except httpx.HTTPError as exc:
                            status = type(exc).__name__
                        signins.add(time.perf_counter_ns() - t0, status, True)
                        flood_client.cookies.clear()
                        if wait > 0:
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), wait)

            workers = [asyncio.create_task(flooder(i)) for i in range(flood)]
            try:
                await asyncio.sleep(warmup_s)
                signins = KindStats()  # the warm-up's answers are not counted
                flood_start = CpuSample(servers)
                loaded = await _measure_reads(client, headers, duration_s, gap_ms)
                flood_cpu = _cpu_report(flood_start, CpuSample(servers))
                flood_signins = signins.report(duration_s)
            finally:
                stop.set()
                await asyncio.gather(*workers, return_exceptions=True)
        alive = {s.name: s.alive() for s in servers}
    idle_report = idle.report(duration_s)
    loaded_report = loaded.report(duration_s)
    return {
        "bench": "signin_flood",
        "mode": "embedded",
        "flood": flood,
        "flood_kind": kind,
        "backoff_cap_s": backoff_cap_s,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "gap_ms": gap_ms,
        "server": {**setup, "alive_at_end": alive, "env": extra_env or {}},
        "idle": {"balance": idle_report, **idle_cpu},
        "flooded": {
            "balance": loaded_report,
            "signin": {k: v for k, v in flood_signins.items() if k in ("requests_per_s", "status_counts")},
            "signin_p50_ms": flood_signins["p50_ms"],
            **flood_cpu,
        },
        "p50_ms_idle": idle_report["p50_ms"],
        "p99_ms_idle": idle_report["p99_ms"],
        "p50_ms_flooded": loaded_report["p50_ms"],
        "p99_ms_flooded": loaded_report["p99_ms"],
        "errors": idle.errors + loaded.errors,
        "requests_per_s": loaded_report["requests_per_s"],
    }
