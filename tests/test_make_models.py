"""Parsers fed fixtures written in the shapes of the recorded live Make responses."""

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from watcher.make.models import (
    Dlq,
    Hook,
    LogEntry,
    MalformedEntry,
    Organization,
    Scenario,
    UsageDay,
    imt_sort_key,
    is_execution_row,
    parse_usage_date,
)

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str):
    return json.loads((FIXTURES / name).read_text())


def test_organization_counters_sent_as_strings_become_ints():
    org = Organization.parse(load("organization.json")["organization"])
    assert org.operations_used == 9120
    assert org.centicredits_used == 912000
    assert org.unused_operations == 880
    assert org.license is not None
    assert org.license.api_limit == 60
    assert org.license.operations == 10000
    assert org.plan == "Core"
    assert org.team_ids == (88001, 88002)
    assert org.next_reset == datetime(2026, 10, 3, 6, 12, 44, 120000, tzinfo=UTC)


def test_scenario_parser_tolerates_missing_and_extra_fields():
    items = load("scenarios.json")["scenarios"]
    deactivated = Scenario.parse(items[0])
    assert (deactivated.is_active, deactivated.is_invalid, deactivated.dlq_count) == (False, True, 3)
    assert deactivated.interval_s == 900
    assert deactivated.operations == 1204 and deactivated.centicredits == 120400
    webhook = Scenario.parse(items[1])
    assert webhook.hook_id == 9901 and webhook.interval_s is None and webhook.is_active
    assert webhook.raw["somethingNew"] == {"x": 1}


def test_scenario_without_id_is_malformed():
    with pytest.raises(MalformedEntry, match="missing 'id'"):
        Scenario.parse(load("scenarios.json")["scenarios"][2])


def test_audit_rows_are_not_executions():
    rows = load("scenario_logs.json")["scenarioLogs"]
    kinds = [(r.get("type"), is_execution_row(r)) for r in rows]
    assert kinds == [
        ("auto", True),
        ("stop", False),
        ("manual", True),
        ("modify", False),
        ("auto", True),
        ("auto", True),
    ]


def test_error_log_entry_keeps_name_message_and_counters():
    entry = LogEntry.parse(load("scenario_logs.json")["scenarioLogs"][0])
    assert entry.is_error
    assert entry.error_name == "DataError"
    assert entry.error_message.startswith("Function 'parseDate'")
    assert entry.id == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    assert (entry.duration_ms, entry.operations, entry.centicredits) == (412, 2, 200)
    assert entry.timestamp_ms == 1790000000900
    assert (entry.scenario_id, entry.team_id, entry.organization_id) == (410001, 88001, 77001)


def test_warning_entry_without_name_field_parses():
    entry = LogEntry.parse(load("scenario_logs.json")["scenarioLogs"][5])
    assert entry.is_warning and entry.scenario_name is None
    assert entry.error_name == "ExecutionInterruptedError"


def test_malformed_imt_id_is_rejected_not_crashing():
    with pytest.raises(MalformedEntry, match="malformed imtId"):
        LogEntry.parse(load("scenario_logs.json")["scenarioLogs"][4])


def test_imt_ids_order_by_time_even_when_lengths_differ():
    ids = ["1790000000900_ff", "999999999999_zz", "1790000000900_0a"]
    assert sorted(ids, key=imt_sort_key) == ["999999999999_zz", "1790000000900_0a", "1790000000900_ff"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("02-07-2026", date(2026, 7, 2)), ("2026-03-01", date(2026, 3, 1)), ("31-02-2026", None), (None, None)],
)
def test_usage_dates_in_both_formats(raw, expected):
    assert parse_usage_date(raw) == expected


def test_usage_days_parse_and_bad_dates_are_malformed():
    rows = load("usage.json")["data"]
    assert UsageDay.parse(rows[0]) == UsageDay(date(2026, 9, 20), 410, 10240, 41000)
    assert UsageDay.parse(rows[1]).day == date(2026, 9, 21)
    with pytest.raises(MalformedEntry):
        UsageDay.parse(rows[2])


def test_dlq_list_item_and_detail():
    item = Dlq.parse(load("dlqs.json")["dlqs"][0])
    assert item.reason == "Connection refused by api.xero.com" and item.attempts == 2
    detail = Dlq.parse(load("dlq_detail.json")["dlq"])
    assert detail.team_id == 88001  # companyId is the team, in Make's legacy naming
    assert detail.scenario_id == 410001 and detail.reason is None


def test_hook_queue_ratio():
    hook = Hook.parse(load("hooks.json")["hooks"][0])
    assert hook.queue_ratio == pytest.approx(0.9)
    assert hook.scenario_id == 410002


def test_a_slim_scenario_keeps_only_what_the_parser_reads_and_parses_the_same():
    """Issue 16.3: a listing kept every scenario's whole JSON."""
    from watcher.make.models import SCENARIO_KEYS

    parsed = 0
    for obj in load("scenarios.json")["scenarios"]:
        try:
            full = Scenario.parse(obj)
        except MalformedEntry:
            continue  # (the fixture's broken entries)
        parsed += 1
        slim = full.slim()
        assert slim == full and set(slim.raw) <= set(SCENARIO_KEYS)
        assert Scenario.parse(slim.raw) == full
        assert set(obj) - set(SCENARIO_KEYS), "the fixture has keys nobody reads"
        assert not (set(obj) - set(SCENARIO_KEYS)) & set(slim.raw)
    assert parsed >= 2


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.text(max_size=8), st.dictionaries(st.sampled_from(["type", "interval"]), st.one_of(st.none(), st.integers(0, 9999), st.text(max_size=5))))


@given(st.dictionaries(st.sampled_from([*Scenario.__dataclass_fields__, "isActive", "islinked", "isinvalid", "isPaused", "teamId", "hookId", "dlqCount", "scheduling", "nextExec", "lastEdit", "iswaiting", "usedModules"]), _values), st.integers(1, 10**9))
def test_slimming_never_changes_what_a_scenario_parses_to(obj, sid):
    obj = {**obj, "id": sid}
    try:
        full = Scenario.parse(obj)
    except MalformedEntry:
        return
    assert Scenario.parse(full.slim().raw) == full
