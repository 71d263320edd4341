"""Fuzzing the configuration loader: whatever the file holds, a ConfigError naming the key.

Documents are a valid configuration mutated (wrong types, out-of-range numbers, unknown keys,
deep nesting, huge strings, unicode and control characters, inf/nan, duplicate tables) and
bytes that are barely TOML. ``load_config`` must return Settings or raise ConfigError, never
anything else; the message is a few lines, names a key (or says the file is not TOML) and
never contains a secret. A few bad documents go through the real CLI: exit 2, no traceback.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from conftest import json_paths, log_messages
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from watcher.config import ConfigError, Settings, load_config

SECRET = "fuzzsecret0a7f3c9e1b"  # 20 characters: long enough for web.token_env
ENV = {
    "MAKE_TOKEN_ACME": SECRET,
    "MAKE_TOKEN_GLOBEX": SECRET + "2",
    "SLACK_WEBHOOK_OPS": f"https://hooks.slack.com/services/T000/B000/{SECRET}",
    "SLACK_BOT_TOKEN": f"xoxb-{SECRET}",
    "SMTP_PASSWORD": SECRET,
    "WEB_TOKEN": SECRET,
}
# Keys whose value is a credential: the fuzzer writes the secret there too.
SECRET_KEYS = ("token", "webhook_url", "password")

BASE: dict[str, Any] = {
    "organizations": [
        {"name": "Acme", "zone": "eu1.make.com", "organization_id": 1234567,
         "token_env": "MAKE_TOKEN_ACME", "plan": "core", "budget_share": 0.5},
        {"name": "Globex", "base_url": "http://127.0.0.1:9/api/v2", "organization_id": 7654321,
         "token_env": "MAKE_TOKEN_GLOBEX", "requests_per_minute": 240, "teams": [1, 2]},
    ],
    "polling": {"poll_interval_s": 60.0, "min_poll_interval_s": 10.0,
                "quota_thresholds": [75, 90, 100], "hook_backlog_ratio": 0.8},
    "alerts": {"group_wait_s": 30, "repeat_interval_s": 14400,
               "default_channels": ["ops-slack"], "group_by": ["org", "scenario", "error_name"]},
    "routes": [{"min_severity": "critical", "channels": ["oncall"], "continue": True},
               {"org": "Acme*", "channels": ["ops-slack", "ops-mail"]}],
    "channels": {
        "ops-slack": {"type": "slack_webhook", "webhook_url_env": "SLACK_WEBHOOK_OPS"},
        "oncall": {"type": "slack_bot", "token_env": "SLACK_BOT_TOKEN", "channel": "#oncall"},
        "ops-mail": {"type": "email", "smtp_host": "smtp.example.com", "smtp_port": 587,
                     "password_env": "SMTP_PASSWORD", "username": "mw@example.com",
                     "from_addr": "mw@example.com", "to": ["ops@example.com"],
                     "timezone": "Europe/Paris"},
    },
    "digests": [{"recipients": ["lead@example.com"], "at": "08:00", "timezone": "Europe/Paris",
                 "weekdays": ["mon", "fri"], "channel": "ops-mail"}],
    "silences": [{"name": "Acme nightly", "weekdays": ["sun"], "start": "22:00", "end": "02:00",
                  "timezone": "Europe/Berlin", "org": "Acme*", "kind": "execution_error",
                  "reason": "backup", "notify_resolved": False}],
    "state": {"db_path": "./fuzz.db", "retention_days": 90},
    "http": {"timeout_s": 30.0, "max_attempts": 5},
    "web": {"listen": "127.0.0.1:0", "token_env": "WEB_TOKEN"},
    "logging": {"level": "INFO", "format": "text"},
    "service": {"shutdown_timeout_s": 8},
}  # fmt: skip

# --- a small TOML writer (tomllib only reads) ------------------------------------------------


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k) else _toml_str(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, RawToml):
        return v
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    """Scalars at the top, then ``[table]`` and ``[[array]]`` sections; deeper levels inline."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not _is_section(v)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{_toml_key(k)}]", *(f"{_toml_key(a)} = {_toml_value(b)}" for a, b in v.items())]
        elif _is_section(v):
            for item in v:
                lines += ["", f"[[{_toml_key(k)}]]", *(f"{_toml_key(a)} = {_toml_value(b)}" for a, b in item.items())]
    return "\n".join(lines) + "\n"


