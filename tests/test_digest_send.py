"""Digests on schedule: one per recipient per local day, across restarts, outages and DST."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from alerts.digest_send import send_due_digests
from alerts.service import Alerter
from watcher.config import load_config
from watcher.store import Store, insert_events, upsert_organization
from watcher.testing.mail_sink import MailSink, start_mail_sink

PARIS, NEW_YORK = ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")


def write_config(tmp_path, smtp_port: int, extra: str = ""):
    cfg = tmp_path / "makewatch.toml"
    cfg.write_text(
        f"""
[[organizations]]
name = "Acme"
zone = "eu1.make.com"
organization_id = 1
token_env = "TOK"

[state]
db_path = "{tmp_path / "state.db"}"

[channels.mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from_addr = "makewatch@agency.example"
to = ["ops@agency.example"]
timeout_s = 5

[[digests]]
recipients = ["paris@agency.example"]
at = "08:00"
timezone = "Europe/Paris"

[[digests]]
recipients = ["ny@agency.example"]
at = "08:00"
timezone = "America/New_York"
{extra}
"""
    )
    return load_config(cfg, env={"TOK": "t"})


class Service:
    """The digest side of the worker, restartable: a new Store and Alerter each start."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.store: Store | None = None

    async def start(self) -> None:
        self.store = Store.open(self.settings.state.db_path)
        self.session = aiohttp.ClientSession()
        self.alerter = Alerter(self.settings, self.store, self.session)

    async def stop(self) -> None:
        await self.alerter.aclose()
        await self.session.close()
        self.store.close()

    async def tick(self, now: float):
        return await send_due_digests(
            self.settings, self.store, self.alerter.notifiers, self.alerter.renderer, now, {}
        )

    def rows(self, recipient: str):
        return self.store.read_sync(
            lambda db: [dict(r) for r in db["digests"].rows_where("recipient = ?", [recipient], order_by="period_start")]
        )


def error_event(t: float) -> dict:
    return {
        "key": f"execution_error:1:7:{int(t)}",
        "kind": "execution_error",
        "severity": "error",
        "org_id": 1,
        "team_id": 2,
        "scenario_id": 7,
        "occurred_at": t,
        "detected_at": t,
        "payload": {"organization": "Acme", "scenario_name": "Nightly sync", "error_name": "DataError", "error_message": "bad row"},
    }


def ts(y, m, d, h=0, mi=0, tz=UTC) -> float:
    return datetime(y, m, d, h, mi, tzinfo=tz).timestamp()


@pytest.fixture
def sink():
    s = MailSink()
    controller = start_mail_sink(s)
    s.port = controller.port
    yield s
    controller.stop()


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (ts(2026, 3, 5), ts(2026, 3, 12)),  # New York springs forward on 8 March
        (ts(2026, 3, 26), ts(2026, 4, 2)),  # Paris springs forward on 29 March
        (ts(2026, 10, 22), ts(2026, 11, 4)),  # both fall back (25 October, 1 November)
    ],
)
async def test_each_recipient_gets_exactly_one_digest_per_local_day_across_restarts(tmp_path, sink, start, end):
    settings = write_config(tmp_path, sink.port)
    svc = Service(settings)
    await svc.start()
    svc.store.write_sync(
        lambda db: upsert_organization(db, {"id": 1, "name": "Acme", "base_url": "https://eu1.make.com/api/v2", "updated_at": start})
    )
    now, step, restarts = start, 900.0, 0
    errors_at: list[float] = []
    while now <= end:
        if int(now) % 86400 == 10 * 3600:  # one failure a day, at 10:00 UTC
            errors_at.append(now)
            svc.store.write_sync(lambda db, t=now: insert_events(db, [error_event(t)]))
        await svc.tick(now)
        if int(now) % (86400 * 2) < step:  # restart every other day, around midnight UTC
            await svc.stop()
            await svc.start()
            await svc.tick(now)  # a restart right away sends nothing twice
            restarts += 1
        now += step
    assert restarts >= 3
    for recipient, tz in (("paris@agency.example", PARIS), ("ny@agency.example", NEW_YORK)):
        rows = svc.rows(recipient)
        sent_local = [datetime.fromtimestamp(r["period_end"], tz) for r in rows]
        assert all((d.hour, d.minute) == (8, 0) for d in sent_local), sent_local
        days = [d.date() for d in sent_local]
        assert len(days) == len(set(days))  # one per local day
        assert all((b - a).days == 1 for a, b in zip(days, days[1:], strict=False))  # none missed
        assert all(r["sent_at"] is not None for r in rows)
        assert all(a["period_end"] == b["period_start"] for a, b in zip(rows, rows[1:], strict=False))
        mails = [m for rcpt, m in sink.messages if rcpt == [recipient]]
        assert len(mails) == len(rows)
        # Correct figures: each digest counts exactly the failures of its own period.
        for row, mail in zip(rows, mails, strict=True):
            n = sum(1 for t in errors_at if row["period_start"] <= t < row["period_end"])
            subject = str(mail["Subject"])
            assert (f"{n} error" in subject) if n else ("error" not in subject.replace("no errors", "")), subject
    await svc.stop()


