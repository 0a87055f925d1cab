"""Cross-site request forgery (api/csrf.py), in process on a real embedded server: state changes
take JSON bodies only (form bodies on /api/v3), a cookie session needs an allowed Origin or the
double-submit token, bearer tokens and API keys do not, and the session cookies follow the settings.

A browser is played by hand: the `Cookie` and `Origin` headers it would send are set explicitly
(the test client's cookie jar is kept empty)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from tests.integration.api_helpers import PASSWORD, bearer, embedded, services_of, wait_committed
from tests.support.binance import signed

ALLOWED = "http://127.0.0.1:8000"  # the origin of the default public URL (HOST:PORT) in embedded()
EVIL = "http://evil.example"
FOREIGN = [
    EVIL,
    "http://127.0.0.1:8001",  # another port of the same host: cookies do not care about ports
    "http://shop.127.0.0.1:8000",  # a sibling name
    "https://127.0.0.1:8000",  # another scheme
    "null",  # a sandboxed frame, a file: page
]
WITHDRAWAL = {"asset": "USDC", "amount": "10", "destination": "0xabc"}


class Session:
    """A browser's sign-in: the cookies the server set on it."""

    def __init__(self, user_id: str, token: str, csrf: str) -> None:
        self.user_id = user_id
        self.token = token
        self.csrf = csrf

    def cookie(self, csrf: str | None = None) -> dict[str, str]:
        return {"Cookie": f"authToken={self.token}; csrfToken={self.csrf if csrf is None else csrf}"}


def session_of(response: Any) -> Session:
    """The cookies a sign-in response set, as the browser now holds them."""
    token, csrf = response.cookies.get("authToken", ""), response.cookies.get("csrfToken", "")
    assert token == response.json()["token"] and csrf != token
    return Session(response.json()["user"]["id"], token, csrf)


async def browser_signup(client: AsyncTestClient[Any], email: str) -> Session:
    response = await client.post("/api/v1/signup", json={"email": email, "password": PASSWORD})
    client.cookies.clear()
    assert response.status_code == 201, response.text
    return session_of(response)


async def browser_admin(client: AsyncTestClient[Any], email: str = "admin@example.com") -> Session:
    """Sign up, become admin in the store, sign in again (for a token with the role)."""
    user_id = (await browser_signup(client, email)).user_id
    assert await services_of(client).users.set_role(user_id, "admin")
    response = await client.post("/api/v1/signin", json={"email": email, "password": PASSWORD})
    client.cookies.clear()
    assert response.status_code == 200 and response.json()["user"]["role"] == "admin", response.text
    return session_of(response)


async def held(client: AsyncTestClient[Any], token: str) -> str:
    balances = (await client.get("/api/v1/balance", headers=bearer(token))).json()["balances"]
    found: str = next(b["held"] for b in balances if b["asset"] == "USDC")
    return found


def refused(response: Any, status: int, code: str) -> bool:
    return (
        response.status_code == status
        and response.headers["content-type"] == "application/problem+json"
        and response.json()["code"] == code
        and "set-cookie" not in response.headers
    )


