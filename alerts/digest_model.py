"""The digest's content model: a plain, JSON-able dataclass tree (no I/O, no clock).

:mod:`alerts.digest` fills it from the store, :mod:`alerts.digest_charts` draws the per-period
error bars and the quota averages; the templates ``email/digest.{subject,txt,html}.j2`` render
it. Every instant is a :class:`Moment` (epoch seconds plus text in the recipient's zone);
``dataclasses.asdict`` of a :class:`Digest` holds only str, int, float, bool, None, lists,
tuples and dicts with str keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Moment:
    """An instant: ``epoch`` seconds and ``local`` text in the digest's time zone."""

    epoch: float
    local: str


@dataclass(frozen=True)
class Links:
    """Links into Make's web app (http(s) only; None when unknown)."""

    scenario_url: str | None = None
    history_url: str | None = None
    run_url: str | None = None
    dlq_url: str | None = None


@dataclass(frozen=True)
class ScenarioErrors:
    """The ``execution_error`` events of one scenario in the period.

    ``recurring``: the scenario already had an execution error before the period (else it
    is failing for the first time as far as makewatch knows). ``links.run_url`` is the last
    failed run.
    """

    scenario_id: int | None
    scenario_name: str
    team_id: int | None
    count: int
    recurring: bool
    first_at: Moment
    last_at: Moment
    last_error_name: str
    last_error_message: str
    error_names: tuple[str, ...]
    links: Links


@dataclass(frozen=True)
class ErrorKind:
    """An error name seen in the period and never before in that organization."""

    error_name: str
    count: int
    scenarios: tuple[str, ...]
    first_at: Moment


@dataclass(frozen=True)
class StateChange:
    """A ``scenario_deactivated`` / ``scenario_reactivated`` event of the period.

    ``standing``: already off when makewatch first saw it (reported once at first start).
    ``still_off``: the scenario is off now (scenarios table).
    """

    scenario_id: int | None
    scenario_name: str
    at: Moment
    standing: bool
    still_off: bool
    links: Links


@dataclass(frozen=True)
class OffScenario:
    """A scenario Make switched off that is still off now (``is_active`` 0, ``is_invalid`` 1).

    ``since``: its latest deactivation event, if makewatch recorded one.
    """

    scenario_id: int
    scenario_name: str
    since: Moment | None
    dlq_count: int
    links: Links


@dataclass(frozen=True)
class DlqScenario:
    """Incomplete executions of one scenario: ``dlq_count`` now, ``new_items`` and ``cleared``
    (its backlog emptied) in the period."""

    scenario_id: int
    scenario_name: str
    dlq_count: int
    new_items: int
    cleared: int
    last_reason: str
    links: Links


@dataclass(frozen=True)
class DlqBacklog:
    """``total_now``: sum of ``dlq_count`` now; ``new_items``: ``incomplete_executions`` events
    of the period (baseline and cleared ones excluded); ``cleared``: backlogs emptied in the
    period (events with ``cleared`` true)."""

    scenarios: tuple[DlqScenario, ...]
    total_now: int
    scenarios_now: int
    new_items: int
    cleared: int


@dataclass(frozen=True)
class QuotaEvent:
    at: Moment
    threshold_pct: float | None
    used_pct: float | None


@dataclass(frozen=True)
class Quota:
    """The organization's quota summary (``organizations.usage_json``, written by the poller).

    ``bar_pct``: ``used_pct`` clamped to 0..100 for drawing; ``level``: ok | warning (≥ 75 %)
    | critical (≥ 90 %), and at least warning when ``exhausts_before_reset`` (the forecast
    comes before ``next_reset``), whatever the share. ``daily_rate``: the average over
    ``rate_days`` complete days of usage (the day still running is left out), the forecast
    drawn from it; None days when the store has only the poller's own rate.
    ``days_left``: from ``now`` to the forecast.
    """

    operations_used: int | None
    operations_limit: int | None
    used_pct: float | None
    bar_pct: int
    level: str
    daily_rate: float | None
    rate_days: int | None
    forecast_exhausted_at: Moment | None
    next_reset: Moment | None
    exhausts_before_reset: bool
    days_left: float | None
    updated_at: Moment | None
    events: tuple[QuotaEvent, ...]


@dataclass(frozen=True)
class ChannelCount:
    channel: str
    count: int


@dataclass(frozen=True)
class Notifications:
    """Outbox rows sent in the period (by channel), and how the period's events were decided
    (``events.reason``): ``grouped`` into another notice, ``held_back`` by the flood cap,
    ``silenced``, ``inhibited`` (the scenario's deactivation said it), ``no_route``."""

    sent: int
    by_channel: tuple[ChannelCount, ...]
    grouped: int
    held_back: int
    silenced: int
    inhibited: int
    no_route: int
    parked: int


@dataclass(frozen=True)
class SilenceInForce:
    """A silence in force at ``period_end``; ``matchers_text`` is ``matchers`` for humans."""

    id: int
    matchers: dict[str, Any]
    matchers_text: str
    reason: str
    created_by: str
    ends_at: Moment


