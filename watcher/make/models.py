"""Small, tolerant dataclasses for what Make returns.

Parsers accept missing and extra fields (``raw`` keeps the whole object), turn counters that
Make sends as strings (organization consumption) into ints, and raise :class:`MalformedEntry`
only when an object lacks what identifies it (an id), so that callers can log and skip it.
Shapes follow the recorded live responses (see make-api.md §2-5).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any


class MalformedEntry(ValueError):
    """One object in a Make response could not be parsed; the rest of the response can."""


# --- field coercion ---------------------------------------------------------------------


def as_int(value: Any, default: int = 0) -> int:
    """Make sends organization counters as strings ("18") and scenario counters as ints."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        try:
            return int(float(str(value)))
        except (ValueError, OverflowError):  # "nan"; 1e999 (json reads it as inf); 5000 digits
            return default


def as_opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def as_opt_str(value: Any) -> str | None:
    """A text field: a number becomes its digits, anything but text (a list, an object) None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 with ``Z`` (Make's format) or epoch seconds/ms; None when absent or bad."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        try:
            v = float(value)
        except OverflowError:  # an int beyond any float (the fuzzer's 10**400)
            return None
        return _from_epoch_s(v / 1000.0 if v > 1e11 else v)  # > 1e11: milliseconds
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _from_epoch_s(v: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(v, tz=UTC)
    except (ValueError, OverflowError, OSError):  # nan, inf, beyond year 9999 or before 1
        return None


_DMY = re.compile(r"^(\d{2})-(\d{2})-(\d{4})$")


def parse_usage_date(value: Any) -> date | None:
    """Usage days come as ``DD-MM-YYYY`` (live recording) or ISO ``YYYY-MM-DD`` (docs)."""
    if not isinstance(value, str):
        return None
    s = value.strip()
    m = _DMY.match(s)
    try:
        if m:
            return date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        return date.fromisoformat(s[:10])
    except ValueError:
        return None


def _require_id(obj: Any, what: str, key: str = "id") -> Any:
    if not isinstance(obj, dict):
        raise MalformedEntry(f"{what}: expected an object, got {type(obj).__name__}")
    value = obj.get(key)
    if value in (None, ""):
        raise MalformedEntry(f"{what}: missing {key!r}")
    return value


def _path_id(value: Any, what: str, key: str = "id") -> str:
    """An id the client will put in a URL path (``/dlqs/{id}``): text or an integer, and no
    character that would move the path."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MalformedEntry(f"{what}: {key!r} is not a string or an integer")
    s = str(value)
    if any(c in s for c in "/?#%") or s in (".", "..") or not s.strip():
        raise MalformedEntry(f"{what}: {key!r} is not a usable id: {s[:40]!r}")
    return s


def _req_int_id(obj: Any, what: str, key: str = "id") -> int:
    value = _require_id(obj, what, key)
    parsed = as_opt_int(value)
    if parsed is None:
        raise MalformedEntry(f"{what}: {key!r} is not an integer")
    return parsed


# --- users ----------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Any) -> User:
        uid = _req_int_id(obj, "user")
        return cls(uid, str(obj.get("name") or ""), as_opt_str(obj.get("email")), obj)


@dataclass(frozen=True)
class Authorization:
    auth_used: str | None
    scopes: tuple[str, ...]

    @classmethod
    def parse(cls, obj: Any) -> Authorization:
        if not isinstance(obj, dict):
            raise MalformedEntry("authorization: expected an object")
        scope = obj.get("scope") if isinstance(obj.get("scope"), list) else []
        return cls(as_opt_str(obj.get("authUsed")), tuple(s for s in scope if isinstance(s, str)))


# --- organizations and teams ------------------------------------------------------------


@dataclass(frozen=True)
class License:
    api_limit: int | None
    operations: int | None
    transfer: int | None
    retention_days: int | None
    min_interval_min: int | None
    execution_time_min: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Any) -> License | None:
        if not isinstance(obj, dict):
            return None
        return cls(
            api_limit=as_opt_int(obj.get("apiLimit")),
            operations=as_opt_int(obj.get("operations")),
            transfer=as_opt_int(obj.get("transfer")),
            retention_days=as_opt_int(obj.get("retention")),
            min_interval_min=as_opt_int(obj.get("interval")),
            execution_time_min=as_opt_int(obj.get("executionTime")),
            raw=obj,
        )


