"""``[web]``: the service's HTTP port (``/healthz``, ``/metrics``, the status page).

Declared here, beside the code that serves it, and assembled into :class:`watcher.config.
Settings` like every other section. The access token is a secret: it is read from the
environment variable named by ``token_env`` once, when the configuration is loaded, and is
never part of a repr, a log line or an error message.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from watcher.settings_base import (
    ENV_NAME,
    FORBIDDEN_IN_HEADER,
    KeyProblem,
    Secret,
    Section,
    StrictFloat,
)

__all__ = ["DEFAULT_LISTEN", "MIN_TOKEN_LENGTH", "WebSettings", "split_listen"]

DEFAULT_LISTEN = "127.0.0.1:9464"  # 9464: the port Prometheus exporters commonly take
# A shorter access token can be guessed over the network; 16 characters of `openssl rand
# -hex 16` are 64 bits and more.
MIN_TOKEN_LENGTH = 16
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def split_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ``("127.0.0.1", 9464)``; ``"[::1]:0"`` -> ``("::1", 0)``.

    Port 0 asks the system for a free port (tests); the bound port is then known from the
    running server. Raises ValueError with a message fit for a config error.
    """
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError('must be host:port, an IPv6 address in brackets: "[::1]:9464"')
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError('must be host:port, such as "127.0.0.1:9464" (IPv6: "[::1]:9464")')
    if not port.isdigit() or int(port) > 65535:
        raise ValueError("has no valid port: expected a number from 0 to 65535 after the colon")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} is not an IP address or a host name") from None
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebSettings(Section):
    """``[web]``: where the HTTP endpoint listens and who may use it."""

    enabled: bool = True
    listen: str = DEFAULT_LISTEN
    allow_write: bool = False
    token_env: str | None = None
    # /healthz: an organization is overdue when its last good poll is older than its own
    # planned interval times this (plus the time one cycle may take).
    health_grace_factor: Annotated[StrictFloat, Field(ge=1, le=100)] = 3.0

    _token: Secret | None = PrivateAttr(default=None)

    @property
    def token(self) -> Secret | None:
        """The access token (from ``token_env``), or None when none is configured."""
        return self._token

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_listen(value)
        return value.strip()

    @field_validator("token_env")
    @classmethod
    def _check_token_env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError(
                "must be the name of an environment variable (letters, digits and _), such as "
                "MAKEWATCH_WEB_TOKEN; it looks like something else, perhaps the token itself"
            )
        return value

    @model_validator(mode="after")
    def _resolve_token(self, info: ValidationInfo) -> WebSettings:
        if self.token_env is None:
            if self.enabled and not self.loopback:
                raise KeyProblem(
                    ("token_env",),
                    f"is required when web.listen ({self.listen}) is not a loopback address: "
                    "name an environment variable that holds the access token",
                )
            return self
        env = (info.context or {}).get("env")
        value = (os.environ if env is None else env).get(self.token_env)
        if value is None:
            raise KeyProblem(("token_env",), f"environment variable {self.token_env} is not set")
        value = value.strip()
        where = f"the token in environment variable {self.token_env}"
        if FORBIDDEN_IN_HEADER.search(value):
            raise KeyProblem(("token_env",), f"{where} contains whitespace or control characters")
        if len(value) < MIN_TOKEN_LENGTH:
            raise KeyProblem(
                ("token_env",),
                f"{where} is shorter than {MIN_TOKEN_LENGTH} characters (try: openssl rand -hex 16)",
            )
        self._token = Secret(value)
        return self
