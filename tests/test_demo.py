"""``makewatch demo``: the whole worker on embedded defaults, at whatever hour it is run."""

from __future__ import annotations

import email
import email.policy
import io
import re
import subprocess
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import makewatch

from watcher.clock import ScaledClock
from watcher.demo import DEMO_SPEED, run_demo

PARIS = ZoneInfo("Europe/Paris")
PROGRESS = re.compile(
    r"^\[\d\d:\d\d simulated\] (?P<what>[^·]+) · cycles (?P<cycles>\d)/2 · "
    r"events (?P<events>\d+) · Slack (?P<slack>\d+) · e-mails (?P<mails>\d+)$"
)
# With --minutes 30: a line per step, and one per 10 simulated minutes of the wait.
STEPS_30 = ["first cycle", "waiting 10/30 min", "waiting 20/30 min", "second cycle", "daily digest", "done"]


def assert_a_demo_report(output: str) -> None:
    baseline, later = output.split("simulated minutes later:")
    detected, delivered = later.split("Slack (the local stand-in")
    # The demo world's standing problems are reported once, at the baseline...
    assert "scenario_deactivated · Acme Agency · Invoice export to Xero" in baseline
    assert "quota · Globex Ops" in baseline and "quota ·" not in detected
    # ...and the runs of the next half hour are read within each organization's budget.
    assert "Acme Agency: ok; requests" in detected and "(budget 30/min)" in detected
    assert "execution_error" not in baseline
    # Slack messages read as a person reads them: header, text, buttons; no Block Kit JSON.
    slack, mailbox = delivered.split("The local mail sink received")
    assert "🚨 Make switched off Invoice export to Xero" in slack and "[Open the scenario in Make] [Run history]" in slack
    assert '"type"' not in slack and "*" not in slack
    # Alerts reached the mail sink, and the demo's digest was sent: its own, of the half hour
    # it watched, and no other (none on the 08:00 schedule).
    assert "Scenario deactivated: Invoice export to Xero (Acme Agency)" in mailbox
    mailbox, digest_line = mailbox.split("Daily digest for the team lead")
    assert mailbox.count("[makewatch] Daily digest") == 1
    assert "[makewatch] Daily digest" in digest_line
    assert "no polling" not in digest_line and "error" in digest_line


def progress_of(lines: list[str]) -> list[dict[str, str]]:
    rows = []
    for line in lines:
        m = PROGRESS.match(line)
        assert m, f"not a progress line: {line!r}"
        rows.append(m.groupdict())
    return rows


def assert_progress_adds_up(rows: list[dict[str, str]], report: str) -> None:
    assert [r["what"].strip() for r in rows] == STEPS_30
    for key in ("cycles", "events", "slack", "mails"):
        counts = [int(r[key]) for r in rows]
        assert counts == sorted(counts), f"{key} went down: {counts}"
    assert [r["cycles"] for r in rows] == ["0", "1", "1", "1", "2", "2"]
    last = rows[-1]
    assert f"received {last['slack']} message(s)" in report
    assert f"The local mail sink received {last['mails']} e-mail(s)" in report


def test_demo_runs_on_embedded_defaults_and_writes_what_to_open(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        makewatch("demo", "--seed", "1", "--minutes", "30", "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=50,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert_a_demo_report(result.stdout)
    # stderr is the progress and nothing else: no SMTP server chatter, no INFO logs.
    assert_progress_adds_up(progress_of(result.stderr.splitlines()), result.stdout)

    assert "<html" in (out / "digest.html").read_text().lower()
    assert (out / "digest.txt").read_text().startswith("Subject: [makewatch] Daily digest")
    slack_txt = (out / "slack.txt").read_text()
    n_slack = int(re.search(r"received (\d+) message\(s\)", result.stdout).group(1))
    assert slack_txt.count("── C0ALERTS ·") == n_slack and "🚨 Make switched off" in slack_txt
    emls = sorted((out / "mail").glob("*.eml"))
    n_mails = int(re.search(r"mail sink received (\d+) e-mail", result.stdout).group(1))
    assert len(emls) == n_mails - 1  # the alerts; the digest is digest.html
    subjects = [str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Subject"]) for p in emls]
    assert not any("Daily digest" in s for s in subjects)
    assert any("Scenario deactivated: Invoice export to Xero" in s for s in subjects)
    assert {p.stem for p in emls} == {p.stem for p in (out / "mail").glob("*.html")}
    # The closing summary says where each of them is.
    summary = result.stdout.split("Where everything is:")[1]
    for name in ("digest.html", "digest.txt", "slack.txt", "mail/"):
        assert f"{out}/{name}" in summary
    assert f"the {len(emls)} alert e-mail(s)" in summary and "makewatch simulate" in summary


async def test_a_second_run_leaves_only_its_own_mails(tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "99-from-an-earlier-run.eml").write_text("old")
    (tmp_path / "keep.txt").write_text("not the demo's")
    await run_demo(seed=1, minutes=5, out_dir=tmp_path)
    assert sorted((tmp_path / "mail").glob("*.eml"))
    assert not (tmp_path / "mail" / "99-from-an-earlier-run.eml").exists()
    assert (tmp_path / "keep.txt").read_text() == "not the demo's"


@pytest.mark.parametrize(
    "start",
    [
        "2026-12-01 07:40:00",  # the digest's 08:00 Europe/Paris falls between the cycles
        "2026-12-01 07:59:50",  # ...or in the first one
        "2026-03-29 01:45:00",  # the clocks go forward at 02:00 during the run
        "2026-10-25 02:45:00",  # ...and back at 03:00 (summer time's 02:45)
    ],
)
async def test_demo_sends_only_its_own_digest_whatever_the_hour(start: str) -> None:
    t0 = datetime.fromisoformat(start).replace(tzinfo=PARIS).timestamp()
    progress = io.StringIO()
    report = await run_demo(seed=1, minutes=30, clock=ScaledClock(speed=DEMO_SPEED, start=t0), progress=progress)
    assert_a_demo_report(report)
    assert_progress_adds_up(progress_of(progress.getvalue().splitlines()), report)


async def test_on_a_terminal_the_progress_line_is_rewritten_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: the line is short by itself
    progress = io.StringIO()
    await run_demo(seed=1, minutes=5, progress=progress, tty=True)
    text = progress.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    updates = text.rstrip("\n").split("\r")[1:]
    # Every simulated minute of the wait (1..4; the 5th is the second cycle's), and the steps.
    whats = [PROGRESS.match(u.rstrip()).group("what").strip() for u in updates]
    assert whats == ["first cycle", *(f"waiting {k}/5 min" for k in range(1, 5)), "second cycle", "daily digest", "done"]
    assert all(len(u) < 80 for u in updates)  # one row of an 80-column terminal: \r rewrites it
    # Each update covers the longer one it replaces.
    assert all(len(b) >= len(a.rstrip()) for a, b in zip(updates, updates[1:], strict=False))