@dataclass(frozen=True)
class Organization:
    id: int
    name: str
    zone: str | None
    timezone_id: int | None
    plan: str | None
    is_paused: bool
    last_reset: datetime | None
    next_reset: datetime | None
    operations_used: int
    centicredits_used: int
    unused_operations: int | None
    unused_centicredits: int | None
    license: License | None
    team_ids: tuple[int, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Any) -> Organization:
        oid = _req_int_id(obj, "organization")
        teams = obj.get("teams") if isinstance(obj.get("teams"), list) else []
        return cls(
            id=oid,
            name=str(obj.get("name") or f"organization {oid}"),
            zone=as_opt_str(obj.get("zone")),
            timezone_id=as_opt_int(obj.get("timezoneId")),
            plan=as_opt_str(obj.get("serviceName") or obj.get("productName")),
            is_paused=as_bool(obj.get("isPaused")),
            last_reset=parse_time(obj.get("lastReset")),
            next_reset=parse_time(obj.get("nextReset")),
            operations_used=as_int(obj.get("operations")),
            centicredits_used=as_int(obj.get("centicreditsConsumed")),
            unused_operations=as_opt_int(obj.get("unusedOperations")),
            unused_centicredits=as_opt_int(obj.get("unusedCenticredits")),
            license=License.parse(obj.get("license")),
            team_ids=tuple(
                t for t in (as_opt_int(x.get("id")) for x in teams if isinstance(x, dict)) if t
            ),
            raw=obj,
        )


@dataclass(frozen=True)
class Team:
    id: int
    name: str
    organization_id: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Any) -> Team:
        tid = _req_int_id(obj, "team")
        return cls(tid, str(obj.get("name") or ""), as_opt_int(obj.get("organizationId")), obj)


# --- scenarios ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    id: int
    name: str
    team_id: int | None
    hook_id: int | None
    is_active: bool
    is_invalid: bool
    is_paused: bool
    dlq_count: int
    operations: int
    centicredits: int
    transfer: int
    scheduling_type: str | None
    interval_s: int | None
    next_exec: datetime | None
    last_edit: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    # `iswaiting` is undocumented (make-api.md §2.3); shown in an overdue notice, never relied on.
    is_waiting: bool = False

    @classmethod
    def parse(cls, obj: Any) -> Scenario:
        sid = _req_int_id(obj, "scenario")
        sched = obj.get("scheduling") if isinstance(obj.get("scheduling"), dict) else {}
        # `islinked` is the deprecated name of `isActive`; prefer the new one when present.
        active = obj.get("isActive", obj.get("islinked"))
        return cls(
            id=sid,
            name=str(obj.get("name") or f"scenario {sid}"),
            team_id=as_opt_int(obj.get("teamId")),
            hook_id=as_opt_int(obj.get("hookId")),
            is_active=as_bool(active),
            is_invalid=as_bool(obj.get("isinvalid")),
            is_paused=as_bool(obj.get("isPaused")),
            dlq_count=as_int(obj.get("dlqCount")),
            operations=as_int(obj.get("operations")),
            centicredits=as_int(obj.get("centicredits")),
            transfer=as_int(obj.get("transfer")),
            scheduling_type=as_opt_str(sched.get("type")),
            interval_s=as_opt_int(sched.get("interval")),
            next_exec=parse_time(obj.get("nextExec")),
            last_edit=parse_time(obj.get("lastEdit")),
            raw=obj,
            is_waiting=as_bool(obj.get("iswaiting")),
        )

    def slim(self) -> Scenario:
        """The same scenario keeping of its JSON only what :meth:`parse` reads: a listing
        holds every scenario of an organization at once (a 10,000-scenario inventory kept
        36 MB of JSON nobody reads, issue 16)."""
        raw = self.raw if isinstance(self.raw, dict) else {}
        return dataclasses.replace(self, raw={k: raw[k] for k in SCENARIO_KEYS if k in raw})


# The keys of a scenario's JSON that Scenario.parse reads.
SCENARIO_KEYS = (
    "id", "name", "teamId", "hookId", "isActive", "islinked", "isinvalid", "isPaused", "dlqCount",
    "operations", "centicredits", "transfer", "scheduling", "nextExec", "lastEdit", "iswaiting",
)


@dataclass(frozen=True)
class ScenarioConsumption:
    scenario_id: int
    operations: int
    centicredits: int
    transfer: int

    @classmethod
    def parse(cls, obj: Any) -> ScenarioConsumption:
        sid = _req_int_id(obj, "scenario consumption", "scenarioId")
        return cls(
            sid,
            as_int(obj.get("operations")),
            as_int(obj.get("centicredits")),
            as_int(obj.get("transfer")),
        )


