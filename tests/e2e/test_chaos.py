"""The chaos test of distributed mode (issue 16): one deployment on its own Redis and PostgreSQL,
8 clients trading leverage over both API processes, one placing and canceling spot orders, a
WebSocket subscriber on the gateway, chart rounds running. Faults, one at a time: Redis
SIGKILLed, PostgreSQL stopped (`-m immediate`), then each process SIGKILLed once; only the killed
thing is started again.

Per fault it measures the recovery time (from the dependency's return, or the process's restart,
until both APIs are ready, a fresh trade is acknowledged and the projection shows it, and the
gateway's subscriber gets prices again; for the chart scheduler also until its rounds advance),
what /ready said during the outage, the errors the clients saw and whether any other process
exited. Expected of /ready:

- Redis, PostgreSQL, engine, projector down: both APIs answer 503 `ready: false` during the
  outage (the processes stay down until both said so, at most NOT_READY_WAIT_S), and 200 after.
- One API process down: the other stays ready throughout (a load balancer sends everyone there).
- Poller, gateway, chart scheduler down: both APIs stay ready (none of them serves HTTP, and the
  outage is shorter than the price staleness limit); the gateway's subscribers reconnect.

At the end every acknowledged trade and spot order is checked against the store, and `reconcile` and
`replay --verify` must be clean. The table is printed and written to test-output/chaos.json.
"""

from __future__ import annotations

import bisect
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.flows import USDC
from tests.fakes.backpack import ThreadedBackpack
from tests.support.chaos import (
    CLIENTS,
    DEPOSIT_USDC,
    ChaosStack,
    PriceWalk,
    ReadyWatch,
    SpotTrader,
    Subscriber,
    Trader,
    cli,
    fund_users,
    sign_up,
    verify_spot,
    verify_trader,
)
from tests.support.private_pg import private_postgres
from tests.support.private_redis import private_redis

# Its own stage of `make test` (`make chaos`), alone on the machine: the recovery bound is about
# the deployment, not about how busy the other test workers keep the two cores.
pytestmark = [pytest.mark.slow, pytest.mark.chaos]

RECOVERY_BOUND_S = 15.0  # the bound, from the dependency's return or the restart
RECOVERY_WAIT_S = 25.0  # measured this long before a fault is given up (reported as failed)
DEPENDENCY_DOWN_S = 5.0
PROCESS_DOWN_S = 2.0
NOT_READY_WAIT_S = 12.0  # a process whose loss /ready must show stays down until it did, or this
SETTLE_S = 1.0  # trading between faults
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "chaos.json"


@dataclass(frozen=True)
class Fault:
    target: str  # "redis", "postgres" or a process name
    ready: str  # during the outage: "false" (both APIs), "true" (both), "other" (the other API)


FAULTS = (
    Fault("redis", "false"),
    Fault("postgres", "false"),
    Fault("engine", "false"),
    Fault("projector", "false"),
    Fault("poller", "true"),
    Fault("gateway", "true"),
    Fault("chartgame", "true"),
    Fault("api1", "other"),
)


@dataclass
class Story:
    stack: ChaosStack
    traders: list[Trader]  # leverage
    spot: Trader
    probe: Trader
    watch: ReadyWatch
    ws: Subscriber
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def test_chaos_every_dependency_and_process_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with private_redis() as redis_server, private_postgres() as pg, ThreadedBackpack() as backpack:
        prices = PriceWalk(backpack)
        prices.start()
        stack = ChaosStack(tmp_path, redis_server, pg, backpack.url)
        try:
            stack.boot()
            backpack.wait_subscribed()
            story = run_story(stack)
        finally:
            stack.stop_all()
            prices.stop()
    with capsys.disabled():
        report(story)
    assert not story.problems, "\n".join(story.problems)


