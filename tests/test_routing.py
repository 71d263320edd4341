"""Routing rules and the [alerts]/[[routes]] settings: pure, table-driven."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from pydantic import ValidationError

from alerts.engine import decide
from alerts.policy import AlertsSettings, Policy, RouteSettings, policy_settings_keys
from alerts.routing import ChannelRoute, route

T0 = 1_790_000_000.0

AGENCY_TOML = """
[alerts]
default_channels = ["agency-ops"]

[[routes]]
org = "Client A*"
channels = ["client-a"]
continue = true

[[routes]]
org = 202
channels = ["client-b"]
continue = true

[[routes]]
min_severity = "critical"
channels = ["oncall"]
"""


def labels(**kw: Any) -> dict[str, Any]:
    base = {
        "kind": "execution_error",
        "severity": "error",
        "org_id": 101,
        "org": "Client A GmbH",
        "team_id": 5,
        "scenario_id": 10,
        "scenario": "Sync CRM",
    }
    return base | kw


def channels(policy: Policy, **kw: Any) -> list[str]:
    return [r.channel for r in route(labels(**kw), policy)]


def policy_of(*routes: dict[str, Any], **alerts: Any) -> Policy:
    return Policy.model_validate({"alerts": alerts, "routes": list(routes)})


# --------------------------------------------------------------------------------------------
# Routing table


AGENCY = Policy.model_validate(tomllib.loads(AGENCY_TOML))


@pytest.mark.parametrize(
    ("org_id", "org", "severity", "expected"),
    [
        (101, "Client A GmbH", "error", ["client-a"]),
        (101, "Client A GmbH", "critical", ["client-a", "oncall"]),
        (202, "Client B", "warning", ["client-b"]),
        (202, "Client B", "critical", ["client-b", "oncall"]),
        (303, "Client C", "error", ["agency-ops"]),
        (303, "Client C", "critical", ["oncall"]),
    ],
)
def test_an_agency_routes_each_client_to_its_channel_and_critical_also_to_oncall(
    org_id: int, org: str, severity: str, expected: list[str]
) -> None:
    assert channels(AGENCY, org_id=org_id, org=org, severity=severity) == expected


def test_the_agency_case_end_to_end_one_notice_per_channel() -> None:
    event = {
        "key": "x",
        "kind": "scenario_deactivated",
        "org_id": 101,
        "team_id": 5,
        "scenario_id": 10,
        "occurred_at": T0,
        "detected_at": T0,
        "payload": {"organization": "Client A GmbH", "scenario_name": "Sync CRM"},
    }
    decision = decide([event], {}, [], AGENCY, T0)
    assert [(n.channel, n.phase) for n in decision.notifications] == [
        ("client-a", "firing"),
        ("oncall", "firing"),
    ]


def test_the_first_matching_route_wins_without_continue() -> None:
    policy = policy_of({"org": "Client*", "channels": ["a"]}, {"org": "Client*", "channels": ["b"]})
    assert channels(policy) == ["a"]


def test_continue_adds_the_channels_of_later_matching_routes_once() -> None:
    policy = policy_of(
        {"org": "Client*", "channels": ["a", "b"], "continue": True},
        {"kind": ["quota"], "channels": ["never"]},
        {"channels": ["b", "c"]},
    )
    assert channels(policy) == ["a", "b", "c"]


def test_the_default_channels_apply_only_when_no_route_matched() -> None:
    policy = policy_of({"org": "Globex", "channels": ["g"]}, default_channels=["ops"])
    assert channels(policy) == ["ops"]
    assert channels(policy, org="Globex") == ["g"]


def test_no_route_and_no_default_means_no_channel_and_reason_no_route() -> None:
    policy = policy_of({"org": "Globex", "channels": ["g"]})
    assert channels(policy) == []
    event = {
        "key": "k",
        "kind": "execution_error",
        "org_id": 1,
        "scenario_id": 2,
        "occurred_at": T0,
        "detected_at": T0,
        "payload": {"organization": "Acme", "error_message": "boom"},
    }
    decision = decide([event], {}, [], policy, T0 + 60)
    assert decision.notifications == []
    assert decision.event_reasons == {"k": "no route"}
    assert decision.alerts[0].reason == "no route"


@pytest.mark.parametrize(
    ("min_severity", "severity", "matches"),
    [
        ("warning", "info", False),
        ("warning", "warning", True),
        ("warning", "critical", True),
        ("critical", "error", False),
        ("critical", "critical", True),
    ],
)
def test_min_severity_matches_that_severity_or_worse(
    min_severity: str, severity: str, matches: bool
) -> None:
    policy = policy_of({"min_severity": min_severity, "channels": ["x"]})
    assert channels(policy, severity=severity) == (["x"] if matches else [])


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        ({"org": "client a*"}, True),  # case-insensitive glob
        ({"org": "Client ?"}, False),
        ({"org": 101}, True),
        ({"org": "101"}, True),
        ({"org": 102}, False),
        ({"scenario": "Sync *"}, True),
        ({"scenario": "*invoice*"}, False),
        ({"scenario": 10}, True),
        ({"scenario": 11}, False),
        ({"team_id": 5}, True),
        ({"team_id": 6}, False),
        ({"kind": "execution_error"}, True),
        ({"kind": ["quota", "hook_backlog"]}, False),
        ({"org": "Client A*", "scenario": "Sync *", "kind": ["execution_error"]}, True),
        ({"org": "Client A*", "scenario": "Other"}, False),
    ],
)
def test_a_route_matches_only_when_every_matcher_it_sets_matches(
    matcher: dict[str, Any], expected: bool
) -> None:
    policy = policy_of(matcher | {"channels": ["x"]})
    assert channels(policy) == (["x"] if expected else [])


def test_a_route_overrides_timings_for_its_channels_only() -> None:
    policy = policy_of(
        {"org": "Client*", "channels": ["fast"], "group_wait_s": 0, "continue": True},
        {"channels": ["slow"]},
        group_wait_s=30,
        repeat_interval_s=600,
    )
    assert route(labels(), policy) == [
        ChannelRoute("fast", 0.0, 300.0, 600.0),
        ChannelRoute("slow", 30.0, 300.0, 600.0),
    ]
    event = {
        "key": "k",
        "kind": "execution_error",
        "org_id": 101,
        "scenario_id": 10,
        "occurred_at": T0,
        "detected_at": T0,
        "payload": {"organization": "Client A", "error_message": "boom"},
    }
    first = decide([event], {}, [], policy, T0)
    assert [n.channel for n in first.notifications] == ["fast"]
    alerts = {a.fingerprint: a for a in first.alerts}
    later = decide([], alerts, [], policy, T0 + 30)
    assert [n.channel for n in later.notifications] == ["slow"]


# --------------------------------------------------------------------------------------------
# Settings


def test_the_policy_defaults_are_alertmanager_like() -> None:
    alerts = AlertsSettings()
    assert (alerts.group_wait_s, alerts.group_interval_s, alerts.repeat_interval_s) == (
        30.0,
        300.0,
        14400.0,
    )
    assert alerts.critical_skips_group_wait is True
    assert alerts.max_per_hour is None and alerts.cap_for("any") is None
    assert alerts.warnings_enabled is False


def test_continue_is_written_continue_in_toml_and_continue__in_python() -> None:
    assert RouteSettings.model_validate({"channels": ["a"], "continue": True}).continue_
    assert RouteSettings(channels=("a",), continue_=True).continue_


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"alerts": {"group_wait_s": -1}}, ("alerts", "group_wait_s")),
        ({"alerts": {"repeat_interval_s": -0.5}}, ("alerts", "repeat_interval_s")),
        ({"alerts": {"group_interval_s": "5m"}}, ("alerts", "group_interval_s")),
        ({"alerts": {"max_per_hour": 0}}, ("alerts", "max_per_hour")),
        (
            {"alerts": {"max_per_hour_by_channel": {"ops": -1}}},
            ("alerts", "max_per_hour_by_channel", "ops"),
        ),
        ({"alerts": {"default_channels": [""]}}, ("alerts", "default_channels", 0)),
        ({"alerts": {"critical_skips_group_wait": "yes"}}, ("alerts", "critical_skips_group_wait")),
        ({"alerts": {"group_wait": 30}}, ("alerts", "group_wait")),
        ({"routes": [{"channels": []}]}, ("routes", 0, "channels")),
        ({"routes": [{"org": "x"}]}, ("routes", 0, "channels")),
        ({"routes": [{"channels": ["a"], "min_severity": "fatal"}]}, ("routes", 0, "min_severity")),
        ({"routes": [{"channels": ["a"], "group_wait_s": -5}]}, ("routes", 0, "group_wait_s")),
        ({"routes": [{"channels": ["a"], "org": True}]}, ("routes", 0, "org")),
        (
            {"routes": [{"channels": ["a"], "kind": ["execution_recovered"]}]},
            ("routes", 0, "kind", 0),
        ),
        ({"routes": [{"channels": ["a"], "continue": 1}]}, ("routes", 0, "continue")),
    ],
)
def test_an_invalid_policy_is_reported_against_its_key(
    data: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    with pytest.raises(ValidationError) as info:
        Policy.model_validate(data)
    assert loc in [tuple(e["loc"]) for e in info.value.errors()]


def test_unknown_severity_and_kind_messages_list_the_choices() -> None:
    with pytest.raises(ValidationError) as info:
        Policy.model_validate({"routes": [{"channels": ["a"], "kind": "nope"}]})
    assert "expected one of: execution_error" in str(info.value)


def test_every_policy_setting_is_listed_for_the_docs() -> None:
    assert policy_settings_keys() == [
        "alerts.group_wait_s",
        "alerts.group_interval_s",
        "alerts.repeat_interval_s",
        "alerts.critical_skips_group_wait",
        "alerts.max_per_hour",
        "alerts.max_per_hour_by_channel",
        "alerts.default_channels",
        "alerts.warnings_enabled",
        "alerts.group_by",
        "alerts.templates_dir",
        "routes[].org",
        "routes[].team_id",
        "routes[].scenario",
        "routes[].kind",
        "routes[].min_severity",
        "routes[].channels",
        "routes[].continue",
        "routes[].group_wait_s",
        "routes[].group_interval_s",
        "routes[].repeat_interval_s",
        "routes[].actors",
        "silences[].name",
        "silences[].weekdays",
        "silences[].start",
        "silences[].end",
        "silences[].timezone",
        "silences[].org",
        "silences[].scenario_id",
        "silences[].kind",
        "silences[].error_contains",
        "silences[].reason",
        "silences[].notify_resolved",
    ]


def test_the_policy_doc_example_is_valid() -> None:
    import alerts.policy

    doc = alerts.policy.__doc__ or ""
    toml = doc.split("Example::", 1)[1]
    toml = "\n".join(line[4:] for line in toml.splitlines())
    policy = Policy.model_validate(tomllib.loads(toml))
    assert policy.alerts.cap_for("oncall") == 10
    assert policy.alerts.cap_for("audit") is None
    assert policy.alerts.cap_for("ops-slack") == 30
    assert [r.continue_ for r in policy.routes] == [True, False]