# --- logs -----------------------------------------------------------------------------

EXECUTION_TYPES = frozenset({"auto", "manual"})


def imt_sort_key(imt_id: str) -> tuple[int, str]:
    """Order imtIds by their epoch-ms prefix, then the rest (string order breaks on odd lengths)."""
    head, _, tail = imt_id.partition("_")
    return (int(head), tail)


def is_execution_row(obj: dict[str, Any]) -> bool:
    """Execution rows carry a numeric ``status``; audit rows (start/stop/modify) do not.

    A ``stop`` row is never a run (make-api.md §3.2).
    """
    if "status" not in obj or obj.get("status") is None:
        return False
    t = obj.get("type")
    return t is None or (isinstance(t, str) and t in EXECUTION_TYPES)


@dataclass(frozen=True)
class LogEntry:
    """One execution of a scenario, as ``/scenarios/{id}/logs`` lists it."""

    imt_id: str
    id: str
    scenario_id: int | None
    team_id: int | None
    organization_id: int | None
    scenario_name: str | None
    timestamp: datetime
    status: int
    type: str | None
    instant: bool
    duration_ms: int
    operations: int
    centicredits: int
    transfer: int
    error_name: str | None
    error_message: str | None
    author_id: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def timestamp_ms(self) -> int:
        return imt_sort_key(self.imt_id)[0]

    @property
    def is_error(self) -> bool:
        return self.status == 3

    @property
    def is_warning(self) -> bool:
        return self.status == 2

    @property
    def looks_like_check_run(self) -> bool:
        """A polling trigger that found nothing: a success of one operation moving no data."""
        return self.status == 1 and self.operations <= 1 and self.transfer == 0 and not self.instant

    @classmethod
    def parse(cls, obj: Any) -> LogEntry:
        imt = _require_id(obj, "log entry", "imtId")
        if not isinstance(imt, str):
            raise MalformedEntry("log entry: imtId is not a string")
        try:
            imt_sort_key(imt)
        except ValueError as exc:
            raise MalformedEntry(f"log entry: malformed imtId {imt[:40]!r}") from exc
        status = as_opt_int(obj.get("status"))
        if status is None:
            raise MalformedEntry(f"log entry {imt[:40]}: no status (not an execution)")
        ts = parse_time(obj.get("timestamp")) or _from_epoch_s(imt_sort_key(imt)[0] / 1000)
        if ts is None:
            raise MalformedEntry(f"log entry: no usable time in imtId {imt[:40]!r}")
        err = obj.get("error") if isinstance(obj.get("error"), dict) else {}
        exec_id = _path_id(
            obj.get("id") or obj.get("executionId") or imt.partition("_")[2],
            f"log entry {imt[:40]}",
        )
        return cls(
            imt_id=imt,
            id=exec_id,
            scenario_id=as_opt_int(obj.get("scenarioId")),
            team_id=as_opt_int(obj.get("teamId")),
            organization_id=as_opt_int(obj.get("organizationId")),
            scenario_name=as_opt_str(obj.get("scenarioName")),
            timestamp=ts,
            status=status,
            type=as_opt_str(obj.get("type")),
            instant=as_bool(obj.get("instant")),
            duration_ms=as_int(obj.get("duration")),
            operations=as_int(obj.get("operations")),
            centicredits=as_int(obj.get("centicredits")),
            transfer=as_int(obj.get("transfer")),
            error_name=(str(err["name"]) if err.get("name") else None),
            error_message=(str(err["message"]) if err.get("message") else None),
            author_id=as_opt_int(obj.get("authorId")),
            raw=obj,
        )


@dataclass(frozen=True)
class ExecutionResult:
    """``/scenarios/{id}/executions/{executionId}``: RUNNING | SUCCESS | WARNING | ERROR."""

    status: str
    error_name: str | None
    error_message: str | None
    cause_module: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Any) -> ExecutionResult:
        if not isinstance(obj, dict) or not obj.get("status"):
            raise MalformedEntry("execution: missing status")
        err = obj.get("error") if isinstance(obj.get("error"), dict) else {}
        cause = err.get("causeModule") if isinstance(err.get("causeModule"), dict) else {}
        return cls(
            str(obj["status"]),
            as_opt_str(err.get("name")),
            as_opt_str(err.get("message")),
            as_opt_str(cause.get("name")),
            obj,
        )


