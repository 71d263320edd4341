"""Building one MakeClient per configured organization, and sizing its budget."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp

from watcher.clock import Clock
from watcher.config import HttpSettings, OrganizationSettings, budget_per_minute
from watcher.make import MakeClient, Organization, SlidingWindowLimiter

if TYPE_CHECKING:
    from watcher.settings_base import Secret
    from watcher.web.metrics import Metrics

log = logging.getLogger(__name__)


def make_client(
    session: aiohttp.ClientSession,
    org: OrganizationSettings,
    http: HttpSettings,
    clock: Clock,
    metrics: Metrics | None = None,
    *,
    token: Secret | None = None,
) -> MakeClient:
    """A client whose budget starts from the config (plan, requests_per_minute, or Free).

    :func:`calibrate` then replaces it with the share of Make's own ``license.apiLimit``.
    With ``metrics``, every response is counted under the organization's configured name;
    ``token`` replaces the polling token (the write token of watcher.actions).
    """
    return MakeClient(
        session,
        org.api_base_url,
        org.token if token is None else token,
        auth_scheme=org.auth_scheme,
        limiter=SlidingWindowLimiter(budget_per_minute(org, None), clock=clock),
        clock=clock,
        timeout_s=http.timeout_s,
        max_attempts=http.max_attempts,
        user_agent=http.user_agent,
        budget_share=org.budget_share,
        on_response=metrics.request_observer(org.name) if metrics is not None else None,
        on_skip=metrics.skip_observer(org.name) if metrics is not None else None,
    )


async def calibrate(client: MakeClient, org: OrganizationSettings) -> Organization:
    """Read the organization (plan, license, counters) and size the budget from its apiLimit."""
    info = await client.get_organization(org.organization_id)
    api_limit = info.license.api_limit if info.license else None
    budget = budget_per_minute(org, api_limit)
    if budget != client.limiter.per_window:
        log.info(
            "organization %s: API limit %s/min, makewatch budget %d/min",
            org.name,
            api_limit if api_limit is not None else "unknown",
            budget,
        )
        client.limiter.set_limit(budget)
    return info
