"""Maintenance windows (recurring silences): evaluation with time zones and both clock
changes, configuration errors, engine semantics, the CLI, and end to end over real sockets."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from conftest import START
from freezegun import freeze_time
from test_alerts_e2e import Stack, agency, config
from test_cli import write_config
from test_config import ENV, load_error, org, write
from test_engine import Caller, errors, event

from alerts.silences import Window, parse_weekdays
from watcher.cli import main
from watcher.clock import ManualClock
from watcher.config import load_config
from watcher.simulator import World  # noqa: F401 - the e2e stack's world
from watcher.store import Store
from watcher.testing import SlackState, create_slack_app
from watcher.testing.mail_sink import MailSink, start_mail_sink

BERLIN = "Europe/Berlin"


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def window(days: str = "sun", start: str = "02:00", end: str = "04:00", tz: str = BERLIN, **kw: Any) -> Window:
    h1, m1 = map(int, start.split(":"))
    h2, m2 = map(int, end.split(":"))
    return Window(
        id="config:0",
        name=kw.pop("name", "Kontor nightly maintenance"),
        weekdays=parse_weekdays(days),
        start=time(h1, m1),
        end=time(h2, m2),
        timezone=tz,
        matchers=kw.pop("matchers", {"org": "Kontor*"}),
        **kw,
    )


# --- evaluation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # 2026-09-20 is a Sunday; Berlin is UTC+2 in September.
        (utc(2026, 9, 19, 23, 0), (utc(2026, 9, 20, 0, 0), utc(2026, 9, 20, 2, 0))),  # next
        (utc(2026, 9, 20, 0, 0), (utc(2026, 9, 20, 0, 0), utc(2026, 9, 20, 2, 0))),  # in force
        (utc(2026, 9, 20, 1, 59), (utc(2026, 9, 20, 0, 0), utc(2026, 9, 20, 2, 0))),
        (utc(2026, 9, 20, 2, 0), (utc(2026, 9, 27, 0, 0), utc(2026, 9, 27, 2, 0))),  # over: next week
        (utc(2026, 9, 23, 12, 0), (utc(2026, 9, 27, 0, 0), utc(2026, 9, 27, 2, 0))),
    ],
)
def test_a_weekly_window_is_in_force_on_its_weekday_in_its_time_zone(now: float, expected: tuple[float, float]) -> None:
    assert window().next_occurrence(now) == expected
    found = window().silence_at(now)
    assert found is not None and found.window and found.name == "Kontor nightly maintenance"


def test_a_window_past_midnight_belongs_to_the_weekday_it_starts_on() -> None:
    w = window("sun", "22:00", "02:00", tz="UTC")
    # Sunday 22:00 to Monday 02:00; Monday 01:00 is inside, Sunday 01:00 is not.
    assert w.next_occurrence(utc(2026, 9, 21, 1, 0)) == (utc(2026, 9, 20, 22, 0), utc(2026, 9, 21, 2, 0))
    assert w.next_occurrence(utc(2026, 9, 20, 1, 0)) == (utc(2026, 9, 20, 22, 0), utc(2026, 9, 21, 2, 0))
    assert not w.silence_at(utc(2026, 9, 20, 1, 0)).is_active(utc(2026, 9, 20, 1, 0))


def test_every_day_is_the_default_and_weekdays_are_checked() -> None:
    assert parse_weekdays("mon,Tuesday,sun") == (0, 1, 6)
    with pytest.raises(ValueError, match="not a weekday"):
        parse_weekdays(["sunday2"])
    daily = window("mon,tue,wed,thu,fri,sat,sun", "12:00", "13:00", tz="UTC")
    assert daily.next_occurrence(utc(2026, 9, 23, 12, 30)) == (utc(2026, 9, 23, 12, 0), utc(2026, 9, 23, 13, 0))
    assert daily.describe() == "every day 12:00-13:00 UTC"


def test_the_same_window_is_a_different_instant_in_another_time_zone() -> None:
    tokyo = window("sun", "02:00", "04:00", tz="Asia/Tokyo")  # UTC+9: Saturday 17:00 UTC
    assert tokyo.next_occurrence(utc(2026, 9, 19, 12, 0)) == (utc(2026, 9, 19, 17, 0), utc(2026, 9, 19, 19, 0))


def test_spring_forward_a_window_in_the_skipped_hour_runs_its_length_from_the_jump() -> None:
    # 2026-03-29, Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:00-03:00 never happens.
    day = date(2026, 3, 29)
    assert window("sun", "02:00", "03:00").occurrence_on(day) == (utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0))
    local = [datetime.fromtimestamp(t, ZoneInfo(BERLIN)).strftime("%H:%M") for t in window("sun", "02:00", "03:00").occurrence_on(day)]
    assert local == ["03:00", "04:00"]
    # An end in the gap ends at the jump; a window around the gap loses the skipped hour.
    assert window("sun", "01:30", "02:30").occurrence_on(day) == (utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0))
    assert window("sun", "01:00", "04:00").occurrence_on(day) == (utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0))


def test_fall_back_a_window_in_the_repeated_hour_covers_it_both_times() -> None:
    # 2026-11-01, New York: 01:00-02:00 happens twice (EDT, then EST): the window lasts 2 h.
    ny = window("sun", "01:00", "02:00", tz="America/New_York")
    assert ny.occurrence_on(date(2026, 11, 1)) == (utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 7, 0))
    # 2026-10-25, Berlin: 02:00-03:00 happens twice.
    assert window("sun", "02:00", "03:00").occurrence_on(date(2026, 10, 25)) == (utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 0))
    # A normal day of the same window is one hour.
    assert ny.occurrence_on(date(2026, 11, 8)) == (utc(2026, 11, 8, 6, 0), utc(2026, 11, 8, 7, 0))


def test_a_stored_window_is_bounded_by_when_it_was_added_and_expired() -> None:
    w = window(tz="UTC", not_before=utc(2026, 9, 20, 3, 0), not_after=utc(2026, 9, 27, 3, 0))
    assert w.next_occurrence(utc(2026, 9, 20, 2, 30)) == (utc(2026, 9, 20, 3, 0), utc(2026, 9, 20, 4, 0))
    assert w.next_occurrence(utc(2026, 9, 20, 5, 0)) == (utc(2026, 9, 27, 2, 0), utc(2026, 9, 27, 3, 0))
    assert w.next_occurrence(utc(2026, 9, 27, 3, 0)) is None


# --- configuration --------------------------------------------------------------------------


def silences_file(tmp_path: Path, **overrides: Any) -> Path:
    table = {
        "name": "Kontor nightly maintenance",
        "weekdays": ["sun"],
        "start": "02:00",
        "end": "04:00",
        "timezone": BERLIN,
        "org": "Kontor*",
        "reason": "database upgrade",
    }
    table.update(overrides)
    table = {k: v for k, v in table.items() if v is not None}
    return write(tmp_path, {"organizations": [org(name="Kontor GmbH")], "silences": [table]})


def test_a_silences_table_loads_into_a_window(tmp_path: Path) -> None:
    settings = load_config(silences_file(tmp_path, kind="execution_error", notify_resolved=True), env=ENV)
    (w,) = [s.window(i) for i, s in enumerate(settings.silences)]
    assert (w.weekdays, w.start, w.end, w.timezone) == ((6,), time(2), time(4), BERLIN)
    assert w.matchers == {"org": "Kontor*", "kind": ["execution_error"]} and w.notify_resolved


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        ({"weekdays": ["sunday2"]}, "silences[0].weekdays", "not a weekday"),
        ({"start": "25:00"}, "silences[0].start", "not a time of day"),
        ({"end": "4pm"}, "silences[0].end", "not a time of day"),
        ({"timezone": "Europe/Atlantis"}, "silences[0].timezone", "unknown time zone"),
        ({"end": "02:00"}, "silences[0].end", "must differ from start"),
        ({"org": "Nobody*"}, "silences[0].org", "matches no configured organization"),
        ({"org": None}, "silences[0]", "would silence everything"),
        ({"kind": "nonsense"}, "silences[0].kind", "unknown kind"),
        ({"name": None}, "silences[0].name", "required"),
    ],
)
def test_a_malformed_window_names_its_key(tmp_path: Path, overrides: dict[str, Any], key: str, problem: str) -> None:
    err = load_error(silences_file(tmp_path, **overrides))
    assert err.key is not None and err.key.startswith(key), str(err)
    assert problem in str(err)


def test_a_malformed_window_makes_the_cli_exit_2(tmp_path: Path) -> None:
    cfg = silences_file(tmp_path, start="25:00")
    result = CliRunner().invoke(main, ["silence", "list", "--config", str(cfg)], env=ENV)
    assert result.exit_code == 2 and "silences[0].start" in result.output


# --- engine semantics -----------------------------------------------------------------------

ACME_WINDOW = dict(matchers={"org": "Acme"}, name="Acme <b>night</b> & *stars*")


def acme_window(now: float, **kw: Any) -> Any:
    """A daily UTC window around ``now``: from 10 s before to 600 s after."""
    start = datetime.fromtimestamp(now - 10, UTC)
    end = datetime.fromtimestamp(now + 600, UTC)
    w = window("mon,tue,wed,thu,fri,sat,sun", f"{start:%H:%M}", f"{end:%H:%M}", tz="UTC", **{**ACME_WINDOW, **kw})
    return w


def test_an_error_inside_a_window_is_silenced_and_told_once_when_it_ends() -> None:
    now = utc(2026, 9, 21, 10, 0, 30)
    w = acme_window(now)
    s = w.silence_at(now)
    caller = Caller(silences=[s])
    assert caller.feed(errors(2, start=now), now=now + 40).notifications == []
    alert = caller.only()
    assert alert.reason == "silenced" and alert.due_at == s.ends_at  # the end is a timer
    assert alert.silenced_by["name"] == w.name
    caller.silences = [w.silence_at(s.ends_at)]  # next day's occurrence, not in force
    told = caller.tick(s.ends_at).notifications
    assert [(n.phase, n.reason, n.count) for n in told] == [("firing", "silence ended", 2)]
    assert told[0].payload["silence_ended"]["window"] is True
    assert caller.tick(s.ends_at + 60).notifications == []
    assert caller.only().due_at is None or caller.only().due_at >= caller.silences[0].starts_at


def test_a_told_alert_with_nothing_new_in_the_window_gets_no_notice_when_it_ends() -> None:
    now = utc(2026, 9, 21, 10, 0, 30)
    caller = Caller()
    caller.feed(errors(1, start=now - 600), now=now - 600)
    assert len(caller.tick(now - 500).notifications) == 1
    s = acme_window(now).silence_at(now)
    caller.silences = [s]
    assert caller.tick(now).notifications == []
    assert caller.tick(s.ends_at).notifications == []


@pytest.mark.parametrize(("notify_resolved", "expected"), [(False, []), (True, [("firing", "first")])])
def test_an_error_that_resolved_inside_the_window_is_told_only_with_notify_resolved(
    notify_resolved: bool, expected: list[tuple[str, str]]
) -> None:
    now = utc(2026, 9, 21, 10, 0, 30)
    s = acme_window(now, notify_resolved=notify_resolved).silence_at(now)
    caller = Caller(silences=[s])
    caller.feed(errors(2, start=now), now=now + 40)
    caller.feed([event("ok", "execution_recovered", t=now + 50)], now=now + 50)
    sent = [(n.phase, n.reason) for n in caller.sent]
    sent += [(n.phase, n.reason) for n in caller.tick(s.ends_at + 1).notifications]
    assert sent == expected
    assert caller.only().state == "resolved"
    if notify_resolved:
        assert caller.sent[0].payload["recovered_at"] == now + 50


def test_a_told_alert_that_resolves_in_a_notify_resolved_window_is_told_resolved() -> None:
    now = utc(2026, 9, 21, 10, 0, 30)
    for notify_resolved, phases in ((False, []), (True, ["resolved"])):
        caller = Caller()
        caller.feed(errors(1, start=now - 600), now=now - 600)
        caller.tick(now - 500)
        caller.sent.clear()
        caller.silences = [acme_window(now, notify_resolved=notify_resolved).silence_at(now)]
        caller.feed([event("ok", "execution_recovered", t=now + 5)], now=now + 5)
        assert [n.phase for n in caller.sent] == phases


def test_a_one_off_silence_that_expires_with_the_alert_still_failing_is_told_once() -> None:
    from alerts.silences import Silence

    now = utc(2026, 9, 21, 10, 0, 30)
    caller = Caller(silences=[Silence(id=7, matchers={"scenario_id": 10}, starts_at=now - 1, ends_at=now + 300, reason="deploy")])
    caller.feed(errors(3, start=now), now=now + 40)
    assert caller.sent == []
    told = caller.tick(now + 300).notifications
    assert [(n.reason, n.payload["silence_ended"]["id"]) for n in told] == [("silence ended", "7")]


def test_the_notice_names_the_window_escaped_for_slack_and_html() -> None:
    from alerts.notify.base import Notification  # noqa: F401 - the renderer's input type
    from alerts.render import Renderer, sample_notification

    n = sample_notification("execution_error", "slack")
    n.alert["payload"]["silence_ended"] = {"id": "config:0", "name": "Night <!channel> & co", "window": True, "reason": ""}
    r = Renderer()
    message = r.render_slack(n)
    assert message["blocks"][0]["type"] == "header"  # plain_text: Slack shows it verbatim
    slack = str({**message, "blocks": message["blocks"][1:]})
    assert "Still failing after the maintenance window" in slack
    assert "<!channel>" not in slack and "&lt;!channel&gt;" in slack
    subject, text, html = r.render_email(n)
    assert "Still failing after the maintenance window 'Night <!channel> & co' ended" in text
    assert "&lt;!channel&gt; &amp; co" in html and "<!channel>" not in html


# --- CLI ------------------------------------------------------------------------------------


def test_silence_add_every_list_expire(tmp_path: Path) -> None:
    extra = f'\n[state]\ndb_path = "{tmp_path / "s.db"}"\n\n[[silences]]\nname = "Acme weekly"\nweekdays = ["sat"]\nstart = "23:00"\nend = "01:00"\ntimezone = "{BERLIN}"\norg = "Acme"\n'
    cfg = write_config(tmp_path, "https://eu1.make.com/api/v2", 1, extra)
    env = {"MAKE_TOKEN_ACME": "t"}
    run = CliRunner().invoke
    base = ["silence", "add", "--config", str(cfg), "--org", "Ac*", "--reason", "db upgrade"]
    with freeze_time("2026-09-21 10:00:00"):  # a Monday
        for args, option in (
            (["--every", "sunday2", "--from", "02:00", "--to", "04:00"], "--every"),
            (["--every", "sun", "--from", "25:00", "--to", "04:00"], "--from"),
            (["--every", "sun", "--from", "02:00", "--to", "02:00"], "--to"),
            (["--every", "sun", "--from", "02:00", "--to", "04:00", "--tz", "Mars/Base"], "--tz"),
            (["--every", "sun", "--from", "02:00"], "--to"),
        ):
            bad = run(main, [*base, *args], env=env)
            assert bad.exit_code == 2 and option in bad.output, bad.output
        added = run(main, [*base, "--every", "sun", "--from", "02:00", "--to", "04:00", "--tz", BERLIN, "--name", "Kontor nightly"], env=env)
        assert added.exit_code == 0, added.output
        assert "next: 2026-09-27 02:00-04:00 Europe/Berlin (2026-09-27 00:00-02:00 UTC)" in added.output
        wid = added.output.split()[1].rstrip(":")
        listed = run(main, ["silence", "list", "--config", str(cfg)], env=env).output
        assert f"{wid}: window 'Kontor nightly' sun 02:00-04:00 Europe/Berlin; org=Ac*; next 2026-09-27 02:00-04:00" in listed
        assert "from config: window 'Acme weekly' sat 23:00-01:00 Europe/Berlin; org=Acme; next 2026-09-26 23:00-2026-09-27 01:00 Europe/Berlin (2026-09-26 21:00-23:00 UTC)" in listed
    with freeze_time("2026-09-27 00:30:00"):
        assert f"{wid}: window 'Kontor nightly' sun 02:00-04:00 Europe/Berlin; org=Ac*; now" in run(main, ["silence", "list", "--config", str(cfg)], env=env).output
        assert run(main, ["silence", "expire", "--config", str(cfg), wid], env=env).exit_code == 0
        listed = run(main, ["silence", "list", "--config", str(cfg)], env=env).output
        assert f"{wid}: window" not in listed and "from config" in listed


def test_a_stored_window_silences_in_the_pipeline_and_wakes_its_alerts_at_its_end(tmp_path: Path) -> None:
    """The stored window reaches the engine through the store; its start and end are timers."""
    from alerts.pipeline import process_batch
    from alerts.policy import AlertsSettings, Policy
    from watcher.silences import add_window

    policy = Policy(alerts=AlertsSettings(default_channels=("ops",), group_wait_s=0))
    now = utc(2026, 9, 21, 10, 0)
    with Store.open(tmp_path / "s.db") as store:
        add_window(store, now=now, weekdays="mon", start="10:05", end="10:30", timezone="UTC", reason="db", scenario_id=10)
        ev = event("e1", t=now + 600)
        ev.update(detected_at=now + 600)

        def insert(db: Any) -> None:
            db["events"].insert({**ev, "payload_json": __import__("json").dumps(ev["payload"])}, alter=True)

        store.write_sync(lambda db: db["events"].insert(
            {k: v for k, v in ev.items() if k != "payload"} | {"payload_json": __import__("json").dumps(ev["payload"])}
        ))
        n, written, reasons, _ = store.write_sync(lambda db: process_batch(db, policy, now + 600))
        assert (n, written, list(reasons.values())) == (1, 0, ["silenced"])
        due = store.read_sync(lambda db: next(db["alerts"].rows)["due_at"])
        assert due == utc(2026, 9, 21, 10, 30)
        _, written, _, _ = store.write_sync(lambda db: process_batch(db, policy, due))
        assert written == 1
        payload = store.read_sync(lambda db: next(db["outbox"].rows)["payload_json"])
        assert "silence ended" in payload


# --- end to end -----------------------------------------------------------------------------


@pytest.fixture
async def window_stack(start_sim, aiohttp_server, tmp_path):
    made: list[Stack] = []

    async def make(notify_resolved: bool = False) -> Stack:
        clock = ManualClock(START)  # 2026-09-21 14:13:20 UTC, a Monday: 16:13 in Berlin
        world, ids = agency(clock)
        sim = await start_sim(world)
        slack = SlackState(channels={"oncall": "C0ONCALL", "client-a": "C0A"}, webhooks={"T0/B0/clientb": "C0B"})
        slack_server = await aiohttp_server(create_slack_app(slack))
        slack_url = str(slack_server.make_url("")).rstrip("/")
        sink = MailSink()
        smtp = start_mail_sink(sink)
        windows = f"""group_wait_s = 0

