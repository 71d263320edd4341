"""Delivery: backoff, order per alert, dead channels, restarts, outage reports, threads.

Real servers on 127.0.0.1 (the Slack stand-in, an aiosmtpd sink); time is injected (``now``
passed to the Alerter and to deliver_due); events enter through the store as the poller
writes them, so the engine decides what is queued.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import START

from alerts.delivery import (
    CHANNEL_FAILING_AFTER_S,
    RETRY_AFTER_MAX_S,
    TRANSIENT_MAX_S,
    RetryPolicy,
    channel_states,
    deliver_due,
)
from alerts.pipeline import process_events
from alerts.service import Alerter
from watcher import store as st
from watcher.config import load_config
from watcher.status import status_report
from watcher.store import Store
from watcher.testing import SlackState, create_slack_app
from watcher.testing.mail_sink import MailSink, start_mail_sink

BOT = "xoxb-standin-token"
HOOK_PATH = "T0/B0/secretpath"
ORG = 1001


class Stack:
    """An Alerter on a fresh store, its channels pointed at the stand-ins."""

    def __init__(self, alerter: Alerter, store: Store, slack: SlackState, sink: MailSink, smtp: Any) -> None:
        self.alerter, self.store, self.slack, self.sink, self.smtp = alerter, store, slack, sink, smtp
        self.now = START
        self._seq = 0

    async def tick(self, advance_s: float = 0.0):
        self.now += advance_s
        return await self.alerter.tick(self.now)

    async def deliver(self, advance_s: float = 0.0):
        self.now += advance_s
        return await deliver_due(
            self.store, self.alerter.notifiers, self.now, rng=random.Random(7), policy=self.alerter.retry
        )

    def error(self, scenario_id: int = 4211, message: str = "Bad request", **payload: Any) -> None:
        """One execution error of ``scenario_id``, as the poller stores it."""
        self._seq += 1
        self._insert(
            "execution_error",
            f"execution_error:{ORG}:{scenario_id}:e{self._seq}",
            scenario_id,
            {
                "organization": "Acme",
                "scenario_name": f"Scenario {scenario_id}",
                "error_name": "DataError",
                "error_message": message,
                "execution_id": f"e{self._seq}",
                "timestamp": "2026-09-21T14:13:20+00:00",
                **payload,
            },
            severity="error",
        )

    def recovered(self, scenario_id: int = 4211) -> None:
        self._seq += 1
        self._insert(
            "execution_recovered",
            f"execution_recovered:{ORG}:{scenario_id}:r{self._seq}",
            scenario_id,
            {"organization": "Acme", "scenario_name": f"Scenario {scenario_id}", "execution_id": f"r{self._seq}"},
            severity="info",
        )

    def _insert(self, kind: str, key: str, scenario_id: int, payload: dict, *, severity: str) -> None:
        event = {
            "key": key,
            "kind": kind,
            "severity": severity,
            "org_id": ORG,
            "scenario_id": scenario_id,
            "occurred_at": self.now,
            "detected_at": self.now,
            "payload": payload,
        }
        self.store.write_sync(lambda db: st.insert_events(db, [event]))

    def outbox(self) -> list[dict]:
        return self.store.read_sync(lambda db: [dict(r) for r in db["outbox"].rows_where(order_by="id")])

    def health_events(self) -> list[dict]:
        return self.store.read_sync(
            lambda db: [json.loads(r["payload_json"]) for r in db["events"].rows_where("kind = 'watcher_health'", order_by="id")]
        )

    def posts(self) -> list:
        """Messages as Slack stored them, through either the bot or the webhook."""
        return list(self.slack.messages)


def write_config(tmp_path: Path, slack_url: str, smtp_port: int, channels: list[str], extra: str) -> Path:
    cfg = tmp_path / "makewatch.toml"
    cfg.write_text(
        f"""
[[organizations]]
name = "Acme"
base_url = "http://127.0.0.1:9/api/v2"
organization_id = {ORG}
token_env = "TOK"

[state]
db_path = "{tmp_path / "state.db"}"

[alerts]
default_channels = {json.dumps(channels)}
group_wait_s = 0
repeat_interval_s = 600
{extra}

[channels.bot]
type = "slack_bot"
token_env = "BOT"
channel = "#alerts"
base_url = "{slack_url}/api/"

[channels.hook]
type = "slack_webhook"
webhook_url_env = "HOOK"

