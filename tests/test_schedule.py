"""Tests of alerts.schedule: digest send times, periods and what is due, DST days included.

2026 transitions used below:
  Europe/Paris      spring forward Sun 29 March 02:00 CET -> 03:00 CEST (01:00Z)
                    fall back      Sun 25 October 03:00 CEST -> 02:00 CET (01:00Z)
  America/New_York  spring forward Sun 8 March 02:00 EST -> 03:00 EDT (07:00Z)
                    fall back      Sun 1 November 02:00 EDT -> 01:00 EST (06:00Z)
Expected instants are written in UTC, worked out from those offsets, not from the code.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from alerts.schedule import (
    DEFAULT_CATCH_UP_S,
    DigestSettings,
    DueDigest,
    Schedule,
    as_schedule,
    digest_settings_keys,
    due_digests,
    next_send_time,
    period_for,
    period_key,
    previous_send_time,
)

PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def settings(**overrides: Any) -> DigestSettings:
    data: dict[str, Any] = {
        "recipients": ["ops@example.com"],
        "at": "08:00",
        "timezone": PARIS,
    }
    data.update(overrides)
    return DigestSettings.model_validate(data)


def walk(schedule: Any, start: datetime, count: int) -> list[datetime]:
    sends, t = [], start
    for _ in range(count):
        t = next_send_time(schedule, t)
        sends.append(t)
    return sends


# --- the time-zone database ----------------------------------------------------------------


def test_the_time_zone_database_knows_both_zones_and_their_2026_transitions() -> None:
    assert datetime(2026, 3, 29, 12, tzinfo=ZoneInfo(PARIS)).utcoffset() == 2 * HOUR
    assert datetime(2026, 11, 1, 12, tzinfo=ZoneInfo(NEW_YORK)).utcoffset() == -5 * HOUR


# --- next_send_time --------------------------------------------------------------------------

NEXT_SEND_CASES = [
    # (zone, at, after, expected, why)
    (PARIS, "08:00", utc(2026, 3, 28, 0), utc(2026, 3, 28, 7), "CET, day before spring forward"),
    (PARIS, "08:00", utc(2026, 3, 29, 0), utc(2026, 3, 29, 6), "CEST from spring-forward day"),
    (PARIS, "08:00", utc(2026, 10, 24, 0), utc(2026, 10, 24, 6), "CEST, day before fall back"),
    (PARIS, "08:00", utc(2026, 10, 25, 0), utc(2026, 10, 25, 7), "CET from fall-back day"),
    (PARIS, "08:00", utc(2026, 3, 28, 7), utc(2026, 3, 29, 6), "strictly after: next day"),
    (PARIS, "02:30", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1), "in the gap: 03:00 CEST"),
    (PARIS, "02:30", utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), "day after the gap"),
    (PARIS, "02:30", utc(2026, 3, 29, 0, 59), utc(2026, 3, 29, 1), "just before gap end"),
    (PARIS, "02:30", utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30), "overlap: first, CEST"),
    (PARIS, "02:30", utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), "not the second 02:30"),
    (PARIS, "02:30", utc(2026, 10, 25, 1), utc(2026, 10, 26, 1, 30), "between the two 02:30s"),
    (PARIS, "23:30", utc(2026, 3, 29, 12), utc(2026, 3, 29, 21, 30), "end of the 23-hour day"),
    (PARIS, "23:30", utc(2026, 10, 25, 12), utc(2026, 10, 25, 22, 30), "end of the 25-hour day"),
    (NEW_YORK, "08:00", utc(2026, 3, 7, 0), utc(2026, 3, 7, 13), "EST, day before spring"),
    (NEW_YORK, "08:00", utc(2026, 3, 8, 0), utc(2026, 3, 8, 12), "EDT from spring-forward day"),
    (NEW_YORK, "08:00", utc(2026, 10, 31, 0), utc(2026, 10, 31, 12), "EDT, day before fall"),
    (NEW_YORK, "08:00", utc(2026, 11, 1, 0), utc(2026, 11, 1, 13), "EST from fall-back day"),
    (NEW_YORK, "02:30", utc(2026, 3, 7, 12), utc(2026, 3, 8, 7), "in the gap: 03:00 EDT"),
    (NEW_YORK, "02:30", utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30), "day after the gap"),
    (NEW_YORK, "02:30", utc(2026, 10, 31, 12), utc(2026, 11, 1, 7, 30), "02:30 exists once"),
    (NEW_YORK, "01:30", utc(2026, 10, 31, 12), utc(2026, 11, 1, 5, 30), "overlap: first, EDT"),
    (NEW_YORK, "01:30", utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), "not the second"),
    (NEW_YORK, "01:30", utc(2026, 11, 1, 6), utc(2026, 11, 2, 6, 30), "between the two 01:30s"),
    (NEW_YORK, "23:30", utc(2026, 3, 8, 12), utc(2026, 3, 9, 3, 30), "end of the 23-hour day"),
]


@pytest.mark.parametrize(
    ("zone", "at", "after", "expected"),
    [case[:4] for case in NEXT_SEND_CASES],
    ids=[f"{c[0]}-{c[1]}-{c[4]}" for c in NEXT_SEND_CASES],
)
def test_next_send_time_is_the_first_scheduled_local_time_strictly_after(
    zone: str, at: str, after: datetime, expected: datetime
) -> None:
    got = next_send_time((at, zone), after)
    assert got == expected
    assert got.tzinfo is UTC


def test_next_send_time_accepts_settings_any_aware_datetime_and_epoch_seconds() -> None:
    after = utc(2026, 3, 28, 12)
    expected = utc(2026, 3, 29, 6)
    assert next_send_time(settings(), after) == expected
    assert next_send_time(settings(), after.astimezone(ZoneInfo(NEW_YORK))) == expected
    assert next_send_time(settings(), after.timestamp()) == expected
    assert next_send_time(Schedule(time(8), ZoneInfo(PARIS)), after) == expected


def test_next_send_time_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_send_time(settings(), datetime(2026, 3, 28, 12))


WALKS = [
    # (zone, at, start, expected sends over 10 days), offsets switch on the transition day
    (
        PARIS,
        "08:00",
        utc(2026, 3, 24),
        [utc(2026, 3, d, 7) for d in range(24, 29)]
        + [utc(2026, 3, d, 6) for d in range(29, 32)]
        + [utc(2026, 4, d, 6) for d in (1, 2)],
    ),
    (
        PARIS,
        "02:30",
        utc(2026, 3, 24),
        [utc(2026, 3, d, 1, 30) for d in range(24, 29)]
        + [utc(2026, 3, 29, 1)]  # 02:30 does not exist: 03:00 CEST
        + [utc(2026, 3, d, 0, 30) for d in (30, 31)]
        + [utc(2026, 4, d, 0, 30) for d in (1, 2)],
    ),
    (
        PARIS,
        "02:30",
        utc(2026, 10, 20),
        [utc(2026, 10, d, 0, 30) for d in range(20, 26)]  # 25th: first 02:30 (CEST)
        + [utc(2026, 10, d, 1, 30) for d in range(26, 30)],
    ),
    (
        NEW_YORK,
        "08:00",
        utc(2026, 10, 28),
        [utc(2026, 10, d, 12) for d in range(28, 32)] + [utc(2026, 11, d, 13) for d in range(1, 7)],
    ),
    (
        NEW_YORK,
        "01:30",
        utc(2026, 10, 27, 12),
        [utc(2026, 10, d, 5, 30) for d in range(28, 32)]
        + [utc(2026, 11, 1, 5, 30)]  # first 01:30 (EDT), not 06:30Z
        + [utc(2026, 11, d, 6, 30) for d in range(2, 7)],
    ),
    (
        NEW_YORK,
        "02:30",
        utc(2026, 3, 4),
        [utc(2026, 3, d, 7, 30) for d in range(4, 8)]
        + [utc(2026, 3, 8, 7)]  # 02:30 does not exist: 03:00 EDT
        + [utc(2026, 3, d, 6, 30) for d in range(9, 14)],
    ),
]


@pytest.mark.parametrize(
    ("zone", "at", "start", "expected"),
    WALKS,
    ids=[f"{w[0]}-{w[1]}-{w[2]:%b}" for w in WALKS],
)
def test_consecutive_calls_walk_ten_days_across_dst_with_one_send_per_local_day(
    zone: str, at: str, start: datetime, expected: list[datetime]
) -> None:
    sends = walk((at, zone), start, 10)
    assert sends == expected
    local_days = [s.astimezone(ZoneInfo(zone)).date() for s in sends]
    assert local_days == [local_days[0] + timedelta(days=i) for i in range(10)]


@pytest.mark.parametrize("zone", [PARIS, NEW_YORK])
@pytest.mark.parametrize("at", ["00:00", "01:30", "02:00", "02:30", "03:00", "08:00", "23:30"])
def test_a_year_of_sends_never_repeats_an_instant_nor_skips_a_local_day(zone: str, at: str) -> None:
    just_before_new_year = datetime(2026, 1, 1, tzinfo=ZoneInfo(zone)) - timedelta(seconds=1)
    sends = walk((at, zone), just_before_new_year, 366)
    local_days = [s.astimezone(ZoneInfo(zone)).date() for s in sends]
    assert local_days == [date(2026, 1, 1) + timedelta(days=i) for i in range(366)]
    assert all(a < b for a, b in zip(sends, sends[1:], strict=False))


def test_previous_send_time_mirrors_next_send_time_across_the_gap() -> None:
    schedule = ("02:30", PARIS)
    sends = walk(schedule, utc(2026, 3, 25), 8)
    for earlier, later in zip(sends, sends[1:], strict=False):
        assert previous_send_time(schedule, later) == earlier
        assert previous_send_time(schedule, later, inclusive=True) == later


# --- weekdays --------------------------------------------------------------------------------


def test_with_weekdays_mon_to_fri_fridays_send_is_followed_by_mondays() -> None:
    weekdays = settings(weekdays=["mon", "tue", "wed", "thu", "fri"])
    friday = utc(2026, 3, 27, 7)  # Fri 27 March 08:00 CET
    monday = utc(2026, 3, 30, 6)  # Mon 30 March 08:00 CEST (the weekend had the DST change)
    assert next_send_time(weekdays, friday) == monday
    assert next_send_time(weekdays, utc(2026, 3, 28, 12)) == monday  # from Saturday


def test_mondays_period_spans_from_fridays_send_when_weekends_are_skipped() -> None:
    weekdays = settings(weekdays=["mon", "tue", "wed", "thu", "fri"])
    assert period_for(utc(2026, 3, 30, 6), weekdays) == (utc(2026, 3, 27, 7), utc(2026, 3, 30, 6))


def test_a_weekly_schedule_sends_once_a_week_on_the_local_day() -> None:
    # 23:30 on Sunday in New York is already Monday in UTC: the local day is what counts.
    sends = walk(("23:30", NEW_YORK, ["sun"]), utc(2026, 3, 1), 3)
    assert sends == [utc(2026, 3, 2, 4, 30), utc(2026, 3, 9, 3, 30), utc(2026, 3, 16, 3, 30)]


# --- period_for ------------------------------------------------------------------------------

PERIOD_CASES = [
    # (zone, at, send_time, expected start, why)
    (PARIS, "23:30", utc(2026, 3, 29, 21, 30), utc(2026, 3, 28, 22, 30), "23-hour day"),
    (PARIS, "23:30", utc(2026, 10, 25, 22, 30), utc(2026, 10, 24, 21, 30), "25-hour day"),
    (PARIS, "02:30", utc(2026, 3, 29, 1), utc(2026, 3, 28, 1, 30), "gap day: from 02:30 CET"),
    (PARIS, "02:30", utc(2026, 3, 30, 0, 30), utc(2026, 3, 29, 1), "after gap: from 03:00"),
    (PARIS, "02:30", utc(2026, 10, 26, 1, 30), utc(2026, 10, 25, 0, 30), "after the overlap"),
    (NEW_YORK, "01:30", utc(2026, 11, 2, 6, 30), utc(2026, 11, 1, 5, 30), "after the overlap"),
    (NEW_YORK, "08:00", utc(2026, 3, 8, 12), utc(2026, 3, 7, 13), "23-hour day"),
]


@pytest.mark.parametrize(
    ("zone", "at", "send_time", "start"),
    [case[:4] for case in PERIOD_CASES],
    ids=[f"{c[0]}-{c[1]}-{c[4]}" for c in PERIOD_CASES],
)
def test_period_runs_from_the_previous_scheduled_send_to_this_one(
    zone: str, at: str, send_time: datetime, start: datetime
) -> None:
    assert period_for(send_time, (at, zone)) == (start, send_time)


def test_period_starts_at_the_previous_send_when_one_is_given() -> None:
    previous = utc(2026, 3, 26, 7)
    assert period_for(utc(2026, 3, 29, 6), settings(), previous) == (previous, utc(2026, 3, 29, 6))
    with pytest.raises(ValueError, match="after send_time"):
        period_for(utc(2026, 3, 29, 6), settings(), utc(2026, 3, 30))


# --- due_digests -----------------------------------------------------------------------------


def test_a_digest_is_due_from_the_scheduled_instant_on() -> None:
    last_end = utc(2026, 3, 28, 7)  # Sat 08:00 CET, sent
    assert due_digests(settings(), last_end, utc(2026, 3, 29, 5, 59)) == []
    assert due_digests(settings(), last_end, utc(2026, 3, 29, 6)) == [
        DueDigest(utc(2026, 3, 29, 6), last_end, utc(2026, 3, 29, 6))
    ]


def test_a_restart_right_after_a_send_finds_nothing_due() -> None:
    sent_end = utc(2026, 3, 29, 6)
    for seconds_later in (0, 5, 3600, 86_399):
        now = sent_end + timedelta(seconds=seconds_later)
        assert due_digests(settings(), sent_end, now) == []
        assert due_digests(settings(), sent_end.timestamp(), now.timestamp()) == []


def test_missed_digests_collapse_into_one_covering_the_whole_downtime() -> None:
    last_end = utc(2026, 3, 27, 7)  # Fri 08:00 CET was sent, then the service went down
    now = utc(2026, 3, 30, 9)  # back on Mon 11:00 CEST: Sat, Sun and Mon were missed
    assert due_digests(settings(), last_end, now) == [
        DueDigest(utc(2026, 3, 30, 6), last_end, utc(2026, 3, 30, 6))
    ]


def test_there_is_never_more_than_one_digest_due() -> None:
    last_end = utc(2026, 3, 1, 7)
    for hours in range(0, 24 * 40, 7):
        assert len(due_digests(settings(), last_end, last_end + hours * HOUR)) <= 1


def test_skipped_weekdays_fold_into_the_next_digest_period() -> None:
    weekdays = settings(weekdays=["mon", "wed"])
    last_end = utc(2026, 3, 25, 7)  # Wed 08:00 CET
    assert due_digests(weekdays, last_end, utc(2026, 3, 28, 12)) == []  # Saturday: none
    assert due_digests(weekdays, last_end, utc(2026, 3, 30, 6)) == [
        DueDigest(utc(2026, 3, 30, 6), last_end, utc(2026, 3, 30, 6))
    ]


def test_on_first_start_the_latest_send_is_caught_up_within_the_grace_window() -> None:
    scheduled = utc(2026, 3, 29, 6)  # Sun 08:00 CEST
    expected = [DueDigest(scheduled, utc(2026, 3, 28, 7), scheduled)]
    assert due_digests(settings(), None, scheduled) == expected
    assert due_digests(settings(), None, scheduled + timedelta(hours=5, minutes=59)) == expected
    assert due_digests(settings(), None, scheduled + timedelta(seconds=DEFAULT_CATCH_UP_S)) == (
        expected
    )


def test_on_first_start_an_older_send_is_skipped_and_the_next_one_awaited() -> None:
    scheduled = utc(2026, 3, 29, 6)
    now = scheduled + timedelta(hours=6, seconds=1)
    assert due_digests(settings(), None, now) == []
    upcoming = next_send_time(settings(), now)
    assert upcoming == utc(2026, 3, 30, 6)
    assert due_digests(settings(), None, upcoming) == [DueDigest(upcoming, scheduled, upcoming)]


def test_the_grace_window_can_be_changed() -> None:
    scheduled = utc(2026, 3, 29, 6)
    assert due_digests(settings(), None, scheduled + HOUR, catch_up_s=1800) == []
    assert len(due_digests(settings(), None, scheduled + 20 * HOUR, catch_up_s=86_400)) == 1


def test_due_digests_walk_a_dst_week_sending_each_day_once() -> None:
    s = settings(at="02:30", timezone=NEW_YORK)
    last_end: datetime | None = utc(2026, 3, 5, 7, 30)
    sent: list[DueDigest] = []
    now = utc(2026, 3, 5, 8)
    while now < utc(2026, 3, 12):
        for digest in due_digests(s, last_end, now):
            sent.append(digest)
            last_end = digest.period_end
        now += timedelta(minutes=10)
    assert [d.scheduled_at for d in sent] == walk(s, utc(2026, 3, 5, 8), 6)
    assert all(a.period_end == b.period_start for a, b in zip(sent, sent[1:], strict=False))


# --- period_key ------------------------------------------------------------------------------


def test_period_key_is_the_same_whatever_form_the_start_comes_in() -> None:
    start = utc(2026, 3, 29, 6)
    key = ("Ann@example.com", 1_774_764_000.0)
    assert period_key("Ann@example.com", start) == key
    assert period_key("Ann@EXAMPLE.com ", start.astimezone(ZoneInfo(PARIS))) == key
    assert period_key("Ann@example.com", start.timestamp()) == key


# --- settings --------------------------------------------------------------------------------


def test_a_digests_table_from_toml_is_validated_and_normalized() -> None:
    data = tomllib.loads(
        """
        [[digests]]
        recipients = ["Ops@Example.COM", "ann@example.com"]
        at = 07:45:00
        timezone = "America/New_York"
        weekdays = ["Friday", "mon", "fri"]
        organizations = ["Acme"]
        skip_if_quiet = true
        channel = "smtp-eu"
        """
    )
    s = DigestSettings.model_validate(data["digests"][0])
    assert s.recipients == ("Ops@example.com", "ann@example.com")
    assert s.at == "07:45"
    assert s.weekdays == ("mon", "fri")
    assert s.organizations == ("Acme",)
    assert (s.skip_if_quiet, s.channel) == (True, "smtp-eu")
    assert as_schedule(s) == Schedule(time(7, 45), ZoneInfo(NEW_YORK), frozenset({0, 4}))


def test_digest_settings_have_documented_defaults() -> None:
    s = settings(at="8:00")
    assert s.at == "08:00"
    assert s.weekdays == ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    assert (s.organizations, s.skip_if_quiet, s.channel) == (None, False, None)


INVALID = [
    # (overrides, key, message fragment)
    ({"at": "8am"}, ("at",), "24-hour time"),
    ({"at": "24:00"}, ("at",), "24-hour time"),
    ({"at": "08:60"}, ("at",), "24-hour time"),
    ({"at": "0800"}, ("at",), "24-hour time"),
    ({"at": time(8, 0, 30)}, ("at",), "whole minutes"),
    ({"at": 800}, ("at",), "valid string"),
    ({"timezone": "Europe/Pariss"}, ("timezone",), "did you mean 'Europe/Paris'"),
    ({"timezone": "Mars/Olympus"}, ("timezone",), "unknown time zone"),
    ({"timezone": "../etc/passwd"}, ("timezone",), "unknown time zone"),
    ({"weekdays": ["mon", "funday"]}, ("weekdays", 1), "not a weekday"),
    ({"weekdays": []}, ("weekdays",), "at least 1"),
    ({"recipients": ["ops@example.com", "not-an-email"]}, ("recipients", 1), "not an e-mail"),
    ({"recipients": ["ops@example.com", "Ann <a@example.com>"]}, ("recipients", 1), "display name"),
    ({"recipients": ["ops@example.com", "a@b.com, c@d.com"]}, ("recipients", 1), "own string"),
    ({"recipients": ["ops@example.com", "ops@localhost"]}, ("recipients", 1), "valid host name"),
    ({"recipients": []}, ("recipients",), "at least 1"),
    ({"recipients": "ops@example.com"}, ("recipients",), "valid tuple"),
    ({"organizations": []}, ("organizations",), "at least 1"),
    ({"skip_if_quiet": "yes"}, ("skip_if_quiet",), "valid boolean"),
    ({"channel": ""}, ("channel",), "at least 1"),
    ({"time_zone": PARIS}, ("time_zone",), "Extra inputs"),
]


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"), INVALID, ids=[f"{i[1]}-{i[2]}" for i in INVALID]
)
def test_an_invalid_setting_is_reported_against_its_key(
    overrides: dict[str, Any], key: tuple[str | int, ...], fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        settings(**overrides)
    errors = info.value.errors(include_url=False)
    assert [e["loc"] for e in errors] == [key]
    assert fragment in errors[0]["msg"]


def test_a_missing_required_setting_is_reported_against_its_key() -> None:
    with pytest.raises(ValidationError) as info:
        DigestSettings.model_validate({"at": "08:00"})
    assert {e["loc"] for e in info.value.errors()} == {("recipients",), ("timezone",)}


def test_every_digest_setting_is_listed_for_the_docs() -> None:
    assert digest_settings_keys() == [
        "digests[].recipients",
        "digests[].at",
        "digests[].timezone",
        "digests[].organizations",
        "digests[].weekdays",
        "digests[].skip_if_quiet",
        "digests[].channel",
    ]