[[silences]]
name = "Client B <maintenance> & *co*"
weekdays = ["mon"]
start = "16:20"
end = "17:00"
timezone = "{BERLIN}"
org = "Client B"
kind = "execution_error"
reason = "ERP upgrade"
notify_resolved = {"true" if notify_resolved else "false"}
"""
        cfg = config(tmp_path, sim.base_url, slack_url, smtp.port, ids, windows)
        env = {"TOK_A": ids["token_a"], "TOK_B": ids["token_b"], "BOT": "xoxb-standin-token", "HOOK_B": f"{slack_url}/webhook/T0/B0/clientb"}
        settings = load_config(cfg, env=env)
        store = Store.open(settings.state.db_path)
        stack = Stack(world, ids, sim, slack, slack_url, sink, smtp, settings, store)
        made.append(stack)
        return stack

    yield make
    for s in made:
        await s.watcher.aclose()
        s.store.close()
        s.smtp.stop()


def b_notices(st: Stack) -> tuple[list[str], list[str]]:
    # Minus the plain_text header, which Slack shows verbatim (no mrkdwn, nothing to escape).
    slack = [m.all_text().replace(m.blocks[0]["text"]["text"], "") for m in st.messages("C0B")]
    mail = [str(msg) for _, msg in st.sink.messages]
    return slack, mail


async def test_e2e_an_error_in_the_window_is_held_then_told_once_per_channel_when_it_ends(window_stack):
    st = await window_stack()
    await st.once()
    st.clock.set(utc(2026, 9, 21, 14, 25))  # 16:25 Berlin: inside the window
    st.world.inject_run(st.ids["b1"].id, status=3, error_name="DataError", error_message="ERP down")
    st.world.inject_run(st.ids["a1"].id, status=3, error_message="A broke")  # not matched
    st.clock.advance(60)
    await st.once()
    assert b_notices(st) == ([], [])
    assert len(st.messages("C0A")) == 1  # Client A is not in maintenance
    st.clock.set(utc(2026, 9, 21, 14, 59, 30))
    await st.once()
    assert b_notices(st) == ([], [])
    st.clock.set(utc(2026, 9, 21, 15, 0, 30))  # the window is over, B orders still failing
    await st.once()
    slack, mail = b_notices(st)
    assert len(slack) == 1 and len(mail) == 1
    assert "Still failing after the maintenance window" in slack[0] and "B orders" in slack[0]
    assert "&lt;maintenance&gt; &amp;" in slack[0] and "<maintenance>" not in slack[0]
    assert "Still failing after the maintenance window" in mail[0]
    assert "Held back by a silence until now" in slack[0]
    for _ in range(3):
        st.clock.advance(120)
        await st.once()
    assert tuple(map(len, b_notices(st))) == (1, 1)


@pytest.mark.parametrize(("notify_resolved", "count"), [(False, 0), (True, 1)])
async def test_e2e_an_error_that_resolved_in_the_window_is_told_only_with_notify_resolved(window_stack, notify_resolved, count):
    st = await window_stack(notify_resolved)
    await st.once()
    st.clock.set(utc(2026, 9, 21, 14, 25))
    st.world.inject_run(st.ids["b1"].id, status=3, error_name="DataError", error_message="ERP down")
    st.clock.advance(60)
    await st.once()
    st.world.inject_run(st.ids["b1"].id, status=1)
    st.clock.advance(60)
    await st.once()
    for at in (utc(2026, 9, 21, 15, 0, 30), utc(2026, 9, 21, 15, 5)):
        st.clock.set(at)
        await st.once()
    slack, mail = b_notices(st)
    assert (len(slack), len(mail)) == (count, count)
    if count:
        assert "ran fine again" in st.messages("C0B")[0].all_text() and "ran fine again" in mail[0]
