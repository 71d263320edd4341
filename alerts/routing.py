"""Routing: which channels hear about an alert, and with which timings.

Pure: :func:`route` looks only at an alert's labels and the policy. Notifications are per
(alert, channel); each channel carries the group_wait / group_interval / repeat_interval of
the route that first named it (route overrides, else ``[alerts]``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alerts.policy import SEVERITIES, AlertsSettings, Policy, RouteSettings

__all__ = ["ChannelRoute", "route", "route_matches", "scope_matches", "severity_rank"]


def severity_rank(severity: str | None) -> int:
    """0 (info) .. 3 (critical); an unknown severity ranks as "error" so it is never lost."""
    try:
        return SEVERITIES.index(str(severity))
    except ValueError:
        return SEVERITIES.index("error")


@dataclass(frozen=True)
class ChannelRoute:
    """A channel an alert goes to, with the timings that apply on it."""

    channel: str
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float

    @classmethod
    def default(cls, channel: str, alerts: AlertsSettings) -> ChannelRoute:
        return cls(channel, alerts.group_wait_s, alerts.group_interval_s, alerts.repeat_interval_s)


def _glob(pattern: str, value: Any) -> bool:
    return fnmatch.fnmatchcase(str(value or "").casefold(), pattern.casefold())


def _id_or_glob(wanted: int | str, value_id: Any, value_name: Any) -> bool:
    if isinstance(wanted, int):
        return wanted == value_id
    if wanted.isdigit():
        return int(wanted) == value_id
    return _glob(wanted, value_name)


def scope_matches(
    org: int | str | None, team_id: int | None, scenario: int | str | None, labels: Mapping[str, Any]
) -> bool:
    """Whether the ``org``/``team_id``/``scenario`` matchers that are set (ids, or name
    globs) match ``labels`` (``org_id``, ``org``, ``team_id``, ``scenario_id``, ``scenario``).
    Shared by routes and the silent-failure rules of ``[polling.silent]``."""
    if org is not None and not _id_or_glob(org, labels.get("org_id"), labels.get("org")):
        return False
    if team_id is not None and team_id != labels.get("team_id"):
        return False
    return scenario is None or _id_or_glob(scenario, labels.get("scenario_id"), labels.get("scenario"))


def route_matches(r: RouteSettings, labels: Mapping[str, Any]) -> bool:
    """Whether every matcher ``r`` sets matches ``labels``.

    ``labels`` keys: ``kind``, ``severity``, ``org_id``, ``org`` (name), ``team_id``,
    ``scenario_id``, ``scenario`` (name).
    """
    if not scope_matches(r.org, r.team_id, r.scenario, labels):
        return False
    if r.kind is not None and labels.get("kind") not in r.kind:
        return False
    if r.min_severity is not None and severity_rank(labels.get("severity")) < severity_rank(
        r.min_severity
    ):
        return False
    return True


def route(labels: Mapping[str, Any], policy: Policy) -> list[ChannelRoute]:
    """The channels for an alert with ``labels``, in order, each once.

    Routes are tried in order: the first match wins unless it has ``continue``, in which case
    matching goes on and channels add up. When no route matched, ``default_channels``.
    An empty list means "no route": the alert is recorded but nobody is told.
    """
    alerts = policy.alerts
    out: dict[str, ChannelRoute] = {}
    matched = False
    for r in policy.routes:
        if not route_matches(r, labels):
            continue
        matched = True
        for channel in r.channels:
            out.setdefault(
                channel,
                ChannelRoute(
                    channel,
                    alerts.group_wait_s if r.group_wait_s is None else r.group_wait_s,
                    alerts.group_interval_s if r.group_interval_s is None else r.group_interval_s,
                    alerts.repeat_interval_s
                    if r.repeat_interval_s is None
                    else r.repeat_interval_s,
                ),
            )
        if not r.continue_:
            break
    if not matched:
        for channel in alerts.default_channels:
            out.setdefault(channel, ChannelRoute.default(channel, alerts))
    return list(out.values())


def route_actors(labels: Mapping[str, Any], policy: Policy, channel: str) -> frozenset[str]:
    """Who may act (``routes[].actors``) on an alert with ``labels`` from ``channel``: the
    actors of every route that sends it there, tried the way :func:`route` tries them.
    No matching route (the default channels) means nobody."""
    out: set[str] = set()
    for r in policy.routes:
        if not route_matches(r, labels):
            continue
        if channel in r.channels:
            out.update(r.actors)
        if not r.continue_:
            break
    return frozenset(out)