def _is_section(v: Any) -> bool:
    return isinstance(v, dict) or (isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v))


# --- strategies ----------------------------------------------------------------------------

KNOWN_WORDS = st.sampled_from(
    ["", " ", "0", "-1", "1e999", "eu1.make.com", "https://eu1.make.com/api/v2", "*", "ops-slack",
     "ops-mail", "critical", "Europe/Paris", "Mars/Olympus", "25:99", "MAKE_TOKEN_ACME", "NOT_SET",
     "12345678-12ef-abcd-1234-1234567890ab", "http://user:pw@host/", "127.0.0.1:99999", SECRET]
)  # fmt: skip
KEYS = st.one_of(
    st.sampled_from(["name", "zone", "token", "token_env", "token_file", "type", "channels",
                     "organization_id", "extra", "teams", "at", "to", "listen"]),
    st.text(max_size=12),
)  # fmt: skip
SCALARS = st.one_of(
    KNOWN_WORDS,
    st.text(max_size=20),
    st.text(st.characters(max_codepoint=0x9F), max_size=8),  # control characters
    st.builds(lambda c, n: c * n, st.characters(), st.integers(1_000, 100_000)),  # huge
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-(2**63) + 2),
    st.floats(),  # nan and inf included
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


class RawToml(str):
    """Text the writer copies as it is (deep nesting, which a recursive writer cannot)."""


def _nested(depth: int, kind: str) -> RawToml:
    open_, close = ("[", "]") if kind == "array" else ("{x = ", "}")
    return RawToml(open_ * depth + "1" + close * depth)


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    """BASE after one to three structural mutations, then perhaps a textual one."""
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(json_paths(doc))))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        op = draw(st.sampled_from(["replace", "delete", "unknown_key", "nest", "secret"]))
        if not path or op == "unknown_key":
            target = parent[path[-1]] if path else doc
            if isinstance(target, dict):
                target[draw(KEYS)] = draw(VALUES)
            elif isinstance(target, list):
                target.append(draw(VALUES))
        elif op == "replace":
            parent[path[-1]] = draw(VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif op == "nest":
            parent[path[-1]] = _nested(draw(st.integers(2, 600)), draw(st.sampled_from(["array", "table"])))
        elif op == "secret" and isinstance(parent, dict):
            parent[draw(st.sampled_from(SECRET_KEYS))] = SECRET
    text = to_toml(doc)
    edit = draw(st.sampled_from(["none", "none", "duplicate_table", "insert", "truncate"]))
    if edit == "duplicate_table":
        text += f"\n[{draw(st.sampled_from(['polling', 'alerts', 'state', 'web', 'http']))}]\nx = 1\n"
    elif edit == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(min_size=1, max_size=10)) + text[at:]
    elif edit == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode("utf-8", errors="surrogatepass")


TOMLISH = st.one_of(
    st.binary(max_size=200),
    st.text(st.sampled_from('[]{}="\'.,#\n\t abc1_-+:TZ\\\x00\x7f\u00e9'), max_size=120).map(str.encode),
    st.builds(lambda head, tail: head + tail, st.just(to_toml(BASE).encode()), st.binary(min_size=1, max_size=20)),
)  # fmt: skip

# --- the property -------------------------------------------------------------------------

MAX_LINES = 12


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config") / "makewatch.toml"


_KEY_PART = re.compile(r'\.?(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_-]+)|\[(\d+)\])')