[channels.mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from_addr = "makewatch@acme.example"
to = ["ops@acme.example"]
timeout_s = 5
"""
    )
    return cfg


@pytest.fixture
async def make_stack(aiohttp_server, tmp_path) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    made: list[tuple[Stack, aiohttp.ClientSession]] = []

    async def make(
        channels: list[str], extra: str = "", *, store: Store | None = None, sink: MailSink | None = None
    ) -> Stack:
        slack = SlackState(channels={"alerts": "C0ALERTS"}, webhooks={HOOK_PATH: "C0HOOK"})
        server = await aiohttp_server(create_slack_app(slack))
        slack_url = str(server.make_url("")).rstrip("/")
        sink = sink or MailSink()
        smtp = start_mail_sink(sink)
        cfg = write_config(tmp_path, slack_url, smtp.port, channels, extra)
        env = {"TOK": "tok", "BOT": BOT, "HOOK": f"{slack_url}/webhook/{HOOK_PATH}"}
        settings = load_config(cfg, env=env)
        store = store or Store.open(settings.state.db_path)
        session = aiohttp.ClientSession()
        alerter = Alerter(settings, store, session, rng=random.Random(7))
        stack = Stack(alerter, store, slack, sink, smtp)
        made.append((stack, session))
        return stack

    yield make
    for stack, session in made:
        await stack.alerter.aclose()
        await session.close()
    for store in {id(stack.store): stack.store for stack, _ in made}.values():
        store.close()
    for stack, _ in made:
        try:
            stack.smtp.stop()
        except AssertionError:
            pass


# --- backoff -------------------------------------------------------------------------------


def test_transient_backoff_is_capped_at_about_a_minute_with_jitter():
    policy, rng = RetryPolicy(), random.Random(1)
    waits = [policy.wait(n, None, rng) for n in range(1, 60)]
    assert max(waits) <= TRANSIENT_MAX_S == 60.0
    assert 7.5 <= waits[0] <= 15.0 and 15.0 <= waits[1] <= 30.0
    assert len({round(w, 3) for w in waits[3:]}) > 10  # still jittered once capped
    assert all(w >= TRANSIENT_MAX_S / 2 for w in waits[3:])


@pytest.mark.parametrize(
    ("retry_after_s", "low", "high"),
    [(120.0, 120.0, 120.0), (3600.0, RETRY_AFTER_MAX_S, RETRY_AFTER_MAX_S), (1.0, 7.5, 15.0)],
)
def test_retry_after_is_honoured_but_bounded_to_five_minutes(retry_after_s, low, high):
    assert low <= RetryPolicy().wait(1, retry_after_s, random.Random(3)) <= high
    assert RETRY_AFTER_MAX_S == 300.0


async def test_five_slack_500s_delay_a_webhook_channel_minutes_less_than_before(make_stack):
    """Issue 12: five 500s held the channel 5.5 minutes (backoff 14/17/39/70/173 s)."""
    s = await make_stack(["hook"])
    await s.tick()
    s.slack.fail_next(5, status=500)
    s.error(1, "first")
    s.error(2, "second")
    first_failure = s.now
    await s.tick()
    for _ in range(600):
        if all(r["status"] == "sent" for r in s.outbox()):
            break
        await s.tick(1.0)
    assert all(r["status"] == "sent" for r in s.outbox())
    assert s.now - first_failure <= 15 + 30 + 60 + 60  # was 313 s; now at most 165 s
    attempts = s.store.read_sync(lambda db: [r["attempted_at"] for r in db["deliveries"].rows_where(order_by="id")])
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert max(gaps) <= TRANSIENT_MAX_S + 1
    assert len(s.slack.calls("webhook")) == 5 + 2  # each failure once, then both rows


# --- order per alert, not per channel --------------------------------------------------------


async def test_a_failing_row_holds_its_own_alerts_later_rows_but_not_other_alerts(make_stack):
    s = await make_stack(["bot"])
    await s.tick()
    s.error(1, "one")
    await s.tick()  # alert 1 is posted
    (original,) = s.posts()
    s.error(1, "one")  # the same error again: a repeat of alert 1
    s.error(2, "two")
    s.slack.fail_next(1, status=500)  # refuses alert 1's repeat, once
    await s.tick(601)  # repeat of alert 1 (fails), first notice of alert 2 (sent)
    assert [m.thread_ts for m in s.posts()] == [None, None]
    assert "Scenario 2" in s.posts()[1].all_text()  # alert 2 did not wait behind alert 1
    s.recovered(1)
    await s.tick(1)  # alert 1 resolves, but its repeat is still waiting: nothing overtakes it
    assert [c for c in s.slack.calls("chat.update") if c.status == 200] == []
    rows = s.outbox()
    assert [(r["kind"], r["status"]) for r in rows if r["alert_id"] == rows[0]["alert_id"]] == [
        ("firing", "sent"),
        ("repeat", "pending"),
        ("resolved", "pending"),
    ]
    await s.tick(TRANSIENT_MAX_S)
    assert [m.thread_ts for m in s.slack.replies(original.ts)] == [original.ts, original.ts]  # repeat, then the resolved reply
    done = [c for c in s.slack.calls("chat.update") if c.status == 200]
    assert len(done) == 2 and {u.body["ts"] for u in done} == {original.ts}  # repeat, resolution
    assert all(r["status"] == "sent" for r in s.outbox())


async def test_a_dead_channel_costs_one_request_per_backoff_not_one_per_row(make_stack):
    s = await make_stack(["hook"])
    await s.tick()
    s.slack.down = True
    for i in range(10):
        s.error(100 + i, f"error {i}")
    await s.tick()
    assert len(s.slack.calls("webhook")) == 2  # the first row, one probe of another alert
    per_tick = []
    for _ in range(120):  # ten minutes of 5-second ticks
        before = len(s.slack.calls("webhook"))
        await s.tick(5)
        per_tick.append(len(s.slack.calls("webhook")) - before)
    assert max(per_tick) == 1
    assert 10 <= sum(per_tick) <= 600 / (TRANSIENT_MAX_S / 2)  # a request every 30-60 s once capped
    gaps, last = [], 0
    for i, n in enumerate(per_tick):
        if n:
            gaps.append(i - last)
            last = i
    assert max(gaps) * 5 <= TRANSIENT_MAX_S + 5  # never silent more than about a minute
    s.slack.down = False
    await s.tick(TRANSIENT_MAX_S)
    assert len([m for m in s.posts() if m.channel == "C0HOOK"]) == 10  # drained in one pass


async def test_a_rate_limit_blocks_the_whole_channel_until_retry_after(make_stack):
    s = await make_stack(["hook"])
    await s.tick()
    s.slack.fail_next(1, status=429, retry_after=3600)
    s.error(1)
    s.error(2)
    await s.tick()
    assert len(s.slack.calls("webhook")) == 1  # no probe: Slack asked us to wait
    first = s.outbox()[0]
    assert first["next_attempt_at"] == s.now + RETRY_AFTER_MAX_S  # bounded, not an hour
    await s.tick(RETRY_AFTER_MAX_S - 1)
    assert s.posts() == []
    await s.tick(1)
    assert len(s.posts()) == 2


# --- restart ---------------------------------------------------------------------------------


async def test_a_restart_retries_pending_rows_at_once(make_stack):
    s = await make_stack(["hook"])
    await s.tick()
    s.slack.fail_next(2, status=503)
    s.error(1)
    s.error(2)
    await s.tick()  # both fail: the channel is blocked, the rows wait their backoff
    assert [r["next_attempt_at"] > s.now for r in s.outbox()] == [True, True]
    assert s.store.read_sync(channel_states)["hook"]["blocked_until"] > s.now
    restarted = await make_stack(["hook"], store=s.store)  # a new process on the same state
    restarted.now = s.now + 1
    await restarted.tick()
    assert [r["status"] for r in restarted.outbox()] == ["sent", "sent"]
    assert len(restarted.posts()) == 2


async def test_backoff_is_kept_between_ticks_of_one_process(make_stack):
    s = await make_stack(["hook"])
    await s.tick()
    s.slack.fail_next(1, status=503)
    s.error(1)
    await s.tick()
    await s.tick(1)
    assert len(s.slack.calls("webhook")) == 1  # the second tick did not release the backoff


# --- a channel failing for 10 minutes --------------------------------------------------------


async def test_a_channel_failing_10_minutes_is_reported_on_the_others_once_then_resolved(make_stack):
    s = await make_stack(["hook", "mail"])
    await s.tick()
    s.slack.down = True
    s.error(1, "lost in Slack")
    await s.tick()
    started = s.now
    assert len(s.sink.messages) == 1  # the e-mail copy of the alert
    while s.now - started < CHANNEL_FAILING_AFTER_S - 5:
        await s.tick(5)
    assert [e for e in s.health_events() if e["problem"] == "channel_failing"] == []
    for _ in range(60):  # five more minutes
        await s.tick(5)
    (failing,) = s.health_events()
    assert failing["problem"] == "channel_failing" and failing["exclude_channel"] == "hook"
    assert failing["failing_since"] == started
    assert "503" in failing["error"] and HOOK_PATH not in json.dumps(failing)
    health_mail = [m for _, m in s.sink.messages if "makewatch health" in str(m["Subject"])]
    assert len(health_mail) == 1 and "hook" in health_mail[0].get_body(("plain",)).get_content()
    assert all("makewatch health" not in m.all_text() for m in s.posts())

    s.slack.down = False
    for _ in range(20):
        await s.tick(5)
    events = s.health_events()
    assert len(events) == 2 and events[1]["recovered"] is True and events[1]["channel"] == "hook"
    resolved = [m for _, m in s.sink.messages if "makewatch health" in str(m["Subject"])]
    assert len(resolved) == 2 and resolved[1]["X-Makewatch-Phase"] == "resolved"
    open_health = s.store.read_sync(
        lambda db: db["alerts"].count_where("kind = 'watcher_health' AND state != 'resolved'")
    )
    assert open_health == 0


async def test_two_failing_channels_are_two_health_alerts_and_resolve_apart(make_stack):
    s = await make_stack(["hook", "bot", "mail"])
    await s.tick()
    s.slack.down = True  # the webhook and the bot both fail
    s.error(1)
    await s.tick()
    for _ in range(130):
        await s.tick(5)
    failing = [e for e in s.health_events() if e["problem"] == "channel_failing"]
    assert sorted(e["channel"] for e in failing) == ["bot", "hook"]

    def open_health(db) -> list[tuple[str, str]]:
        payloads = [json.loads(r["payload_json"]) for r in db["alerts"].rows_where("kind = 'watcher_health' AND state != 'resolved'")]
        return sorted((p["channel"], p["problem"]) for p in payloads)

    assert s.store.read_sync(open_health) == [("bot", "channel_failing"), ("hook", "channel_failing")]
    bot_token = s.alerter.notifiers["bot"].settings.token
    s.slack.down = False
    s.slack.tokens = set()  # the bot is refused for good now; the webhook works again
    for _ in range(20):
        await s.tick(5)
    # The webhook's recovery resolves only its own alert; the bot, now refused, is parked.
    assert s.store.read_sync(open_health) == [("bot", "channel_failed"), ("bot", "channel_failing")]
    assert bot_token.reveal() not in json.dumps(s.health_events())


async def test_a_short_outage_is_not_reported(make_stack):
    s = await make_stack(["hook", "mail"])
    await s.tick()
    s.slack.down = True
    s.error(1)
    for _ in range(100):  # 500 s
        await s.tick(5)
    s.slack.down = False
    for _ in range(20):
        await s.tick(5)
    assert s.health_events() == []
    state = s.store.read_sync(channel_states)["hook"]
    assert state["failing_since"] is None and state["failures"] == 0


# --- makewatch status ------------------------------------------------------------------------


async def test_status_shows_each_channels_queue_and_last_error(make_stack):
    s = await make_stack(["hook", "mail"])
    await s.tick()
    s.slack.down = True
    s.error(1)
    s.error(2)
    await s.tick()
    failed_at = s.now
    s.now += 90
    report = s.store.read_sync(lambda db: status_report(db, s.now))
    hook = next(line for line in report.splitlines() if line.strip().startswith("hook:"))
    assert "2 pending" in hook and "oldest 90 s" in hook
    assert "HTTP 503" in hook and "2026-09-21 14:13:20 UTC" in hook
    assert f"failing since {st_time(failed_at)}" in hook
    mail = next(line for line in report.splitlines() if line.strip().startswith("mail:"))
    assert "0 pending" in mail and "last error" not in mail
    assert HOOK_PATH not in report


def st_time(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- point 8: Slack threads survive multi-channel alerts --------------------------------------


async def test_an_alert_on_a_slack_bot_and_email_keeps_its_slack_thread(make_stack):
    s = await make_stack(["bot", "mail"])
    await s.tick()
    s.error(1, "first")
    await s.tick()
    (original,) = s.posts()
    s.error(1, "first", execution_id="again")
    await s.tick(601)
    s.recovered(1)
    await s.tick(1)

    assert [m.ts for m in s.posts() if m.thread_ts is None] == [original.ts]  # one top-level message
    replies = s.slack.replies(original.ts)
    assert len(replies) == 2 and "again" in replies[0].all_text()  # the repeat, in the thread
    repeat_update, update = s.slack.calls("chat.update")  # the repeat, then the resolution
    assert {u.body["ts"] for u in (repeat_update, update)} == {original.ts}
    assert update.body["channel"] == "C0ALERTS"
    assert "resolved" in s.slack.find("C0ALERTS", original.ts).all_text().lower()

    mails = [m for _, m in s.sink.messages]
    assert [m["X-Makewatch-Phase"] for m in mails] == ["firing", "repeat", "resolved"]
    root = mails[0]["Message-ID"]
    assert all(m["In-Reply-To"] == root for m in mails[1:])
    refs = s.store.read_sync(lambda db: json.loads(next(iter(db["alerts"].rows))["thread_ref_json"]))
    assert refs == {"bot": {"channel": "C0ALERTS", "ts": original.ts}, "mail": {"message_id": root}}


# --- a crash between a send and its commit ----------------------------------------------------


class ProcessDied(Exception):
    """Stands for a SIGKILL: nothing after it runs, nothing uncommitted is kept."""


class Journal:
    """One list of what happened, in order, on both sides: the SMTP server's commands (from
    its thread) and the store's "sent" commits (from the event loop)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def add(self, what: str) -> None:
        self.events.append(what)  # (list.append is atomic: two threads write here)


