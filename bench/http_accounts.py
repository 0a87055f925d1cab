"""HTTP requests/s and latency of a faucet/balance mix against real servers; prints one JSON object.
Same as `cashmarkets bench http`. Usage: python bench/http_accounts.py [embedded|distributed] [duration_s]"""

import asyncio
import json
import sys

from cashmarkets.benchmarks.http import run
from cashmarkets.ops.logging import configure_logging

if __name__ == "__main__":
    configure_logging()  # logs on stderr: stdout carries only the JSON
    mode = sys.argv[1] if len(sys.argv) > 1 else "embedded"
    duration_s = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run(mode=mode, duration_s=duration_s))
    print(json.dumps(result))
