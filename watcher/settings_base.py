"""The building blocks every settings model shares (watcher.config and alerts.*).

Kept apart from watcher.config so that the alerts package can declare its own sections
([alerts], [[routes]], [channels.*], [[digests]]) which watcher.config then assembles into
the one Settings model, without an import cycle.
"""

from __future__ import annotations

import difflib
import hmac
import re
import types
import typing
import zoneinfo
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict
from pydantic_core import core_schema

StrictPositiveInt = Annotated[int, Strict(), Field(gt=0)]
StrictFloat = Annotated[float, Strict()]
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FORBIDDEN_IN_HEADER = re.compile(r"[\s\x00-\x1f\x7f]")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The ZoneInfo for an IANA name, or a ValueError saying what is wrong (with a suggestion)."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    message = f"unknown time zone {name!r}; use an IANA name such as Europe/Paris or UTC"
    if name:
        close = difflib.get_close_matches(name, zoneinfo.available_timezones(), n=1, cutoff=0.6)
        if close:
            message = f"unknown time zone {name!r}; did you mean {close[0]!r}?"
    raise ValueError(message)


def _check_zone_name(name: str) -> str:
    zone(name)
    return name


#: An IANA time zone name (``Europe/Paris``, ``UTC``), checked when the config is loaded.
TimeZoneName = Annotated[str, AfterValidator(_check_zone_name)]


class Secret:
    """A string that is never shown: ``repr``/``str`` give ``Secret('***')``.

    Call :meth:`reveal` at the one place the value is needed (building the Authorization
    header). Equality is by value, compared in constant time.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret value must be a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def validate(value: Any) -> Secret:
            if isinstance(value, Secret):
                return value
            if not isinstance(value, str):
                # Name the type only: the value may be the secret.
                raise ValueError(f"must be a string (got {toml_type(value)})")
            return cls(value.strip())

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda _: "***", when_used="json"
            ),
        )


class KeyProblem(ValueError):
    """Raised inside model validators to blame a key of the model being validated.

    pydantic reports a model validator's error at the model's own location; ``load_config``
    appends ``loc`` so the message names the key (``organizations[0].token_env``).
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class Section(BaseModel):
    """Base of every settings table: immutable, and unknown keys are errors.

    TOML allows ``inf`` and ``nan``; no setting means them (``poll_interval_s = inf`` would
    sleep forever, a ``nan`` compares false with everything), so every float refuses them.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False
    )


def nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model, is_array) when ``annotation`` is a model, a tuple of models, or Optional of those."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return nested_model(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found, is_array = nested_model(arg)
            if found is not None:
                return found, is_array
        return None, False
    if origin in (tuple, list):
        found, _ = nested_model(typing.get_args(annotation)[0])
        return found, found is not None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type (safe to print: it is not the value)."""
    names = {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }
    for python_type, toml_name in names.items():
        if type(value) is python_type:
            return toml_name
    return type(value).__name__
