"""Make.com API v2: client, models, errors and the per-organization request budget."""

from watcher.make.client import MakeClient
from watcher.make.errors import MakeApiError, error_from_response, is_retryable
from watcher.make.models import (
    Dlq,
    Hook,
    LogEntry,
    MalformedEntry,
    Organization,
    Scenario,
    Team,
    UsageDay,
)
from watcher.make.ratelimit import SlidingWindowLimiter

__all__ = [
    "Dlq",
    "Hook",
    "LogEntry",
    "MakeApiError",
    "MakeClient",
    "MalformedEntry",
    "Organization",
    "Scenario",
    "SlidingWindowLimiter",
    "Team",
    "UsageDay",
    "error_from_response",
    "is_retryable",
]
