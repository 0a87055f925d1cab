"""Black-box fuzzing: `cashmarkets serve` against its own OpenAPI document, with Schemathesis.

One real server (subprocess, embedded mode) per module. Schemathesis loads the schema from the
served `/openapi.json`, generates requests for every documented operation, sends them with a
bearer token (an admin's for admin routes, a player's otherwise), and checks each response:

* `test_fuzz_robustness`: no 5xx, every error is `application/problem+json` with `code` and
  `requestId` (equal to `X-Request-Id`), documented response bodies match their schema, and the
  server is still ready (/ready) after the operation was fuzzed.
* `test_fuzz_schema_conformance`: the above, plus the status code and content type of every
  response are ones the schema declares. Kept apart so that a documentation mismatch never hides
  a 5xx on the same operation.
* `test_fuzz_anonymous`: as robustness, without a token.

Bugs the fuzzer found are pinned by deterministic repro tests at the end of the module.

Bounded for CI: `CASHMARKETS_FUZZ_EXAMPLES` (default 25) examples per operation and test, from a
fixed seed per operation, so a failure reproduces on every run.
"""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cashmarkets.api.app import create_app
from cashmarkets.ops.settings import Settings
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.fuzz]

MAX_EXAMPLES = int(os.environ.get("CASHMARKETS_FUZZ_EXAMPLES", "25"))
PASSWORD = "correct horse battery"
PROBLEM_JSON = "application/problem+json"

# Not fuzzed: `/metrics`, `/docs` and `/openapi.json` are left out of the document
# (include_in_schema=False), so they are never generated. `GET /api/v1/signin/post` and
# `POST /api/v1/signin/link` are kept: they answer 200 (a page; the tokens) only for a valid
# magic-link token, which random tokens never are (they get 401).
# Admin routes are kept and fuzzed with an admin's token, so they get past the role guard.

# -- findings ----------------------------------------------------------------------------------
# The first runs of this suite found three 5xx bugs (a magic-link email the mailer refused; ints
# beyond 64 bits in query strings and cursors; a hold id beyond the codec that stopped the whole
# runtime) and undocumented error responses. All are fixed; the repro tests at the end keep them
# fixed, and every operation is now fuzzed with every check, strictly.


def documented_operations() -> list[str]:
    """Every "METHOD /path" of the document, built in-process (no server) so pytest can collect
    one test per operation; the test then fuzzes the same operation of the served document."""
    document = create_app(Settings.from_env({})).openapi_schema.to_schema()
    return [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    ]


OPERATIONS = documented_operations()


def params() -> list[Any]:
    return [pytest.param(label, id=label) for label in OPERATIONS]


# -- the server -----------------------------------------------------------------------------------


@dataclass
class Server:
    data_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    schema: Any = None  # schemathesis' OpenApiSchema, loaded from the served /openapi.json
    player_token: str = ""
    admin_token: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            # Thousands of requests in seconds from one IP and one user: no rate limit may answer.
            "CASHMARKETS_RATE_LIMIT_IP_BURST": "100000",
            "CASHMARKETS_RATE_LIMIT_IP_PER_S": "100000",
            "CASHMARKETS_RATE_LIMIT_USER_BURST": "100000",
            "CASHMARKETS_RATE_LIMIT_USER_PER_S": "100000",
        }
        with self.log_path.open("ab") as log:  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "cashmarkets.cli", "serve"),
                    *("--data-dir", str(self.data_dir), "--port", str(self.port)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while not self.ready():
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-5000:]
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        """Same data directory and port: tokens and the loaded schema stay valid."""
        self.stop()
        self.start()

    def ready(self) -> bool:
        try:
            response = requests.get(f"{self.base_url}/ready", timeout=5)
        except requests.ConnectionError:
            return False
        return response.status_code == 200 and response.json().get("ready") is True

    def readiness(self) -> str:
        try:
            return requests.get(f"{self.base_url}/ready", timeout=5).text
        except requests.ConnectionError as exc:
            return repr(exc)

    def token_for(self, label: str) -> str:
        return self.admin_token if " /api/v1/admin/" in label else self.player_token

    def server_errors(self) -> list[str]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if '"level": "error"' in line]


