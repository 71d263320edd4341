"""Fuzzing the Make API parsers and the client's list reads with mutated answers.

Entries start from the fixtures (written in the recorded live shapes) and are mutated: wrong
types, missing ids, nulls, strings for numbers, huge numbers, nan and inf (``json.loads``
reads ``NaN`` and ``1e999``), nested garbage, non-objects. A parser returns its dataclass,
each field of its declared type, or raises MalformedEntry (skip this entry). A list read keeps
every well-formed entry, drops the malformed ones, logs and counts each skip; nothing else
escapes. The client reads the answers from a real server on 127.0.0.1 that serves them.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import AppThread, json_paths, log_messages
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.clock import ScaledClock
from watcher.make import MakeApiError, MakeClient, MalformedEntry, models
from watcher.make.models import (
    AnalyticsEntry,
    Authorization,
    Dlq,
    ExecutionResult,
    Hook,
    LogEntry,
    Notification,
    Organization,
    Scenario,
    ScenarioConsumption,
    Team,
    UsageDay,
    User,
    error_rate_fraction,
    is_execution_row,
    notification_id_key,
    scenario_name_from_subject,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str, key: str) -> Any:
    return json.loads((FIXTURES / name).read_text())[key]


# Well-formed entries of each parser, in the recorded shapes (the fixtures hold malformed and
# audit entries too: they are kept, they are what the fuzzer mutates as well).
SEEDS: dict[Callable[[Any], Any], list[Any]] = {
    Scenario.parse: _fixture("scenarios.json", "scenarios"),
    LogEntry.parse: _fixture("scenario_logs.json", "scenarioLogs"),
    Dlq.parse: [*_fixture("dlqs.json", "dlqs"), _fixture("dlq_detail.json", "dlq")],
    Hook.parse: _fixture("hooks.json", "hooks"),
    Organization.parse: [_fixture("organization.json", "organization")],
    UsageDay.parse: _fixture("usage.json", "data"),
    Team.parse: [{"id": 88001, "name": "Ops", "organizationId": 77001}],
    User.parse: [{"id": 8535506, "name": "Ada", "email": "ada@example.com", "language": "en"}],
    Authorization.parse: [{"authUsed": "token", "scope": ["scenarios:read", "dlqs:read"]}],
    ScenarioConsumption.parse: [{"scenarioId": 410001, "operations": 12, "transfer": 0, "centicredits": 1200}],
    ExecutionResult.parse: [
        {"status": "ERROR", "outputs": None,
         "error": {"name": "DataError", "message": "bad", "causeModule": {"name": "json:ParseJSON"}}}
    ],
    # Guessed shapes (make-api.md §11.1-11.2): the simulator's and the variants of the fixtures.
    AnalyticsEntry.parse: _fixture("analytics.json", "analytics"),
    Notification.parse: _fixture("notifications.json", "notifications"),
}  # fmt: skip

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=10**400),  # huge
    st.floats(),  # nan and inf included
    st.text(max_size=20),
    st.sampled_from(["", "0", "-1", "1.5", " 42 ", "1e999", "NaN", "inf", "9" * 5000, "-" + "9" * 30,
                     "2026-13-45T99:00:00Z", "1790000000900_x", "_", "x_y", "20-09-2026", "true"]),
)  # fmt: skip
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated(draw: st.DrawFn, seed: Any) -> Any:
    """``seed`` after one to three mutations of any of its fields (or of itself)."""
    obj = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(json_paths(obj))))
        if not path:
            obj = draw(JSON)
            continue
        parent = obj
        for part in path[:-1]:
            parent = parent[part]
        op = draw(st.sampled_from(["replace", "replace", "delete", "null", "stringify"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "null":
            parent[path[-1]] = None
        elif op == "stringify":
            parent[path[-1]] = json.dumps(parent[path[-1]])
        else:
            parent[path[-1]] = draw(JSON)
    return obj


def _entries(parse: Callable[[Any], Any]) -> st.SearchStrategy[Any]:
    seeds = SEEDS[parse]
    return st.one_of(st.sampled_from(seeds), st.sampled_from(seeds).flatmap(mutated), JSON)


# --- the parsers ------------------------------------------------------------------------


def _has_type(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(_has_type(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def assert_well_typed(parsed: Any) -> None:
    """Every field of the parsed dataclass (nested ones too) holds its declared type."""
    hints = typing.get_type_hints(type(parsed), vars(models))
    for f in dataclasses.fields(parsed):
        value = getattr(parsed, f.name)
        assert _has_type(value, hints[f.name]), f"{type(parsed).__name__}.{f.name} = {value!r:.80}"
        if dataclasses.is_dataclass(value):
            assert_well_typed(value)


def parse_or_skip(parse: Callable[[Any], Any], obj: Any) -> Any | None:
    """The parser's result (checked), or None when it says the entry is malformed."""
    try:
        parsed = parse(obj)
    except MalformedEntry as exc:
        assert str(exc)
        return None
    assert_well_typed(parsed)
    if isinstance(parsed, LogEntry):
        assert parsed.timestamp_ms == models.imt_sort_key(parsed.imt_id)[0]
    return parsed


