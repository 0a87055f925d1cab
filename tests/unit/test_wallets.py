from __future__ import annotations

import base64
import hashlib
from typing import Any

import base58
import msgspec
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from cashmarkets.auth.wallets import (
    CHAINS,
    ISSUED_AT_MAX_SKEW_NS,
    MESSAGE_BYTES_MAX,
    SignInMessage,
    WalletAuthError,
    build_message,
    format_message,
    normalize_address,
    parse_message,
    uri_origin,
    verify,
)

S = 1_000_000_000
NOW = 1_714_564_800 * S  # 2024-05-01T12:00:00Z
DOMAIN = "example.com"
ORIGIN = "https://example.com"

# --- real keys and signers ---------------------------------------------------------------------

ETH = Account.create()
ETH_OTHER = Account.create()
SOL = SigningKey.generate()
SOL_OTHER = SigningKey.generate()
APT = SigningKey.generate()
APT_OTHER = SigningKey.generate()


def sol_address(key: SigningKey) -> str:
    return base58.b58encode(bytes(key.verify_key)).decode()


def apt_public_key(key: SigningKey) -> str:
    return "0x" + bytes(key.verify_key).hex()


def apt_address(key: SigningKey) -> str:
    return "0x" + hashlib.sha3_256(bytes(key.verify_key) + b"\x00").hexdigest()


def eth_sign(text: str, account: Any = ETH) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def sol_sign(text: str, key: SigningKey = SOL) -> str:
    return base58.b58encode(key.sign(text.encode()).signature).decode()


def apt_sign(text: str, key: SigningKey = APT) -> str:
    return "0x" + key.sign(text.encode()).signature.hex()


def fields(chain: str = "ethereum", **over: Any) -> dict[str, Any]:
    address = {"ethereum": ETH.address, "solana": sol_address(SOL), "aptos": apt_address(APT)}[chain]
    f: dict[str, Any] = {
        "domain": DOMAIN,
        "chain": chain,
        "address": address,
        "statement": "Sign in to CashMarkets.",
        "uri": "https://example.com/login",
        "chain_id": {"ethereum": "1", "solana": "mainnet", "aptos": "aptos:mainnet"}[chain],
        "nonce": "k3JhQ9xPz2Lm",
        "issued_at_ns": NOW - 10 * S,
        "expiration_ns": NOW + 600 * S,
    }
    f.update(over)
    return f


def signed(chain: str, **over: Any) -> tuple[str, str, str | None]:
    """(text, signature, public_key) signed by the chain's main key."""
    text = build_message(**fields(chain, **over))
    if chain == "ethereum":
        return text, eth_sign(text), None
    if chain == "solana":
        return text, sol_sign(text), None
    return text, apt_sign(text), apt_public_key(APT)


def check(
    text: str,
    sig: str,
    pk: str | None = None,
    *,
    now: int = NOW,
    domain: str = DOMAIN,
    origin: str = ORIGIN,
) -> SignInMessage:
    return verify(text, sig, expected_domain=domain, expected_origin=origin, now_ns=now, public_key=pk)