class JournalingSink(MailSink):
    """The mail sink, noting each connection (EHLO), each accepted message (by outbox id, from
    its Message-ID) and each QUIT in the journal."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802 - aiosmtpd's hook name
        session.host_name = hostname  # (aiosmtpd leaves this to a handler that has the hook)
        self.journal.add("connect")
        return responses

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802
        reply = await super().handle_DATA(server, session, envelope)
        _, message = self.messages[-1]
        self.journal.add(f"accepted {outbox_id_of(message)}")
        return reply

    async def handle_QUIT(self, server, session, envelope) -> str:  # noqa: N802
        self.journal.add("quit")
        return "221 Bye"


def outbox_id_of(message) -> int:
    """The outbox id in ``<makewatch.<hash>.<outbox_id>@makewatch>``."""
    return int(str(message["Message-ID"]).split(".")[-1].split("@")[0])


class JournalingStore:
    """The store, noting each committed "sent" in the journal; the ``dies_at``-th "sent"
    commit never happens: the process dies right after the channel accepted that message."""

    def __init__(self, store: Store, journal: Journal, dies_at: int | None = None) -> None:
        self._store, self._journal, self._dies_at, self._marks = store, journal, dies_at, 0

    async def write(self, fn: Callable[[Any], Any]) -> Any:
        if "_mark_sent" not in fn.__qualname__:
            return await self._store.write(fn)
        self._marks += 1
        if self._marks == self._dies_at:
            raise ProcessDied
        result = await self._store.write(fn)
        row_id = next(c.cell_contents for c in fn.__closure__ if isinstance(c.cell_contents, dict) and "id" in c.cell_contents)["id"]
        self._journal.add(f"sent {row_id}")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def three_alerts_on_mail(make_stack, journal: Journal) -> Stack:
    s = await make_stack(["mail"], sink=JournalingSink(journal))
    for name in ("DataError", "ConnectionError", "RateLimitError"):
        s.error(1, error_name=name)  # three alerts, one e-mail each
    await process_events(s.store, s.alerter.policy, s.now)
    return s


async def test_each_message_is_recorded_as_sent_before_the_connection_closes(make_stack):
    journal = Journal()
    s = await three_alerts_on_mail(make_stack, journal)
    ids = [r["id"] for r in s.outbox()]

    await deliver_due(JournalingStore(s.store, journal), s.alerter.notifiers, s.now, rng=random.Random(7))

    # One connection for the pass; each row committed between its acceptance and the next
    # message, all of them before the QUIT: a crash in the close-down repeats nothing.
    assert journal.events == [
        "connect",
        f"accepted {ids[0]}", f"sent {ids[0]}",
        f"accepted {ids[1]}", f"sent {ids[1]}",
        f"accepted {ids[2]}", f"sent {ids[2]}",
        "quit",
    ]  # fmt: skip


async def test_a_crash_between_a_send_and_its_commit_repeats_that_one_message_and_no_other(make_stack):
    journal = Journal()
    s = await three_alerts_on_mail(make_stack, journal)
    ids = [r["id"] for r in s.outbox()]
    dying = JournalingStore(s.store, journal, dies_at=2)
    with pytest.raises(ProcessDied):
        await deliver_due(dying, s.alerter.notifiers, s.now, rng=random.Random(7))
    # Each row's status commits right after its own acceptance: the first is recorded as sent,
    # the second was accepted but not recorded, the third was never tried; no goodbye.
    assert [r["status"] for r in s.outbox()] == ["sent", "pending", "pending"]
    assert journal.events == ["connect", f"accepted {ids[0]}", f"sent {ids[0]}", f"accepted {ids[1]}"]
    first, second = (str(m["Message-ID"]) for _, m in s.sink.messages)

    restarted = await make_stack(["mail"], store=s.store)  # a new process on the same state
    restarted.now = s.now + 1
    await restarted.tick()
    assert [r["status"] for r in restarted.outbox()] == ["sent", "sent", "sent"]
    ids = [str(m["Message-ID"]) for _, m in s.sink.messages + restarted.sink.messages]
    # Only the message inside the window is repeated, under the same Message-ID, so a mail
    # system (or a reader) recognises the copy; the message sent before it is not repeated.
    assert ids[:2] == [first, second] and ids[2] == second
    assert len(ids) == 4 and len(set(ids)) == 3


# --- throughput: one connection per pass, channels side by side, bounded passes -------------


async def test_a_failed_message_closes_the_connection_and_the_next_opens_a_new_one(make_stack):
    journal = Journal()
    sink = JournalingSink(journal)
    s = await make_stack(["mail"], sink=sink)
    for i in range(4):
        s.error(10 + i)
    await process_events(s.store, s.alerter.policy, s.now)
    ids = [r["id"] for r in s.outbox()]
    refused = ids[1]

    async def refuse_once(server, session, envelope) -> str:
        if refused is not None and f".{refused}@" in envelope.content.decode():
            return "451 4.3.0 Try again later"
        return await JournalingSink.handle_DATA(sink, server, session, envelope)

    sink.handle_DATA = refuse_once  # type: ignore[method-assign]
    report = await deliver_due(s.store, s.alerter.notifiers, s.now, rng=random.Random(7))

    assert (report.sent, report.retried) == (3, 1)
    assert journal.events == [
        "connect", f"accepted {ids[0]}",
        "connect", f"accepted {ids[2]}", f"accepted {ids[3]}", "quit",
    ]  # fmt: skip
    assert [r["status"] for r in s.outbox()] == ["sent", "pending", "sent", "sent"]


async def test_a_slow_channel_does_not_hold_the_other_channels_rows(make_stack):
    s = await make_stack(["hook", "mail"])
    for i in range(3):
        s.error(20 + i)
    await process_events(s.store, s.alerter.policy, s.now)
    s.slack.delay_s = 0.1  # every webhook post takes a tenth of a second
    mail_done: list[int] = []
    s.sink.listeners.append(lambda _rcpt, _msg: mail_done.append(len(s.posts())))

    report = await deliver_due(s.store, s.alerter.notifiers, s.now, rng=random.Random(7))

    assert report.sent == 6
    assert mail_done == [0, 0, 0]  # every e-mail went while Slack was answering the first post


async def test_a_spent_budget_leaves_the_rest_for_the_next_pass_after_a_new_decision(make_stack):
    s = await make_stack(["hook", "mail"])
    await s.tick()
    for i in range(3):
        s.error(30 + i)

    first = await s.alerter.tick(s.now, budget_s=0)  # one row per channel, then the budget is spent
    assert (first.delivered.sent, first.delivered.deferred) == (2, 4)
    assert "4 due for the next pass" in first.summary()
    s.error(40, "came during the backlog")
    second = await s.alerter.tick(s.now, budget_s=0)
    assert second.processed.events == 1  # decided before the backlog was through
    assert (second.delivered.sent, second.delivered.deferred) == (2, 4)  # the new alert's rows queued
    while (await s.alerter.tick(s.now, budget_s=0)).delivered.deferred:
        pass
    rows = s.outbox()
    assert len(rows) == 8 and all(r["status"] == "sent" for r in rows)
    assert [outbox_id_of(m) for _, m in s.sink.messages] == sorted(r["id"] for r in rows if r["channel"] == "mail")


async def test_a_tick_without_a_budget_delivers_every_due_row(make_stack):
    s = await make_stack(["mail"])
    for i in range(5):
        s.error(50 + i)
    report = await s.tick()
    assert (report.delivered.sent, report.delivered.deferred) == (5, 0)  # `makewatch once`
