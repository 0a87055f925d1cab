#!/usr/bin/env bash
# Run each benchmark at a tiny size and check it prints one JSON object. Not a measurement.
set -euo pipefail
BIN=${VENV:-.venv}/bin
check() { "$@" 2>/dev/null | tail -n 1 | "$BIN/python" -c 'import json,sys; d=json.loads(sys.stdin.read()); assert isinstance(d, dict); print("bench ok:", d.get("bench"), d.get("backend", ""))'; }
check "$BIN/cashmarkets" bench engine --accounts 100 --commands 2000
check "$BIN/cashmarkets" bench journal --backend sqlite --submitters 8 --duration-s 0.5
check "$BIN/cashmarkets" bench journal --backend redis --submitters 8 --duration-s 0.5
