"""Make.com API v2: client, models, errors and the per-organization request budget."""

from watcher.make.client import MakeClient
from watcher.make.errors import (
    MakeActionRefused,
    MakeApiError,
    MakeScopeError,
    error_from_response,
    is_retryable,
)
from watcher.make.models import (
    ActionAnswer,
    AnalyticsEntry,
    Dlq,
    Hook,
    LogEntry,
    MalformedEntry,
    Notification,
    Organization,
    Scenario,
    Team,
    UsageDay,
    scenario_name_from_subject,
)
from watcher.make.ratelimit import SlidingWindowLimiter

__all__ = [
    "ActionAnswer",
    "AnalyticsEntry",
    "Dlq",
    "Hook",
    "LogEntry",
    "MakeActionRefused",
    "MakeApiError",
    "MakeScopeError",
    "MakeClient",
    "MalformedEntry",
    "Notification",
    "Organization",
    "Scenario",
    "SlidingWindowLimiter",
    "Team",
    "UsageDay",
    "error_from_response",
    "is_retryable",
    "scenario_name_from_subject",
]
