"""Passwordless sign-in on the embedded API: magic links delivered through a real local SMTP
server (aiosmtpd) or kept by the LogMailer, and wallet sign-in with real Ethereum, Solana and
Aptos keys (EIP-4361-style messages signed here, verified by the server)."""

from __future__ import annotations

import asyncio
import base64
import email.message
import email.policy
import hashlib
import html
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import base58
import nacl.signing
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from eth_account import Account
from eth_account.messages import encode_defunct
from litestar.testing import AsyncTestClient

from cashmarkets.auth.wallets import build_message
from cashmarkets.integrations.email import MAGIC_LINK_SUBJECT, LogMailer, plain_text_body
from tests.integration.api_helpers import bearer, embedded, services_of, signup
from tests.support.ports import free_port

HOST = "127.0.0.1"
PUBLIC_URL = "http://testserver.local"  # the test client's own base URL: links point at it
LINK_RE = re.compile(r"https?://\S+/api/v1/signin/post\?token=[A-Za-z0-9_\-]+")


# ---- a real SMTP server ---------------------------------------------------------------------------


@dataclass
class Inbox:
    """aiosmtpd handler: keeps every message it accepts."""

    received: list[tuple[list[str], email.message.EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        parsed = BytesParser(policy=email.policy.default).parsebytes(content)
        assert isinstance(parsed, email.message.EmailMessage)
        self.received.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def link_in(message: email.message.EmailMessage) -> str:
    text = plain_text_body(message)
    assert text is not None
    found = LINK_RE.findall(text)
    assert len(found) == 1, text
    link: str = found[0]
    return link


async def request_link(client: AsyncTestClient[Any], address: str) -> bytes:
    """Ask for a link; the answer's body (the same whether or not the email is known)."""
    response = await client.post("/api/v1/signin", json={"email": address})
    assert response.status_code == 202, response.text
    assert "set-cookie" not in response.headers
    return response.content


PAGE_TOKEN_RE = re.compile(r'data-token="([^"]*)"')


def page_token(page: str) -> str:
    found = PAGE_TOKEN_RE.findall(page)
    assert len(found) == 1, page
    return html.unescape(found[0])


async def follow(client: AsyncTestClient[Any], link: str) -> Any:
    """Open the link and press the page's button, as a browser would: the GET (which must sign
    nobody in), then the page's same-origin JSON POST of its token. The POST's answer (or the GET's,
    when it refuses the link); the cookie jar is left empty."""
    page = await client.get(link, follow_redirects=False)
    assert "set-cookie" not in page.headers
    if page.status_code != 200:
        return page
    response = await client.post(
        "/api/v1/signin/link", json={"token": page_token(page.text)}, headers={"Origin": PUBLIC_URL}
    )
    client.cookies.clear()
    return response


async def usdc(client: AsyncTestClient[Any], headers: dict[str, str]) -> str:
    balances = (await client.get("/api/v1/balance", headers=headers)).json()["balances"]
    found: str = next(b["balance"] for b in balances if b["asset"] == "USDC")
    return found


# ---- magic links ----------------------------------------------------------------------------------


async def test_magic_link_by_real_smtp_signs_in_once(tmp_path: Path, inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    async with embedded(tmp_path, smtp_url=f"smtp://{HOST}:{port}", public_url=PUBLIC_URL) as client:
        known = await signup(client, "known@example.com")
        # Known or not, the answer is the same: it tells nobody whether an account exists.
        assert await request_link(client, "Known@Example.com") == await request_link(
            client, "stranger@example.com"
        )
        assert len(handler.received) == 2
        (to_known, mail_known), (to_stranger, mail_stranger) = handler.received
        assert to_known == ["known@example.com"] and mail_known["To"] == "known@example.com"
        assert to_stranger == ["stranger@example.com"]
        assert mail_known["Subject"] == MAGIC_LINK_SUBJECT
        link = link_in(mail_known)
        assert link.startswith(f"{PUBLIC_URL}/api/v1/signin/post?token=")
        assert link != link_in(mail_stranger)

        opened = await follow(client, link)
        assert opened.status_code == 200, opened.text
        token = opened.cookies.get("authToken")
        assert token and token == opened.json()["token"] and opened.json()["refreshToken"]
        assert opened.json()["user"]["id"] == known["user"]["id"]
        set_cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie
        assert opened.cookies.get("csrfToken")
        me = await client.get("/api/v1/me", headers={"Cookie": f"authToken={token}"})
        assert me.status_code == 200 and me.json()["id"] == known["user"]["id"]
        assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200

        reused = await follow(client, link)
        assert reused.status_code == 401 and reused.json()["code"] == "link_invalid"
        assert "authtoken" not in reused.headers.get("set-cookie", "").lower()
        forged = await follow(client, f"{PUBLIC_URL}/api/v1/signin/post?token=not-a-real-token")
        assert forged.status_code == 401 and forged.json()["code"] == "link_invalid"

        # The stranger's link makes an account, with the demo balance.
        created = await follow(client, link_in(mail_stranger))
        assert created.status_code == 200
        stranger = bearer(created.cookies["authToken"])
        me = (await client.get("/api/v1/me", headers=stranger)).json()
        assert me["email"] == "stranger@example.com" and me["role"] == "player"
        assert me["id"] != known["user"]["id"]
        assert await usdc(client, stranger) == "5000.000000"
        # A second link for them signs in the same account, and no second welcome credit.
        await request_link(client, "stranger@example.com")
        again = await follow(client, link_in(handler.received[-1][1]))
        assert again.status_code == 200
        assert (await client.get("/api/v1/me", headers=bearer(again.cookies["authToken"]))).json()[
            "id"
        ] == me["id"]
        assert await usdc(client, stranger) == "5000.000000"


async def test_an_expired_magic_link_is_refused(tmp_path: Path, inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    async with embedded(
        tmp_path, smtp_url=f"smtp://{HOST}:{port}", public_url=PUBLIC_URL, magic_link_ttl_s=1
    ) as client:
        await signup(client, "late@example.com")
        await request_link(client, "late@example.com")
        link = link_in(handler.received[-1][1])
        await asyncio.sleep(1.2)
        expired = await follow(client, link)
        assert expired.status_code == 401 and expired.json()["code"] == "link_invalid"
        # A fresh link, used at once, works.
        await request_link(client, "late@example.com")
        fresh = await follow(client, link_in(handler.received[-1][1]))
        assert fresh.status_code == 200


async def test_without_smtp_the_log_mailer_keeps_the_link(tmp_path: Path) -> None:
    async with embedded(tmp_path, public_url=PUBLIC_URL) as client:
        known = await signup(client, "logged@example.com")
        await request_link(client, "logged@example.com")
        mailer = services_of(client).mailer
        assert isinstance(mailer, LogMailer)
        sent = mailer.sent[-1]
        assert sent["To"] == "logged@example.com"
        opened = await follow(client, link_in(sent))
        assert opened.status_code == 200
        me = await client.get("/api/v1/me", headers=bearer(opened.cookies["authToken"]))
        assert me.json()["id"] == known["user"]["id"]
        # A malformed email is refused before anything is sent.
        before = len(mailer.sent)
        bad = await client.post("/api/v1/signin", json={"email": "not-an-email"})
        assert bad.status_code == 400
        assert len(mailer.sent) == before


def csp_hash(page: str, tag: str) -> str:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
    assert len(found) == 1, page
    return "'sha256-" + base64.b64encode(hashlib.sha256(found[0].encode()).digest()).decode() + "'"


async def test_opening_a_link_signs_nobody_in_until_its_page_confirms(tmp_path: Path) -> None:
    async with embedded(tmp_path, public_url=PUBLIC_URL) as client:
        address = "o'neil&co@example.com"  # quote and ampersand: both must come out escaped
        known = await signup(client, address)
        await request_link(client, address)
        mailer = services_of(client).mailer
        assert isinstance(mailer, LogMailer)
        link = link_in(mailer.sent[-1])
        # Opened (by the user, a mail scanner, a page of another site): a page, no session.
        for _ in range(2):
            page = await client.get(link, follow_redirects=False)
            assert page.status_code == 200, page.text
            assert "set-cookie" not in page.headers and not client.cookies
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["cache-control"] == "no-store"
            assert page.headers["referrer-policy"] == "no-referrer"
            csp = page.headers["content-security-policy"]
            for directive in ("default-src 'none'", "frame-ancestors 'none'", "connect-src 'self'"):
                assert directive in csp, csp
            assert f"script-src {csp_hash(page.text, 'script')};" in csp
            assert f"style-src {csp_hash(page.text, 'style')};" in csp
            assert "o&#x27;neil&amp;co@example.com" in page.text and address not in page.text
            assert "src=" not in page.text and "href=" not in page.text and "url(" not in page.text
            assert 'data-next="http://testserver.local/"' in page.text
            assert ">Sign in</button>" in page.text
        token = page_token(page.text)
        assert link.endswith(f"token={token}")
        # The page's POST from another origin (a sibling, another port): refused, link kept.
        for origin in ("http://evil.example", "http://testserver.local:8080", "null"):
            foreign = await client.post(
                "/api/v1/signin/link", json={"token": token}, headers={"Origin": origin}
            )
            assert foreign.status_code == 403 and foreign.json()["code"] == "csrf_failed", origin
            assert "set-cookie" not in foreign.headers
        as_form = await client.post(
            "/api/v1/signin/link",
            content=f"token={token}",
            headers={"Origin": PUBLIC_URL, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert as_form.status_code == 415 and "set-cookie" not in as_form.headers
        assert (await client.get(link)).status_code == 200
        # From the site itself: signed in, once.
        confirmed = await client.post(
            "/api/v1/signin/link", json={"token": token}, headers={"Origin": PUBLIC_URL}
        )
        client.cookies.clear()
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["user"]["id"] == known["user"]["id"]
        assert confirmed.cookies["authToken"] == confirmed.json()["token"]
        me = await client.get("/api/v1/me", headers=bearer(confirmed.json()["token"]))
        assert me.json()["id"] == known["user"]["id"]
        used = await client.post("/api/v1/signin/link", json={"token": token}, headers={"Origin": PUBLIC_URL})
        assert used.status_code == 401 and used.json()["code"] == "link_invalid"
        assert "set-cookie" not in used.headers
        reopened = await client.get(link)
        assert reopened.status_code == 401 and reopened.json()["code"] == "link_invalid"
        unknown = await client.post("/api/v1/signin/link", json={"token": "not-a-real-token"})
        assert unknown.status_code == 401 and unknown.json()["code"] == "link_invalid"


async def test_the_link_request_answers_sent_true(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        await signup(client, "sent@example.com")
        for address in ("sent@example.com", "unknown@example.com"):
            response = await client.post("/api/v1/signin", json={"email": address})
            assert response.status_code == 202
            assert response.json() == {"sent": True}, address


# ---- wallets --------------------------------------------------------------------------------------

CHAIN_IDS = {"ethereum": "1", "solana": "mainnet", "aptos": "aptos:mainnet"}


@dataclass
class Wallet:
    chain: str
    address: str
    sign: Callable[[str], str]
    public_key: str | None = None


def ethereum_wallet() -> Wallet:
    account = Account.create()

    def sign(message: str) -> str:
        signed = account.sign_message(encode_defunct(text=message))
        return "0x" + bytes(signed.signature).hex()

    return Wallet("ethereum", account.address, sign)


def solana_wallet() -> Wallet:
    key = nacl.signing.SigningKey.generate()
    address = base58.b58encode(bytes(key.verify_key)).decode()

    def sign(message: str) -> str:
        return base58.b58encode(key.sign(message.encode()).signature).decode()

    return Wallet("solana", address, sign)


def aptos_wallet() -> Wallet:
    key = nacl.signing.SigningKey.generate()
    public = bytes(key.verify_key)
    address = "0x" + hashlib.sha3_256(public + b"\x00").hexdigest()

    def sign(message: str) -> str:
        return str(key.sign(message.encode()).signature.hex())

    return Wallet("aptos", address, sign, public_key=public.hex())


WALLETS: dict[str, Callable[[], Wallet]] = {
    "ethereum": ethereum_wallet,
    "solana": solana_wallet,
    "aptos": aptos_wallet,
}


async def nonce_for(client: AsyncTestClient[Any], chain: str, address: str) -> dict[str, Any]:
    response = await client.get("/api/v1/auth/nonce", params={"chain": chain, "address": address})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def message_for(wallet: Wallet, challenge: dict[str, Any], **changes: Any) -> str:
    fields: dict[str, Any] = {
        "domain": challenge["domain"],
        "chain": wallet.chain,
        "address": wallet.address,
        "uri": challenge["uri"],
        "chain_id": CHAIN_IDS[wallet.chain],
        "nonce": challenge["nonce"],
        "issued_at_ns": time.time_ns(),
        "statement": "Sign in to Cash Markets.",
        **changes,
    }
    text: str = build_message(**fields)
    return text


def signin_body(wallet: Wallet, message: str, signature: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "signature": signature or wallet.sign(message)}
    if wallet.public_key is not None:
        body["publicKey"] = wallet.public_key
    return body


async def wallet_signin(client: AsyncTestClient[Any], body: dict[str, Any]) -> Any:
    response = await client.post("/api/v1/auth/wallet", json=body)
    client.cookies.clear()
    return response


@pytest.mark.parametrize("chain", ["ethereum", "solana", "aptos"])
async def test_wallet_signin_creates_then_finds_the_user_and_nonces_are_single_use(
    tmp_path: Path, chain: str
) -> None:
    async with embedded(tmp_path) as client:
        wallet = WALLETS[chain]()
        challenge = await nonce_for(client, chain, wallet.address)
        assert challenge["chain"] == chain
        assert challenge["domain"] == "127.0.0.1:8000" and challenge["uri"] == "http://127.0.0.1:8000"
        assert challenge["expiresAtNs"] > time.time_ns()
        message = message_for(wallet, challenge)
        body = signin_body(wallet, message)
        first = await wallet_signin(client, body)
        assert first.status_code == 200, first.text
        tokens = first.json()
        assert tokens["token"] and tokens["refreshToken"]
        assert tokens["user"]["email"] is None and tokens["user"]["role"] == "player"
        assert first.cookies.get("authToken") == tokens["token"]
        h = bearer(tokens["token"])
        assert (await client.get("/api/v1/me", headers=h)).json()["id"] == tokens["user"]["id"]
        assert await usdc(client, h) == "5000.000000"

        # The same signed message again: its nonce is spent.
        replayed = await wallet_signin(client, body)
        assert replayed.status_code == 401 and replayed.json()["code"] == "nonce_invalid"

        # A new nonce: the same user comes back, without a second welcome credit.
        second = await wallet_signin(
            client, signin_body(wallet, message_for(wallet, await nonce_for(client, chain, wallet.address)))
        )
        assert second.status_code == 200, second.text
        assert second.json()["user"]["id"] == tokens["user"]["id"]
        assert await usdc(client, h) == "5000.000000"

        # The same wallet's address spelled another valid way is the same identity.
        if chain in ("ethereum", "aptos"):
            other_spelling = wallet.address.lower() if chain == "ethereum" else wallet.address.upper()
            other_spelling = "0x" + other_spelling[2:]
            challenge = await nonce_for(client, chain, other_spelling)
            assert challenge["address"] == wallet.address.lower()
            spelled = Wallet(wallet.chain, other_spelling, wallet.sign, wallet.public_key)
            third = await wallet_signin(client, signin_body(spelled, message_for(spelled, challenge)))
            assert third.status_code == 200, third.text
            assert third.json()["user"]["id"] == tokens["user"]["id"]

        # Another wallet is another user.
        other = WALLETS[chain]()
        theirs = await wallet_signin(
            client, signin_body(other, message_for(other, await nonce_for(client, chain, other.address)))
        )
        assert theirs.status_code == 200 and theirs.json()["user"]["id"] != tokens["user"]["id"]


@pytest.mark.parametrize("chain", ["ethereum", "solana", "aptos"])
async def test_wallet_signin_refuses_forgeries(tmp_path: Path, chain: str) -> None:
    async with embedded(tmp_path) as client:
        wallet, impostor = WALLETS[chain](), WALLETS[chain]()

        # Signed by another key (for aptos, also with the impostor's own public key).
        challenge = await nonce_for(client, chain, wallet.address)
        message = message_for(wallet, challenge)
        forged = await wallet_signin(client, signin_body(wallet, message, impostor.sign(message)))
        assert forged.status_code == 401 and forged.json()["code"] == "bad_signature"
        if chain == "aptos":
            body = {**signin_body(impostor, message), "publicKey": impostor.public_key}
            wrong_key = await wallet_signin(client, body)
            assert wrong_key.status_code == 401 and wrong_key.json()["code"] == "bad_signature"
            no_key = {k: v for k, v in signin_body(wallet, message).items() if k != "publicKey"}
            missing = await wallet_signin(client, no_key)
            assert missing.status_code == 401 and missing.json()["code"] == "bad_signature"
        # The message altered after signing.
        altered = message.replace("Sign in to Cash Markets.", "Sign in to Cash Markets!")
        changed = await wallet_signin(client, signin_body(wallet, altered, wallet.sign(message)))
        assert changed.status_code == 401 and changed.json()["code"] == "bad_signature"
        # The refusals did not spend the nonce: the genuine signature still works once.
        genuine = await wallet_signin(client, signin_body(wallet, message))
        assert genuine.status_code == 200, genuine.text

        # A nonce issued for another address, used in a message the impostor really signed.
        theirs = await nonce_for(client, chain, wallet.address)
        stolen = message_for(impostor, theirs)
        misused = await wallet_signin(client, signin_body(impostor, stolen))
        assert misused.status_code == 401 and misused.json()["code"] == "nonce_invalid"
        # A nonce the server never issued.
        made_up = message_for(impostor, {**theirs, "nonce": "0123456789abcdef0123456789abcdef"})
        unknown = await wallet_signin(client, signin_body(impostor, made_up))
        assert unknown.status_code == 401 and unknown.json()["code"] == "nonce_invalid"

        # Another domain (a phishing site relaying our nonce), and another chain's display name.
        challenge = await nonce_for(client, chain, wallet.address)
        phishing = message_for(wallet, {**challenge, "domain": "evil.example"})
        wrong_domain = await wallet_signin(client, signin_body(wallet, phishing))
        assert wrong_domain.status_code == 401 and wrong_domain.json()["code"] == "domain_mismatch"
        # Our domain, but a URI on another site (what the wallet shows the user): before, only the
        # domain was checked and this signed in.
        for uri in ("https://evil.example/login", "http://127.0.0.1:8001/", "https://127.0.0.1:8000/"):
            foreign = message_for(wallet, {**challenge, "uri": uri})
            wrong_uri = await wallet_signin(client, signin_body(wallet, foreign))
            assert wrong_uri.status_code == 401 and wrong_uri.json()["code"] == "uri_mismatch", uri
        # Any page on the configured origin is ours.
        assert challenge["uri"] == "http://127.0.0.1:8000"
        # An expired message, and one issued in the future.
        old = message_for(wallet, challenge, expiration_ns=time.time_ns() - 1_000_000_000)
        expired = await wallet_signin(client, signin_body(wallet, old))
        assert expired.status_code == 401 and expired.json()["code"] == "expired"
        future = message_for(wallet, challenge, issued_at_ns=time.time_ns() + 3600 * 1_000_000_000)
        early = await wallet_signin(client, signin_body(wallet, future))
        assert early.status_code == 401 and early.json()["code"] == "not_yet_valid"
        garbage = await wallet_signin(client, {"message": "hello", "signature": "00"})
        assert garbage.status_code == 401 and garbage.json()["code"] == "malformed_message"
        # None of that spent the challenge's nonce (signed here for a page on our origin).
        page = message_for(wallet, {**challenge, "uri": "http://127.0.0.1:8000/login?next=%2Fspot"})
        ok = await wallet_signin(client, signin_body(wallet, page))
        assert ok.status_code == 200, ok.text


async def test_an_expired_wallet_nonce_is_refused(tmp_path: Path) -> None:
    async with embedded(tmp_path, wallet_nonce_ttl_s=1) as client:
        wallets = [ethereum_wallet(), solana_wallet(), aptos_wallet()]
        messages = [message_for(w, await nonce_for(client, w.chain, w.address)) for w in wallets]
        await asyncio.sleep(1.2)
        for wallet, message in zip(wallets, messages, strict=True):
            late = await wallet_signin(client, signin_body(wallet, message))
            assert late.status_code == 401 and late.json()["code"] == "nonce_invalid", wallet.chain
        # A nonce used within its lifetime works.
        wallet = wallets[0]
        fresh = await wallet_signin(
            client,
            signin_body(wallet, message_for(wallet, await nonce_for(client, wallet.chain, wallet.address))),
        )
        assert fresh.status_code == 200


async def test_the_nonce_endpoint_refuses_bad_chains_and_addresses(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        eth, sol = ethereum_wallet(), solana_wallet()
        mixed_bad_checksum = "0x" + "".join(
            c.lower() if c.isupper() else c.upper() if c.isalpha() else c for c in eth.address[2:]
        )
        cases = [
            ({"chain": "bitcoin", "address": eth.address}, "unsupported_chain"),
            ({"chain": "Ethereum", "address": eth.address}, "unsupported_chain"),
            ({"chain": "ethereum", "address": "0x1234"}, "bad_address"),
            ({"chain": "ethereum", "address": sol.address}, "bad_address"),
            ({"chain": "ethereum", "address": "0x" + "g" * 40}, "bad_address"),
            ({"chain": "solana", "address": eth.address}, "bad_address"),
            ({"chain": "solana", "address": "0OIl" * 8}, "bad_address"),
            ({"chain": "aptos", "address": "0x"}, "bad_address"),
            ({"chain": "aptos", "address": "0x" + "a" * 65}, "bad_address"),
            ({"chain": "aptos", "address": sol.address}, "bad_address"),
        ]
        flipped = mixed_bad_checksum[2:]
        if any(c.islower() for c in flipped) and any(c.isupper() for c in flipped):
            cases.append(({"chain": "ethereum", "address": mixed_bad_checksum}, "bad_address"))
        for params, code in cases:
            response = await client.get("/api/v1/auth/nonce", params=params)
            assert response.status_code == 400, params
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == code, params
        for params in (
            {"chain": "ethereum"},
            {"address": eth.address},
            {"chain": "ethereum", "address": ""},
            {"chain": "x" * 17, "address": eth.address},
            {"chain": "ethereum", "address": "0x" + "a" * 200},
        ):
            response = await client.get("/api/v1/auth/nonce", params=params)
            assert response.status_code == 400, params
        # Nonces are fresh each time.
        nonces = {(await nonce_for(client, "ethereum", eth.address))["nonce"] for _ in range(3)}
        assert len(nonces) == 3
