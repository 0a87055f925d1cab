"""cashmarkets.integrations.email against a real local SMTP server (aiosmtpd), no mocks."""

from __future__ import annotations

import email.message
import email.policy
import html
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from cashmarkets.integrations.email import (
    DEFAULT_FROM_ADDRESS,
    LOG_MAILER_KEEP,
    MAGIC_LINK_SUBJECT,
    LogMailer,
    Mailer,
    MailError,
    SmtpMailer,
    magic_link_message,
    mailer_from_url,
    plain_text_body,
)
from tests.support.ports import free_port

# aiosmtpd warns when AUTH is allowed without TLS; these tests do that on purpose, on 127.0.0.1.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

HOST = "127.0.0.1"
FROM = "Cash Markets <no-reply@cash.example>"
TO = "alice@example.com"
# `&`, `<` and `"` must come out HTML-escaped in the HTML part.
LINK = 'https://cash.example/auth/verify?token=Zm9vYmFy-_0123456789abcdef&next=/home<x>"q'
USER = "mailer@cash.example"
PASSWORD = "s3cret:P@ss/w0rd"  # percent-encoded in the URL
PASSWORD_IN_URL = "s3cret%3AP%40ss%2Fw0rd"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage


@dataclass
class Collector:
    """aiosmtpd handler: records every message; optionally refuses some recipients."""

    refuse: frozenset[str] = frozenset()
    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        parsed = BytesParser(policy=email.policy.default).parsebytes(content)
        assert isinstance(parsed, email.message.EmailMessage)
        assert envelope.mail_from is not None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"


