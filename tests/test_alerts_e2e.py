"""End to end: simulator -> makewatch cycles -> Slack stand-in and a real SMTP server."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import START

from watcher.clock import ManualClock
from watcher.config import load_config
from watcher.service import Watcher
from watcher.simulator import World
from watcher.store import Store
from watcher.testing import SlackState, create_slack_app
from watcher.testing.mail_sink import MailSink, start_mail_sink

BOT = "xoxb-standin-token"


class Stack:
    def __init__(self, world, ids, sim, slack: SlackState, slack_url: str, sink: MailSink, smtp, settings, store):
        self.world, self.ids, self.sim = world, ids, sim
        self.slack, self.slack_url, self.sink, self.smtp = slack, slack_url, sink, smtp
        self.clock: ManualClock = world.clock
        self.store = store
        self.watcher = Watcher(settings, store, sim.session, self.clock)

    async def once(self):
        return await self.watcher.cycle()

    async def tick(self):
        return await self.watcher.alert()

    def messages(self, channel_id: str):
        return [m for m in self.slack.messages if m.channel == channel_id]

    def outbox(self):
        return self.store.read_sync(lambda db: [dict(r) for r in db["outbox"].rows_where(order_by="id")])


def agency(clock):
    world = World(seed=31, clock=clock)
    far = START + 10**8
    a = world.add_organization(name="Client A", plan="pro")
    b = world.add_organization(name="Client B", plan="pro")
    ta, tb = world.add_team(a.id, name="A"), world.add_team(b.id, name="B")
    ids = {
        "a": a,
        "b": b,
        "token_a": world.add_token(org_ids=[a.id]),
        "token_b": world.add_token(org_ids=[b.id]),
        "a1": world.add_scenario(ta.id, name="A invoices", first_run_at=far, max_errors=0),
        "a2": world.add_scenario(ta.id, name="A <!channel> sync", first_run_at=far, max_errors=0),
        "a3": world.add_scenario(ta.id, name="A reports", first_run_at=far, max_errors=0),
        "b1": world.add_scenario(tb.id, name="B orders", first_run_at=far, max_errors=0),
        "b2": world.add_scenario(tb.id, name="B leads", first_run_at=far, max_errors=2),
    }
    return world, ids


def config(tmp_path: Path, sim_url: str, slack_url: str, smtp_port: int, ids, alerts: str) -> Path:
    cfg = tmp_path / "makewatch.toml"
    cfg.write_text(
        f"""
[[organizations]]
name = "Client A"
base_url = "{sim_url}"
organization_id = {ids["a"].id}
token_env = "TOK_A"

[[organizations]]
name = "Client B"
base_url = "{sim_url}"
organization_id = {ids["b"].id}
token_env = "TOK_B"

[state]
db_path = "{tmp_path / "state.db"}"

[alerts]
default_channels = ["ops-mail"]
{alerts}

[[routes]]
min_severity = "critical"
channels = ["oncall"]
continue = true

[[routes]]
org = "Client A"
channels = ["client-a"]

[[routes]]
org = "Client B"
channels = ["client-b", "ops-mail"]

[channels.oncall]
type = "slack_bot"
token_env = "BOT"
channel = "#oncall"
base_url = "{slack_url}/api/"

[channels.client-a]
type = "slack_bot"
token_env = "BOT"
channel = "#client-a"
base_url = "{slack_url}/api/"

[channels.client-b]
type = "slack_webhook"
webhook_url_env = "HOOK_B"

