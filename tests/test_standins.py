"""``makewatch simulate``: the stand-ins a user starts by hand, and the config it prints.

The command runs as a subprocess on real ports, as a user starts it; ``check`` and ``once``
run against it with the config it printed, and with makewatch.example.toml's simulator block.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import makewatch

from watcher.clock import ManualClock
from watcher.simulator import Faults, World
from watcher.simulator.world import FAULT_KNOBS
from watcher.testing.mail_sink import free_port
from watcher.testing.standins import (
    BLOCK_BEGIN,
    BLOCK_END,
    DEFAULT_PORT,
    DEFAULT_SLACK_PORT,
    DEFAULT_SMTP_PORT,
    SimulatorConfig,
    example_block,
    parse_example_block,
    simulator_config,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "makewatch.example.toml"


class Output:
    """A process's stdout, read by a thread, so a test waits for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        self.stream = proc.stdout
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.stream:
            self.lines.put(line)

    def close(self) -> None:
        """After the process ended: the reader has seen end of file, the pipe is closed."""
        self.reader.join(10)
        self.stream.close()

    def until(self, done: Callable[[str], bool], timeout_s: float = 20.0) -> str:
        """Everything read up to and including the first line for which ``done`` is true."""
        deadline = time.monotonic() + timeout_s
        start = len(self.seen)
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no such line in time; read:\n" + "".join(self.seen[start:])) from None
            self.seen.append(line)
            if done(line):
                return "".join(self.seen[start:])