def run_story(stack: ChaosStack) -> Story:
    users = [sign_up(stack.urls[i % 2], f"chaos{i}@example.com") for i in range(CLIENTS + 2)]
    fund_users(stack, [u["user"]["id"] for u in users])
    stop = threading.Event()
    traders = [Trader(i, _rotate(stack.urls, i), users[i]["token"], stop) for i in range(CLIENTS)]
    spot = SpotTrader(CLIENTS, list(stack.urls), users[CLIENTS]["token"], stop)
    probe = Trader(CLIENTS + 1, list(stack.urls), users[CLIENTS + 1]["token"], threading.Event())
    story = Story(stack, traders, spot, probe, ReadyWatch(stack.urls), Subscriber(stack.ws_url))
    with httpx.Client(timeout=5) as client:
        assert probe_trade(story, client, "warm-up", time.monotonic() + 60) is not None, stack.logs("poller")
    story.watch.start()
    story.ws.start()
    threads = [threading.Thread(target=t.run, name=f"client-{t.index}") for t in [*traders, spot]]
    for thread in threads:
        thread.start()
    time.sleep(SETTLE_S * 2)
    try:
        for fault in FAULTS:
            story.rows.append(run_fault(story, fault))
            time.sleep(SETTLE_S)
    finally:
        stop.set()
        for thread in threads:
            thread.join(90)
        story.watch.stop()
        story.ws.stop()
    chart_resumed(story)
    if exited := story.stack.exited():  # after the last fault, while the clients finished
        story.problems.append(f"processes exited after the faults: {exited}")
    story.problems += [f"client {t.index}: {t.error!r}" for t in [*traders, spot] if t.error is not None]
    check_books(story)
    return story


def _rotate(urls: list[str], i: int) -> list[str]:
    """Half the clients start on each API process."""
    return urls[i % 2 :] + urls[: i % 2]


def run_fault(story: Story, fault: Fault) -> dict[str, Any]:
    stack = story.stack
    t_kill = time.monotonic()
    if fault.target == "redis":
        stack.redis.kill()
    elif fault.target == "postgres":
        stack.pg.kill()
    else:
        stack.kill(fault.target)
    wait_outage(story, fault, t_kill)
    exited = stack.exited()
    t_back = time.monotonic()
    if fault.target == "redis":
        stack.redis.start()
    elif fault.target == "postgres":
        stack.pg.start()
    else:
        stack.start(fault.target)
    recovery_s, chart_s = measure_recovery(story, fault, t_back)
    exited += [name for name in stack.restart_exited() if name not in exited]
    t_end = time.monotonic() if recovery_s is None else t_back + recovery_s
    row: dict[str, Any] = {
        "fault": fault.target,
        "down_s": round(t_back - t_kill, 1),
        "recovery_s": None if recovery_s is None else round(recovery_s, 1),
        "chart_advances_s": None if chart_s is None else round(chart_s, 1),
        "ready_during": [dict(story.watch.states(i, t_kill, t_back)) for i in range(2)],
        # How long /ready took to notice (None: it did not, as expected for some faults).
        "not_ready_after_s": [story.watch.first(i, "not_ready", t_kill, t_end) for i in range(2)],
        "client_errors": client_errors([*story.traders, story.spot], t_kill, t_end),
        "ws": ws_figures(story.ws, t_kill, t_back),
        "others_exited": exited,
        "logs": {name: stack.logs(name)[-1500:] for name in exited},
        "t_kill": t_kill,
        "t_back": t_back,
    }
    row["problems"] = judge(fault, row)
    story.problems += [f"{fault.target}: {p}" for p in row["problems"]]
    return row


def wait_outage(story: Story, fault: Fault, t_kill: float) -> None:
    """Dependencies stay down DEPENDENCY_DOWN_S; a process whose loss /ready must show, until both
    APIs said not ready (at most NOT_READY_WAIT_S); the others PROCESS_DOWN_S."""
    if fault.target in ("redis", "postgres"):
        time.sleep(DEPENDENCY_DOWN_S)
        return
    if fault.ready != "false":
        time.sleep(PROCESS_DOWN_S)
        return
    deadline = t_kill + NOT_READY_WAIT_S
    while time.monotonic() < deadline:
        if all(story.watch.states(i, t_kill, time.monotonic())["not_ready"] for i in range(2)):
            return
        time.sleep(0.1)