[channels.ops-mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from_addr = "makewatch@agency.example"
to = ["ops@agency.example"]
timeout_s = 5
"""
    )
    return cfg


@pytest.fixture
async def make_stack(start_sim, aiohttp_server, tmp_path):
    made: list[Stack] = []

    async def make(alerts: str = "group_wait_s = 0") -> Stack:
        clock = ManualClock(START)
        world, ids = agency(clock)
        sim = await start_sim(world)
        slack = SlackState(channels={"oncall": "C0ONCALL", "client-a": "C0A"}, webhooks={"T0/B0/clientb": "C0B"})
        slack_server = await aiohttp_server(create_slack_app(slack))
        slack_url = str(slack_server.make_url("")).rstrip("/")
        sink = MailSink()
        smtp = start_mail_sink(sink)
        cfg = config(tmp_path, sim.base_url, slack_url, smtp.port, ids, alerts)
        env = {"TOK_A": ids["token_a"], "TOK_B": ids["token_b"], "BOT": BOT, "HOOK_B": f"{slack_url}/webhook/T0/B0/clientb"}
        settings = load_config(cfg, env=env)
        store = Store.open(settings.state.db_path)
        stack = Stack(world, ids, sim, slack, slack_url, sink, smtp, settings, store)
        made.append(stack)
        return stack

    yield make
    for s in made:
        await s.watcher.aclose()
        s.store.close()
        try:
            s.smtp.stop()
        except AssertionError:  # already stopped by the test (an SMTP outage)
            pass


async def test_five_failing_scenarios_in_two_client_orgs_reach_the_right_channels_once(make_stack):
    st = await make_stack()
    await st.once()  # baseline: nothing stands, nothing is sent
    assert st.slack.messages == [] and st.sink.messages == []

    st.clock.advance(60)
    for key in ("a1", "a2", "a3", "b1"):
        st.world.inject_run(st.ids[key].id, status=3, error_name="DataError", error_message=f"{key} failed")
    for _ in range(2):  # B leads: Make switches it off after two errors
        st.world.inject_run(st.ids["b2"].id, status=3, error_name="ConnectionError", error_message="refused")
    st.clock.advance(60)
    reports, alerts = await st.once()
    assert all(r.ok for r in reports) and alerts.delivered.parked == 0

    client_a = st.messages("C0A")
    assert len(client_a) == 3
    assert all("Client A" in m.all_text() for m in client_a)
    assert all(f"A ({st.ids['a1'].team_id})" in m.all_text() for m in client_a)  # the team, by name
    # The scenario named <!channel> pings nobody: it reaches Slack escaped.
    sync = next(m for m in client_a if "sync" in m.all_text())
    mrkdwn = sync.all_text().replace(sync.blocks[0]["text"]["text"], "")  # minus the plain_text header
    assert "<!channel>" not in mrkdwn and "&lt;!channel&gt;" in mrkdwn

    client_b = st.messages("C0B")
    b_texts = [m.all_text() for m in client_b]
    assert len(client_b) == 2  # B orders' error, B leads switched off (its errors inhibited)
    assert any("B orders" in t for t in b_texts) and any("B leads" in t for t in b_texts)
    oncall = st.messages("C0ONCALL")
    assert len(oncall) == 1 and "B leads" in oncall[0].all_text()  # critical: on-call too
    assert all("Client A" not in m.all_text() for m in client_b + oncall)
    assert len(st.sink.messages) == 2  # Client B's two alerts by e-mail too
    assert all(rcpt == ["ops@agency.example"] for rcpt, _ in st.sink.messages)

    before = (len(st.slack.messages), len(st.sink.messages))
    st.clock.advance(60)
    await st.once()
    assert (len(st.slack.messages), len(st.sink.messages)) == before  # nothing the second time


async def test_a_burst_of_200_failures_is_one_message_then_thread_replies_and_a_resolve(make_stack):
    st = await make_stack("group_wait_s = 30\nrepeat_interval_s = 3600")
    await st.once()
    st.clock.advance(60)
    for i in range(200):
        st.world.inject_run(st.ids["a1"].id, status=3, error_name="DataError", error_message=f"row {i} invalid", at=START + 60 + i * 0.25)
    st.clock.advance(60)
    await st.once()
    assert st.messages("C0A") == []  # collecting the burst (group_wait_s)
    st.clock.advance(31)
    await st.tick()
    (first,) = st.messages("C0A")
    assert "200" in first.all_text()

    st.clock.advance(3600)
    for _ in range(5):
        st.world.inject_run(st.ids["a1"].id, status=3, error_name="DataError", error_message="row 7 invalid")
    st.clock.advance(60)
    await st.once()
    st.clock.advance(31)
    await st.tick()
    replies = st.slack.replies(first.ts)
    assert len(replies) == 1 and "5" in replies[0].all_text()
    assert len([m for m in st.messages("C0A") if m.thread_ts is None]) == 1

    st.clock.advance(60)
    st.world.inject_run(st.ids["a1"].id, status=1)
    st.clock.advance(60)
    await st.once()
    updates = st.slack.calls("chat.update")  # the repeat (the count now), then the resolution
    assert len(updates) == 2 and {u.body["ts"] for u in updates} == {first.ts}
    assert "205" in json.dumps(updates[0].body)
    assert "resolved" in st.slack.find("C0A", first.ts).all_text().lower()


async def test_a_silence_holds_and_is_recorded(make_stack):
    from watcher.silences import add_silence

    st = await make_stack()
    await st.once()
    add_silence(st.store, now=st.clock.time(), duration_s=7200, reason="migration", scenario_id=st.ids["a1"].id)
    st.clock.advance(60)
    st.world.inject_run(st.ids["a1"].id, status=3)
    st.world.inject_run(st.ids["a3"].id, status=3)
    st.clock.advance(60)
    await st.once()
    texts = [m.all_text() for m in st.messages("C0A")]
    assert len(texts) == 1 and "A reports" in texts[0]
    reasons = st.store.read_sync(lambda db: Counter(r["reason"] for r in db["events"].rows_where("kind = 'execution_error'")))
    assert reasons["silenced"] == 1


async def test_slack_and_smtp_down_then_everything_arrives_in_order_once(make_stack):
    st = await make_stack()
    await st.once()
    st.slack.down = True
    port = st.smtp.port
    st.smtp.stop()
    st.clock.advance(60)
    for key in ("b1", "a1", "a3"):
        st.world.inject_run(st.ids[key].id, status=3, error_message=f"{key} broke")
        st.clock.advance(10)
    for _ in range(3):  # the outage lasts several ticks; every attempt fails and is recorded
        await st.once()
        st.clock.advance(120)
    assert st.slack.messages == [] and st.sink.messages == []
    pending = [r for r in st.outbox() if r["status"] == "pending"]
    heads = {}
    for r in pending:
        heads.setdefault(r["channel"], r)
    assert set(heads) == {"client-a", "client-b", "ops-mail"}
    assert all(r["attempts"] == 3 for r in heads.values())  # one attempt per tick, each recorded
    # client-a's second alert was tried once, as the probe that showed the channel down;
    # after that a dead channel costs one request per tick, not one per queued row.
    assert [r["attempts"] for r in pending if r["channel"] == "client-a"] == [3, 1]
    assert len(st.slack.calls("chat.postMessage")) == 4

    st.slack.down = False
    st.smtp = start_mail_sink(st.sink, port)
    for _ in range(6):
        st.clock.advance(1900)  # past the longest backoff
        await st.tick()
    rows = st.outbox()
    assert all(r["status"] == "sent" for r in rows)
    a_texts = [m.all_text() for m in st.messages("C0A")]
    assert len(a_texts) == 2 and "a1 broke" in a_texts[0] and "a3 broke" in a_texts[1]  # in order
    assert len(st.messages("C0B")) == 1 and len(st.sink.messages) == 1  # no duplicate
    attempts = st.store.read_sync(lambda db: db["deliveries"].count_where("ok = 0"))
    assert attempts >= 3


async def test_a_permanent_slack_error_parks_the_row_and_tells_the_other_channels(make_stack):
    st = await make_stack()
    await st.once()
    st.slack.fail_next(1, error="channel_not_found")
    st.clock.advance(60)
    st.world.inject_run(st.ids["a1"].id, status=3)
    st.clock.advance(60)
    await st.once()
    rows = st.outbox()
    parked = [r for r in rows if r["status"] == "parked"]
    assert len(parked) == 1 and parked[0]["channel"] == "client-a"
    assert "channel_not_found" in parked[0]["last_error"]
    await st.tick()
    oncall = [m.all_text() for m in st.messages("C0ONCALL")]
    assert len(oncall) == 1 and "client-a" in oncall[0]
    health = st.store.read_sync(lambda db: [json.loads(r["payload_json"]) for r in db["events"].rows_where("kind = 'watcher_health'")])
    assert health[0]["problem"] == "channel_failed"


async def test_slack_429_is_retried_after_its_retry_after(make_stack):
    st = await make_stack()
    await st.once()
    st.slack.fail_next(1, status=429, retry_after=200)
    st.clock.advance(60)
    st.world.inject_run(st.ids["a1"].id, status=3)
    st.world.inject_run(st.ids["a3"].id, status=3)
    st.clock.advance(60)
    await st.once()
    first, second = [r for r in st.outbox() if r["channel"] == "client-a"]
    assert first["status"] == "pending" and first["next_attempt_at"] >= st.clock.time() + 200
    assert second["attempts"] == 0  # rate limited: the whole channel waits, no probe
    st.clock.advance(150)
    await st.tick()
    assert st.messages("C0A") == []  # not before Slack said
    st.clock.advance(51)
    await st.tick()
    assert len(st.messages("C0A")) == 2


async def test_templates_dir_in_the_config_overrides_a_bundled_template(start_sim, aiohttp_server, tmp_path):
    custom = tmp_path / "my-templates" / "email"
    custom.mkdir(parents=True)
    (custom / "alert.subject.j2").write_text("ACME OPS: {{ title }}")
    clock = ManualClock(START)
    world, ids = agency(clock)
    sim = await start_sim(world)
    slack_server = await aiohttp_server(create_slack_app(SlackState()))
    sink = MailSink()
    smtp = start_mail_sink(sink)
    try:
        slack_url = str(slack_server.make_url("")).rstrip("/")
        cfg = config(tmp_path, sim.base_url, slack_url, smtp.port, ids, 'group_wait_s = 0\ntemplates_dir = "my-templates"')
        env = {"TOK_A": ids["token_a"], "TOK_B": ids["token_b"], "BOT": BOT, "HOOK_B": f"{slack_url}/webhook/T0/B0/clientb"}
        settings = load_config(cfg, env=env)
        with Store.open(settings.state.db_path) as store:
            watcher = Watcher(settings, store, sim.session, clock)
            await watcher.cycle()
            clock.advance(60)
            world.inject_run(ids["b1"].id, status=3)
            clock.advance(60)
            await watcher.cycle()
            await watcher.aclose()
        assert sink.subjects() == ["ACME OPS: Execution error: B orders"]
    finally:
        smtp.stop()


async def test_the_flood_cap_holds_back_then_sends_one_summary(make_stack):
    st = await make_stack("group_wait_s = 0\nmax_per_hour = 2")
    await st.once()
    st.clock.set((START // 3600 + 1) * 3600 + 60)  # just after a clock hour starts
    for key in ("a1", "a2", "a3"):
        st.world.inject_run(st.ids[key].id, status=3, error_message=f"{key} broke")
    st.clock.advance(60)
    await st.once()
    assert len(st.messages("C0A")) == 2  # the cap
    st.clock.advance(3600)
    await st.tick()
    messages = st.messages("C0A")
    assert len(messages) == 3
    summary = messages[-1].all_text()
    assert "held back" in summary and "A reports" in summary
    reasons = st.store.read_sync(lambda db: Counter(r["reason"] for r in db["events"].rows_where("kind = 'execution_error'")))
    assert reasons["flood-capped"] == 1


async def test_no_secret_reaches_the_database_or_the_logs(make_stack, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    st = await make_stack()
    await st.once()
    st.slack.fail_next(2, status=503)
    st.slack.fail_next(1, error="invalid_auth")
    st.clock.advance(60)
    for key in ("a1", "b1"):
        st.world.inject_run(st.ids[key].id, status=3)
    st.clock.advance(60)
    for _ in range(3):
        await st.once()
        st.clock.advance(120)
    secrets = [st.ids["token_a"], st.ids["token_b"], BOT, "T0/B0/clientb"]

    def dump(db) -> str:
        return "\n".join(str(list(db[t].rows)) for t in db.table_names())

    # makewatch's own log records (the stand-in servers' access logs are not makewatch's)
    logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp.access"))
    text = st.store.read_sync(dump) + "\n" + logs
    assert "execution_error" in text and "invalid_auth" in text  # the dump is not empty
    leaks = [line for line in text.splitlines() if any(s in line for s in secrets)]
    assert not leaks, leaks[:3]


async def test_an_error_followed_by_a_success_within_the_group_wait_is_still_told(make_stack):
    """Issue 12.1: errors are events. The outside run lost a third of its errors this way."""
    st = await make_stack("group_wait_s = 30")
    await st.once()
    st.clock.advance(60)
    a1 = st.ids["a1"].id
    st.world.inject_run(a1, status=3, error_name="DataError", error_message="row 7 invalid")
    st.clock.advance(5)
    st.world.inject_run(a1, status=3, error_name="DataError", error_message="row 9 invalid")
    st.clock.advance(15)
    st.world.inject_run(a1, status=1)  # ran fine again, 20 s after the first failure
    st.clock.advance(5)
    await st.once()
    assert st.messages("C0A") == []  # still collecting the burst
    st.clock.advance(31)
    await st.tick()
    (only,) = st.messages("C0A")
    text = only.all_text()
    assert "A invoices" in text and "2" in text
    assert "ran fine again" in text.lower()
    # That notice was the resolution: nothing more follows, not even after hours.
    for _ in range(3):
        st.clock.advance(3600)
        await st.once()
    assert len(st.slack.messages) == 1 and st.slack.calls("chat.update") == []
    state = st.store.read_sync(lambda db: next(db["alerts"].rows_where("kind = 'execution_error'")))
    assert state["state"] == "resolved"


async def test_a_deactivation_notice_says_why_and_what_to_do(make_stack):
    st = await make_stack()
    await st.once()
    st.clock.advance(60)
    for _ in range(2):  # B leads: Make switches it off after two errors
        st.world.inject_run(st.ids["b2"].id, status=3, error_name="ConnectionError", error_message="refused by crm.example")
    st.clock.advance(60)
    await st.once()
    (oncall,) = st.messages("C0ONCALL")
    text = oncall.all_text()
    assert "refused by crm.example" in text and "ConnectionError" in text
    assert "turn the scenario back on" in text


async def test_a_resolved_notice_shows_the_state_at_resolution_and_when(make_stack):
    st = await make_stack()
    hook = st.world.add_hook(st.ids["a1"].team_id, scenario_id=st.ids["a1"].id, queue_limit=50, queue_count=10)
    await st.once()
    hook.queue_count = 45
    st.clock.advance(900)
    await st.once()
    (first,) = st.messages("C0A")
    assert "45 / 50" in first.all_text()
    hook.queue_count = 0
    st.clock.advance(900)
    await st.once()
    resolved = st.slack.find("C0A", first.ts).all_text()
    assert "0 / 50" in resolved and "45 / 50" not in resolved
    assert "Resolved at" in resolved


async def test_new_incomplete_executions_during_a_firing_dlq_alert_are_told(make_stack):
    """Issue 12.4: they were folded silently until the 4-hour repeat."""
    st = await make_stack()
    team_a, team_b = st.ids["a1"].team_id, st.ids["b1"].team_id
    far = st.clock.time() + 10**8
    qa = st.world.add_scenario(team_a, name="A queue", first_run_at=far, max_errors=0, store_incomplete=True)
    qb = st.world.add_scenario(team_b, name="B queue", first_run_at=far, max_errors=0, store_incomplete=True)
    await st.once()

    def fail_both(message: str) -> None:
        for sc in (qa, qb):
            st.world.inject_run(sc.id, status=3, error_name="ConnectionError", error_message=message)

    st.clock.advance(60)
    fail_both("refused once")
    st.clock.advance(30)
    await st.once()
    dlq_posts = lambda ch: [m for m in st.messages(ch) if m.thread_ts is None and '"makewatch.incomplete_executions.' in json.dumps(m.blocks)]  # noqa: E731
    (bot_first,) = dlq_posts("C0A")
    assert len(dlq_posts("C0B")) == 1
    mails = len(st.sink.messages)

    st.clock.advance(60)
    fail_both("refused twice")  # a new incomplete execution while the DLQ alert fires
    st.clock.advance(30)
    await st.once()
    st.clock.advance(300)  # at most every group_interval_s (300 s), not the 4-hour repeat
    await st.once()
    replies = [m for m in st.slack.replies(bot_first.ts) if "incomplete" in m.all_text().lower()]
    assert len(replies) == 1  # bot: a reply in the thread...
    assert any(u.body["ts"] == bot_first.ts and u.status == 200 for u in st.slack.calls("chat.update"))  # ...and the first message updated
    assert len(dlq_posts("C0B")) == 2  # webhook: a new notice
    assert len(st.sink.messages) > mails  # e-mail too (Client B's route)
