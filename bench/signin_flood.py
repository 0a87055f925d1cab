"""Another user's GET /api/v1/balance latency, idle and during a flood of concurrent password
sign-ins, against a real `cashmarkets serve`; prints one JSON object.

Usage: python bench/signin_flood.py [flood=64] [duration_s=10] [kind=unknown|one_account] [backoff_cap_s=1]
"""

import asyncio
import json
import sys

from cashmarkets.benchmarks.signin_flood import run
from cashmarkets.ops.logging import configure_logging

if __name__ == "__main__":
    configure_logging()  # logs on stderr: stdout carries only the JSON
    flood = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    duration_s = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    kind = sys.argv[3] if len(sys.argv) > 3 else "unknown"
    backoff_cap_s = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run(flood=flood, duration_s=duration_s, kind=kind, backoff_cap_s=backoff_cap_s))
    print(json.dumps(result))