async def test_days_missed_while_down_collapse_into_one_digest(tmp_path, sink):
    settings = write_config(tmp_path, sink.port)
    svc = Service(settings)
    await svc.start()
    await svc.tick(ts(2026, 6, 1, 5, 0))  # 07:00 Paris: started, nothing due yet
    await svc.tick(ts(2026, 6, 1, 6, 30))  # 08:30 Paris: the first digest
    await svc.tick(ts(2026, 6, 4, 9, 0))  # down for three days
    rows = svc.rows("paris@agency.example")
    assert len(rows) == 2
    assert rows[1]["period_start"] == rows[0]["period_end"]
    assert rows[1]["period_end"] == ts(2026, 6, 4, 8, 0, PARIS)
    await svc.stop()


async def test_an_smtp_outage_delays_the_digest_and_it_goes_once(tmp_path):
    sink = MailSink()
    controller = start_mail_sink(sink)
    port = controller.port
    settings = write_config(tmp_path, port)
    svc = Service(settings)
    await svc.start()
    await svc.tick(ts(2026, 6, 1, 5, 0))
    await svc.tick(ts(2026, 6, 1, 6, 30))
    controller.stop()
    runs = await svc.tick(ts(2026, 6, 2, 6, 5))
    assert runs and not any(r.sent for r in runs)
    assert len(svc.rows("paris@agency.example")) == 1  # the failed claim was released
    assert len(sink.messages) == 1  # Paris's first digest only (New York's 08:00 is 12:00 UTC)
    controller = start_mail_sink(sink, port)
    await svc.tick(ts(2026, 6, 2, 7, 0))
    await svc.tick(ts(2026, 6, 2, 7, 15))
    assert len(svc.rows("paris@agency.example")) == 2
    assert len([1 for rcpt, _ in sink.messages if rcpt == ["paris@agency.example"]]) == 2
    controller.stop()
    await svc.stop()


async def test_the_first_digest_waits_for_the_first_scheduled_time_after_start(tmp_path, sink):
    settings = write_config(tmp_path, sink.port)
    svc = Service(settings)
    await svc.start()
    assert await svc.tick(ts(2026, 6, 1, 6, 30)) == []  # started at 08:30 Paris: not yesterday's
    runs = await svc.tick(ts(2026, 6, 1, 12, 1))  # 08:01 in New York
    assert [r.recipient for r in runs if r.sent] == ["ny@agency.example"]
    runs = await svc.tick(ts(2026, 6, 2, 6, 1))  # 08:01 in Paris the next day
    assert [r.recipient for r in runs if r.sent] == ["paris@agency.example"]
    # Each first digest covers from when makewatch started watching.
    assert runs[0].period_start == ts(2026, 6, 1, 6, 30)
    await svc.stop()
