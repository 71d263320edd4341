"""Alerting policy settings: the ``[alerts]`` table and the ordered ``[[routes]]`` tables.

These are ``Section`` models like every other settings table; the lead adds them to
``watcher.config.Settings`` as ``alerts: AlertsSettings`` and
``routes: tuple[RouteSettings, ...]``. The decision engine takes a :class:`Policy`
(both together), built with ``Policy(alerts=settings.alerts, routes=settings.routes)`` or
:meth:`Policy.from_settings`.

Example::

    [alerts]
    group_wait_s = 30
    group_interval_s = 300
    repeat_interval_s = 14400
    max_per_hour = 30
    max_per_hour_by_channel = { oncall = 10, audit = 0 }   # 0 = no cap for that channel
    default_channels = ["ops-slack"]

    [[routes]]                 # each client's organization to its own channel...
    org = "Client A*"
    channels = ["client-a-slack"]
    continue = true            # ...and keep looking

    [[routes]]                 # everything critical also to on-call
    min_severity = "critical"
    channels = ["oncall"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alerts.fingerprint import DEFAULT_GROUP_BY, GROUP_BY_LABELS
from alerts.silences import Window, parse_clock, parse_weekdays
from watcher.events import SEVERITY as _DEFAULT_SEVERITY
from watcher.settings_base import Section, TimeZoneName, nested_model

__all__ = [
    "SEVERITIES",
    "ALERT_KINDS",
    "AlertsSettings",
    "OrgMatcher",
    "ScenarioMatcher",
    "TeamMatcher",
    "Policy",
    "Route",
    "RouteSettings",
    "Severity",
    "SilenceWindowSettings",
    "policy_settings_keys",
]

#: Severities, least to most severe.
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
Severity = Literal["info", "warning", "error", "critical"]

Duration = Annotated[float, Strict(), Field(ge=0)]
StrictBool = Annotated[bool, Strict()]


def _check_channel(name: str) -> str:
    if not name or any(c.isspace() or ord(c) < 32 for c in name):
        raise ValueError(
            f"{name!r} is not a channel name; use the name of a [channels.<name>] table"
        )
    return name


ChannelName = Annotated[str, AfterValidator(_check_channel)]


class AlertsSettings(Section):
    """``[alerts]``: how alerts are grouped, repeated and capped (Alertmanager vocabulary).

    * ``group_wait_s``: a new alert collects its burst this long before its first notice.
    * ``group_interval_s``: minimum gap between two notices of the same alert on a channel
      (a severity escalation, a re-opened alert after its "resolved" notice).
    * ``repeat_interval_s``: a still-failing alert with new occurrences is re-notified at
      most this often (never when nothing new happened).
    * ``critical_skips_group_wait``: critical alerts notify at once.
    * ``max_per_hour``: notifications per channel per clock hour; beyond it they are held
      and summarised once when the hour is over. Unset = no cap.
      ``max_per_hour_by_channel`` overrides it per channel (0 = no cap for that channel).
    * ``default_channels``: where an alert goes when no ``[[routes]]`` table matches.
    * ``warnings_enabled``: ``execution_warning`` events become alerts (off by default).
    * ``templates_dir``: templates here override the bundled ones of the same name.
    * ``group_by``: which execution errors are one alert (Alertmanager's word). Always
      ``org`` and ``scenario``; by default also ``error_name`` (one ``ConnectionError``
      worded three ways is one alert, its distinct messages kept as samples); add
      ``error_message`` to tell messages apart (normalised: numbers, ids, URLs, quoted
      values do not count), or drop ``error_name`` for one alert per failing scenario.
    """

    group_wait_s: Duration = 30.0
    group_interval_s: Duration = 300.0
    repeat_interval_s: Duration = 4 * 3600.0
    critical_skips_group_wait: StrictBool = True
    max_per_hour: Annotated[int, Strict(), Field(ge=1)] | None = None
    max_per_hour_by_channel: dict[ChannelName, Annotated[int, Strict(), Field(ge=0)]] = Field(
        default_factory=dict
    )
    default_channels: tuple[ChannelName, ...] = ()
    warnings_enabled: StrictBool = False
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    # A directory whose templates (same names as the bundled ones) override them.
    templates_dir: Path | None = None

    @field_validator("templates_dir")
    @classmethod
    def _resolve_templates_dir(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """Relative to the configuration file's directory, like every other path."""
        if value is None:
            return None
        config_dir = (info.context or {}).get("config_dir") or Path.cwd()
        return (Path(config_dir) / value.expanduser()).absolute()

    @field_validator("group_by")
    @classmethod
    def _check_group_by(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in GROUP_BY_LABELS]
        if unknown:
            raise ValueError(
                f"unknown label {unknown[0]!r}; choose from: {', '.join(GROUP_BY_LABELS)}"
            )
        missing = [v for v in ("org", "scenario") if v not in value]
        if missing:
            raise ValueError(
                f"must include {missing[0]!r}: an execution alert belongs to one organization "
                "and one scenario (a success of that scenario resolves it)"
            )
        return tuple(dict.fromkeys(value))

    def cap_for(self, channel: str) -> int | None:
        """The hourly cap of ``channel``, or None when it has none."""
        cap = self.max_per_hour_by_channel.get(channel, self.max_per_hour)
        return cap or None


#: Kinds an alert can have (the others only resolve alerts: they are never routed).
ALERT_KINDS: tuple[str, ...] = tuple(
    k
    for k in _DEFAULT_SEVERITY
    if k not in ("execution_recovered", "scenario_reactivated", "scenario_unpaused")
)


def _check_kind(value: str) -> str:
    if value not in ALERT_KINDS:
        raise ValueError(f"unknown kind {value!r}; expected one of: {', '.join(ALERT_KINDS)}")
    return value


def _id_or_name(what: str) -> Any:
    def check(value: Any) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise ValueError(f"must be {what} id (a positive integer) or name (a non-empty string)")

    return PlainValidator(check, json_schema_input_type=int | str)


Kind = Annotated[str, AfterValidator(_check_kind)]
#: Matchers shared by ``[[routes]]`` and ``[[polling.silent.rules]]``: an id or a name glob.
OrgMatcher = Annotated[int | str, _id_or_name("an organization")]
ScenarioMatcher = Annotated[int | str, _id_or_name("a scenario")]
TeamMatcher = Annotated[int, Strict(), Field(ge=1)]


class RouteSettings(Section):
    """One ``[[routes]]`` table: which alerts go to which channels.

    Routes are tried in order; every matcher given must match (unset = any):

    * ``org``: organization id (integer) or name (``*``/``?`` globs, case-insensitive);
    * ``team_id``; ``scenario``: scenario id (integer) or name glob;
    * ``kind``: an alert kind or a list of kinds; ``min_severity``: this severity or worse.

    The first matching route wins unless it has ``continue = true``, in which case later
    routes are tried too and the channels add up. ``group_wait_s``, ``group_interval_s`` and
    ``repeat_interval_s`` override ``[alerts]`` for this route's channels.
    """

    model_config = ConfigDict(populate_by_name=True)

    org: OrgMatcher | None = None
    team_id: TeamMatcher | None = None
    scenario: ScenarioMatcher | None = None
    kind: Annotated[tuple[Kind, ...], Field(min_length=1)] | None = None
    min_severity: Severity | None = None
    channels: Annotated[tuple[ChannelName, ...], Field(min_length=1)]
    continue_: StrictBool = Field(default=False, alias="continue")
    group_wait_s: Duration | None = None
    group_interval_s: Duration | None = None
    repeat_interval_s: Duration | None = None
    #: Who may press this route's action buttons in Slack: user ids (``U…``, ``W…``) and
    #: user-group ids (``S…``). Empty: nobody (the buttons answer "not allowed").
    actors: tuple[Annotated[str, Field(pattern=r"^[UWS][A-Z0-9]{2,}$")], ...] = ()

    @field_validator("kind", mode="before")
    @classmethod
    def _one_kind(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value


#: The engine's name for a route.
Route = RouteSettings


def _check_clock(value: str) -> str:
    parse_clock(value)
    return value


ClockTime = Annotated[str, Strict(), AfterValidator(_check_clock)]


class SilenceWindowSettings(Section):
    """One ``[[silences]]`` table: a maintenance window, a silence that recurs.

    ``weekdays`` (``"mon"`` ... ``"sun"``, default every day), ``start``/``end`` (``HH:MM``
    wall time in ``timezone``; an ``end`` before ``start`` is on the next day and the window
    belongs to the weekday it starts on), and the matchers of a one-off silence, at least one:
    ``org`` (id or name glob), ``scenario_id``, ``kind`` (one or a list), ``error_contains``.
    ``notify_resolved``: an alert that resolves inside the window is still told so (by
    default it resolves silently). Clock changes: see alerts.silences.
    """

    name: str = Field(min_length=1)
    weekdays: Annotated[tuple[str, ...], Field(min_length=1)] = (
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
    )
    start: ClockTime
    end: ClockTime
    timezone: TimeZoneName = "UTC"
    org: OrgMatcher | None = None
    scenario_id: Annotated[int, Strict(), Field(ge=1)] | None = None
    kind: Annotated[tuple[Kind, ...], Field(min_length=1)] | None = None
    error_contains: Annotated[str, Field(min_length=1)] | None = None
    reason: str = ""
    notify_resolved: StrictBool = False

    @field_validator("kind", mode="before")
    @classmethod
    def _one_kind(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("weekdays", mode="before")
    @classmethod
    def _one_weekday(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("weekdays")
    @classmethod
    def _check_weekdays(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            parse_weekdays([item])
        return value

    @field_validator("end")
    @classmethod
    def _end_differs(cls, value: str, info: ValidationInfo) -> str:
        start = info.data.get("start")
        if start is not None and parse_clock(start) == parse_clock(value):
            raise ValueError("must differ from start (a window of no length silences nothing)")
        return value

    @model_validator(mode="after")
    def _matches_something(self) -> SilenceWindowSettings:
        if not self.matchers():
            raise ValueError(
                "give org, scenario_id, kind or error_contains: a window without matchers "
                "would silence everything"
            )
        return self

    def matchers(self) -> dict[str, Any]:
        """The matchers given, as a one-off silence stores them."""
        out: dict[str, Any] = {}
        if self.org is not None:
            out["org"] = self.org
        if self.scenario_id is not None:
            out["scenario_id"] = self.scenario_id
        if self.kind is not None:
            out["kind"] = list(self.kind)
        if self.error_contains is not None:
            out["error_contains"] = self.error_contains
        return out

    def window(self, index: int) -> Window:
        """The :class:`~alerts.silences.Window` this table declares (``id`` ``config:<index>``)."""
        return Window(
            id=f"config:{index}",
            name=self.name,
            weekdays=parse_weekdays(self.weekdays),
            start=parse_clock(self.start),
            end=parse_clock(self.end),
            timezone=self.timezone,
            matchers=self.matchers(),
            reason=self.reason,
            notify_resolved=self.notify_resolved,
        )


class Policy(Section):
    """Everything the decision engine needs: ``[alerts]`` plus the ordered ``[[routes]]``,
    and the maintenance windows of ``[[silences]]`` (the caller turns them into the
    :class:`~alerts.silences.Silence` each is at ``now``: :meth:`windows`)."""

    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    routes: tuple[RouteSettings, ...] = ()
    silences: tuple[SilenceWindowSettings, ...] = ()

    @classmethod
    def from_settings(cls, settings: Any) -> Policy:
        """From the main ``Settings`` (its ``alerts``, ``routes`` and ``silences``, defaults
        if absent)."""
        return cls(
            alerts=getattr(settings, "alerts", None) or AlertsSettings(),
            routes=tuple(getattr(settings, "routes", None) or ()),
            silences=tuple(getattr(settings, "silences", None) or ()),
        )

    def windows(self) -> list[Window]:
        """The configured maintenance windows, in file order."""
        return [s.window(i) for i, s in enumerate(self.silences)]


def policy_settings_keys() -> list[str]:
    """Every policy setting as a dotted key (``alerts.group_wait_s``, ``routes[].continue``),
    in declaration order, as ``watcher.config.settings_keys`` will list them once wired."""
    keys: list[str] = []
    for name, field in Policy.model_fields.items():
        nested, is_array = nested_model(field.annotation)
        assert nested is not None
        table = name + ("[]" if is_array else "")
        keys.extend(f"{table}.{f.alias or n}" for n, f in nested.model_fields.items())
    return keys