def code_of(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(WalletAuthError) as info:
        fn(*args, **kwargs)
    return info.value.code


# --- valid sign-ins ----------------------------------------------------------------------------


@pytest.mark.parametrize("chain", CHAINS)
def test_valid_sign_in(chain: str) -> None:
    text, sig, pk = signed(chain)
    msg = check(text, sig, pk)
    assert msg == parse_message(text)
    assert msg.chain == chain
    assert msg.address == fields(chain)["address"]
    assert msg.nonce == "k3JhQ9xPz2Lm"


def test_ethereum_signature_encodings() -> None:
    text, sig, _ = signed("ethereum")
    raw = bytes.fromhex(sig[2:])
    check(text, sig[2:])  # without 0x
    check(text, sig.upper().replace("0X", "0x"))  # upper-case hex
    check(text, "0x" + (raw[:64] + bytes([raw[64] - 27])).hex())  # v as 0/1
    assert code_of(check, text, "0x" + (raw[:64] + bytes([raw[64] + 8])).hex()) == "bad_signature"
    assert code_of(check, text, "0x" + raw[:64].hex()) == "bad_signature"  # 64 bytes
    assert code_of(check, text, "0X" + raw.hex()) == "bad_signature"
    assert code_of(check, text, " " + sig) == "bad_signature"


def test_ethereum_lowercase_address_accepted() -> None:
    text = build_message(**fields("ethereum", address=ETH.address.lower()))
    assert check(text, eth_sign(text)).address == ETH.address.lower()


def test_solana_signature_base64_accepted() -> None:
    text = build_message(**fields("solana"))
    raw = SOL.sign(text.encode()).signature
    check(text, base64.b64encode(raw).decode())
    check(text, base58.b58encode(raw).decode(), "ignored for solana")
    assert code_of(check, text, base64.b64encode(raw).decode().rstrip("=")) == "bad_signature"
    assert code_of(check, text, base64.urlsafe_b64encode(raw[:63]).decode()) == "bad_signature"
    assert code_of(check, text, raw.hex()) == "bad_signature"


def test_aptos_address_normalization_in_verify() -> None:
    # Upper-case hex and a short (leading zeros dropped) spelling name the same account.
    text = build_message(**fields("aptos", address="0x" + apt_address(APT)[2:].upper()))
    check(text, apt_sign(text), apt_public_key(APT)[2:])  # public key without 0x too
    seed = 0
    while True:
        key = SigningKey(seed.to_bytes(32, "big"))
        if apt_address(key).startswith("0x0"):
            break
        seed += 1
    short = "0x" + apt_address(key)[2:].lstrip("0")
    text = build_message(**fields("aptos", address=short))
    assert check(text, apt_sign(text, key), apt_public_key(key)).address == short


# --- golden vectors ----------------------------------------------------------------------------

EIP_EXAMPLE = (
    "example.com wants you to sign in with your Ethereum account:\n"
    "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n"
    "\n"
    "I accept the ExampleOrg Terms of Service: https://example.com/tos\n"
    "\n"
    "URI: https://example.com/login\n"
    "Version: 1\n"
    "Chain ID: 1\n"
    "Nonce: 32891756\n"
    "Issued At: 2021-09-30T16:25:24Z\n"
    "Resources:\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
    "- https://example.com/my-web2-claim.json"
)


def test_eip4361_example_parses_and_rebuilds_exactly() -> None:
    msg = parse_message(EIP_EXAMPLE)
    assert msg == SignInMessage(
        domain="example.com",
        chain="ethereum",
        address="0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
        statement="I accept the ExampleOrg Terms of Service: https://example.com/tos",
        uri="https://example.com/login",
        version="1",
        chain_id="1",
        nonce="32891756",
        issued_at_ns=1_633_019_124 * S,
        resources=(
            "ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
            "https://example.com/my-web2-claim.json",
        ),
    )
    assert format_message(msg) == EIP_EXAMPLE
    assert normalize_address("ethereum", msg.address) == msg.address.lower()


def test_golden_eth_key_signs_fixed_message() -> None:
    key = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    account = Account.from_key(key)
    text = build_message(
        domain="cash.example",
        chain="ethereum",
        address=account.address,
        statement="Golden vector.",
        uri="https://cash.example/",
        chain_id="1",
        nonce="GoldenNonce0001",
        issued_at_ns=NOW,
    )
    sig = bytes(Account.sign_message(encode_defunct(text=text), private_key=key).signature)
    # RFC 6979 signatures are deterministic: the same key and text always give the same bytes.
    assert sig == bytes(Account.sign_message(encode_defunct(text=text), private_key=key).signature)
    assert Account.recover_message(encode_defunct(text=text), signature=sig) == account.address
    assert account.address == to_checksum_address(account.address)
    golden = {"expected_domain": "cash.example", "expected_origin": "https://cash.example"}
    msg = verify(text, sig.hex(), **golden, now_ns=NOW)
    assert msg.address == account.address
    # The same signature does not verify for a different (random) account's address.
    other = text.replace(account.address, ETH_OTHER.address)
    assert code_of(verify, other, sig.hex(), **golden, now_ns=NOW) == "bad_signature"


# --- rejections --------------------------------------------------------------------------------


@pytest.mark.parametrize("chain", CHAINS)
def test_signature_by_another_key_rejected(chain: str) -> None:
    text = build_message(**fields(chain))
    if chain == "ethereum":
        sig, pk = eth_sign(text, ETH_OTHER), None
    elif chain == "solana":
        sig, pk = sol_sign(text, SOL_OTHER), None
    else:
        sig, pk = apt_sign(text, APT_OTHER), apt_public_key(APT)
    assert code_of(check, text, sig, pk) == "bad_signature"


@pytest.mark.parametrize("chain", CHAINS)
def test_message_edited_after_signing_rejected(chain: str) -> None:
    text, sig, pk = signed(chain)
    edited = text.replace("k3JhQ9xPz2Lm", "k3JhQ9xPz2Ln")
    assert parse_message(edited).nonce == "k3JhQ9xPz2Ln"
    assert code_of(check, edited, sig, pk) == "bad_signature"
    edited = text.replace("Sign in to CashMarkets.", "Sign in to CashMarkets!")
    assert code_of(check, edited, sig, pk) == "bad_signature"


@pytest.mark.parametrize("chain", CHAINS)
def test_wrong_domain(chain: str) -> None:
    text, sig, pk = signed(chain)
    assert code_of(check, text, sig, pk, domain="evil.example") == "domain_mismatch"
    assert code_of(check, text, sig, pk, domain="Example.com") == "domain_mismatch"  # exact match


@pytest.mark.parametrize("chain", CHAINS)
def test_a_uri_on_another_site_is_refused(chain: str) -> None:
    # Before: only the domain line was checked; a message whose URI (what the wallet shows the
    # user) named another site, signed for our domain, signed in.
    for uri in (
        "https://evil.example/login",
        "http://example.com/login",  # another scheme is another origin
        "https://example.com:8443/",
        "https://example.com.evil.example/",
        "https://example.com@evil.example/",
        "https://evil.example@example.com/",  # userinfo never matches
        "urn:example.com",
    ):
        text, sig, pk = signed(chain, uri=uri)
        assert code_of(check, text, sig, pk) == "uri_mismatch", uri
    # The same origin with any path, case in scheme and host, or an explicit default port is ours.
    for uri in ("https://example.com", "HTTPS://Example.COM/a/b?c=d#e", "https://example.com:443/login"):
        text, sig, pk = signed(chain, uri=uri)
        assert check(text, sig, pk).uri == uri
    text, sig, pk = signed(chain, uri="http://127.0.0.1:8000/")
    assert check(text, sig, pk, origin="http://127.0.0.1:8000").address
    assert code_of(check, text, sig, pk, origin="http://127.0.0.1:8001") == "uri_mismatch"


def test_uri_origin() -> None:
    assert uri_origin("https://Example.com:443/x") == "https://example.com"
    assert uri_origin("http://[::1]:8000/") == "http://[::1]:8000"
    assert uri_origin("http://example.com:80") == "http://example.com"
    assert uri_origin("http://example.com:99999/") is None
    assert uri_origin("https://user@example.com/") is None
    assert uri_origin("mailto:a@example.com") is None
    assert uri_origin("example.com") is None


@pytest.mark.parametrize("chain", CHAINS)
def test_time_window(chain: str) -> None:
    text, sig, pk = signed(chain, expiration_ns=NOW + 60 * S)
    check(text, sig, pk, now=NOW + 60 * S - 1)
    assert code_of(check, text, sig, pk, now=NOW + 60 * S) == "expired"
    assert code_of(check, text, sig, pk, now=NOW + 3600 * S) == "expired"

    text, sig, pk = signed(chain, not_before_ns=NOW + 30 * S)
    assert code_of(check, text, sig, pk) == "not_yet_valid"
    check(text, sig, pk, now=NOW + 30 * S)

    text, sig, pk = signed(chain, issued_at_ns=NOW + ISSUED_AT_MAX_SKEW_NS + 1, expiration_ns=None)
    assert code_of(check, text, sig, pk) == "not_yet_valid"
    text, sig, pk = signed(chain, issued_at_ns=NOW + ISSUED_AT_MAX_SKEW_NS, expiration_ns=None)
    check(text, sig, pk)
    text, sig, pk = signed(chain, issued_at_ns=NOW + 3600 * S, expiration_ns=NOW + 7200 * S)
    assert code_of(check, text, sig, pk) == "not_yet_valid"


def flip_case(address: str) -> str:
    for i, c in enumerate(address[2:], 2):
        if c.isalpha():
            return address[:i] + c.swapcase() + address[i + 1 :]
    raise AssertionError("address has no letters")


def test_eip55_bad_checksum_rejected() -> None:
    account = ETH
    while not any(c.isalpha() for c in account.address[2:]):
        account = Account.create()
    bad = flip_case(account.address)
    assert bad.lower() == account.address.lower()
    assert code_of(normalize_address, "ethereum", bad) == "bad_address"
    assert code_of(build_message, **fields("ethereum", address=bad)) == "bad_address"
    good = build_message(**fields("ethereum", address=account.address))
    text = good.replace(account.address, bad)
    # The signature itself is fine for this (edited) text; the address check must catch it first.
    assert code_of(check, text, eth_sign(text, account)) == "bad_address"


@pytest.mark.parametrize(
    ("chain", "address"),
    [
        ("ethereum", "0x" + "ab" * 19),
        ("ethereum", "0x" + "zz" * 20),
        ("ethereum", "ab" * 21),
        ("solana", "0x" + "ab" * 32),  # not base58 ("0" is not in the alphabet)
        ("solana", "1" * 31),  # 31 bytes
        ("solana", "z" * 44),  # more than 32 bytes
        ("aptos", "0x" + "a" * 65),
        ("aptos", "a" * 64),
        ("aptos", "0xg1"),
    ],
)
def test_bad_addresses(chain: str, address: str) -> None:
    assert code_of(normalize_address, chain, address) == "bad_address"
    text = build_message(**fields(chain)).replace(fields(chain)["address"], address)
    _, sig, pk = signed(chain)
    assert code_of(check, text, sig, pk) == "bad_address"


def test_aptos_public_key_checks() -> None:
    text, sig, pk = signed("aptos")
    assert code_of(check, text, sig, None) == "bad_signature"
    assert code_of(check, text, sig, apt_public_key(APT_OTHER)) == "bad_signature"
    # A key that matches a different message address: signature made by that key is still refused.
    other_text = build_message(**fields("aptos", address=apt_address(APT_OTHER)))
    assert code_of(check, other_text, apt_sign(other_text, APT), pk) == "bad_signature"
    assert code_of(check, text, sig, "0x" + "00" * 31) == "bad_signature"
    assert code_of(check, text, sig, "not hex at all") == "bad_signature"
    assert code_of(check, text, base58.b58encode(bytes.fromhex(sig[2:])).decode(), pk) == "bad_signature"
    check(text, sig[2:], pk)  # signature without 0x


def test_normalize_address() -> None:
    assert normalize_address("ethereum", ETH.address) == ETH.address.lower()
    assert normalize_address("ethereum", ETH.address.lower()) == ETH.address.lower()
    assert normalize_address("ethereum", "0x" + ETH.address[2:].upper()) == ETH.address.lower()
    assert normalize_address("solana", sol_address(SOL)) == sol_address(SOL)
    assert normalize_address("solana", "1" * 32) == "1" * 32  # 32 zero bytes
    assert normalize_address("aptos", "0x1") == "0x" + "0" * 63 + "1"
    assert normalize_address("aptos", "0xABC") == "0x" + "0" * 61 + "abc"
    assert normalize_address("aptos", apt_address(APT)) == apt_address(APT)
    assert code_of(normalize_address, "bitcoin", "x") == "unsupported_chain"
    assert code_of(normalize_address, "Ethereum", ETH.address) == "unsupported_chain"


# --- strict parsing ----------------------------------------------------------------------------

BASE = build_message(
    **fields("ethereum", not_before_ns=NOW - 20 * S, request_id="req-1", resources=("https://a.example/x",))
)


def test_base_message_layout() -> None:
    lines = BASE.split("\n")
    assert lines[0] == "example.com wants you to sign in with your Ethereum account:"
    assert lines[1] == ETH.address
    assert lines[2:] == [
        "",
        "Sign in to CashMarkets.",
        "",
        "URI: https://example.com/login",
        "Version: 1",
        "Chain ID: 1",
        "Nonce: k3JhQ9xPz2Lm",
        "Issued At: 2024-05-01T11:59:50Z",
        "Expiration Time: 2024-05-01T12:10:00Z",
        "Not Before: 2024-05-01T11:59:40Z",
        "Request ID: req-1",
        "Resources:",
        "- https://a.example/x",
    ]


def test_no_statement_forms() -> None:
    text = build_message(**fields("ethereum", statement=None))
    lines = text.split("\n")
    assert lines[2:5] == ["", "", "URI: https://example.com/login"]  # EIP-4361 ABNF: two empty lines
    assert parse_message(text).statement is None
    # Phantom SIWS / AIP-116 wallets write a single empty line; accepted, same fields.
    single = "\n".join(lines[:3] + lines[4:])
    assert parse_message(single) == parse_message(text)
    check(single, eth_sign(single))
    # A statement must be followed by an empty line.
    assert code_of(parse_message, "\n".join([*lines[:3], "Hello", *lines[4:]])) == "malformed_message"


def test_statement_that_looks_like_a_field_is_a_statement() -> None:
    text = build_message(**fields("ethereum", statement="URI: https://evil.example"))
    msg = parse_message(text)
    assert msg.statement == "URI: https://evil.example"
    assert msg.uri == "https://example.com/login"


def edit_lines(text: str, fn: Any) -> str:
    lines = text.split("\n")
    fn(lines)
    return "\n".join(lines)


def _swap(lines: list[str], i: int, j: int) -> None:
    lines[i], lines[j] = lines[j], lines[i]


def _index(lines: list[str], prefix: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(prefix))


MALFORMED = {
    "missing nonce": lambda t: edit_lines(t, lambda ls: ls.pop(_index(ls, "Nonce: "))),
    "missing uri": lambda t: edit_lines(t, lambda ls: ls.pop(_index(ls, "URI: "))),
    "missing issued at": lambda t: edit_lines(t, lambda ls: ls.pop(_index(ls, "Issued At: "))),
    "reordered uri/version": lambda t: edit_lines(
        t, lambda ls: _swap(ls, _index(ls, "URI"), _index(ls, "Version"))
    ),
    "reordered optional": lambda t: edit_lines(
        t, lambda ls: _swap(ls, _index(ls, "Expiration Time"), _index(ls, "Not Before"))
    ),
    "extra field": lambda t: edit_lines(t, lambda ls: ls.insert(_index(ls, "Nonce: "), "Foo: bar")),
    "extra field at end": lambda t: t + "\nFoo: bar",
    "duplicate field": lambda t: edit_lines(t, lambda ls: ls.insert(_index(ls, "Nonce: "), "Version: 1")),
    "duplicate optional": lambda t: edit_lines(
        t, lambda ls: ls.insert(_index(ls, "Request ID: "), ls[_index(ls, "Request ID: ")])
    ),
    "short nonce": lambda t: t.replace("Nonce: k3JhQ9xPz2Lm", "Nonce: k3JhQ9x"),
    "non-alnum nonce": lambda t: t.replace("Nonce: k3JhQ9xPz2Lm", "Nonce: k3JhQ9x-z2Lm"),
    "unicode digit nonce": lambda t: t.replace("Nonce: k3JhQ9xPz2Lm", "Nonce: k3JhQ9xPz2L\u0663"),
    "crlf": lambda t: t.replace("\n", "\r\n"),
    "cr in statement": lambda t: t.replace("CashMarkets.", "Cash\rMarkets."),
    "oversize": lambda t: t.replace("Sign in to CashMarkets.", "x" * MESSAGE_BYTES_MAX),
    "trailing newline": lambda t: t + "\n",
    "trailing junk": lambda t: t + "\nhello",
    "trailing space": lambda t: t + " ",
    "leading newline": lambda t: "\n" + t,
    "version 2": lambda t: t.replace("Version: 1", "Version: 2"),
    "lowercase key": lambda t: t.replace("URI: ", "uri: "),
    "no space after colon": lambda t: t.replace("Nonce: ", "Nonce:"),
    "double space after colon": lambda t: t.replace("Nonce: ", "Nonce:  "),
    "empty resources": lambda t: t.replace("\n- https://a.example/x", ""),
    "resources without dash": lambda t: t.replace("- https://a.example/x", "https://a.example/x"),
    "bad resource uri": lambda t: t.replace("- https://a.example/x", "- not a uri"),
    "bad uri": lambda t: t.replace("URI: https://example.com/login", "URI: /login"),
    "uri with space": lambda t: t.replace(
        "URI: https://example.com/login", "URI: https://example.com/lo gin"
    ),
    "uri bad escape": lambda t: t.replace("URI: https://example.com/login", "URI: https://example.com/%zz"),
    "empty request id": lambda t: t.replace("Request ID: req-1", "Request ID: "),
    "chain id leading zero": lambda t: t.replace("Chain ID: 1", "Chain ID: 01"),
    "chain id not numeric": lambda t: t.replace("Chain ID: 1", "Chain ID: mainnet"),
    "date feb 30": lambda t: t.replace("2024-05-01T11:59:50Z", "2024-02-30T11:59:50Z"),
    "hour 24": lambda t: t.replace("2024-05-01T11:59:50Z", "2024-05-01T24:00:00Z"),
    "leap second": lambda t: t.replace("2024-05-01T11:59:50Z", "2016-12-31T23:59:60Z"),
    "no offset": lambda t: t.replace("2024-05-01T11:59:50Z", "2024-05-01T11:59:50"),
    "space separator": lambda t: t.replace("2024-05-01T11:59:50Z", "2024-05-01 11:59:50Z"),
    "ten fraction digits": lambda t: t.replace("2024-05-01T11:59:50Z", "2024-05-01T11:59:50.1234567890Z"),
    "empty fraction": lambda t: t.replace("2024-05-01T11:59:50Z", "2024-05-01T11:59:50.Z"),
    "offset 24h": lambda t: t.replace("2024-05-01T11:59:50Z", "2024-05-01T11:59:50+24:00"),
    "compact offset": lambda t: t.replace("2024-05-01T11:59:50Z", "2024-05-01T11:59:50+0100"),
    "year zero": lambda t: t.replace("2024-05-01T11:59:50Z", "0000-05-01T11:59:50Z"),
    "before year 1 utc": lambda t: t.replace("2024-05-01T11:59:50Z", "0001-01-01T00:30:00+01:00"),
    "bad expiration": lambda t: t.replace("2024-05-01T12:10:00Z", "tomorrow"),
    "bad not before": lambda t: t.replace("2024-05-01T11:59:40Z", "2024-13-01T00:00:00Z"),
    "no blank after address": lambda t: edit_lines(t, lambda ls: ls.pop(2)),
    "statement with tab": lambda t: t.replace("Sign in to", "Sign\tin to"),
    "statement with nul": lambda t: t.replace("Sign in to", "Sign\x00in to"),
    "statement with line separator": lambda t: t.replace("Sign in to", "Sign\u2028in to"),
    "statement with bidi override": lambda t: t.replace("Sign in to", "Sign\u202ein to"),
    "two statement lines": lambda t: t.replace("Sign in to CashMarkets.", "Sign in\nto CashMarkets."),
    "address with space": lambda t: t.replace(ETH.address, ETH.address + " "),
    "address empty": lambda t: t.replace(ETH.address, ""),
    "header trailing space": lambda t: t.replace("account:\n", "account: \n"),
    "header typo": lambda t: t.replace("wants you to sign in", "wants you to log in"),
    "domain with scheme": lambda t: t.replace("example.com wants", "https://example.com wants"),
    "domain with userinfo": lambda t: t.replace("example.com wants", "me@example.com wants"),
    "domain with path": lambda t: t.replace("example.com wants", "example.com/x wants"),
    "empty": lambda t: "",
    "only header": lambda t: t.split("\n")[0],
    "lone surrogate": lambda t: t.replace("Sign in to", "Sign \ud800 to"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_variants(name: str) -> None:
    text = MALFORMED[name](BASE)
    assert text != BASE
    assert code_of(parse_message, text) == "malformed_message"
    assert code_of(check, text, "0x" + "11" * 65) == "malformed_message"


def test_unsupported_chain_header() -> None:
    text = BASE.replace("your Ethereum account", "your Bitcoin account")
    assert code_of(parse_message, text) == "unsupported_chain"
    assert code_of(parse_message, BASE.replace("Ethereum", "ethereum")) == "unsupported_chain"
    assert code_of(build_message, **{**fields("ethereum"), "chain": "bitcoin"}) == "unsupported_chain"


def test_size_limit_is_in_utf8_bytes() -> None:
    base = build_message(**fields("ethereum", statement="x"))
    room = MESSAGE_BYTES_MAX - len(base.encode()) + 1
    exact = base.replace("\nx\n", "\n" + "x" * room + "\n")
    assert len(exact.encode()) == MESSAGE_BYTES_MAX
    assert parse_message(exact).statement == "x" * room
    assert code_of(parse_message, exact.replace("\nx", "\nxx", 1)) == "malformed_message"
    # Same character count, more bytes: "é" is two bytes in UTF-8.
    wide = exact.replace("\nxx", "\n\u00e9x", 1)
    assert len(wide) == len(exact)
    assert code_of(parse_message, wide) == "malformed_message"


@pytest.mark.parametrize(
    ("stamp", "expected_ns"),
    [
        ("2024-05-01T12:00:00Z", NOW),
        ("2024-05-01t12:00:00z", NOW),
        ("2024-05-01T14:30:00+02:30", NOW),
        ("2024-05-01T07:00:00-05:00", NOW),
        ("2024-05-01T12:00:00-00:00", NOW),
        ("2024-05-01T12:00:00.5Z", NOW + S // 2),
        ("2024-05-01T12:00:00.000Z", NOW),
        ("2024-05-01T12:00:00.123456789Z", NOW + 123_456_789),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("2024-02-29T00:00:00Z", 1_709_164_800 * S),
    ],
)
def test_timestamp_forms(stamp: str, expected_ns: int) -> None:
    text = BASE.replace("Issued At: 2024-05-01T11:59:50Z", f"Issued At: {stamp}")
    assert parse_message(text).issued_at_ns == expected_ns


def test_build_refuses_what_it_cannot_write() -> None:
    for over in [
        {"statement": "two\nlines"},
        {"statement": ""},
        {"nonce": "short"},
        {"uri": "no scheme"},
        {"chain_id": 1},
        {"chain_id": "01"},
        {"version": "2"},
        {"issued_at_ns": 10**30},
        {"issued_at_ns": 1.5},
        {"expiration_ns": True},
        {"request_id": ""},
        {"resources": ["ok:x", "not a uri"]},
        {"domain": "https://example.com"},
        {"domain": 5},
    ]:
        assert code_of(build_message, **fields("ethereum", **over)) == "malformed_message", over


# --- properties --------------------------------------------------------------------------------

NS_MIN = -62_135_596_800 * S  # 0001-01-01T00:00:00Z
NS_MAX = 253_402_300_800 * S - 1  # 9999-12-31T23:59:59.999999999Z

_uri = st.from_regex(r"[a-z][a-z0-9+.\-]{0,6}:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]{0,24}", fullmatch=True)
_times = st.integers(NS_MIN, NS_MAX) | st.integers(NS_MIN // S, NS_MAX // S).map(lambda s: s * S)


@st.composite
def sign_in_messages(draw: st.DrawFn) -> SignInMessage:
    chain = draw(st.sampled_from(CHAINS))
    if chain == "ethereum":
        raw = draw(st.binary(min_size=20, max_size=20)).hex()
        address = draw(st.sampled_from([to_checksum_address("0x" + raw), "0x" + raw]))
        chain_id = str(draw(st.integers(1, 10**20 - 1)))
    elif chain == "solana":
        address = base58.b58encode(draw(st.binary(min_size=32, max_size=32))).decode()
        chain_id = draw(st.from_regex(r"(?:[-a-z0-9]{3,8}:)?[-_a-zA-Z0-9]{1,32}", fullmatch=True))
    else:
        address = "0x" + draw(st.from_regex(r"[0-9a-fA-F]{1,64}", fullmatch=True))
        chain_id = draw(st.sampled_from(["1", "2", "mainnet", "aptos:mainnet", "aptos:testnet"]))
    printable = st.characters(exclude_categories=("C", "Z")) | st.just(" ")
    return SignInMessage(
        domain=draw(
            st.from_regex(r"[A-Za-z0-9\-._~]{1,30}(?::[0-9]{1,5})?", fullmatch=True)
            | st.sampled_from(["[::1]:8080", "[2001:db8::7]", "127.0.0.1:3000"])
        ),
        chain=chain,
        address=address,
        statement=draw(st.none() | st.text(printable, min_size=1, max_size=60)),
        uri=draw(_uri),
        version="1",
        chain_id=chain_id,
        nonce=draw(st.from_regex(r"[A-Za-z0-9]{8,40}", fullmatch=True)),
        issued_at_ns=draw(_times),
        expiration_ns=draw(st.none() | _times),
        not_before_ns=draw(st.none() | _times),
        request_id=draw(st.none() | st.from_regex(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]{1,20}", fullmatch=True)),
        resources=tuple(draw(st.lists(_uri, max_size=3))),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sign_in_messages())
def test_build_parse_round_trip(msg: SignInMessage) -> None:
    text = format_message(msg)
    assert parse_message(text) == msg
    assert build_message(**msgspec.structs.asdict(msg)) == text
    assert len(text.encode()) <= MESSAGE_BYTES_MAX


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=400) | st.just(BASE),
    signature=st.text(max_size=200),
    public_key=st.none() | st.text(max_size=80),
    domain=st.sampled_from([DOMAIN, "other.example"]),
    now=st.integers(-(2**70), 2**70),
)
def test_fuzz_arbitrary_input_raises_only_wallet_auth_error(
    text: str, signature: str, public_key: str | None, domain: str, now: int
) -> None:
    try:
        check(text, signature, public_key, now=now, domain=domain)
    except WalletAuthError:
        pass


_hex = st.binary(max_size=80).map(bytes.hex)
_signatures = st.one_of(
    st.text(max_size=150),
    _hex,
    _hex.map(lambda h: "0x" + h),
    st.binary(min_size=65, max_size=65).map(lambda b: "0x" + b.hex()),
    # r, s random and a valid recovery id, so the secp256k1 recovery itself runs.
    st.tuples(st.binary(min_size=64, max_size=64), st.sampled_from([0, 1, 27, 28])).map(
        lambda t: (t[0] + bytes([t[1]])).hex()
    ),
    st.sampled_from([b"\x00" * 64, b"\xff" * 64, b"\x00" * 32 + b"\xff" * 32]).map(
        lambda b: (b + b"\x1b").hex()
    ),
    st.binary(min_size=64, max_size=64).map(lambda b: b.hex()),
    st.binary(max_size=80).map(lambda b: base58.b58encode(b).decode()),
    st.binary(min_size=64, max_size=64).map(lambda b: base58.b58encode(b).decode()),
    st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()),
    st.binary(min_size=64, max_size=64).map(lambda b: base64.b64encode(b).decode()),
)
_public_keys = st.one_of(st.none(), st.text(max_size=70), st.binary(min_size=32, max_size=32).map(bytes.hex))
VALID = {chain: signed(chain) for chain in CHAINS}


@settings(max_examples=250, deadline=None)
@given(chain=st.sampled_from(CHAINS), signature=_signatures, public_key=_public_keys)
def test_fuzz_signatures_on_valid_messages(chain: str, signature: str, public_key: str | None) -> None:
    text, good_sig, good_pk = VALID[chain]
    assume(signature != good_sig)
    with pytest.raises(WalletAuthError) as info:
        check(text, signature, public_key if chain == "aptos" else None)
    assert info.value.code == "bad_signature"
    if chain == "aptos":  # the right key with a wrong signature, and a wrong key with the right one
        assert code_of(check, text, signature, good_pk) == "bad_signature"
        assume(public_key is not None and public_key.lower().removeprefix("0x") != good_pk[2:])
        assert code_of(check, text, good_sig, public_key) == "bad_signature"


@settings(max_examples=200, deadline=None)
@given(
    chain=st.sampled_from(CHAINS),
    start=st.integers(0, 2000),
    length=st.integers(0, 5),
    insert=st.text(max_size=5),
)
def test_fuzz_edited_message_never_verifies(chain: str, start: int, length: int, insert: str) -> None:
    text, sig, pk = VALID[chain]
    start = min(start, len(text))
    edited = text[:start] + insert + text[start + length :]
    assume(edited != text)
    with pytest.raises(WalletAuthError):
        check(edited, sig, pk)


def test_aptos_accepts_the_aip_116_signing_form() -> None:
    """Aptos wallets sign sha3_256("SIGN_IN_WITH_APTOS::") || message (AIP-116)."""
    text = build_message(**fields("aptos"))
    prefix = hashlib.sha3_256(b"SIGN_IN_WITH_APTOS::").digest()
    aip116 = "0x" + APT.sign(prefix + text.encode()).signature.hex()
    assert check(text, aip116, apt_public_key(APT)).address == apt_address(APT)
    # The prefix signed over another message, or by another key, still fails.
    other = build_message(**fields("aptos", nonce="zzzzzzzzzzzz"))
    forged = "0x" + APT.sign(prefix + other.encode()).signature.hex()
    with pytest.raises(WalletAuthError) as exc:
        check(text, forged, apt_public_key(APT))
    assert exc.value.code == "bad_signature"
    stranger = "0x" + APT_OTHER.sign(prefix + text.encode()).signature.hex()
    with pytest.raises(WalletAuthError):
        check(text, stranger, apt_public_key(APT))