async def test_a_cookie_session_from_a_foreign_origin_is_403_and_holds_nothing(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        alice = await browser_signup(client, "alice@example.com")
        for origin in FOREIGN:
            response = await client.post(
                "/api/v1/withdrawals", json=WITHDRAWAL, headers={**alice.cookie(), "Origin": origin}
            )
            assert refused(response, 403, "csrf_failed"), (origin, response.text)
        # No Origin and no token: refused as well (browsers send Origin on every POST).
        bare = await client.post("/api/v1/withdrawals", json=WITHDRAWAL, headers=alice.cookie())
        assert refused(bare, 403, "csrf_failed")
        assert await held(client, alice.token) == "0.000000"
        assert (await client.get("/api/v1/withdrawals", headers=bearer(alice.token))).json()["items"] == []
        # The same request from the site itself goes through.
        ok = await client.post(
            "/api/v1/withdrawals", json=WITHDRAWAL, headers={**alice.cookie(), "Origin": ALLOWED}
        )
        assert ok.status_code == 202, ok.text
        assert await held(client, alice.token) == "10.000000"


async def test_state_changes_take_json_bodies_only(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        alice = await browser_signup(client, "alice@example.com")
        body = b'{"asset":"USDC","amount":"10","destination":"0xabc"}'
        site = {**alice.cookie(), "Origin": ALLOWED}
        for content_type in (
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ):
            response = await client.post(
                "/api/v1/withdrawals", content=body, headers={**site, "Content-Type": content_type}
            )
            assert refused(response, 415, "unsupported_media_type"), (content_type, response.text)
        untyped = await client.post("/api/v1/withdrawals", content=body, headers=site)
        assert "content-type" not in untyped.request.headers
        assert refused(untyped, 415, "unsupported_media_type")
        # Bearer requests too: the rule is about the body, not about who sends it.
        as_text = await client.post(
            "/api/v1/withdrawals", content=body, headers={**bearer(alice.token), "Content-Type": "text/plain"}
        )
        assert refused(as_text, 415, "unsupported_media_type")
        assert await held(client, alice.token) == "0.000000"
        # JSON, with or without parameters, goes through.
        ok = await client.post(
            "/api/v1/withdrawals",
            content=body,
            headers={**site, "Content-Type": "Application/JSON; charset=utf-8"},
        )
        assert ok.status_code == 202, ok.text
        assert await held(client, alice.token) == "10.000000"
        # No body at all: whatever the type says, the route decides (DELETE takes none; a POST
        # whose route needs a body gets 400 for the missing body, not 415).
        key = (await client.post("/api/v1/apikeys", json={"label": "k"}, headers=site)).json()["apiKey"]
        gone = await client.delete(f"/api/v1/apikeys/{key}", headers=site)
        assert gone.status_code == 204, gone.text
        empty = await client.post(
            "/api/v1/withdrawals", content=b"", headers={**site, "Content-Type": "text/plain"}
        )
        assert empty.status_code == 400 and empty.json()["code"] == "validation_failed"


async def test_the_double_submit_token_stands_in_for_the_origin(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        alice = await browser_signup(client, "alice@example.com")
        mallory = await browser_signup(client, "mallory@example.com")
        assert alice.csrf and mallory.csrf and alice.csrf != mallory.csrf  # set at sign-in, per session

        async def withdraw(headers: dict[str, str]) -> Any:
            return await client.post("/api/v1/withdrawals", json=WITHDRAWAL, headers=headers)

        failing = [
            {**alice.cookie(), "X-CSRF-Token": alice.csrf[:-1] + ("A" if alice.csrf[-1] != "A" else "B")},
            {**alice.cookie(), "X-CSRF-Token": ""},
            # A cookie and header the attacker chose (planted from a sibling): not this session's.
            {**alice.cookie(csrf="chosen"), "X-CSRF-Token": "chosen"},
            # The attacker's own valid token: made for another session.
            {**alice.cookie(csrf=mallory.csrf), "X-CSRF-Token": mallory.csrf},
            # Right header, but the browser holds no such cookie.
            {"Cookie": f"authToken={alice.token}", "X-CSRF-Token": alice.csrf},
            # A second session cookie next to the victim's (planted): refused, whichever is used.
            {"Cookie": f"authToken={mallory.token}; {alice.cookie()['Cookie']}", "X-CSRF-Token": alice.csrf},
            # A browser's Origin decides: a right token does not excuse a foreign origin.
            {**alice.cookie(), "X-CSRF-Token": alice.csrf, "Origin": EVIL},
        ]
        for headers in failing:
            assert refused(await withdraw(headers), 403, "csrf_failed"), headers
        assert await held(client, alice.token) == "0.000000"
        ok = await withdraw({**alice.cookie(), "X-CSRF-Token": alice.csrf})
        assert ok.status_code == 202, ok.text
        assert await held(client, alice.token) == "10.000000"
        assert await held(client, mallory.token) == "0.000000"


async def test_admin_decisions_by_cookie_need_the_origin_or_the_token(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        player = await browser_signup(client, "player@example.com")
        boss = await browser_admin(client)
        holds = []
        for _ in range(2):
            created = await client.post("/api/v1/withdrawals", json=WITHDRAWAL, headers=bearer(player.token))
            assert created.status_code == 202
            holds.append(created.json()["id"])
        first, second = holds
        for action in ("complete", "reject"):
            for headers in ({**boss.cookie(), "Origin": EVIL}, boss.cookie()):
                response = await client.post(
                    f"/api/v1/admin/withdrawals/{first}/{action}", json={"reference": "x"}, headers=headers
                )
                assert refused(response, 403, "csrf_failed"), (action, headers)
        await wait_committed(client)
        listed = (await client.get("/api/v1/admin/withdrawals", headers=bearer(boss.token))).json()["items"]
        assert {(w["id"], w["status"]) for w in listed} == {(first, "pending"), (second, "pending")}
        assert await held(client, player.token) == "20.000000"
        done = await client.post(
            f"/api/v1/admin/withdrawals/{first}/complete",
            json={"reference": "tx1"},
            headers={**boss.cookie(), "Origin": ALLOWED},
        )
        assert done.status_code == 200 and done.json()["status"] == "completed", done.text
        rejected = await client.post(
            f"/api/v1/admin/withdrawals/{second}/reject",
            json={"reference": "kyc"},
            headers={**boss.cookie(), "X-CSRF-Token": boss.csrf},
        )
        assert rejected.status_code == 200 and rejected.json()["status"] == "rejected", rejected.text
        assert await held(client, player.token) == "0.000000"


async def test_bearer_and_api_key_requests_need_no_origin(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        alice = await browser_signup(client, "alice@example.com")
        h = bearer(alice.token)
        plain = await client.post("/api/v1/withdrawals", json=WITHDRAWAL, headers=h)
        assert plain.status_code == 202, plain.text
        # A bearer header wins over the cookie, and a browser never attaches one by itself.
        mixed = await client.post(
            "/api/v1/withdrawals", json=WITHDRAWAL, headers={**h, **alice.cookie(), "Origin": EVIL}
        )
        assert mixed.status_code == 202, mixed.text
        assert await held(client, alice.token) == "20.000000"
        # `/api/v3`: HMAC-signed form bodies with an API key, as Binance's clients send them.
        await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1000"}, headers=h)
        key = (await client.post("/api/v1/apikeys", json={"label": "bot"}, headers=h)).json()
        hk = {"X-MBX-APIKEY": key["apiKey"]}
        order = dict(
            symbol="BTCUSDC", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="1000"
        )
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        placed = await client.post(
            "/api/v3/order", content=signed(key["secret"], **order), headers={**hk, **form}
        )
        assert placed.status_code == 200 and placed.json()["status"] == "NEW", placed.text
        # It reads no cookie, so a cookie and a foreign Origin change nothing.
        again = await client.post(
            "/api/v3/order",
            content=signed(key["secret"], **order),
            headers={**hk, **form, **alice.cookie(), "Origin": EVIL},
        )
        assert again.status_code == 200, again.text
        as_json = await client.post(
            "/api/v3/order",
            content=signed(key["secret"], **order),
            headers={**hk, "Content-Type": "application/json"},
        )
        assert refused(as_json, 415, "unsupported_media_type")
        cancelled = await client.delete(
            "/api/v3/order?" + signed(key["secret"], symbol="BTCUSDC", orderId=placed.json()["orderId"]),
            headers=hk,
        )
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELED", cancelled.text
        open_orders = await client.get(
            "/api/v3/openOrders?" + signed(key["secret"], symbol="BTCUSDC"), headers=hk
        )
        assert len(open_orders.json()) == 1  # the second order; the JSON one was never placed


async def test_a_refused_request_leaves_its_idempotency_key_unused(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        alice = await browser_signup(client, "alice@example.com")
        key = {"Idempotency-Key": "withdraw-1"}
        foreign = await client.post(
            "/api/v1/withdrawals", json=WITHDRAWAL, headers={**alice.cookie(), **key, "Origin": EVIL}
        )
        assert refused(foreign, 403, "csrf_failed")
        ok = await client.post(
            "/api/v1/withdrawals", json=WITHDRAWAL, headers={**alice.cookie(), **key, "Origin": ALLOWED}
        )
        assert ok.status_code == 202 and "idempotent-replayed" not in ok.headers, ok.text


async def test_sign_in_routes_refuse_a_foreign_origin(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        await browser_signup(client, "alice@example.com")
        credentials = {"email": "alice@example.com", "password": PASSWORD}
        foreign = await client.post("/api/v1/signin", json=credentials, headers={"Origin": EVIL})
        assert refused(foreign, 403, "csrf_failed")
        signup = await client.post(
            "/api/v1/signup",
            json={"email": "new@example.com", "password": PASSWORD},
            headers={"Origin": EVIL},
        )
        assert refused(signup, 403, "csrf_failed")
        for headers in ({"Origin": ALLOWED}, {}):  # the site itself; a client that is no browser
            ok = await client.post("/api/v1/signin", json=credentials, headers=headers)
            client.cookies.clear()
            assert ok.status_code == 200 and ok.cookies.get("authToken"), ok.text


def set_cookies(response: Any) -> dict[str, str]:
    """Set-Cookie headers by cookie name, lower-cased."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        found[header.split("=", 1)[0]] = header.lower()
    return found


async def test_the_session_cookies_follow_the_settings_and_sign_out_clears_both(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], bool, str]] = [
        ({}, False, "lax"),
        ({"public_url": "https://cash.example.com"}, True, "lax"),
        ({"public_url": "https://cash.example.com", "cookie_secure": False}, False, "lax"),
        ({"cookie_secure": True, "cookie_samesite": "strict"}, True, "strict"),
    ]
    for n, (overrides, secure, samesite) in enumerate(cases):
        async with embedded(tmp_path / str(n), **overrides) as client:
            response = await client.post(
                "/api/v1/signup", json={"email": "c@example.com", "password": PASSWORD}
            )
            client.cookies.clear()
            assert response.status_code == 201
            cookies = set_cookies(response)
            assert set(cookies) == {"authToken", "csrfToken"}, overrides
            for header in cookies.values():
                assert (("; secure" in header) == secure) and f"samesite={samesite}" in header, (
                    overrides,
                    header,
                )
                assert "path=/" in header and "max-age=900" in header
            assert "httponly" in cookies["authToken"] and "httponly" not in cookies["csrfToken"]
            site = "https://cash.example.com" if "public_url" in overrides else ALLOWED
            out = await client.post(
                "/api/v1/signout",
                json={"refreshToken": response.json()["refreshToken"]},
                headers={"Cookie": f"authToken={response.json()['token']}", "Origin": site},
            )
            assert out.status_code == 200
            cleared = set_cookies(out)
            assert set(cleared) == {"authToken", "csrfToken"}
            assert all("max-age=0" in header for header in cleared.values()), cleared
