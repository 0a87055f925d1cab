"""A local server speaking drand's HTTP API (`/{chain hash}/public/{round}`, `/{chain hash}/info`),
serving recorded beacons, so the real client code is tested without the internet."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeDrand:
    """`beacons`: round -> {"signature": hex, "randomness": hex}; `lie`: answer wrong randomness."""

    def __init__(self, chain_hash: str, beacons: dict[int, dict[str, str]], *, lie: bool = False) -> None:
        self.chain_hash = chain_hash
        self.beacons = beacons
        self.lie = lie
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                parts = self.path.strip("/").split("/")
                status, body = 404, {"error": "not found"}
                if (
                    len(parts) == 3
                    and parts[0] == fake.chain_hash
                    and parts[1] == "public"
                    and parts[2].isdigit()
                ):
                    found = fake.beacons.get(int(parts[2]))
                    if found is not None:
                        randomness = "00" * 32 if fake.lie else found["randomness"]
                        status, body = (
                            200,
                            {
                                "round": int(parts[2]),
                                "randomness": randomness,
                                "signature": found["signature"],
                            },
                        )
                    else:
                        status, body = 425, {"error": "too early"}
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeDrand:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
