"""Cheap unique ids for requests and server-made command ids.

`uuid.uuid4()` costs a getrandom() system call per id: about 8 % of the API's CPU under load.
These ids are a random 64-bit prefix drawn once per process plus a counter: unique across
processes and restarts (a prefix collision needs ~2^32 processes), ordered within a process, and
not meant to be secret (nothing is authorised by knowing one).
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex()
_counter = itertools.count(1)


def new_id() -> str:
    """`<16 hex chars of this process>-<counter in hex>`: 18 to 33 characters."""
    return f"{_PREFIX}-{next(_counter):x}"


def _reseed_after_fork() -> None:
    # A forked child (snapshot writer) must never hand out its parent's ids.
    global _PREFIX, _counter
    _PREFIX = os.urandom(8).hex()
    _counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed_after_fork)
