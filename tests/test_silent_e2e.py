"""Silent failures end to end (issue 15's "Done when"), one test per kind.

Each runs the real Watcher (OrgPoller, alert pipeline, delivery) against the simulator on a
real socket, with a bot channel on the Slack stand-in (reached by slack-sdk) and an e-mail
channel on a real aiosmtpd server, on one ManualClock: weeks of simulated time pass in
seconds. The failure is injected and ended with the simulator's knob over HTTP
(``POST /_sim/scenarios/ID/behaviour``); the tests assert what the servers received: one
firing notice per channel that says in words what is wrong, nothing more within the repeat
interval, one resolved notice per channel, and the daily digest (sent by the service at its
scheduled time) listing the episode in its silent-failures section.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import START, Sim

from watcher.clock import ManualClock
from watcher.config import Settings, load_config
from watcher.make.models import Scenario
from watcher.service import Watcher
from watcher.simulator import World
from watcher.store import Store
from watcher.testing import SlackState, create_slack_app
from watcher.testing.mail_sink import MailSink, start_mail_sink, subject_of
from watcher.testing.slack_standin import SlackMessage

BOT = "xoxb-standin-token"
SLACK_CHANNEL = "C0SILENT"
PARIS = ZoneInfo("Europe/Paris")
# Short enough that the tests wait it out; the notices must not repeat within it.
REPEAT_S = 3600


def config(
    tmp_path: Path, sim: Sim, org_id: int, slack_url: str, smtp_port: int, polling: str
) -> Path:
    cfg = tmp_path / "makewatch.toml"
    cfg.write_text(
        f"""
[[organizations]]
name = "Acme"
base_url = "{sim.base_url}"
organization_id = {org_id}
token_env = "TOK"

[state]
db_path = "{tmp_path / "state.db"}"

[polling]
{polling}

[alerts]
group_wait_s = 30
repeat_interval_s = {REPEAT_S}
default_channels = ["ops-slack", "ops-mail"]

[channels.ops-slack]
type = "slack_bot"
token_env = "BOT"
channel = "#silent"
base_url = "{slack_url}/api/"