@contextmanager
def smtp_server(handler: Collector, **smtp_kwargs: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port, **smtp_kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def password_authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    # handled=False: aiosmtpd itself replies (235 or 535); handled=True would leave the client waiting.
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def port(collector: Collector) -> Iterator[int]:
    with smtp_server(collector) as p:
        yield p


@pytest.fixture
def auth_port(collector: Collector) -> Iterator[int]:
    with smtp_server(
        collector, authenticator=password_authenticator, auth_require_tls=False, auth_required=True
    ) as p:
        yield p


def magic(to: str = TO, link: str = LINK) -> email.message.EmailMessage:
    return magic_link_message(to=to, link=link, from_address=FROM, expires_minutes=15)


def bodies(message: email.message.EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html_part is not None
    text_content = text.get_content()
    html_content = html_part.get_content()
    assert isinstance(text_content, str)
    assert isinstance(html_content, str)
    return text_content, html_content


# -- the message -----------------------------------------------------------------------------------


def test_magic_link_message_parts_and_headers() -> None:
    message = magic()
    assert message["Subject"] == MAGIC_LINK_SUBJECT == "Your Cash Markets sign-in link"
    assert message["To"] == TO
    assert message["From"] == FROM
    assert message["Message-ID"].startswith("<")
    assert message["Message-ID"].endswith("@cash.example>")
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    text, html_body = bodies(message)
    assert text.count(LINK) == 1
    assert "15 minutes" in text
    escaped = html.escape(LINK, quote=True)
    assert escaped != LINK
    assert html_body.count(escaped) == 1
    assert LINK not in html_body
    assert f'href="{escaped}"' in html_body
    assert plain_text_body(message) == text


def test_magic_link_message_ids_are_unique() -> None:
    assert magic()["Message-ID"] != magic()["Message-ID"]


@pytest.mark.parametrize(
    "to",
    [
        "alice@example.com\r\nBcc: x@y",
        "alice@example.com\nBcc: x@y",
        "alice@example.com\rBcc: x@y",
        "alice@example.com, bob@example.com",
        "alice@example.com; bob@example.com",
        "not-an-address",
        "",
        "   ",
        "@example.com",
        "alice@",
    ],
)
def test_bad_to_is_rejected(to: str) -> None:
    with pytest.raises(ValueError):
        magic(to=to)


def test_display_name_to_is_accepted() -> None:
    assert magic(to="Alice Doe <alice@example.com>")["To"].addresses[0].addr_spec == TO


@pytest.mark.parametrize(
    "link", ["", "/auth/verify?token=x", "javascript:alert(1)", "https://cash.example/a b", "https://x/\r\n"]
)
def test_bad_link_is_rejected(link: str) -> None:
    with pytest.raises(ValueError):
        magic(link=link)


@pytest.mark.parametrize("minutes", [0, -5])
def test_bad_expiry_is_rejected(minutes: int) -> None:
    with pytest.raises(ValueError):
        magic_link_message(to=TO, link=LINK, from_address=FROM, expires_minutes=minutes)


def test_bad_from_address_is_rejected() -> None:
    with pytest.raises(ValueError):
        magic_link_message(to=TO, link=LINK, from_address="x@y\r\nBcc: z@w", expires_minutes=5)


# -- SMTP ------------------------------------------------------------------------------------------


async def test_smtp_delivers_magic_link(port: int, collector: Collector) -> None:
    mailer = SmtpMailer(f"smtp://{HOST}:{port}", from_address=FROM)
    await mailer.send(magic())
    assert len(collector.received) == 1
    got = collector.received[0]
    assert got.rcpt_tos == [TO]
    assert got.mail_from == "no-reply@cash.example"
    assert got.message["Subject"] == MAGIC_LINK_SUBJECT
    assert got.message["To"] == TO
    text, html_body = bodies(got.message)
    assert LINK in text
    assert html.unescape(html_body).count(LINK) == 1
    assert html_body.count(html.escape(LINK, quote=True)) == 1


async def test_smtp_fills_in_missing_from(port: int, collector: Collector) -> None:
    message = email.message.EmailMessage()
    message["To"] = TO
    message["Subject"] = "hi"
    message.set_content("hello")
    await SmtpMailer(f"smtp://{HOST}:{port}").send(message)
    assert collector.received[0].message["From"] == DEFAULT_FROM_ADDRESS
    assert collector.received[0].mail_from == "no-reply@localhost"


async def test_smtp_auth_good_credentials_deliver(auth_port: int, collector: Collector) -> None:
    user = USER.replace("@", "%40")
    mailer = SmtpMailer(f"smtp://{user}:{PASSWORD_IN_URL}@{HOST}:{auth_port}", from_address=FROM)
    assert mailer.username == USER
    assert PASSWORD not in repr(mailer)
    assert PASSWORD_IN_URL not in repr(mailer)
    await mailer.send(magic())
    assert len(collector.received) == 1
    assert collector.received[0].rcpt_tos == [TO]


@pytest.mark.parametrize("password", ["wrong-Passw0rd", PASSWORD_IN_URL + "x"])
async def test_smtp_auth_bad_credentials_raise_without_password(
    auth_port: int, collector: Collector, password: str
) -> None:
    mailer = SmtpMailer(f"smtp://{USER.replace('@', '%40')}:{password}@{HOST}:{auth_port}", from_address=FROM)
    with pytest.raises(MailError) as info:
        await mailer.send(magic())
    text = str(info.value)
    assert "authentication" in text
    assert password not in text
    assert PASSWORD not in text
    assert collector.received == []


async def test_smtp_auth_required_but_not_given_raises(auth_port: int, collector: Collector) -> None:
    with pytest.raises(MailError, match="refused"):
        await SmtpMailer(f"smtp://{HOST}:{auth_port}", from_address=FROM).send(magic())
    assert collector.received == []


async def test_smtp_recipient_refused_raises() -> None:
    handler = Collector(refuse=frozenset({TO}))
    with smtp_server(handler) as p, pytest.raises(MailError, match="refused") as info:
        await SmtpMailer(f"smtp://{HOST}:{p}", from_address=FROM).send(magic())
    assert TO in str(info.value)
    assert handler.received == []


async def test_smtp_partial_recipient_refusal_raises() -> None:
    handler = Collector(refuse=frozenset({"bob@example.com"}))
    message = magic()
    message["Cc"] = "bob@example.com"
    with smtp_server(handler) as p, pytest.raises(MailError, match=re.escape("bob@example.com")):
        await SmtpMailer(f"smtp://{HOST}:{p}", from_address=FROM).send(message)
    assert [r.rcpt_tos for r in handler.received] == [[TO]]


async def test_smtp_connection_refused_raises_quickly() -> None:
    port = free_port()  # nothing listens there
    mailer = SmtpMailer(f"smtp://{HOST}:{port}", timeout_s=2)
    started = time.monotonic()
    with pytest.raises(MailError) as info:
        await mailer.send(magic())
    assert time.monotonic() - started < 2
    assert f"{HOST}:{port}" in str(info.value)


async def test_starttls_is_required_not_optional(port: int, collector: Collector) -> None:
    # The server does not offer STARTTLS: smtp+starttls:// must fail, not fall back to plain text.
    with pytest.raises(MailError, match="STARTTLS"):
        await SmtpMailer(f"smtp+starttls://{HOST}:{port}", timeout_s=2).send(magic())
    assert collector.received == []


async def test_implicit_tls_against_plain_server_raises(port: int, collector: Collector) -> None:
    with pytest.raises(MailError):
        await SmtpMailer(f"smtps://{HOST}:{port}", timeout_s=2).send(magic())
    assert collector.received == []


async def test_header_injection_sends_nothing(port: int, collector: Collector) -> None:
    mailer = mailer_from_url(f"smtp://{HOST}:{port}", FROM)
    with pytest.raises(ValueError):
        await mailer.send(magic(to="alice@example.com\r\nBcc: x@y"))
    assert collector.received == []


# -- LogMailer -------------------------------------------------------------------------------------


async def test_log_mailer_keeps_message_and_logs_link() -> None:
    mailer = LogMailer(from_address=FROM)
    with structlog.testing.capture_logs() as logs:
        await mailer.send(magic())
    assert len(mailer.sent) == 1
    body = plain_text_body(mailer.sent[-1])
    assert body is not None
    assert LINK in body
    [event] = logs
    assert event["event"] == "email_not_sent"
    assert event["log_level"] == "warning"
    assert event["to"] == TO
    assert event["subject"] == MAGIC_LINK_SUBJECT
    assert LINK in event["body"]


async def test_log_mailer_keeps_only_the_last_messages() -> None:
    mailer = LogMailer()
    with structlog.testing.capture_logs():
        for i in range(LOG_MAILER_KEEP + 5):
            await mailer.send(magic(link=f"https://cash.example/auth?token={i}"))
    assert len(mailer.sent) == LOG_MAILER_KEEP
    oldest = plain_text_body(mailer.sent[0])
    newest = plain_text_body(mailer.sent[-1])
    assert oldest is not None
    assert newest is not None
    assert "token=5\n" in oldest
    assert f"token={LOG_MAILER_KEEP + 4}\n" in newest


# -- choosing and configuring ----------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, "", "  \n"])
def test_mailer_from_url_without_url_logs(url: str | None) -> None:
    mailer = mailer_from_url(url, FROM)
    assert isinstance(mailer, LogMailer)
    assert isinstance(mailer, Mailer)
    assert mailer.from_address == FROM


@pytest.mark.parametrize(
    ("url", "security", "host", "port"),
    [
        ("smtp://mail.example.com", "plain", "mail.example.com", 25),
        ("smtp://mail.example.com:2525/", "plain", "mail.example.com", 2525),
        ("smtp+starttls://u:p@smtp.example.com", "starttls", "smtp.example.com", 587),
        ("SMTPS://u:p@SMTP.Example.com", "tls", "smtp.example.com", 465),
        ("smtps://[::1]:1465", "tls", "::1", 1465),
        ("smtp://127.0.0.1:1025\n", "plain", "127.0.0.1", 1025),
    ],
)
def test_mailer_from_url_picks_smtp(url: str, security: str, host: str, port: int) -> None:
    mailer = mailer_from_url(url)
    assert isinstance(mailer, SmtpMailer)
    assert isinstance(mailer, Mailer)
    assert (mailer.security, mailer.host, mailer.port) == (security, host, port)
    assert mailer.from_address == DEFAULT_FROM_ADDRESS
    assert mailer.timeout_s == 10


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com",
        "smtp+ssl://mail.example.com",
        "mail.example.com:25",
        "smtp://",
        "smtp://:25",
        "smtp://mail.example.com:0",
        "smtp://mail.example.com:65536",
        "smtp://mail.example.com:abc",
        "smtp://mail.example.com:",
        "smtp://mail_example..com",
        "smtp://mail example.com",
        "smtp://mail.example.com/path",
        "smtp://mail.example.com?x=1",
        "smtp://user@mail.example.com",
        "smtp://:hunter2secret@mail.example.com",
        "smtp://[::zz]:25",
    ],
)
def test_bad_urls_raise_value_error(url: str) -> None:
    with pytest.raises(ValueError) as info:
        mailer_from_url(url)
    assert "hunter2secret" not in str(info.value)


def test_bad_url_error_does_not_leak_password() -> None:
    with pytest.raises(ValueError) as info:
        SmtpMailer("smtp://user:hunter2secret@mail.example.com:99999")
    assert "hunter2secret" not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    "make", [lambda: SmtpMailer("smtp://h", timeout_s=0), lambda: LogMailer(from_address="x")]
)
def test_bad_options_raise_value_error(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()
