"""Everything a request handler may need, built once per app and kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from zlh.api.agent_client import AgentClient
from zlh.api.apitokens import ApiTokens
from zlh.api.audit import AuditLog
from zlh.api.auth import TokenService
from zlh.api.catalog import CatalogSource
from zlh.api.containers import ContainerRegistry
from zlh.api.db import Database
from zlh.api.events import EventBus
from zlh.api.lifecycle import Lifecycle
from zlh.api.metrics import Metrics
from zlh.api.poller import Poller
from zlh.api.pool import WarmPool
from zlh.api.provisioning import Provisioning
from zlh.api.ratelimit import LoginThrottle
from zlh.api.replicas import Membership
from zlh.api.runtime_changes import RuntimeChanges
from zlh.api.settings import ApiSettings
from zlh.api.shares import Shares
from zlh.api.tailnet.service import Tailnet
from zlh.api.usage import UsageCache
from zlh.backends import Backend
from zlh.routefeed import RouteFeed

__all__ = ["Services"]


@dataclass(kw_only=True)
class Services:
    settings: ApiSettings
    db: Database
    backend: Backend
    tokens: TokenService
    api_tokens: ApiTokens
    registry: ContainerRegistry
    provisioning: Provisioning
    lifecycle: Lifecycle
    runtime_changes: RuntimeChanges
    shares: Shares
    poller: Poller
    agents: AgentClient
    catalog: CatalogSource
    audit: AuditLog
    bus: EventBus
    feed: RouteFeed
    login_throttle: LoginThrottle
    metrics: Metrics
    usage: UsageCache
    pool: WarmPool
    tailnet: Tailnet | None = None  # None: no Headscale configured
    replicas: Membership | None = None  # None: a single node on SQLite