# --- incomplete executions ------------------------------------------------------------


@dataclass(frozen=True)
class Dlq:
    """An incomplete execution. ``companyId`` in Make's detail body is the *team* id."""

    id: str
    reason: str | None
    created: datetime | None
    size: int
    resolved: bool
    retry: bool
    attempts: int
    scenario_id: int | None
    team_id: int | None
    execution_id: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Any) -> Dlq:
        did = _path_id(_require_id(obj, "incomplete execution"), "incomplete execution")
        return cls(
            id=did,
            reason=as_opt_str(obj.get("reason")),
            created=parse_time(obj.get("created")),
            size=as_int(obj.get("size")),
            resolved=as_bool(obj.get("resolved")),
            retry=as_bool(obj.get("retry")),
            attempts=as_int(obj.get("attempts")),
            scenario_id=as_opt_int(obj.get("scenarioId")),
            team_id=as_opt_int(obj.get("companyId")),
            execution_id=as_opt_str(obj.get("executionId")),
            raw=obj,
        )


# --- usage and hooks ------------------------------------------------------------------


@dataclass(frozen=True)
class UsageDay:
    day: date
    operations: int
    data_transfer: int
    centicredits: int

    @classmethod
    def parse(cls, obj: Any) -> UsageDay:
        if not isinstance(obj, dict):
            raise MalformedEntry("usage day: expected an object")
        d = parse_usage_date(obj.get("date"))
        if d is None:
            raise MalformedEntry(f"usage day: bad date {str(obj.get('date'))[:20]!r}")
        return cls(
            d,
            as_int(obj.get("operations")),
            as_int(obj.get("dataTransfer", obj.get("transfer"))),
            as_int(obj.get("centicredits")),
        )


@dataclass(frozen=True)
class Hook:
    id: int
    name: str
    team_id: int | None
    scenario_id: int | None
    queue_count: int
    queue_limit: int | None
    enabled: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def queue_ratio(self) -> float | None:
        if not self.queue_limit:
            return None
        return self.queue_count / self.queue_limit

    @classmethod
    def parse(cls, obj: Any) -> Hook:
        hid = _req_int_id(obj, "hook")
        return cls(
            id=hid,
            name=str(obj.get("name") or ""),
            team_id=as_opt_int(obj.get("teamId")),
            scenario_id=as_opt_int(obj.get("scenarioId")),
            queue_count=as_int(obj.get("queueCount")),
            queue_limit=as_opt_int(obj.get("queueLimit")),
            enabled=as_bool(obj.get("enabled")),
            raw=obj,
        )


# --- signals: analytics and notifications ---------------------------------------------
# Neither shape is known for sure (make-api.md §11.1-11.2): the parsers take any wrapper, ids
# as text or numbers, counts as numbers or text, and leave out (None) what they cannot read.


def find_entries(body: Any, key: str, exclude: tuple[str, ...] = ("pg",)) -> list[Any] | None:
    """The entries of an answer whose wrapper key is a guess.

    ``body[key]`` when it is a list; else the body itself when it is a list; else the first
    list holding an object among the body's values (``exclude`` left out), then one level
    down; else the first list value; None when there is no list at all.
    """
    if isinstance(body, list):
        return body
    if not isinstance(body, dict):
        return None
    if isinstance(body.get(key), list):
        return body[key]
    values = [v for k, v in body.items() if k not in exclude]
    lists = [v for v in values if isinstance(v, list)]
    for v in lists:
        if any(isinstance(i, dict) for i in v):
            return v
    for v in values:
        if isinstance(v, dict):
            for w in v.values():
                if isinstance(w, list) and any(isinstance(i, dict) for i in w):
                    return w
    return lists[0] if lists else None


