"""Old history shrinks to what is still read of it (watcher.store.compact_history), once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import START

from alerts.pipeline import process_batch
from alerts.policy import AlertsSettings, Policy
from watcher import dialect
from watcher import store as st
from watcher.store import Store

POLICY = Policy(alerts=AlertsSettings(default_channels=("ops",)))


def error(key: str, t: float, kind: str = "execution_error") -> dict[str, Any]:
    payload = {
        "organization": "Acme",
        "scenario_name": "Sync CRM",
        "scenario_url": "https://eu1.make.com/5/scenarios/10/edit",
        "execution_id": key,
        "error_name": "DataError",
        "error_message": "Validation failed for 2 parameter(s).",
        "run_url": f"https://eu1.make.com/5/scenarios/10/logs/{key}",
    }
    if kind == "execution_recovered":
        payload = {"organization": "Acme", "scenario_name": "Sync CRM", "execution_id": key}
    return {
        "key": key,
        "kind": kind,
        "org_id": 1,
        "team_id": 5,
        "scenario_id": 10,
        "occurred_at": t,
        "detected_at": t,
        "payload": payload,
    }


def test_old_events_and_sent_notices_keep_only_what_is_read_of_them(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        store.write_sync(
            lambda db: st.insert_events(db, [error("e0", START - 60), error("e1", START)])
        )
        store.write_sync(lambda db: process_batch(db, POLICY, START + 31))
        store.write_sync(
            lambda db: st.insert_events(db, [error("r1", START + 900, "execution_recovered")])
        )
        store.write_sync(lambda db: process_batch(db, POLICY, START + 900))
        store.write_sync(
            lambda db: (
                db.execute("UPDATE outbox SET status = 'sent', sent_at = created_at").rowcount
            )
        )
        store.write_sync(lambda db: st.insert_events(db, [error("e2", START + 5000)]))
        store.write_sync(lambda db: process_batch(db, POLICY, START + 5031))

        done = store.write_sync(lambda db: st.compact_history(db, START + 1000))
        # e0, e1 shrunk, then e0 forgotten (e1 is the one of its scenario and error), r1 gone.
        assert done == {"events": 4, "outbox": 2}
        rows = store.read_sync(
            lambda db: {r["key"]: json.loads(r["payload_json"]) for r in db["events"].rows}
        )
        assert rows["e1"] == {"error_name": "DataError", "scenario_name": "Sync CRM"}
        assert "e0" not in rows  # the digest asks only whether DataError was seen before
        assert "r1" not in rows  # a recovery is never read again
        assert rows["e2"]["run_url"].endswith("/e2")  # newer than the cut: whole
        outbox = store.read_sync(
            lambda db: [r["payload_json"] for r in db["outbox"].rows_where(order_by="id")]
        )
        assert outbox[:2] == [None, None]  # the digest counts them by their alert's org
        assert "payload" in json.loads(outbox[2])["alert"]  # not sent yet: whole

        # A digest's "seen before" questions get the same answers.
        seen = store.read_sync(
            lambda db: db.execute(
                f"SELECT DISTINCT scenario_id, {dialect.json_get(db, 'payload_json', 'error_name', cast='text')} FROM events "
                "WHERE kind = 'execution_error' AND occurred_at < ?",
                [START + 2000],
            ).fetchall()
        )
        assert seen == [(10, "DataError")]
        # Once only: the watermark remembers how far it went.
        assert store.write_sync(lambda db: st.compact_history(db, START + 1000)) == {
            "events": 0,
            "outbox": 0,
        }
