#!/usr/bin/env bash
# Run each benchmark at a tiny size and check that stdout is exactly one JSON object.
# Not a measurement: sizes are far too small to mean anything.
set -euo pipefail
BIN=${VENV:-.venv}/bin
check() {
  "$@" 2>/dev/null | "$BIN/python" -c '
import json, sys
lines = sys.stdin.read().splitlines()
assert len(lines) == 1, f"expected one line of JSON on stdout, got {len(lines)}"
d = json.loads(lines[0])
assert isinstance(d, dict) and d.get("commands_per_s", 0) > 0, d
print("bench ok:", d["bench"], d.get("backend", ""))'
}
check "$BIN/cashmarkets" bench engine --accounts 100 --commands 2000
check "$BIN/cashmarkets" bench leverage --positions 500 --ticks 500
check "$BIN/cashmarkets" bench chartgame --candles 500 --rounds 2 --rtp-rounds 2
"$BIN/cashmarkets" bench spot --commands 3000 --resting 200 2>/dev/null | "$BIN/python" -c 'import json, sys; lines = sys.stdin.read().splitlines(); assert len(lines) == 1, lines; d = json.loads(lines[0]); rest = {k: v["resting_orders"] for g in ("engines", "engines_cancel_new") for k, v in d[g].items()}; assert len(set(rest.values())) == 1 and d["commands_per_s"] > 0, d; print("bench ok:", d["bench"], rest)'
check "$BIN/cashmarkets" bench journal --backend sqlite --submitters 8 --duration-s 0.5
check "$BIN/cashmarkets" bench journal --backend redis --submitters 8 --duration-s 0.5
check "$BIN/python" bench/engine.py 2000
"$BIN/cashmarkets" bench http --mode embedded --duration-s 1 --connections 4 --users 4 2>/dev/null | "$BIN/python" -c 'import json, sys; lines = sys.stdin.read().splitlines(); assert len(lines) == 1, lines; d = json.loads(lines[0]); assert d["requests_per_s"] > 0 and d["errors"] == 0, d; print("bench ok:", d["bench"], d["mode"])'
for mode in embedded distributed; do
  "$BIN/cashmarkets" bench leverage --mode "$mode" --duration-s 1 --warmup-s 0.2 --connections 4 2>/dev/null | "$BIN/python" -c 'import json, sys; lines = sys.stdin.read().splitlines(); assert len(lines) == 1, lines; d = json.loads(lines[0]); assert d["trades_per_s"] > 0 and d["max"]["errors"] == 0 and d["paced"]["errors"] == 0, d; print("bench ok:", d["bench"], d["mode"])'
done
"$BIN/cashmarkets" bench ws-fanout --subscribers 20 --duration-s 1 --warmup-s 0.5 2>/dev/null | "$BIN/python" -c 'import json, sys; lines = sys.stdin.read().splitlines(); assert len(lines) == 1, lines; d = json.loads(lines[0]); assert d["messages_delivered"] > 0 and d["delivered_ratio"] == 1.0, d; print("bench ok:", d["bench"], d["subscribers"])'
"$BIN/cashmarkets" bench ws-fanout --subscribers 20 --duration-s 1 --warmup-s 0.5 --client python 2>/dev/null | "$BIN/python" -c 'import json, sys; lines = sys.stdin.read().splitlines(); assert len(lines) == 1, lines; d = json.loads(lines[0]); assert d["messages_delivered"] > 0 and d["delivered_ratio"] == 1.0 and d["client"].startswith("python"), d; print("bench ok:", d["bench"], d["client"])'
"$BIN/python" bench/half_open.py --connections 300 --step 100 --wait-s 0.5 2>/dev/null | "$BIN/python" -c 'import json, sys; lines = sys.stdin.read().splitlines(); assert len(lines) == 1, lines; d = json.loads(lines[0]); assert d["connections_opened"] == 300 and d["health_ok_at_max"] and d["server_alive"], d; print("bench ok:", d["bench"], d["target"])'
"$BIN/cashmarkets" bench ws-flood --duration-s 1 --warmup-s 0.5 --sockets 2 --in-flight 2 2>/dev/null | "$BIN/python" -c 'import json, sys; lines = sys.stdin.read().splitlines(); assert len(lines) == 1, lines; d = json.loads(lines[0]); assert d["flood_replies_per_s"] > 0 and d["victim_loaded"]["requests"] > 0 and d["victim_loaded"]["errors"] == 0 and d["server"]["alive_at_end"]["serve"], d; print("bench ok:", d["bench"], d["sockets"], "x", d["in_flight_per_socket"])'
"$BIN/python" bench/signin_flood.py 4 0.5 2>/dev/null | "$BIN/python" -c 'import json, sys; lines = sys.stdin.read().splitlines(); assert len(lines) == 1, lines; d = json.loads(lines[0]); assert d["errors"] == 0 and d["p50_ms_idle"] is not None and d["p50_ms_flooded"] is not None, d; print("bench ok:", d["bench"], d["flood"])'
