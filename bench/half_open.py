"""Half-open connections (a partial request header, then nothing) against a real `cashmarkets serve`
started with a given open-files limit: when does `/health` stop answering? Prints one JSON object.

Usage: python bench/half_open.py [--connections 2000] [--step 100] [--sources 1] [--soft-limit 1024]
       [--hard-limit N] [--target http|ws] [--wait-s 15] [--env NAME=VALUE ...]
See src/cashmarkets/benchmarks/half_open.py for what each figure means."""

import argparse
import json

from cashmarkets.benchmarks.half_open import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=2_000)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--sources", type=int, default=1, help="client addresses, round-robin")
    parser.add_argument("--soft-limit", type=int, default=1_024, help="the server's starting soft limit")
    parser.add_argument("--hard-limit", type=int, default=None, help="default: this process's")
    parser.add_argument("--target", choices=("http", "ws"), default="http")
    parser.add_argument("--wait-s", type=float, default=15.0)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    result = run(
        connections=args.connections,
        step=args.step,
        sources=args.sources,
        soft_limit=args.soft_limit,
        hard_limit=args.hard_limit,
        target=args.target,
        wait_s=args.wait_s,
        env=env,
    )
    print(json.dumps(result))
