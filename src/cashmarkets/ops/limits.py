"""Open-file limits: the process's RLIMIT_NOFILE, and open connections per client address.

Every socket holds a file descriptor. A process that runs out of descriptors stops accepting
connections (`/health` too), cannot fork a snapshot child nor open a file: so every long-running
process raises its soft limit at start (`raise_open_files_limit`), and the HTTP server and the
WebSocket gateway count connections per TCP peer (`PerIpConnections`) and close the excess at once
(docs/decisions/017-half-open-connections.md).
"""

from __future__ import annotations

import ipaddress
import resource
from typing import Any

import structlog

log = structlog.get_logger("cashmarkets.limits")

# When the hard limit is "unlimited" (some BSDs, root shells): a finite soft limit to ask for.
UNLIMITED_TARGET = 1 << 20
# Descriptors a server needs besides those its listen queues can hand it in one burst.
HEADROOM = 1_024

_raised: tuple[int, int] | None = None


def raise_open_files_limit(wanted: int | None = None, *, listen_backlog: int = 0) -> tuple[int, int]:
    """Set the soft RLIMIT_NOFILE to `wanted` (None: the hard limit), never above the hard limit;
    logged once per process with the values before and after. Returns (soft, hard) now.

    `listen_backlog`: the connections this process's listen queues hold. The event loop accepts
    a queue's connections all at once, before any per-address check can close one: a limit below
    that plus `HEADROOM` can still be exhausted by one burst, which is logged as a warning."""
    global _raised
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    target = ceiling if wanted is None else min(wanted, ceiling)
    if target > 0 and target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files limit not changed", soft=soft, hard=hard, wanted=target, error=str(exc))
            return soft, hard
    now = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _raised is None:
        if wanted is not None and wanted > ceiling:
            log.warning("open files limit capped at the hard limit", wanted=wanted, hard=hard)
        log.info("open files limit", soft_before=soft, soft=now[0], hard=hard)
        if listen_backlog and now[0] < listen_backlog + HEADROOM:
            log.warning(
                "open files limit below the listen backlog plus headroom: a burst of connections"
                " can exhaust it",
                soft=now[0],
                listen_backlog=listen_backlog,
                headroom=HEADROOM,
            )
    _raised = now
    return now


class TrustedPeers:
    """Addresses in `CASHMARKETS_FORWARDED_ALLOW_IPS` form: comma-separated IPs or networks, or *."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.everyone = "*" in items
        self.addresses: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in items:
            try:
                if "/" in item:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                else:
                    self.addresses.add(str(ipaddress.ip_address(item)))
            except ValueError:
                self.addresses.add(item)  # a literal (not an IP): compared as written

    def __contains__(self, ip: str) -> bool:
        if self.everyone or ip in self.addresses:
            return True
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def peer_ip(transport: Any) -> str:
    """The TCP peer's address ('' for a Unix socket); an IPv4-mapped IPv6 address as IPv4."""
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return ""
    ip = str(peer[0])
    if ip.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(ip).ipv4_mapped
        except ValueError:
            return ip
        if mapped is not None:
            return str(mapped)
    return ip


class PerIpConnections:
    """Open connections per client address, at most `limit` each (0: no limit). Trusted proxies are
    not limited: one proxy carries many clients, and it reads each client's request headers itself
    before it opens (or reuses) a connection to us."""

    def __init__(self, limit: int, trusted: str = "") -> None:
        self.limit = limit
        self.trusted = TrustedPeers(trusted)
        self.counts: dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        """Count one more connection from `ip`; False (and not counted) if over the limit."""
        count = self.counts.get(ip, 0)
        if self.limit > 0 and count >= self.limit and ip not in self.trusted:
            return False
        self.counts[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        left = self.counts.get(ip, 0) - 1
        if left > 0:
            self.counts[ip] = left
        else:
            self.counts.pop(ip, None)
