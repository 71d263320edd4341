"""Settings of notification channels: ``[channels.<name>]`` tables, one model per type.

Secrets (Slack webhook URL, bot token, SMTP password) come from an environment variable
(``*_env``), a file (``*_file``, relative to the config file) or, discouraged, inline. The
resolved value is a :class:`~watcher.config.Secret` on a property (``webhook_url``, ``token``,
``password``) whatever its source; :meth:`risky_choices` lists what the loader should warn
about. Validation errors name the key, never the value.
"""

from __future__ import annotations

import email.utils
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, Strict, ValidationInfo, field_validator, model_validator

from watcher.settings_base import (
    CONTROL_CHARS,
    ENV_NAME,
    FORBIDDEN_IN_HEADER,
    KeyProblem,
    Secret,
    Section,
    TimeZoneName,
    nested_model,
)

__all__ = [
    "ChannelSettings",
    "check_env_name",
    "resolve_file",
    "resolve_secret",
    "EmailChannel",
    "SlackBotChannel",
    "SlackWebhookChannel",
    "channel_settings_keys",
]

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

TimeoutS = Annotated[float, Strict(), Field(gt=0, le=300)]


def resolve_secret(
    model: Section, info: ValidationInfo, base: str, *, required: bool = True
) -> tuple[Secret, str] | None:
    """(secret, key it came from): from ``<base>_env``, ``<base>_file`` or inline ``<base>``."""
    env_name = getattr(model, f"{base}_env")
    file = getattr(model, f"{base}_file")
    inline: Secret | None = getattr(model, f"inline_{base}")
    sources = [
        key
        for key, value in ((f"{base}_env", env_name), (f"{base}_file", file), (base, inline))
        if value is not None
    ]
    if not sources:
        if not required:
            return None
        raise KeyProblem(
            (f"{base}_env",), f"is required: set exactly one of {base}_env, {base}_file or {base}"
        )
    if len(sources) > 1:
        raise KeyProblem((sources[1],), f"{' and '.join(sources)} are set; keep exactly one")
    source = sources[0]
    if env_name is not None:
        env = (info.context or {}).get("env")
        value = (os.environ if env is None else env).get(env_name)
        if value is None:
            raise KeyProblem((source,), f"environment variable {env_name} is not set")
        where = f"environment variable {env_name}"
    elif file is not None:
        try:
            value = Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyProblem((source,), f"file {file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
            raise KeyProblem((source,), f"cannot read {file}: {reason}") from None
        where = f"file {file}"
    else:
        assert inline is not None
        value = inline.reveal()
        where = "the value"
    value = value.strip()
    if not value:
        raise KeyProblem((source,), f"{where} is empty")
    if FORBIDDEN_IN_HEADER.search(value):
        raise KeyProblem((source,), f"{where} contains whitespace or control characters")
    return Secret(value), source


def check_env_name(value: str | None) -> str | None:
    if value is not None and not ENV_NAME.fullmatch(value):
        raise ValueError(
            "must be the name of an environment variable (letters, digits and _); "
            "it looks like something else, perhaps the secret itself"
        )
    return value


def resolve_file(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths are relative to the config file's directory, not the cwd."""
    if value is None:
        return None
    config_dir = (info.context or {}).get("config_dir") or Path.cwd()
    return (Path(config_dir) / value.expanduser()).absolute()


def _check_http_url(value: str, what: str) -> None:
    """Raise a message that never repeats ``value`` (it may be a secret URL)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} must not contain credentials")


def _is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOCAL_HOSTS


class _SlackCommon(Section):
    username: str | None = Field(default=None, min_length=1)
    #: The zone the messages show times in (IANA name); the zone is always shown beside them.
    timezone: TimeZoneName = "UTC"
    icon_emoji: str | None = Field(default=None, pattern=r"^:[a-z0-9_+'-]+:$")
    timeout_s: TimeoutS = 10.0

    @field_validator("username")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and CONTROL_CHARS.search(value):
            raise ValueError("must not contain tabs, newlines or control characters")
        return value


class SlackWebhookChannel(_SlackCommon):
    """``type = "slack_webhook"``: a Slack incoming webhook (one channel, no threads).

    ``username``/``icon_emoji`` only apply to legacy webhooks; Slack ignores them for
    webhooks created by a Slack app.
    """

    type: Literal["slack_webhook"]
    webhook_url_env: str | None = None
    webhook_url_file: Path | None = None
    inline_webhook_url: Secret | None = Field(default=None, alias="webhook_url")

    _webhook_url: Secret = PrivateAttr()

    @property
    def webhook_url(self) -> Secret:
        """The webhook URL (it is the credential), from webhook_url_env/_file/inline."""
        return self._webhook_url

    @field_validator("webhook_url_env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        return check_env_name(value)

    @field_validator("webhook_url_file")
    @classmethod
    def _check_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_file(value, info)

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> SlackWebhookChannel:
        resolved = resolve_secret(self, info, "webhook_url")
        assert resolved is not None
        secret, source = resolved
        try:
            _check_http_url(secret.reveal(), "the webhook URL")
        except ValueError as exc:
            raise KeyProblem((source,), str(exc)) from None
        self._webhook_url = secret
        return self

    def risky_choices(self, name: str) -> list[str]:
        """Warnings for the loader to log (never containing the secret)."""
        out = []
        if self.inline_webhook_url is not None:
            out.append(
                f"channels.{name}.webhook_url is inline; prefer webhook_url_env or webhook_url_file"
            )
        url = self._webhook_url.reveal()
        if url.startswith("http://") and not _is_local(url):
            out.append(f"channels.{name}: the webhook URL uses plain http; use https")
        return out


class SlackBotChannel(_SlackCommon):
    """``type = "slack_bot"``: a Slack app's bot token (``chat:write``); threads and updates.

    ``channel`` is a channel id (``C0123456789``) or ``#name``; the bot must be a member.
    ``username``/``icon_emoji`` need the ``chat:write.customize`` scope.
    """

    type: Literal["slack_bot"]
    token_env: str | None = None
    token_file: Path | None = None
    inline_token: Secret | None = Field(default=None, alias="token")
    channel: str = Field(min_length=1, pattern=r"^(#[^\s#]+|[CGD][A-Z0-9]+)$")
    base_url: str = "https://slack.com/api/"
    #: Buttons (``[actions] enabled``): an app-level token (``xapp-…``, scope
    #: ``connections:write``) to receive clicks over Socket Mode, no public URL needed ...
    app_token_env: str | None = None
    app_token_file: Path | None = None
    inline_app_token: Secret | None = Field(default=None, alias="app_token")
    #: ... and/or the app's signing secret, to receive them on the web server's
    #: ``[actions] http_path`` instead (Slack's Interactivity Request URL).
    signing_secret_env: str | None = None
    signing_secret_file: Path | None = None
    inline_signing_secret: Secret | None = Field(default=None, alias="signing_secret")

    _token: Secret = PrivateAttr()
    _app_token: Secret | None = PrivateAttr(default=None)
    _signing_secret: Secret | None = PrivateAttr(default=None)

    @property
    def token(self) -> Secret:
        """The bot token (``xoxb-…``), from token_env, token_file or token."""
        return self._token

    @property
    def app_token(self) -> Secret | None:
        """The app-level token (``xapp-…``) for Socket Mode, if configured."""
        return self._app_token

    @property
    def signing_secret(self) -> Secret | None:
        """The app's signing secret (checks interaction requests over HTTP), if configured."""
        return self._signing_secret

    @field_validator("token_env", "app_token_env", "signing_secret_env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        return check_env_name(value)

    @field_validator("token_file", "app_token_file", "signing_secret_file")
    @classmethod
    def _check_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_file(value, info)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        _check_http_url(value, "base_url")
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query (?...) or fragment (#...)")
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> SlackBotChannel:
        resolved = resolve_secret(self, info, "token")
        assert resolved is not None
        self._token = resolved[0]
        app = resolve_secret(self, info, "app_token", required=False)
        if app is not None:
            if not app[0].reveal().startswith("xapp-"):
                raise KeyProblem(
                    (app[1],), "must be an app-level token (it starts with xapp-), not a bot token"
                )
            self._app_token = app[0]
        signing = resolve_secret(self, info, "signing_secret", required=False)
        self._signing_secret = signing[0] if signing is not None else None
        return self

    def risky_choices(self, name: str) -> list[str]:
        """Warnings for the loader to log (never containing the secret)."""
        out = []
        for key in ("token", "app_token", "signing_secret"):
            if getattr(self, f"inline_{key}") is not None:
                out.append(f"channels.{name}.{key} is inline; prefer {key}_env or {key}_file")
        if self.base_url.startswith("http://") and not _is_local(self.base_url):
            out.append(f"channels.{name}.base_url uses plain http: the token travels unencrypted")
        return out


def _check_address(value: str) -> str:
    if CONTROL_CHARS.search(value):
        raise ValueError("must not contain tabs, newlines or control characters")
    _, addr = email.utils.parseaddr(value)
    if not addr or "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


class EmailChannel(Section):
    """``type = "email"``: SMTP submission, one multipart (text + HTML) message per notice.

    ``security``: ``starttls`` (port 587, upgrade required), ``tls`` (implicit TLS, port 465)
    or ``none`` (a local relay only). ``username`` turns on AUTH; the password then comes from
    password_env, password_file or password. ``ca_file`` trusts a private CA (PEM) in
    addition to the system's.
    """

    type: Literal["email"]
    smtp_host: str = Field(min_length=1)
    smtp_port: Annotated[int, Strict(), Field(gt=0, lt=65536)] = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(default=None, min_length=1)
    password_env: str | None = None
    password_file: Path | None = None
    inline_password: Secret | None = Field(default=None, alias="password")
    from_addr: str = Field(min_length=3)
    to: Annotated[tuple[str, ...], Field(min_length=1)]
    timeout_s: TimeoutS = 30.0
    ca_file: Path | None = None
    #: The zone the e-mails show times in (IANA name); the zone is always shown beside them.
    timezone: TimeZoneName = "UTC"

    _password: Secret | None = PrivateAttr(default=None)

    @property
    def password(self) -> Secret | None:
        """The SMTP password, or None when no username is set."""
        return self._password

    @field_validator("password_env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        return check_env_name(value)

    @field_validator("password_file", "ca_file")
    @classmethod
    def _check_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_file(value, info)

    @field_validator("security", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("from_addr")
    @classmethod
    def _check_from(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("to")
    @classmethod
    def _check_to(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_address(v) for v in value)

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> EmailChannel:
        resolved = resolve_secret(self, info, "password", required=self.username is not None)
        if resolved is not None and self.username is None:
            raise KeyProblem((resolved[1],), "a password is set but no username; set username too")
        self._password = resolved[0] if resolved else None
        return self

    def risky_choices(self, name: str) -> list[str]:
        """Warnings for the loader to log (never containing the secret)."""
        out = []
        if self.inline_password is not None:
            out.append(f"channels.{name}.password is inline; prefer password_env or password_file")
        if self.security == "none" and self.username and self.smtp_host not in _LOCAL_HOSTS:
            out.append(
                f'channels.{name}: security = "none" sends the SMTP password unencrypted '
                f"to {self.smtp_host}"
            )
        return out


ChannelSettings = Annotated[
    SlackWebhookChannel | SlackBotChannel | EmailChannel, Field(discriminator="type")
]
CHANNEL_MODELS: tuple[type[Section], ...] = (SlackWebhookChannel, SlackBotChannel, EmailChannel)


def channel_settings_keys(prefix: str = "channels[].") -> list[str]:
    """Every channel setting as a dotted key (``channels[].webhook_url_env``), each once."""
    keys: list[str] = []
    for model in CHANNEL_MODELS:
        for name, field in model.model_fields.items():
            key = prefix + (field.alias or name)
            nested, _ = nested_model(field.annotation)
            if nested is None and key not in keys:
                keys.append(key)
    return keys
