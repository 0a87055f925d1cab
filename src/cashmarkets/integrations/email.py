"""Outgoing email: the magic sign-in link.

    Mailer (Protocol)
      ├── SmtpMailer  smtp://[user:pass@]host[:port]           plain SMTP, default port 25
      │               smtp+starttls://[user:pass@]host[:port]  STARTTLS upgrade, default port 587
      │               smtps://[user:pass@]host[:port]          implicit TLS, default port 465
      └── LogMailer   no SMTP (embedded mode): logs `email_not_sent` and keeps the last messages

`mailer_from_url(url)` picks one (no URL → LogMailer). `magic_link_message(...)` builds the message.

User name and password in the URL are percent-decoded, so characters such as `@ : / ? #` in them
must be percent-encoded (`%40 %3A %2F %3F %23`). The password never appears in an exception
message or a repr. TLS certificates are verified against the host name. `smtp://` is plain text
on purpose (no opportunistic upgrade): use it for a local relay, not across a network with a
password.

This module is an adapter: it reads the clock (Date, Message-ID) and does I/O; the core does not.
"""

from __future__ import annotations

import collections
import email.message
import email.utils
import html
import ipaddress
import re
import urllib.parse
from typing import Final, Protocol, runtime_checkable

import aiosmtplib
import structlog

DEFAULT_FROM_ADDRESS: Final = "Cash Markets <no-reply@localhost>"
DEFAULT_TIMEOUT_S: Final = 10.0
MAGIC_LINK_SUBJECT: Final = "Your Cash Markets sign-in link"
# How many messages a LogMailer keeps for inspection.
LOG_MAILER_KEEP: Final = 100