def as_opt_count(value: Any) -> int | None:
    """A count: an int, a whole float or its text (``"12"``, ``"12.0"``); None for anything
    else, negatives and non-finite numbers included."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    f = as_opt_float(value)
    if f is None or f < 0 or not f.is_integer():
        return None
    try:
        return int(f)
    except (OverflowError, ValueError):  # pragma: no cover - is_integer() excludes inf/nan
        return None


def as_opt_float(value: Any) -> float | None:
    """A finite number, from a number or its text (a trailing ``%`` is dropped, not applied)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            f = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str):
        s = value.strip().removesuffix("%").strip()
        if not s or len(s) > 100:
            return None
        try:
            f = float(s)
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def error_rate_fraction(value: Any, errors: int | None, executions: int | None) -> float | None:
    """An error rate as a fraction (0..1), whether Make writes a fraction or a percent (unknown).

    ``"12.5%"`` and anything above 1 are percents. Between 0 and 1 it is ambiguous (0.5 could be
    half a percent): the reading closer to ``errors / executions`` wins when both counts are
    known, else a fraction is assumed. Missing or unreadable: ``errors / executions`` when
    known, else None.
    """
    ratio = errors / executions if errors is not None and executions else None
    if ratio is not None and ratio > 1:
        ratio = None  # more errors than executions: the counts are not to be trusted
    rate = as_opt_float(value)
    if rate is None or rate < 0:
        return ratio
    if (isinstance(value, str) and value.strip().endswith("%")) or rate > 1:
        rate /= 100
    elif ratio is not None and abs(rate / 100 - ratio) < abs(rate - ratio):
        rate /= 100
    return rate if rate <= 1 else None


@dataclass(frozen=True)
class AnalyticsEntry:
    """One scenario's row of ``GET /analytics/{organizationId}`` (Enterprise).

    Guessed (make-api.md §11.2 gives only the sortable names): a ``scenarioId`` (or
    ``scenario.id``, or ``id``) identifies the row, without which it is malformed;
    ``error_rate`` is always a fraction (see :func:`error_rate_fraction`); the ``*_change``
    values are as Make sends them (unit and baseline unknown: the simulator's are percents
    against the preceding period of the same length).
    """

    scenario_id: int
    name: str | None
    team_id: int | None
    team_name: str | None
    status: str | None
    operations: int | None
    executions: int | None
    errors: int | None
    error_rate: float | None
    operations_change: float | None
    executions_change: float | None
    errors_change: float | None
    error_rate_change: float | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Any) -> AnalyticsEntry:
        if not isinstance(obj, dict):
            raise MalformedEntry(f"analytics entry: expected an object, got {type(obj).__name__}")
        nested = obj.get("scenario") if isinstance(obj.get("scenario"), dict) else {}
        sid = None
        for raw_id in (
            obj.get("scenarioId"),
            obj.get("scenario_id"),
            nested.get("id"),
            obj.get("id"),
        ):
            if not isinstance(raw_id, bool) and isinstance(raw_id, int | str):
                sid = as_opt_int(raw_id)
                if sid is not None:
                    break
        if sid is None:
            raise MalformedEntry("analytics entry: no scenario id")
        executions = as_opt_count(obj.get("executions"))
        errors = as_opt_count(obj.get("errors"))
        return cls(
            scenario_id=sid,
            name=as_opt_str(obj.get("name") or obj.get("scenarioName") or nested.get("name")),
            team_id=as_opt_int(obj.get("teamId"))
            if not isinstance(obj.get("teamId"), bool)
            else None,
            team_name=as_opt_str(obj.get("teamName")),
            status=as_opt_str(obj.get("status")),
            operations=as_opt_count(obj.get("operations")),
            executions=executions,
            errors=errors,
            error_rate=error_rate_fraction(obj.get("errorRate"), errors, executions),
            operations_change=as_opt_float(obj.get("operationsChange")),
            executions_change=as_opt_float(obj.get("executionsChange")),
            errors_change=as_opt_float(obj.get("errorsChange")),
            error_rate_change=as_opt_float(obj.get("errorRateChange")),
            raw=obj,
        )


# "Encountered error in <name> scenario" (the docs' example, make-api.md §11.1), and variants
# a reworded feed may use: "an error", "errors", "the scenario <name>", quotes, a full stop.
_SUBJECT_RE = re.compile(
    r"^\s*encountered\s+(?:an?\s+)?errors?\s+in\s+(?:the\s+)?(?:scenario\s*[:\-]?\s+)?"
    r"(?P<name>.+?)(?:\s+scenario)?\s*[.!]?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_QUOTES = "\"'“”‘’«»„"


def scenario_name_from_subject(subject: Any) -> str | None:
    """The scenario name in a notification subject about an error, or None.

    Make names the scenario only by its name (no id, and two scenarios may share a name), so
    a match is a hint to look at every scenario of that name, never an identification.
    """
    if not isinstance(subject, str) or len(subject) > 2000:
        return None
    m = _SUBJECT_RE.match(subject)
    if m is None:
        return None
    name = " ".join(m.group("name").split()).strip(_QUOTES).strip()
    # "Encountered error in scenario": no name left once the word itself is read as one.
    return name if name and name.lower() != "scenario" else None


def notification_id_key(notification_id: str) -> tuple[int, int, str]:
    """Order of notification ids: numerically (they are BigInt strings), others after them."""
    s = notification_id.strip()
    if s.isdigit() and len(s) < 4000:
        return (0, int(s), "")
    return (1, 0, s)


_UNREAD = frozenset({"", "false", "0", "no", "null", "none", "unread"})


def _read_state(value: Any) -> tuple[bool, datetime | None]:
    """``read``: null while unread, the time it was read (docs); "false" on a docs-derived page."""
    if value is None or value is False:
        return False, None
    if value is True:
        return True, None
    if isinstance(value, str) and value.strip().lower() in _UNREAD:
        return False, None
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "read"):
        return True, None
    if isinstance(value, int | float) and value == 0:
        return False, None
    if isinstance(value, int | float | str):
        return True, parse_time(value)
    return True, None  # some other non-null value: read, when unknown


