"""Silent failures (issue 15): the overdue detector as a table, then end to end against the
simulator (a stalled scheduled scenario, found from the inventory alone)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from conftest import START, load_bench
from pydantic import ValidationError
from test_alerts_e2e import make_stack  # noqa: F401 (the fixture)
from test_poller import rig_factory  # noqa: F401 (the fixture)

from alerts.digest import build_digest
from alerts.render import Renderer
from watcher.business_hours import BusinessHours
from watcher.clock import ManualClock
from watcher.config import SilentSettings
from watcher.events import volume_facts
from watcher.make.models import Scenario, UsageDay
from watcher.silent import (
    Activity,
    DailyOps,
    IdleRule,
    OverdueRule,
    VolumeRule,
    VolumeStep,
    idle_step,
    last_complete_day_everywhere,
    overdue_step,
    usage_days,
    volume_step,
    volume_verdict,
)
from watcher.simulator import World
from watcher.testing.mail_sink import subject_of

T0 = START  # "now" of the table: 2026-09-21T14:13:20Z
EDIT = "2026-09-01T10:00:00+00:00"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def listed(next_in_s: float | None = 600, ops: int = 10, **kw: Any) -> Scenario:
    """A scenario as GET /scenarios lists it, ``nextExec`` ``next_in_s`` after T0."""
    obj: dict[str, Any] = {
        "id": 1,
        "name": "Nightly export",
        "teamId": 7,
        "isActive": True,
        "isinvalid": False,
        "isPaused": False,
        "scheduling": {"type": "indefinitely", "interval": 900},
        "nextExec": None if next_in_s is None else iso(T0 + next_in_s),
        "lastEdit": EDIT,
        "operations": ops,
        "centicredits": ops * 100,
    }
    obj.update(kw)
    return Scenario.parse(obj)


def snap(due_in_s: float | None, ops: int = 10, overdue: bool = False, last_edit: str = EDIT) -> dict[str, Any]:
    """The stored snapshot: counters, the remembered due run (relative to T0), an open episode."""
    due = None if due_in_s is None else T0 + due_in_s
    return {
        "operations": ops,
        "centicredits": ops * 100,
        "due_at": due,
        "overdue_at": due if overdue else None,
        "last_edit": last_edit,
    }


DAILY = {"scheduling": {"type": "daily", "time": "02:00"}}
MONTHLY = {"scheduling": {"type": "monthly", "time": "02:00"}}

# (case, stored snapshot, listed scenario, organization paused, rule, fire, resolved)
CASES = [
    ("first sight, next run ahead", None, listed(600), False, OverdueRule(), False, None),
    ("first sight, stuck for two hours (standing)", None, listed(-7200), False, OverdueRule(), True, None),
    ("late, within 1.5 x 15 min", snap(-1300), listed(-1300), False, OverdueRule(), False, None),
    ("late past 1.5 x 15 min", snap(-1400), listed(-1400), False, OverdueRule(), True, None),
    ("nextExec moved on without a run: the missed slot counts", snap(-1400), listed(500), False, OverdueRule(), True, None),
    ("it ran: counters moved", snap(-1400), listed(500, ops=11), False, OverdueRule(), False, None),
    ("it ran while overdue: resolved", snap(-3600, overdue=True), listed(500, ops=11), False, OverdueRule(), False, "ran"),
    ("still overdue: no second event", snap(-3600, overdue=True), listed(-3600), False, OverdueRule(), False, None),
    ("new billing period, no run: still late", snap(-1400), listed(-1400, ops=0), False, OverdueRule(), True, None),
    ("new billing period, nextExec moved on: the reset erased the run, not late", snap(-1400), listed(500, ops=0), False, OverdueRule(), False, None),
    ("new billing period while overdue: still open", snap(-3600, overdue=True), listed(500, ops=0), False, OverdueRule(), False, None),
    ("daily: 6 min late is past the 5 min grace", snap(-360), listed(-360, **DAILY), False, OverdueRule(), True, None),
    ("daily: 4 min late is not", snap(-240), listed(-240, **DAILY), False, OverdueRule(), False, None),
    ("monthly, next run in 20 days", snap(20 * 86400), listed(20 * 86400, **MONTHLY), False, OverdueRule(), False, None),
    ("custom grace_s: 20 min for a daily", snap(-900), listed(-900, **DAILY), False, OverdueRule(grace_s=1200), False, None),
    ("check disabled", snap(-7200), listed(-7200), False, OverdueRule(enabled=False), False, None),
    ("stopped by hand (isActive false)", snap(-7200), listed(None, isActive=False), False, OverdueRule(), False, None),
    ("stopped while overdue: resolved", snap(-7200, overdue=True), listed(None, isActive=False), False, OverdueRule(), False, "not expected"),
    ("deactivated by Make", snap(-7200), listed(None, isActive=False, isinvalid=True), False, OverdueRule(), False, None),
    ("scenario paused", snap(-7200), listed(-7200, isPaused=True), False, OverdueRule(), False, None),
    ("organization paused (one org-level alert)", snap(-7200), listed(-7200), True, OverdueRule(), False, None),
    ("webhook (immediately)", snap(-7200), listed(-7200, scheduling={"type": "immediately"}, hookId=5), False, OverdueRule(), False, None),
    ("on demand", snap(None), listed(None, scheduling={"type": "on-demand"}), False, OverdueRule(), False, None),
    ("once", snap(-7200), listed(-7200, scheduling={"type": "once"}), False, OverdueRule(), False, None),
    ("edited to a later slot: the old one is not expected", snap(-1400), listed(3600, lastEdit="2026-09-21T14:00:00Z"), False, OverdueRule(), False, None),
    ("edited while overdue: resolved", snap(-3600, overdue=True), listed(3600, lastEdit="2026-09-21T14:00:00Z"), False, OverdueRule(), False, "not expected"),
]


@pytest.mark.parametrize(("prev", "sc", "org_paused", "rule", "fire", "resolved"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_overdue_table(prev, sc, org_paused, rule, fire, resolved):
    step = overdue_step(prev, sc, T0, org_paused=org_paused, rule=rule)
    assert (step.fire, step.resolved) == (fire, resolved)
    if fire:
        assert step.overdue_at == step.due_at and step.late_s > step.allowance_s
    if resolved or not fire and (prev or {}).get("overdue_at") is None:
        assert step.overdue_at is None


def test_the_missed_slot_is_remembered_while_next_exec_moves_on():
    step = overdue_step(snap(-1400), listed(500), T0, org_paused=False, rule=OverdueRule())
    assert step.due_at == T0 - 1400 and round(step.late_s) == 1400 and step.allowance_s == 1350


# --- end to end ------------------------------------------------------------------------------


def silent_world(clock: ManualClock) -> tuple[World, dict[str, Any]]:
    world = World(seed=5, clock=clock)
    org = world.add_organization(name="Acme", plan="core")
    team = world.add_team(org.id, name="Ops")
    ids: dict[str, Any] = {"org": org, "team": team, "token": world.add_token(org_ids=[org.id])}
    ids["sync"] = world.add_scenario(team.id, name="Sync <CRM>", interval_s=900, first_run_at=START + 300)
    ids["nightly"] = world.add_scenario(team.id, name="Nightly export", interval_s=86400, schedule="daily", first_run_at=START + 3600)
    ids["monthly"] = world.add_scenario(team.id, name="Month end", interval_s=30 * 86400, schedule="monthly", first_run_at=START + 600)
    ids["manual"] = world.add_scenario(team.id, name="By hand", schedule="on-demand")
    return world, ids


async def test_a_stalled_scheduled_scenario_is_overdue_once_and_resolves_on_its_next_run(rig_factory):  # noqa: F811
    clock = ManualClock(START)
    world, ids = silent_world(clock)
    rig = await rig_factory(world, [("Acme", ids["org"].id, ids["token"])])
    await rig.cycle()  # baseline
    world.set_behaviour(ids["sync"].id, stalled=True)
    world.set_behaviour(ids["monthly"].id, stalled=True)  # due at +10 min, 5 min of grace

    # Sync's run at +5 min does not happen; it may be 1.5 x 15 min late.
    clock.advance(300 + 1300)
    await rig.cycle()
    assert [e["scenario_id"] for e in rig.events("scenario_overdue")] == [ids["monthly"].id]
    clock.advance(100)
    n = len(world.requests)
    await rig.cycle()
    cycle_requests = world.requests[n:]
    overdue = rig.events("scenario_overdue")
    assert [e["scenario_id"] for e in overdue] == [ids["monthly"].id, ids["sync"].id]
    # No extra API call: the cycle that found it listed the inventory and read nothing of
    # the stalled scenarios (nothing else moved).
    assert {r.path for r in cycle_requests} == {"/api/v2/scenarios"}
    assert not any(str(ids["sync"].id) in r.path + str(r.query) for r in world.requests)

    for _ in range(3):  # still stalled: nothing new
        clock.advance(600)
        await rig.cycle()
    assert len(rig.events("scenario_overdue")) == 2

    world.set_behaviour(ids["sync"].id, stalled=False)  # it runs at once
    clock.advance(60)
    await rig.cycle()
    ends = [e for e in rig.events("scenario_overdue") if '"recovered":true' in e["payload_json"]]
    assert [e["scenario_id"] for e in ends] == [ids["sync"].id]
    assert '"resolution":"ran"' in ends[0]["payload_json"]
    # The monthly one is switched off by hand: not expected any more, resolved too.
    world.set_active(ids["monthly"].id, False)
    clock.advance(60)
    await rig.cycle()
    kinds = Counter(e["scenario_id"] for e in rig.events("scenario_overdue"))
    assert kinds == {ids["sync"].id: 2, ids["monthly"].id: 2}
    assert ids["nightly"].id not in kinds and ids["manual"].id not in kinds


async def test_a_quota_paused_organization_is_one_alert_not_one_per_overdue_scenario(rig_factory):  # noqa: F811
    clock = ManualClock(START)
    world, ids = silent_world(clock)
    rig = await rig_factory(world, [("Acme", ids["org"].id, ids["token"])], extra="[polling]\nusage_interval_s = 60")
    await rig.cycle()
    world.set_paused(ids["org"].id, True)  # Make paused it: nothing runs, nextExec passes
    for _ in range(8):
        clock.advance(600)
        await rig.cycle()
    assert rig.events("scenario_overdue") == []
    paused = rig.events("scenario_paused")
    assert len(paused) == 1 and paused[0]["scenario_id"] is None


async def test_an_overdue_run_reaches_slack_and_email_in_words_and_its_run_resolves_it(make_stack):  # noqa: F811
    st = await make_stack("group_wait_s = 30")
    team_b = st.ids["b1"].team_id
    nightly = st.world.add_scenario(team_b, name="Nightly <export>", interval_s=86400, schedule="daily", first_run_at=START + 600)
    await st.once()
    st.world.set_behaviour(nightly.id, stalled=True)
    st.clock.advance(600 + 4200)  # due at +10 min, 1 h 10 min late now
    await st.once()
    st.clock.advance(31)
    await st.tick()
    (slack,) = st.messages("C0B")
    text = slack.all_text()
    assert "Nightly &lt;export&gt; is overdue: its 14:23 UTC run has not happened (due 1 h 10 min ago)" in text
    ((_, mail),) = st.sink.messages
    text, html = (mail.get_body((part,)).get_content() for part in ("plain", "html"))
    assert "Nightly <export> is overdue: its 14:23 UTC run has not happened" in text
    assert "Nightly &lt;export&gt; is overdue" in html and "<export>" not in html
    assert "Scheduled run overdue" in subject_of(mail)
    for _ in range(2):  # still stuck: no repeat without news
        st.clock.advance(600)
        await st.once()
    assert len(st.messages("C0B")) == 1

    st.world.set_behaviour(nightly.id, stalled=False)
    st.clock.advance(60)
    await st.once()
    st.clock.advance(31)
    await st.tick()
    resolved = st.messages("C0B")[1].all_text()
    assert "Nightly &lt;export&gt; ran again" in resolved
    assert "Nightly <export> ran again" in st.sink.messages[1][1].get_body(("plain",)).get_content()
    state = st.store.read_sync(lambda db: next(db["alerts"].rows_where("kind = 'scenario_overdue'")))
    assert state["state"] == "resolved"


# --- configuration -----------------------------------------------------------------------------


LABELS = {"org_id": 1001, "org": "Client A", "team_id": 812, "scenario_id": 4211, "scenario": "Nightly export"}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([], (True, 300.0, 1.5)),
        ([{"scenario": "nightly*", "grace_s": 1800.0}], (True, 1800.0, 1.5)),
        ([{"scenario": 4211, "overdue": False}], (False, 300.0, 1.5)),
        ([{"scenario": "4211", "grace_factor": 3.0}], (True, 300.0, 3.0)),
        ([{"org": "Client B", "overdue": False}], (True, 300.0, 1.5)),
        ([{"org": "client *", "team_id": 812, "grace_s": 60.0}, {"scenario": "Nightly*", "grace_s": 900.0}], (True, 900.0, 1.5)),
        ([{"team_id": 999, "overdue": False}], (True, 300.0, 1.5)),
    ],
    ids=["defaults", "name glob", "id", "id as text", "another org", "later rule wins", "another team"],
)
def test_silent_rules_apply_in_order_to_the_scenarios_they_match(rules, expected):
    values = SilentSettings(rules=rules).effective(LABELS)
    rule = OverdueRule.from_settings(values)
    assert (rule.enabled, rule.grace_s, rule.grace_factor) == expected


def test_a_misspelt_silent_rule_key_is_refused():
    with pytest.raises(ValidationError, match="grace"):
        SilentSettings(rules=[{"scenario": "x", "grace": 10}])


async def test_rules_turn_the_check_off_for_one_scenario_and_give_another_more_grace(rig_factory):  # noqa: F811
    clock = ManualClock(START)
    world, ids = silent_world(clock)
    extra = (
        '[[polling.silent.rules]]\nscenario = "Month*"\noverdue = false\n'
        f'[[polling.silent.rules]]\nscenario = {ids["sync"].id}\ngrace_factor = 4.0\n'
    )
    rig = await rig_factory(world, [("Acme", ids["org"].id, ids["token"])], extra=extra)
    await rig.cycle()
    world.set_behaviour(ids["sync"].id, stalled=True)
    world.set_behaviour(ids["monthly"].id, stalled=True)
    clock.advance(300 + 3500)  # sync 58 min late: under 4 x 15 min
    await rig.cycle()
    assert rig.events("scenario_overdue") == []
    clock.advance(200)
    await rig.cycle()
    assert [e["scenario_id"] for e in rig.events("scenario_overdue")] == [ids["sync"].id]


# --- idle webhooks: the detector ----------------------------------------------------------------

DAY = 86400.0
WEBHOOK = {"hookId": 93, "scheduling": {"type": "immediately"}, "nextExec": None}


def hour_of_week(t: float) -> int:
    return int((t // 3600 + 72) % 168)


def profile(per_hour: float, *, busy=lambda h: True, since: float = T0 - 14 * DAY, last_run: float | None = None, idle: bool = False) -> dict[str, Any]:
    """A stored snapshot whose learnt activity runs ``per_hour`` in the ``busy`` hours of the
    week (none in the others), watched since ``since``, last run at ``last_run``."""
    act = Activity(since=since, folded_to=last_run or T0, last_run_at=last_run, idle_at=last_run if idle else None)
    act.runs = [per_hour * 8 if busy(h) else 0.0 for h in range(168)]
    act.seen_s = [8 * 3600.0] * 168
    return {"operations": 50, "centicredits": 5000, "ops_per_run": 1.0, "activity": act.to_json()}


def office(h: int) -> bool:
    return h // 24 < 5 and 8 <= h % 24 < 18


def webhook(ops: int = 50, **kw: Any) -> Scenario:
    return listed(None, ops=ops, **(WEBHOOK | kw))


WEEKDAYS = BusinessHours.parse("Mon-Fri 08:00-18:00")
SUNDAY_NOON = T0 - DAY - 2 * 3600 - 13 * 60  # Sun 20 Sep 12:00 UTC
assert hour_of_week(T0) == 14 and hour_of_week(SUNDAY_NOON) == 6 * 24 + 12

# (case, stored snapshot, listed scenario, now, organization paused, rule, fire, resolved)
IDLE_CASES = [
    ("busy webhook, 30 min silent: 5 runs missed, under 10", profile(10, last_run=T0 - 1800), webhook(), T0, False, IdleRule(), False, None),
    ("busy webhook, 70 min silent: about 12 missed", profile(10, last_run=T0 - 4200), webhook(), T0, False, IdleRule(), True, None),
    ("a smaller factor finds it sooner", profile(10, last_run=T0 - 1800), webhook(), T0, False, IdleRule(factor=4.0), True, None),
    ("it ran", profile(10, last_run=T0 - 4200), webhook(ops=51), T0, False, IdleRule(), False, None),
    ("it ran while idle: resolved", profile(10, last_run=T0 - 9000, idle=True), webhook(ops=51), T0, False, IdleRule(), False, "ran"),
    ("still idle: no second event", profile(10, last_run=T0 - 9000, idle=True), webhook(), T0, False, IdleRule(), False, None),
    ("first week of data: never learnt-idle", profile(10, since=T0 - 5 * DAY, last_run=T0 - 9000), webhook(), T0, False, IdleRule(), False, None),
    ("quiet at night: 8 silent night hours are usual", profile(10, busy=office, last_run=T0 - 14 * 3600 - 1800), webhook(), T0 - 6 * 3600 - 1800, False, IdleRule(), False, None),
    ("quiet at weekends", profile(10, busy=office, last_run=SUNDAY_NOON - 20 * 3600), webhook(), SUNDAY_NOON, False, IdleRule(), False, None),
    ("office hours silent since 09:00", profile(10, busy=office, last_run=T0 - 5 * 3600), webhook(), T0, False, IdleRule(), True, None),
    ("check disabled", profile(10, last_run=T0 - 9000), webhook(), T0, False, IdleRule(enabled=False), False, None),
    ("switched off", profile(10, last_run=T0 - 9000), webhook(isActive=False), T0, False, IdleRule(), False, None),
    ("deactivated while idle: resolved", profile(10, last_run=T0 - 9000, idle=True), webhook(isActive=False, isinvalid=True), T0, False, IdleRule(), False, "not expected"),
    ("scenario paused", profile(10, last_run=T0 - 9000), webhook(isPaused=True), T0, False, IdleRule(), False, None),
    ("organization paused", profile(10, last_run=T0 - 9000), webhook(), T0, True, IdleRule(), False, None),
    ("scheduled every 15 min: not a webhook", profile(10, last_run=T0 - 9000), listed(600), T0, False, IdleRule(), False, None),
    ("monthly: never idle", profile(10, last_run=T0 - 40 * DAY), listed(600, **MONTHLY), T0, False, IdleRule(), False, None),
    ("on demand: never idle", profile(10, last_run=T0 - 40 * DAY), listed(None, scheduling={"type": "on-demand"}), T0, False, IdleRule(), False, None),
    ("a rare webhook: 3 silent days are usual", profile(0.02, last_run=T0 - 3 * DAY), webhook(), T0, False, IdleRule(), False, None),
    ("expect_every 2h, first week: 2.5 h silent", profile(0, since=T0 - DAY, last_run=T0 - 9000), webhook(), T0, False, IdleRule(expect_every_s=7200), True, None),
    ("expect_every 2h: 1.5 h silent", profile(0, since=T0 - DAY, last_run=T0 - 5400), webhook(), T0, False, IdleRule(expect_every_s=7200), False, None),
    ("expect_every 2h in office hours: silent over the weekend", profile(0, last_run=SUNDAY_NOON - 30 * 3600), webhook(), SUNDAY_NOON, False, IdleRule(expect_every_s=7200, business_hours=WEEKDAYS), False, None),
    ("expect_every 2h in office hours: Monday 08:00-10:13", profile(0, last_run=SUNDAY_NOON - 30 * 3600), webhook(), T0 - 4 * 3600, False, IdleRule(expect_every_s=7200, business_hours=WEEKDAYS), True, None),
    ("expect_every on a scheduled scenario", profile(0, since=T0 - DAY, last_run=T0 - 9000), listed(600, ops=50), T0, False, IdleRule(expect_every_s=7200), True, None),
]


@pytest.mark.parametrize(("prev", "sc", "now", "org_paused", "rule", "fire", "resolved"), [c[1:] for c in IDLE_CASES], ids=[c[0] for c in IDLE_CASES])
def test_idle_table(prev, sc, now, org_paused, rule, fire, resolved):
    step = idle_step(prev, sc, now, org_paused=org_paused, rule=rule)
    assert (step.fire, step.resolved) == (fire, resolved)
    if fire:
        assert step.activity is not None and step.activity.idle_at == step.episode_at
    if resolved:
        assert step.activity is not None and step.activity.idle_at is None


def test_a_run_is_learnt_in_its_hour_and_the_profile_stays_small():
    act = Activity(since=T0, folded_to=T0)
    act.fold(T0 + 1800, 3, since=T0 + 1740)  # listed a minute ago without them
    assert act.runs[hour_of_week(T0)] == 3 and act.seen_s[hour_of_week(T0)] == 1800
    act.fold(T0 + 3600, 4, since=T0 + 1800)  # 14:43 to 15:13 UTC, across an hour: by time
    assert act.runs[hour_of_week(T0)] == pytest.approx(3 + 4 * 1000 / 1800)
    act.fold(T0 + 1800 + 3 * DAY, 30)  # a long gap (makewatch stopped): spread over it
    others = [r for h, r in enumerate(act.runs) if h not in (hour_of_week(T0), hour_of_week(T0) + 1)]
    assert max(others) < 1 and round(sum(act.runs)) == 37
    assert len(json.dumps(act.to_json())) < 4096


@pytest.mark.parametrize(
    ("text", "error"),
    [("Mon-Fri 08:00-18:00", None), ("Sat,Sun 10:00-14:00; Mon 09:00-12:00", None), ("Fri-Mon 00:00-24:00", None),
     ("Funday 08:00-18:00", "unknown day"), ("Mon-Fri 18:00-08:00", "start before"), ("weekdays", "not business hours")],
)
def test_business_hours_parse(text, error):
    if error:
        with pytest.raises(ValueError, match=error):
            BusinessHours.parse(text)
    else:
        assert BusinessHours.parse(text, "Europe/Paris").spans


# --- idle webhooks: end to end -----------------------------------------------------------------


def webhook_world(clock: ManualClock, *, rhythm: bool = False, interval_s: float = 300) -> tuple[World, dict[str, Any]]:
    world = World(seed=8, clock=clock)
    org = world.add_organization(name="Acme", plan="core")
    team = world.add_team(org.id, name="Ops")
    ids: dict[str, Any] = {"org": org, "team": team, "token": world.add_token(org_ids=[org.id])}
    ids["leads"] = world.add_scenario(team.id, name="Typeform leads", webhook=True, interval_s=interval_s, rhythm=rhythm, max_errors=0)
    ids["hook"] = world.add_hook(team.id, scenario_id=ids["leads"].id, queue_limit=1000, name="Typeform")
    ids["monthly"] = world.add_scenario(team.id, name="Month end", interval_s=30 * 86400, schedule="monthly", first_run_at=START + 10 * 86400)
    return world, ids


async def cycles(rig, clock: ManualClock, seconds: float, step: float) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)
        await rig.cycle()


async def test_a_webhook_that_must_fire_every_hour_is_idle_once_its_traffic_stops_and_resolves_when_it_returns(rig_factory):  # noqa: F811
    clock = ManualClock(START)
    world, ids = webhook_world(clock)
    rule = '[[polling.silent.rules]]\nscenario = "Typeform*"\nexpect_every = "1h"\n'
    rig = await rig_factory(world, [("Acme", ids["org"].id, ids["token"])], extra=rule)
    await rig.cycle()
    await cycles(rig, clock, 3 * 3600, 600)  # the first day of data: expect_every needs no history
    assert rig.events("scenario_idle") == []
    world.set_behaviour(ids["leads"].id, traffic=0)  # the client's form broke
    await cycles(rig, clock, 3 * 3600, 600)
    (idle,) = rig.events("scenario_idle")
    assert idle["scenario_id"] == ids["leads"].id and '"basis":"expect_every"' in idle["payload_json"]
    world.set_behaviour(ids["leads"].id, traffic=1)
    await cycles(rig, clock, 3600, 600)
    ends = rig.events("scenario_idle")[1:]
    assert len(ends) == 1 and '"resolution":"ran"' in ends[0]["payload_json"]


async def test_a_webhook_with_a_weekly_rhythm_is_learnt_quiet_at_night_and_weekends_and_idle_in_office_hours(rig_factory):  # noqa: F811
    clock = ManualClock(START)  # a Monday afternoon
    world, ids = webhook_world(clock, rhythm=True, interval_s=600)
    rig = await rig_factory(world, [("Acme", ids["org"].id, ids["token"])])
    await rig.cycle()
    await cycles(rig, clock, 9 * 86400, 3600)  # nine days, a weekend included: no alarm
    assert rig.events("scenario_idle") == []
    # Wednesday 15:13 UTC: traffic stops in office hours (about 12 runs an hour).
    world.set_behaviour(ids["leads"].id, traffic=0)
    stopped = clock.time()
    await cycles(rig, clock, 3 * 3600, 900)
    (idle,) = rig.events("scenario_idle")
    assert idle["detected_at"] - stopped <= 2 * 3600
    assert '"basis":"learnt"' in idle["payload_json"]
    row = rig.store.read_sync(lambda db: db["scenarios"].get(ids["leads"].id))
    assert len(row["activity_json"]) < 4096  # a few KB per scenario at most


async def test_a_queue_that_keeps_rising_while_its_scenario_does_not_run_is_a_backlog_early(rig_factory):  # noqa: F811
    clock = ManualClock(START)
    world, ids = webhook_world(clock, interval_s=120)
    rig = await rig_factory(world, [("Acme", ids["org"].id, ids["token"])], extra="[polling]\nusage_interval_s = 60")
    await rig.cycle()
    await cycles(rig, clock, 1800, 300)
    world.set_behaviour(ids["leads"].id, stalled=True)  # data arrives, the scenario does not run
    await cycles(rig, clock, 1800, 300)
    (early,) = rig.events("hook_backlog")
    assert '"rising":true' in early["payload_json"]
    assert world.hooks[ids["hook"].id].queue_count < 0.8 * 1000  # long before the 80 % alert
    world.set_behaviour(ids["leads"].id, stalled=False)
    await cycles(rig, clock, 1800, 300)
    assert len(rig.events("hook_backlog")) == 2 and '"recovered":true' in rig.events("hook_backlog")[1]["payload_json"]



@pytest.mark.parametrize(
    ("runs_seen_at_each_move", "step", "credited"),
    [
        ([0, 0, 0], 5, [1, 1, 1]),  # logs never read: one run a move
        ([12, 24], 60, [12, 12]),  # logs read in time: their counts
        ([0, 12, 12], 60, [1, 11, 1]),  # the first run credited ahead is taken off the logs' count
        ([0, 0, 1, 30], 60, [1, 1, 1, 27]),  # in all, what the logs say: 30
        ([0, 200], 5, [1, 5]),  # logs read hours late: not all credited to this listing
    ],
)
def test_runs_are_counted_from_the_logs_without_counting_twice(runs_seen_at_each_move, step, credited):
    act = Activity(since=T0, folded_to=T0)
    assert [act.count_runs(n, step) for n in runs_seen_at_each_move] == credited


# --- volume anomalies: the detector -------------------------------------------------------------


def series(values_by_weeks_ago: dict[int, float], day: str = "2026-09-20", value: float | None = None) -> dict[str, float]:
    """Operations by ISO date: ``day`` (the one judged) and the same weekday ``w`` weeks before."""
    d = date.fromisoformat(day)
    out = {(d - timedelta(weeks=w)).isoformat(): v for w, v in values_by_weeks_ago.items()}
    if value is not None:
        out[day] = value
    return out


USUAL = {1: 480, 2: 455, 3: 505, 4: 470}

# (case, days, rule, direction or None, or "no verdict")
VOLUME_CASES = [
    ("a usual day", series(USUAL, value=470), VolumeRule(), None),
    ("a 90 % drop", series(USUAL, value=42), VolumeRule(), "drop"),
    ("a drop to nothing", series(USUAL, value=0), VolumeRule(), "drop"),
    ("half: under the factor of 3", series(USUAL, value=240), VolumeRule(), None),
    ("half, with a factor of 1.5", series(USUAL, value=240), VolumeRule(factor=1.5), "drop"),
    ("a spike of 4x", series(USUAL, value=1900), VolumeRule(), "spike"),
    ("a noisy series: a third is within its spread", series({1: 900, 2: 100, 3: 700, 4: 150}, value=120), VolumeRule(), None),
    ("two weeks of history: no verdict", series({1: 480, 2: 470}, value=0), VolumeRule(), "no verdict"),
    ("monthly: a median of 0, never", series({1: 0, 2: 0, 3: 0, 4: 0}, value=310), VolumeRule(), "no verdict"),
    ("a small scenario under min_ops", series({1: 20, 2: 22, 3: 18}, value=1), VolumeRule(), "no verdict"),
    ("check disabled", series(USUAL, value=42), VolumeRule(enabled=False), "no verdict"),
    ("the day judged is missing", series(USUAL), VolumeRule(), "no verdict"),
]


@pytest.mark.parametrize(("days", "rule", "expected"), [c[1:] for c in VOLUME_CASES], ids=[c[0] for c in VOLUME_CASES])
def test_volume_table(days, rule, expected):
    verdict = volume_verdict(days, "2026-09-20", rule)
    if expected == "no verdict":
        assert verdict is None
    else:
        assert verdict is not None and verdict.direction == expected


def test_a_verdict_carries_its_figures():
    verdict = volume_verdict(series(USUAL, value=42), "2026-09-20", VolumeRule())
    assert verdict is not None
    assert (verdict.value, verdict.median, verdict.mad, verdict.baseline) == (42, 475, 12.5, (480, 455, 505, 470))


def test_a_notices_last_14_days_end_at_the_day_judged_not_at_the_day_still_running():
    days = series(USUAL, value=42) | {f"2026-09-{d:02d}": 470.0 for d in range(7, 20)} | {"2026-09-21": 9.0}
    facts = volume_facts(volume_verdict(days, "2026-09-20", VolumeRule()), "2026-09-20", days)
    assert len(facts["days"]) == 14 and facts["days"][-1] == ["2026-09-20", 42]


def test_an_anomaly_opens_once_and_a_usual_day_ends_it():
    state = DailyOps()
    days = series(USUAL, value=42)
    first = volume_step(state, days, "2026-09-20", VolumeRule())
    assert first.fire and state.open_day == "2026-09-20"
    assert volume_step(state, days, "2026-09-20", VolumeRule()) == VolumeStep()  # judged once
    days["2026-09-21"] = 30
    days |= series(USUAL, day="2026-09-21")
    assert not volume_step(state, days, "2026-09-21", VolumeRule()).fire  # still low: no second
    days["2026-09-22"] = 470
    days |= series(USUAL, day="2026-09-22")
    end = volume_step(state, days, "2026-09-22", VolumeRule())
    assert end.resolved and end.episode_day == "2026-09-20" and state.open_day is None


def test_daily_operations_are_split_over_days_and_a_long_gap_is_not_covered():
    midnight = datetime(2026, 9, 21, tzinfo=UTC).timestamp()
    d = DailyOps()
    d.observe(midnight - 600, 100, 0)
    assert d.observe(midnight + 300, 115, 900)  # a new day: credited at once
    assert d.ops == {"2026-09-20": 10.0, "2026-09-21": 5.0}
    assert not d.observe(midnight + 600, 120, 300)  # within 15 minutes: later
    d.observe(midnight + 9 * 3600, 500, 8 * 3600)  # makewatch was stopped 8 h: not covered
    assert d.ops["2026-09-21"] == 5.0 and d.ops_mark == 500
    d.observe(midnight + 10 * 3600, 20, 3600)  # a new billing period: the counter restarted
    assert d.ops["2026-09-21"] == 25.0
    assert d.complete() == {}  # no day watched for 90 % of it


def test_an_organizations_days_fill_the_gaps_and_stop_before_a_day_still_running_somewhere():
    assert last_complete_day_everywhere(datetime(2026, 9, 21, 11, 0, tzinfo=UTC).timestamp()) == "2026-09-19"
    assert last_complete_day_everywhere(datetime(2026, 9, 21, 13, 0, tzinfo=UTC).timestamp()) == "2026-09-20"
    usage = [UsageDay(date(2026, 9, 17), 10, 0, 1000), UsageDay(date(2026, 9, 19), 5, 0, 800), UsageDay(date(2026, 9, 21), 9, 0, 0)]
    assert usage_days(usage, "2026-09-20") == {"2026-09-17": 10, "2026-09-18": 0, "2026-09-19": 8, "2026-09-20": 0}


# --- volume anomalies: end to end ---------------------------------------------------------------


def volume_world(clock: ManualClock) -> tuple[World, dict[str, Any]]:
    world = World(seed=9, clock=clock)
    org = world.add_organization(name="Acme", plan="core", operations_limit=10**7)
    team = world.add_team(org.id, name="Ops")
    ids: dict[str, Any] = {"org": org, "team": team, "token": world.add_token(org_ids=[org.id])}
    ids["sync"] = world.add_scenario(team.id, name="Invoices sync", interval_s=900, operations_per_run=5, first_run_at=clock.time() + 60)
    ids["monthly"] = world.add_scenario(team.id, name="Month end", interval_s=30 * 86400, schedule="monthly", operations_per_run=300, first_run_at=clock.time() + 3 * 86400)
    ids["nightly"] = world.add_scenario(team.id, name="Nightly <export>", interval_s=86400, schedule="daily", operations_per_run=40, first_run_at=clock.time() + 12 * 3600)
    return world, ids


async def test_a_90_percent_drop_is_one_anomaly_per_scenario_and_organization_and_the_next_usual_day_resolves_it(rig_factory):  # noqa: F811
    clock = ManualClock(START - 22 * 86400)  # three weeks and a day before a Monday afternoon
    world, ids = volume_world(clock)
    rig = await rig_factory(world, [("Acme", ids["org"].id, ids["token"])], extra="[polling]\nusage_interval_s = 3600")
    await rig.cycle()
    await cycles(rig, clock, 22 * 86400, 3 * 3600)  # 480 operations a day, every day
    assert rig.events("volume_anomaly") == []
    world.set_behaviour(ids["sync"].id, volume=0.1)  # Monday 14:13: runs use 1 operation, not 5
    world.set_behaviour(ids["nightly"].id, stalled=True)  # and the nightly export stops
    await cycles(rig, clock, 48 * 3600, 3 * 3600)  # Tuesday is judged on Wednesday (at 12:00 UTC for the org)
    assert_digest_shows_the_silent_failures(rig, clock.time())
    fired = rig.events("volume_anomaly")
    scopes = sorted(json.loads(e["payload_json"])["scope"] for e in fired)
    assert scopes == ["organization", "scenario"]
    scenario = next(json.loads(e["payload_json"]) for e in fired if e["scenario_id"] == ids["sync"].id)
    assert scenario["direction"] == "drop" and scenario["operations"] == 96 and scenario["median"] == 480
    assert len(scenario["days"]) == 14
    world.set_behaviour(ids["sync"].id, volume=1.0)
    await cycles(rig, clock, 2 * 86400, 3 * 3600)
    ends = [json.loads(e["payload_json"]) for e in rig.events("volume_anomaly")[2:]]
    assert sorted(e["scope"] for e in ends) == ["organization", "scenario"] and all(e["recovered"] for e in ends)
    assert not any(e["scenario_id"] == ids["monthly"].id for e in rig.events("volume_anomaly"))


def assert_digest_shows_the_silent_failures(rig, now: float) -> None:
    digest = rig.store.read_sync(
        lambda db: build_digest(db, period_start=now - 86400, period_end=now + 1, timezone="Europe/Paris", organizations=None, now=now)
    )
    (org,) = digest.organizations
    kinds = sorted((f.kind, f.scenario_name or "") for f in org.silent)
    assert kinds == [("scenario_overdue", "Nightly <export>"), ("volume_anomaly", ""), ("volume_anomaly", "Invoices sync")]
    assert all(f.open_now for f in org.silent) and not org.quiet
    drop = next(f for f in org.silent if f.scenario_name == "Invoices sync")
    assert len(drop.bars) == 14 and drop.bars[-1].operations == 96 and drop.bars[-3].ratio == 1.0
    _, text, html = Renderer().render_digest(digest)
    assert "Silent failures (3 open)" in text and "Silent failures (3 open)" in html
    assert "Invoices sync used 96 operations on Tue 22 Sep: 80 % below its usual Tuesday (median 480)" in text
    assert "Nightly &lt;export&gt; is overdue" in html and "<export>" not in html
    assert html.count('data-sparkline="1"') == 3 and "▁" in text


# --- bench/silent.py's scoring ------------------------------------------------------------------


def test_the_silent_benchmark_scores_catches_delays_and_false_alarms_from_the_events():
    bench = load_bench("silent")
    inj = [
        bench.Injection("scenario_overdue", 1, "A", on=1000.0, off=50_000.0, knob={}, start=1600.0, usual_gap_s=900.0),
        bench.Injection("scenario_idle", 2, "B", on=1000.0, off=90_000.0, knob={}, start=1000.0, usual_gap_s=300.0),
        bench.Injection("volume_anomaly", 3, "C", on=0.0, off=172_800.0, knob={}, start=0.0, usual_gap_s=86400.0),
    ]
    opening, ending = json.dumps({}), json.dumps({"recovered": True})
    events = [
        {"kind": "scenario_overdue", "scenario_id": 1, "detected_at": 3400.0, "payload_json": opening},
        {"kind": "scenario_overdue", "scenario_id": 1, "detected_at": 9000.0, "payload_json": ending},
        {"kind": "volume_anomaly", "scenario_id": 2, "detected_at": 95_000.0, "payload_json": opening},  # explained by B's stop
        {"kind": "scenario_idle", "scenario_id": 9, "detected_at": 5000.0, "payload_json": opening},  # nothing injected: false
        {"kind": "volume_anomaly", "scenario_id": None, "detected_at": 7000.0, "payload_json": opening},  # the organization: false
    ]
    false = bench.score(inj, events)
    assert [(f["kind"], f["scenario_id"]) for f in false] == [("scenario_idle", 9), ("volume_anomaly", None)]
    assert [i.detected_at for i in inj] == [3400.0, None, None]
    res = bench.Result(bench.QUICK, 1, inj, false, requests=0, wall_s=0.0)
    by_kind = res.by_kind = bench.summarise(res)
    assert by_kind["scenario_overdue"]["caught"] == 1 and by_kind["scenario_overdue"]["delay_p50_s"] == 1800.0
    assert by_kind["scenario_overdue"]["delay_over_gap_p50"] == 2.0
    assert by_kind["scenario_idle"]["caught"] == 0 and by_kind["scenario_idle"]["false_alarms"] == 1
    table = bench.render(res, "python bench/silent.py --quick")
    assert "scenario_overdue          1       1     30 min" in table and "missed: scenario_idle B" in table


async def test_the_behaviour_knobs_are_set_over_the_admin_endpoint(start_sim):
    clock = ManualClock(START)
    world, ids = silent_world(clock)
    sim = await start_sim(world)
    admin = sim.base_url.removesuffix("/api/v2") + f"/_sim/scenarios/{ids['sync'].id}/behaviour"
    async with sim.session.post(admin, json={"stalled": True, "volume": 0.5}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["scenario"]["iswaiting"] is True and world.scenarios[ids["sync"].id].volume == 0.5
    for bad in ({"stalld": True}, {"traffic": -1}):
        async with sim.session.post(admin, json=bad) as resp:
            assert resp.status == 400
    clock.advance(3600)
    world.advance()  # stalled: its runs at +5, +20, +35, +50 min do not happen; Month end's at +10 min does
    assert world.scenarios[ids["sync"].id].operations == 0 and world.scenarios[ids["monthly"].id].operations > 0