_LOGGER_NAME: Final = "cashmarkets.email"
# scheme → (security, default port)
_SCHEMES: Final[dict[str, tuple[str, int]]] = {
    "smtp": ("plain", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}
_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME_RE: Final = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?$")
# C0 controls (CR, LF, NUL, TAB, ...) and DEL: never allowed in an address or a link.
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_ADDR_SPEC_RE: Final = re.compile(r"^[^\s@<>,;:\"()\[\]\\]+@[^\s@<>,;:\"()\[\]\\]+$")
_ADDRESS_LENGTH_MAX: Final = 320
_LINK_LENGTH_MAX: Final = 2048


class MailError(Exception):
    """The message could not be handed to the SMTP server (connection, TLS, auth, refusal, timeout)."""


@runtime_checkable
class Mailer(Protocol):
    async def send(self, message: email.message.EmailMessage) -> None:
        """Deliver `message` (to its To/Cc/Bcc recipients) or raise MailError."""
        ...


# -- addresses -------------------------------------------------------------------------------------


def _validate_address(value: object, what: str) -> str:
    """One mailbox (`a@b` or `Name <a@b>`), no control characters: returns it unchanged."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    if _CONTROL_RE.search(value):
        # CR/LF here would let a caller inject headers (Bcc:, ...) into the message.
        raise ValueError(f"{what} must not contain control characters (CR, LF, ...)")
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > _ADDRESS_LENGTH_MAX:
        raise ValueError(f"{what} is too long (more than {_ADDRESS_LENGTH_MAX} characters)")
    addresses = email.utils.getaddresses([value])
    if len(addresses) != 1:
        raise ValueError(f"{what} must be exactly one address, got {value!r}")
    _, addr_spec = addresses[0]
    if not _ADDR_SPEC_RE.match(addr_spec):
        raise ValueError(f"{what} is not a valid email address: {value!r}")
    return value


def _address_domain(address: str) -> str:
    _, addr_spec = email.utils.parseaddr(address)
    domain = addr_spec.rpartition("@")[2]
    return domain or "localhost"


# -- the magic link message ------------------------------------------------------------------------


def _validate_link(link: object) -> str:
    if not isinstance(link, str) or not link:
        raise ValueError("link must be a non-empty string")
    if len(link) > _LINK_LENGTH_MAX:
        raise ValueError(f"link is too long (more than {_LINK_LENGTH_MAX} characters)")
    if _CONTROL_RE.search(link) or any(ch.isspace() for ch in link):
        raise ValueError("link must not contain whitespace or control characters")
    parts = urllib.parse.urlsplit(link)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("link must be an absolute http:// or https:// URL")
    return link


def magic_link_message(
    *, to: str, link: str, from_address: str, expires_minutes: int
) -> email.message.EmailMessage:
    """The sign-in email: a plain-text part and an HTML alternative, each with the link exactly once.

    Raises ValueError for a `to`/`from_address` that is not exactly one address or that contains
    CR/LF (header injection), a link that is not an absolute http(s) URL, or expires_minutes < 1.
    """
    _validate_address(to, "to")
    _validate_address(from_address, "from_address")
    _validate_link(link)
    if isinstance(expires_minutes, bool) or not isinstance(expires_minutes, int) or expires_minutes < 1:
        raise ValueError("expires_minutes must be a positive integer")

    expiry = f"{expires_minutes} minute{'s' if expires_minutes != 1 else ''}"
    text = (
        "Hello,\n"
        "\n"
        "Open this link to sign in to Cash Markets:\n"
        "\n"
        f"{link}\n"
        "\n"
        f"The link expires in {expiry}.\n"
        "If you did not ask to sign in, you can ignore this email.\n"
    )
    href = html.escape(link, quote=True)
    html_body = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        '<head><meta charset="utf-8"><title>Cash Markets sign-in</title></head>\n'
        "<body>\n"
        "<p>Hello,</p>\n"
        f'<p><a href="{href}">Sign in to Cash Markets</a></p>\n'
        f"<p>The link expires in {expiry}.</p>\n"
        "<p>If you did not ask to sign in, you can ignore this email.</p>\n"
        "</body>\n"
        "</html>\n"
    )

    message = email.message.EmailMessage()
    message["Subject"] = MAGIC_LINK_SUBJECT
    message["From"] = from_address
    message["To"] = to
    message["Date"] = email.utils.formatdate(usegmt=True)
    # An explicit domain: without one, make_msgid() asks socket.getfqdn(), which can block on DNS.
    message["Message-ID"] = email.utils.make_msgid(domain=_address_domain(from_address))
    message.set_content(text)
    message.add_alternative(html_body, subtype="html")
    return message


def plain_text_body(message: email.message.EmailMessage) -> str | None:
    """The message's text/plain body (decoded), or None if it has none."""
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return None
    content = part.get_content()
    return content if isinstance(content, str) else None


# -- SMTP ------------------------------------------------------------------------------------------


def _redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    netloc = f"{user}{':***' if colon else ''}@{hostinfo}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _validate_host(host: str, redacted: str) -> None:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"SMTP URL has an invalid IPv6 host: {redacted}") from None
    elif not _HOST_NAME_RE.match(host):
        raise ValueError(f"SMTP URL has an invalid host {host!r}: {redacted}")


class SmtpMailer:
    """Sends through an SMTP server with aiosmtplib; one connection per message.

    `timeout_s` bounds each step (connect, TLS, each command), not the whole conversation.
    """

    def __init__(
        self, url: str, *, from_address: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError("SMTP URL must be a non-empty string")
        redacted = _redact_url(url)
        if _CONTROL_RE.search(url) or any(ch.isspace() for ch in url):
            raise ValueError(f"SMTP URL must not contain whitespace or control characters: {redacted!r}")
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:
            raise ValueError(f"SMTP URL cannot be parsed: {redacted}") from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(
                f"SMTP URL scheme must be one of {', '.join(s + '://' for s in _SCHEMES)}; got {redacted}"
            )
        security, default_port = _SCHEMES[scheme]
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"SMTP URL must not have a path, query or fragment: {redacted}")
        host = parts.hostname
        if not host:
            raise ValueError(f"SMTP URL has no host: {redacted}")
        _validate_host(host, redacted)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"SMTP URL has an invalid port: {redacted}") from None
        if port is None:
            if parts.netloc.endswith(":"):
                raise ValueError(f"SMTP URL has an empty port: {redacted}")
            port = default_port
        elif not 1 <= port <= 65535:
            raise ValueError(f"SMTP URL port must be in 1..65535: {redacted}")

        username = urllib.parse.unquote(parts.username) if parts.username is not None else None
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        if (username is None) != (password is None) or username == "" or password == "":
            raise ValueError(f"SMTP URL must give both a user name and a password, or neither: {redacted}")

        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
            raise ValueError("timeout_s must be a positive number")

        self.from_address: Final[str] = _validate_address(
            DEFAULT_FROM_ADDRESS if from_address is None else from_address, "from_address"
        )
        self.timeout_s: Final[float] = float(timeout_s)
        self.security: Final[str] = security  # "plain" | "starttls" | "tls"
        self.host: Final[str] = host
        self.port: Final[int] = port
        self.username: Final[str | None] = username
        self.__password = password
        self._where = f"{'[' + host + ']' if ':' in host else host}:{port}"

    def __repr__(self) -> str:
        user = f"{self.username!r}, password=***" if self.username is not None else "None"
        return (
            f"SmtpMailer(security={self.security!r}, host={self.host!r}, port={self.port}, "
            f"username={user}, from_address={self.from_address!r}, timeout_s={self.timeout_s})"
        )

    async def send(self, message: email.message.EmailMessage) -> None:
        """Deliver `message` to its To/Cc/Bcc recipients (Bcc is stripped from what is sent).

        A message without From gets `from_address`. Raises MailError when the server cannot be
        reached, TLS fails, authentication fails, the server refuses the sender, any recipient or
        the data, or a step times out; ValueError for a message with no recipients.
        """
        if message["From"] is None:
            message["From"] = self.from_address
        try:
            refused, _ = await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.__password,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise self._error(f"authentication as {self.username!r} failed", exc) from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            raise self._error(f"sender {exc.sender!r} refused", exc) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            listed = ", ".join(f"{r.recipient!r} ({r.code} {r.message})" for r in exc.recipients)
            raise self._error(f"recipient(s) refused: {listed}", None) from exc
        except aiosmtplib.SMTPRecipientRefused as exc:
            raise self._error(f"recipient {exc.recipient!r} refused", exc) from exc
        except aiosmtplib.SMTPDataError as exc:
            raise self._error("message refused", exc) from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise self._error(f"timed out (after {self.timeout_s:g} s)", exc) from exc
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
            raise self._error("cannot connect or connection lost", exc) from exc
        except aiosmtplib.SMTPException as exc:
            raise self._error("SMTP error", exc) from exc
        except OSError as exc:  # TLS errors (ssl.SSLError), DNS failures, resets
            raise self._error("cannot connect", exc) from exc
        if refused:
            # The server took the message for the other recipients; still a failure for the caller.
            detail = ", ".join(f"{rcpt!r} ({r.code} {r.message})" for rcpt, r in refused.items())
            raise self._error(f"message sent, but recipient(s) refused: {detail}", None)

    def _error(self, what: str, exc: BaseException | None) -> MailError:
        text = f"SMTP {self.security} {self._where}: {what}"
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            text = f"{text}: server replied {exc.code} {exc.message}"
        elif exc is not None:
            detail = str(exc).strip() or type(exc).__name__
            text = f"{text}: {detail}"
        if self.__password:
            # The server's reply goes into the text; never let it carry the password back out.
            for secret in {self.__password, urllib.parse.quote(self.__password, safe="")}:
                text = text.replace(secret, "***")
        return MailError(text)


