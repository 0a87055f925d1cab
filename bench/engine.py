"""In-memory engine apply rate; prints one JSON object. Same as `cashmarkets bench engine`."""

import json
import sys

from cashmarkets.benchmarks.engine import run

if __name__ == "__main__":
    commands = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    print(json.dumps(run(commands=commands)))
