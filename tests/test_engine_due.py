"""The alert tick decides only alerts with news (events, a timer due, a silence or an ack),
and that changes nothing: random event streams, time steps, silences and acks driven through
the real pipeline and store twice, once loading every open alert as before issue 16 (the
oracle), once loading what ``alerts.pipeline.load_alerts`` loads, give the same notices,
alert rows and event reasons at every step."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import START
from hypothesis import given
from hypothesis import strategies as st
from sqlite_utils import Database

from alerts.engine import AlertState
from alerts.fingerprint import fingerprint
from alerts.pipeline import BATCH, AlertLoader, load_alerts, process_batch
from alerts.policy import AlertsSettings, Policy, RouteSettings
from watcher import store as wst
from watcher.acks import acknowledge
from watcher.silences import add_silence, expire_silence, list_silences
from watcher.store import MIGRATIONS, Store

# --------------------------------------------------------------------------------------------
# The oracle: every open alert, as the tick loaded them before issue 16


def load_every_open_alert(
    db: Database, events: Sequence[Mapping[str, Any]], now: float, policy: Policy
) -> dict[str, AlertState]:
    """Every open alert, plus the resolved ones an event's fingerprint names."""
    fps = sorted({fingerprint(e, policy.alerts.group_by) for e in events})
    rows = list(db["alerts"].rows_where("state != 'resolved'"))
    rows += list(
        db["alerts"].rows_where(
            "state = 'resolved' AND fingerprint IN (SELECT value FROM json_each(?))",
            [json.dumps(fps)],
        )
    )
    return {r["fingerprint"]: AlertState.from_row(wst._decode("alerts", r)) for r in rows}


# --------------------------------------------------------------------------------------------
# Worlds

ORGS = {1: "Acme", 2: "Beta"}
SCENARIOS = (10, 11, 12)
ERRORS = (
    ("DataError", "Validation failed for 2 parameter(s)."),
    ("ConnectionError", "Connection refused"),
)

POLICIES = {
    "plain": Policy(
        alerts=AlertsSettings(
            default_channels=("ops",), group_wait_s=30, group_interval_s=300, repeat_interval_s=1800
        )
    ),
    "capped, critical to on-call": Policy(
        alerts=AlertsSettings(
            default_channels=("ops",),
            group_wait_s=30,
            group_interval_s=300,
            repeat_interval_s=1800,
            max_per_hour=2,
        ),
        routes=(
            RouteSettings(
                min_severity="critical", channels=("oncall",), group_wait_s=0, **{"continue": True}
            ),
        ),
    ),
    "per-org timings, Beta has no route": Policy(
        alerts=AlertsSettings(
            default_channels=(),
            group_wait_s=60,
            group_interval_s=120,
            repeat_interval_s=600,
            critical_skips_group_wait=False,
            warnings_enabled=True,
        ),
        routes=(
            RouteSettings(org="Acme", channels=("acme", "mail"), repeat_interval_s=900),
            RouteSettings(org="Beta", kind=("scenario_deactivated",), channels=("oncall",)),
        ),
    ),
    "one ops notice an hour, by message": Policy(
        alerts=AlertsSettings(
            default_channels=("ops", "mail"),
            group_wait_s=10,
            group_interval_s=200,
            repeat_interval_s=700,
            max_per_hour_by_channel={"ops": 1},
            group_by=("org", "scenario", "error_name", "error_message"),
        )
    ),
}


def event_row(spec: tuple[Any, ...], key: str, now: float) -> dict[str, Any]:
    kind, org_id, scenario_id, variant, lag, critical = spec
    payload: dict[str, Any] = {"organization": ORGS[org_id], "scenario_name": f"S{scenario_id}"}
    if kind in ("execution_error", "execution_warning"):
        name, message = ERRORS[variant % len(ERRORS)]
        payload |= {
            "error_name": name,
            "error_message": f"{message} ({variant})",
            "execution_id": key,
        }
    elif kind == "incomplete_executions":
        payload |= {"dlq_id": key, "dlq_count": variant}  # 0 clears the backlog
    elif kind == "watcher_health":
        payload |= {"problem": "unreachable", "recovered": variant == 0}
        scenario_id = None
    elif kind == "quota":
        payload |= {"threshold_pct": 90, "used_pct": 91}
        scenario_id = None
    row = {
        "key": key,
        "kind": kind,
        "org_id": org_id,
        "team_id": 5,
        "scenario_id": scenario_id,
        "occurred_at": now - lag,
        "detected_at": now,
        "payload": payload,
    }
    if critical:
        row["severity"] = "critical"
    return row


