"""``makewatch demo``: the whole worker on embedded defaults, at whatever hour it is run."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from watcher.cli import main
from watcher.clock import ScaledClock
from watcher.demo import DEMO_SPEED, run_demo

PARIS = ZoneInfo("Europe/Paris")


def assert_a_demo_report(output: str) -> None:
    baseline, later = output.split("simulated minutes later:")
    detected, delivered = later.split("Slack (the local stand-in")
    # The demo world's standing problems are reported once, at the baseline...
    assert "scenario_deactivated · Acme Agency · Invoice export to Xero" in baseline
    assert "quota · Globex Ops" in baseline and "quota ·" not in detected
    # ...and the runs of the next half hour are read within each organization's budget.
    assert "Acme Agency: ok; requests" in detected and "(budget 30/min)" in detected
    assert "execution_error" not in baseline
    # Alerts reached the Slack stand-in and the mail sink, and the demo's digest was sent:
    # its own, of the half hour it watched, and no other (none on the 08:00 schedule).
    assert "Scenario deactivated: Invoice export to Xero (Acme Agency)" in delivered
    mailbox, digest_line = delivered.split("Daily digest for the team lead")
    assert mailbox.count("[makewatch] Daily digest") == 1
    assert "[makewatch] Daily digest" in digest_line
    assert "no polling" not in digest_line and "error" in digest_line


def test_demo_runs_on_embedded_defaults():
    result = CliRunner().invoke(main, ["demo", "--seed", "1", "--minutes", "30"])
    assert result.exit_code == 0, result.output
    assert_a_demo_report(result.output)


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
    report = await run_demo(seed=1, minutes=30, clock=ScaledClock(speed=DEMO_SPEED, start=t0))
    assert_a_demo_report(report)