def signup(base_url: str, email: str) -> dict[str, Any]:
    response = requests.post(
        f"{base_url}/api/v1/signup", json={"email": email, "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def make_admin(server: Server) -> str:
    """An admin's token: sign up, grant the role in the store (as an operator would: no HTTP route
    makes the first admin), then sign in again for a token that carries it."""
    email = "fuzz-admin@example.com"
    user_id = signup(server.base_url, email)["user"]["id"]
    db = sqlite3.connect(server.data_dir / "store.db", timeout=10)
    try:
        with db:
            assert db.execute("UPDATE users SET role = 'admin' WHERE id = ?", (user_id,)).rowcount == 1
    finally:
        db.close()
    response = requests.post(
        f"{server.base_url}/api/v1/signin", json={"email": email, "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["user"]["role"] == "admin"
    token: str = response.json()["token"]
    return token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    srv = Server(data_dir=tmp / "data", log_path=tmp / "server.log")
    try:
        srv.start()
        srv.player_token = signup(srv.base_url, "fuzz-player@example.com")["token"]
        srv.admin_token = make_admin(srv)
        srv.schema = schemathesis.openapi.from_url(f"{srv.base_url}/openapi.json", timeout=10)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    # Keep no cookies: a fuzzed signup's `authToken` would otherwise ride along on later requests.
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    yield session
    session.close()


@pytest.fixture(autouse=True)
def _fresh_engine_for_every_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that stopped the engine (a bug, reported by that test) must not fail the next ones:
    restart the server on the same data directory (recovery replays the journal)."""
    yield
    if "server" in request.fixturenames:
        srv: Server = request.getfixturevalue("server")
        if not srv.ready():
            srv.restart()


# -- checks ---------------------------------------------------------------------------------------


def problem_json_errors(ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every error (status >= 400) is RFC 9457 problem+json with a stable `code` and the request
    id, which is also the `X-Request-Id` header."""
    if response.status_code < 400:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    media_type = content_type.split(";")[0].strip().lower()
    assert media_type == PROBLEM_JSON, f"error {response.status_code} has Content-Type {content_type!r}"
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(
            f"error {response.status_code} body is not JSON: {response.text[:200]!r}"
        ) from exc
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    missing = [key for key in ("code", "requestId") if key not in body]
    assert not missing, f"error body lacks {missing}: {body!r}"
    assert isinstance(body["code"], str) and body["code"], f"bad code: {body!r}"
    assert isinstance(body["requestId"], str) and body["requestId"], f"bad requestId: {body!r}"
    header = (response.headers.get("x-request-id") or [None])[0]
    assert header == body["requestId"], f"requestId {body['requestId']!r} != X-Request-Id {header!r}"


ROBUSTNESS_CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    response_schema_conformance,
    problem_json_errors,
]
CONFORMANCE_CHECKS: list[Callable[..., Any]] = [
    *ROBUSTNESS_CHECKS,
    status_code_conformance,
    content_type_conformance,
]


def fuzz(
    server: Server,
    http: requests.Session,
    label: str,
    checks: list[Callable[..., Any]],
    *,
    token: str | None,
    examples: int,
) -> None:
    method, path = label.split(" ", 1)
    try:
        operation = server.schema[path][method]
    except KeyError:
        pytest.fail(f"{label} is in the in-process document but not in the served /openapi.json")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    errors_before = len(server.server_errors())

    # A fixed seed per operation (not one for all, as derandomize would give): reproducible, and
    # the operations do not all walk the same random path.
    @seed(zlib.crc32(label.encode()))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=False,
        database=None,
        # Every example is a real HTTP round trip (argon2 hashing on signup/signin): slow by design.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(session=http, headers=headers, checks=checks, timeout=15)

    try:
        run()
    except BaseException:
        # The traceback behind a 5xx is in the server's log, keyed by the body's requestId.
        for line in server.server_errors()[errors_before:][-3:]:
            print(line[:3000])
        raise
    assert server.ready(), f"fuzzing {label} took the server out of readiness: {server.readiness()}"


@pytest.mark.parametrize("label", params())
def test_fuzz_robustness(server: Server, http: requests.Session, label: str) -> None:
    fuzz(server, http, label, ROBUSTNESS_CHECKS, token=server.token_for(label), examples=MAX_EXAMPLES)


@pytest.mark.parametrize("label", params())
def test_fuzz_schema_conformance(server: Server, http: requests.Session, label: str) -> None:
    fuzz(server, http, label, CONFORMANCE_CHECKS, token=server.token_for(label), examples=MAX_EXAMPLES)


@pytest.mark.parametrize("label", params())
def test_fuzz_anonymous(server: Server, http: requests.Session, label: str) -> None:
    """No token: protected routes answer 401/403 problem+json, and nothing answers 5xx."""
    fuzz(server, http, label, ROBUSTNESS_CHECKS, token=None, examples=max(5, MAX_EXAMPLES // 5))


# -- the fuzzer's findings, pinned (deterministic; they pass once src is fixed) -------------------


def _cursor(value: int) -> str:
    """A cursor as the API encodes one (api/accounts.py::encode_cursor)."""
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("email", ["a\u0006b@example.com", "a,b@example.com", "a(b@example.com"])
def test_magic_link_for_an_email_the_schema_accepts_is_not_a_5xx(server: Server, email: str) -> None:
    response = requests.post(f"{server.base_url}/api/v1/signin", json={"email": email}, timeout=10)
    assert response.status_code < 500, response.text


@pytest.mark.parametrize(
    "path_and_query",
    [
        f"/api/v1/ledger?fromNs={2**63}",
        f"/api/v1/ledger?toNs={2**63}",
        f"/api/v1/ledger?cursor={_cursor(2**63)}",
        f"/api/v1/withdrawals?cursor={_cursor(2**63)}",
        f"/api/v1/admin/withdrawals?cursor={_cursor(2**63)}",
    ],
)
def test_integers_beyond_int64_are_a_4xx(server: Server, path_and_query: str) -> None:
    response = requests.get(
        f"{server.base_url}{path_and_query}",
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    )
    assert response.status_code < 500, response.text


# One case: each stops the engine and costs a server restart (~3 s). The same happens with reject
# (which its fuzz test reaches) and with hold_id < -2**63 (checked by hand).
@pytest.mark.parametrize(("action", "hold_id"), [("complete", 2**64)])
def test_a_hold_id_beyond_the_codec_is_a_4xx_and_the_engine_keeps_running(
    server: Server, action: str, hold_id: int
) -> None:
    response = requests.post(
        f"{server.base_url}/api/v1/admin/withdrawals/{hold_id}/{action}",
        json={},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    )
    ready = server.readiness()
    assert response.status_code < 500, response.text
    assert server.ready(), ready