# -- no SMTP ---------------------------------------------------------------------------------------


class LogMailer:
    """Embedded mode without SMTP: logs each message as a warning and keeps the last ones.

    The `email_not_sent` event carries to, subject and the plain-text body, so the operator can
    read the sign-in link from the log. `.sent` holds the last LOG_MAILER_KEEP messages, oldest
    first.
    """

    def __init__(self, *, from_address: str | None = None) -> None:
        self.from_address: Final[str] = _validate_address(
            DEFAULT_FROM_ADDRESS if from_address is None else from_address, "from_address"
        )
        self.sent: collections.deque[email.message.EmailMessage] = collections.deque(maxlen=LOG_MAILER_KEEP)

    def __repr__(self) -> str:
        return f"LogMailer(from_address={self.from_address!r}, kept={len(self.sent)})"

    async def send(self, message: email.message.EmailMessage) -> None:
        if message["From"] is None:
            message["From"] = self.from_address
        self.sent.append(message)
        # A fresh proxy per call, so a structlog reconfiguration (or capture_logs) always applies.
        structlog.get_logger(_LOGGER_NAME).warning(
            "email_not_sent",
            reason="no SMTP URL configured",
            to=message["To"],
            subject=message["Subject"],
            body=plain_text_body(message),
        )


def mailer_from_url(url: str | None, from_address: str | None = None) -> Mailer:
    """SmtpMailer for an smtp://, smtp+starttls:// or smtps:// URL; LogMailer for None or "".

    Surrounding whitespace is ignored (a URL read from a file often ends in a newline), so a
    blank string also gives a LogMailer. Raises ValueError for a bad URL or from_address.
    """
    if url is None or not url.strip():
        return LogMailer(from_address=from_address)
    return SmtpMailer(url.strip(), from_address=from_address)
