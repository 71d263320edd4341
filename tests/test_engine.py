"""The alert decision engine as decision tables: pure functions, plain-float clocks, no I/O."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from alerts.engine import (
    FIRING,
    PENDING,
    REASONS,
    RESOLVED,
    AlertState,
    Decision,
    FloodState,
    Planned,
    decide,
    sample_of,
    tick,
)
from alerts.fingerprint import fingerprint, normalize_message
from alerts.policy import AlertsSettings, Policy, RouteSettings
from alerts.silences import Silence

T0 = 1_790_000_000.0
HOUR = 3600.0
VALIDATION_2 = "Validation failed for 2 parameter(s)."


def event(
    key: str,
    kind: str = "execution_error",
    *,
    t: float = T0,
    org_id: int = 1,
    scenario_id: int | None = 10,
    team_id: int | None = 5,
    severity: str | None = None,
    message: str = VALIDATION_2,
    name: str = "DataError",
    org: str = "Acme",
    scenario: str = "Sync CRM",
    **payload: Any,
) -> dict[str, Any]:
    """An ``events`` row; detected when it occurred unless ``detected_at`` is given."""
    body: dict[str, Any] = {"organization": org, "scenario_name": scenario}
    if kind in ("execution_error", "execution_warning"):
        body |= {"error_name": name, "error_message": message}
    detected_at = payload.pop("detected_at", t)
    body |= payload
    row: dict[str, Any] = {
        "key": key,
        "kind": kind,
        "org_id": org_id,
        "team_id": team_id,
        "scenario_id": scenario_id,
        "occurred_at": t,
        "detected_at": detected_at,
        "payload": body,
    }
    if severity is not None:
        row["severity"] = severity
    return row


def errors(n: int, *, start: float = T0, every_s: float = 1.0, prefix: str = "e", **kw: Any):
    return [event(f"{prefix}{i}", t=start + i * every_s, **kw) for i in range(n)]


def make_policy(*, routes: Sequence[RouteSettings] = (), **alerts: Any) -> Policy:
    alerts.setdefault("default_channels", ("ops",))
    return Policy(alerts=AlertsSettings(**alerts), routes=tuple(routes))


@dataclass
class Caller:
    """Plays the caller: keeps what a Decision says to persist, as the store would."""

    policy: Policy = field(default_factory=make_policy)
    silences: list[Silence] = field(default_factory=list)
    alerts: dict[str, AlertState] = field(default_factory=dict)
    flood: dict[str, FloodState] = field(default_factory=dict)
    sent: list[Planned] = field(default_factory=list)

    def feed(self, events: Sequence[dict[str, Any]], now: float) -> Decision:
        return self._apply(decide(events, self.alerts, self.silences, self.policy, now, self.flood))

    def tick(self, now: float) -> Decision:
        return self._apply(tick(self.alerts, self.silences, self.policy, now, self.flood))

    def _apply(self, decision: Decision) -> Decision:
        given = [*decision.event_reasons.values(), *(a.reason for a in decision.alerts)]
        given += [n.reason for n in decision.notifications]
        assert set(given) <= set(REASONS) | {""}, given
        for alert in decision.alerts:
            self.alerts[alert.fingerprint] = alert
        self.flood.update(decision.flood)
        self.sent.extend(decision.notifications)
        return decision

    def only(self) -> AlertState:
        assert len(self.alerts) == 1, list(self.alerts)
        return next(iter(self.alerts.values()))

    def phases(self) -> list[tuple[str, str]]:
        return [(n.phase, n.channel) for n in self.sent]


# --------------------------------------------------------------------------------------------
# Fingerprints


SAME = [
    ("Validation failed for 2 parameter(s).", "Validation failed for 3 parameter(s)."),
    ("Record 5f2b1c9e8a7d6b5c4a3f2e1d not found", "Record 64a0ffee0123456789abcdef not found"),
    (
        "Row 550e8400-e29b-41d4-a716-446655440000 is locked",
        "Row 123e4567-e89b-12d3-a456-426614174000 is locked",
    ),
    ("Rate limited until 2026-09-21T14:13:20Z", "Rate limited until 2026-09-22T08:00:00.123+02:00"),
    ('Invalid value "abc" for field "email"', 'Invalid value "x y z" for field "phone"'),
    ("User ana@example.com does not exist", "User bob.smith+crm@corp.example.org does not exist"),
    (
        "GET https://api.example.com/v1/items/123 returned 500",
        "GET https://api.example.com/v1/items/456?expand=1 returned 502",
    ),
    ("Timeout   after\n30 s", "timeout after 45 s"),
    ("Address 0xDEADBEEF is invalid", "Address 0x1F is invalid"),
    ("Value 'foo' is not allowed", "Value 'bar-baz' is not allowed"),
    ("Cost 3.50 EUR exceeds 1,000.00", "Cost 12.75 EUR exceeds 2,500.00"),
]
DIFFERENT = [
    ("Validation failed for 2 parameter(s).", "Connection refused by 10.0.0.1"),
    ("The record was not found", "The record was locked"),
    ("Invalid access token", "Invalid refresh token"),
    ("User doesn't exist", "User isn't allowed"),
]


BY_MESSAGE = ("org", "scenario", "error_name", "error_message")


@pytest.mark.parametrize(("a", "b"), SAME)
def test_messages_that_differ_only_in_values_share_a_fingerprint(a: str, b: str) -> None:
    assert normalize_message(a) == normalize_message(b)
    assert fingerprint(event("1", message=a), BY_MESSAGE) == fingerprint(
        event("2", message=b), BY_MESSAGE
    )


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_grouped_by_message_different_messages_have_different_fingerprints(a: str, b: str) -> None:
    assert fingerprint(event("1", message=a), BY_MESSAGE) != fingerprint(
        event("2", message=b), BY_MESSAGE
    )


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_by_default_one_error_name_worded_differently_is_one_alert(a: str, b: str) -> None:
    assert fingerprint(event("1", message=a)) == fingerprint(event("2", message=b))


def test_without_error_name_a_scenario_has_one_execution_alert() -> None:
    by_scenario = ("org", "scenario")
    assert fingerprint(event("1", name="DataError"), by_scenario) == fingerprint(
        event("2", name="ConnectionError"), by_scenario
    )
    assert fingerprint(event("3", scenario_id=11), by_scenario) != fingerprint(
        event("4"), by_scenario
    )


def test_group_by_must_keep_org_and_scenario_and_know_its_labels() -> None:
    with pytest.raises(ValueError, match="must include 'scenario'"):
        AlertsSettings(group_by=("org", "error_name"))
    with pytest.raises(ValueError, match="unknown label 'team'"):
        AlertsSettings(group_by=("org", "scenario", "team"))


def test_one_connection_error_worded_three_ways_is_one_alert_keeping_each_wording() -> None:
    caller = Caller()
    wordings = ["Connection refused", "Connection reset by peer", "Timed out connecting"]
    batch = [
        event(f"c{i}", t=T0 + i, name="ConnectionError", message=wordings[i % 3])
        for i in range(9)
    ]
    caller.feed(batch, now=T0 + 10)
    alert = caller.only()
    assert alert.count == 9
    assert {s["error_message"] for s in alert.samples} == set(wordings)
    fired = caller.tick(T0 + 40).notifications
    assert [n.phase for n in fired] == ["firing"]
    done = caller.feed([event("ok", "execution_recovered", t=T0 + 50)], now=T0 + 50)
    assert [n.phase for n in done.notifications] == ["resolved"]


def test_the_error_name_scenario_and_organization_tell_execution_errors_apart() -> None:
    base = fingerprint(event("1"))
    assert fingerprint(event("2", name="ConnectionError")) != base
    assert fingerprint(event("3", scenario_id=11)) != base
    assert fingerprint(event("4", org_id=2)) != base
    assert fingerprint(event("5", kind="execution_warning")) != base


def test_a_fingerprint_is_a_readable_prefix_and_a_short_stable_hash() -> None:
    fp = fingerprint(event("1"))
    prefix, digest = fp.rsplit(":", 1)
    assert prefix == "exec:1:10"
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert fp == fingerprint(event("other key", t=T0 + 999))
    assert fingerprint(event("q", "quota", scenario_id=None)).startswith("quota:1:")
    assert fingerprint(event("h", "hook_backlog", hook_id=7)).startswith("hook:1:7:")
    assert fingerprint(event("d", "incomplete_executions")).startswith("dlq:1:10:")
    assert fingerprint(event("r", "execution_recovered")) == "exec:1:10:*"


def test_the_state_kinds_of_a_scenario_share_one_fingerprint() -> None:
    kinds = ("scenario_deactivated", "scenario_paused", "scenario_reactivated")
    assert len({fingerprint(event(k, k)) for k in kinds}) == 1


def test_watcher_health_problems_and_hooks_are_told_apart_by_their_payload() -> None:
    a = fingerprint(event("1", "watcher_health", problem="token rejected"))
    b = fingerprint(event("2", "watcher_health", problem="org unreachable"))
    assert a != b and a.startswith("health:1:")
    assert fingerprint(event("3", "hook_backlog", hook_id=1)) != fingerprint(
        event("4", "hook_backlog", hook_id=2)
    )


# --------------------------------------------------------------------------------------------
# Dedup and grouping


def test_it_counts_events_with_one_fingerprint_as_one_alert() -> None:
    caller = Caller()
    caller.feed(errors(3), now=T0 + 5)
    caller.feed([event("e9", t=T0 + 6, message="Validation failed for 7 parameter(s).")], T0 + 7)
    alert = caller.only()
    assert alert.count == 4
    assert alert.first_seen == T0 and alert.last_seen == T0 + 6
    assert alert.payload["error_message"] == "Validation failed for 7 parameter(s)."
    assert len(alert.samples) == 4


def test_different_errors_of_one_scenario_are_separate_alerts() -> None:
    caller = Caller()
    caller.feed([event("a"), event("b", name="ConnectionError", message="Connection refused")], now=T0)
    assert sorted(a.count for a in caller.alerts.values()) == [1, 1]


def test_it_keeps_only_the_last_five_samples() -> None:
    caller = Caller()
    caller.feed(errors(8), now=T0 + 10)
    alert = caller.only()
    assert len(alert.samples) == 5
    assert alert.samples[-1] == sample_of(alert.payload)


def test_a_sample_keeps_what_differs_per_occurrence_not_the_whole_payload() -> None:
    caller = Caller()
    caller.feed(
        [event("a", execution_id="x1", timestamp="2026-09-21T14:13:20Z", run_url="https://eu1.make.com/r/x1")],
        now=T0,
    )
    alert = caller.only()
    assert alert.samples == [
        {
            "timestamp": "2026-09-21T14:13:20Z",
            "execution_id": "x1",
            "error_name": "DataError",
            "error_message": VALIDATION_2,
        }
    ]
    assert alert.payload["scenario_name"] == "Sync CRM"  # the rest is the alert's, once


def test_a_burst_read_at_once_sends_one_notice_with_its_count_after_group_wait() -> None:
    caller = Caller()
    burst = errors(200, every_s=0.3, detected_at=T0 + 60)  # 200 failures in 60 s, one read
    decision = caller.feed(burst, now=T0 + 60)
    assert decision.notifications == []
    assert caller.only().state == PENDING
    assert set(decision.event_reasons.values()) == {"waiting for group", "grouped"}
    assert caller.tick(T0 + 89).notifications == []

    fired = caller.tick(T0 + 90).notifications
    assert [(n.phase, n.reason, n.count) for n in fired] == [("firing", "first", 200)]
    assert caller.only().state == FIRING


def test_a_burst_streamed_over_a_minute_sends_one_notice_with_count_200() -> None:
    caller = Caller(policy=make_policy(group_wait_s=60))
    burst = errors(200, every_s=0.3)
    for batch_end in range(10, 70, 10):  # read every 10 s
        batch = [
            e | {"detected_at": T0 + batch_end}
            for e in burst
            if batch_end - 10 <= e["occurred_at"] - T0 < batch_end
        ]
        assert caller.feed(batch, now=T0 + batch_end).notifications == []
    assert caller.tick(T0 + 69).notifications == []  # opened at T0 + 10
    fired = caller.tick(T0 + 70).notifications
    assert [(n.phase, n.count) for n in fired] == [("firing", 200)]
    later = caller.feed(errors(50, start=T0 + 71, prefix="late"), now=T0 + 130)
    assert later.notifications == []
    assert set(later.event_reasons.values()) == {"within repeat interval"}


def test_a_critical_alert_skips_group_wait() -> None:
    caller = Caller()
    decision = caller.feed([event("d1", "scenario_deactivated")], now=T0)
    assert [(n.phase, n.reason, n.severity) for n in decision.notifications] == [
        ("firing", "first", "critical")
    ]
    assert decision.event_reasons == {"d1": "first"}


def test_a_critical_alert_waits_too_when_the_policy_says_so() -> None:
    caller = Caller(policy=make_policy(critical_skips_group_wait=False))
    assert caller.feed([event("d1", "scenario_deactivated")], now=T0).notifications == []
    assert len(caller.tick(T0 + 30).notifications) == 1


def test_a_late_read_fires_at_once_when_group_wait_already_passed_since_detection() -> None:
    caller = Caller()
    decision = caller.feed([event("e1", detected_at=T0)], now=T0 + 45)
    assert [n.reason for n in decision.notifications] == ["first"]


# --------------------------------------------------------------------------------------------
# Repeat interval and escalation


def _fired(caller: Caller) -> None:
    caller.feed(errors(3), now=T0)
    assert len(caller.tick(T0 + 30).notifications) == 1


def test_it_does_not_realert_within_repeat_interval() -> None:
    caller = Caller()
    _fired(caller)
    decision = caller.feed(errors(5, start=T0 + 600, prefix="more"), now=T0 + 600)
    assert decision.notifications == []
    assert set(decision.event_reasons.values()) == {"within repeat interval"}
    assert caller.tick(T0 + 4 * HOUR).notifications == []
    assert caller.only().count_since_notice == 5


def test_it_realerts_after_repeat_interval_with_count_since_notice() -> None:
    caller = Caller()
    _fired(caller)
    caller.feed(errors(5, start=T0 + 600, prefix="more"), now=T0 + 600)
    repeat = caller.tick(T0 + 30 + 4 * HOUR).notifications
    assert [(n.phase, n.reason, n.count, n.count_since_notice) for n in repeat] == [
        ("repeat", "repeat interval elapsed", 8, 5)
    ]
    assert caller.only().count_since_notice == 0


def test_an_event_after_repeat_interval_realerts_at_once() -> None:
    caller = Caller()
    _fired(caller)
    decision = caller.feed([event("late", t=T0 + 5 * HOUR)], now=T0 + 5 * HOUR)
    assert [n.phase for n in decision.notifications] == ["repeat"]
    assert decision.event_reasons == {"late": "repeat interval elapsed"}


def test_it_does_not_realert_after_repeat_interval_when_nothing_new_happened() -> None:
    caller = Caller()
    _fired(caller)
    assert caller.tick(T0 + 10 * HOUR).notifications == []
    assert caller.only().state == FIRING


def test_a_severity_escalation_notifies_after_group_interval() -> None:
    caller = Caller()
    caller.feed([event("q75", "quota", severity="warning", scenario_id=None)], now=T0)
    assert len(caller.tick(T0 + 30).notifications) == 1
    decision = caller.feed(
        [event("q90", "quota", severity="critical", scenario_id=None, t=T0 + 60)], now=T0 + 60
    )
    assert decision.notifications == []
    assert decision.event_reasons == {"q90": "within group interval"}
    escalated = caller.tick(T0 + 330).notifications
    assert [(n.phase, n.reason, n.severity) for n in escalated] == [
        ("firing", "escalated", "critical")
    ]


# --------------------------------------------------------------------------------------------
# Resolution


def test_a_recovery_resolves_the_alert_and_notifies_once() -> None:
    caller = Caller()
    _fired(caller)
    other = event("other", name="ConnectionError", message="Connection refused")
    caller.feed([other], now=T0 + 31)
    caller.tick(T0 + 61)
    decision = caller.feed([event("ok", "execution_recovered", t=T0 + 100)], now=T0 + 100)
    assert sorted(n.phase for n in decision.notifications) == ["resolved", "resolved"]
    assert decision.event_reasons == {"ok": "resolved"}
    assert {a.state for a in caller.alerts.values()} == {RESOLVED}
    again = caller.feed([event("ok2", "execution_recovered", t=T0 + 200)], now=T0 + 200)
    assert again.notifications == []
    assert again.event_reasons == {"ok2": "nothing to resolve"}
    assert caller.tick(T0 + 10 * HOUR).notifications == []


def test_errors_that_recovered_before_their_first_notice_are_still_told_once() -> None:
    caller = Caller()
    caller.feed(errors(2), now=T0)
    decision = caller.feed([event("ok", "execution_recovered", t=T0 + 20)], now=T0 + 20)
    assert decision.notifications == []  # the group wait is not over
    assert caller.only().reason == "recovered before notice"
    fired = caller.tick(T0 + 30).notifications
    assert [(n.phase, n.count) for n in fired] == [("firing", 2)]
    assert fired[0].payload["recovered_at"] == T0 + 20
    alert = caller.only()
    assert alert.state == RESOLVED and alert.resolved_at == T0 + 30
    # It was the resolution: nothing more, not a "resolved" notice, not a repeat.
    assert caller.tick(T0 + 10 * HOUR).notifications == []
    again = caller.feed([event("ok2", "execution_recovered", t=T0 + 100)], now=T0 + 100)
    assert again.notifications == [] and again.event_reasons == {"ok2": "nothing to resolve"}


def test_a_failure_and_its_recovery_in_one_read_notify_once() -> None:
    caller = Caller()
    decision = caller.feed(
        [event("e1", t=T0), event("ok", "execution_recovered", t=T0 + 1)], now=T0 + 60
    )
    assert [(n.phase, n.reason) for n in decision.notifications] == [("firing", "first")]
    assert decision.notifications[0].payload["recovered_at"] == T0 + 1
    assert decision.event_reasons == {"e1": "first", "ok": "resolved"}
    assert caller.only().state == RESOLVED


def test_a_scenario_failing_every_other_run_is_one_alert_counting_its_failures() -> None:
    caller = Caller()
    for i in range(3):  # error, success, error, success, error within the group wait
        caller.feed([event(f"e{i}", t=T0 + 10 * i)], now=T0 + 10 * i)
        caller.feed([event(f"ok{i}", "execution_recovered", t=T0 + 10 * i + 5)], now=T0 + 10 * i + 5)
    fired = caller.tick(T0 + 30).notifications
    assert [(n.phase, n.count) for n in fired] == [("firing", 3)]
    assert fired[0].payload["recovered_at"] == T0 + 25
    assert caller.only().state == RESOLVED


def test_a_failure_after_its_recovery_but_before_the_notice_is_still_failing() -> None:
    caller = Caller()
    caller.feed([event("e1", t=T0)], now=T0)
    caller.feed([event("ok", "execution_recovered", t=T0 + 5)], now=T0 + 5)
    caller.feed([event("e2", t=T0 + 10)], now=T0 + 10)
    fired = caller.tick(T0 + 30).notifications
    assert [(n.phase, n.count) for n in fired] == [("firing", 2)]
    assert "recovered_at" not in fired[0].payload
    assert caller.only().state == FIRING


def test_a_silenced_execution_alert_that_recovered_resolves_silently() -> None:
    silence = Silence(id=1, matchers={"scenario_id": 10}, starts_at=T0 - 1, ends_at=T0 + HOUR)
    caller = Caller(silences=[silence])
    caller.feed(errors(2), now=T0)
    caller.feed([event("ok", "execution_recovered", t=T0 + 5)], now=T0 + 5)
    assert caller.tick(T0 + 60).notifications == []
    assert caller.only().state == RESOLVED


def test_a_state_alert_resolved_before_any_notice_stays_silent() -> None:
    caller = Caller(policy=make_policy(group_wait_s=60))
    caller.feed([event("q", "quota", scenario_id=None, threshold_pct=75)], now=T0)
    caller.feed(
        [event("q2", "quota", t=T0 + 5, scenario_id=None, recovered=True)], now=T0 + 5
    )
    assert caller.tick(T0 + 120).notifications == []
    assert caller.only().reason == "resolved before any notice"


def test_new_incomplete_executions_are_told_every_group_interval_not_every_repeat() -> None:
    caller = Caller(policy=make_policy(group_wait_s=0))
    caller.feed([event("d1", "incomplete_executions", dlq_count=1)], now=T0)
    assert [n.phase for n in caller.sent] == ["firing"]
    caller.feed([event("d2", "incomplete_executions", t=T0 + 60, dlq_count=2)], now=T0 + 60)
    assert [n.phase for n in caller.sent] == ["firing"]  # within group_interval_s (300 s)
    repeat = caller.tick(T0 + 300).notifications
    assert [(n.phase, n.count_since_notice) for n in repeat] == [("repeat", 1)]
    assert caller.tick(T0 + 900).notifications == []  # nothing new since


def test_a_recovery_older_than_the_newest_failure_is_stale() -> None:
    caller = Caller()
    _fired(caller)
    decision = caller.feed([event("ok", "execution_recovered", t=T0 - 5)], now=T0 + 40)
    assert decision.event_reasons == {"ok": "stale"}
    assert caller.only().state == FIRING


def test_a_new_failure_after_resolution_reopens_the_alert() -> None:
    caller = Caller()
    _fired(caller)
    caller.feed([event("ok", "execution_recovered", t=T0 + 40)], now=T0 + 40)
    decision = caller.feed([event("again", t=T0 + 1000)], now=T0 + 1000)
    alert = caller.only()
    assert (alert.state, alert.count, alert.episode) == (PENDING, 1, 2)
    assert decision.notifications == []
    fired = caller.tick(T0 + 1030).notifications
    assert [(n.phase, n.reason, n.count) for n in fired] == [("firing", "reopened", 1)]


def test_a_flapping_alert_is_told_again_then_resolves_after_a_quiet_group_interval() -> None:
    caller = Caller()
    _fired(caller)
    caller.feed([event("ok", "execution_recovered", t=T0 + 40)], now=T0 + 40)
    assert [n.phase for n in caller.sent] == ["firing", "resolved"]
    caller.feed([event("again", t=T0 + 50)], now=T0 + 50)
    # A new failure is news, even right after the resolution: told after its group wait.
    assert [(n.phase, n.reason) for n in caller.tick(T0 + 80).notifications] == [("firing", "reopened")]
    assert caller.only().flapping
    caller.feed([event("ok2", "execution_recovered", t=T0 + 90)], now=T0 + 90)
    assert caller.only().state == FIRING and caller.only().reason == "flapping"  # held
    caller.feed([event("again2", t=T0 + 100)], now=T0 + 100)
    assert caller.tick(T0 + 200).notifications == []  # a repeat waits a group interval...
    repeat = caller.tick(T0 + 380).notifications
    assert [(n.phase, n.count_since_notice) for n in repeat] == [("repeat", 1)]  # ...not 4 h
    caller.feed([event("ok3", "execution_recovered", t=T0 + 400)], now=T0 + 400)
    assert caller.tick(T0 + 650).notifications == []  # not quiet for a group interval yet
    done = caller.tick(T0 + 701).notifications
    assert [n.phase for n in done] == ["resolved"]
    alert = caller.only()
    assert alert.state == RESOLVED and not alert.flapping
    assert caller.tick(T0 + 10 * HOUR).notifications == []


def test_a_failure_long_after_the_resolution_is_not_flapping() -> None:
    caller = Caller()
    _fired(caller)
    caller.feed([event("ok", "execution_recovered", t=T0 + 40)], now=T0 + 40)
    caller.feed([event("again", t=T0 + 1000)], now=T0 + 1000)
    assert not caller.only().flapping
    caller.tick(T0 + 1030)
    caller.feed([event("ok2", "execution_recovered", t=T0 + 1040)], now=T0 + 1040)
    assert caller.only().state == RESOLVED



@pytest.mark.parametrize(
    ("opening", "closing"),
    [
        (event("x", "scenario_deactivated"), event("y", "scenario_reactivated", t=T0 + 5)),
        (event("x", "scenario_paused"), event("y", "scenario_unpaused", t=T0 + 5)),
        (
            event("x", "incomplete_executions", dlq_count=3),
            event("y", "incomplete_executions", t=T0 + 5, dlq_count=0),
        ),
        (
            event("x", "watcher_health", problem="token rejected"),
            event("y", "watcher_health", t=T0 + 5, problem="token rejected", recovered=True),
        ),
    ],
)
def test_each_kind_resolves_with_its_own_recovery_event(
    opening: dict[str, Any], closing: dict[str, Any]
) -> None:
    caller = Caller(policy=make_policy(group_wait_s=0))
    assert len(caller.feed([opening], now=T0).notifications) == 1
    decision = caller.feed([closing], now=T0 + 5)
    assert [n.phase for n in decision.notifications] == ["resolved"]
    assert caller.only().state == RESOLVED


def test_unpausing_does_not_resolve_a_deactivated_scenario() -> None:
    caller = Caller()
    caller.feed([event("x", "scenario_deactivated")], now=T0)
    decision = caller.feed([event("y", "scenario_unpaused", t=T0 + 5)], now=T0 + 5)
    assert decision.event_reasons == {"y": "nothing to resolve"}
    assert caller.only().state == FIRING


# --------------------------------------------------------------------------------------------
# Inhibition


def test_errors_of_a_deactivated_scenario_are_recorded_but_inhibited() -> None:
    caller = Caller()
    caller.feed([event("off", "scenario_deactivated")], now=T0)
    decision = caller.feed(errors(3, start=T0 + 1), now=T0 + 5)
    assert caller.tick(T0 + 60).notifications == []
    error_alert = caller.alerts[fingerprint(event("e0"))]
    assert (error_alert.count, error_alert.reason) == (3, "inhibited")
    assert [n.kind for n in caller.sent] == ["scenario_deactivated"]
    assert decision.event_reasons["e0"] == "waiting for group"
    other = caller.feed([event("z", scenario_id=99, t=T0 + 70)], now=T0 + 200)
    assert [n.scenario_id for n in other.notifications] == [99]


def test_after_reactivation_the_next_error_notifies() -> None:
    caller = Caller()
    caller.feed([event("off", "scenario_deactivated")], now=T0)
    caller.feed(errors(2, start=T0 + 1), now=T0 + 40)
    caller.feed([event("on", "scenario_reactivated", t=T0 + 100)], now=T0 + 100)
    assert caller.tick(T0 + 200).notifications == []  # nothing new since it was inhibited
    decision = caller.feed([event("e9", t=T0 + 300)], now=T0 + 300)
    assert [(n.kind, n.reason, n.count) for n in decision.notifications] == [
        ("execution_error", "first", 3)
    ]


# --------------------------------------------------------------------------------------------
# Silences


def silence(matchers: dict[str, Any], start: float = T0 - 10, end: float = T0 + HOUR) -> Silence:
    return Silence(id=1, matchers=matchers, starts_at=start, ends_at=end, reason="maintenance")


@pytest.mark.parametrize(
    "matchers",
    [
        {"scenario_id": 10},
        {"org": "acme"},
        {"org": "Ac*"},
        {"org": 1},
        {"org": "1"},
        {"kind": "execution_error"},
        {"kind": ["quota", "execution_error"]},
        {"error_contains": "VALIDATION failed"},
        {"org": "Acme", "scenario_id": 10, "error_contains": "parameter"},
    ],
)
def test_a_matching_silence_records_the_alert_without_notifying(matchers: dict[str, Any]) -> None:
    caller = Caller(silences=[silence(matchers)])
    decision = caller.feed(errors(2), now=T0 + 40)
    assert decision.notifications == []
    assert set(decision.event_reasons.values()) == {"silenced"}
    assert (caller.only().count, caller.only().reason) == (2, "silenced")


@pytest.mark.parametrize(
    "matchers",
    [
        {"scenario_id": 11},
        {"org": "Globex"},
        {"org": 2},
        {"kind": "quota"},
        {"error_contains": "timeout"},
        {"org": "Acme", "scenario_id": 11},
    ],
)
def test_a_silence_that_does_not_match_lets_the_notice_through(matchers: dict[str, Any]) -> None:
    caller = Caller(silences=[silence(matchers)])
    assert len(caller.feed(errors(2), now=T0 + 40).notifications) == 1


def test_a_silence_that_has_not_started_or_has_ended_does_not_apply() -> None:
    for window in ((T0 + 100, T0 + 200), (T0 - 200, T0 - 100)):
        caller = Caller(silences=[silence({"scenario_id": 10}, *window)])
        assert len(caller.feed(errors(1), now=T0 + 40).notifications) == 1


def test_when_a_silence_ends_a_still_failing_alert_is_told_once_then_as_usual() -> None:
    caller = Caller(silences=[silence({"scenario_id": 10}, end=T0 + 600)])
    caller.feed(errors(3), now=T0 + 40)
    ended = caller.tick(T0 + 700).notifications  # still failing: one notice says so
    assert [(n.phase, n.reason, n.count) for n in ended] == [("firing", "silence ended", 3)]
    assert ended[0].payload["silence_ended"]["reason"] == "maintenance"
    assert caller.tick(T0 + 800).notifications == []
    decision = caller.feed([event("after", t=T0 + 800)], now=T0 + 800)
    assert decision.notifications == []  # a repeat waits for the repeat interval


def test_a_silenced_alert_resolves_without_a_notice() -> None:
    caller = Caller()
    _fired(caller)
    caller.silences.append(silence({"scenario_id": 10}))
    decision = caller.feed([event("ok", "execution_recovered", t=T0 + 60)], now=T0 + 60)
    assert decision.notifications == []
    assert caller.only().state == RESOLVED


@pytest.mark.parametrize(
    ("matchers", "start", "end"),
    [({}, 0.0, 1.0), ({"scenario": 10}, 0.0, 1.0), ({"scenario_id": 10}, 5.0, 5.0)],
)
def test_a_silence_that_would_match_too_much_or_is_empty_is_refused(
    matchers: dict[str, Any], start: float, end: float
) -> None:
    with pytest.raises(ValueError):
        Silence(id=1, matchers=matchers, starts_at=start, ends_at=end)


def test_a_silence_is_read_from_its_row() -> None:
    row = {"id": 3, "matchers_json": '{"org": "Acme"}', "starts_at": 1, "ends_at": 2}
    assert Silence.from_row(row) == Silence(3, {"org": "Acme"}, 1.0, 2.0)


# --------------------------------------------------------------------------------------------
# Flood cap


def test_the_flood_cap_holds_back_notices_then_sends_one_summary_when_the_hour_ends() -> None:
    hour = (T0 // HOUR + 1) * HOUR  # the start of a clock hour
    caller = Caller(policy=make_policy(group_wait_s=0, max_per_hour=2))
    for sid in range(1, 6):
        caller.feed([event(f"s{sid}", scenario_id=sid, t=hour + sid)], now=hour + sid)
    assert [n.scenario_id for n in caller.sent] == [1, 2]
    capped = caller.feed([event("s6", scenario_id=3, t=hour + 10)], now=hour + 10)
    assert capped.event_reasons == {"s6": "flood-capped"}
    assert caller.alerts[fingerprint(event("x", scenario_id=3))].reason == "flood-capped"
    held = caller.flood["ops"].held
    assert [(i["scenario_id"], i["count"]) for i in held] == [(3, 2), (4, 1), (5, 1)]
    assert caller.tick(hour + HOUR - 1).notifications == []

    summary = caller.tick(hour + HOUR + 1).notifications
    assert [(n.phase, n.kind, n.channel) for n in summary] == [("summary", "summary", "ops")]
    assert [(i["kind"], i["scenario_id"], i["count"]) for i in summary[0].items] == [
        ("execution_error", 3, 2),
        ("execution_error", 4, 1),
        ("execution_error", 5, 1),
    ]
    assert caller.flood["ops"] == FloodState(hour_start=hour + HOUR)
    assert caller.tick(hour + HOUR + 2).notifications == []  # they count as told


def test_a_per_channel_cap_overrides_the_default_and_zero_means_no_cap() -> None:
    policy = make_policy(
        group_wait_s=0,
        max_per_hour=1,
        max_per_hour_by_channel={"audit": 0},
        default_channels=("ops", "audit"),
    )
    caller = Caller(policy=policy)
    for sid in (1, 2, 3):
        caller.feed([event(f"s{sid}", scenario_id=sid)], now=T0 + sid)
    assert caller.phases() == [("firing", "ops"), ("firing", "audit")] + [("firing", "audit")] * 2
    assert "audit" not in caller.flood


def test_a_resolved_notice_beyond_the_cap_goes_into_the_summary_once() -> None:
    hour = (T0 // HOUR + 1) * HOUR
    caller = Caller(policy=make_policy(group_wait_s=0, max_per_hour=1))
    caller.feed([event("e1", t=hour)], now=hour)
    decision = caller.feed([event("ok", "execution_recovered", t=hour + 5)], now=hour + 5)
    assert decision.notifications == []
    assert caller.only().reason == "flood-capped"
    summary = caller.tick(hour + HOUR).notifications
    assert [i["phase"] for i in summary[0].items] == ["resolved"]
    assert caller.tick(hour + HOUR + 5).notifications == []


# --------------------------------------------------------------------------------------------
# Idempotency, determinism, purity


def test_an_event_key_counts_once_in_a_batch() -> None:
    caller = Caller()
    batch = errors(3)
    caller.feed(batch + copy.deepcopy(batch), now=T0)
    assert caller.only().count == 3


def test_events_read_back_as_processed_change_nothing() -> None:
    caller = Caller()
    batch = errors(3)
    first = caller.feed(batch, now=T0)
    processed = [e | {"processed_at": T0} for e in batch]
    again = caller.feed(processed, now=T0)
    assert again.alerts == [] and again.notifications == []
    assert set(again.event_reasons) == set(first.event_reasons)
    assert set(again.event_reasons.values()) == {"already processed"}
    assert caller.only().count == 3


def test_a_tick_repeated_at_the_same_time_plans_nothing_new() -> None:
    caller = Caller()
    caller.feed(errors(3), now=T0)
    assert len(caller.tick(T0 + 30).notifications) == 1
    again = caller.tick(T0 + 30)
    assert again == Decision()


def test_the_decision_does_not_depend_on_the_order_of_the_events() -> None:
    batch = errors(5) + [event("d", "scenario_deactivated", scenario_id=11, t=T0 + 2)]
    a = decide(batch, {}, [], make_policy(), T0 + 40)
    b = decide(list(reversed(batch)), {}, [], make_policy(), T0 + 40)
    assert a == b


def test_decide_does_not_modify_its_inputs() -> None:
    caller = Caller()
    _fired(caller)
    before = copy.deepcopy(caller.alerts)
    decide(
        errors(2, prefix="n", start=T0 + 5 * HOUR), caller.alerts, [], caller.policy, T0 + 5 * HOUR
    )
    assert caller.alerts == before


def test_warnings_are_disabled_by_default() -> None:
    decision = decide([event("w", "execution_warning")], {}, [], make_policy(), T0 + 40)
    assert decision.event_reasons == {"w": "disabled"} and decision.alerts == []
    enabled = decide(
        [event("w", "execution_warning")], {}, [], make_policy(warnings_enabled=True), T0 + 40
    )
    assert [n.severity for n in enabled.notifications] == ["warning"]


def test_an_alert_state_round_trips_through_its_table_row() -> None:
    caller = Caller()
    _fired(caller)
    alert = caller.only()
    row = alert.to_row() | {"id": 7, "thread_ref": None}
    assert AlertState.from_row(row) == alert
    assert {"fingerprint", "state", "count_since_notice", "last_notified", "reason"} <= set(row)


def test_a_notification_carries_what_a_renderer_needs() -> None:
    caller = Caller()
    _fired(caller)
    notice = caller.sent[0].to_payload()
    assert notice["payload"]["scenario_name"] == "Sync CRM"
    assert notice["dedup_key"].startswith(notice["fingerprint"] + "|ops|1|firing|")
    assert len(notice["samples"]) == 3


# --------------------------------------------------------------------------------------------
# Acknowledgements


def acked_caller() -> Caller:
    """An alert told on "ops" at T0; repeats due an hour after a notice."""
    caller = Caller(policy=make_policy(group_wait_s=0, repeat_interval_s=HOUR))
    caller.feed([event("e1")], now=T0)
    assert caller.phases() == [("firing", "ops")]
    return caller


def test_without_an_acknowledgement_a_new_failure_after_the_repeat_interval_is_repeated() -> None:
    caller = acked_caller()  # the control for the test below: the same steps, no ack
    caller.feed([event("e2", t=T0 + 2 * HOUR)], now=T0 + 2 * HOUR)
    assert caller.phases()[-1] == ("repeat", "ops")


def test_an_acknowledged_alert_sends_no_repeat_but_its_resolution_is_still_told() -> None:
    caller = acked_caller()
    caller.only().acked_at, caller.only().acked_by = T0 + 60, "ana"
    later = caller.feed([event("e2", t=T0 + 2 * HOUR, severity="critical")], now=T0 + 2 * HOUR)
    assert later.notifications == []  # neither a repeat nor an escalation
    assert later.event_reasons == {"e2": "acknowledged"} and caller.only().reason == "acknowledged"
    assert caller.tick(T0 + 5 * HOUR).notifications == []
    done = caller.feed([event("ok", "execution_recovered", t=T0 + 6 * HOUR)], now=T0 + 6 * HOUR)
    assert [(n.phase, n.channel) for n in done.notifications] == [("resolved", "ops")]
    assert caller.only().state == RESOLVED


def test_a_reopened_alert_starts_unacknowledged_and_is_told_again() -> None:
    caller = acked_caller()
    caller.only().acked_at, caller.only().acked_by = T0 + 60, "ana"
    caller.feed([event("ok", "execution_recovered", t=T0 + 120)], now=T0 + 120)
    again = caller.feed([event("e3", t=T0 + 2 * HOUR)], now=T0 + 2 * HOUR)
    assert [n.phase for n in again.notifications] == ["firing"]
    assert caller.only().acked_at is None and caller.only().acked_by is None
