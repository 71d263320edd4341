"""What the daily digest says: read from the store, returned as a plain dataclass tree.

:func:`build_digest` gathers, per organization, what broke in the period, what is still
broken now and what is about to break (quota), as raw (unescaped) values; the templates
``email/digest.{subject,txt,html}.j2`` decide how it looks and do the escaping
(:meth:`alerts.render.Renderer.render_digest`).

Contracts
---------
* **Pure.** No clock is read (``now`` is passed in), nothing is written, nothing is fetched.
  ``db`` is a sqlite-utils Database inside the caller's read transaction
  (``store.read(lambda db: build_digest(db, ...))``), so every figure comes from one snapshot.
* **Every count comes from the store.** Nothing is estimated except the quota forecast,
  drawn from the usage days the poller stored (``organizations.usage_json``), complete days
  only (:func:`alerts.digest_charts.complete_day_rate`); the poller's own rate and forecast
  are used only when no days are stored.
* **Order.** Organizations come worst first (:mod:`alerts.digest_severity`); the content
  model lives in :mod:`alerts.digest_model`, the per-period error bars (one scale across
  organizations) in :mod:`alerts.digest_charts`.
* **The period** is ``[period_start, period_end)`` in epoch seconds, applied to each event's
  ``occurred_at`` (when it happened in Make; state changes and quota crossings carry the time
  makewatch saw them). Notifications count by ``outbox.sent_at``, polling cycles by
  ``cycles.started_at``. "Now" figures (scenarios still off, DLQ backlog, quota) are the
  store's latest snapshot.
* **Times** are shown in the recipient's ``timezone``: every instant is a :class:`Moment`
  (epoch seconds plus the local text).
* **JSON-able.** ``dataclasses.asdict(digest)`` holds only str, int, float, bool, None, lists,
  tuples and dicts with str keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from alerts.digest_charts import CHART_PERIODS, complete_day_rate, error_bars, scale
from alerts.digest_model import (
    ActionTaken,
    ChannelCount,
    Digest,
    DlqBacklog,
    DlqScenario,
    ErrorKind,
    Health,
    HealthEvent,
    HookQueue,
    Links,
    Moment,
    Notifications,
    OffScenario,
    OrgDigest,
    PeriodCount,
    Problem,
    Quota,
    QuotaEvent,
    ScenarioErrors,
    SilenceInForce,
    SilentFailure,
    StateChange,
)
from alerts.digest_severity import RANKS, problems_of, severity_key
from alerts.digest_silent import SILENT_KINDS, silent_failures
from alerts.render import safe_url
from alerts.silences import Silence, Window
from watcher import dialect
from watcher import events as ev

__all__ = [
    "CHART_PERIODS",
    "GROUPED_REASONS",
    "QUOTA_WARN_PCT",
    "RANKS",
    "ChannelCount",
    "Digest",
    "DlqBacklog",
    "DlqScenario",
    "ErrorKind",
    "Health",
    "HealthEvent",
    "HookQueue",
    "Links",
    "Moment",
    "Notifications",
    "OffScenario",
    "OrgDigest",
    "PeriodCount",
    "Problem",
    "Quota",
    "QuotaEvent",
    "ScenarioErrors",
    "SilenceInForce",
    "StateChange",
    "build_digest",
]

#: A quota at or past this share of the plan makes the digest not quiet.
QUOTA_WARN_PCT = 75.0
QUOTA_CRITICAL_PCT = 90.0

#: Event reasons (alerts.engine.REASONS) meaning "folded into another notice".
GROUPED_REASONS = frozenset(
    {"grouped", "within repeat interval", "waiting for group", "within group interval"}
)
HELD_BACK_REASONS = frozenset({"flood-capped"})
SILENCED_REASONS = frozenset({"silenced"})
INHIBITED_REASONS = frozenset({"inhibited"})
NO_ROUTE_REASONS = frozenset({"no route"})

HEALTH_PROBLEMS = {
    "token_rejected": "API token rejected (401)",
    "access_denied": "access denied (403)",
    "scope_missing": "token lacks a read scope",
    "unreachable": "Make unreachable for several cycles",
    "channel_failed": "a notification channel refused a message for good",
}


# --- helpers ----------------------------------------------------------------------------


class _Clock:
    """Formats instants in one zone (pure: no clock read)."""

    def __init__(self, timezone: str) -> None:
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)

    def moment(self, epoch: float) -> Moment:
        local = datetime.fromtimestamp(epoch, self.tz)
        return Moment(float(epoch), local.strftime("%Y-%m-%d %H:%M %Z").strip())

    def maybe(self, epoch: Any) -> Moment | None:
        if isinstance(epoch, int | float) and not isinstance(epoch, bool):
            return self.moment(float(epoch))
        return None

    def day(self, epoch: float) -> date:
        return datetime.fromtimestamp(epoch, self.tz).date()


def _payload(row: Mapping[str, Any]) -> dict[str, Any]:
    text = row.get("payload_json")
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _events(db: Database, org_id: int, kinds: Sequence[str], start: float, end: float) -> list[dict[str, Any]]:
    marks = ",".join("?" for _ in kinds)
    rows = db.execute(
        f"SELECT id, kind, team_id, scenario_id, occurred_at, reason, payload_json FROM events "
        f"WHERE org_id = ? AND kind IN ({marks}) AND occurred_at >= ? AND occurred_at < ? "
        f"ORDER BY occurred_at, id",
        [org_id, *kinds, start, end],
    )
    cols = [d[0] for d in rows.description]
    out = []
    for values in rows.fetchall():
        row = dict(zip(cols, values, strict=True))
        row["payload"] = _payload(row)
        out.append(row)
    return out


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split())


class _OrgReader:
    """Reads one organization's figures; shared state is the clock and the org row."""

    def __init__(
        self, db: Database, org: Mapping[str, Any], clock: _Clock, start: float, end: float, now: float
    ) -> None:
        self.db = db
        self.org_id = int(org["id"])
        self.name = str(org.get("name") or f"organization {org['id']}")
        self.org = org
        self.clock = clock
        self.start, self.end, self.now = start, end, now
        base = org.get("base_url")
        self.ui = ev.ui_base(base) if isinstance(base, str) and base else None
        self.scenarios = {
            row["id"]: dict(row)
            for row in db["scenarios"].rows_where("org_id = ?", [self.org_id], order_by="id")
        }

    # -- names and links

    def scenario_name(self, scenario_id: Any, payload: Mapping[str, Any]) -> str:
        row = self.scenarios.get(scenario_id)
        if row and row.get("name"):
            return str(row["name"])
        if payload.get("scenario_name"):
            return str(payload["scenario_name"])
        return f"scenario {scenario_id}" if scenario_id is not None else "unknown scenario"

    def links(self, scenario_id: Any, team_id: Any, payload: Mapping[str, Any]) -> Links:
        """Links from the event payload, else derived from the organization's base URL."""
        row = self.scenarios.get(scenario_id) or {}
        team = team_id if team_id is not None else row.get("team_id")
        derived: dict[str, str | None] = {}
        if self.ui and isinstance(scenario_id, int):
            derived = {
                "scenario_url": ev.scenario_link(self.ui, team, scenario_id),
                "history_url": ev.history_link(self.ui, team, scenario_id),
                "dlq_url": ev.dlq_link(self.ui, team, scenario_id),
            }
        return Links(
            scenario_url=safe_url(payload.get("scenario_url") or derived.get("scenario_url")),
            history_url=safe_url(payload.get("history_url") or derived.get("history_url")),
            run_url=safe_url(payload.get("run_url")),
            dlq_url=safe_url(payload.get("dlq_url") or derived.get("dlq_url")),
        )

    # -- sections

    def errors(self, rows: list[dict[str, Any]]) -> tuple[tuple[ScenarioErrors, ...], tuple[ErrorKind, ...]]:
        before = {
            r[0]
            for r in self.db.execute(
                "SELECT DISTINCT scenario_id FROM events WHERE org_id = ? AND kind = "
                "'execution_error' AND occurred_at < ?",
                [self.org_id, self.start],
            ).fetchall()
        }
        known_names = {
            r[0]
            for r in self.db.execute(
                f"SELECT DISTINCT {dialect.json_get(self.db, 'payload_json', 'error_name', cast='text')} FROM events "  # noqa: S608 - fixed text
                "WHERE org_id = ? AND kind = 'execution_error' AND occurred_at < ?",
                [self.org_id, self.start],
            ).fetchall()
        }
        groups: dict[Any, list[dict[str, Any]]] = {}
        for row in rows:
            key = row["scenario_id"] if row["scenario_id"] is not None else ("name", row["payload"].get("scenario_name"))
            groups.setdefault(key, []).append(row)
        scenarios = []
        for items in groups.values():
            last, first = items[-1], items[0]
            p = last["payload"]
            sid = last["scenario_id"]
            names = tuple(dict.fromkeys(str(i["payload"].get("error_name") or "Error") for i in items))
            scenarios.append(
                ScenarioErrors(
                    scenario_id=sid,
                    scenario_name=self.scenario_name(sid, p),
                    team_id=last["team_id"],
                    count=len(items),
                    recurring=sid in before if sid is not None else False,
                    first_at=self.clock.moment(first["occurred_at"]),
                    last_at=self.clock.moment(last["occurred_at"]),
                    last_error_name=str(p.get("error_name") or "Error"),
                    last_error_message=_one_line(p.get("error_message")),
                    error_names=names,
                    links=self.links(sid, last["team_id"], p),
                )
            )
        scenarios.sort(key=lambda s: (-s.count, s.scenario_name.casefold(), s.scenario_id or 0))

        kinds: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            name = row["payload"].get("error_name")
            if name and name not in known_names:
                kinds.setdefault(str(name), []).append(row)
        new_kinds = tuple(
            ErrorKind(
                error_name=name,
                count=len(items),
                scenarios=tuple(
                    dict.fromkeys(self.scenario_name(i["scenario_id"], i["payload"]) for i in items)
                ),
                first_at=self.clock.moment(items[0]["occurred_at"]),
            )
            for name, items in sorted(kinds.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        )
        return tuple(scenarios), new_kinds

    def off_now(self) -> dict[int, dict[str, Any]]:
        return {
            sid: row
            for sid, row in self.scenarios.items()
            if not row.get("is_active") and row.get("is_invalid")
        }

    def state_changes(self, kind: str, off: Mapping[int, Any]) -> tuple[StateChange, ...]:
        out = []
        for row in _events(self.db, self.org_id, [kind], self.start, self.end):
            p, sid = row["payload"], row["scenario_id"]
            out.append(
                StateChange(
                    scenario_id=sid,
                    scenario_name=self.scenario_name(sid, p),
                    at=self.clock.moment(row["occurred_at"]),
                    standing=bool(p.get("standing")),
                    still_off=sid in off,
                    links=self.links(sid, row["team_id"], p),
                )
            )
        return tuple(out)

    def still_off(self, off: Mapping[int, dict[str, Any]]) -> tuple[OffScenario, ...]:
        since = {
            r[0]: r[1]
            for r in self.db.execute(
                "SELECT scenario_id, MAX(occurred_at) FROM events WHERE org_id = ? AND kind = "
                "'scenario_deactivated' GROUP BY scenario_id",
                [self.org_id],
            ).fetchall()
        }
        out = [
            OffScenario(
                scenario_id=sid,
                scenario_name=self.scenario_name(sid, {}),
                since=self.clock.maybe(since.get(sid)),
                dlq_count=int(row.get("dlq_count") or 0),
                links=self.links(sid, row.get("team_id"), {}),
            )
            for sid, row in off.items()
        ]
        out.sort(key=lambda o: (o.scenario_name.casefold(), o.scenario_id))
        return tuple(out)

    def dlq(self) -> DlqBacklog:
        per: dict[int, dict[str, Any]] = {}
        for sid, row in self.scenarios.items():
            if (row.get("dlq_count") or 0) > 0:
                per[sid] = {"new": 0, "cleared": 0, "reason": "", "payload": {}, "team": row.get("team_id")}
        new_items = cleared = 0
        for row in _events(self.db, self.org_id, ["incomplete_executions"], self.start, self.end):
            sid, p = row["scenario_id"], row["payload"]
            if sid is None:
                continue
            entry = per.setdefault(sid, {"new": 0, "cleared": 0, "reason": "", "payload": {}, "team": row["team_id"]})
            if p.get("cleared"):
                entry["cleared"] += 1
                cleared += 1
            elif not p.get("standing"):
                entry["new"] += 1
                new_items += 1
                entry["reason"] = _one_line(p.get("reason")) or entry["reason"]
            if p.get("dlq_url") or not entry["payload"]:
                entry["payload"] = p
        scenarios = []
        for sid, entry in per.items():
            count = int((self.scenarios.get(sid) or {}).get("dlq_count") or 0)
            if not (count or entry["new"] or entry["cleared"]):
                continue
            scenarios.append(
                DlqScenario(
                    scenario_id=sid,
                    scenario_name=self.scenario_name(sid, entry["payload"]),
                    dlq_count=count,
                    new_items=entry["new"],
                    cleared=entry["cleared"],
                    last_reason=entry["reason"],
                    links=self.links(sid, entry["team"], entry["payload"]),
                )
            )
        scenarios.sort(key=lambda d: (-d.dlq_count, -d.new_items, d.scenario_name.casefold(), d.scenario_id))
        return DlqBacklog(
            scenarios=tuple(scenarios),
            total_now=sum(d.dlq_count for d in scenarios),
            scenarios_now=sum(1 for d in scenarios if d.dlq_count > 0),
            new_items=new_items,
            cleared=cleared,
        )

    def quota(self) -> Quota | None:
        usage = _stored_usage(self.org.get("usage_json"))
        events = tuple(
            QuotaEvent(
                at=self.clock.moment(r["occurred_at"]),
                threshold_pct=_number(r["payload"].get("threshold_pct")),
                used_pct=_number(r["payload"].get("used_pct")),
            )
            for r in _events(self.db, self.org_id, ["quota"], self.start, self.end)
        )
        if not usage and not events:
            return None
        used_pct = _number(usage.get("used_pct"))
        next_reset = _number(usage.get("next_reset"))
        used, limit = _number(usage.get("operations_used")), _number(usage.get("operations_limit"))
        rate = _number(usage.get("daily_rate"))
        forecast = _number(usage.get("forecast_exhausted_at"))
        rate_days: int | None = None
        seen = _number(usage.get("updated_at")) or self.now
        # Make's usage days are UTC dates; the one holding the fetch is still running.
        complete = complete_day_rate(usage.get("days"), datetime.fromtimestamp(seen, UTC).date())
        if complete is not None:
            rate, rate_days = complete
            forecast = (
                seen + max(limit - used, 0.0) / rate * 86400 if limit and used is not None and rate > 0 else None
            )
        exhausts = bool(forecast is not None and next_reset is not None and forecast < next_reset)
        level = "ok"
        if used_pct is not None and used_pct >= QUOTA_CRITICAL_PCT:
            level = "critical"
        elif exhausts or (used_pct is not None and used_pct >= QUOTA_WARN_PCT):
            level = "warning"
        return Quota(
            operations_used=None if used is None else int(used),
            operations_limit=None if limit is None else int(limit),
            used_pct=used_pct,
            bar_pct=0 if used_pct is None else max(0, min(100, round(used_pct))),
            level=level,
            daily_rate=rate,
            rate_days=rate_days,
            forecast_exhausted_at=self.clock.maybe(forecast),
            next_reset=self.clock.maybe(next_reset),
            exhausts_before_reset=exhausts,
            days_left=None if forecast is None else round(max(0.0, forecast - self.now) / 86400, 1),
            updated_at=self.clock.maybe(usage.get("updated_at")),
            events=events,
        )

    def hooks(self) -> tuple[HookQueue, ...]:
        """Webhook queues over their threshold in the period, or still over it at its end."""
        latest: dict[int, dict[str, Any]] = {}
        in_period: set[int] = set()
        for row in _events(self.db, self.org_id, ["hook_backlog"], 0.0, self.end):
            hook_id = row["payload"].get("hook_id")
            if not isinstance(hook_id, int):
                continue
            latest[hook_id] = row
            if row["occurred_at"] >= self.start:
                in_period.add(hook_id)
        out = []
        for hook_id, row in latest.items():
            p = row["payload"]
            now_backlogged = not p.get("recovered")
            if hook_id not in in_period and not now_backlogged:
                continue
            limit = _number(p.get("queue_limit"))
            out.append(
                HookQueue(
                    hook_id=hook_id,
                    hook_name=_one_line(p.get("hook_name")) or f"webhook {hook_id}",
                    scenario_name=self.scenario_name(row["scenario_id"], p) if row["scenario_id"] is not None else None,
                    queue_count=int(_number(p.get("queue_count")) or 0),
                    queue_limit=None if limit is None else int(limit),
                    backlogged_now=now_backlogged,
                    last_at=self.clock.moment(row["occurred_at"]),
                )
            )
        out.sort(key=lambda h: (not h.backlogged_now, -h.queue_count, h.hook_name.casefold(), h.hook_id))
        return tuple(out)

    @property
    def _payload_org(self) -> str:
        """The organization a notice's payload names (a summary's, kept by compaction)."""
        return dialect.json_get(self.db, "o.payload_json", "alert.org_id", cast="int")

    def notifications(self) -> Notifications:
        by_channel = [
            ChannelCount(str(r[0]), int(r[1]))
            for r in self.db.execute(
                "SELECT o.channel, COUNT(*) FROM outbox o LEFT JOIN alerts a ON a.id = o.alert_id "
                "WHERE o.status = 'sent' AND o.sent_at >= ? AND o.sent_at < ? "
                f"AND COALESCE({self._payload_org}, a.org_id) = ? "  # noqa: S608 - fixed text
                "GROUP BY o.channel ORDER BY COUNT(*) DESC, o.channel",
                [self.start, self.end, self.org_id],
            ).fetchall()
        ]
        parked = self.db.execute(
            "SELECT COUNT(*) FROM outbox o LEFT JOIN alerts a ON a.id = o.alert_id "
            "WHERE o.status = 'parked' AND o.created_at >= ? AND o.created_at < ? "
            f"AND COALESCE({self._payload_org}, a.org_id) = ?",  # noqa: S608 - fixed text
            [self.start, self.end, self.org_id],
        ).fetchone()[0]
        reasons = {
            r[0]: int(r[1])
            for r in self.db.execute(
                "SELECT reason, COUNT(*) FROM events WHERE org_id = ? AND occurred_at >= ? "
                "AND occurred_at < ? AND reason IS NOT NULL GROUP BY reason",
                [self.org_id, self.start, self.end],
            ).fetchall()
        }

        def total(names: frozenset[str]) -> int:
            return sum(n for reason, n in reasons.items() if reason in names)

        return Notifications(
            sent=sum(c.count for c in by_channel),
            by_channel=tuple(by_channel),
            grouped=total(GROUPED_REASONS),
            held_back=total(HELD_BACK_REASONS),
            silenced=total(SILENCED_REASONS),
            inhibited=total(INHIBITED_REASONS),
            no_route=total(NO_ROUTE_REASONS),
            parked=int(parked),
        )

    def health(self, note: str | None) -> Health:
        cycles = [
            dict(r)
            for r in self.db["cycles"].rows_where(
                "org_id = ? AND started_at >= ? AND started_at < ?",
                [self.org_id, self.start, self.end],
                order_by="started_at, id",
            )
        ]
        before = next(
            iter(
                self.db["cycles"].rows_where(
                    "org_id = ? AND started_at < ?", [self.org_id, self.start], order_by="started_at DESC, id DESC", limit=1
                )
            ),
            None,
        )
        steps = ([dict(before)] if before else []) + cycles
        budget: float | None = None
        if steps:
            budget = 0.0
            for i, cyc in enumerate(steps):
                held_from = max(float(cyc["started_at"]), self.start)
                held_to = float(steps[i + 1]["started_at"]) if i + 1 < len(steps) else self.end
                held_to = min(held_to, self.end)
                if held_to > held_from:
                    budget += float(cyc.get("budget_per_minute") or 0) * (held_to - held_from) / 60.0
        requests = sum(int(c.get("requests") or 0) for c in cycles)
        failed = [c for c in cycles if not c.get("ok")]
        last_failed = failed[-1] if failed else None
        health_events = []
        for r in _events(self.db, self.org_id, ["watcher_health"], self.start, self.end):
            p = r["payload"]
            problem = str(p.get("problem") or "")
            recovered = bool(p.get("recovered"))
            text = HEALTH_PROBLEMS.get(problem, problem.replace("_", " ") or "problem")
            if recovered:
                text = f"recovered ({text})" if problem else "recovered"
            elif p.get("scope"):
                text += f": {p['scope']}"
            elif p.get("channel"):
                text += f": {p['channel']}"
            health_events.append(
                HealthEvent(self.clock.moment(r["occurred_at"]), problem, _one_line(text), recovered)
            )
        budget_int = None if budget is None else int(budget)
        return Health(
            cycles=len(cycles),
            requests=requests,
            budget=budget_int,
            budget_used_pct=round(100.0 * requests / budget_int, 1) if budget_int else None,
            failed_polls=len(failed),
            last_error=_one_line(last_failed.get("error")) if last_failed else "",
            last_error_at=self.clock.moment(last_failed["started_at"]) if last_failed else None,
            last_poll_ok=bool(steps[-1].get("ok")) if steps else None,
            events=tuple(health_events),
            note=note,
        )

    def silent(self) -> tuple[SilentFailure, ...]:
        """Overdue, idle, unusual volume: see alerts.digest_silent."""
        return silent_failures(
            _events(self.db, self.org_id, SILENT_KINDS, 0.0, self.end),
            self.scenarios,
            _stored_usage(self.org.get("usage_json")).get("days"),
            self.start,
            moment=self.clock.moment,
            day=self.clock.day,
            name=self.scenario_name,
            links=self.links,
            tz=self.clock.tz,
        )

    def chart(self) -> tuple[PeriodCount, ...]:
        return error_bars(self.db, self.org_id, self.start, self.end, self.clock.timezone, self.clock.moment)

    def build(self, note: str | None) -> OrgDigest:
        error_rows = _events(self.db, self.org_id, ["execution_error"], self.start, self.end)
        errors, new_kinds = self.errors(error_rows)
        off = self.off_now()
        deactivated = self.state_changes("scenario_deactivated", off)
        reactivated = self.state_changes("scenario_reactivated", off)
        still_off = self.still_off(off)
        dlq = self.dlq()
        quota = self.quota()
        health = self.health(note)
        hooks = self.hooks()
        digest = OrgDigest(
            org_id=self.org_id,
            name=self.name,
            errors_total=len(error_rows),
            errors=errors,
            new_error_kinds=new_kinds,
            deactivated=deactivated,
            reactivated=reactivated,
            still_off=still_off,
            dlq=dlq,
            quota=quota,
            notifications=self.notifications(),
            health=health,
            chart=self.chart(),
            hooks=hooks,
            problems=(),
            quiet=False,
            silent=self.silent(),
        )
        problems = problems_of(digest)
        return replace(digest, problems=problems, quiet=not problems)


def _stored_usage(text: Any) -> dict[str, Any]:
    """The usage summary the poller stored with the organization (``usage_json``), or {}."""
    if not text:
        return {}
    try:
        decoded = json.loads(text)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _matchers_text(matchers: Mapping[str, Any], names: Mapping[int, str]) -> str:
    parts = []
    for key in sorted(matchers):
        value = matchers[key]
        if key == "scenario_id":
            try:
                name = names.get(int(value))
            except (TypeError, ValueError):
                name = None
            parts.append(f"scenario {name} ({value})" if name else f"scenario {value}")
        elif key == "org":
            parts.append(f"organization {value}")
        elif key == "kind":
            kinds = [value] if isinstance(value, str) else list(value)
            parts.append("kind " + " or ".join(str(k) for k in kinds))
        elif key == "error_contains":
            parts.append(f'error contains "{value}"')
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def _silences(
    db: Database, clock: _Clock, at: float, orgs: Sequence[Mapping[str, Any]]
) -> tuple[SilenceInForce, ...]:
    names = {r["id"]: str(r["name"]) for r in db.query("SELECT id, name FROM scenarios")}
    out = []
    for row in db["silences"].rows_where(
        "expired_at IS NULL AND starts_at <= ? AND ends_at > ?", [at, at], order_by="ends_at, id"
    ):
        try:
            matchers = json.loads(row["matchers_json"] or "{}")
        except ValueError:
            continue
        if not isinstance(matchers, dict) or not matchers:
            continue
        ends_at, prefix = float(row["ends_at"]), ""
        if row.get("timezone"):
            # A stored maintenance window: listed only while an occurrence is in force, as
            # its recurrence and that occurrence's end (its row spans a year).
            try:
                window = Window.from_row(dict(row) | {"matchers": matchers})
            except (ValueError, KeyError):
                continue
            found = window.silence_at(at)
            if found is None or not found.is_active(at):
                continue
            ends_at = found.ends_at
            prefix = f"window {window.name + ' ' if window.name else ''}({window.describe()}): "
        if "org" in matchers:
            probe = Silence(id=row["id"], matchers={"org": matchers["org"]}, starts_at=0.0, ends_at=1.0)
            if not any(probe.matches({"org": o["name"], "org_id": o["id"]}) for o in orgs):
                continue
        out.append(
            SilenceInForce(
                id=int(row["id"]),
                matchers=matchers,
                matchers_text=prefix + _matchers_text(matchers, names),
                reason=_one_line(row.get("reason")),
                created_by=str(row.get("created_by") or ""),
                ends_at=clock.moment(ends_at),
            )
        )
    return tuple(out)


#: The actions of a period the digest lists (the newest; the rest are on the status page).
ACTIONS_MAX = 20
_ACTION_WORDS = {
    "ack": "acknowledged", "silence": "silenced", "start": "reactivated", "stop": "deactivated",
    "run": "ran once", "replay": "replayed a failed run of", "retry": "retried the incomplete executions of",
}
_ACTION_OUTCOMES = {
    "done": "done", "already": "already so", "refused": "refused by Make", "failed": "no answer from Make",
    "not_allowed": "not allowed", "pending": "in flight",
}


def _actions(
    db: Database, clock: _Clock, start: float, end: float, org_ids: set[int]
) -> tuple[ActionTaken, ...]:
    """Actions taken in ``[start, end)`` on the organizations shown (or on no organization)."""
    if not db["actions"].exists():
        return ()
    names = {r["id"]: str(r["name"]) for r in db.query("SELECT id, name FROM scenarios")}
    out = []
    for row in db.query(
        "SELECT created_at, actor, action, org_id, scenario_id, alert_id, status, message, confirm_note "
        "FROM actions WHERE created_at >= ? AND created_at < ? ORDER BY created_at DESC, id DESC LIMIT ?",
        [start, end, ACTIONS_MAX * 4],
    ):
        if row["org_id"] is not None and row["org_id"] not in org_ids:
            continue
        what = _ACTION_WORDS.get(row["action"], str(row["action"]))
        target = names.get(row["scenario_id"]) or (f"scenario {row['scenario_id']}" if row["scenario_id"] else "")
        if row["action"] in ("ack", "silence"):
            target = f"the alert on {target}" if target else "an alert"
        outcome = _ACTION_OUTCOMES.get(row["status"], str(row["status"]))
        text = f"{what} {target}: {outcome}".strip()
        if row["status"] not in ("done", "already", "not_allowed") and row["message"]:
            text += f" ({_one_line(row['message'])[:200]})"
        if row["confirm_note"]:
            text += f"; {_one_line(row['confirm_note'])[:200]}"
        out.append(ActionTaken(
            at=clock.moment(float(row["created_at"])), who=_one_line(row["actor"]) or "someone", text=text,
            ok=row["status"] in ("done", "already"),
        ))
        if len(out) >= ACTIONS_MAX:
            break
    return tuple(out)


def _title_date(clock: _Clock, start: float, end: float) -> str:
    last = clock.day(end - 1e-6)
    first = clock.day(start)
    # A daily period (08:00 to 08:00) spans two dates; name it by its last one. Only a period
    # longer than a day (skipped weekdays folded in) names its range.
    if end - start <= 26 * 3600 or first >= last:
        return last.isoformat()
    return f"{(first + timedelta(days=1)).isoformat()} to {last.isoformat()}"


def build_digest(
    db: Database,
    *,
    period_start: float,
    period_end: float,
    timezone: str,
    organizations: Sequence[str] | None,
    now: float,
    budget_share_note: str | Mapping[str, str] | None = None,
) -> Digest:
    """The digest of ``[period_start, period_end)`` for recipients in ``timezone``.

    ``organizations``: names (case-insensitive) to cover; None covers every organization in
    the store. Either way they come out worst first (:func:`severity_key`). A name the store does not know is listed in
    ``Digest.missing_organizations``. ``now``: when the digest is built (forecast days left,
    ``generated_at``). ``budget_share_note``: text shown beside the API budget, one for all
    organizations or one per organization name. Reads only; see the module docstring.
    """
    if period_end <= period_start:
        raise ValueError("period_end must be after period_start")
    clock = _Clock(timezone)
    rows = [dict(r) for r in db["organizations"].rows_where(order_by="name, id")]
    missing: list[str] = []
    if organizations is None:
        chosen = rows
    else:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_name.setdefault(str(row.get("name") or "").casefold(), []).append(row)
        chosen = []
        for name in dict.fromkeys(organizations):
            found = by_name.get(name.casefold())
            if found:
                chosen += [r for r in found if r not in chosen]
            else:
                missing.append(name)

    orgs = []
    for row in chosen:
        if isinstance(budget_share_note, Mapping):
            note = budget_share_note.get(str(row.get("name")))
        else:
            note = budget_share_note
        orgs.append(_OrgReader(db, row, clock, period_start, period_end, now).build(note))
    chart_max, charts = scale([o.chart for o in orgs])
    orgs = sorted((replace(o, chart=c) for o, c in zip(orgs, charts, strict=True)), key=severity_key)
    problems = sorted((p for o in orgs for p in o.problems[:1]), key=lambda p: p.rank)

    flood_summaries = db.execute(
        "SELECT COUNT(*) FROM outbox WHERE status = 'sent' AND kind = 'summary' "
        "AND sent_at >= ? AND sent_at < ?",
        [period_start, period_end],
    ).fetchone()[0]
    quota_alerts = tuple(
        o.name for o in orgs if o.quota is not None and o.quota.level != "ok"
    )
    return Digest(
        period_start=clock.moment(period_start),
        period_end=clock.moment(period_end),
        generated_at=clock.moment(now),
        timezone=timezone,
        title_date=_title_date(clock, period_start, period_end),
        organizations=tuple(orgs),
        missing_organizations=tuple(missing),
        silences=_silences(db, clock, period_end, chosen),
        actions=_actions(db, clock, period_start, period_end, {int(r["id"]) for r in chosen}),
        flood_summaries_sent=int(flood_summaries),
        errors_total=sum(o.errors_total for o in orgs),
        scenarios_with_errors=sum(len(o.errors) for o in orgs),
        scenarios_off=sum(len(o.still_off) for o in orgs),
        dlq_total=sum(o.dlq.total_now for o in orgs),
        hooks_backlogged=sum(1 for o in orgs for k in o.hooks if k.backlogged_now),
        worst_problem=problems[0] if problems else None,
        chart_max=chart_max,
        quota_alerts=quota_alerts,
        quiet=bool(orgs) and all(o.quiet for o in orgs) and not missing,
    )
