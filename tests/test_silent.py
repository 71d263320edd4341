"""Silent failures (issue 15): the overdue detector as a table, then end to end against the
simulator (a stalled scheduled scenario, found from the inventory alone)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import START
from pydantic import ValidationError
from test_alerts_e2e import make_stack  # noqa: F401 (the fixture)
from test_poller import rig_factory  # noqa: F401 (the fixture)

from watcher.clock import ManualClock
from watcher.config import SilentSettings
from watcher.make.models import Scenario
from watcher.silent import OverdueRule, overdue_step
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
