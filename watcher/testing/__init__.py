"""Local stand-ins for the services makewatch talks to, for tests and the demo."""

from watcher.testing.slack_standin import (
    DEFAULT_TOKEN,
    SlackMessage,
    SlackRequest,
    SlackState,
    create_slack_app,
)

__all__ = ["DEFAULT_TOKEN", "SlackMessage", "SlackRequest", "SlackState", "create_slack_app"]
