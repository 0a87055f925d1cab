"""One user floods OPEN_POSITION over 16 WebSockets x 16 in flight; another user's HTTP latency idle
vs flooded, against a real `cashmarkets serve`; prints one JSON object. Same as
`cashmarkets bench ws-flood`. Usage: python bench/ws_flood.py [duration_s] [sockets] [in_flight]"""

import json
import sys

from cashmarkets.benchmarks.ws_flood import run
from cashmarkets.ops.logging import configure_logging

if __name__ == "__main__":
    configure_logging()  # logs on stderr: stdout carries only the JSON
    duration_s = float(sys.argv[1]) if len(sys.argv) > 1 else 12.0
    sockets = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    in_flight = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    try:
        import uvloop

        result = uvloop.run(run(duration_s=duration_s, sockets=sockets, in_flight=in_flight))
    except ImportError:
        import asyncio

        result = asyncio.run(run(duration_s=duration_s, sockets=sockets, in_flight=in_flight))
    print(json.dumps(result))
