"""When each daily digest is sent, and which span of time it covers.

Everything here is pure: no clock is read. ``now``/``after`` are passed in as aware
datetimes or epoch seconds, and every instant returned is an aware UTC datetime.

A digest is scheduled at a local wall-clock time (``at``, "HH:MM") in an IANA time zone on
chosen weekdays. Daylight-saving rules:

* a local time that does not exist that day (spring-forward gap: 02:30 on 29 March 2026 in
  Europe/Paris) fires once, at the first valid instant after the gap (03:00 local);
* a local time that exists twice (fall-back overlap: 02:30 on 25 October 2026 in
  Europe/Paris) fires once, at its first occurrence (``fold=0``).

The weekday filter applies to the local calendar day; a skipped day folds into the next
digest's period (Monday's digest covers the weekend when only mon-fri are chosen).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, Field, Strict, field_validator

from watcher.settings_base import Section, TimeZoneName, zone

__all__ = [
    "DEFAULT_CATCH_UP_S",
    "WEEKDAYS",
    "DigestSettings",
    "DueDigest",
    "Schedule",
    "ScheduleLike",
    "as_schedule",
    "digest_settings_keys",
    "due_digests",
    "next_send_time",
    "normalize_email",
    "period_for",
    "period_key",
    "previous_send_time",
    "send_time_on",
]

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

#: On first start (nothing sent yet), the most recent scheduled time is still sent if it is at
#: most this old; an older one is skipped and the next scheduled time is awaited.
DEFAULT_CATCH_UP_S = 6 * 3600.0

_AT = re.compile(r"(\d{1,2}):(\d{2})")
# Deliberately pragmatic, not RFC 5322: one @, no whitespace, angle brackets or commas (which
# would mean a display name or a list pasted into one entry), and a dotted domain.
_EMAIL = re.compile(r"[^\s@<>,;\"()\[\]]+@[^\s@<>,;\"()\[\]]+")
_DOMAIN_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)
# Enough days to find the next enabled weekday from any starting day, plus slack for a day a
# time zone skipped altogether (Pacific/Apia, 30 December 2011).
_SEARCH_DAYS = 10


# --------------------------------------------------------------------------------------------
# Settings


def normalize_email(address: str) -> str:
    """``address`` stripped, with its domain lower-cased (the local part is case-sensitive).

    Raises ValueError if it does not look like a single e-mail address.
    """
    address = address.strip()
    if not _EMAIL.fullmatch(address):
        hint = ""
        if "<" in address or ">" in address:
            hint = "; write the bare address, without a display name"
        elif "," in address or ";" in address or " " in address:
            hint = "; put each address in its own string"
        raise ValueError(f"{address!r} is not an e-mail address such as ops@example.com{hint}")
    local, domain = address.rsplit("@", 1)
    labels = domain.rstrip(".").split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{address!r} is not an e-mail address such as ops@example.com "
            f"(the domain {domain!r} is not a valid host name)"
        )
    return f"{local}@{domain.rstrip('.').lower()}"


def _check_weekday(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the str type check reports it
    name = value.strip().lower()
    if name in _FULL_WEEKDAYS:
        return WEEKDAYS[_FULL_WEEKDAYS.index(name)]
    if name not in WEEKDAYS:
        raise ValueError(f"{value!r} is not a weekday; use {', '.join(WEEKDAYS)}")
    return name


def _check_organization(value: str) -> str:
    if not value:
        raise ValueError("must not be empty; use an organization's name")
    return value


EmailAddress = Annotated[str, AfterValidator(normalize_email)]
Weekday = Annotated[str, AfterValidator(_check_weekday)]
OrganizationName = Annotated[str, AfterValidator(_check_organization)]


class DigestSettings(Section):
    """One ``[[digests]]`` table: who gets a daily digest, when, and about what.

    ``at`` is normalized to "HH:MM"; ``weekdays`` to three-letter names in week order
    (duplicates dropped); recipient domains are lower-cased. Whether the named
    ``organizations`` and ``channel`` exist is checked where the whole file is known.
    """

    recipients: Annotated[tuple[EmailAddress, ...], Field(min_length=1)]
    at: str
    timezone: TimeZoneName
    organizations: Annotated[tuple[OrganizationName, ...], Field(min_length=1)] | None = None
    weekdays: Annotated[tuple[Weekday, ...], Field(min_length=1)] = WEEKDAYS
    skip_if_quiet: Annotated[bool, Strict()] = False
    channel: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("at", mode="before")
    @classmethod
    def _check_at(cls, value: Any) -> Any:
        # TOML has a local-time literal (at = 08:00:00); accept it as well as "08:00".
        if isinstance(value, time):
            if value.tzinfo is not None or value.second or value.microsecond:
                raise ValueError('must be a local time in whole minutes, such as "08:00"')
            return f"{value.hour:02d}:{value.minute:02d}"
        if not isinstance(value, str):
            return value  # the str type check reports it
        match = _AT.fullmatch(value.strip())
        if not match or int(match[1]) > 23 or int(match[2]) > 59:
            raise ValueError(f'{value!r} is not a 24-hour time "HH:MM" such as "08:00" or "17:30"')
        return f"{int(match[1]):02d}:{match[2]}"

    @field_validator("weekdays")
    @classmethod
    def _week_order(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(day for day in WEEKDAYS if day in value)

    @property
    def schedule(self) -> Schedule:
        """The (at, timezone, weekdays) triple the schedule functions work on."""
        return as_schedule((self.at, self.timezone, self.weekdays))


def digest_settings_keys() -> list[str]:
    """Every ``[[digests]]`` setting as a dotted key (``digests[].at``), in declaration order."""
    return [
        f"digests[].{field.alias or name}" for name, field in DigestSettings.model_fields.items()
    ]


# --------------------------------------------------------------------------------------------
# Schedule


@dataclass(frozen=True)
class Schedule:
    """A daily local time in a zone, on some weekdays (0 = Monday ... 6 = Sunday)."""

    at: time
    tz: tzinfo
    weekdays: frozenset[int] = frozenset(range(7))

    def __post_init__(self) -> None:
        if self.at.tzinfo is not None:
            raise ValueError("Schedule.at must be a naive local time")
        if not self.weekdays or not self.weekdays <= frozenset(range(7)):
            raise ValueError("Schedule.weekdays must be a non-empty subset of 0..6")


ScheduleLike = (
    Schedule
    | DigestSettings
    | tuple[str | time, str | tzinfo]
    | tuple[str | time, str | tzinfo, Iterable[str | int]]
)


def as_schedule(value: ScheduleLike) -> Schedule:
    """A :class:`Schedule` from a Schedule, DigestSettings, (at, tz) or (at, tz, weekdays).

    ``at`` is "HH:MM" or a ``time``; ``tz`` an IANA name or a tzinfo; weekdays are names
    ("mon") or numbers (0 = Monday).
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, DigestSettings):
        return value.schedule
    if not isinstance(value, tuple) or len(value) not in (2, 3):
        raise TypeError(
            "expected a Schedule, DigestSettings or an (at, tz[, weekdays]) tuple, "
            f"got {type(value).__name__}"
        )
    at, tz = value[0], value[1]
    if isinstance(at, str):
        match = _AT.fullmatch(at.strip())
        if not match:
            raise ValueError(f'{at!r} is not a 24-hour time "HH:MM"')
        at = time(int(match[1]), int(match[2]))
    if isinstance(tz, str):
        tz = zone(tz)
    days: frozenset[int] = frozenset(range(7))
    if len(value) == 3:
        days = frozenset(
            d if isinstance(d, int) else WEEKDAYS.index(_check_weekday(d)) for d in value[2]
        )
    return Schedule(at, tz, days)


