"""Wallet sign-in: parse, build and verify "Sign-In With X" messages (EIP-4361 / CAIP-122 shape).

Pure functions: no I/O, no clock (the caller passes `now_ns`), no database. Issuing nonces,
remembering which were used and expiring unused ones is the caller's job; this module checks
only the message text, the time window, the address and the signature.

Message format (lines joined by LF, no CR anywhere, no trailing LF, at most `MESSAGE_BYTES_MAX`
bytes of UTF-8):

    ${domain} wants you to sign in with your ${Ethereum|Solana|Aptos} account:
    ${address}

    ${statement}

    URI: ${uri}
    Version: 1
    Chain ID: ${chain_id}
    Nonce: ${nonce}
    Issued At: ${issued_at}
    Expiration Time: ${expiration_time}      (optional)
    Not Before: ${not_before}                (optional)
    Request ID: ${request_id}                (optional)
    Resources:                               (optional, then one "- ${uri}" line per resource)
    - ${resources[0]}

Without a statement, `build_message` writes the EIP-4361 ABNF form: two empty lines between the
address and `URI:`. `parse_message` also accepts a single empty line there, which is what
Phantom's Sign In With Solana and AIP-116 (Sign in with Aptos) wallets produce. The two forms
cannot be confused: a statement line is always followed by an empty line, a `URI:` line never is.

Field rules (anything else is `malformed_message`):
- domain: `host[:port]`; host is a registered name (`A-Z a-z 0-9 - . _ ~`) or a bracketed IP
  literal. No URI scheme prefix, no userinfo, no percent-encoding.
- address: 1-128 ASCII letters/digits here; chain-specific validity is checked by `verify` and
  `normalize_address` (`bad_address`).
- statement: optional, non-empty, printable (`str.isprintable()`, so no control, format or
  line-separator characters). Non-ASCII letters are allowed.
- URI and resources: RFC 3986 URI characters with a scheme; `%` must start a `%XX` escape.
- Version: exactly `1`.
- Chain ID: ethereum: decimal EIP-155 id without leading zeros (1-20 digits); solana and aptos:
  a CAIP-2 reference with an optional namespace (`mainnet`, `aptos:mainnet`, `1`, ...).
- Nonce: at least 8 ASCII letters/digits.
- Timestamps: RFC 3339 `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`; `t`/`z` may be lower
  case; at most 9 fraction digits (nanoseconds); no leap second (`:60`); the instant must fall in
  years 0001-9999 UTC. `build_message` writes UTC with `Z` and the shortest exact fraction.
- Request ID: non-empty RFC 3986 `pchar`s.
- `Resources:` must be followed by at least one `- ` line.

Error codes (`WalletAuthError.code`):
- `malformed_message`: the text does not follow the format above (also raised by
  `build_message` for fields it cannot write canonically).
- `domain_mismatch`: the message's domain is not exactly `expected_domain` (case-sensitive;
  pass the host the front end runs on, e.g. `window.location.host`).
- `uri_mismatch`: the message's `URI:` is not on `expected_origin` (scheme, host and port; case
  and an explicit default port do not matter, the path does not either; a URI with userinfo
  never matches). A wallet shows the URI to the user: one naming another site is refused.
- `expired`: `Expiration Time` is at or before `now_ns`.
- `not_yet_valid`: `Not Before` is after `now_ns`, or `Issued At` is more than
  `ISSUED_AT_MAX_SKEW_NS` (5 minutes) after `now_ns`.
- `bad_address`: the address is not a valid address for the chain (ethereum: `0x` + 40 hex,
  and a valid EIP-55 checksum when the letters are mixed case; solana: base58 of 32 bytes;
  aptos: `0x` + 1-64 hex digits).
- `bad_signature`: the signature (or the Aptos public key) cannot be decoded, does not verify,
  or belongs to another address.
- `unsupported_chain`: the header names a chain other than Ethereum, Solana or Aptos, or a
  function was given an unknown chain name.

Signatures:
- ethereum: EIP-191 `personal_sign` over the UTF-8 message, 65 bytes hex with or without `0x`;
  `v` may be 27/28 or 0/1. Only externally owned accounts: EIP-1271 contract wallets need a
  chain call and are not supported. The recovered address is compared case-insensitively.
- solana: ed25519 over the UTF-8 message; the address is the base58 public key. The signature
  is tried as base58 first and, if that does not give 64 bytes, as padded standard base64
  (88 characters ending in `==`; `=` is not a base58 character, so no string is both).
- aptos: ed25519 over the raw UTF-8 message bytes (not the AIP-116 domain-separated digest, nor
  the legacy `signMessage` "APTOS\\nmessage: ..." envelope). The caller passes the public key
  (32 bytes hex); the address must be the single-ed25519 authentication key
  `sha3_256(public_key || 0x00)`, so accounts whose key was rotated are rejected.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import re
from collections.abc import Iterable
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

import base58
import msgspec
import nacl.exceptions
import nacl.signing
from eth_utils.address import to_checksum_address

from cashmarkets.ops.nesting import keep_recursion_limit

# py_ecc, under eth_account, raises the recursion limit to 100,000 at import, which lets deep
# client JSON overflow the C stack (ops/nesting.py): put it back.
with keep_recursion_limit():
    from eth_account import Account
    from eth_account.messages import encode_defunct

__all__ = [
    "CHAINS",
    "ISSUED_AT_MAX_SKEW_NS",
    "MESSAGE_BYTES_MAX",
    "Chain",
    "ErrorCode",
    "SignInMessage",
    "WalletAuthError",
    "build_message",
    "format_message",
    "normalize_address",
    "parse_message",
    "uri_origin",
    "verify",
]

Chain = Literal["ethereum", "solana", "aptos"]
ErrorCode = Literal[
    "malformed_message",
    "domain_mismatch",
    "uri_mismatch",
    "expired",
    "not_yet_valid",
    "bad_address",
    "bad_signature",
    "unsupported_chain",
]

CHAINS: Final[tuple[Chain, ...]] = get_args(Chain)
MESSAGE_BYTES_MAX: Final = 4096
ISSUED_AT_MAX_SKEW_NS: Final = 5 * 60 * 1_000_000_000

_NS_PER_S: Final = 1_000_000_000
_EPOCH_ORDINAL: Final = _dt.date(1970, 1, 1).toordinal()
_NS_MIN: Final = (_dt.date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400 * _NS_PER_S
_NS_MAX: Final = (_dt.date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86_400 * _NS_PER_S - 1

_DISPLAY_NAME: Final[dict[Chain, str]] = {"ethereum": "Ethereum", "solana": "Solana", "aptos": "Aptos"}
_CHAIN_BY_DISPLAY: Final[dict[str, Chain]] = {v: k for k, v in _DISPLAY_NAME.items()}
_HEADER_SUFFIX: Final = " wants you to sign in with your {} account:"

# Character classes are spelled out in ASCII: `\d` and `\w` match non-ASCII digits and letters.
_HEADER_RE: Final = re.compile(r"(\S+) wants you to sign in with your ([A-Za-z0-9]+) account:")
_DOMAIN_RE: Final = re.compile(r"(?:[A-Za-z0-9\-._~]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_ADDRESS_LINE_RE: Final = re.compile(r"[A-Za-z0-9]{1,128}")
_PCT: Final = r"%[0-9A-Fa-f]{2}"
_URI_RE: Final = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|" + _PCT + r")*"
)
_REQUEST_ID_RE: Final = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|" + _PCT + r")+")
_NONCE_RE: Final = re.compile(r"[A-Za-z0-9]{8,}")
_EVM_CHAIN_ID_RE: Final = re.compile(r"[1-9][0-9]{0,19}")
_CAIP_CHAIN_ID_RE: Final = re.compile(r"(?:[-a-z0-9]{3,8}:)?[-_a-zA-Z0-9]{1,32}")
_RFC3339_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)

_ETH_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_APTOS_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{1,64}")
_B58_RE: Final = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")
_B64_SIG_RE: Final = re.compile(r"[A-Za-z0-9+/]{86}==")
_ETH_SIG_RE: Final = re.compile(r"(?:0x)?[0-9a-fA-F]{130}")
_ED25519_SIG_HEX_RE: Final = re.compile(r"(?:0x)?[0-9a-fA-F]{128}")
_ED25519_KEY_HEX_RE: Final = re.compile(r"(?:0x)?[0-9a-fA-F]{64}")
# Base58 of 32 bytes is at most 44 characters and of 64 bytes at most 88: bound the (quadratic)
# decoder's work on hostile input before it runs.
_B58_ADDRESS_LEN_MAX: Final = 44
_B58_SIG_LEN_MAX: Final = 88


class WalletAuthError(Exception):
    """A sign-in message or signature was refused. `code` is one of `ErrorCode`."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: ErrorCode = code
        self.detail = detail


class SignInMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of a sign-in message. Times are integer nanoseconds since the Unix epoch (UTC)."""

    domain: str
    chain: Chain
    address: str
    statement: str | None = None
    uri: str
    version: str = "1"
    chain_id: str
    nonce: str
    issued_at_ns: int
    expiration_ns: int | None = None
    not_before_ns: int | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = ()


def _malformed(detail: str) -> WalletAuthError:
    return WalletAuthError("malformed_message", detail)


# --- timestamps --------------------------------------------------------------------------------


def _parse_rfc3339(text: str, field: str) -> int:
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        raise _malformed(f"{field}: not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac, sign, off_h, off_m = m.group(7), m.group(8), m.group(9), m.group(10)
    try:
        ordinal = _dt.date(year, month, day).toordinal()
    except ValueError:
        raise _malformed(f"{field}: no such date") from None
    if hour > 23 or minute > 59 or second > 59:
        raise _malformed(f"{field}: time of day out of range (leap seconds are not accepted)")
    offset_s = 0
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            raise _malformed(f"{field}: UTC offset out of range")
        offset_s = (oh * 3600 + om * 60) * (1 if sign == "+" else -1)
    seconds = (ordinal - _EPOCH_ORDINAL) * 86_400 + hour * 3600 + minute * 60 + second - offset_s
    ns = seconds * _NS_PER_S + (int(frac.ljust(9, "0")) if frac else 0)
    if not _NS_MIN <= ns <= _NS_MAX:
        raise _malformed(f"{field}: outside years 0001-9999 UTC")
    return ns


def _format_rfc3339(ns: int, field: str) -> str:
    if type(ns) is not int or not _NS_MIN <= ns <= _NS_MAX:
        raise _malformed(f"{field}: must be an int within years 0001-9999 UTC")
    seconds, frac = divmod(ns, _NS_PER_S)
    days, rem = divmod(seconds, 86_400)
    date = _dt.date.fromordinal(days + _EPOCH_ORDINAL)
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    fraction = "." + f"{frac:09d}".rstrip("0") if frac else ""
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}Z"


# --- parsing -----------------------------------------------------------------------------------


def _check_chain_id(chain: Chain, chain_id: str) -> None:
    pattern = _EVM_CHAIN_ID_RE if chain == "ethereum" else _CAIP_CHAIN_ID_RE
    if pattern.fullmatch(chain_id) is None:
        raise _malformed(f"Chain ID: not a valid chain id for {chain}")


class _Fields:
    """Cursor over the `Key: value` lines; keys must appear in the fixed order."""

    def __init__(self, lines: list[str], start: int) -> None:
        self.lines = lines
        self.i = start

    def optional(self, key: str) -> str | None:
        if self.i < len(self.lines) and self.lines[self.i].startswith(key + ": "):
            value = self.lines[self.i][len(key) + 2 :]
            self.i += 1
            return value
        return None

    def required(self, key: str) -> str:
        value = self.optional(key)
        if value is None:
            raise _malformed(
                f"line {self.i + 1}: expected '{key}: ...' (missing, misplaced or unknown field)"
            )
        return value


def parse_message(text: str) -> SignInMessage:
    """Parse a sign-in message strictly. Raises `WalletAuthError` (`malformed_message` or
    `unsupported_chain`); never anything else, whatever `text` holds."""
    if not isinstance(text, str):
        raise _malformed("message must be a string")
    if len(text) > MESSAGE_BYTES_MAX:
        raise _malformed(f"message longer than {MESSAGE_BYTES_MAX} bytes")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _malformed("message is not valid Unicode (lone surrogate)") from None
    if size > MESSAGE_BYTES_MAX:
        raise _malformed(f"message longer than {MESSAGE_BYTES_MAX} bytes")
    if "\r" in text:
        raise _malformed("CR characters are not allowed; lines end with LF only")

    lines = text.split("\n")
    if len(lines) < 8:
        raise _malformed("message too short")

    header = _HEADER_RE.fullmatch(lines[0])
    if header is None:
        raise _malformed("line 1: expected '<domain> wants you to sign in with your <Chain> account:'")
    domain, display = header.group(1), header.group(2)
    chain = _CHAIN_BY_DISPLAY.get(display)
    if chain is None:
        raise WalletAuthError("unsupported_chain", f"chain {display!r} is not one of Ethereum, Solana, Aptos")
    if _DOMAIN_RE.fullmatch(domain) is None:
        raise _malformed("line 1: domain must be host[:port]")

    address = lines[1]
    if _ADDRESS_LINE_RE.fullmatch(address) is None:
        raise _malformed("line 2: address must be 1-128 ASCII letters or digits")
    if lines[2] != "":
        raise _malformed("line 3: expected an empty line after the address")

    statement: str | None
    if lines[3] == "":
        statement, start = None, 4  # EIP-4361 ABNF form without a statement
    elif lines[4] == "":
        statement, start = lines[3], 5
        if not statement.isprintable():
            raise _malformed("line 4: statement must contain printable characters only")
    else:
        statement, start = None, 3  # single-empty-line form (SIWS / SIWA wallets), checked below

    f = _Fields(lines, start)
    uri = f.required("URI")
    version = f.required("Version")
    chain_id = f.required("Chain ID")
    nonce = f.required("Nonce")
    issued_at = f.required("Issued At")
    expiration = f.optional("Expiration Time")
    not_before = f.optional("Not Before")
    request_id = f.optional("Request ID")
    resources: list[str] = []
    if f.i < len(lines) and lines[f.i] == "Resources:":
        f.i += 1
        while f.i < len(lines) and lines[f.i].startswith("- "):
            resources.append(lines[f.i][2:])
            f.i += 1
        if not resources:
            raise _malformed(f"line {f.i}: 'Resources:' must be followed by at least one '- <uri>' line")
    if f.i != len(lines):
        raise _malformed(f"line {f.i + 1}: unexpected content (unknown field, wrong order or trailing data)")

    if _URI_RE.fullmatch(uri) is None:
        raise _malformed("URI: not an RFC 3986 URI")
    if version != "1":
        raise _malformed("Version: must be 1")
    _check_chain_id(chain, chain_id)
    if _NONCE_RE.fullmatch(nonce) is None:
        raise _malformed("Nonce: must be at least 8 ASCII letters or digits")
    if request_id is not None and _REQUEST_ID_RE.fullmatch(request_id) is None:
        raise _malformed("Request ID: must be non-empty RFC 3986 path characters")
    for n, resource in enumerate(resources, 1):
        if _URI_RE.fullmatch(resource) is None:
            raise _malformed(f"Resources: item {n} is not an RFC 3986 URI")

    return SignInMessage(
        domain=domain,
        chain=chain,
        address=address,
        statement=statement,
        uri=uri,
        version=version,
        chain_id=chain_id,
        nonce=nonce,
        issued_at_ns=_parse_rfc3339(issued_at, "Issued At"),
        expiration_ns=None if expiration is None else _parse_rfc3339(expiration, "Expiration Time"),
        not_before_ns=None if not_before is None else _parse_rfc3339(not_before, "Not Before"),
        request_id=request_id,
        resources=tuple(resources),
    )


# --- building ----------------------------------------------------------------------------------


def build_message(
    *,
    domain: str,
    chain: str,
    address: str,
    uri: str,
    chain_id: str,
    nonce: str,
    issued_at_ns: int,
    statement: str | None = None,
    version: str = "1",
    expiration_ns: int | None = None,
    not_before_ns: int | None = None,
    request_id: str | None = None,
    resources: Iterable[str] = (),
) -> str:
    """Write the canonical message text for these fields.

    The result always satisfies `parse_message(build_message(**f)) == SignInMessage(**f)`: the
    text is parsed back and compared before it is returned. Raises `WalletAuthError`:
    `unsupported_chain`, `bad_address` (the address is not valid for the chain), or
    `malformed_message` (a field that cannot be written, e.g. a statement with a newline).
    """
    chain_name = _chain(chain)
    normalize_address(chain_name, address)
    resources = tuple(resources)
    texts = [domain, uri, chain_id, nonce, version, *resources]
    texts += [t for t in (statement, request_id) if t is not None]
    if not all(isinstance(t, str) for t in texts):
        raise _malformed("text fields must be strings")
    expected = SignInMessage(
        domain=domain,
        chain=chain_name,
        address=address,
        statement=statement,
        uri=uri,
        version=version,
        chain_id=chain_id,
        nonce=nonce,
        issued_at_ns=issued_at_ns,
        expiration_ns=expiration_ns,
        not_before_ns=not_before_ns,
        request_id=request_id,
        resources=resources,
    )
    parts = [domain + _HEADER_SUFFIX.format(_DISPLAY_NAME[chain_name]), address, "", statement or "", ""]
    if statement is None:
        parts.pop()  # EIP-4361 form: exactly two empty lines between address and URI
    parts += [
        f"URI: {uri}",
        f"Version: {version}",
        f"Chain ID: {chain_id}",
        f"Nonce: {nonce}",
        f"Issued At: {_format_rfc3339(issued_at_ns, 'issued_at_ns')}",
    ]
    if expiration_ns is not None:
        parts.append(f"Expiration Time: {_format_rfc3339(expiration_ns, 'expiration_ns')}")
    if not_before_ns is not None:
        parts.append(f"Not Before: {_format_rfc3339(not_before_ns, 'not_before_ns')}")
    if request_id is not None:
        parts.append(f"Request ID: {request_id}")
    if resources:
        parts.append("Resources:")
        parts += [f"- {r}" for r in resources]
    text = "\n".join(parts)
    try:
        parsed = parse_message(text)
    except WalletAuthError as exc:
        raise _malformed(f"cannot build a valid message: {exc.detail}") from None
    if parsed != expected:
        raise _malformed("cannot build a valid message: a field does not survive parsing unchanged")
    return text


def format_message(message: SignInMessage) -> str:
    """`build_message` for an existing `SignInMessage` (e.g. one kept between challenge and verify)."""
    return build_message(**msgspec.structs.asdict(message))


# --- addresses ---------------------------------------------------------------------------------


def _chain(chain: str) -> Chain:
    for known in CHAINS:
        if chain == known:
            return known
    raise WalletAuthError("unsupported_chain", f"chain must be one of {', '.join(CHAINS)}")


def _bad_address(detail: str) -> WalletAuthError:
    return WalletAuthError("bad_address", detail)


def _ethereum_address(address: str) -> str:
    """Validate; return the lowercase form."""
    if _ETH_ADDRESS_RE.fullmatch(address) is None:
        raise _bad_address("ethereum address must be 0x followed by 40 hex digits")
    digits = address[2:]
    if digits != digits.lower() and digits != digits.upper() and address != to_checksum_address(address):
        raise _bad_address("mixed-case ethereum address with an invalid EIP-55 checksum")
    return address.lower()


def _solana_public_key(address: str) -> bytes:
    if len(address) > _B58_ADDRESS_LEN_MAX or _B58_RE.fullmatch(address) is None:
        raise _bad_address("solana address must be base58")
    raw = base58.b58decode(address)
    if len(raw) != 32:
        raise _bad_address("solana address must encode 32 bytes")
    return raw


def _aptos_address(address: str) -> str:
    """Validate; return `0x` + 64 lowercase hex digits."""
    if _APTOS_ADDRESS_RE.fullmatch(address) is None:
        raise _bad_address("aptos address must be 0x followed by 1-64 hex digits")
    return "0x" + address[2:].lower().rjust(64, "0")


def normalize_address(chain: str, address: str) -> str:
    """The form to store an identity under: ethereum lowercase `0x...`, solana unchanged (base58
    of 32 bytes), aptos lowercase `0x` + 64 hex digits. Raises `WalletAuthError` (`bad_address`
    or `unsupported_chain`)."""
    chain_name = _chain(chain)
    if not isinstance(address, str):
        raise _bad_address("address must be a string")
    if chain_name == "ethereum":
        return _ethereum_address(address)
    if chain_name == "solana":
        _solana_public_key(address)
        return address
    return _aptos_address(address)


# --- signatures --------------------------------------------------------------------------------


def _bad_signature(detail: str) -> WalletAuthError:
    return WalletAuthError("bad_signature", detail)


def _strip_0x(text: str) -> str:
    return text[2:] if text.startswith("0x") else text


def _verify_ethereum(message: SignInMessage, text: str, signature: str) -> None:
    if _ETH_SIG_RE.fullmatch(signature) is None:
        raise _bad_signature("ethereum signature must be 65 bytes of hex")
    raw = bytearray(bytes.fromhex(_strip_0x(signature)))
    if raw[64] in (0, 1):
        raw[64] += 27  # some signers (e.g. hardware wallets) return the recovery id as 0/1
    if raw[64] not in (27, 28):
        raise _bad_signature("ethereum signature recovery id must be 27/28 (or 0/1)")
    try:
        recovered = Account.recover_message(encode_defunct(text=text), signature=bytes(raw))
    except Exception:  # eth_keys/eth_account raise several unrelated types for bad r/s values
        raise _bad_signature("ethereum signature cannot be recovered") from None
    if recovered.lower() != message.address.lower():
        raise _bad_signature("ethereum signature was made by another address")


def _decode_solana_signature(signature: str) -> bytes:
    if len(signature) <= _B58_SIG_LEN_MAX and _B58_RE.fullmatch(signature) is not None:
        raw = base58.b58decode(signature)
        if len(raw) == 64:
            return raw
    if _B64_SIG_RE.fullmatch(signature) is not None:
        try:
            return base64.b64decode(signature, validate=True)
        except binascii.Error:
            pass
    raise _bad_signature("solana signature must be 64 bytes in base58 or padded base64")


# AIP-116 signing prefix: sha3-256 of the domain separator, then the message bytes.
APTOS_SIWA_PREFIX = hashlib.sha3_256(b"SIGN_IN_WITH_APTOS::").digest()


def _ed25519_verify(public_key: bytes, data: bytes, signature: bytes) -> None:
    try:
        nacl.signing.VerifyKey(public_key).verify(data, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise _bad_signature("ed25519 signature does not verify") from None


def _verify_aptos(message: SignInMessage, data: bytes, signature: str, public_key: str | None) -> None:
    if not isinstance(public_key, str) or _ED25519_KEY_HEX_RE.fullmatch(public_key) is None:
        raise _bad_signature("aptos sign-in needs the ed25519 public key as 32 bytes of hex")
    key = bytes.fromhex(_strip_0x(public_key))
    derived = "0x" + hashlib.sha3_256(key + b"\x00").hexdigest()
    if _aptos_address(message.address) != derived:
        raise _bad_signature("aptos public key does not belong to the message's address")
    if _ED25519_SIG_HEX_RE.fullmatch(signature) is None:
        raise _bad_signature("aptos signature must be 64 bytes of hex")
    sig = bytes.fromhex(_strip_0x(signature))
    try:
        # AIP-116 (Sign in with Aptos): wallets sign a domain-separated form of the message.
        _ed25519_verify(key, APTOS_SIWA_PREFIX + data, sig)
    except WalletAuthError:
        # Clients that sign the message bytes as they are.
        _ed25519_verify(key, data, sig)


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def uri_origin(uri: str) -> str | None:
    """`scheme://host[:port]` of a URI, lower case, without a default port; None when it has no
    host, has userinfo (`https://site@evil.example`) or a bad port."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not parts.scheme or not host or "@" in parts.netloc:
        return None
    scheme = parts.scheme.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def verify(
    text: str,
    signature: str,
    *,
    expected_domain: str,
    expected_origin: str,
    now_ns: int,
    public_key: str | None = None,
) -> SignInMessage:
    """Check a signed sign-in message and return its fields.

    Order: parse (`malformed_message`, `unsupported_chain`), domain (`domain_mismatch`), URI
    (`uri_mismatch`: `URI:` must be on `expected_origin`, e.g. `https://cash.example`), time
    window (`not_yet_valid`, `expired`), address (`bad_address`), signature (`bad_signature`).
    `public_key` is required for aptos and ignored for the other chains. The caller must still
    check that `nonce` is one it issued, unused and unexpired, and may check `chain_id` and
    `request_id` against what it asked for. Raises only `WalletAuthError`.
    """
    message = parse_message(text)
    if message.domain != expected_domain:
        raise WalletAuthError("domain_mismatch", "message is for another domain")
    origin = uri_origin(message.uri)
    if origin is None or origin != uri_origin(expected_origin):
        raise WalletAuthError("uri_mismatch", "message URI is not on this site")
    if message.issued_at_ns > now_ns + ISSUED_AT_MAX_SKEW_NS:
        raise WalletAuthError("not_yet_valid", "Issued At is more than 5 minutes in the future")
    if message.not_before_ns is not None and message.not_before_ns > now_ns:
        raise WalletAuthError("not_yet_valid", "Not Before is in the future")
    if message.expiration_ns is not None and message.expiration_ns <= now_ns:
        raise WalletAuthError("expired", "Expiration Time has passed")
    normalize_address(message.chain, message.address)
    if not isinstance(signature, str):
        raise _bad_signature("signature must be a string")

    if message.chain == "ethereum":
        _verify_ethereum(message, text, signature)
    elif message.chain == "solana":
        sig = _decode_solana_signature(signature)
        _ed25519_verify(_solana_public_key(message.address), text.encode("utf-8"), sig)
    else:
        _verify_aptos(message, text.encode("utf-8"), signature, public_key)
    return message