def test_every_seed_parses_or_is_a_known_malformed_fixture():
    parsed = {parse.__qualname__: sum(parse_or_skip(parse, s) is not None for s in seeds)
              for parse, seeds in SEEDS.items()}  # fmt: skip
    # scenarios.json holds one without an id, scenario_logs.json two audit rows and one bad
    # imtId, usage.json a day called "yesterday", analytics.json a row without a scenario id,
    # notifications.json a notice without an id: the rest must parse.
    assert parsed == {
        "Scenario.parse": 2, "LogEntry.parse": 3, "Dlq.parse": 2, "Hook.parse": 1,
        "Organization.parse": 1, "UsageDay.parse": 2, "Team.parse": 1, "User.parse": 1,
        "Authorization.parse": 1, "ScenarioConsumption.parse": 1, "ExecutionResult.parse": 1,
        "AnalyticsEntry.parse": 3, "Notification.parse": 4,
    }  # fmt: skip


@pytest.mark.parametrize("parse", list(SEEDS), ids=lambda p: p.__qualname__)
@given(data=st.data())
def test_a_parser_returns_a_well_typed_value_or_says_the_entry_is_malformed(parse, data):
    parse_or_skip(parse, data.draw(_entries(parse)))


# What the fuzzer found, each a crash (an exception other than MalformedEntry) or a field of
# the wrong type before the fix: (parser, entry, field, value after the fix).
FOUND = [
    (Scenario.parse, {"id": 1, "operations": float("inf")}, "operations", 0),  # OverflowError
    (Scenario.parse, {"id": 1, "dlqCount": "9" * 5000}, "dlq_count", 0),  # OverflowError
    (Scenario.parse, {"id": 1, "nextExec": 1e20}, "next_exec", None),  # year out of range
    (Scenario.parse, {"id": 1, "lastEdit": float("nan")}, "last_edit", None),  # ValueError
    (Scenario.parse, {"id": 1, "scheduling": {"type": ["x"]}}, "scheduling_type", None),
    (Organization.parse, {"id": 1, "teams": 5}, "team_ids", ()),  # TypeError: not iterable
    (Organization.parse, {"id": 1, "zone": {"a": 1}}, "zone", None),
    (Authorization.parse, {"authUsed": "token", "scope": 3}, "scopes", ()),  # TypeError
    (Dlq.parse, {"id": "a1", "reason": []}, "reason", None),
    (User.parse, {"id": 1, "email": []}, "email", None),
    (ExecutionResult.parse, {"status": "ERROR", "error": {"name": []}}, "error_name", None),
    (LogEntry.parse, {"imtId": "1790000000900_ab", "status": 3, "scenarioName": 7}, "scenario_name", "7"),
]  # fmt: skip
MALFORMED = [
    (LogEntry.parse, {"imtId": "99999999999999999999_ab", "status": 3}),  # OverflowError
    (Dlq.parse, {"id": {"a": 1}}),  # became the id "{'a': 1}"
    (Dlq.parse, {"id": "../../scenarios"}),  # an id that moves the path of GET /dlqs/{id}
    (LogEntry.parse, {"imtId": "1790000000900_ab", "status": 3, "id": ["x"]}),
]


@pytest.mark.parametrize(("parse", "obj", "name", "value"), FOUND, ids=lambda v: getattr(v, "__qualname__", None))
def test_what_the_fuzzer_found_parses_to_a_well_typed_value(parse, obj, name, value):
    parsed = parse_or_skip(parse, obj)
    assert parsed is not None and getattr(parsed, name) == value


