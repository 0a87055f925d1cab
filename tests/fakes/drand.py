"""A local server speaking drand's HTTP API (`/{chain hash}/public/{round}`, `/{chain hash}/info`),
serving recorded beacons, so the real client code is tested without the internet."""

from __future__ import annotations

from typing import Any

from tests.fakes.http import JsonHandler, LocalServer


class FakeDrand(LocalServer):
    """`beacons`: round -> {"signature": hex, "randomness": hex}; `lie`: answer wrong randomness."""

    def __init__(self, chain_hash: str, beacons: dict[int, dict[str, str]], *, lie: bool = False) -> None:
        self.chain_hash = chain_hash
        self.beacons = beacons
        self.lie = lie
        self.requests: list[str] = []
        fake = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                self.send_json(*fake.answer(self.path))

        super().__init__(Handler)

    def answer(self, path: str) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == self.chain_hash and parts[1] == "public" and parts[2].isdigit():
            found = self.beacons.get(int(parts[2]))
            if found is None:
                return 425, {"error": "too early"}
            randomness = "00" * 32 if self.lie else found["randomness"]
            return 200, {"round": int(parts[2]), "randomness": randomness, "signature": found["signature"]}
        return 404, {"error": "not found"}