@dataclass(frozen=True)
class ActionTaken:
    """An action of the period (watcher.actions): who did what, how it ended, the verdict of
    the next poll on a reactivation. ``text`` is one line for a person."""

    at: Moment
    who: str
    text: str
    ok: bool


@dataclass(frozen=True)
class HealthEvent:
    at: Moment
    problem: str
    text: str
    recovered: bool


@dataclass(frozen=True)
class Health:
    """makewatch's own polling of the organization in the period (``cycles`` table).

    ``requests``: sum of ``cycles.requests``. ``budget``: each cycle's ``budget_per_minute``
    held until the next cycle starts (the last one before the period covers its start),
    multiplied by the minutes it held within the period and summed; time before the first
    recorded cycle counts nothing. None when no cycle is recorded. ``failed_polls``: cycles
    with ``ok`` = 0, the last one's error in ``last_error``. ``last_poll_ok``: the newest
    cycle before ``period_end`` succeeded.
    """

    cycles: int
    requests: int
    budget: int | None
    budget_used_pct: float | None
    failed_polls: int
    last_error: str
    last_error_at: Moment | None
    last_poll_ok: bool | None
    events: tuple[HealthEvent, ...]
    note: str | None


@dataclass(frozen=True)
class PeriodCount:
    """``execution_error`` events of one digest-length period ``[start, end)``: the digest's
    own period is the last bar, the ones before it end where the next begins (same local time,
    a day earlier each). ``label``: the local date ``end`` falls on, in the recipient's zone.
    ``ratio``: ``count`` over the busiest bar of *every* organization in the digest (0..1), so
    bars compare across organizations."""

    start: Moment
    end: Moment
    label: str
    count: int
    ratio: float


@dataclass(frozen=True)
class HookQueue:
    """A webhook whose queue was over its alert threshold in the period, or still is.

    ``queue_count`` / ``queue_limit``: the latest figures makewatch recorded (``hook_backlog``
    events); ``backlogged_now``: the latest such event before ``period_end`` is not a
    recovery."""

    hook_id: int
    hook_name: str
    scenario_name: str | None
    queue_count: int
    queue_limit: int | None
    backlogged_now: bool
    last_at: Moment


@dataclass(frozen=True)
class DayBar:
    """One day of a silent failure's sparkline: its operations and ``ratio`` of the busiest
    day of that chart (0..1)."""

    day: str
    label: str
    operations: int
    ratio: float


@dataclass(frozen=True)
class SilentFailure:
    """A silent failure (overdue, idle, unusual volume) in the period, or still open at its
    end. ``text``: what happened, in words (the notice's headline); ``open_now``: the
    latest such event before ``period_end`` is not its end; ``bars``: the last 14 days of
    operations of the scenario (or the organization), oldest first."""

    kind: str
    kind_title: str
    scenario_name: str | None
    text: str
    open_now: bool
    at: Moment
    ended_at: Moment | None
    links: Links
    bars: tuple[DayBar, ...]


@dataclass(frozen=True)
class Problem:
    """One thing that needs a look. ``rank``: 0 is the worst (see ``alerts.digest.RANKS``);
    ``text`` is plain and says its own figures."""

    rank: int
    org: str
    text: str


@dataclass(frozen=True)
class OrgDigest:
    """Everything the digest says about one organization."""

    org_id: int
    name: str
    errors_total: int
    errors: tuple[ScenarioErrors, ...]
    new_error_kinds: tuple[ErrorKind, ...]
    deactivated: tuple[StateChange, ...]
    reactivated: tuple[StateChange, ...]
    still_off: tuple[OffScenario, ...]
    dlq: DlqBacklog
    quota: Quota | None
    notifications: Notifications
    health: Health
    chart: tuple[PeriodCount, ...]
    hooks: tuple[HookQueue, ...]
    problems: tuple[Problem, ...]
    quiet: bool
    silent: tuple[SilentFailure, ...] = ()


@dataclass(frozen=True)
class Digest:
    """The digest of ``[period_start, period_end)`` for recipients in ``timezone``.

    ``title_date``: the local date(s) the period covers ("2026-09-21", or "2026-09-19 to
    2026-09-21" after skipped days). ``missing_organizations``: names asked for that the store
    does not know (never polled). ``silences``: in force at ``period_end`` and relevant to the
    organizations shown, ordered by severity (worst first, then by name).
    ``flood_summaries_sent``: flood-cap summary notices sent in the period
    (they belong to no single organization). The summary: ``errors_total``, ``scenarios_off``
    and ``dlq_total`` across organizations, and ``worst_problem``. ``chart_max``: the busiest
    bar of any organization (the charts' one scale). ``quiet``: no organization has a problem.
    """

    period_start: Moment
    period_end: Moment
    generated_at: Moment
    timezone: str
    title_date: str
    organizations: tuple[OrgDigest, ...]
    missing_organizations: tuple[str, ...]
    silences: tuple[SilenceInForce, ...]
    flood_summaries_sent: int
    errors_total: int
    scenarios_with_errors: int
    scenarios_off: int
    dlq_total: int
    hooks_backlogged: int = 0
    worst_problem: Problem | None = None
    actions: tuple[ActionTaken, ...] = ()
    chart_max: int = 0
    quota_alerts: tuple[str, ...] = field(default=())
    quiet: bool = False