def measure_recovery(story: Story, fault: Fault, t_back: float) -> tuple[float | None, float | None]:
    """Seconds from t_back until both APIs are ready, a fresh trade is acknowledged and projected,
    and prices flow through the gateway again (and, for the chart scheduler, its rounds advance);
    None if not within RECOVERY_WAIT_S. Also when the rounds advanced (None if not seen by then)."""
    deadline = t_back + RECOVERY_WAIT_S
    with httpx.Client(timeout=3) as client:
        projected_at = probe_trade(story, client, fault.target, deadline)
        if projected_at is None:
            return None, chart_advanced(story.ws, t_back)
        while time.monotonic() < deadline:
            now = time.monotonic()
            chart_s = chart_advanced(story.ws, t_back)
            ready = all(_ready(client, url) for url in story.stack.urls)
            prices = any(t > t_back for t, _ in story.ws.ticks[-1:])
            if ready and prices and (fault.target != "chartgame" or chart_s is not None):
                return max(now, projected_at) - t_back, chart_s
            time.sleep(0.1)
    return None, chart_advanced(story.ws, t_back)


def chart_resumed(story: Story) -> None:
    """After the story: for the faults whose recovery did not wait for the chart game, when its
    first message came after the fault (rounds pause in an outage, and between rounds), looking
    up to the next fault. The monotonic timestamps are dropped from the rows here."""
    kills = [row["t_kill"] for row in story.rows[1:]] + [time.monotonic()]
    for row, next_kill in zip(story.rows, kills, strict=True):
        t_back = row.pop("t_back")
        row.pop("t_kill")
        chart_s = chart_advanced(story.ws, t_back)
        if row["chart_advances_s"] is None and chart_s is not None and t_back + chart_s < next_kill:
            row["chart_advances_s"] = round(chart_s, 1)


def chart_advanced(ws: Subscriber, t_back: float) -> float | None:
    """Seconds from t_back to the first chart game message (a candle, a round) through the
    gateway, or None (rounds pause between them for a few seconds: gap, commit, beacon)."""
    chart = list(ws.chart)
    first = bisect.bisect_right(chart, t_back)
    return chart[first] - t_back if first < len(chart) else None


def probe_trade(story: Story, client: httpx.Client, tag: str, deadline: float) -> float | None:
    """The probe's trade: opened (retried with its key), seen in the projection through both API
    processes, then closed. When it was seen, or None if not before the deadline."""
    trade = probe_open(story, client, tag, deadline)
    if trade is None:
        return None
    seen_at = None
    while seen_at is None and time.monotonic() < deadline:
        if all(_has_open(client, url, story.probe.token, trade["orderId"]) for url in story.stack.urls):
            seen_at = time.monotonic()
        time.sleep(0.1)
    story.probe.close(client, trade, f"probe-{tag}")
    return seen_at


def probe_open(story: Story, client: httpx.Client, tag: str, deadline: float) -> dict[str, Any] | None:
    """A small trade, acknowledged before the deadline (a definitive refusal, e.g. a stale price
    while prices return, is tried again with a new key), or None."""
    order = {"asset": "BTC", "type": "long", "margin": 100, "leverage": 1}
    attempt = 0
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            trade = story.probe.open(client, order, f"probe-{tag}-{attempt}", remaining)
        except AssertionError:
            story.problems.append(f"probe {tag}: open without a definitive answer; its trade is unknown")
            story.probe.opened.append({"orderId": None})  # marks the probe's books as uncertain
            return None
        if trade is not None:
            return trade
        attempt += 1
    return None


