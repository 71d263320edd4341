"""Tests of watcher.config: loading, every kind of error, secrecy, API budget, documentation."""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from watcher import __version__
from watcher.config import (
    PLAN_API_LIMITS,
    ConfigError,
    OrganizationSettings,
    Secret,
    Settings,
    api_limit_for,
    budget_per_minute,
    load_config,
    settings_keys,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "README.md"
EXAMPLE = ROOT / "makewatch.example.toml"

TOKEN = "9f1c2d3e-aaaa-4bbb-8ccc-0123456789ab"  # UUID-shaped, like a real Make API token
ENV = {"MAKE_TOKEN": TOKEN}


# --- helpers ------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def to_toml(data: dict[str, Any]) -> str:
    """Enough of a TOML writer for these tests: scalars, arrays, tables, arrays of tables."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    for key, value in data.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
        elif isinstance(value, list):
            lines.insert(0, f"{key} = {_toml_value(value)}")
        elif isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def org(**overrides: Any) -> dict[str, Any]:
    """A valid [[organizations]] table; an override of None removes the key."""
    table: dict[str, Any] = {
        "name": "Acme",
        "zone": "eu1.make.com",
        "organization_id": 1,
        "token_env": "MAKE_TOKEN",
    }
    table.update(overrides)
    return {k: v for k, v in table.items() if v is not None}


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "makewatch.toml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else to_toml(data), encoding="utf-8")
    return path


def load_error(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV if env is None else env)
    return info.value


# --- loading valid files ------------------------------------------------------------------


def test_a_minimal_file_loads_with_every_default(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, {"organizations": [org()]}), env=ENV)

    (acme,) = settings.organizations
    assert acme.name == "Acme"
    assert acme.organization_id == 1
    assert acme.auth_scheme == "token"
    assert acme.plan is None
    assert acme.requests_per_minute is None
    assert acme.budget_share == 0.5
    assert acme.teams is None
    assert settings.state.db_path == Path("makewatch.db")
    assert settings.http.timeout_s == 30.0
    assert settings.http.max_attempts == 5
    assert settings.http.user_agent == f"makewatch/{__version__}"
    assert settings.logging.level == "INFO"


def test_a_zone_becomes_an_https_api_base_url(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, {"organizations": [org(zone="EU2.make.com")]}), env=ENV)
    assert settings.organizations[0].zone == "eu2.make.com"
    assert settings.organizations[0].api_base_url == "https://eu2.make.com/api/v2"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://eu1.make.com/api/v2", "https://eu1.make.com/api/v2"),
        ("http://127.0.0.1:8080/api/v2/", "http://127.0.0.1:8080/api/v2"),
        ("https://make.example.org/api/v2", "https://make.example.org/api/v2"),
    ],
)
def test_a_base_url_is_kept_without_a_trailing_slash(
    tmp_path: Path, base_url: str, expected: str
) -> None:
    data = {"organizations": [org(zone=None, base_url=base_url)]}
    settings = load_config(write(tmp_path, data), env=ENV)
    assert settings.organizations[0].api_base_url == expected


def test_the_token_comes_from_the_named_environment_variable(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, {"organizations": [org()]}), env={"MAKE_TOKEN": "t-1"})
    assert settings.organizations[0].token == Secret("t-1")
    assert settings.organizations[0].token.reveal() == "t-1"


def test_without_an_env_mapping_the_token_comes_from_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAKEWATCH_TEST_TOKEN", "from-os")
    settings = load_config(
        write(tmp_path, {"organizations": [org(token_env="MAKEWATCH_TEST_TOKEN")]})
    )
    assert settings.organizations[0].token.reveal() == "from-os"


def test_a_relative_token_file_is_read_from_the_config_directory_and_stripped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "etc"
    (config_dir / "secrets").mkdir(parents=True)
    (config_dir / "secrets" / "acme.token").write_text(f"  {TOKEN}\n", encoding="utf-8")
    path = write(
        config_dir, {"organizations": [org(token_env=None, token_file="secrets/acme.token")]}
    )
    monkeypatch.chdir(tmp_path)  # elsewhere: the cwd must not matter

    acme = load_config(path, env={}).organizations[0]

    assert acme.token.reveal() == TOKEN
    assert acme.token_file == config_dir / "secrets" / "acme.token"


def test_an_inline_token_works_but_logs_a_warning_without_the_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, {"organizations": [org(token_env=None, token=TOKEN)]})

    with caplog.at_level(logging.WARNING, logger="watcher.config"):
        settings = load_config(path, env={})

    assert settings.organizations[0].token.reveal() == TOKEN
    assert f"organizations[0].token is inline in {path}; prefer token_env or token_file" in (
        caplog.text
    )
    assert TOKEN not in caplog.text


def test_plain_http_to_a_remote_host_logs_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = {"organizations": [org(zone=None, base_url="http://make.example.org/api/v2")]}
    with caplog.at_level(logging.WARNING, logger="watcher.config"):
        load_config(write(tmp_path, data), env=ENV)
    assert "organizations[0].base_url" in caplog.text
    assert "unencrypted" in caplog.text


def test_every_optional_setting_is_read(tmp_path: Path) -> None:
    data = {
        "organizations": [
            org(
                auth_scheme="Bearer",
                plan="PRO",
                requests_per_minute=99,
                budget_share=1,
                teams=[3, 4],
            )
        ],
        "state": {"db_path": "data/mw.db"},
        "http": {"timeout_s": 2.5, "max_attempts": 1, "user_agent": "acme-watch/1"},
        "logging": {"level": "debug"},
    }
    settings = load_config(write(tmp_path, data), env=ENV)

    acme = settings.organizations[0]
    assert (acme.auth_scheme, acme.plan, acme.requests_per_minute) == ("bearer", "pro", 99)
    assert (acme.budget_share, acme.teams) == (1.0, (3, 4))
    assert settings.state.db_path == Path("data/mw.db")
    assert (settings.http.timeout_s, settings.http.max_attempts) == (2.5, 1)
    assert settings.http.user_agent == "acme-watch/1"
    assert settings.logging.level == "DEBUG"


def test_the_same_organization_id_through_two_base_urls_is_an_error(tmp_path: Path) -> None:
    # Two pollers on one organization, each with its own rate limiter, spend its API budget
    # twice (issue 12, point 9).
    data = {
        "organizations": [
            org(),
            org(name="Acme again", zone=None, base_url="https://eu1.make.com/api/v2/"),
            org(name="Acme US", zone="us1.make.com"),
        ]
    }
    error = load_error(write(tmp_path, data))
    assert error.key == "organizations[1].organization_id"
    assert "organization 1 is already watched by organizations[0]" in error.message


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, {"organizations": [org()]}), env=ENV)
    with pytest.raises(ValidationError):
        settings.organizations[0].name = "Other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.http.timeout_s = 1  # type: ignore[misc]


# --- errors -------------------------------------------------------------------------------


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "makewatch.toml"
    error = load_error(path)
    assert (error.file, error.key) == (str(path), None)
    assert str(error) == f"{path}: file not found (start from makewatch.example.toml)"


def test_a_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[[organizations]]\nname = "Acme"\nzone = eu1.make.com\n')
    error = load_error(path)
    assert error.key is None
    assert str(error).startswith(f"{path}: TOML syntax error at line 3, column 8: ")


def test_a_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "makewatch.toml"
    path.write_bytes(b'name = "\xff"\n')
    assert str(load_error(path)) == f"{path}: is not valid UTF-8"


def _with_token_file(tmp_path: Path, content: str) -> dict[str, Any]:
    (tmp_path / "acme.token").write_text(content, encoding="utf-8")
    return {"organizations": [org(token_env=None, token_file="acme.token")]}


# (id, config or a function of tmp_path building it, env, key, what the message says)
ERROR_CASES: list[tuple[str, Any, dict[str, str] | None, str, str]] = [
    ("no organizations", {"state": {"db_path": "x.db"}}, None, "organizations", "is required: add at least one [[organizations]] table"),
    ("empty organizations", {"organizations": []}, None, "organizations", "must not be empty"),
    ("organizations as a single table", "[organizations]\nname = 'Acme'\n", None, "organizations", "must be an array (got table)"),
    ("missing name", {"organizations": [org(name=None)]}, None, "organizations[0].name", "is required"),
    ("missing organization_id", {"organizations": [org(organization_id=None)]}, None, "organizations[0].organization_id", "is required"),
    ("organization_id zero", {"organizations": [org(organization_id=0)]}, None, "organizations[0].organization_id", "must be greater than 0"),
    ("organization_id as a string", {"organizations": [org(organization_id="12")]}, None, "organizations[0].organization_id", "must be a valid integer (got string)"),
    ("zone and base_url both set", {"organizations": [org(base_url="https://eu1.make.com/api/v2")]}, None, "organizations[0].base_url", "zone and base_url are both set"),
    ("neither zone nor base_url", {"organizations": [org(zone=None)]}, None, "organizations[0].zone", "is required: set zone"),
    ("zone given as a URL", {"organizations": [org(zone="https://eu1.make.com")]}, None, "organizations[0].zone", "must be a hostname such as eu1.make.com, not a URL"),
    ("zone not a hostname", {"organizations": [org(zone="eu1")]}, None, "organizations[0].zone", "must be a hostname"),
    ("base_url with an ftp scheme", {"organizations": [org(zone=None, base_url="ftp://eu1.make.com/api/v2")]}, None, "organizations[0].base_url", "must start with https://"),
    ("base_url without a scheme", {"organizations": [org(zone=None, base_url="eu1.make.com/api/v2")]}, None, "organizations[0].base_url", "must start with https://"),
    ("base_url with a query", {"organizations": [org(zone=None, base_url="https://eu1.make.com/api/v2?x=1")]}, None, "organizations[0].base_url", "must not contain a query"),
    ("no token source", {"organizations": [org(token_env=None)]}, None, "organizations[0].token_env", "no token: set exactly one of token_env, token_file or token"),
    ("token_env and token both set", {"organizations": [org(token=TOKEN)]}, None, "organizations[0].token", "token_env and token are both set"),
    ("all three token sources set", {"organizations": [org(token_file="t", token=TOKEN)]}, None, "organizations[0].token_file", "token_env, token_file and token are all set"),
    ("env var unset", {"organizations": [org(), org(name="Globex", organization_id=2, token_env="MAKE_TOKEN_GLOBEX")]}, None, "organizations[1].token_env", "environment variable MAKE_TOKEN_GLOBEX is not set"),
    ("env var empty", {"organizations": [org()]}, {"MAKE_TOKEN": "  "}, "organizations[0].token_env", "environment variable MAKE_TOKEN is empty"),
    ("token_env not a variable name", {"organizations": [org(token_env="MAKE TOKEN")]}, None, "organizations[0].token_env", "must be the name of an environment variable"),
    ("token file missing", {"organizations": [org(token_env=None, token_file="nope.token")]}, None, "organizations[0].token_file", "nope.token does not exist"),
    ("token file empty", lambda tmp: _with_token_file(tmp, "\n"), None, "organizations[0].token_file", "acme.token is empty"),
    ("inline token empty", {"organizations": [org(token_env=None, token="")]}, None, "organizations[0].token", "is empty"),
    ("inline token not a string", {"organizations": [org(token_env=None, token=123)]}, None, "organizations[0].token", "must be a string (got integer)"),
    ("token with whitespace inside", {"organizations": [org()]}, {"MAKE_TOKEN": "abc def"}, "organizations[0].token_env", "contains whitespace or control characters"),
    ("bad auth_scheme", {"organizations": [org(auth_scheme="basic")]}, None, "organizations[0].auth_scheme", "must be 'token' or 'bearer'"),
    ("unknown plan", {"organizations": [org(plan="business")]}, None, "organizations[0].plan", "must be 'free', 'core', 'pro', 'teams' or 'enterprise'"),
    ("requests_per_minute zero", {"organizations": [org(requests_per_minute=0)]}, None, "organizations[0].requests_per_minute", "must be greater than 0"),
    ("budget_share 0", {"organizations": [org(budget_share=0)]}, None, "organizations[0].budget_share", "must be greater than 0"),
    ("budget_share 1.5", {"organizations": [org(budget_share=1.5)]}, None, "organizations[0].budget_share", "must be less than or equal to 1"),
    ("budget_share as a string", {"organizations": [org(budget_share="0.5")]}, None, "organizations[0].budget_share", "must be a valid number (got string)"),
    ("teams empty", {"organizations": [org(teams=[])]}, None, "organizations[0].teams", "must not be empty; leave teams out to watch every team"),
    ("teams with a string", {"organizations": [org(teams=[1, "2"])]}, None, "organizations[0].teams[1]", "must be a valid integer (got string)"),
    ("unknown key close to a known one", {"organizations": [org(tokn_env="X")]}, None, "organizations[0].tokn_env", "unknown key; did you mean 'token_env'?"),
    ("unknown key far from any", {"organizations": [org(colour="red")]}, None, "organizations[0].colour", "unknown key; expected one of: auth_scheme, base_url"),
    ("unknown section close to a known one", {"organizations": [org()], "htpp": {"timeout_s": 1.0}}, None, "htpp", "unknown key; did you mean 'http'?"),
    ("unknown key in a section", {"organizations": [org()], "http": {"timeout": 1.0}}, None, "http.timeout", "unknown key; did you mean 'timeout_s'?"),
    ("duplicate names", {"organizations": [org(), org(name="acme", organization_id=2)]}, None, "organizations[1].name", "duplicate name 'acme' (already used by organizations[0])"),
    ("duplicate organization ids", {"organizations": [org(), org(name="Acme 2")]}, None, "organizations[1].organization_id", "organization 1 is already watched by organizations[0]"),
    ("duplicate organization ids in two zones", {"organizations": [org(), org(name="Acme 2", zone="us1.make.com")]}, None, "organizations[1].organization_id", "organization 1 is already watched by organizations[0]"),
    ("organization_id beyond 64 bits", {"organizations": [org(organization_id=99999999999999999999999)]}, None, "organizations[0].organization_id", "integer out of range: TOML integers are 64-bit"),
    ("a team id beyond 64 bits", {"organizations": [org(teams=[1, -(2**63) - 1])]}, None, "organizations[0].teams[1]", "integer out of range"),
    ("poll_interval_s infinite", {"organizations": [org()], "polling": {"poll_interval_s": float("inf")}}, None, "polling.poll_interval_s", "must be a finite number"),
    ("timeout_s nan", {"organizations": [org()], "http": {"timeout_s": float("nan")}}, None, "http.timeout_s", "must be a finite number"),
    ("db_path a directory", lambda tmp: {"organizations": [org()], "state": {"db_path": str(tmp)}}, None, "state.db_path", "is a directory; give the path of a file in it"),
    ("ca_file missing", lambda tmp: _with_ca_file(tmp, None), None, "channels.mail.ca_file", "nope.pem does not exist"),
    ("ca_file not PEM", lambda tmp: _with_ca_file(tmp, "not a certificate\n"), None, "channels.mail.ca_file", "is not a CA bundle in PEM format"),
    ("ca_file a directory", lambda tmp: _with_ca_file(tmp, None, directory=True), None, "channels.mail.ca_file", "is a directory"),
    ("arrays nested 5,000 deep", to_toml({"organizations": [org()]}) + "[polling]\nquota_thresholds = " + "[" * 5000 + "]" * 5000 + "\n", None, "polling.quota_thresholds", "nested too deeply (line 8)"),
    ("arrays nested 40 deep", to_toml({"organizations": [org()]}) + "[polling]\nquota_thresholds = " + "[" * 40 + "1" + "]" * 40 + "\n", None, "polling.quota_thresholds", "nested more than 32 levels deep"),
    ("state section not a table", {"organizations": [org()], "state": "x.db"}, None, "state", "must be a table (got string)"),
    ("timeout_s negative", {"organizations": [org()], "http": {"timeout_s": -1}}, None, "http.timeout_s", "must be greater than 0"),
    ("max_attempts zero", {"organizations": [org()], "http": {"max_attempts": 0}}, None, "http.max_attempts", "must be greater than or equal to 1"),
    ("user_agent empty", {"organizations": [org()], "http": {"user_agent": ""}}, None, "http.user_agent", "at least 1 character"),
    ("bad logging level", {"organizations": [org()], "logging": {"level": "TRACE"}}, None, "logging.level", "must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
]  # fmt: skip


def _with_ca_file(tmp: Path, pem: str | None, *, directory: bool = False) -> str:
    """A config with an e-mail channel whose ca_file is missing, holds ``pem``, or is a dir."""
    name = "nope.pem"
    if directory:
        (tmp / "certs").mkdir()
        name = "certs"
    elif pem is not None:
        name = "ca.pem"
        (tmp / name).write_text(pem)
    return to_toml({"organizations": [org()]}) + (
        '[channels.mail]\ntype = "email"\nsmtp_host = "smtp.example.com"\n'
        f'from_addr = "a@example.com"\nto = ["b@example.com"]\nca_file = "{name}"\n'
    )


@pytest.mark.parametrize(
    ("config", "env", "key", "message"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_each_problem_is_reported_with_the_file_the_key_and_what_is_wrong(
    tmp_path: Path, config: Any, env: dict[str, str] | None, key: str, message: str
) -> None:
    path = write(tmp_path, config(tmp_path) if callable(config) else config)

    error = load_error(path, env)

    assert (error.file, error.key) == (str(path), key)
    assert message in error.message
    assert str(error).startswith(f"{path}: {key}: ")


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    data = {
        "organizations": [org(plan="gold"), org(name="Globex", organization_id=0)],
        "logging": {"level": "LOUD"},
    }
    path = write(tmp_path, data)

    lines = str(load_error(path)).splitlines()

    assert [line.split(": ")[1] for line in lines] == [
        "organizations[0].plan",
        "organizations[1].organization_id",
        "logging.level",
    ]
    assert all(line.startswith(f"{path}: ") for line in lines)


# --- secrets ------------------------------------------------------------------------------


def test_a_secret_hides_its_value_and_compares_by_value() -> None:
    secret = Secret(TOKEN)
    assert repr(secret) == str(secret) == "Secret('***')"
    assert f"{secret}" == "Secret('***')"
    assert secret.reveal() == TOKEN
    assert secret == Secret(TOKEN)
    assert secret != Secret("other")
    assert len({secret, Secret(TOKEN)}) == 1


# Each case puts the secret somewhere in the configuration and makes loading fail.
LEAK_CASES: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("inline token and an unknown key", {"organizations": [org(token_env=None, token=TOKEN, colour="red")]}, {}),
    ("inline token and a second source", {"organizations": [org(token=TOKEN)]}, ENV),
    ("token from env and another bad organization", {"organizations": [org(), org(name="B", zone="bad")]}, ENV),
    ("token pasted into token_env", {"organizations": [org(token_env=TOKEN)]}, {}),
    ("token pasted into token_file", {"organizations": [org(token_env=None, token_file=TOKEN)]}, {}),
    ("token with a space inside", {"organizations": [org(token_env=None, token=TOKEN + " x")]}, {}),
    ("token inline with the wrong type", {"organizations": [org(token_env=None, token=[TOKEN])]}, {}),
    ("token in base_url credentials", {"organizations": [org(zone=None, base_url=f"https://u:{TOKEN}@eu1.make.com/api/v2")]}, ENV),
    ("token in an unknown key", {"organizations": [org()], "http": {"api_token": TOKEN}}, ENV),
]  # fmt: skip


@pytest.mark.parametrize(
    ("config", "env"), [case[1:] for case in LEAK_CASES], ids=[case[0] for case in LEAK_CASES]
)
def test_no_error_message_contains_the_secret(
    tmp_path: Path, config: dict[str, Any], env: dict[str, str]
) -> None:
    error = load_error(write(tmp_path, config), env)
    assert TOKEN not in str(error)
    assert TOKEN not in repr(error)
    assert error.__cause__ is None and error.__suppress_context__


@pytest.mark.parametrize("source", ["token_env", "token_file", "token"])
def test_no_repr_of_the_settings_contains_the_secret(tmp_path: Path, source: str) -> None:
    (tmp_path / "acme.token").write_text(TOKEN, encoding="utf-8")
    value = {"token_env": "MAKE_TOKEN", "token_file": "acme.token", "token": TOKEN}[source]
    data = {"organizations": [org(**{"token_env": None, source: value})]}

    settings = load_config(write(tmp_path, data), env=ENV)

    assert settings.organizations[0].token.reveal() == TOKEN
    for text in (repr(settings), str(settings), repr(settings.organizations[0])):
        assert TOKEN not in text
    assert TOKEN not in settings.model_dump_json()


# --- API limit and budget -----------------------------------------------------------------


def make_org(**overrides: Any) -> OrganizationSettings:
    return OrganizationSettings.model_validate(org(token_env=None, token="t", **overrides))


def test_plan_api_limits_are_makes_documented_figures() -> None:
    assert PLAN_API_LIMITS == {"free": 30, "core": 60, "pro": 120, "teams": 240, "enterprise": 1000}


@pytest.mark.parametrize(
    ("plan", "requests_per_minute", "license_api_limit", "expected"),
    [
        (None, None, 60, 60),  # Make's license.apiLimit is authoritative...
        ("enterprise", 500, 120, 120),  # ...over both configured values
        ("core", None, None, 60),  # then the plan's documented figure
        ("teams", 500, None, 240),  # the plan wins over requests_per_minute
        ("free", None, None, 30),
        (None, 500, None, 500),  # then requests_per_minute
        (None, None, None, None),  # nothing known
        ("pro", None, 0, 120),  # a zero from Make means "unknown", not "no requests"
    ],
)
def test_api_limit_for_prefers_license_then_plan_then_requests_per_minute(
    plan: str | None,
    requests_per_minute: int | None,
    license_api_limit: int | None,
    expected: int | None,
) -> None:
    organization = make_org(plan=plan, requests_per_minute=requests_per_minute)
    assert api_limit_for(organization, license_api_limit) == expected


@pytest.mark.parametrize(
    ("plan", "budget_share", "license_api_limit", "expected"),
    [
        ("core", 0.5, None, 30),
        ("core", 0.5, 240, 120),  # license first
        ("teams", 0.35, None, 84),  # not 83 through float rounding
        ("pro", 1.0, None, 120),
        ("core", 0.33, None, 19),  # rounded down
        (None, 0.5, None, 15),  # nothing known: assume the Free figure, 30
        (None, 0.01, None, 1),  # never below one request per minute
    ],
)
def test_budget_per_minute_takes_the_share_of_the_limit_rounded_down(
    plan: str | None, budget_share: float, license_api_limit: int | None, expected: int
) -> None:
    organization = make_org(plan=plan, budget_share=budget_share)
    assert budget_per_minute(organization, license_api_limit) == expected


# --- documentation ------------------------------------------------------------------------


def test_settings_keys_lists_every_leaf_setting_as_a_dotted_key() -> None:
    keys = settings_keys()
    assert keys[0] == "organizations[].name"
    assert {"organizations[].token", "state.db_path", "http.user_agent", "logging.level"} <= set(
        keys
    )
    assert "organizations[].inline_token" not in keys  # the TOML name, not the attribute
    assert len(keys) == len(set(keys))
    assert set(settings_keys()) < set(settings_keys(include_tables=True))


@pytest.mark.parametrize("key", settings_keys())
def test_every_setting_is_documented(key: str) -> None:
    assert f"`{key}`" in DOCS.read_text(encoding="utf-8")


def test_the_configuration_docs_are_a_readme_section() -> None:
    assert "\n## Configuration\n" in DOCS.read_text(encoding="utf-8")


def example_keys() -> set[str]:
    """Dotted keys shown in the example file, commented-out ones included."""
    keys: set[str] = set()
    table = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("# ").strip()
        if header := re.fullmatch(r"\[\[([\w.]+)\]\]", text):
            table = header[1] + "[]."
        elif header := re.fullmatch(r"\[channels\.([\w-]+)\]", text):
            table = "channels.<name>."
        elif header := re.fullmatch(r"\[([\w.]+)\]", text):
            table = header[1] + "."
        elif assignment := re.match(r"(\w+) = ", text):
            keys.add(table + assignment[1])
    return keys


@pytest.mark.parametrize("key", settings_keys())
def test_every_setting_appears_in_the_example_file(key: str) -> None:
    assert key in example_keys()


def test_the_example_file_loads(caplog: pytest.LogCaptureFixture) -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    env = {o["token_env"]: f"token-{i}" for i, o in enumerate(data["organizations"])}
    env |= {
        c[key]: "https://hooks.slack.com/services/T0/B0/x" if key == "webhook_url_env" else f"secret-{n}"
        for n, c in data.get("channels", {}).items()
        for key in ("webhook_url_env", "token_env", "password_env")
        if key in c
    }

    settings = load_config(EXAMPLE, env=env)

    assert isinstance(settings, Settings)
    assert len(settings.organizations) == len(data["organizations"])
    assert set(settings.channels) == set(data["channels"])
    assert caplog.records == []  # the example follows its own advice


@pytest.mark.parametrize(
    ("polling", "expected_min"),
    [({}, 10.0), ({"poll_interval_s": 1.0}, 1.0), ({"poll_interval_s": 60.0, "min_poll_interval_s": 30.0}, 30.0)],
)
def test_the_shortest_poll_interval_defaults_sensibly(tmp_path: Path, polling: dict, expected_min: float) -> None:
    path = write(tmp_path, {"organizations": [org()], "polling": polling})
    settings = load_config(path, env={"MAKE_TOKEN": "t"})
    assert settings.polling.min_interval_s == expected_min


def test_a_shortest_poll_interval_above_the_longest_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {"organizations": [org()], "polling": {"poll_interval_s": 20.0, "min_poll_interval_s": 30.0}})
    with pytest.raises(ConfigError, match=r"polling.min_poll_interval_s: must not be larger than poll_interval_s"):
        load_config(path, env={"MAKE_TOKEN": "t"})


# --- [state] on PostgreSQL ----------------------------------------------------------------

PG_URL = "postgresql://makewatch:s3cr3t-pw@db.internal:5432/makewatch"


def test_without_a_url_the_state_is_the_sqlite_file(tmp_path: Path) -> None:
    state = load_config(write(tmp_path, {"organizations": [org()]}), env=ENV).state
    assert (state.engine, state.url, state.lease_ttl_s, state.replica_id) == ("sqlite", None, 30.0, None)


def test_a_state_url_from_the_environment_selects_postgresql(tmp_path: Path) -> None:
    data = {"organizations": [org()], "state": {"url_env": "STATE_URL", "lease_ttl_s": 12.0, "replica_id": "w-1"}}
    state = load_config(write(tmp_path, data), env={**ENV, "STATE_URL": PG_URL + "\n"}).state
    assert state.engine == "postgres"
    assert state.url is not None and state.url.reveal() == PG_URL
    assert (state.lease_ttl_s, state.replica_id) == (12.0, "w-1")
    assert "s3cr3t" not in repr(state)


def test_a_state_url_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "pg.url").write_text(PG_URL, encoding="utf-8")
    data = {"organizations": [org()], "state": {"url_file": "pg.url"}}
    assert load_config(write(tmp_path, data), env=ENV).state.url.reveal() == PG_URL


@pytest.mark.parametrize(
    ("state", "env", "key", "message"),
    [
        ({"url": "mysql://u:s3cr3t-pw@h/db"}, {}, "state.url", "must be a PostgreSQL URL"),
        ({"url_env": "STATE_URL"}, {}, "state.url_env", "environment variable STATE_URL is not set"),
        ({"url_env": "STATE_URL"}, {"STATE_URL": "http://x:s3cr3t-pw@h/"}, "state.url_env", "must be a PostgreSQL URL"),
        ({"url_env": "postgresql://x:s3cr3t-pw@h/db"}, {}, "state.url_env", "must be the name of an environment variable"),
        ({"url": PG_URL, "url_env": "STATE_URL"}, {"STATE_URL": PG_URL}, "state.url", "keep exactly one"),
        ({"lease_ttl_s": 1.0}, {}, "state.lease_ttl_s", "greater than or equal to 5"),
        ({"replica_id": "has space"}, {}, "state.replica_id", "letters, digits"),
    ],
)
def test_a_bad_state_url_names_the_key_and_never_the_password(
    tmp_path: Path, state: dict[str, Any], env: dict[str, str], key: str, message: str
) -> None:
    error = load_error(write(tmp_path, {"organizations": [org()], "state": state}), env={**ENV, **env})
    text = str(error)
    assert f"{key}: " in text and message in text
    assert "s3cr3t" not in text


def test_an_inline_state_url_with_a_password_logs_a_warning_without_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="watcher.config"):
        load_config(write(tmp_path, {"organizations": [org()], "state": {"url": PG_URL}}), env=ENV)
    assert "state.url is inline and holds a password" in caplog.text
    assert "s3cr3t" not in caplog.text