KINDS = (
    "execution_error",
    "execution_error",
    "execution_error",
    "execution_warning",
    "execution_recovered",
    "execution_recovered",
    "scenario_deactivated",
    "scenario_reactivated",
    "scenario_paused",
    "scenario_unpaused",
    "incomplete_executions",
    "watcher_health",
    "quota",
)
events_st = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from(sorted(ORGS)),
    st.sampled_from(SCENARIOS),
    st.integers(0, 2),
    st.sampled_from([0.0, 3.0, 45.0, 400.0, 2000.0]),
    st.booleans(),
)
dt_st = st.one_of(
    st.sampled_from(
        [
            0.0,
            1.0,
            9.0,
            11.0,
            29.0,
            31.0,
            61.0,
            119.0,
            121.0,
            299.0,
            301.0,
            600.0,
            901.0,
            1801.0,
            3600.0,
        ]
    ),
    st.floats(0, 5 * 3600, allow_nan=False),
)
matchers_st = st.fixed_dictionaries(
    {},
    optional={
        "scenario_id": st.sampled_from(SCENARIOS),
        "org": st.sampled_from(["Acme", "Beta", "2", "A*"]),
        "kind": st.sampled_from(
            ["execution_error", "scenario_deactivated", "incomplete_executions"]
        ),
        "error_contains": st.sampled_from(["refused", "validation"]),
    },
).filter(bool)
step_st = st.one_of(
    st.tuples(st.just("events"), st.lists(events_st, min_size=1, max_size=5), dt_st),
    st.tuples(st.just("tick"), dt_st),
    st.tuples(st.just("silence"), matchers_st, st.sampled_from([60.0, 900.0, 7200.0])),
    st.tuples(st.just("expire"), st.integers(0, 5)),
    st.tuples(st.just("ack"), st.integers(0, 50)),
)


# --------------------------------------------------------------------------------------------
# Two stores, one story


_TEMPLATE: list[Path] = []


def _template() -> Path:
    """A migrated state file to copy (migrating one per example would dominate the test)."""
    if not _TEMPLATE:
        path = Path(tempfile.mkdtemp(prefix="makewatch-due-")) / "template.db"
        Store.open(path).close()
        _TEMPLATE.append(path)
    return _TEMPLATE[0]


@contextmanager
def two_stores() -> Iterator[tuple[Store, Store]]:
    with tempfile.TemporaryDirectory() as tmp:
        stores = []
        for name in ("due.db", "oracle.db"):
            shutil.copy(_template(), Path(tmp) / name)
            stores.append(Store.open(Path(tmp) / name))
        try:
            yield stores[0], stores[1]
        finally:
            for s in stores:
                s.close()


def tick(store: Store, policy: Policy, now: float, load: AlertLoader) -> None:
    while (
        store.write_sync(functools.partial(process_batch, policy=policy, now=now, load=load))[0]
        == BATCH
    ):
        pass


def snapshot(store: Store) -> dict[str, Any]:
    """What must not differ: alert rows (without ``id`` and ``due_at``), outbox rows (by
    alert fingerprint), each event's reason, the flood counters."""

    def read(db: Database) -> dict[str, Any]:
        fps = {r["id"]: r["fingerprint"] for r in db["alerts"].rows}
        return {
            "alerts": {
                r["fingerprint"]: {k: v for k, v in r.items() if k not in ("id", "due_at")}
                for r in db["alerts"].rows
            },
            "outbox": [
                {k: v for k, v in r.items() if k not in ("id", "alert_id")}
                | {"alert": fps.get(r["alert_id"])}
                for r in db["outbox"].rows_where(order_by="id")
            ],
            "events": {r["key"]: (r["processed_at"], r["reason"]) for r in db["events"].rows},
            "flood": wst.get_watch_state(db, "flood:"),
        }

    return store.read_sync(read)


def open_fingerprints(store: Store) -> list[str]:
    return store.read_sync(
        lambda db: [
            r["fingerprint"]
            for r in db["alerts"].rows_where("state != 'resolved'", order_by="fingerprint")
        ]
    )


def alert_id(store: Store, fp: str) -> int:
    return store.read_sync(
        lambda db: next(iter(db["alerts"].rows_where("fingerprint = ?", [fp])))["id"]
    )


def due_now(store: Store, now: float) -> int:
    return store.read_sync(
        lambda db: db["alerts"].count_where("state != 'resolved' AND due_at <= ?", [now])
    )