@pytest.mark.parametrize(("parse", "obj"), MALFORMED, ids=lambda v: getattr(v, "__qualname__", None))
def test_what_the_fuzzer_found_is_a_malformed_entry(parse, obj):
    with pytest.raises(MalformedEntry):
        parse(obj)


# --- the client's reads, from a real server serving the fuzzed answers -------------------

ANSWER: dict[str, str] = {"text": "{}"}
# Each example is a request over a socket: fewer than the parsers' pure examples, to stay fast
# (the "thorough" profile still multiplies them).
CLIENT_EXAMPLES = max(15, settings.default.max_examples // 4)


async def _canned(request: web.Request) -> web.Response:
    return web.Response(text=ANSWER["text"], content_type="application/json")


@pytest.fixture(scope="module")
def canned_server() -> Iterator[str]:
    """A server on 127.0.0.1 answering every GET with ``ANSWER["text"]``: its base URL."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", _canned)
    with AppThread(app) as server:
        yield f"http://127.0.0.1:{server.port}/api/v2"


def read(base_url: str, method: str, kwargs: dict[str, Any], answer: Any) -> tuple[MakeClient, Any]:
    """Serve ``answer``, call ``client.method(**kwargs)``: (the client, what it returned)."""
    ANSWER["text"] = json.dumps(answer)

    async def call() -> tuple[MakeClient, Any]:
        async with aiohttp.ClientSession() as session:
            # One attempt: a malformed body would otherwise be retried after a backoff.
            client = MakeClient(session, base_url, "t", clock=ScaledClock(1000.0), max_attempts=1)
            return client, await getattr(client, method)(**kwargs)

    return asyncio.run(call())


LISTS = [
    ("list_scenarios", {"organization_id": 1}, "scenarios", Scenario.parse),
    ("list_organizations", {}, "organizations", Organization.parse),
    ("list_teams", {"organization_id": 1}, "teams", Team.parse),
    ("list_dlqs", {"scenario_id": 1}, "dlqs", Dlq.parse),
    ("list_hooks", {"team_id": 1}, "hooks", Hook.parse),
    ("organization_usage", {"organization_id": 1}, "data", UsageDay.parse),
    ("scenario_consumptions", {"organization_id": 1}, "scenarioConsumptions", ScenarioConsumption.parse),
    ("list_scenario_logs", {"scenario_id": 1}, "scenarioLogs", LogEntry.parse),
]  # fmt: skip


def _dedup_key(id_key: str) -> Callable[[Any], str]:
    """What a read de-duplicates entries by (logs: imtId, pages: id), so each is sent once."""

    def key(entry: Any) -> str:
        if isinstance(entry, dict) and isinstance(entry.get(id_key), str | int):
            return repr(entry[id_key])
        return json.dumps(entry, sort_keys=True)

    return key


@pytest.mark.parametrize(("method", "kwargs", "key", "parse"), LISTS, ids=[m for m, *_ in LISTS])
@settings(max_examples=CLIENT_EXAMPLES)
@given(data=st.data())
def test_a_list_keeps_every_well_formed_entry_and_skips_counts_and_logs_the_rest(
    canned_server, method, kwargs, key, parse, data
):
    id_key = "imtId" if parse == LogEntry.parse else "id"
    entries = data.draw(st.lists(_entries(parse), max_size=8, unique_by=_dedup_key(id_key)))
    if parse == LogEntry.parse:  # audit rows (start, stop) are no executions: left out, silently
        entries_read = [e for e in entries if not isinstance(e, dict) or is_execution_row(e)]
    else:
        entries_read = entries
    expected = [parse_or_skip(parse, e) for e in entries_read]
    good = [p for p in expected if p is not None]
    if parse == LogEntry.parse:
        good.sort(key=lambda e: models.imt_sort_key(e.imt_id))

    with log_messages() as logged:
        client, got = read(canned_server, method, kwargs, {key: entries, "pg": {"limit": 100}})

    assert got == good
    skips = [m for m in logged if m.startswith("skipping malformed")]
    assert client.entries_skipped == len(skips) == expected.count(None)


GETS = [
    ("get_organization", {"organization_id": 1}, "organization", Organization.parse),
    ("get_scenario", {"scenario_id": 1}, "scenario", Scenario.parse),
    ("get_team", {"team_id": 1}, "team", Team.parse),
    ("get_dlq", {"dlq_id": "a1"}, "dlq", Dlq.parse),
    ("get_hook", {"hook_id": 1}, "hook", Hook.parse),
    ("get_scenario_log", {"scenario_id": 1, "execution_id": "a1"}, "scenarioLog", LogEntry.parse),
    ("me", {}, "authUser", User.parse),
    ("current_authorization", {}, "authorization", Authorization.parse),
    ("get_execution", {"scenario_id": 1, "execution_id": "a1"}, None, ExecutionResult.parse),
]  # fmt: skip


@pytest.mark.parametrize(("method", "kwargs", "key", "parse"), GETS, ids=[m for m, *_ in GETS])
@settings(max_examples=CLIENT_EXAMPLES)
@given(data=st.data())
def test_a_single_read_returns_the_parsed_entry_or_raises_a_documented_error(
    canned_server, method, kwargs, key, parse, data
):
    entry = data.draw(_entries(parse))
    answer = data.draw(st.sampled_from([{key: entry} if key else entry, entry]) | JSON)
    try:
        _, got = read(canned_server, method, kwargs, answer)
    except (MakeApiError, MalformedEntry):
        return
    assert got == parse_or_skip(parse, answer[key] if key else answer)


def test_what_the_fuzzer_found_in_list_reads(canned_server):
    # An id that is a list made paging's de-duplication raise TypeError (unhashable); a log
    # row whose type is a list made is_execution_row raise it. Both failed the whole read.
    client, got = read(canned_server, "list_scenarios", {"organization_id": 1},
                       {"scenarios": [{"id": [1]}, {"id": 5}, {"id": True}]})  # fmt: skip
    assert [s.id for s in got] == [5] and client.entries_skipped == 2
    good = {"imtId": "1790000000900_ab", "status": 3}
    client, got = read(canned_server, "list_scenario_logs", {"scenario_id": 1},
                       {"scenarioLogs": [{**good, "imtId": "1790000000800_cd", "type": []}, good]})  # fmt: skip
    assert [e.imt_id for e in got] == ["1790000000900_ab"] and client.entries_skipped == 0


# --- the signal reads: guessed shapes, so any wrapper ---------------------------------------

SIGNAL_LISTS = [
    ("organization_analytics", {"organization_id": 1, "date_from": "2026-07-01", "date_to": "2026-07-02"},
     "analytics", AnalyticsEntry.parse),
    ("notifications", {}, "notifications", Notification.parse),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "kwargs", "key", "parse"), SIGNAL_LISTS, ids=[m for m, *_ in SIGNAL_LISTS]
)
@settings(max_examples=CLIENT_EXAMPLES)
@given(data=st.data())
def test_a_signal_read_keeps_every_well_formed_entry_under_any_wrapper(
    canned_server, method, kwargs, key, parse, data
):
    entries = data.draw(st.lists(_entries(parse), max_size=8))
    wrapper = data.draw(st.sampled_from([key, "data", "items", "scenarios"]))
    expected = [parse_or_skip(parse, e) for e in entries]
    good: dict[Any, Any] = {}
    for p in expected:  # the first of each id is kept
        if p is not None:
            good.setdefault(p.scenario_id if parse == AnalyticsEntry.parse else p.id, p)
    want = list(good.values())
    if parse == Notification.parse:  # oldest first
        want.sort(key=lambda n: notification_id_key(n.id))

    with log_messages() as logged:
        client, got = read(canned_server, method, kwargs, {wrapper: entries, "pg": {"limit": 100}})

    assert got == want
    skips = [m for m in logged if m.startswith("skipping malformed")]
    assert client.entries_skipped == len(skips) == expected.count(None)


@given(subject=JSON | st.text(max_size=80).map(lambda t: f"Encountered error in {t} scenario"))
def test_a_subject_gives_a_name_or_none_and_never_raises(subject):
    name = scenario_name_from_subject(subject)
    assert name is None or (isinstance(name, str) and name == name.strip() and name)


@given(
    value=JSON,
    errors=st.none() | st.integers(0, 10**6),
    executions=st.none() | st.integers(0, 10**6),
)
def test_an_error_rate_is_a_fraction_or_none(value, errors, executions):
    rate = error_rate_fraction(value, errors, executions)
    assert rate is None or (isinstance(rate, float) and 0 <= rate <= 1)
