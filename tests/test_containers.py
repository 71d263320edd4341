"""The image, the compose file and the systemd unit, checked without Docker or systemd running.

No image registry is reachable from CI, so the image is not built: hadolint lints the
Dockerfile, and the commands it runs (ENTRYPOINT + CMD, and the HEALTHCHECK) are read from
it and run here, outside Docker, against the simulator; the unit goes through
``systemd-analyze verify``. ``makewatch health`` is checked against a real HTTP server.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from conftest import AppThread, makewatch, stop, wait_until_running

from watcher.testing.mail_sink import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
UNIT = ROOT / "docker" / "makewatch.service"
COMPOSE = ROOT / "docker" / "compose.yaml"
CONTAINER_CONFIG = "/config/makewatch.toml"


def tool(name: str) -> str:
    """The path of a command-line tool (the venv's first), or skip saying why; in CI, fail."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing (CI is set)")
        pytest.skip(f"{name} is not installed")
    return found


def instruction(name: str) -> str:
    """The Dockerfile's last ``name`` instruction, its continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = re.findall(rf"^{name}\s+(.+)$", text, re.M)
    assert found, f"the Dockerfile has no {name}"
    return found[-1].strip()


def exec_form(value: str) -> list[str]:
    assert value.startswith("["), f"not in exec form (a shell would not pass SIGTERM on): {value}"
    return json.loads(value)


def image_command() -> list[str]:
    """ENTRYPOINT + CMD, as ``docker run`` without arguments runs them."""
    return exec_form(instruction("ENTRYPOINT")) + exec_form(instruction("CMD"))


def healthcheck_command() -> list[str]:
    value = instruction("HEALTHCHECK")
    return exec_form(value[value.index("CMD ") + len("CMD ") :])


def here(argv: list[str], **paths: str) -> list[str]:
    """An image command line as it runs outside Docker: the installed makewatch, and the
    container's paths replaced by the test's."""
    assert argv[0] == "makewatch", argv
    return makewatch(*(paths.get(a, a) for a in argv[1:]))


class Healthz(AppThread):
    """A /healthz that answers ``status`` with a JSON body, as the web endpoint will."""

    def __init__(self, status: int) -> None:
        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok" if status == 200 else "failing"}, status=status)

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        super().__init__(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"


# --- makewatch health --------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "body"), [(200, 0, "ok"), (503, 1, "failing")])
def test_health_prints_the_answer_and_exits_0_only_on_200(status: int, code: int, body: str) -> None:
    with Healthz(status) as server:
        result = subprocess.run(makewatch("health", "--url", server.url), capture_output=True, text=True, timeout=30)
    assert result.returncode == code, result.stderr
    assert json.loads(result.stdout) == {"status": body}
    assert ("answered HTTP 503" in result.stderr) == (status == 503)


def test_health_says_in_one_line_when_nothing_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    result = subprocess.run(makewatch("health", "--url", url, "--timeout", "2"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"makewatch: cannot reach {url}: ") and "refused" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


# --- the image ---------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_the_image_is_built_in_two_stages_and_runs_unprivileged_with_state_on_a_volume() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) == 2 and all(s.startswith("python:3.11-slim") for s in stages), stages
    user = instruction("USER").split(":")[0]
    assert user.isdigit() and int(user) > 0
    assert exec_form(instruction("VOLUME")) == ["/data"]
    assert CONTAINER_CONFIG in image_command()
    assert healthcheck_command()[:2] == ["makewatch", "health"]


def test_the_build_context_leaves_out_venvs_and_state_but_not_what_the_image_copies() -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p.removeprefix("**/")) or path.startswith(p + "/") for p in patterns)

    for path in (".venv", ".git", "build", "demo-out", "makewatch.db", "wt-ops", ".pytest_cache", ".ruff_cache"):
        assert ignored(path), path
    copied = [src for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE.read_text(), re.M) for src in line.split()[:-1]]
    assert copied and not any(ignored(src) for src in copied), copied


def test_the_image_command_starts_polls_and_stops_on_sigterm_outside_docker(service) -> None:
    """The image's ENTRYPOINT + CMD, and its HEALTHCHECK against that service's own /healthz
    (on a free port here: the image's default 127.0.0.1:9464 may be taken on a test machine)."""
    cfg, db, env = service
    port = free_port()
    cfg.write_text(cfg.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
    health_url = f"http://127.0.0.1:{port}/healthz"
    proc = subprocess.Popen(
        here(image_command(), **{CONTAINER_CONFIG: str(cfg)}),
        env=env,
        cwd=db.parent,  # the image's WORKDIR is its /data volume
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_running(proc, db)
        check = subprocess.run(
            here(healthcheck_command()) + ["--url", health_url], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert json.loads(check.stdout)["status"] == "ok"  # the service's own answer
        assert json.loads(check.stdout)["organizations"]["Solo"]["ok"] is True
    finally:
        stderr = stop(proc)
    assert "Traceback" not in stderr
    after = subprocess.run(here(healthcheck_command()) + ["--url", health_url], capture_output=True, text=True, timeout=30)
    assert after.returncode == 1 and "cannot reach" in after.stderr  # stopped: unhealthy


# --- compose and systemd -----------------------------------------------------------------------


def test_compose_runs_makewatch_and_mailpit_with_the_config_mounted_and_a_named_volume() -> None:
    text = COMPOSE.read_text()
    services = re.search(r"^services:\n(.*?)^\S", text, re.M | re.S)
    assert services, "no services: section"
    names = re.findall(r"^  (\w[\w-]*):$", services.group(1), re.M)
    assert names == ["makewatch", "makewatch-2", "postgres", "mailpit"]
    assert re.search(r"^\s+dockerfile: docker/Dockerfile$", text, re.M)
    assert re.search(rf"^\s+- \.\./makewatch\.toml:{CONTAINER_CONFIG}:ro$", text, re.M)
    volume = re.search(r"^\s+- (\w[\w-]*):/data$", text, re.M)
    assert volume and re.search(rf"^volumes:\n  {volume.group(1)}:", text, re.M)
    assert re.search(r"^\s+image: axllent/mailpit", text, re.M) and '"127.0.0.1:8025:8025"' in text
    # Its healthcheck is the image's.
    test = re.search(r"^\s+test: (\[.*\])$", text, re.M)
    assert test and json.loads(test.group(1)) == ["CMD", *healthcheck_command()]


def _service(text: str, name: str) -> str:
    block = re.search(rf"^  {re.escape(name)}:\n(.*?)(?=^  \w|^\S)", text, re.M | re.S)
    assert block, name
    return block.group(1)


def test_compose_has_a_postgres_profile_with_two_replicas_sharing_one_database() -> None:
    text = COMPOSE.read_text()
    first, second, postgres = (_service(text, n) for n in ("makewatch", "makewatch-2", "postgres"))
    assert "profiles" not in first  # without the profile: one makewatch, on SQLite
    for block in (second, postgres):
        assert re.search(r'^    profiles: \["postgres"\]$', block, re.M)
    # Both replicas: the same image, the same config, the same database URL without a
    # password in it (libpq reads PGPASSWORD from makewatch.env), waiting for the server.
    assert re.search(r"^    image: makewatch:local$", second, re.M)
    assert re.search(rf"^\s+- \.\./makewatch\.toml:{CONTAINER_CONFIG}:ro$", second, re.M)
    url = re.search(r"MAKEWATCH_STATE_URL: (\S+)", first)
    assert url and url.group(1) == "postgresql://makewatch@postgres:5432/makewatch"
    assert "environment: *state-url" in second and "depends_on: *depends" in second
    assert re.search(r"postgres:\n\s+condition: service_healthy\n\s+required: false", first)
    assert "pg_isready" in postgres and "--locale=C" in postgres
    assert re.search(r"^\s+- makewatch-pg:/var/lib/postgresql/data$", postgres, re.M)
    assert re.search(r"^volumes:\n(  \S+:\n)*  makewatch-pg:", text, re.M)


def test_the_systemd_unit_restarts_on_failure_and_is_hardened() -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["ExecStart"] == "/opt/makewatch/.venv/bin/makewatch run --config /etc/makewatch/makewatch.toml"
    assert settings["Restart"] == "on-failure" and settings["RestartPreventExitStatus"] == "2"
    assert settings["EnvironmentFile"].startswith("/etc/makewatch/")
    assert settings["DynamicUser"] == "yes" and settings["StateDirectory"] == "makewatch"
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "NoNewPrivileges": "true",
        "PrivateTmp": "true",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings[key] == value, key


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this installation's.
    installed = Path(sys.executable).parent / "makewatch"
    unit = tmp_path / "makewatch.service"
    unit.write_text(UNIT.read_text().replace("/opt/makewatch/.venv/bin/makewatch", str(installed)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # It exits 0 on unknown keys and bad values, but says so: any output is a finding.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
