"""How deep client input may nest, and the recursion limit the decoders rely on.

msgspec's and the standard library's JSON decoders guard their C recursion with the
interpreter's recursion limit. `py_ecc` (imported under `eth_account`) raises that limit to
100,000 at import, and then about 30,000 levels of `[` overflow the C stack: one 40 KB request
killed the whole server (issue 15). Two defences, each enough on its own:

- the limit is put back after that import (`keep_recursion_limit`) and pinned at every process
  start (`pin_recursion_limit`), so a deep payload fails with a clean decode error;
- every decoder of client input first checks the nesting depth (`json_depth_within`,
  `msgpack_depth_within`) and refuses anything deeper than `NESTING_DEPTH_MAX` without decoding.

Both checks are cheap for normal input: a payload with fewer opening brackets (or container
markers) than the limit cannot nest deeper, and is accepted after two `bytes.count` calls.
"""

from __future__ import annotations

import contextlib
import re
import struct
import sys
from collections.abc import Iterator
from typing import Final

# Deeper than any message of ours (the deepest is about 4); far below what any stack needs.
NESTING_DEPTH_MAX: Final = 32
# CPython's default. Deep recursion in our own code is a bug, not something to make room for.
RECURSION_LIMIT: Final = 1_000

# A JSON string (complete, or cut off by the end of the input), or one bracket.
_JSON_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)|[\[\]{}]', re.DOTALL)
_OPEN: Final = frozenset(b"[{")


def json_depth_within(data: bytes, depth_max: int = NESTING_DEPTH_MAX) -> bool:
    """True when no array or object in `data` (JSON text, valid or not) nests deeper than
    `depth_max`. Brackets inside strings do not count."""
    if data.count(b"[") + data.count(b"{") <= depth_max:
        return True
    depth = 0
    for match in _JSON_TOKEN.finditer(data):
        first = data[match.start()]
        if first in _OPEN:
            depth += 1
            if depth > depth_max:
                return False
        elif first != 0x22:  # a closing bracket; a string changes nothing
            depth = max(0, depth - 1)
    return True


# MessagePack type bytes of arrays and maps: fixmap, fixarray, array16/32, map16/32.
_CONTAINER_BYTES: Final = tuple(bytes([b]) for b in (*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF))
_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
# Fixed sizes after the type byte, for the types that carry no length field.
_FIXED: Final = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_FIXED.update({0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17})
# Types followed by a length field (its struct) and then that many bytes (+1: ext's type byte).
_SIZED: Final = {
    0xC4: (_U8, 0),
    0xC5: (_U16, 0),
    0xC6: (_U32, 0),
    0xC7: (_U8, 1),
    0xC8: (_U16, 1),
    0xC9: (_U32, 1),
    0xD9: (_U8, 0),
    0xDA: (_U16, 0),
    0xDB: (_U32, 0),
}
_COUNTED: Final = {0xDC: (_U16, 1), 0xDD: (_U32, 1), 0xDE: (_U16, 2), 0xDF: (_U32, 2)}


def msgpack_depth_within(data: bytes, depth_max: int = NESTING_DEPTH_MAX) -> bool:
    """True when no array or map in `data` (MessagePack, valid or not) nests deeper than
    `depth_max`. Truncated or malformed input is left to the decoder to refuse."""
    if sum(data.count(b) for b in _CONTAINER_BYTES) <= depth_max:
        return True
    # Items still to read in each open container, innermost last.
    open_items: list[int] = []
    pos, end = 0, len(data)
    while pos < end:
        kind = data[pos]
        pos += 1
        items = 0
        if 0x80 <= kind <= 0x8F:
            items = 2 * (kind & 0x0F)
        elif 0x90 <= kind <= 0x9F:
            items = kind & 0x0F
        elif 0xA0 <= kind <= 0xBF:
            pos += kind & 0x1F
        elif kind in _FIXED:
            pos += _FIXED[kind]
        elif kind in _SIZED:
            size, extra = _SIZED[kind]
            if pos + size.size > end:
                return True
            pos += size.size + size.unpack_from(data, pos)[0] + extra
        elif kind in _COUNTED:
            size, per_item = _COUNTED[kind]
            if pos + size.size > end:
                return True
            items = per_item * size.unpack_from(data, pos)[0]
            pos += size.size
        # Anything else is a fixint (or the unused 0xC1): one byte.
        if open_items:
            open_items[-1] -= 1
        if 0x80 <= kind <= 0x9F or kind in _COUNTED:
            # An empty container is one level too (as `[]` is in JSON), but stays open no longer.
            if len(open_items) + 1 > depth_max:
                return False
            if items:
                open_items.append(items)
        while open_items and open_items[-1] == 0:
            open_items.pop()
    return True


@contextlib.contextmanager
def keep_recursion_limit() -> Iterator[None]:
    """Run an import that changes the recursion limit, and put the limit back afterwards."""
    before = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def pin_recursion_limit() -> int:
    """Set the recursion limit to `RECURSION_LIMIT` if something raised it; returns what it was."""
    found = sys.getrecursionlimit()
    if found > RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)
    return found


__all__ = [
    "NESTING_DEPTH_MAX",
    "RECURSION_LIMIT",
    "json_depth_within",
    "keep_recursion_limit",
    "msgpack_depth_within",
    "pin_recursion_limit",
]
