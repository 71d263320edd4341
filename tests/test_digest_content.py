"""What the daily digest says (alerts.digest.build_digest) and how it renders.

One seeded store in Europe/Paris, with a period that crosses the end of summer time
(2026-10-24 08:00 CEST to 2026-10-25 08:00 CET: 25 hours), two organizations, and every
kind of fact the digest reports, inside and outside the period.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import html
import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts.digest import Digest, OrgDigest, build_digest
from alerts.render import Renderer
from watcher.store import Store, insert_events

PARIS = ZoneInfo("Europe/Paris")
ACME, GLOBEX = 1, 2
ACME_UI = "https://eu1.make.com"
GLOBEX_UI = "https://us1.make.com"
EVIL = "<script>alert(1)</script>"


def paris(month: int, day: int, hour: int, minute: int = 0, fold: int = 0) -> float:
    return datetime(2026, month, day, hour, minute, tzinfo=PARIS, fold=fold).timestamp()


START = paris(10, 24, 8)  # CEST, UTC+2
END = paris(10, 25, 8)  # CET, UTC+1: the period is 25 hours long
NOW = END + 120


# --- seeding ------------------------------------------------------------------------------


def org_row(org_id: int, name: str, ui: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": org_id,
        "name": name,
        "base_url": f"{ui}/api/v2",
        "plan": "core",
        "api_limit": 60,
        "usage_json": json.dumps(usage),
        "updated_at": NOW - 600,
    }


def scenario(sid: int, org_id: int, name: str, **columns: Any) -> dict[str, Any]:
    row = {
        "id": sid,
        "org_id": org_id,
        "team_id": 7,
        "name": name,
        "is_active": 1,
        "is_invalid": 0,
        "is_paused": 0,
        "dlq_count": 0,
    }
    return row | columns


class Events:
    """Builds event rows (with unique keys) and the decisions (``events.reason``) to set on
    them afterwards; ``reason`` in a payload is a DLQ item's reason."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.reasons: dict[str, str] = {}

    def add(
        self,
        kind: str,
        org_id: int,
        sid: int | None,
        at: float,
        decided: str | None = None,
        **payload: Any,
    ) -> None:
        key = f"{kind}:{org_id}:{sid}:{len(self.rows)}"
        ui = ACME_UI if org_id == ACME else GLOBEX_UI
        base: dict[str, Any] = {}
        if sid is not None:
            base = {
                "scenario_url": f"{ui}/7/scenarios/{sid}/edit",
                "history_url": f"{ui}/7/scenarios/{sid}/logs",
            }
        self.rows.append(
            {
                "key": key,
                "kind": kind,
                "severity": "error",
                "org_id": org_id,
                "team_id": 7,
                "scenario_id": sid,
                "occurred_at": at,
                "detected_at": at + 30,
                "payload": base | payload,
            }
        )
        if decided:
            self.reasons[key] = decided

    def error(self, org_id: int, sid: int, at: float, name: str, message: str, decided: str | None = None) -> None:
        ui = ACME_UI if org_id == ACME else GLOBEX_UI
        run = f"{ui}/7/scenarios/{sid}/logs/run{len(self.rows)}?showCheckRuns=true"
        self.add("execution_error", org_id, sid, at, decided, error_name=name, error_message=message, run_url=run)


