"""Durable acknowledged commands/s with group commit; prints one JSON object.
Same as `cashmarkets bench journal`. Usage: python bench/journal.py [sqlite|redis] [duration_s]"""

import asyncio
import json
import sys

from cashmarkets.benchmarks.journal import run

if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    duration_s = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    print(
        json.dumps(
            asyncio.run(run(backend=backend, duration_s=duration_s, redis_url="redis://127.0.0.1:6379/0"))
        )
    )