@pytest.fixture
def simulate() -> Iterator[tuple[Output, int, int]]:
    """``makewatch simulate`` (seed 1) on a free API port and on given Slack and SMTP ports."""
    slack_port, smtp_port = free_port(), free_port()
    proc = subprocess.Popen(
        makewatch("simulate", "--port", "0", "--slack-port", str(slack_port), "--smtp-port", str(smtp_port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = Output(proc)
    try:
        yield out, slack_port, smtp_port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        out.close()


def printed_config(text: str) -> SimulatorConfig:
    """The exports and the TOML block ``simulate`` printed."""
    env = dict(re.findall(r"^export (\w+)=(\S+)$", text, re.M))
    toml = text[text.index(BLOCK_BEGIN) + len(BLOCK_BEGIN) : text.index(BLOCK_END)].strip("\n")
    return SimulatorConfig(toml + "\n", env)


def test_the_example_config_holds_what_simulate_prints_on_its_default_ports() -> None:
    world = World.generate(seed=1, clock=ManualClock())
    expected = simulator_config(
        world,
        f"http://127.0.0.1:{DEFAULT_PORT}/api/v2",
        slack_url=f"http://127.0.0.1:{DEFAULT_SLACK_PORT}",
        smtp_port=DEFAULT_SMTP_PORT,
    )
    text = EXAMPLE.read_text()
    assert example_block(expected) in text
    assert parse_example_block(text) == expected
    assert {o.id for o in world.organizations.values()} == {
        int(i) for i in re.findall(r"^organization_id = (\d+)$", expected.toml, re.M)
    }


def test_simulate_prints_a_config_that_check_and_once_accept_and_shows_what_arrives(
    simulate: tuple[Output, int, int], tmp_path: Path
) -> None:
    out, slack_port, smtp_port = simulate
    text = out.until(lambda line: line.startswith(BLOCK_END))
    api = re.search(r"simulator: (http://127\.0\.0\.1:(\d+)/api/v2)", text)
    assert api, text
    for name in ("Northwind Traders", "Acme Agency", "Globex Ops"):
        assert re.search(name + r".*plan=\w+.*token=[0-9a-f-]{36}", text)
    assert f"Slack stand-in: http://127.0.0.1:{slack_port}/api/" in text
    assert f"Mail sink: SMTP on 127.0.0.1:{smtp_port}" in text
    printed = printed_config(text)
    # The example's block, pasted as the README says, with this run's ports for the defaults.
    example = parse_example_block(EXAMPLE.read_text())
    moved = (
        example.toml.replace(f":{DEFAULT_PORT}/", f":{api.group(2)}/")
        .replace(f":{DEFAULT_SLACK_PORT}/", f":{slack_port}/")
        .replace(f"smtp_port = {DEFAULT_SMTP_PORT}", f"smtp_port = {smtp_port}")
    )
    assert moved == printed.toml
    assert {k: v.replace(f":{DEFAULT_SLACK_PORT}/", f":{slack_port}/") for k, v in example.env.items()} == printed.env

    cfg = tmp_path / "makewatch.toml"
    cfg.write_text(moved)
    env = {**os.environ, **printed.env}
    check = subprocess.run(makewatch("check", "--config", str(cfg)), env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "channel slack (slack_bot): ok" in check.stdout and "channel mail (email): ok" in check.stdout

    # A critical alert skips the group wait: `once` sends it, and simulate prints it as read.
    once = subprocess.run(
        makewatch("once", "--config", str(cfg)), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert once.returncode == 0, once.stdout + once.stderr
    arrived = out.until(lambda line: "e-mail to ops@agency.example" in line and "Scenario deactivated" in line)
    assert "── C0ALERTS · message" in arrived and "🚨 Make switched off Invoice export to Xero" in arrived
    assert '"blocks"' not in arrived and "[Open the scenario in Make] [Run history]" in arrived


def test_simulate_without_stand_ins_prints_organizations_only(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        makewatch("simulate", "--port", "0", "--slack-port", "0", "--smtp-port", "0", "--seed", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = Output(proc)
    try:
        text = out.until(lambda line: line.startswith(BLOCK_END))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        out.close()
    assert "Slack stand-in" not in text and "Mail sink" not in text
    config = printed_config(text)
    assert "[channels." not in config.toml and "[alerts]" not in config.toml
    world = World.generate(seed=2, clock=ManualClock())
    assert sorted(config.env.values()) == sorted(world.tokens_by_org.values())


def test_every_fault_knob_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Fault knobs") : readme.index("## Configuration")]
    for knob in (*FAULT_KNOBS, "error_5xx_status", "org_id", "path_regex", "scopes", "reset"):
        assert f"| `{knob}` |" in section, knob
    # ...and nothing else is: every name in the table is one Faults.update accepts.
    for name in re.findall(r"^\| `(\w+)` \|", section, re.M):
        Faults().update({name: True if name == "reset" else getattr(Faults(), name, None)})


def test_simulate_with_orgs_and_scenarios_serves_that_many_over_a_real_socket() -> None:
    proc = subprocess.Popen(
        makewatch(
            "simulate", "--orgs", "2", "--scenarios", "5",
            "--port", "0", "--slack-port", "0", "--smtp-port", "0",
        ),  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = Output(proc)
    try:
        text = out.until(lambda line: line.startswith(BLOCK_END))
        api = re.search(r"simulator: (http://127\.0\.0\.1:\d+/api/v2)", text)
        assert api, text
        assert "scale world: 2 organizations, 10 scenarios" in text
        config = printed_config(text)
        orgs = re.findall(r'^organization_id = (\d+)\ntoken_env = "(\w+)"$', config.toml, re.M)
        assert len(orgs) == 2 and len(config.env) == 2
        seen: set[int] = set()
        for org_id, var in orgs:
            # Each organization's token lists that organization's scenarios, and only them.
            query = urllib.parse.urlencode({"organizationId": org_id, "pg[limit]": 100})
            request = urllib.request.Request(
                f"{api.group(1)}/scenarios?{query}",
                headers={"Authorization": f"Token {config.env[var]}"},
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                scenarios = json.load(resp)["scenarios"]
            assert len(scenarios) == 5
            assert all(s["scheduling"]["interval"] == 900 for s in scenarios)
            seen |= {s["id"] for s in scenarios}
        assert len(seen) == 10  # the two organizations list different scenarios
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        out.close()