[channels.ops-mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from_addr = "makewatch@agency.example"
to = ["ops@agency.example"]
timeout_s = 5

[[digests]]
recipients = ["lead@agency.example"]
at = "08:00"
timezone = "Europe/Paris"
""",
        encoding="utf-8",
    )
    return cfg


@dataclass
class Stack:
    """The simulator, the Slack stand-in, the SMTP sink and a Watcher on one ManualClock."""

    world: World
    sim: Sim
    slack: SlackState
    sink: MailSink
    settings: Settings
    store: Store
    watcher: Watcher

    @property
    def clock(self) -> ManualClock:
        return self.world.clock  # type: ignore[return-value]

    async def run_for(self, seconds: float, step: float) -> None:
        """Cycles (poll every organization, then alert and send due digests) every ``step``."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            await self.watcher.cycle()

    async def knob(self, scenario: Scenario, **behaviour: Any) -> None:
        """The simulator's silent-failure knob, over HTTP as an operator would turn it."""
        url = self.sim.base_url.removesuffix("/api/v2") + f"/_sim/scenarios/{scenario.id}/behaviour"
        async with self.sim.session.post(url, json=behaviour) as resp:
            assert resp.status == 200, await resp.text()

    # --- what the servers received -------------------------------------------------------

    def posts(self) -> list[SlackMessage]:
        """First messages in the channel (not thread replies)."""
        return [
            m for m in self.slack.messages if m.channel == SLACK_CHANNEL and m.thread_ts is None
        ]

    def replies(self) -> list[SlackMessage]:
        return [m for m in self.slack.messages if m.thread_ts is not None]

    def updates(self) -> list[Any]:
        return self.slack.calls("chat.update")

    def mails(self) -> list[EmailMessage]:
        """Alert e-mails (digests apart)."""
        return [m for _, m in self.sink.messages if m["X-Makewatch-Kind"] != "digest"]

    def digests(self) -> list[EmailMessage]:
        return [
            m
            for rcpt, m in self.sink.messages
            if m["X-Makewatch-Kind"] == "digest" and rcpt == ["lead@agency.example"]
        ]

    def received(self) -> tuple[int, int, int, int]:
        """Everything that reached Slack or SMTP about alerts, as counts."""
        return (
            len(self.slack.calls("chat.postMessage")),
            len(self.updates()),
            len(self.mails()),
            len(self.slack.messages),
        )


@pytest.fixture
async def make_stack(start_sim, aiohttp_server, tmp_path):
    made: list[tuple[Stack, Any]] = []

    async def make(world: World, org_id: int, token: str, polling: str = "") -> Stack:
        sim = await start_sim(world)
        slack = SlackState(channels={"silent": SLACK_CHANNEL})
        slack_server = await aiohttp_server(create_slack_app(slack))
        slack_url = str(slack_server.make_url("")).rstrip("/")
        sink = MailSink()
        smtp = start_mail_sink(sink)
        cfg = config(tmp_path, sim, org_id, slack_url, smtp.port, polling)
        settings = load_config(cfg, env={"TOK": token, "BOT": BOT})
        store = Store.open(settings.state.db_path)
        stack = Stack(
            world,
            sim,
            slack,
            sink,
            settings,
            store,
            Watcher(settings, store, sim.session, world.clock),
        )
        made.append((stack, smtp))
        return stack

    yield make
    for stack, smtp in made:
        await stack.watcher.aclose()
        stack.store.close()
        smtp.stop()


def body(mail: EmailMessage, kind: str) -> str:
    part = mail.get_body((kind,))
    assert part is not None, f"no {kind} part"
    return part.get_content()


def hhmm(t: float, tz: Any = UTC) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%H:%M %Z")


class Section(HTMLParser):
    """The visible text inside the element carrying ``data-section="<name>"``, and the
    sparkline bars (their heights in px) found there."""

    VOID = frozenset({"br", "meta", "img", "hr", "link", "input"})

    def __init__(self, name: str) -> None:
        super().__init__(convert_charrefs=True)
        self.name, self.depth, self.text, self.bar_heights = name, 0, [], []
        self.sparklines = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self.depth:
            if tag == "table" and a.get("data-sparkline"):
                self.sparklines += 1
            style = a.get("style") or ""
            if tag == "div" and "height:" in style and self.sparklines:
                self.bar_heights.append(int(style.split("height:")[1].split("px")[0]))
            if tag in ("br", "td", "tr"):
                self.text.append(" ")
        if tag in self.VOID:
            return
        if self.depth:
            self.depth += 1
        elif a.get("data-section") == self.name:
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in self.VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text.append(data)

    @classmethod
    def of(cls, html: str, name: str = "silent") -> Section:
        parser = cls(name)
        parser.feed(html)
        return parser

    @property
    def visible(self) -> str:
        return " ".join("".join(self.text).split())


def silent_lines(text: str) -> list[str]:
    """The items of the text digest's "Silent failures" block."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Silent failures ("))
    out = []
    for line in lines[start + 1 :]:
        if line.startswith("- "):
            out.append(line)
        elif line and not line.startswith("  "):
            break
    return out


def assert_one_firing(
    st: Stack, title: str, headline_slack: str, headline_mail: str
) -> SlackMessage:
    (post,) = st.posts()
    assert st.replies() == [] and st.updates() == []
    assert headline_slack in post.all_text(), post.all_text()
    assert post.metadata and post.metadata["event_payload"]["phase"] == "firing"
    (mail,) = st.mails()
    assert mail["X-Makewatch-Phase"] == "firing" and mail["To"] == "ops@agency.example"
    assert title in subject_of(mail)
    assert headline_mail in body(mail, "plain"), body(mail, "plain")
    assert html.escape(headline_mail, quote=False) in body(mail, "html")
    return post


def assert_one_resolved(
    st: Stack, first: SlackMessage, resolved_slack: str, resolved_mail: str
) -> None:
    assert st.posts() == [first]  # no second first message
    (update,) = st.updates()
    assert update.body["ts"] == first.ts and update.status == 200
    assert resolved_slack in first.all_text()  # the original message now says it is over
    (reply,) = st.replies()
    assert reply.thread_ts == first.ts and resolved_slack in reply.all_text()
    assert reply.metadata and reply.metadata["event_payload"]["phase"] == "resolved"
    firing, resolved = st.mails()
    assert firing["X-Makewatch-Phase"] == "firing" and resolved["X-Makewatch-Phase"] == "resolved"
    assert resolved_mail in body(resolved, "plain"), body(resolved, "plain")
    assert html.escape(resolved_mail, quote=False) in body(resolved, "html")


def assert_the_only_alert(st: Stack, kind: str) -> None:
    """One alert in all, of ``kind``, over: no false alarm of any kind meanwhile."""
    rows = st.store.read_sync(lambda db: [(r["kind"], r["state"]) for r in db["alerts"].rows])
    assert rows == [(kind, "resolved")]
    opened = [e for e in events(st, kind) if not json.loads(e["payload_json"]).get("recovered")]
    assert len(opened) == 1 and len(events(st, kind)) == 2


def assert_digest_lists(digest: EmailMessage, expected_item: str, *, open_now: int) -> Section:
    """The digest's silent section (text and HTML) lists ``expected_item``, alone, with its
    sparkline of 14 days (the busiest day full height)."""
    text, page = body(digest, "plain"), body(digest, "html")
    assert (
        f"Silent failures ({open_now} open)" in text
        and f"Silent failures ({open_now} open)" in page
    )
    items = silent_lines(text)
    assert len(items) == 1 and expected_item in items[0], items
    section = Section.of(page)
    assert expected_item in section.visible, section.visible
    assert (
        section.sparklines == 1
        and len(section.bar_heights) == 14
        and max(section.bar_heights) == 24
    )
    return section


def events(st: Stack, kind: str) -> list[dict[str, Any]]:
    return st.store.read_sync(
        lambda db: [dict(r) for r in db["events"].rows_where("kind = ?", [kind], order_by="id")]
    )


# --- overdue ---------------------------------------------------------------------------------


def overdue_world(clock: ManualClock) -> tuple[World, dict[str, Any]]:
    world = World(seed=21, clock=clock)
    org = world.add_organization(name="Acme", plan="core")
    team = world.add_team(org.id, name="Ops")
    ids: dict[str, Any] = {"org": org, "token": world.add_token(org_ids=[org.id])}
    ids["sync"] = world.add_scenario(
        team.id, name="Invoice sync", interval_s=900, first_run_at=START + 300, max_errors=0
    )
    ids["steady"] = world.add_scenario(
        team.id, name="Steady", interval_s=600, first_run_at=START + 400, max_errors=0
    )
    return world, ids


async def test_a_stalled_scheduled_scenario_is_told_once_on_slack_and_by_email_resolved_once_and_in_the_digest(
    make_stack,
):
    world, ids = overdue_world(ManualClock(START))
    st = await make_stack(world, ids["org"].id, ids["token"])
    sync = ids["sync"]
    await st.watcher.cycle()  # baseline
    await st.knob(sync, stalled=True)  # its 14:18:20 run will not happen
    requests_before = len(world.requests)

    # Every 15 minutes, so it may be 1.5 x 15 min = 22 min 30 s late: at 22 min, nothing.
    await st.run_for(27 * 60, 60)
    assert st.received() == (0, 0, 0, 0)
    await st.run_for(60, 60)  # 23 min late: found; the notice waits group_wait_s (30 s)
    assert st.received() == (0, 0, 0, 0)
    await st.run_for(60, 60)
    headline = (
        f"Invoice sync is overdue: its {hhmm(START + 300)} run has not happened (due 23 min ago)"
    )
    first = assert_one_firing(st, "Scheduled run overdue", headline, headline)
    assert "every 15 min" in body(st.mails()[0], "plain")  # the schedule it was judged on
    # At no extra API cost: nothing of the stalled scenario was read, only the listings.
    assert not any(f"/scenarios/{sync.id}" in r.path for r in world.requests[requests_before:])

    # Still stuck: nothing more within the repeat interval.
    await st.run_for(REPEAT_S - 120, 60)
    assert st.received() == (1, 0, 1, 1)

    await st.knob(sync, stalled=False)  # it runs at once, then on its schedule
    recovered_at = st.clock.time()
    await st.run_for(180, 60)
    resolved = f"Invoice sync ran again at {hhmm(recovered_at + 60)}"  # seen by the next listing
    assert_one_resolved(st, first, resolved, resolved)
    await st.run_for(3600, 300)  # running again on its schedule: nothing more
    assert st.received() == (2, 1, 2, 2)

    # The next morning's digest (08:00 Paris) lists the episode, over.
    st.clock.set(datetime(2026, 9, 22, 8, 1, tzinfo=PARIS).timestamp())
    await st.watcher.cycle()
    (digest,) = st.digests()
    item = f"Scheduled run overdue: Invoice sync is overdue: its {hhmm(START + 300, PARIS)} run has not happened (due 23 min ago)"
    assert_digest_lists(digest, item, open_now=0)
    assert "Steady" not in Section.of(body(digest, "html")).visible
    assert_the_only_alert(st, "scenario_overdue")


# --- idle ------------------------------------------------------------------------------------


def webhook_world(clock: ManualClock) -> tuple[World, dict[str, Any]]:
    world = World(seed=8, clock=clock)
    org = world.add_organization(name="Acme", plan="core")
    team = world.add_team(org.id, name="Ops")
    ids: dict[str, Any] = {"org": org, "token": world.add_token(org_ids=[org.id])}
    ids["leads"] = world.add_scenario(
        team.id, name="Typeform leads", webhook=True, interval_s=600, rhythm=True, max_errors=0
    )
    ids["hook"] = world.add_hook(
        team.id, scenario_id=ids["leads"].id, queue_limit=1000, name="Typeform"
    )
    ids["steady"] = world.add_scenario(team.id, name="Steady", interval_s=3600, max_errors=0)
    return world, ids


async def test_a_webhook_whose_traffic_stopped_is_learnt_idle_told_once_resolved_once_and_in_the_digest(
    make_stack,
):
    """The learnt path: nine days of a weekly rhythm (busy office hours, quiet nights and a
    weekend), then the client's form breaks on a Wednesday afternoon."""
    world, ids = webhook_world(ManualClock(START))  # a Monday afternoon
    st = await make_stack(world, ids["org"].id, ids["token"])
    leads = ids["leads"]
    await st.watcher.cycle()
    await st.run_for(9 * 86400, 2 * 3600)  # nine days, a weekend included: no alarm
    assert st.received() == (0, 0, 0, 0)
    assert len(st.digests()) == 9  # the daily digests went out meanwhile, all without it

    stopped = st.clock.time()  # Wednesday 14:13 UTC; this cycle saw its last runs
    await st.knob(leads, traffic=0)
    await st.run_for(3 * 3600, 900)
    (event,) = [json.loads(e["payload_json"]) for e in events(st, "scenario_idle")]
    assert event["basis"] == "learnt" and event["last_run_at"] == stopped
    # Found 2 h into the silence (told at the next cycle, 15 min later): by then about
    # 11 of its runs are missing, past idle_factor (10).
    since = f"Typeform leads has not run since {hhmm(stopped)} (2 h; it usually runs about 11 times in that time)"
    first = assert_one_firing(st, "Webhook scenario idle", since, since)
    assert f"Last run seen: 2026-09-30 {hhmm(stopped)}" in body(st.mails()[0], "plain")

    # Still silent for two more hours, past the repeat interval: nothing more (nothing new).
    await st.run_for(REPEAT_S, 900)
    assert st.received() == (1, 0, 1, 1)

    await st.knob(leads, traffic=1)
    await st.run_for(3600, 900)
    (end,) = [json.loads(e["payload_json"]) for e in events(st, "scenario_idle")[1:]]
    resolved = f"Typeform leads runs again since {hhmm(end['resolved_at'])}"
    assert_one_resolved(st, first, resolved, resolved)
    await st.run_for(3 * 3600, 900)
    assert st.received() == (2, 1, 2, 2)

    st.clock.set(datetime(2026, 10, 1, 8, 1, tzinfo=PARIS).timestamp())  # Thursday's digest
    await st.watcher.cycle()
    digest = st.digests()[-1]
    assert_digest_lists(
        digest,
        f"Webhook scenario idle: Typeform leads has not run since {hhmm(stopped, PARIS)}",
        open_now=0,
    )
    assert all("Typeform" not in body(d, "plain") for d in st.digests()[:-1])
    assert_the_only_alert(st, "scenario_idle")


# --- volume ----------------------------------------------------------------------------------


def volume_world(clock: ManualClock) -> tuple[World, dict[str, Any]]:
    world = World(seed=9, clock=clock)
    org = world.add_organization(name="Acme", plan="core", operations_limit=10**7)
    team = world.add_team(org.id, name="Ops")
    ids: dict[str, Any] = {"org": org, "token": world.add_token(org_ids=[org.id])}
    # 96 runs a day of 5 operations: 480 a day.
    ids["sync"] = world.add_scenario(
        team.id,
        name="Invoices sync",
        interval_s=900,
        operations_per_run=5,
        first_run_at=clock.time() + 60,
        max_errors=0,
    )
    # The rest of the organization, steady: its total barely moves when Invoices sync drops.
    ids["orders"] = world.add_scenario(
        team.id,
        name="Orders",
        interval_s=1800,
        operations_per_run=60,
        first_run_at=clock.time() + 30,
        max_errors=0,
    )
    return world, ids


async def test_a_90_percent_drop_is_told_once_with_its_figures_resolved_the_next_usual_day_and_in_the_digests(
    make_stack,
):
    world, ids = volume_world(
        ManualClock(START - 22 * 86400)
    )  # three weeks and a day before a Monday afternoon
    st = await make_stack(world, ids["org"].id, ids["token"], polling="usage_interval_s = 3600")
    sync = ids["sync"]
    await st.watcher.cycle()
    await st.run_for(22 * 86400, 4 * 3600)  # (the learning needs no finer listing)
    assert st.received() == (0, 0, 0, 0)
    quiet_digests = len(st.digests())

    await st.knob(sync, volume=0.1)  # Monday 14:13 UTC: its runs use 1 operation, not 5
    # Monday (a part of it low) is no anomaly; Tuesday (96) is, judged at the first listing
    # after midnight UTC (Wednesday 02:13), told at the next cycle (past group_wait_s).
    await st.run_for(36 * 3600, 3 * 3600)
    assert len(events(st, "volume_anomaly")) == 1 and st.received() == (0, 0, 0, 0)
    await st.run_for(3 * 3600, 3 * 3600)
    headline = (
        "Invoices sync used 96 operations on Tue 22 Sep: 80 % below its usual Tuesday (median 480)"
    )
    first = assert_one_firing(st, "Volume anomaly", headline, headline)
    text = body(st.mails()[0], "plain")
    assert "480, 480, 480" in text  # the same weekdays it was compared with
    (event,) = [json.loads(e["payload_json"]) for e in events(st, "volume_anomaly")]
    assert event["scope"] == "scenario" and len(event["days"]) == 14
    assert " ".join(f"{v:,}" for _, v in event["days"]) in text  # the last 14 days
    assert event["days"][-1] == ["2026-09-22", 96]

    # Wednesday: still low, and the Wednesday digest (08:00 Paris) says so, open.
    await st.run_for(3 * 3600, 3 * 3600)
    assert st.received() == (1, 0, 1, 1)
    wednesday = st.digests()[-1]
    assert len(st.digests()) == quiet_digests + 2
    item = f"Volume anomaly: {headline}"
    bars = assert_digest_lists(wednesday, item, open_now=1).bar_heights
    assert bars[-2:] == [round(324 / 480 * 24), round(96 / 480 * 24)]  # Monday's part, Tuesday

    await st.knob(sync, volume=1.0)  # Wednesday 08:13 UTC: back to 5 a run
    await st.run_for(2 * 86400, 3 * 3600)  # Wednesday is usual enough, judged on Thursday
    resolved = "Invoices sync is back to its usual volume (348 operations on Wed 23 Sep)"
    assert_one_resolved(st, first, resolved, resolved)
    assert st.received() == (2, 1, 2, 2)
    thursday = st.digests()[-2]  # Thursday's lists it over, Friday's no more
    assert_digest_lists(thursday, item, open_now=0)
    assert "Silent failures" not in body(st.digests()[-1], "plain")
    assert all("Silent failures" not in body(d, "plain") for d in st.digests()[:quiet_digests])
    assert_the_only_alert(st, "volume_anomaly")


def test_the_digest_section_reader_finds_the_text_and_the_bars() -> None:
    """The helper the tests above lean on reads only its section."""
    html = (
        '<table data-section="silent"><tr><td><strong>Volume anomaly</strong>: X used 1<br>'
        '<table data-sparkline="1"><tr><td><div style="width: 7px; height: 24px;"></div></td>'
        '<td><div style="width: 7px; height: 3px;"></div></td></tr></table></td></tr></table>'
        "<p>outside</p>"
    )
    section = Section.of(html)
    assert (
        section.visible == "Volume anomaly: X used 1"
        and section.bar_heights == [24, 3]
        and section.sparklines == 1
    )