@dataclass(frozen=True)
class Notification:
    """One notice of ``GET /notifications``, the token owner's in-app feed (make-api.md §11.1).

    ``id`` is kept as text (Make sends a BigInt string; a number is accepted);
    ``scenario_name`` is read from the subject (:func:`scenario_name_from_subject`), None when
    the subject is about something else. ``type`` values are undocumented.
    """

    id: str
    subject: str | None
    scenario_name: str | None
    created: datetime | None
    read: bool
    read_at: datetime | None
    type: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Any) -> Notification:
        if not isinstance(obj, dict):
            raise MalformedEntry(f"notification: expected an object, got {type(obj).__name__}")
        raw_id = obj.get("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
            raise MalformedEntry("notification: no usable id")
        subject = as_opt_str(obj.get("subject"))
        read, read_at = _read_state(obj.get("read"))
        kind = obj.get("type")
        return cls(
            id=str(raw_id).strip(),
            subject=subject,
            scenario_name=scenario_name_from_subject(subject),
            created=parse_time(obj.get("created")),
            read=read,
            read_at=read_at,
            type=None if isinstance(kind, bool) else as_opt_int(kind),
            raw=obj,
        )


# --- answers of the write calls (make-api.md §11.4) ---------------------------------------


def _short_id(value: str) -> str:
    return value if len(value) <= 8 else value[:8] + "…"


@dataclass(frozen=True)
class ActionAnswer:
    """What Make answered to a write call (start, stop, run, replay, DLQ retry).

    ``status`` is the HTTP status; ``is_active`` the scenario's state in a start/stop answer
    (None for other calls); ``execution_id`` the new run of ``/run`` (and of ``/replay`` when
    Make names it); ``already``: Make said the scenario was already in the requested state
    ("Scenario is already running" / "is not running"), which Make's own tool contracts say to
    treat as success; ``body`` the parsed answer (``{}`` for "202, no content"). ``action``,
    ``scenario_id``, ``dlq_id`` and ``count`` say what was asked, for :meth:`summary`.
    """

    status: int
    is_active: bool | None = None
    execution_id: str | None = None
    already: bool = False
    body: dict[str, Any] = field(default_factory=dict)
    action: str = ""  # start | stop | run | replay | retry_dlq | retry_dlqs
    scenario_id: int | None = None
    dlq_id: str | None = None
    count: int | None = None  # incomplete executions queued, when known

    def summary(self) -> str:
        """The outcome in plain words, e.g. "scenario 42 is now active"."""
        where = f"scenario {self.scenario_id}" if self.scenario_id is not None else "scenario"
        if self.action in ("start", "stop"):
            state = "active" if self.action == "start" else "inactive"
            if self.already:
                return f"{where} was already {state}"
            return f"{where} is now {state}"
        if self.action == "run":
            if self.execution_id:
                return f"run started: execution {_short_id(self.execution_id)}"
            return "run started"
        if self.action == "replay":
            if self.execution_id:
                return f"replay started: execution {_short_id(self.execution_id)}"
            return "replay accepted"
        if self.action == "retry_dlq":
            return f"incomplete execution {_short_id(self.dlq_id or '?')} queued for retry"
        if self.action == "retry_dlqs":
            if self.count is None:
                return "all incomplete executions queued for retry"
            noun = "incomplete execution" if self.count == 1 else "incomplete executions"
            return f"{self.count} {noun} queued for retry"
        return f"Make answered {self.status}"
