"""The e-mail notifier against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import logging
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import TypeAdapter, ValidationError

from alerts.channels import ChannelSettings, EmailChannel
from alerts.notify import DeliveryError, Notification, build_notifier
from alerts.notify import email as email_notify
from alerts.notify.email import EmailNotifier, message_id_for
from alerts.render import Renderer, sample_notification

CHANNELS: Any = TypeAdapter(ChannelSettings)
USER, PASSWORD = "alerts@acme.example", "s3cr3t-Pa55word"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    tls: bool
    login: bytes | None
    raw: bytes = b""
    peer: Any = None  # the client's (host, port): one per connection


@dataclass
class Sink:
    """An aiosmtpd handler that keeps what it receives; its replies can be set to fail."""

    received: list[Received] = field(default_factory=list)
    logins: list[tuple[str, bytes]] = field(default_factory=list)
    rcpt_reply: str | None = None  # e.g. "550 5.1.1 No such user"
    data_reply: str | None = None  # e.g. "451 4.3.0 Try again later"
    quits: int = 0

    def connections(self) -> int:
        """Connections that carried a message."""
        return len({r.peer for r in self.received})

    async def handle_QUIT(self, server, session, envelope):
        self.quits += 1
        return "221 Bye"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        # session.ssl is only set by STARTTLS; an implicit-TLS transport says it itself.
        tls = server.transport.get_extra_info("ssl_object") is not None
        login = session.auth_data if session.authenticated else None
        self.received.append(
            Received(
                envelope.mail_from, list(envelope.rcpt_tos), message, tls, login, bytes(envelope.content), session.peer
            )
        )
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            self.logins.append((mechanism, auth_data.login))
            if auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode():
                return AuthResult(success=True, auth_data=auth_data.login)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535


@dataclass
class Smtp:
    sink: Sink
    port: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the openssl CLI: `cryptography` is absent)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS tests")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def start_smtp() -> Iterator:
    controllers: list[Controller] = []

    def start(**kwargs: Any) -> Smtp:
        sink = Sink()
        port = free_port()
        controller = Controller(
            sink,
            hostname="127.0.0.1",
            port=port,
            authenticator=sink.authenticate,
            auth_require_tls=False,
            **kwargs,
        )
        controller.start()
        controllers.append(controller)
        return Smtp(sink, port)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp(start_smtp) -> Smtp:
    return start_smtp()


def channel(port: int, **extra: Any) -> EmailChannel:
    data = {
        "type": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "security": "none",
        "from_addr": "makewatch <makewatch@acme.example>",
        "to": ["ops@acme.example", "oncall@acme.example"],
        "timeout_s": 5.0,
        **extra,
    }
    return CHANNELS.validate_python(data, context={"env": {"SMTP_PASSWORD": PASSWORD}})


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def notifier(settings: EmailChannel, renderer: Renderer) -> EmailNotifier:
    built = build_notifier("ops-mail", settings, renderer=renderer)
    assert isinstance(built, EmailNotifier)
    return built


def notice(
    phase: str = "firing", *, outbox_id: int = 42, thread_ref: dict | None = None, **payload: Any
) -> Notification:
    base = sample_notification("execution_error", "email", phase=phase)
    alert = {**base.alert, "payload": {**base.alert["payload"], **payload}}
    return dataclasses.replace(base, outbox_id=outbox_id, alert=alert, thread_ref=thread_ref)


# --- what arrives -------------------------------------------------------------------------


async def test_it_sends_one_multipart_alternative_with_text_and_html(smtp: Smtp, renderer):
    await notifier(channel(smtp.port), renderer).send(notice())

    [got] = smtp.sink.received
    msg = got.message
    assert got.mail_from == "makewatch@acme.example"
    assert got.rcpt_tos == ["ops@acme.example", "oncall@acme.example"]
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "RuntimeError" in text and "Open the failed run in Make: https://eu1.make.com/" in text
    assert "<pre" in html and "RuntimeError" in html
    assert msg["Subject"] == "[makewatch] Error: Sync HubSpot contacts → Google Sheets failed: RuntimeError (Acme Ops)"
    assert msg["Auto-Submitted"] == "auto-generated"


# --- what a reader sees first (issue 13) ------------------------------------------------------


def parts(got: Received) -> tuple[str, str]:
    msg = got.message
    text, html = msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


async def test_times_are_shown_in_the_channels_zone_with_the_zone(smtp: Smtp, renderer):
    paris = notifier(channel(smtp.port, timezone="Europe/Paris"), renderer)
    await paris.send(notice())  # first seen 13:13 UTC on 21 Sep 2026: 15:13 in Paris (CEST)
    await notifier(channel(smtp.port), renderer).send(notice())

    (text, html), (utc_text, _) = parts(smtp.sink.received[0]), parts(smtp.sink.received[1])
    assert text.splitlines()[0].endswith("failed 4 times since 15:13 CEST: RuntimeError")
    assert "Times in Europe/Paris" in text and "Times in Europe/Paris" in html
    assert "15:13 CEST" in html and "13:13 UTC" not in text
    assert "since 13:13 UTC: RuntimeError" in utc_text.splitlines()[0]  # the default is UTC


def test_a_misspelt_channel_zone_is_a_config_error_with_a_suggestion():
    with pytest.raises(ValidationError, match="did you mean 'Europe/Paris'"):
        channel(1025, timezone="Europe/Pariss")


async def test_two_different_failures_of_one_scenario_differ_in_the_subject(smtp: Smtp, renderer):
    mail = notifier(channel(smtp.port), renderer)
    await mail.send(notice(error_name="DataError"))
    await mail.send(notice(outbox_id=43, error_name="ConnectionError"))
    await mail.send(notice("resolved", outbox_id=44, error_name="DataError", thread_ref={"message_id": "<x@y>"}))

    subjects = [r.message["Subject"] for r in smtp.sink.received]
    assert subjects[0] == "[makewatch] Error: Sync HubSpot contacts → Google Sheets failed: DataError (Acme Ops)"
    assert subjects[1].endswith("failed: ConnectionError (Acme Ops)")
    assert subjects[2] == "Re: " + subjects[0]  # the same thread, whatever the phase


@pytest.mark.parametrize("kind", ["execution_error", "quota", "hook_backlog", "scenario_deactivated"])
async def test_the_first_line_says_what_happened_and_the_footer_speaks_plainly(smtp: Smtp, renderer, kind):
    for phase in ("firing", "repeat", "resolved"):
        await notifier(channel(smtp.port), renderer).send(sample_notification(kind, "email", phase=phase))
    for got, phase in zip(smtp.sink.received, ("firing", "repeat", "resolved"), strict=True):
        text, html = parts(got)
        footer = text.split("\n-- \n")[-1]
        assert kind not in text and "repeat interval elapsed" not in text and "· first" not in footer
        expected = {"firing": "First notice", "repeat": "Repeat: 3 more since 13:43 UTC", "resolved": "Resolved at 14:13 UTC"}
        assert footer.startswith(expected[phase]) and expected[phase] in html
        assert text.splitlines()[0].startswith(("🔴 ERROR: ", "⚠️ WARNING: ", "🚨 CRITICAL: ", "✅ RESOLVED: "))


async def test_a_resolved_mail_says_when_and_drops_the_stale_error_and_forecast(smtp: Smtp, renderer):
    mail = notifier(channel(smtp.port), renderer)
    await mail.send(notice("resolved", resolved_at=1_790_000_300))
    await mail.send(sample_notification("quota", "email", phase="resolved"))
    await mail.send(sample_notification("quota", "email"))

    (error_text, error_html), (quota_text, quota_html), (firing_text, _) = (parts(r) for r in smtp.sink.received)
    assert error_text.splitlines()[0] == (
        "✅ RESOLVED: Sync HubSpot contacts → Google Sheets ran fine again at 14:18 UTC after failing 4 times"
    )
    assert "Rate limit exceeded" not in error_text.split("Recent occurrences")[0]  # no stale error block
    assert "<pre" not in error_html and "#e01e5a" not in error_html  # nor its red
    assert "runs out" not in quota_text and "Forecast" not in quota_html and "will stop" not in quota_text
    assert "runs out of Make operations around" in firing_text  # (the firing one has it)


async def test_a_quota_mail_leads_with_the_key_sentence_and_links_the_usage_page(smtp: Smtp, renderer):
    await notifier(channel(smtp.port), renderer).send(sample_notification("quota", "email"))

    text, html = parts(smtp.sink.received[0])
    assert text.splitlines()[0] == (
        "⚠️ WARNING: Acme Ops runs out of Make operations around Thu 24 Sep 09:25 UTC, "
        "before the reset on Wed 30 Sep: every scenario will stop"
    )
    button = re.search(r'<a href="([^"]+)"[^>]*background: #1264a3[^>]*>([^<]+)</a>', html)
    assert button and button.groups() == ("https://eu1.make.com/organization/1001/dashboard", "Operations usage in Make")


async def test_a_deactivation_mail_says_why_and_how_to_turn_it_back_on(smtp: Smtp, renderer):
    await notifier(channel(smtp.port), renderer).send(sample_notification("scenario_deactivated", "email"))

    text, html = parts(smtp.sink.received[0])
    assert text.splitlines()[0] == (
        "🚨 CRITICAL: Make switched off Sync HubSpot contacts → Google Sheets after 2 errors: ConnectionError"
    )
    assert "Why Make switched it off:\n- 14:10 UTC · ConnectionError: Connection refused by api.hubapi.com" in text
    assert "How to turn it back on: Fix the cause of the error" in text and "switch scheduling ON" in html
    assert re.search(r'<a href="https://eu1.make.com/812/scenarios/4211/edit"[^>]*background', html)  # primary


async def test_a_hook_backlog_mail_names_the_scenario_behind_the_hook(smtp: Smtp, renderer):
    await notifier(channel(smtp.port), renderer).send(sample_notification("hook_backlog", "email"))

    text, html = parts(smtp.sink.received[0])
    assert "Webhook queue of Shopify orders for Sync HubSpot contacts → Google Sheets is at 8,600" in text
    assert re.search(r'<a href="https://eu1.make.com/812/scenarios/4211/edit"[^>]*>Open the scenario in Make</a>', html)


async def test_the_subject_never_starts_with_a_folded_space(smtp: Smtp, renderer):
    """A long non-ASCII subject is folded by the e-mail library; the first fold must not come
    straight after "Subject:" (clients then show the subject starting with a space)."""
    mail = notifier(channel(smtp.port), renderer)
    await mail.send(notice(scenario_name="Ñandú → Größe " * 12))
    await mail.send(notice(scenario_name="Plain ASCII name " * 8))
    # 70 to 77 characters of ASCII: Python's own folder puts all of it on the next line.
    base = sample_notification("quota", "email")
    for org in ("Acme", "Acme Operations Europe", "Acme Operations Europe GmbH Berlin", "A" * 40):
        await mail.send(dataclasses.replace(base, alert={**base.alert, "payload": {**base.alert["payload"], "organization": org}}))
    lengths = {len(r.message["Subject"]) for r in smtp.sink.received}
    assert any(70 <= n <= 77 for n in lengths), lengths  # the case that used to fold

    for got in smtp.sink.received:
        header = got.raw.split(b"\r\n\r\n", 1)[0] if b"\r\n" in got.raw else got.raw.split(b"\n\n", 1)[0]
        line = next(x for x in header.splitlines() if x.startswith(b"Subject:"))
        assert line[len(b"Subject:"):].strip(), f"folded right after Subject: {line!r}"
        assert not str(got.message["Subject"]).startswith((" ", "\t"))


async def test_untrusted_text_is_escaped_in_the_html_part(smtp: Smtp, renderer):
    await notifier(channel(smtp.port), renderer).send(
        notice(scenario_name="<script>alert(1)</script> & co", error_message="<b>boom</b>")
    )

    html = smtp.sink.received[0].message.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "<b>boom</b>" not in html and "&lt;b&gt;boom&lt;/b&gt;" in html


async def test_later_notices_reply_to_the_first_one(smtp: Smtp, renderer):
    mail = notifier(channel(smtp.port), renderer)

    ref = await mail.send(notice(outbox_id=1))
    ref2 = await mail.send(notice("repeat", outbox_id=2, thread_ref=ref))
    ref3 = await mail.send(notice("resolved", outbox_id=3, thread_ref=ref2))

    first, repeat, resolved = (r.message for r in smtp.sink.received)
    assert ref == ref2 == ref3 == {"message_id": first["Message-ID"]}
    assert first["Message-ID"] == message_id_for(notice(outbox_id=1))
    assert first["Message-ID"].startswith("<makewatch.") and first["Message-ID"].endswith(
        ".1@makewatch>"
    )
    assert "In-Reply-To" not in first and "References" not in first
    for later in (repeat, resolved):
        assert later["In-Reply-To"] == later["References"] == first["Message-ID"]
        assert later["Message-ID"] != first["Message-ID"]
        assert later["Subject"] == "Re: " + first["Subject"]


async def test_a_redelivered_notice_keeps_its_message_id(smtp: Smtp, renderer):
    mail = notifier(channel(smtp.port), renderer)

    await mail.send(notice(outbox_id=7))
    await mail.send(notice(outbox_id=7))

    first, again = (r.message for r in smtp.sink.received)
    assert first["Message-ID"] == again["Message-ID"]  # receivers can drop the duplicate


# --- sessions: several messages over one connection -----------------------------------------


async def test_a_session_sends_several_messages_over_one_connection(smtp: Smtp, renderer):
    mail = notifier(channel(smtp.port, username=USER, password_env="SMTP_PASSWORD"), renderer)

    async with mail.session() as s:
        for i in range(3):
            ref = await s.send(notice(outbox_id=i + 1))
            # Accepted and returned while the connection is still open: the caller records it
            # as sent before any close-down.
            assert len(smtp.sink.received) == i + 1 and smtp.sink.quits == 0
            assert ref == {"message_id": message_id_for(notice(outbox_id=i + 1))}

    assert smtp.sink.connections() == 1 and smtp.sink.quits == 1
    assert [r.login for r in smtp.sink.received] == [USER.encode()] * 3  # logged in once, for all
    assert len(smtp.sink.logins) == 1


async def test_a_refused_message_closes_the_connection_and_the_next_opens_a_new_one(smtp: Smtp, renderer):
    mail = notifier(channel(smtp.port), renderer)

    async with mail.session() as s:
        await s.send(notice(outbox_id=1))
        smtp.sink.data_reply = "451 4.3.0 Try again later"
        with pytest.raises(DeliveryError):
            await s.send(notice(outbox_id=2))
        smtp.sink.data_reply = None
        await s.send(notice(outbox_id=3))
        await s.send(notice(outbox_id=4))

    assert [message_id_for(notice(outbox_id=i)) for i in (1, 3, 4)] == [
        r.message["Message-ID"] for r in smtp.sink.received
    ]
    first, *rest = (r.peer for r in smtp.sink.received)
    assert first not in rest and len(set(rest)) == 1


async def test_a_connection_the_server_closed_meanwhile_is_replaced(start_smtp, renderer):
    smtp = start_smtp(timeout=0.1)  # aiosmtpd drops a client idle for a tenth of a second
    mail = notifier(channel(smtp.port), renderer)

    async with mail.session() as s:
        await s.send(notice(outbox_id=1))
        await asyncio.sleep(0.3)
        await s.send(notice(outbox_id=2))  # not a failure: a new connection

    assert len(smtp.sink.received) == 2 and smtp.sink.connections() == 2


async def test_a_connection_carries_a_bounded_number_of_messages(smtp: Smtp, renderer, monkeypatch):
    monkeypatch.setattr(email_notify, "MESSAGES_PER_CONNECTION", 2)
    mail = notifier(channel(smtp.port), renderer)

    async with mail.session() as s:
        for i in range(5):
            await s.send(notice(outbox_id=i + 1))

    assert len(smtp.sink.received) == 5 and smtp.sink.connections() == 3
    assert smtp.sink.quits == 3  # each connection said goodbye


async def test_a_session_ended_by_an_error_closes_its_socket_without_a_goodbye(smtp: Smtp, renderer):
    mail = notifier(channel(smtp.port), renderer)

    with pytest.raises(RuntimeError):
        async with mail.session() as s:
            await s.send(notice(outbox_id=1))
            raise RuntimeError("the process is going down")

    assert smtp.sink.quits == 0
    assert open_client_sockets(smtp.port) == []


async def test_a_session_that_sent_nothing_opens_no_connection(smtp: Smtp, renderer):
    async with notifier(channel(smtp.port), renderer).session():
        pass

    await asyncio.sleep(0.05)
    assert smtp.sink.quits == 0 and smtp.sink.logins == []


# --- login and refusals -----------------------------------------------------------------------


async def test_it_logs_in_when_a_username_is_set(smtp: Smtp, renderer):
    settings = channel(smtp.port, username=USER, password_env="SMTP_PASSWORD")

    await notifier(settings, renderer).send(notice())

    [got] = smtp.sink.received
    assert got.login == USER.encode()


async def test_a_refused_login_is_permanent_and_never_shows_the_password(
    smtp: Smtp, renderer, caplog
):
    caplog.set_level(logging.DEBUG)
    settings = CHANNELS.validate_python(
        {
            "type": "email",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "security": "none",
            "username": USER,
            "password": "wr0ng-" + PASSWORD,
            "from_addr": "m@acme.example",
            "to": ["ops@acme.example"],
        }
    )

    with pytest.raises(DeliveryError) as info:
        await notifier(settings, renderer).send(notice())

    assert info.value.permanent and "535" in str(info.value)
    assert not smtp.sink.received and smtp.sink.logins
    texts = [str(info.value), repr(info.value)] + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if PASSWORD in t]


@pytest.mark.parametrize(
    ("where", "reply", "permanent"),
    [
        ("rcpt_reply", "550 5.1.1 No such user here", True),
        ("rcpt_reply", "450 4.2.1 Mailbox busy, try later", False),
        ("data_reply", "554 5.6.0 Message refused", True),
        ("data_reply", "451 4.3.0 Try again later", False),
    ],
)
async def test_smtp_refusals_map_to_permanent_or_retryable(
    smtp: Smtp, renderer, where: str, reply: str, permanent: bool
):
    setattr(smtp.sink, where, reply)

    with pytest.raises(DeliveryError) as info:
        await notifier(channel(smtp.port), renderer).send(notice())

    assert info.value.permanent is permanent
    assert reply[:3] in str(info.value)


async def test_a_refused_connection_is_retryable(renderer):
    with pytest.raises(DeliveryError, match="cannot connect") as info:
        await notifier(channel(free_port()), renderer).send(notice())

    assert info.value.retryable


async def test_a_server_that_never_greets_times_out_as_retryable(renderer):
    writers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(DeliveryError) as info:
            await notifier(channel(port, timeout_s=0.05), renderer).send(notice())
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()

    assert info.value.retryable and "0.05 s" in str(info.value)


# --- TLS ------------------------------------------------------------------------------------


async def test_starttls_upgrades_the_connection_before_login(start_smtp, certificate, renderer):
    smtp = start_smtp(tls_context=server_tls(certificate), require_starttls=True)
    settings = channel(
        smtp.port,
        security="starttls",
        ca_file=str(certificate[0]),
        username=USER,
        password_env="SMTP_PASSWORD",
    )

    await notifier(settings, renderer).send(notice())

    [got] = smtp.sink.received
    assert got.tls and got.login == USER.encode()


async def test_implicit_tls_connects_over_tls(start_smtp, certificate, renderer):
    smtp = start_smtp(ssl_context=server_tls(certificate))
    settings = channel(smtp.port, security="tls", ca_file=str(certificate[0]))

    await notifier(settings, renderer).send(notice())

    [got] = smtp.sink.received
    assert got.tls


def open_client_sockets(port: int) -> list[Any]:
    """Client-side socket transports to ``port`` whose socket is still open."""
    import asyncio.selector_events as selector_events
    import gc

    found = []
    for obj in gc.get_objects():
        if isinstance(obj, selector_events._SelectorSocketTransport):
            sock = obj.get_extra_info("socket")
            peer = obj.get_extra_info("peername")
            if sock is not None and sock.fileno() != -1 and peer and peer[1] == port:
                found.append(obj)
    return found


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_a_tls_send_closes_its_socket_before_it_returns(start_smtp, certificate, renderer, security):
    """aiosmtplib's close() only starts a TLS shutdown: a socket left closing was collected
    unclosed in the next test under load (ResourceWarning), and would leak in `once`."""
    if security == "tls":
        smtp = start_smtp(ssl_context=server_tls(certificate))
    else:
        smtp = start_smtp(tls_context=server_tls(certificate), require_starttls=True)
    settings = channel(smtp.port, security=security, ca_file=str(certificate[0]))
    await notifier(settings, renderer).send(notice())
    assert open_client_sockets(smtp.port) == []
    await notifier(settings, renderer).verify()
    assert open_client_sockets(smtp.port) == []


async def test_an_untrusted_certificate_is_permanent(start_smtp, certificate, renderer):
    smtp = start_smtp(tls_context=server_tls(certificate), require_starttls=True)

    with pytest.raises(DeliveryError, match="certificate not trusted") as info:
        await notifier(channel(smtp.port, security="starttls"), renderer).send(notice())

    assert info.value.permanent


async def test_starttls_against_a_server_without_it_is_permanent(smtp: Smtp, renderer):
    with pytest.raises(DeliveryError, match="STARTTLS") as info:
        await notifier(channel(smtp.port, security="starttls"), renderer).send(notice())

    assert info.value.permanent


# --- settings -------------------------------------------------------------------------------


def test_the_password_comes_from_a_file(tmp_path: Path):
    (tmp_path / "smtp.pw").write_text(PASSWORD + "\n")

    settings = CHANNELS.validate_python(
        {
            "type": "email",
            "smtp_host": "smtp.acme.example",
            "username": USER,
            "password_file": "smtp.pw",
            "from_addr": "m@acme.example",
            "to": ["ops@acme.example"],
        },
        context={"config_dir": tmp_path},
    )

    assert settings.password.reveal() == PASSWORD
    assert settings.smtp_port == 587 and settings.security == "starttls"
    assert PASSWORD not in repr(settings)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"username": USER}, "set exactly one of password_env"),
        ({"password": PASSWORD}, "no username"),
        ({"to": []}, "at least 1 item"),
        ({"to": ["not an address"]}, "is not an e-mail address"),
        ({"from_addr": "m@acme.example\r\nBcc: x@evil.example"}, "control characters"),
        ({"security": "ssl"}, "'starttls', 'tls' or 'none'"),
    ],
)
def test_bad_email_settings_say_what_is_wrong(extra: dict, message: str):
    data = {
        "type": "email",
        "smtp_host": "smtp.acme.example",
        "from_addr": "m@acme.example",
        "to": ["ops@acme.example"],
        **extra,
    }

    with pytest.raises(ValidationError) as info:
        CHANNELS.validate_python(data)

    errors = info.value.errors(include_url=False)
    text = " ".join(str(e["msg"]) for e in errors)
    assert message in text and PASSWORD not in text


def test_a_password_sent_in_clear_to_a_remote_server_is_flagged():
    settings = CHANNELS.validate_python(
        {
            "type": "email",
            "smtp_host": "smtp.acme.example",
            "security": "none",
            "username": USER,
            "password_env": "SMTP_PASSWORD",
            "from_addr": "m@acme.example",
            "to": ["ops@acme.example"],
        },
        context={"env": {"SMTP_PASSWORD": PASSWORD}},
    )

    [warning] = settings.risky_choices("mail")
    assert "unencrypted" in warning and PASSWORD not in warning
