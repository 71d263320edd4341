"""Silences: "do not notify about alerts that match these matchers until ``ends_at``".

A silenced alert is still recorded and counted (its reason is ``"silenced"``); only its
notifications are dropped. Matching works on an alert's labels (see
:func:`alerts.routing.labels`), never on the clock: ``now`` is passed in.

Maintenance windows (:class:`Window`) are recurring silences: some weekdays, a time-of-day
range, a time zone, the same matchers. The engine sees a window as the one :class:`Silence`
it is at ``now`` (:meth:`Window.silence_at`: the occurrence in force, else the next one), so
its start and end are timers of the alerts it matches like a one-off silence's (alerts.engine,
"Timers"). Windows from the configuration are evaluated from the settings at every tick
(never stored, so they cannot drift from the file); those added with ``makewatch silence add
--every`` are rows of ``silences`` with their recurrence columns set.

Clock changes (the rule, tested with zoneinfo in tests/test_windows.py):

* a wall time that happens twice (clocks go back) is covered both times: a window starts at
  the first occurrence of its start and ends at the last occurrence of its end, so
  01:00-02:00 on the night 01:00-02:00 happens twice lasts two hours;
* a wall time the clocks skip (clocks go forward) moves to the moment they jump to; a window
  whose *start* is skipped begins then and lasts its usual length, as the cron job it covers
  runs late rather than not at all: 02:00-03:00 on the night 02:00-03:00 is skipped runs
  03:00-04:00. An end that is skipped (01:30-02:30) ends at the jump (03:00).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "MATCHER_KEYS",
    "MAX_DURATION_S",
    "WEEKDAYS",
    "Silence",
    "Window",
    "active_silence",
    "org_matches",
    "silences_at",
    "parse_clock",
    "parse_weekdays",
]

#: Weekday names as windows spell them, Monday first (``date.weekday()`` order).
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: What a silence can match on. All given matchers must match (AND).
MATCHER_KEYS = frozenset({"org", "scenario_id", "kind", "error_contains"})

#: The longest silence that can be added: a year. A longer one is a forgotten switch-off;
#: remove the route or the scenario instead.
MAX_DURATION_S = 365 * 86400.0


@dataclass(frozen=True)
class Silence:
    """One row of the ``silences`` table (``matchers`` is ``matchers_json`` decoded).

    ``matchers``:

    * ``org``: an organization id (int, or a string of digits) or name (case-insensitive,
      ``*``/``?`` globs allowed);
    * ``scenario_id``: a scenario id;
    * ``kind``: an alert kind (``execution_error`` ...) or a list of kinds;
    * ``error_contains``: a substring of the error name or message, case-insensitive.

    Active for ``starts_at <= now < ends_at``. A silence without matchers or with an unknown
    matcher is refused (ValueError): a typo must not silence everything.
    """

    id: int | str
    matchers: Mapping[str, Any]
    starts_at: float
    ends_at: float
    reason: str = ""
    created_by: str = field(default="", compare=False)
    #: A maintenance window's name (shown in the notice sent when it ends); "" for one-offs.
    name: str = field(default="", compare=False)
    #: This is one occurrence of a :class:`Window`.
    window: bool = field(default=False, compare=False)
    #: Resolutions are told even while silenced (see alerts.engine, "Suppression").
    notify_resolved: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not self.matchers:
            raise ValueError(f"silence {self.id}: no matchers (it would silence everything)")
        unknown = set(self.matchers) - MATCHER_KEYS
        if unknown:
            raise ValueError(
                f"silence {self.id}: unknown matchers {sorted(unknown)}; "
                f"expected {sorted(MATCHER_KEYS)}"
            )
        if self.ends_at <= self.starts_at:
            raise ValueError(f"silence {self.id}: ends_at must be after starts_at")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Silence:
        """From a ``silences`` row (``matchers`` decoded, or ``matchers_json`` as text)."""
        matchers = row.get("matchers")
        if matchers is None:
            matchers = json.loads(row.get("matchers_json") or "{}")
        return cls(
            id=row["id"],
            matchers=dict(matchers),
            starts_at=float(row["starts_at"]),
            ends_at=float(row["ends_at"]),
            reason=row.get("reason") or "",
            created_by=row.get("created_by") or "",
        )

    def is_active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def summary(self) -> dict[str, Any]:
        """What an alert keeps of the silence that held it (``AlertState.silenced_by``), to
        say which one ended in the notice sent then; plain JSON."""
        return {
            "id": str(self.id),
            "name": self.name,
            "window": self.window,
            "reason": self.reason,
            "ends_at": self.ends_at,
        }

    def matches(self, labels: Mapping[str, Any]) -> bool:
        """Whether every matcher matches ``labels`` (time is not considered)."""
        for key, wanted in self.matchers.items():
            if key == "org" and not _match_org(wanted, labels):
                return False
            if key == "scenario_id" and str(wanted) != str(labels.get("scenario_id")):
                return False
            if key == "kind":
                kinds = [wanted] if isinstance(wanted, str) else list(wanted)
                if labels.get("kind") not in kinds:
                    return False
            if key == "error_contains":
                needle = str(wanted).casefold()
                haystack = " ".join(
                    str(labels.get(k) or "") for k in ("error_name", "error_message")
                ).casefold()
                if needle not in haystack:
                    return False
        return True


def org_matches(wanted: Any, org_id: int, name: str) -> bool:
    """Whether an ``org`` matcher (id, name or glob) matches the organization ``org_id``/``name``.

    ``makewatch silence add --org`` uses it to refuse a matcher that matches no configured
    organization: a misspelt name would otherwise silence nothing, silently.
    """
    return _match_org(wanted, {"org_id": org_id, "org": name})


def _match_org(wanted: Any, labels: Mapping[str, Any]) -> bool:
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        return wanted == labels.get("org_id")
    text = str(wanted).strip()
    if text.isdigit():
        return int(text) == labels.get("org_id")
    name = str(labels.get("org") or "")
    return fnmatch.fnmatchcase(name.casefold(), text.casefold())


def silences_at(
    rows: Sequence[Mapping[str, Any]], windows: Sequence[Window], now: float
) -> list[Silence]:
    """What the engine is given at ``now``: each stored silence row not expired (one-off, or a
    window's occurrence in force or next), then each configured window's. A row that no
    longer parses is skipped (it silences nothing rather than stopping every alert)."""
    out: list[Silence] = []
    for row in rows:
        try:
            if row.get("timezone"):
                found = Window.from_row(row).silence_at(now)
                if found is not None:
                    out.append(found)
            else:
                out.append(Silence.from_row(row))
        except (ValueError, KeyError):
            continue
    for window in windows:
        found = window.silence_at(now)
        if found is not None:
            out.append(found)
    return out


def active_silence(
    silences: Sequence[Silence], labels: Mapping[str, Any], now: float
) -> Silence | None:
    """The first silence active at ``now`` that matches ``labels``, or None."""
    for silence in silences:
        if silence.is_active(now) and silence.matches(labels):
            return silence
    return None


def parse_clock(text: str) -> time:
    """``"02:00"`` → ``time(2, 0)``; ValueError unless ``HH:MM`` with 00-23 and 00-59."""
    parts = text.strip().split(":") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"{text!r} is not a time of day like '02:00' (HH:MM, 24-hour)")
    hour, minute = int(parts[0]), int(parts[1])
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day: hours 00-23, minutes 00-59")
    return time(hour, minute)


def parse_weekdays(values: Sequence[str] | str) -> tuple[int, ...]:
    """``["sun", "Monday"]`` or ``"sun,mon"`` → ``(0, 6)`` (``date.weekday()`` numbers,
    sorted); ValueError names the first that is not a weekday (``WEEKDAYS`` or the full
    English name, any case)."""
    items = values.split(",") if isinstance(values, str) else list(values)
    out = set()
    for item in items:
        name = str(item).strip().casefold()
        if name not in _WEEKDAY_NAMES:
            raise ValueError(f"{item!r} is not a weekday; use {', '.join(WEEKDAYS)}")
        out.add(_WEEKDAY_NAMES[name])
    if not out:
        raise ValueError(f"no weekday given; use {', '.join(WEEKDAYS)}")
    return tuple(sorted(out))


_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_NAMES = {**{d: i for i, d in enumerate(WEEKDAYS)}, **{d: i for i, d in enumerate(_FULL_NAMES)}}


def _exists(naive: datetime, zone: ZoneInfo) -> bool:
    local = naive.replace(tzinfo=zone)
    return local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive


def _jump(naive: datetime, zone: ZoneInfo) -> float:
    """The instant the clocks jump over the skipped wall time ``naive`` (the gap's end)."""
    after = naive.replace(tzinfo=zone, fold=0).timestamp()  # past the jump (pre-jump offset)
    before = naive.replace(tzinfo=zone, fold=1).timestamp()  # before it (post-jump offset)
    low, high = min(before, after), max(before, after)
    # Offsets change at whole minutes (tz database); the gap is at most a few hours.
    minute = int(low // 60) * 60
    zone_offset = datetime.fromtimestamp(high, zone).utcoffset()
    while minute < high and datetime.fromtimestamp(minute, zone).utcoffset() != zone_offset:
        minute += 60
    return float(minute)


def _instant(day: date, at: time, zone: ZoneInfo, *, last: bool) -> tuple[float, bool]:
    """(epoch seconds of wall time ``at`` on ``day``, whether the clocks skipped it):
    its first occurrence, or with ``last`` its last one, when it happens twice."""
    naive = datetime.combine(day, at)
    if not _exists(naive, zone):
        return _jump(naive, zone), True
    return naive.replace(tzinfo=zone, fold=1 if last else 0).timestamp(), False


@dataclass(frozen=True)
class Window:
    """A recurring silence: on ``weekdays`` (``date.weekday()`` numbers), from ``start`` to
    ``end`` wall time in ``timezone``; an ``end`` not after ``start`` is on the next day, and
    the occurrence belongs to the weekday it starts on (Sunday 22:00-02:00 ends on Monday).

    ``id`` is ``"config:<index>"`` for a ``[[silences]]`` table, the row id for a stored one;
    ``matchers`` are :class:`Silence`'s. ``not_before``/``not_after`` bound a stored window
    (added, expired); a configured one has none.
    """

    id: int | str
    name: str
    weekdays: tuple[int, ...]
    start: time
    end: time
    timezone: str
    matchers: Mapping[str, Any]
    reason: str = ""
    notify_resolved: bool = False
    not_before: float | None = None
    not_after: float | None = None

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError(f"window {self.name or self.id}: end must differ from start")
        ZoneInfo(self.timezone)  # raises for an unknown zone
        Silence(id=self.id, matchers=self.matchers, starts_at=0.0, ends_at=1.0)  # matchers

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def occurrence_on(self, day: date) -> tuple[float, float] | None:
        """The window that starts on local date ``day`` (epoch seconds), None when ``day`` is
        not one of its weekdays; clock changes as the module doc says."""
        if day.weekday() not in self.weekdays:
            return None
        zone = self.zone
        starts, skipped = _instant(day, self.start, zone, last=False)
        end_day = day if self.end > self.start else day + timedelta(days=1)
        ends, _ = _instant(end_day, self.end, zone, last=True)
        if skipped:
            face = datetime.combine(end_day, self.end) - datetime.combine(day, self.start)
            ends = max(ends, starts + face.total_seconds())
        return starts, ends

    def next_occurrence(self, now: float) -> tuple[float, float] | None:
        """The occurrence in force at ``now``, else the next one to start: ``(starts_at,
        ends_at)``; None when there is none left within ``not_after``."""
        today = datetime.fromtimestamp(now, self.zone).date()
        for offset in range(-1, 9):
            found = self.occurrence_on(today + timedelta(days=offset))
            if found is None:
                continue
            starts, ends = found
            if self.not_before is not None:
                starts = max(starts, self.not_before)
            if self.not_after is not None:
                ends = min(ends, self.not_after)
            if ends > now and ends > starts:
                return starts, ends
        return None

    def silence_at(self, now: float) -> Silence | None:
        """This window as the engine sees it at ``now``: the occurrence in force, else the
        next one, as a :class:`Silence`; None when it has no occurrence left."""
        found = self.next_occurrence(now)
        if found is None:
            return None
        return Silence(
            id=self.id,
            matchers=self.matchers,
            starts_at=found[0],
            ends_at=found[1],
            reason=self.reason,
            name=self.name,
            window=True,
            notify_resolved=self.notify_resolved,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Window:
        """From a ``silences`` row whose ``timezone`` is set (``makewatch silence add --every``)."""
        matchers = row.get("matchers")
        if matchers is None:
            matchers = json.loads(row.get("matchers_json") or "{}")
        return cls(
            id=row["id"],
            name=row.get("name") or "",
            weekdays=parse_weekdays(row.get("weekdays") or ",".join(WEEKDAYS)),
            start=parse_clock(row["start_time"]),
            end=parse_clock(row["end_time"]),
            timezone=row["timezone"],
            matchers=dict(matchers),
            reason=row.get("reason") or "",
            notify_resolved=bool(row.get("notify_resolved")),
            not_before=float(row["starts_at"]),
            not_after=float(row["ends_at"]),
        )

    def describe(self) -> str:
        """``"sun 02:00-04:00 Europe/Berlin"`` (``"every day ..."`` for all seven)."""
        days = "every day" if len(self.weekdays) == 7 else ",".join(WEEKDAYS[d] for d in self.weekdays)
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.timezone}"