def assert_names_a_key_of(data: bytes, key: str) -> None:
    """``key`` (``a."b.c"[0].d``, TOML's spelling) walks the parsed document down to its
    parent; only its last part may be absent (a missing or an unknown key)."""
    try:
        node: Any = tomllib.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return  # a file-level problem, told without a key
    parts, at = [], 0
    while at < len(key):
        m = _KEY_PART.match(key, at)
        assert m and m.end() > at, f"{key!r} is not a key as TOML spells it"
        quoted, bare, index = m.groups()
        parts.append(int(index) if index is not None else bare if bare is not None else json.loads(f'"{quoted}"'))
        at = m.end()
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            assert i == len(parts) - 1 and isinstance(node, dict), f"{key!r}: {part!r} is not in the file"


def check_load(path: Path, data: bytes) -> Settings | None:
    """Load ``data`` as a configuration file; assert the contract; Settings or None (refused)."""
    path.write_bytes(data)
    with log_messages() as logged:
        try:
            settings = load_config(path, env=ENV)
        except ConfigError as exc:
            settings = None
            check_refusal(path, data, exc)
    assert not any(SECRET in line for line in logged), logged
    return settings


def check_refusal(path: Path, data: bytes, exc: ConfigError) -> None:
    """A few lines, each naming the file, then a key of it (or saying it is no TOML)."""
    message = str(exc)
    lines = message.splitlines()
    assert 1 <= len(lines) <= MAX_LINES, message[:2000]
    assert all(line.startswith(f"{path}: ") for line in lines), message[:2000]
    assert all(len(line) <= 400 + len(str(path)) for line in lines), message[:2000]
    assert exc.key or any(
        what in exc.message for what in ("TOML syntax error", "not valid UTF-8", "nested")
    ), message
    assert SECRET not in message
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in message), message
    if exc.key and exc.key != "(top level)":
        assert_names_a_key_of(data, exc.key)


def test_the_unmutated_document_is_a_valid_configuration(cfg_path):
    settings = check_load(cfg_path, to_toml(BASE).encode())
    assert settings is not None and [o.name for o in settings.organizations] == ["Acme", "Globex"]


@given(mutated_documents())
# Found by the fuzzer: an empty key was told as "makewatch.toml: : integer out of range", a
# key holding an escape sequence was printed raw to the terminal. Keys are now quoted as TOML
# writes them: "" and "\u001b[31m".
@example(b'"" = 9223372036854775808\n' + to_toml(BASE).encode())
@example(b'"\\u001b[31m" = 1\n' + to_toml(BASE).encode())
def test_a_mutated_configuration_loads_or_is_refused_naming_the_key(cfg_path, data):
    check_load(cfg_path, data)


@given(TOMLISH)
@example(b"\xff\xfe")
@example(b"a = [" * 2000)
def test_bytes_that_are_barely_toml_are_refused_as_not_toml(cfg_path, data):
    assert check_load(cfg_path, data) is None


@settings(max_examples=4)
@given(mutated_documents())
def test_the_cli_exits_2_with_one_message_and_no_traceback(cfg_path, data):
    assume(check_load(cfg_path, data) is None)  # skip the mutations the configuration accepts
    done = subprocess.run(
        [sys.executable, "-m", "watcher.cli", "check", "--config", str(cfg_path)],
        env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"makewatch: configuration error: {cfg_path}: " in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert SECRET not in done.stderr + done.stdout


def test_a_channel_error_names_the_files_key_not_the_union_tag(cfg_path):
    # Found by the fuzzer: pydantic's location holds the channel type's tag
    # ("channels.oncall.slack_bot.token_env"), which is no key of the file.
    doc = copy.deepcopy(BASE)
    doc["channels"]["oncall"]["token_env"] = 5
    path = cfg_path.with_name("tag.toml")
    path.write_text(to_toml(doc))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=ENV)
    assert caught.value.key == "channels.oncall.token_env"
    assert str(caught.value).endswith("channels.oncall.token_env: must be a valid string (got integer)")