def _has_open(client: httpx.Client, url: str, token: str, order_id: int) -> bool:
    try:
        r = client.get(f"{url}/api/v1/trades/open", headers={"Authorization": f"Bearer {token}"})
    except httpx.TransportError:
        return False
    return r.status_code == 200 and any(t["orderId"] == order_id for t in r.json()["trades"])


def _ready(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(f"{url}/ready").status_code == 200
    except httpx.TransportError:
        return False


def client_errors(traders: list[Trader], since: float, until: float) -> dict[str, int]:
    counts = Counter(f.kind for t in traders for f in list(t.failures) if since <= f.t <= until)
    acks = sum(1 for t in traders for a in list(t.acks) if since <= a <= until)
    return {**dict(counts.most_common()), "acknowledged": acks}


def ws_figures(ws: Subscriber, since: float, back: float) -> dict[str, Any]:
    """Lost connections and notices in the fault window, and when prices flowed again."""
    ticks = list(ws.ticks)
    after = [t for t, _ in ticks if t > back]
    gaps = sum(1 for (_, s0), (t1, s1) in itertools.pairwise(ticks) if since <= t1 and s1 != s0 + 1)
    return {
        "disconnects": sum(1 for t in list(ws.disconnects) if t >= since),
        "notices": [n.get("event", n) for t, n in list(ws.notices) if t >= since][:12],
        "seq_jumps": gaps,
        "prices_again_s": round(after[0] - back, 1) if after else None,
    }


def judge(fault: Fault, row: dict[str, Any]) -> list[str]:
    """What the issue asks of each fault, as sentences for the failure message."""
    problems = []
    if row["recovery_s"] is None or row["recovery_s"] > RECOVERY_BOUND_S:
        problems.append(f"recovery {row['recovery_s']} s, bound {RECOVERY_BOUND_S} s")
    if row["others_exited"]:
        problems.append(f"other processes exited: {row['others_exited']}")
    during = row["ready_during"]
    broken = [s for states in during for s in states if s.startswith("http_")]
    if broken:
        problems.append(f"/ready answered {sorted(set(broken))} (only 200 or 503 ready:false)")
    if fault.ready == "false" and not all(states.get("not_ready") for states in during):
        problems.append(f"/ready not false on both APIs during the outage: {during}")
    kept = [0, 1] if fault.ready == "true" else [0] if fault.ready == "other" else []
    for i in kept:
        if set(during[i]) - {"ready"}:
            problems.append(f"/ready of api{i} not true throughout: {during[i]}")
    events = row["ws"]["notices"]  # one per subscribed topic
    told = "interrupted" in events and "resumed" in events[events.index("interrupted") :]
    if fault.target == "redis" and not told:
        problems.append(f"gateway notices {events}, not interrupted then resumed")
    if row["ws"]["prices_again_s"] is None:
        problems.append("no price through the gateway after the fault")
    return problems


def check_books(story: Story) -> None:
    """Every acknowledged trade exact; reconcile and replay --verify clean; the users' money in
    the reconciliation is what the clients' trades say it is, and the deposits are ours."""
    balances: list[int] = []
    with httpx.Client(base_url=story.stack.urls[0], timeout=15) as client:
        for trader in [*story.traders, story.probe]:
            if any(t["orderId"] is None for t in trader.opened):
                continue  # the probe lost an answer: its books are unknown (already a problem)
            try:
                balances.append(verify_trader(client, trader))
            except AssertionError as exc:
                story.problems.append(f"trader {trader.index} books: {str(exc)[:500]}")
        try:
            balances.append(verify_spot(client, story.spot))
        except AssertionError as exc:
            story.problems.append(f"spot client books: {str(exc)[:500]}")
    reconciled = run_check(story, "reconcile")
    usdc: dict[str, Any] = next((a for a in reconciled.get("assets", []) if a["asset"] == "USDC"), {})
    deposits = (CLIENTS + 2) * DEPOSIT_USDC * USDC
    if len(balances) == CLIENTS + 2:
        got = (usdc.get("deposits"), usdc.get("users"), usdc.get("escrows", {}).get("@escrow:leverage"))
        if got != (deposits, sum(balances), 0):
            story.problems.append(
                f"reconcile (deposits, users, leverage escrow) {got}, expected {(deposits, sum(balances), 0)}"
            )
    run_check(story, "replay", "--verify")


def run_check(story: Story, *args: str) -> dict[str, Any]:
    """A `cashmarkets` check against the deployment: its report, a row, a problem unless ok."""
    done = cli({**story.stack.env, "CASHMARKETS_DATA_DIR": str(story.stack.tmp / "data" / "verify")}, *args)
    found: dict[str, Any] = json.loads(done.stdout) if done.stdout.startswith("{") else {}
    ok = done.returncode == 0 and found.get("ok") is True
    output = (done.stdout + done.stderr)[-1500:]
    story.rows.append({"fault": " ".join(args), "ok": ok, "output": output})
    if not ok:
        story.problems.append(f"{' '.join(args)}: exit {done.returncode}\n{output}")
    return found


def report(story: Story) -> None:
    """The table, on the terminal and in test-output/chaos.json."""
    OUTPUT.parent.mkdir(exist_ok=True)
    trades = sum(len(t.opened) for t in story.traders)
    summary = {
        "clients": CLIENTS,
        "trades_acknowledged": trades,
        "spot_orders_acknowledged": len(story.spot.opened),
        "faults": story.rows,
        "problems": story.problems,
    }
    OUTPUT.write_text(json.dumps(summary, indent=2, default=str))
    header = ("fault", "down s", "recov s", "chart s", "ready during (api0 | api1)", "ws", "client errors")
    lines = [
        f"chaos: {CLIENTS} leverage clients, {trades} trades acknowledged; a spot client, "
        f"{len(story.spot.opened)} orders placed and canceled; recovery bound {RECOVERY_BOUND_S:.0f} s",
        _line(header),
    ]
    for row in story.rows:
        if "down_s" not in row:
            lines.append(f"{row['fault']:<12} {'clean' if row['ok'] else 'FAILED'}")
            continue
        ready = " | ".join(
            ",".join(f"{k}={v}" for k, v in states.items()) + ("" if first is None else f" @{first}s")
            for states, first in zip(row["ready_during"], row["not_ready_after_s"], strict=True)
        )
        ws = f"drop={row['ws']['disconnects']} px={row['ws']['prices_again_s']}"
        errors = ", ".join(f"{k}: {v}" for k, v in row["client_errors"].items())
        mark = "" if not row["problems"] else "  <- " + "; ".join(row["problems"])
        recovery, chart = _s(row["recovery_s"]), _s(row["chart_advances_s"])
        lines.append(_line((row["fault"], str(row["down_s"]), recovery, chart, ready, ws, errors + mark)))
    lines += LEGEND
    print("\n" + "\n".join(lines) + f"\n(written to {OUTPUT})")


LEGEND = (
    "down s: kill to the dependency's return or the restart; recov s: from then until both APIs",
    "are ready, a fresh trade is acknowledged and projected and prices flow through the gateway;",
    "chart s: from then until the chart game's next message through the gateway (-: none before",
    "the next fault; rounds pause in outages and between rounds); ready during: /ready samples",
    "in the outage, @ when the first not-ready answer came (s after the kill); ws: the",
    "subscriber's lost connections and when prices came again (s); client errors: answers other",
    "than success to the 9 clients from the kill to the recovery.",
)


COLUMNS = (12, 7, 8, 8, 58, 16)


def _line(cells: tuple[str, ...]) -> str:
    """Left-aligned text, numbers right-aligned, in the widths of COLUMNS; the last cell as is."""
    out = [
        c.ljust(w - 1) + " " if i in (0, 4, 5) else c.rjust(w) + "  "
        for i, (c, w) in enumerate(zip(cells, COLUMNS, strict=False))
    ]
    return "".join(out) + cells[-1]


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value}"
