"""makewatch's settings: one typed schema, read from TOML and validated at start-up.

``load_config(path)`` is the only entry point the rest of the program needs. Every problem in
the file becomes a :class:`ConfigError` that names the file, the dotted key (list indexes in
brackets, ``organizations[1].token_env``) and what is wrong, and never contains a secret.

The pydantic models below are the single declaration of every setting: ``settings_keys()``
walks them, and a test checks each key is documented in docs/configuration.md and shown in
makewatch.example.toml. New sections ([polling], [alerts], ...) are new ``Section`` models
added as fields of :class:`Settings`.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from alerts.channels import (
    ChannelSettings,
    EmailChannel,
    channel_settings_keys,
    check_env_name,
    resolve_file,
    resolve_secret,
)
from alerts.policy import (
    AlertsSettings,
    OrgMatcher,
    RouteSettings,
    ScenarioMatcher,
    SilenceWindowSettings,
    TeamMatcher,
)
from alerts.routing import scope_matches
from alerts.schedule import DigestSettings
from watcher import __version__
from watcher.business_hours import BusinessHours
from watcher.settings_base import (
    CONTROL_CHARS,
    ENV_NAME,
    FORBIDDEN_IN_HEADER,
    KeyProblem,
    Secret,
    Section,
    StrictFloat,
    StrictPositiveInt,
    TimeZoneName,
    nested_model,
    toml_type,
)
from watcher.web.settings import WebSettings

__all__ = [
    "PLAN_API_LIMITS",
    "ConfigError",
    "HttpSettings",
    "LoggingSettings",
    "OrganizationSettings",
    "Secret",
    "Settings",
    "StateSettings",
    "WebSettings",
    "api_limit_for",
    "budget_per_minute",
    "load_config",
    "settings_keys",
]

log = logging.getLogger(__name__)

# Requests per minute per organization, by plan.
# Core/Pro/Teams/Enterprise are Make's documented figures
# (https://developers.make.com/api-documentation/getting-started/rate-limiting). Free is not
# documented; 30 is what live responses report as license.apiLimit for Free organizations.
# The "Free 60 / Core 120 / Pro 300 / Teams 600" (or "60-600") table repeated by some
# third-party guides is wrong: budgeting from it would trip Make's 429s for the whole
# organization, the user's own integrations included. See /work/shared/make-api.md §6 and §9.
PLAN_API_LIMITS: dict[str, int] = {
    "free": 30,
    "core": 60,
    "pro": 120,
    "teams": 240,
    "enterprise": 1000,
}

Plan = Literal["free", "core", "pro", "teams", "enterprise"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# Strict: TOML has real numbers, so a quoted "0.5" or a boolean is a mistake worth reporting.

# Make API tokens are UUID-shaped (make-api.md §1.2). Used to spot a token pasted into
# token_env / token_file, so that the error about it does not repeat it.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class ConfigError(Exception):
    """A problem in the configuration file.

    ``str()`` is ``"<file>: <key>: <message>"`` (``"<file>: <message>"`` when the problem is
    the file itself). When several keys are wrong, ``also`` holds the other problems and
    ``str()`` lists one per line. Messages never contain secret values.
    """

    def __init__(
        self,
        file: str | os.PathLike[str],
        key: str | None,
        message: str,
        *,
        also: Sequence[ConfigError] = (),
    ) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        self.also = tuple(also)
        super().__init__(self._line())

    def _line(self) -> str:
        if self.key:
            return f"{self.file}: {self.key}: {self.message}"
        return f"{self.file}: {self.message}"

    def __str__(self) -> str:
        return "\n".join([self._line(), *(e._line() for e in self.also)])


class OrganizationSettings(Section):
    """One ``[[organizations]]`` table: a Make organization to watch, and how to reach it."""

    name: str = Field(min_length=1)
    zone: str | None = None
    base_url: str | None = None
    organization_id: StrictPositiveInt
    token_env: str | None = None
    token_file: Path | None = None
    # The TOML key is ``token``; the attribute ``token`` is the resolved secret, whatever its
    # source (see the property below).
    inline_token: Secret | None = Field(default=None, alias="token")
    auth_scheme: Literal["token", "bearer"] = "token"
    plan: Plan | None = None
    requests_per_minute: StrictPositiveInt | None = None
    budget_share: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.5
    teams: Annotated[tuple[StrictPositiveInt, ...], Field(min_length=1)] | None = None
    # A second token for the actions (``[actions]``: start, stop, run, replay, DLQ retry), so
    # that the polling token can stay read-only. Unset: the polling token is used for both.
    write_token_env: str | None = None
    write_token_file: Path | None = None
    inline_write_token: Secret | None = Field(default=None, alias="write_token")

    _token: Secret = PrivateAttr()
    _write_token: Secret | None = PrivateAttr(default=None)

    @property
    def token(self) -> Secret:
        """The organization's API (or OAuth) token, from token_env, token_file or token."""
        return self._token

    @property
    def write_token(self) -> Secret:
        """The token actions use: write_token_env/_file/write_token, else the polling token."""
        return self._write_token or self._token

    @property
    def has_write_token(self) -> bool:
        """True when a separate write token is configured."""
        return self._write_token is not None

    @field_validator("write_token_env")
    @classmethod
    def _check_write_env(cls, value: str | None) -> str | None:
        return check_env_name(value)

    @field_validator("write_token_file")
    @classmethod
    def _check_write_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_file(value, info)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def api_base_url(self) -> str:
        """Base of every API call, without a trailing slash: base_url, or https://<zone>/api/v2."""
        if self.base_url is not None:
            return self.base_url
        return f"https://{self.zone}/api/v2"

    @field_validator("auth_scheme", "plan", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("zone")
    @classmethod
    def _check_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "/" in value or ":" in value:
            raise ValueError(
                "must be a hostname such as eu1.make.com, not a URL; put a full URL in base_url"
            )
        host = value.lower().rstrip(".")
        labels = host.split(".")
        if len(host) > 253 or len(labels) < 2 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
            raise ValueError("must be a hostname such as eu1.make.com")
        return host

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(
                "must start with https:// (or http:// for a local simulator), "
                'such as "https://eu1.make.com/api/v2"'
            )
        if not parts.hostname:
            raise ValueError('has no host; expected a URL such as "https://eu1.make.com/api/v2"')
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials; use token_env, token_file or token")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query (?...) or fragment (#...)")
        return value.rstrip("/")

    @field_validator("token_env")
    @classmethod
    def _check_token_env(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _UUID.search(value) or not ENV_NAME.fullmatch(value):
            raise ValueError(
                "must be the name of an environment variable (letters, digits and _), "
                "such as MAKE_TOKEN; it looks like something else, perhaps the token itself"
            )
        return value

    @field_validator("token_file")
    @classmethod
    def _resolve_token_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """Relative paths are relative to the config file's directory, not the cwd."""
        if value is None:
            return None
        if _UUID.search(str(value)):
            raise ValueError(
                "looks like a token, not a file path; put the token in a file and name the file"
            )
        config_dir = (info.context or {}).get("config_dir") or Path.cwd()
        return (Path(config_dir) / value.expanduser()).absolute()

    @model_validator(mode="after")
    def _resolve_token(self, info: ValidationInfo) -> OrganizationSettings:
        if self.zone is not None and self.base_url is not None:
            raise KeyProblem(("base_url",), "zone and base_url are both set; keep exactly one")
        if self.zone is None and self.base_url is None:
            raise KeyProblem(
                ("zone",), 'is required: set zone (such as "eu1.make.com") or base_url'
            )

        sources = [
            key
            for key, value in (
                ("token_env", self.token_env),
                ("token_file", self.token_file),
                ("token", self.inline_token),
            )
            if value is not None
        ]
        if not sources:
            raise KeyProblem(
                ("token_env",), "no token: set exactly one of token_env, token_file or token"
            )
        if len(sources) > 1:
            raise KeyProblem(
                (sources[1],),
                f"{', '.join(sources[:-1])} and {sources[-1]} are "
                f"{'both' if len(sources) == 2 else 'all'} set; keep exactly one",
            )
        source = sources[0]

        if self.token_env is not None:
            env = (info.context or {}).get("env")
            value = (os.environ if env is None else env).get(self.token_env)
            if value is None:
                raise KeyProblem(
                    ("token_env",), f"environment variable {self.token_env} is not set"
                )
            where = f"environment variable {self.token_env}"
        elif self.token_file is not None:
            try:
                value = self.token_file.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise KeyProblem(
                    ("token_file",), f"file {self.token_file} does not exist"
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
                raise KeyProblem(
                    ("token_file",), f"cannot read {self.token_file}: {reason}"
                ) from None
            where = f"file {self.token_file}"
        else:
            assert self.inline_token is not None
            value = self.inline_token.reveal()
            where = "the value"

        value = value.strip()
        if not value:
            raise KeyProblem((source,), f"{where} is empty" if source != "token" else "is empty")
        if FORBIDDEN_IN_HEADER.search(value):
            raise KeyProblem(
                (source,),
                f"the token in {where} contains whitespace or control characters"
                if source != "token"
                else "contains whitespace or control characters",
            )
        self._token = Secret(value)
        write = resolve_secret(self, info, "write_token", required=False)
        self._write_token = write[0] if write is not None else None
        return self


_REPLICA_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,100}$")


class StateSettings(Section):
    """``[state]``: where makewatch keeps what it has seen and sent.

    SQLite at ``db_path`` (one process), or PostgreSQL when a URL is given (``url_env``,
    ``url_file`` or ``url``: several replicas share it and lease the organizations).
    """

    db_path: Path = Path("makewatch.db")
    retention_days: Annotated[int, Strict(), Field(ge=7)] = 90
    url_env: str | None = None
    url_file: Path | None = None
    # The TOML key is ``url``; the attribute ``url`` is the resolved secret (it may hold a
    # password), whatever its source.
    inline_url: Secret | None = Field(default=None, alias="url")
    lease_ttl_s: Annotated[StrictFloat, Field(ge=5, le=600)] = 30.0
    replica_id: str | None = None

    _url: Secret | None = PrivateAttr(default=None)

    @property
    def url(self) -> Secret | None:
        """The PostgreSQL URL (``postgresql://…``), or None for SQLite at ``db_path``."""
        return self._url

    @property
    def engine(self) -> Literal["sqlite", "postgres"]:
        """Which engine keeps the state."""
        return "sqlite" if self._url is None else "postgres"

    @field_validator("url_env")
    @classmethod
    def _check_url_env(cls, value: str | None) -> str | None:
        return check_env_name(value)

    @field_validator("url_file")
    @classmethod
    def _check_url_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_file(value, info)

    @field_validator("replica_id")
    @classmethod
    def _check_replica_id(cls, value: str | None) -> str | None:
        if value is not None and not _REPLICA_ID.fullmatch(value):
            raise ValueError("must be 1-100 letters, digits or . _ : @ -")
        return value

    @model_validator(mode="after")
    def _resolve_url(self, info: ValidationInfo) -> StateSettings:
        resolved = resolve_secret(self, info, "url", required=False)
        if resolved is None:
            return self
        secret, source = resolved
        parts = urlsplit(secret.reveal().strip())
        # The message never repeats the value: it may carry a password.
        if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or parts.path):
            raise KeyProblem((source,), "must be a PostgreSQL URL: postgresql://user@host:5432/dbname")
        self._url = Secret(secret.reveal().strip())
        return self

    def risky_choices(self) -> list[str]:
        """Warnings for the loader to log (never containing the secret)."""
        if self.inline_url is not None and urlsplit(self.inline_url.reveal()).password:
            return ["state.url is inline and holds a password; prefer state.url_env or state.url_file"]
        return []

    @field_validator("db_path")
    @classmethod
    def _not_a_directory(cls, value: Path) -> Path:
        # A file that is unreadable, corrupt or read-only is reported when it is opened
        # (watcher.store.StateFileError); a directory is a mistake in this file.
        if value.is_dir():
            raise ValueError(
                f"{value} is a directory; give the path of a file in it, such as "
                f'"{value / "makewatch.db"}"'
            )
        return value