@given(
    policy_name=st.sampled_from(sorted(POLICIES)), steps=st.lists(step_st, min_size=1, max_size=25)
)
def test_deciding_only_alerts_with_news_changes_nothing(
    policy_name: str, steps: list[tuple[Any, ...]]
) -> None:
    policy = POLICIES[policy_name]
    now, serial = START, 0
    with two_stores() as (due, oracle):
        both = ((due, load_alerts), (oracle, load_every_open_alert))
        for step in steps:
            if step[0] == "events":
                now += step[2]
                rows = []
                for spec in step[1]:
                    serial += 1
                    rows.append(event_row(spec, f"k{serial}", now))
                for store, _ in both:
                    store.write_sync(lambda db, rows=rows: wst.insert_events(db, rows))
            elif step[0] == "tick":
                now += step[1]
            elif step[0] == "silence":
                m = step[1]
                ids = {
                    add_silence(
                        store,
                        now=now,
                        duration_s=step[2],
                        reason="test",
                        scenario_id=m.get("scenario_id"),
                        org=m.get("org"),
                        kind=m.get("kind"),
                        error_contains=m.get("error_contains"),
                    )
                    for store, _ in both
                }
                assert len(ids) == 1
            elif step[0] == "expire":
                in_force = list_silences(oracle, now)
                if in_force:
                    sid = in_force[step[1] % len(in_force)]["id"]
                    assert {expire_silence(store, sid, now) for store, _ in both} == {True}
            elif step[0] == "ack":
                fps = open_fingerprints(oracle)
                if fps:
                    fp = fps[step[1] % len(fps)]
                    done = {
                        asyncio.run(acknowledge(store, alert_id(store, fp), "ana", now))
                        for store, _ in both
                    }
                    assert len(done) == 1
            for store, load in both:
                tick(store, policy, now, load)
            assert snapshot(due) == snapshot(oracle), (policy_name, step)
            # Once decided, no timer is left behind (at most one due at once: told on one
            # channel, held on another, its next decision says why it is held).
            assert due_now(due, now - 0.001) == 0


# --------------------------------------------------------------------------------------------
# The parts, one by one


def err(key: str, now: float, scenario_id: int = 10) -> dict[str, Any]:
    return event_row(("execution_error", 1, scenario_id, 0, 0.0, False), key, now)


def test_an_idle_tick_loads_no_alert_that_waits_for_nothing() -> None:
    policy = POLICIES["plain"]
    with two_stores() as (store, _):
        store.write_sync(lambda db: wst.insert_events(db, [err("a", START), err("b", START, 11)]))
        tick(store, policy, START, load_alerts)
        assert store.read_sync(lambda db: load_alerts(db, [], START + 1, policy)) == {}
        # The group wait (30 s) is each one's timer; after the first notice, none is left.
        assert sorted(
            store.read_sync(lambda db: load_alerts(db, [], START + 30, policy))
        ) == sorted(open_fingerprints(store))
        tick(store, policy, START + 30, load_alerts)
        assert store.read_sync(lambda db: load_alerts(db, [], START + 10**6, policy)) == {}


def test_a_new_silence_an_expired_one_and_an_ack_make_the_alerts_they_touch_due() -> None:
    policy = POLICIES["plain"]
    with two_stores() as (store, _):
        store.write_sync(lambda db: wst.insert_events(db, [err("a", START), err("b", START, 11)]))
        tick(store, policy, START + 30, load_alerts)
        assert due_now(store, START + 10**6) == 0
        sid = add_silence(store, now=START + 60, duration_s=600, reason="deploy", scenario_id=10)
        assert due_now(store, START + 60) == 1
        tick(store, policy, START + 60, load_alerts)
        assert due_now(store, START + 659) == 0 and due_now(store, START + 660) == 1  # it ends
        assert expire_silence(store, sid, START + 100)
        assert due_now(store, START + 100) == 1
        tick(store, policy, START + 100, load_alerts)
        fp = next(fp for fp in open_fingerprints(store) if fp.startswith("exec:1:11:"))
        assert asyncio.run(acknowledge(store, alert_id(store, fp), "ana", START + 120))
        assert store.read_sync(lambda db: list(load_alerts(db, [], START + 120, policy))) == [fp]


def test_migration_12_makes_the_open_alerts_of_before_due_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path, migrations=MIGRATIONS[:11]) as old:
        old.write_sync(
            lambda db: db["alerts"].insert_all(
                [
                    {"fingerprint": "open", "state": "firing", "kind": "execution_error"},
                    {"fingerprint": "done", "state": "resolved", "kind": "execution_error"},
                ]
            )
        )
    with Store.open(path) as new:
        rows = new.read_sync(lambda db: {r["fingerprint"]: r["due_at"] for r in db["alerts"].rows})
    assert rows == {"open": 0, "done": None}
