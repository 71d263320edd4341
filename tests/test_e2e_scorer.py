"""bench/e2e.py's scorer, on a synthetic ledger and message list (no subprocess, no waiting).

The outside-in benchmark is only as honest as its scoring: these tests pin each rule of its
docstring (notified, covered, missed, latency, duplicates, history) so that the scorer
cannot silently go wrong, and check that it reads what the Slack stand-in really records.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from conftest import load_bench

from watcher.simulator import LedgerEntry
from watcher.testing import DEFAULT_TOKEN, SlackState, create_slack_app

UI = "http://127.0.0.1:1"




e2e = load_bench("e2e")


def notice(
    t: float,
    sid: int | None,
    *,
    phase: str = "firing",
    kind: str = "execution_error",
    reason: str = "first",
    channel: str = "webhook",
    method: str = "webhook",
    content: str | None = None,
) -> Any:
    return e2e.Notice(
        t, channel, method, frozenset() if sid is None else frozenset({sid}), phase, kind, reason,
        content if content is not None else f"{t}:{sid}:{phase}:{kind}",
    )  # fmt: skip


def error(t: float, sid: int = 1, ref: str = "") -> Any:
    return e2e.Trouble("error", t, sid, ref or f"e{t}")


def test_an_error_is_notified_by_the_first_notice_about_its_scenario_after_it() -> None:
    # A firing notice at 90, never resolved: the alert is open when the error comes.
    sc = e2e.score([error(100)], [notice(90, 1), notice(131, 1), notice(200, 1)], 0, 1000)
    assert sc.kinds["error"].covered == 1

    sc = e2e.score([error(100)], [notice(131, 2), notice(140, 1), notice(200, 1)], 0, 1000)
    k = sc.kinds["error"]
    assert (k.produced, k.notified, k.missed, k.covered) == (1, 1, 0, 0)
    assert k.latencies == [40]


def test_an_error_with_no_notice_after_it_is_missed_and_counts_as_infinite() -> None:
    # The old alert was resolved before the error: it covers nothing.
    notices = [notice(10, 1), notice(20, 1, phase="resolved"), notice(150, 2)]
    sc = e2e.score([error(100), error(120, sid=2)], notices, 0, 1000)
    k = sc.kinds["error"]
    assert (k.produced, k.notified, k.missed) == (2, 1, 1)
    assert k.latencies == [math.inf, 30]
    assert k.p(50) == 30 and k.p(95) == math.inf and k.max_latency == math.inf


def test_an_open_announced_alert_covers_later_errors_of_its_scenario_per_channel() -> None:
    notices = [
        notice(10, 1, channel="webhook"),
        notice(11, 1, channel="bot", method="post"),
        notice(50, 1, channel="webhook", phase="resolved"),  # bot still open
    ]
    sc = e2e.score([error(5), error(60)], notices, 0, 1000)
    k = sc.kinds["error"]
    assert [o.covered for o in k.outcomes] == [False, True]
    assert k.latencies == [5]  # a covered error has no latency of its own
    # A thread reply announces nothing: it is not top-level.
    sc = e2e.score([error(60)], [notice(11, 1, channel="bot", method="reply", phase="repeat")], 0, 1000)
    assert sc.kinds["error"].covered == 0 and sc.kinds["error"].missed == 1


def test_late_means_notified_after_more_than_120_s() -> None:
    sc = e2e.score([error(0), error(1000, sid=2)], [notice(121, 1), notice(1120, 2)], 0, 2000)
    assert sc.kinds["error"].late == 1 and sc.kinds["error"].notified == 2


def test_only_troubles_inside_the_counted_window_are_scored() -> None:
    sc = e2e.score([error(5), error(50), error(500)], [notice(600, 1)], 10, 100)
    assert sc.kinds["error"].produced == 1


def test_deactivations_and_dlq_items_need_a_notice_of_their_own_kind() -> None:
    troubles = [
        e2e.Trouble("deactivation", 100, 1, "x"),
        e2e.Trouble("dlq", 100, 2, "d1"),
        e2e.Trouble("dlq", 200, 2, "d2"),
    ]
    notices = [
        notice(90, 1),  # an open execution alert does not say "switched off"
        notice(130, 1),
        notice(140, 2, kind="incomplete_executions", reason="first"),
    ]
    sc = e2e.score(troubles, notices, 0, 1000)
    assert sc.kinds["deactivation"].missed == 1
    dlq = sc.kinds["dlq"]
    # The second item came while the DLQ alert was announced and open: covered.
    assert [(o.covered, o.latency_s) for o in dlq.outcomes][0] == (False, 40)
    assert dlq.outcomes[1].covered and dlq.missed == 0


def test_duplicates_are_identical_posts_or_a_first_notice_twice_in_one_channel() -> None:
    notices = [
        notice(10, 1, content="same"),
        notice(11, 1, content="same"),  # identical: a redelivery
        notice(12, 1, content="same", channel="bot", method="post"),  # other channel: fine
        notice(20, 2, content="a"),
        notice(40, 2, content="b"),  # first again, alert not resolved: duplicate
        notice(50, 2, phase="resolved", content="c"),
        notice(60, 2, content="d"),  # re-opened after a resolution: fine
        notice(70, 3, content="e"),
        notice(80, 3, reason="escalated", content="f"),  # an escalation is not a duplicate
        notice(90, 3, content="g", channel="bot", method="reply"),  # replies are not posts
        notice(91, 3, content="g", channel="bot", method="reply"),
    ]
    dups = e2e.duplicates(notices)
    assert [(n.t, rule) for n, rule in dups] == [(11, "identical"), (40, "first twice")]


def test_history_is_an_execution_notice_that_no_counted_error_explains() -> None:
    troubles = [error(-50, sid=1), error(20, sid=2), e2e.Trouble("dlq", -100, 3, "d")]
    notices = [
        notice(10, 1),  # only history of scenario 1: re-alerted
        notice(30, 2),  # explained by the error at 20
        notice(5, 3, kind="incomplete_executions"),  # standing DLQ backlog at the start
        notice(15, 2, kind="execution_error"),  # before scenario 2's error: history too
    ]
    history, standing = e2e.unexplained(sorted(notices, key=lambda n: n.t), troubles, 0)
    assert sorted(n.t for n in history) == [10, 15]
    assert [n.t for n in standing] == [5]


def test_troubles_come_from_the_ledger_with_their_reference() -> None:
    ledger = [
        LedgerEntry("error", 1.0, 7, 1, execution_id="abc", error_name="E", error_message="m"),
        LedgerEntry("dlq", 1.0, 7, 1, execution_id="abc", dlq_id="d1"),
        LedgerEntry("reactivation", 2.0, 7, 1),
        LedgerEntry("recovery", 3.0, 7, 1, execution_id="ok1"),
    ]
    got = e2e.troubles_from_ledger(ledger)
    assert [(t.kind, t.ref) for t in got] == [("error", "abc"), ("dlq", "d1"), ("recovery", "ok1")]
    sc = e2e.score(got, [notice(4, 7, phase="resolved")], 0, 10)
    assert (sc.recoveries, sc.recoveries_resolved) == (1, 1)


def test_secrets_are_reported_by_name_never_by_value() -> None:
    found = e2e.secrets_found("GET /x token=tok-123 ok", {"Make token": "tok-123", "Slack": "xoxb"})
    assert found == ["Make token"]


def blocks_about(sid: int, kind: str = "execution_error", reason: str = "first", head: str = "🔴 Execution error: s") -> list[dict[str, Any]]:
    return [
        {"type": "header", "text": {"type": "plain_text", "text": head}},
        {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Scenario"},
                                          "url": f"{UI}/5/scenarios/{sid}/edit"}]},
        {"type": "context", "block_id": f"makewatch.{kind}.{reason.replace(' ', '_')}",
         "elements": [{"type": "mrkdwn", "text": "Acme · First notice"}]},
    ]  # fmt: skip


@pytest.mark.timeout(20)
async def test_it_reads_what_the_slack_standin_recorded_and_skips_refused_requests(
    aiohttp_client: Any,
) -> None:
    state = SlackState(webhooks={"T/B/secret": "C0WEBHOOK"})
    client = await aiohttp_client(create_slack_app(state))
    bearer = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    state.fail_next(2, status=500)  # the next two requests fail, whatever they are
    state.fail_next(1, status=429, retry_after=7)
    for _ in range(3):
        resp = await client.post("/webhook/T/B/secret", json={"text": "x", "blocks": blocks_about(41)})
        assert resp.status in (500, 429)
    assert resp.headers["Retry-After"] == "7"
    await client.post("/webhook/T/B/secret", json={"text": "x", "blocks": blocks_about(41)})
    post = await (
        await client.post("/api/chat.postMessage", headers=bearer, json={
            "channel": "#alerts", "text": "x", "blocks": blocks_about(42),
            "metadata": {"event_type": "makewatch_alert", "event_payload": {"phase": "firing"}}})
    ).json()  # fmt: skip
    reply = {"type": "context", "block_id": "makewatch.execution_error.recovered", "elements": [{"type": "mrkdwn", "text": "x"}]}
    await client.post("/api/chat.update", headers=bearer, json={
        "channel": post["channel"], "ts": post["ts"], "text": "✅ Resolved: x", "blocks": blocks_about(42, head="✅ Resolved: x")})  # fmt: skip
    await client.post("/api/chat.postMessage", headers=bearer, json={
        "channel": "#alerts", "thread_ts": post["ts"], "text": "* is resolved.", "blocks": [reply]})  # fmt: skip

    notices = e2e.notices_from_requests(state.requests)
    assert [(n.channel, n.method, sorted(n.scenarios), n.phase, n.kind) for n in notices] == [
        ("webhook", "webhook", [41], "firing", "execution_error"),
        ("C0ALERTS", "post", [42], "firing", "execution_error"),
        ("C0ALERTS", "update", [42], "resolved", "execution_error"),
        ("C0ALERTS", "reply", [42], "resolved", "execution_error"),  # from its parent
    ]
    assert notices[0].reason == "first" and notices[3].reason == "recovered"
    times = [r.at for r in state.requests]
    assert times == sorted(times) and notices[0].t == state.requests[3].at
    assert json.loads(notices[0].content)["blocks"] == blocks_about(41)