def seed(db: Any) -> None:
    db["organizations"].insert_all(
        [
            org_row(
                ACME,
                "Acme Ops",
                ACME_UI,
                {
                    "operations_used": 9200,
                    "operations_limit": 10000,
                    "used_pct": 92.0,
                    "daily_rate": 400.0,
                    "forecast_exhausted_at": NOW + 2 * 86400,
                    "next_reset": NOW + 9 * 86400,
                    "updated_at": NOW - 600,
                },
            ),
            org_row(
                GLOBEX,
                "Globex",
                GLOBEX_UI,
                {
                    "operations_used": 400,
                    "operations_limit": 1000,
                    "used_pct": 40.0,
                    "daily_rate": 10.0,
                    "forecast_exhausted_at": NOW + 60 * 86400,
                    "next_reset": NOW + 9 * 86400,
                    "updated_at": NOW - 600,
                },
            ),
        ]
    )
    db["scenarios"].insert_all(
        [
            scenario(101, ACME, "Sync HubSpot"),
            scenario(102, ACME, EVIL),
            scenario(103, ACME, "Invoice export", is_active=0, is_invalid=1, dlq_count=4),
            scenario(104, ACME, "Slack notifier"),
            scenario(105, ACME, "Orders webhook", dlq_count=3),
            scenario(106, ACME, "Old backlog"),
            scenario(107, ACME, "Stopped by hand", is_active=0),
            scenario(201, GLOBEX, "Globex CRM"),
        ]
    )

    e = Events()
    # Acme, before the period: 101 already failed (so it recurs), and DataError is known.
    e.error(ACME, 101, paris(10, 21, 12), "DataError", "old failure", "first")
    e.error(ACME, 101, paris(10, 24, 7), "DataError", "just before the period", "first")
    e.add("scenario_deactivated", ACME, 104, paris(10, 22, 9), "first")
    e.add("incomplete_executions", ACME, 105, paris(10, 23, 9), "first", reason="old item")
    # Acme, in the period.
    e.error(ACME, 101, paris(10, 24, 10), "DataError", "Field email missing", "first")
    e.error(ACME, 101, paris(10, 25, 0, 30), "DataError", "Field email missing", "grouped")
    e.error(ACME, 101, paris(10, 25, 7, 30), "ConnectionError", "HubSpot timed out", "within repeat interval")
    e.error(ACME, 102, paris(10, 24, 15), "RateLimitError", "429 from the API", "silenced")
    e.error(ACME, 102, paris(10, 25, 2, 30, fold=0), "RateLimitError", "429 again", "inhibited")
    e.add("scenario_deactivated", ACME, 103, paris(10, 24, 11), "first", standing=False)
    e.add("scenario_reactivated", ACME, 104, paris(10, 24, 12), "resolved")
    e.add("incomplete_executions", ACME, 105, paris(10, 24, 13), "flood-capped", reason="Connection expired", dlq_url=f"{ACME_UI}/7/scenarios/105/dlqs")
    e.add("incomplete_executions", ACME, 105, paris(10, 24, 14), "grouped", reason="Connection expired")
    e.add("incomplete_executions", ACME, 106, paris(10, 24, 16), "resolved", cleared=True, dlq_count=0)
    e.add("quota", ACME, None, paris(10, 24, 18), "first", threshold_pct=90, used_pct=92.0)
    e.add("watcher_health", ACME, None, paris(10, 24, 20), "first", problem="unreachable", failures=3, error="503")
    # Acme, after the period: counted nowhere.
    e.error(ACME, 101, paris(10, 25, 9), "DataError", "after the period", None)
    # Globex: its first DataError ever (new there, although Acme knows it).
    e.error(GLOBEX, 201, paris(10, 24, 9), "DataError", "Bad record", "first")
    insert_events(db, e.rows)
    for key, reason in e.reasons.items():
        db.execute("UPDATE events SET reason = ?, processed_at = ? WHERE key = ?", [reason, NOW, key])

    def outbox(channel: str, org_id: int | None, status: str, sent_at: float | None, kind: str = "firing") -> dict[str, Any]:
        return {
            "channel": channel,
            "kind": kind,
            "payload_json": json.dumps({"kind": "execution_error", "alert": {"org_id": org_id}}),
            "status": status,
            "attempts": 1,
            "created_at": (sent_at or START) - 5,
            "sent_at": sent_at,
        }

    db["outbox"].insert_all(
        [
            outbox("ops-slack", ACME, "sent", START + 3600),
            outbox("ops-slack", ACME, "sent", START + 7200),
            outbox("mail", ACME, "sent", START + 7300),
            outbox("mail", ACME, "sent", START - 60),  # before the period
            outbox("mail", ACME, "pending", None),
            outbox("mail", ACME, "parked", START + 100),
            outbox("client-globex", GLOBEX, "sent", START + 600),
            outbox("ops-slack", None, "sent", START + 3700, kind="summary"),
        ]
    )

    def silence(matchers: dict[str, Any], starts: float, ends: float, reason: str, expired: float | None = None) -> dict[str, Any]:
        return {
            "matchers_json": json.dumps(matchers),
            "starts_at": starts,
            "ends_at": ends,
            "reason": reason,
            "created_by": "lead",
            "created_at": starts,
            "expired_at": expired,
        }

    db["silences"].insert_all(
        [
            silence({"scenario_id": 102}, START, END + 86400, "vendor outage"),
            silence({"org": "Globex", "kind": "quota"}, START, END + 3600, "known overage"),
            silence({"scenario_id": 101}, START, END + 3600, "expired early", expired=START + 60),
            silence({"scenario_id": 101}, START, END - 60, "ended before the end"),
            silence({"scenario_id": 101}, END + 60, END + 3600, "starts later"),
        ]
    )

    cycles = [
        {"org_id": ACME, "started_at": START - 120, "requests": 99, "budget_per_minute": 30, "ok": 1},
        {"org_id": GLOBEX, "started_at": START - 120, "requests": 99, "budget_per_minute": 15, "ok": 1},
    ]
    for hour in range(25):
        failed = hour in (5, 20)
        cycles.append(
            {
                "org_id": ACME,
                "started_at": START + hour * 3600,
                "requests": 10,
                "budget_per_minute": 60 if hour == 12 else 30,
                "ok": 0 if failed else 1,
                "error": f"Make API 50{2 if hour == 20 else 3}: Bad gateway" if failed else None,
            }
        )
        cycles.append(
            {"org_id": GLOBEX, "started_at": START + hour * 3600, "requests": 5, "budget_per_minute": 15, "ok": 1}
        )
    db["cycles"].insert_all(cycles)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "s.db")
    try:
        s.write_sync(seed)
        yield s
    finally:
        s.close()