def _aware(value: datetime | float, what: str) -> datetime:
    """``value`` as an aware UTC datetime; epoch seconds accepted, naive datetimes refused."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{what} must be timezone-aware (got a naive datetime)")
        return value.astimezone(UTC)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be an aware datetime or epoch seconds")
    return datetime.fromtimestamp(value, UTC)


def send_time_on(schedule: Schedule, day: date) -> datetime:
    """The UTC instant the digest for local ``day`` fires (whether or not ``day`` is enabled).

    Gap: the first instant after the gap. Overlap: the first occurrence.
    """
    naive = datetime.combine(day, schedule.at)
    first = naive.replace(tzinfo=schedule.tz).astimezone(UTC)  # fold=0: first occurrence
    if first.astimezone(schedule.tz).replace(tzinfo=None) == naive:
        return first
    return _end_of_gap(schedule.tz, naive)


def _end_of_gap(tz: tzinfo, naive: datetime) -> datetime:
    """The transition instant that skips over the non-existent local time ``naive``.

    Per PEP 495, a time in a gap read with fold=0 uses the offset before the transition and
    with fold=1 the offset after it; the transition lies between the two readings. Before it
    the local clock is earlier than ``naive``, from it on later: binary search on whole
    seconds (tz database transitions are whole seconds).
    """
    readings = [
        int(naive.replace(tzinfo=tz, fold=fold).astimezone(UTC).timestamp()) for fold in (0, 1)
    ]
    lo, hi = min(readings) - 1, max(readings) + 1

    def after_gap(ts: int) -> bool:
        return datetime.fromtimestamp(ts, UTC).astimezone(tz).replace(tzinfo=None) > naive

    while hi - lo > 1:  # invariant: not after_gap(lo), after_gap(hi)
        mid = (lo + hi) // 2
        if after_gap(mid):
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _send_times(schedule: Schedule, start: date, step: int) -> Iterator[datetime]:
    """Send times of enabled days from local day ``start``, forwards (step 1) or backwards (-1)."""
    for i in range(_SEARCH_DAYS):
        day = start + timedelta(days=i * step)
        if day.weekday() in schedule.weekdays:
            yield send_time_on(schedule, day)


def next_send_time(schedule: ScheduleLike, after: datetime | float) -> datetime:
    """The first scheduled send strictly after ``after``, as an aware UTC datetime.

    Feeding the result back in walks the schedule: every enabled local day once, no instant
    twice (a day whose send time collides with the next day's, possible only when a zone
    skips a whole day, yields one send).
    """
    sched = as_schedule(schedule)
    after_utc = _aware(after, "after")
    # Start a day early: a send pushed forward by a gap can land after the next local midnight.
    start = after_utc.astimezone(sched.tz).date() - timedelta(days=1)
    for send in _send_times(sched, start, 1):
        if send > after_utc:
            return send
    raise AssertionError("unreachable: an enabled weekday occurs within a week")


def previous_send_time(
    schedule: ScheduleLike, before: datetime | float, *, inclusive: bool = False
) -> datetime:
    """The last scheduled send before ``before`` (at or before it with ``inclusive``), UTC."""
    sched = as_schedule(schedule)
    before_utc = _aware(before, "before")
    start = before_utc.astimezone(sched.tz).date() + timedelta(days=1)
    for send in _send_times(sched, start, -1):
        if send < before_utc or (inclusive and send == before_utc):
            return send
    raise AssertionError("unreachable: an enabled weekday occurs within a week")


# --------------------------------------------------------------------------------------------
# Periods and what is due


def period_for(
    send_time: datetime | float,
    schedule: ScheduleLike,
    previous_send: datetime | float | None = None,
) -> tuple[datetime, datetime]:
    """The half-open span ``[start, end)`` of events the digest sent at ``send_time`` covers.

    ``end`` is ``send_time``; ``start`` is ``previous_send`` when given (the end of the last
    digest actually sent), else the scheduled send before ``send_time``. The schedule, not
    just its zone, is needed for that: with mon-fri, Monday's period starts at Friday's send,
    and after a spring-forward gap the previous send is at ``at``, not at ``send_time``'s
    shifted wall-clock time.
    """
    end = _aware(send_time, "send_time")
    if previous_send is not None:
        start = _aware(previous_send, "previous_send")
    else:
        start = previous_send_time(schedule, end)
    if start > end:
        raise ValueError("previous_send is after send_time")
    return start, end


class DueDigest(NamedTuple):
    """One digest to send now: the scheduled time it stands for and the span it covers."""

    scheduled_at: datetime
    period_start: datetime
    period_end: datetime


def due_digests(
    settings: ScheduleLike,
    last_sent_period_end: datetime | float | None,
    now: datetime | float,
    *,
    catch_up_s: float = DEFAULT_CATCH_UP_S,
) -> list[DueDigest]:
    """The digest to send at ``now`` for one recipient: an empty list or exactly one item.

    ``latest`` is the last scheduled send at or before ``now``.

    * Sent before (``last_sent_period_end`` known): if ``latest`` is after it, one digest
      covering ``[last_sent_period_end, latest)``. However many scheduled times were missed
      while the service was down, they collapse into this one digest, so nothing is lost and
      nobody gets a burst of stale mails. Otherwise nothing (a restart right after a send).
    * Never sent (first start, or a new recipient): ``latest`` is sent, covering the
      scheduled period before it, only if it is at most ``catch_up_s`` old. An older one is
      not sent and the next scheduled time is awaited: a digest that arrives many hours late
      on the very first day is noise, and there is no earlier digest whose gap it would fill.

    ``period_end`` equals ``scheduled_at``; record it as the recipient's last sent period end
    (also when ``skip_if_quiet`` drops the mail, so the quiet span is not reported again).
    """
    now_utc = _aware(now, "now")
    latest = previous_send_time(settings, now_utc, inclusive=True)
    if last_sent_period_end is None:
        if (now_utc - latest).total_seconds() > catch_up_s:
            return []
        start, end = period_for(latest, settings)
        return [DueDigest(latest, start, end)]
    last_end = _aware(last_sent_period_end, "last_sent_period_end")
    if latest <= last_end:
        return []
    return [DueDigest(latest, last_end, latest)]


def period_key(recipient: str, period_start: datetime | float) -> tuple[str, float]:
    """``(recipient, period_start)`` for the ``digests`` table's PRIMARY KEY.

    The address is normalized as in the settings and the start is epoch seconds, so the same
    period for the same person always gives the same key whichever form it came in.
    """
    return normalize_email(recipient), _aware(period_start, "period_start").timestamp()