DEFAULT_MIN_POLL_INTERVAL_S = 10.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"7d"`` -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration like '24h', '30m' or '7d': {text!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def _check_expect_every(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


def _check_business_hours(value: str | None) -> str | None:
    if value is not None:
        BusinessHours.parse(value)
    return value


ExpectEvery = Annotated[str, AfterValidator(_check_expect_every)]
BusinessHoursText = Annotated[str, AfterValidator(_check_business_hours)]
IdleFactor = Annotated[StrictFloat, Field(gt=0)]
VolumeFactor = Annotated[StrictFloat, Field(gt=1)]


class SilentRuleSettings(Section):
    """One ``[[polling.silent.rules]]`` table: silent-failure settings for the scenarios its
    matchers select (``org``, ``team_id``, ``scenario``: as in ``[[routes]]``; unset = any).
    Every matching rule applies, in order; a later one overrides the keys it sets."""

    org: OrgMatcher | None = None
    team_id: TeamMatcher | None = None
    scenario: ScenarioMatcher | None = None
    overdue: bool | None = None
    grace_s: Annotated[StrictFloat, Field(ge=0)] | None = None
    grace_factor: Annotated[StrictFloat, Field(ge=0)] | None = None
    idle: bool | None = None
    idle_factor: IdleFactor | None = None
    expect_every: ExpectEvery | None = None
    business_hours: BusinessHoursText | None = None
    timezone: TimeZoneName | None = None
    volume: bool | None = None
    volume_factor: VolumeFactor | None = None
    volume_min_ops: Annotated[StrictFloat, Field(ge=0)] | None = None


class SilentSettings(Section):
    """``[polling.silent]``: the silent-failure checks (watcher.silent) and their defaults."""

    overdue: bool = True
    grace_s: Annotated[StrictFloat, Field(ge=0)] = 300.0
    grace_factor: Annotated[StrictFloat, Field(ge=0)] = 1.5
    idle: bool = True
    idle_factor: IdleFactor = 10.0
    expect_every: ExpectEvery | None = None
    business_hours: BusinessHoursText | None = None
    timezone: TimeZoneName = "UTC"
    volume: bool = True
    volume_factor: VolumeFactor = 3.0
    volume_min_ops: Annotated[StrictFloat, Field(ge=0)] = 50.0
    rules: tuple[SilentRuleSettings, ...] = ()

    def effective(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        """The settings for one scenario: the defaults, then each matching rule's keys.

        ``labels``: ``org_id``, ``org`` (name), ``team_id``, ``scenario_id``, ``scenario`` (name).
        """
        out = {k: getattr(self, k) for k in SilentSettings.model_fields if k != "rules"}
        for rule in self.rules:
            if scope_matches(rule.org, rule.team_id, rule.scenario, labels):
                out |= {k: v for k, v in rule.model_dump(exclude={"org", "team_id", "scenario"}).items() if v is not None}
        return out


class PollingSettings(Section):
    """``[polling]``: how often and how much makewatch reads from Make."""

    poll_interval_s: Annotated[StrictFloat, Field(ge=1)] = 60.0
    # None: 10 s, or poll_interval_s when that is shorter (see min_interval_s).
    min_poll_interval_s: Annotated[StrictFloat, Field(ge=1)] | None = None
    sweep_interval_s: Annotated[StrictFloat, Field(ge=60)] = 3600.0
    usage_interval_s: Annotated[StrictFloat, Field(ge=60)] = 900.0
    backfill: str = "none"
    warnings: bool = False
    quota_thresholds: Annotated[tuple[Annotated[int, Field(gt=0, le=100)], ...], Field(min_length=1)] = (
        75,
        90,
        100,
    )
    hook_backlog_ratio: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.8
    unreachable_after_cycles: Annotated[int, Strict(), Field(ge=1)] = 3
    concurrency: Annotated[int, Strict(), Field(ge=1, le=32)] = 4
    # Enterprise analytics as a signal of failed runs, where the license has analyticsAccess.
    analytics: bool = True
    # The token owner's in-app notifications as a hint (GET /notifications), off by default.
    notifications: bool = False
    silent: SilentSettings = Field(default_factory=SilentSettings)

    @model_validator(mode="after")
    def _check_intervals(self) -> PollingSettings:
        if self.min_poll_interval_s is not None and self.min_poll_interval_s > self.poll_interval_s:
            raise KeyProblem(("min_poll_interval_s",), "must not be larger than poll_interval_s")
        return self

    @property
    def min_interval_s(self) -> float:
        """The shortest wait between cycles: min_poll_interval_s, else 10 s (at most poll_interval_s)."""
        if self.min_poll_interval_s is not None:
            return self.min_poll_interval_s
        return min(DEFAULT_MIN_POLL_INTERVAL_S, self.poll_interval_s)

    @field_validator("backfill")
    @classmethod
    def _check_backfill(cls, value: str) -> str:
        if value.strip().lower() == "none":
            return "none"
        parse_duration(value)
        return value.strip()

    @property
    def backfill_s(self) -> float:
        """Seconds of history turned into events on first start (0 for "none")."""
        return 0.0 if self.backfill == "none" else parse_duration(self.backfill)


class HttpSettings(Section):
    """``[http]``: how makewatch talks to Make."""

    timeout_s: Annotated[StrictFloat, Field(gt=0)] = 30.0
    max_attempts: Annotated[int, Strict(), Field(ge=1)] = 5
    # Make sits behind Cloudflare, which is reported to reject generic client User-Agents
    # (make-api.md §1.1), so there is always an explicit one.
    user_agent: str = Field(default=f"makewatch/{__version__}", min_length=1)

    @field_validator("user_agent")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain tabs, newlines or control characters")
        return value


class ActionsSettings(Section):
    """``[actions]``: acting on Make from an alert (CLI and Slack buttons). Off by default:
    makewatch is read-only until ``enabled = true``."""

    enabled: bool = False
    #: Receive Slack button clicks over Socket Mode, for every ``slack_bot`` channel that has
    #: an ``app_token`` (no public URL needed).
    socket_mode: bool = True
    #: Where the web server receives Slack's interaction requests (the app's "Request URL"),
    #: for ``slack_bot`` channels that have a ``signing_secret``.
    http_path: str = Field(default="/slack/interactions", pattern=r"^/[A-Za-z0-9/_.-]*$")
    #: Socket Mode watchdog: no envelope, ping or pong for this long -> reconnect.
    stale_after_s: Annotated[StrictFloat, Field(ge=10, le=3600)] = 120.0
    #: Silence lengths offered by the Silence buttons (seconds).
    silence_choices_s: Annotated[
        tuple[Annotated[StrictFloat, Field(gt=0, le=30 * 86400)], ...], Field(min_length=1, max_length=5)
    ] = (3600.0, 4 * 3600.0, 24 * 3600.0)


class LoggingSettings(Section):
    """``[logging]``."""

    level: LogLevel = "INFO"
    #: ``text`` (a line for a person) or ``json`` (one object a line, for a log pipeline).
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _uppercase(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class ServiceSettings(Section):
    """``[service]``: how ``makewatch run`` behaves as a process."""

    #: After SIGTERM/SIGINT: how long deliveries in flight may take to finish (below the
    #: 10 s Docker waits before SIGKILL). What is not done stays in the outbox.
    shutdown_timeout_s: Annotated[StrictFloat, Field(gt=0, le=600)] = 8.0


class Settings(Section):
    """The whole configuration file."""

    organizations: Annotated[tuple[OrganizationSettings, ...], Field(min_length=1)]
    state: StateSettings = Field(default_factory=StateSettings)
    polling: PollingSettings = Field(default_factory=PollingSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    routes: tuple[RouteSettings, ...] = ()
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)
    digests: tuple[DigestSettings, ...] = ()
    web: WebSettings = Field(default_factory=WebSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    actions: ActionsSettings = Field(default_factory=ActionsSettings)
    silences: tuple[SilenceWindowSettings, ...] = ()

    @model_validator(mode="after")
    def _check_silence_windows(self) -> Settings:
        """A window's ``org`` must match a configured organization: a misspelt name would
        silence nothing, silently (as ``makewatch silence add --org`` refuses)."""
        from alerts.silences import org_matches

        for i, window in enumerate(self.silences):
            if window.org is not None and not any(
                org_matches(window.org, o.organization_id, o.name) for o in self.organizations
            ):
                known = ", ".join(f"{o.name} ({o.organization_id})" for o in self.organizations)
                raise KeyProblem(
                    ("silences", i, "org"),
                    f"{window.org!r} matches no configured organization; configured: {known}",
                )
        return self

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        """Routes, default channels and digests must name what the file declares."""
        names = set(self.channels)
        for i, name in enumerate(self.alerts.default_channels):
            if name not in names:
                raise KeyProblem(("alerts", "default_channels", i), _unknown_channel(name, names))
        for i, route in enumerate(self.routes):
            for j, name in enumerate(route.channels):
                if name not in names:
                    raise KeyProblem(("routes", i, "channels", j), _unknown_channel(name, names))
        seen: dict[str, int] = {}
        for i, digest in enumerate(self.digests):
            for j, recipient in enumerate(digest.recipients):
                first = seen.setdefault(recipient.casefold(), i)
                if first != i:
                    raise KeyProblem(
                        ("digests", i, "recipients", j),
                        f"{recipient} already receives digests[{first}] (one schedule per recipient)",
                    )
        org_names = {o.name for o in self.organizations}
        emails = {n for n, c in self.channels.items() if isinstance(c, EmailChannel)}
        for i, digest in enumerate(self.digests):
            if digest.channel is not None and digest.channel not in emails:
                raise KeyProblem(
                    ("digests", i, "channel"),
                    f"{digest.channel!r} is not an e-mail channel; e-mail channels: {sorted(emails) or 'none'}",
                )
            if digest.channel is None and not emails:
                raise KeyProblem(("digests", i, "channel"), "no [channels.*] table of type \"email\" to send it through")
            for j, org in enumerate(digest.organizations or ()):
                if org not in org_names:
                    raise KeyProblem(("digests", i, "organizations", j), f"no organization named {org!r}")
        return self

    @model_validator(mode="after")
    def _check_unique(self) -> Settings:
        # Names identify organizations in alerts and logs, so "Acme" and "acme" would be
        # indistinguishable to a reader: compare case-insensitively.
        names: dict[str, int] = {}
        # By id alone, whatever the base URL: one organization reached through two URLs
        # (zone and base_url, a proxy, a trailing /api/v2 spelled differently) would get two
        # pollers, each with its own rate limiter, spending its API budget twice.
        ids: dict[int, int] = {}
        for i, org in enumerate(self.organizations):
            first = names.setdefault(org.name.casefold(), i)
            if first != i:
                raise KeyProblem(
                    ("organizations", i, "name"),
                    f"duplicate name {org.name!r} (already used by organizations[{first}])",
                )
            first = ids.setdefault(org.organization_id, i)
            if first != i:
                raise KeyProblem(
                    ("organizations", i, "organization_id"),
                    f"organization {org.organization_id} is already watched by "
                    f"organizations[{first}] (at {self.organizations[first].api_base_url}); "
                    "watch each organization once, or its API budget is spent twice",
                )
        return self

    @model_validator(mode="after")
    def _check_ca_files(self) -> Settings:
        # Loaded here, not at the first e-mail: a missing CA bundle found at 3 a.m. is an
        # alert that never went out.
        for name, channel in self.channels.items():
            ca_file = getattr(channel, "ca_file", None)
            if ca_file is None:
                continue
            problem = _ca_file_problem(Path(ca_file))
            if problem:
                raise KeyProblem(("channels", name, "ca_file"), problem)
        return self


def _ca_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable CA bundle (PEM), or None."""
    import ssl

    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except FileNotFoundError:
        return f"file {path} does not exist"
    except IsADirectoryError:
        return f"{path} is a directory; give the CA bundle file (PEM)"
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            return f"{path} is not a CA bundle in PEM format ({exc.reason or 'unreadable'})"
        return f"cannot read {path}: {exc.strerror}"
    return None


# --------------------------------------------------------------------------------------------
# Loading

# TOML integers are 64-bit signed ("an integer that cannot be represented losslessly must be
# rejected", toml.io/en/v1.0.0#integer), but tomllib returns Python ints of any size: an
# organization_id of 10**23 would pass validation and crash the first SQLite write.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Deeper than any setting needs (the deepest is 4); data nested thousands deep would exhaust
# the stack of tomllib or of the validation.
MAX_NESTING = 32


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the TOML file at ``path``.

    ``env`` replaces ``os.environ`` for ``token_env`` look-ups (tests pass a dict). Relative
    ``token_file`` paths resolve against the directory of ``path``; ``state.db_path`` stays
    relative to the working directory. Raises :class:`ConfigError` on any problem.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read()
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            path, None, "file not found (start from makewatch.example.toml)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(path, None, "is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "is not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, _toml_syntax_message(exc)) from None
    except RecursionError:
        key, line = _deepest_key(raw.decode("utf-8"))
        raise ConfigError(
            path, key, f"arrays or inline tables nested too deeply (line {line}); "
            f"no setting nests more than a few levels"
        ) from None
    _check_values(path, data)

    context = {"env": env, "config_dir": path.absolute().parent}
    try:
        settings = Settings.model_validate(data, context=context)
    except ValidationError as exc:
        # `from None`: the ValidationError's own text includes input values, tokens among them.
        errors = exc.errors(include_url=False)
        # A list whose items failed also reports "too short" (pydantic counts valid items):
        # that is a consequence, not a second problem.
        errors = [
            err
            for err in errors
            if not (
                err["type"] == "too_short"
                and any(o is not err and o["loc"][: len(err["loc"])] == err["loc"] for o in errors)
            )
        ]
        problems = [_to_config_error(path, err, data) for err in errors]
        raise ConfigError(path, problems[0].key, problems[0].message, also=problems[1:]) from None

    _warn_about_risky_choices(path, data, settings)
    return settings


def _check_values(path: Path, data: dict[str, Any]) -> None:
    """Reject what TOML or the models cannot hold: nesting past MAX_NESTING, huge integers.

    Iterative, so that the check itself cannot overflow the stack.
    """
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if len(loc) > MAX_NESTING:
            raise ConfigError(
                path,
                _format_key(_named_prefix(loc)) or None,
                f"arrays or tables nested more than {MAX_NESTING} levels deep; no setting "
                "nests more than a few",
            )
        if isinstance(value, dict):
            stack.extend(((*loc, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*loc, i), v) for i, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ConfigError(
                    path,
                    _format_key(loc),
                    f"integer out of range: TOML integers are 64-bit (at most {_INT64_MAX})",
                )


def _named_prefix(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``("polling", "x", 0, 0, 0)`` -> ``("polling", "x")``: the key, without the nesting."""
    for i, part in enumerate(loc):
        if isinstance(part, int) and (i + 1 >= len(loc) or isinstance(loc[i + 1], int)):
            return loc[:i]
    return loc


def _deepest_key(text: str) -> tuple[str | None, int]:
    """(key, line) of the assignment whose value nests deepest, best effort, for messages.

    Only used after tomllib gave up (RecursionError), so there is no parsed data to ask.
    """
    best: tuple[int, str | None, int] = (-1, None, 1)
    key: str | None = None
    key_line = 1
    depth = 0
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[\[?\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$", line)
        if header and depth == 0:
            table = header.group(1).strip() + "."
            continue
        m = re.match(r"\s*([A-Za-z0-9_.\-\"' ]+?)\s*=", line)
        if m and depth == 0:
            key, key_line = table + m.group(1).strip(), number
        depth += line.count("[") + line.count("{") - line.count("]") - line.count("}")
        peak = line.count("[") + line.count("{")
        if peak > best[0]:
            best = (peak, key, key_line)
    return best[1], best[2]


def _warn_about_risky_choices(path: Path, data: dict[str, Any], settings: Settings) -> None:
    for i, (raw, org) in enumerate(zip(data["organizations"], settings.organizations, strict=True)):
        if "token" in raw:
            log.warning(
                "organizations[%d].token is inline in %s; prefer token_env or token_file", i, path
            )
        host = urlsplit(org.api_base_url).hostname or ""
        if org.api_base_url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
            log.warning(
                "organizations[%d].base_url in %s uses plain http to %s: the token travels "
                "unencrypted; use https",
                i,
                path,
                host,
            )
    for name, channel in settings.channels.items():
        for warning in channel.risky_choices(name):
            log.warning("%s: %s", path, warning)
    for warning in settings.state.risky_choices():
        log.warning("%s: %s", path, warning)


def _toml_syntax_message(exc: tomllib.TOMLDecodeError) -> str:
    # Python 3.11's TOMLDecodeError has no lineno attribute; the position is in the text:
    # "Invalid value (at line 3, column 9)".
    text = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if match:
        what = text[: match.start()]
        return f"TOML syntax error at line {match[1]}, column {match[2]}: {what}"
    return f"TOML syntax error: {text}"


def _format_key(loc: Sequence[str | int]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{_key_part(part)}" if key else _key_part(part)
    return key


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key_part(part: str) -> str:
    """A key as TOML writes it: bare, or quoted (``""``, ``"a.b"``), control characters
    escaped so that a message never carries them to the terminal."""
    if _BARE_KEY.fullmatch(part):
        return part
    out = (
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else "\\" + c if c in '"\\' else c
        for c in part
    )
    return '"' + "".join(out) + '"'


def _to_config_error(path: Path, err: Any, data: dict[str, Any]) -> ConfigError:
    """Turn one pydantic error into file + key + a message in the file's vocabulary.

    Only ``msg``, the error type and the *type* of the input are used, never the input.
    """
    loc = tuple(err["loc"])
    kind = err["type"]
    message = err["msg"]
    cause = (err.get("ctx") or {}).get("error")

    if isinstance(cause, KeyProblem):
        loc += cause.loc
        message = cause.message
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind == "missing":
        message = "is required"
        if loc == ("organizations",):
            message += ": add at least one [[organizations]] table"
    elif kind == "extra_forbidden":
        message = _unknown_key_message(loc)
    elif kind == "too_short":
        message = "must not be empty"
        if loc == ("organizations",):
            message += ": add at least one [[organizations]] table"
        elif loc[-1:] == ("teams",):
            message += "; leave teams out to watch every team"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = f"must be a table (got {toml_type(err['input'])})"
    elif kind in ("tuple_type", "list_type"):
        message = f"must be an array (got {toml_type(err['input'])})"
        if loc == ("organizations",):
            message += "; write each organization as an [[organizations]] table"
    elif kind.endswith(("_type", "_parsing")):
        message = (
            message.replace("Input should be", "must be") + f" (got {toml_type(err['input'])})"
        )
    else:
        message = message.replace("Input should be", "must be")
    return ConfigError(path, _format_key(_file_loc(data, loc)) or "(top level)", message)


def _file_loc(data: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``loc`` as the file spells it, without the parts pydantic adds that are no key.

    A discriminated union adds its tag (``channels.oncall.slack_bot.token_env`` for the file's
    ``channels.oncall.token_env``), a plain union the member type after a value. A last part
    the file lacks is kept: it is the missing or unknown key.
    """
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not (isinstance(node, dict | list) and i == len(loc) - 1):
            continue
        out.append(part)
    return tuple(out)


def _unknown_key_message(loc: tuple[str | int, ...]) -> str:
    name = str(loc[-1])
    parent = re.sub(r"\[\d*\]", "[]", _format_key(loc[:-1]))
    prefix = f"{parent}." if parent else ""
    known = sorted(
        {
            k[len(prefix) :].split(".")[0].split("[")[0]
            for k in settings_keys(include_tables=True)
            if k.startswith(prefix)
        }
    )
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    if not prefix:
        return f"unknown section or key; expected one of: {', '.join(known)}"
    return f"unknown key; expected one of: {', '.join(known)}"


# --------------------------------------------------------------------------------------------
# Introspection


def _unknown_channel(name: str, names: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(names), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; declared channels: {sorted(names) or 'none'}"
    return f"no [channels.{name}] table{hint}"


def settings_keys(*, include_tables: bool = False) -> list[str]:
    """Every setting as a dotted key, in declaration order, from the models themselves.

    Keys inside ``[[organizations]]`` read ``organizations[].name``. With
    ``include_tables``, the tables (``state``, ``organizations[]``) are listed too.
    """
    keys: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = prefix + (field.alias or name)
            nested, is_array = nested_model(field.annotation)
            if nested is None:
                keys.append(key)
                continue
            table = key + ("[]" if is_array else "")
            if include_tables:
                keys.append(table)
            walk(nested, table + ".")

    walk(Settings, "")
    # [channels.<name>] tables: a map of a union of channel types.
    keys.remove("channels")
    if include_tables:
        keys.append("channels.<name>")
    keys += [k.replace("channels[].", "channels.<name>.") for k in channel_settings_keys()]
    return keys


# --------------------------------------------------------------------------------------------
# API budget


def api_limit_for(org: OrganizationSettings, license_api_limit: int | None) -> int | None:
    """The organization's API limit in requests per minute, or None when nothing says.

    Precedence: Make's own ``license.apiLimit`` (from ``GET /organizations/{id}``, the
    authoritative figure), else the configured plan's documented limit, else the configured
    ``requests_per_minute``.
    """
    if license_api_limit is not None and license_api_limit > 0:
        return license_api_limit
    if org.plan is not None:
        return PLAN_API_LIMITS[org.plan]
    return org.requests_per_minute


def budget_per_minute(org: OrganizationSettings, license_api_limit: int | None) -> int:
    """Requests per minute makewatch may spend on ``org``: its share of the API limit.

    The limit is shared by every client of the organization, so makewatch takes only
    ``budget_share`` of it. When the limit is unknown, assume the smallest plan (Free, 30):
    too slow is recoverable, 429s for the user's own integrations are not. At least 1.
    """
    limit = api_limit_for(org, license_api_limit) or PLAN_API_LIMITS["free"]
    # Decimal(str(...)) so that 0.35 * 240 is 84, not 83.99999999999999.
    return max(1, math.floor(Decimal(str(org.budget_share)) * limit))