def digest_of(store: Store, organizations: list[str] | None = None, **kwargs: Any) -> Digest:
    return store.read_sync(
        lambda db: build_digest(
            db,
            period_start=kwargs.get("start", START),
            period_end=kwargs.get("end", END),
            timezone="Europe/Paris",
            organizations=organizations,
            now=NOW,
            budget_share_note=kwargs.get("note"),
        )
    )


def org(digest: Digest, name: str) -> OrgDigest:
    return next(o for o in digest.organizations if o.name == name)


# --- HTML helpers -------------------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "link", "input"}
BLOCK = {"br", "p", "div", "td", "th", "tr", "table", "li"}


class Page(HTMLParser):
    """Collects tags, attributes, visible text; checks that elements nest and close."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in BLOCK:
            self.text.append(" ")
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join("".join(self.text).split())


def parse(source: str) -> Page:
    page = Page()
    page.feed(source)
    page.close()
    return page


def flat(text: str) -> str:
    return " ".join(text.split())


# --- content ------------------------------------------------------------------------------


def test_it_counts_errors_by_scenario_with_recurring_flags_and_last_error(store: Store) -> None:
    d = digest_of(store)
    acme = org(d, "Acme Ops")
    assert acme.errors_total == 5
    assert [(s.scenario_name, s.count, s.recurring) for s in acme.errors] == [
        ("Sync HubSpot", 3, True),
        (EVIL, 2, False),
    ]
    hub = acme.errors[0]
    assert (hub.last_error_name, hub.last_error_message) == ("ConnectionError", "HubSpot timed out")
    assert hub.last_at.local == "2026-10-25 07:30 CET"
    assert hub.first_at.local == "2026-10-24 10:00 CEST"
    assert hub.error_names == ("DataError", "ConnectionError")
    assert hub.links.scenario_url == f"{ACME_UI}/7/scenarios/101/edit"
    assert hub.links.history_url == f"{ACME_UI}/7/scenarios/101/logs"
    assert hub.links.run_url is not None and hub.links.run_url.startswith(f"{ACME_UI}/7/scenarios/101/logs/run")
    globex = org(d, "Globex")
    assert [(s.scenario_name, s.count, s.recurring) for s in globex.errors] == [("Globex CRM", 1, False)]
    assert (d.errors_total, d.scenarios_with_errors) == (6, 3)


def test_new_error_kinds_are_names_never_seen_before_in_that_organization(store: Store) -> None:
    d = digest_of(store)
    acme = org(d, "Acme Ops")
    assert [(k.error_name, k.count, k.scenarios) for k in acme.new_error_kinds] == [
        ("RateLimitError", 2, (EVIL,)),
        ("ConnectionError", 1, ("Sync HubSpot",)),
    ]
    assert [k.error_name for k in org(d, "Globex").new_error_kinds] == ["DataError"]


def test_it_reports_deactivations_reactivations_and_scenarios_still_off(store: Store) -> None:
    acme = org(digest_of(store), "Acme Ops")
    assert [(c.scenario_name, c.still_off, c.at.local) for c in acme.deactivated] == [
        ("Invoice export", True, "2026-10-24 11:00 CEST")
    ]
    assert [(c.scenario_name, c.still_off) for c in acme.reactivated] == [("Slack notifier", False)]
    # A scenario stopped by hand (is_invalid 0) is not "switched off by Make".
    assert [(s.scenario_name, s.dlq_count) for s in acme.still_off] == [("Invoice export", 4)]
    assert acme.still_off[0].since is not None and acme.still_off[0].since.local == "2026-10-24 11:00 CEST"
    assert acme.still_off[0].links.scenario_url == f"{ACME_UI}/7/scenarios/103/edit"


def test_dlq_backlog_counts_what_waits_now_and_what_changed_in_the_period(store: Store) -> None:
    dlq = org(digest_of(store), "Acme Ops").dlq
    assert (dlq.total_now, dlq.scenarios_now, dlq.new_items, dlq.cleared) == (7, 2, 2, 1)
    assert [(q.scenario_name, q.dlq_count, q.new_items, q.cleared) for q in dlq.scenarios] == [
        ("Invoice export", 4, 0, 0),
        ("Orders webhook", 3, 2, 0),
        ("Old backlog", 0, 0, 1),
    ]
    orders = dlq.scenarios[1]
    assert orders.last_reason == "Connection expired"
    assert orders.links.dlq_url == f"{ACME_UI}/7/scenarios/105/dlqs"
    # A link derived from the organization's base URL when no event carried one.
    assert dlq.scenarios[0].links.dlq_url == f"{ACME_UI}/7/scenarios/103/dlqs"


def test_quota_shows_the_bar_and_flags_a_forecast_before_the_reset(store: Store) -> None:
    d = digest_of(store)
    q = org(d, "Acme Ops").quota
    assert q is not None
    assert (q.operations_used, q.operations_limit, q.used_pct, q.bar_pct, q.level) == (9200, 10000, 92.0, 92, "critical")
    assert q.exhausts_before_reset and q.days_left == 2.0
    assert q.forecast_exhausted_at is not None and q.forecast_exhausted_at.epoch == NOW + 2 * 86400
    assert [(e.threshold_pct, e.used_pct) for e in q.events] == [(90.0, 92.0)]
    globex = org(d, "Globex").quota
    assert globex is not None and (globex.level, globex.exhausts_before_reset) == ("ok", False)
    assert d.quota_alerts == ("Acme Ops",)


def test_notifications_are_counted_by_channel_and_by_decision(store: Store) -> None:
    d = digest_of(store)
    n = org(d, "Acme Ops").notifications
    assert n.sent == 3
    assert [(c.channel, c.count) for c in n.by_channel] == [("ops-slack", 2), ("mail", 1)]
    # grouped: 101's "grouped" + "within repeat interval" + 105's second DLQ item.
    assert (n.grouped, n.held_back, n.silenced, n.inhibited, n.no_route, n.parked) == (3, 1, 1, 1, 0, 1)
    assert [(c.channel, c.count) for c in org(d, "Globex").notifications.by_channel] == [("client-globex", 1)]
    assert d.flood_summaries_sent == 1


def test_only_silences_in_force_at_the_end_of_the_period_are_listed(store: Store) -> None:
    d = digest_of(store)
    assert [(s.reason, s.matchers_text) for s in d.silences] == [
        ("known overage", "kind quota, organization Globex"),
        ("vendor outage", f"scenario {EVIL} (102)"),
    ]
    assert d.silences[1].ends_at.epoch == END + 86400 and d.silences[1].created_by == "lead"


def test_watcher_health_sums_requests_against_a_budget_held_between_cycles(store: Store) -> None:
    h = org(digest_of(store, note="makewatch uses 50 % of the API limit"), "Acme Ops").health
    assert (h.cycles, h.requests, h.failed_polls) == (25, 250, 2)
    # 25 hours: 24 at 30 requests a minute (the cycle before the period covers its start),
    # the hour after the 12th cycle at 60.
    assert h.budget == 30 * 24 * 60 + 60 * 60
    assert h.budget_used_pct == round(100 * 250 / 46800, 1)
    assert h.last_error == "Make API 502: Bad gateway"
    assert h.last_error_at is not None and h.last_error_at.epoch == START + 20 * 3600
    assert h.last_poll_ok is True
    assert [(e.problem, e.recovered) for e in h.events] == [("unreachable", False)]
    assert h.note == "makewatch uses 50 % of the API limit"


def test_the_chart_has_one_bar_per_digest_period_on_one_scale_across_organizations(store: Store) -> None:
    d = digest_of(store)
    acme, globex = org(d, "Acme Ops").chart, org(d, "Globex").chart
    # The last bar is the digest's own period (25 hours across the DST change), no stub.
    assert (acme[-1].start.epoch, acme[-1].end.epoch) == (START, END)
    assert [(b.start.local, b.end.local) for b in acme[-2:]] == [
        ("2026-10-23 08:00 CEST", "2026-10-24 08:00 CEST"),
        ("2026-10-24 08:00 CEST", "2026-10-25 08:00 CET"),
    ]
    assert all(a.end == b.start for a, b in zip(acme, acme[1:], strict=False))
    assert [b.label for b in acme] == ["Mon 19", "Tue 20", "Wed 21", "Thu 22", "Fri 23", "Sat 24", "Sun 25"]
    # 07:00 on the 24th belongs to the period ending at 08:00 that day, not to "the 24th".
    assert [b.count for b in acme] == [0, 0, 0, 1, 0, 1, 5]
    assert [b.count for b in globex] == [0, 0, 0, 0, 0, 0, 1]
    # One scale: Globex's single error is a fifth of Acme's busiest bar, not a full bar.
    assert d.chart_max == 5 and acme[-1].ratio == 1.0 and globex[-1].ratio == 0.2


def test_chart_labels_are_in_the_recipients_zone(store: Store) -> None:
    d = store.read_sync(
        lambda db: build_digest(
            db, period_start=START, period_end=END, timezone="Pacific/Auckland", organizations=None, now=NOW
        )
    )
    # 08:00 CET on the 25th is 20:00 NZDT on the 25th; a day earlier is the 24th there too.
    assert [b.end.local for b in org(d, "Acme Ops").chart[-2:]] == ["2026-10-24 19:00 NZDT", "2026-10-25 20:00 NZDT"]


def test_the_digest_is_json_able_and_built_from_a_read_only_snapshot(store: Store) -> None:
    d = digest_of(store)
    assert json.loads(json.dumps(dataclasses.asdict(d)))["errors_total"] == 6
    assert digest_of(store) == d  # same store, same digest: no hidden clock


def test_the_organizations_filter_keeps_only_the_named_ones(store: Store) -> None:
    d = digest_of(store, ["acme ops", "Nope"])
    assert [o.name for o in d.organizations] == ["Acme Ops"]
    assert d.missing_organizations == ("Nope",)
    assert (d.errors_total, d.scenarios_with_errors) == (5, 2)
    assert [s.reason for s in d.silences] == ["vendor outage"]  # Globex's silence is not shown
    assert not d.quiet


# --- rendering ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_the_subject_is_one_line_with_the_headline(store: Store, renderer: Renderer) -> None:
    subject, _, _ = renderer.render_digest(digest_of(store))
    assert subject == (
        "[makewatch] Daily digest 2026-10-25: 6 errors in 3 scenarios, 1 scenario off, "
        "7 incomplete executions, quota 92 % (Acme Ops), 2 failed polls, 1 makewatch health problem"
    )


def test_the_subject_stays_one_line_whatever_the_names(store: Store, renderer: Renderer) -> None:
    def rename(db: Any) -> None:
        db.execute("UPDATE organizations SET name = ? WHERE id = 1", ["Acme\r\nBcc: x@evil.example"])

    store.write_sync(rename)
    subject, _, _ = renderer.render_digest(digest_of(store))
    assert "\n" not in subject and "\r" not in subject
    assert "quota 92 % (Acme Bcc: x@evil.example)" in subject


def test_text_and_html_both_say_every_fact(store: Store, renderer: Renderer) -> None:
    d = digest_of(store)
    _, text, source = renderer.render_digest(d)
    page = parse(source)
    text, visible = flat(text), page.visible
    facts = [
        "2026-10-24 08:00 CEST to 2026-10-25 08:00 CET (Europe/Paris)",
        "Errors: 5 errors in 2 scenarios",
        "Errors: 1 error in 1 scenario",
        "Sync HubSpot",
        EVIL,
        "Globex CRM",
        "recurring",
        "first time",
        "ConnectionError: HubSpot timed out",
        "last 2026-10-25 07:30 CET",
        "New error kinds: RateLimitError (2, in <script>alert(1)</script>), ConnectionError (1, in Sync HubSpot)",
        "Invoice export at 2026-10-24 11:00 CEST, still off",
        "Slack notifier at 2026-10-24 12:00 CEST",
        "Still off now: 1 scenario",
        "Incomplete executions: 7 waiting in 2 scenarios; 2 new in the period, 1 backlog cleared",
        "Orders webhook",
        "Connection expired",
        "92 % (9,200 of 10,000 operations)",
        "400 a day on average (makewatch's estimate); runs out around 2026-10-27 08:02 CET (in 2.0 days); resets 2026-11-03 08:02 CET",
        "WARNING: the quota runs out before the reset",
        "Crossed 90 % at 2026-10-24 18:00 CEST",
        "3 sent (ops-slack 2, mail 1); 3 grouped, 1 held back (flood cap), 1 silenced, 1 inhibited, 1 undeliverable",
        "250 API requests of a budget of 46,800 (0.5 %) in 25 cycles; 2 failed polls",
        "Last error (2026-10-25 03:00 CET): Make API 502: Bad gateway",
        "2026-10-24 20:00 CEST: Make unreachable for several cycles",
        f"#1 scenario {EVIL} (102), until 2026-10-26 08:00 CET: vendor outage (lead)",
        "#2 kind quota, organization Globex",
        "Flood-cap summaries sent: 1",
    ]
    for fact in facts:
        assert fact in text, fact
        assert fact in visible, fact
    for s in org(d, "Acme Ops").errors:
        assert f"{s.scenario_name}: {s.count} errors" in text
    # The chart: every period's label and count, in both parts.
    for bar in org(d, "Acme Ops").chart:
        assert bar.label in text and bar.label in visible


def test_the_html_is_mail_client_safe_and_escapes_user_text(store: Store, renderer: Renderer) -> None:
    _, _, source = renderer.render_digest(digest_of(store))
    page = parse(source)
    assert page.errors == [] and page.stack == []
    assert {"html", "body", "table", "tr", "td", "a"} <= set(page.tags)
    assert not {"script", "style", "img", "link", "iframe", "form"} & set(page.tags)
    assert "<script>" not in source
    assert html.escape(EVIL, quote=False) in source
    assert not [a for a in page.attrs if a[1] == "src"]
    hrefs = [v for tag, k, v in page.attrs if k == "href"]
    assert hrefs and all(v and v.startswith((f"{ACME_UI}/7/scenarios/", f"{GLOBEX_UI}/7/scenarios/")) for v in hrefs)
    assert f"{ACME_UI}/7/scenarios/105/dlqs" in hrefs and f"{ACME_UI}/7/scenarios/101/logs" in hrefs
    assert "url(" not in source and "@import" not in source
    # The chart is table cells with pixel heights: the busiest day's bar is the full 60 px.
    assert "height: 60px; background: #e01e5a" in source
    # The quota bar is two cells, 92 % and 8 %.
    assert 'width="92%"' in source and 'width="8%"' in source


# --- all quiet ----------------------------------------------------------------------------


def seed_quiet(db: Any) -> None:
    db["organizations"].insert(
        org_row(3, "Calm Co", ACME_UI, {"operations_used": 100, "operations_limit": 1000, "used_pct": 10.0, "daily_rate": 5.0})
    )
    db["scenarios"].insert(scenario(301, 3, "Nightly backup"))
    db["cycles"].insert_all(
        [{"org_id": 3, "started_at": START + h * 3600, "requests": 4, "budget_per_minute": 30, "ok": 1} for h in range(25)]
    )
    # Before the period: errors that no longer matter.
    insert_events(
        db,
        [
            {"key": "old", "kind": "execution_error", "org_id": 3, "scenario_id": 301, "occurred_at": START - 3 * 86400, "payload": {"error_name": "DataError"}},
        ],
    )


def test_an_all_quiet_digest_is_short_and_says_so(tmp_path: Path, renderer: Renderer) -> None:
    with Store.open(tmp_path / "quiet.db") as store:
        store.write_sync(seed_quiet)
        d = digest_of(store)
    assert d.quiet and d.organizations[0].quiet
    assert [c.count for c in d.organizations[0].chart] == [0, 0, 0, 1, 0, 0, 0]  # the old error
    subject, text, source = renderer.render_digest(d)
    assert subject == "[makewatch] Daily digest 2026-10-25: all quiet"
    assert "All quiet" in text and "All quiet" in parse(source).visible
    assert "Calm Co: quota 10 % used, 100 API requests of 45,000 (0.2 %)." in text
    assert len(text.splitlines()) < 40
    assert parse(source).errors == []


def test_an_organization_that_was_not_polled_is_not_called_quiet(tmp_path: Path, renderer: Renderer) -> None:
    with Store.open(tmp_path / "blind.db") as store:
        store.write_sync(lambda db: db["organizations"].insert(org_row(3, "Calm Co", ACME_UI, {})))
        d = digest_of(store)
    assert not d.quiet and d.organizations[0].health.cycles == 0
    subject, text, _ = renderer.render_digest(d)
    assert subject == "[makewatch] Daily digest 2026-10-25: no polling of 1 organization"
    assert "No polling cycle recorded in the period" in text


def test_long_lists_are_cut_in_both_parts_but_the_counts_stay_whole(store: Store, renderer: Renderer) -> None:
    _, text, source = renderer.render_digest(digest_of(store), max_rows=1)
    visible = parse(source).visible
    for fact in ("Errors: 5 errors in 2 scenarios", "... and 1 more scenario", "... and 2 more scenarios"):
        assert fact in flat(text), fact
        assert fact.replace("...", "…") in visible, fact
    assert "Sync HubSpot" in text and EVIL not in text.split("Errors per day")[0].split("New error kinds")[0]


# --- summary, parity, layout --------------------------------------------------------------

NUMBER = re.compile(r"\d[\d,.]*\d|\d")
URL = re.compile(r"https?://\S+")


class Body(Page):
    """Visible text of the body only (the <title> is not read by anyone)."""

    def handle_data(self, data: str) -> None:
        if "title" not in self.stack:
            super().handle_data(data)


def numbers(text: str) -> Counter[str]:
    return Counter(NUMBER.findall(URL.sub(" ", text)))


def test_the_summary_comes_first_in_both_parts_with_three_numbers_and_the_worst_problem(
    store: Store, renderer: Renderer
) -> None:
    d = digest_of(store)
    assert (d.errors_total, d.scenarios_off, d.dlq_total) == (6, 1, 7)
    assert d.worst_problem is not None and d.worst_problem.org == "Acme Ops"
    worst = (
        "Acme Ops: quota runs out around 2026-10-27 08:02 CET, before the reset 2026-11-03 08:02 CET (92 % used)"
    )
    _, text, source = renderer.render_digest(d)
    visible = parse(source).visible
    for part in (flat(text), visible):
        head = part.split("Acme Ops ==")[0] if "==" in part else part.split("Errors: 5 errors")[0]
        for fact in ("6 errors", "1 scenario off", "7 incomplete executions waiting", f"Worst: {worst}"):
            assert fact in head, (fact, head)
    assert flat(text).index("Worst:") < flat(text).index("== Acme Ops ==")
    assert visible.index("Worst:") < visible.index("Errors: 5 errors")


def test_the_text_and_html_parts_state_the_same_figures(store: Store, renderer: Renderer) -> None:
    _, text, source = renderer.render_digest(digest_of(store))
    page = Body()
    page.feed(source)
    # Every figure, date and count, as many times in each part (links are hrefs in HTML).
    assert numbers(text) == numbers(page.visible)
    assert numbers(text)["46,800"] == 1 and numbers(text)["5"] >= 1
    # The comparison sees one figure off by one.
    assert numbers(text.replace("46,800", "46,801")) != numbers(page.visible)


def fixed_widths(source: str) -> list[int]:
    page = Page()
    page.feed(source)
    found = []
    for _tag, key, value in page.attrs:
        if key == "width" and value and value.isdigit():
            found.append(int(value))
        if key == "style" and value:
            found += [int(px) for px in re.findall(r"(?<![-\w])(?:min-)?width:\s*(\d+)px", value)]
    return found


def test_the_html_fits_a_390_px_phone(store: Store, renderer: Renderer) -> None:
    _, _, source = renderer.render_digest(digest_of(store))
    assert [w for w in fixed_widths(source) if w > 390 - 2 * 12] == []
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in source
    assert "width: 100%; max-width: 640px" in source
    # The chart's columns share the width: seven cells of 14 %, not seven of 64 px.
    assert source.count('width="14%"') == 2 * 7 * 2


def test_the_subject_never_starts_with_a_folded_space(store: Store, renderer: Renderer) -> None:
    from alerts.channels import EmailChannel
    from alerts.digest_send import compose

    subject, text, source = renderer.render_digest(digest_of(store))
    channel = EmailChannel.model_validate({"type": "email", "smtp_host": "127.0.0.1", "from_addr": "mw@example.com", "to": ["a@example.com"]})
    raw = compose(channel, "a@example.com", (subject, text, source), START).as_bytes()
    header = raw.split(b"\n\n", 1)[0].decode()
    line = next(x for x in header.splitlines() if x.startswith("Subject:"))
    assert line.startswith("Subject: [makewatch] Daily digest")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == subject and not subject[:1].isspace()


def test_actions_of_the_period_are_listed_newest_first_with_the_next_polls_verdict(
    store: Store, renderer: Renderer
) -> None:
    def add(db: Any) -> None:
        db["actions"].insert_all([
            {"created_at": START - 60, "actor": "@old", "action": "ack", "org_id": ACME, "scenario_id": 101,
             "status": "done", "message": "acknowledged"},  # before the period
            {"created_at": START + 3600, "actor": f"@ana {EVIL}", "action": "start", "org_id": ACME,
             "scenario_id": 103, "status": "done", "message": "scenario 103 is now active",
             "confirm_note": "reactivated, but failed again at 09:16 UTC (ConnectionError)"},
            {"created_at": START + 7200, "actor": "@bob", "action": "start", "org_id": ACME, "scenario_id": 103,
             "status": "not_allowed", "message": "not allowed to act on this alert"},
            {"created_at": START + 7300, "actor": "@carl", "action": "retry", "org_id": GLOBEX, "scenario_id": 201,
             "status": "refused", "message": "Make refused: the token lacks scope dlqs:write"},
        ])

    store.write_sync(add)
    d = digest_of(store)
    assert [(a.who, a.text, a.ok) for a in d.actions] == [
        ("@carl", "retried the incomplete executions of Globex CRM: refused by Make "
                  "(Make refused: the token lacks scope dlqs:write)", False),
        ("@bob", "reactivated Invoice export: not allowed", False),
        (f"@ana {EVIL}", "reactivated Invoice export: done; reactivated, but failed again at 09:16 UTC "
                         "(ConnectionError)", True),
    ]
    assert [a.who for a in digest_of(store, ["Globex"]).actions] == ["@carl"]  # its organizations only
    _, text, html = renderer.render_digest(d)
    assert "Actions taken:" in text and "@bob reactivated Invoice export: not allowed" in text
    page = parse(html)
    assert not page.errors and "<script>" not in html.split("Actions taken", 1)[1]
    assert f"@ana {EVIL} reactivated Invoice export: done" in page.visible


def test_a_maintenance_window_is_listed_while_an_occurrence_is_in_force_with_its_end(store: Store) -> None:
    from watcher.silences import add_window

    assert datetime.fromtimestamp(END, PARIS).strftime("%a %H:%M") == "Sun 08:00"
    add_window(store, now=START - 86400, weekdays="sun", start="07:00", end="09:00", timezone="Europe/Paris",
               reason="weekly upgrade", name="Sunday", kind="quota")
    add_window(store, now=START - 86400, weekdays="mon", start="02:00", end="04:00", timezone="Europe/Paris",
               reason="not now", kind="quota")
    d = digest_of(store)
    windows = [s for s in d.silences if s.matchers_text.startswith("window")]
    assert [(s.matchers_text, s.reason) for s in windows] == [
        ("window Sunday (sun 07:00-09:00 Europe/Paris): kind quota", "weekly upgrade"),
    ]
    assert windows[0].ends_at.epoch == END + 3600  # the occurrence's end, not the row's year
