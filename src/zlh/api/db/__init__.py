"""Storage of the control plane: SQLAlchemy 2 models, an engine with migrations run on start."""

from zlh.api.db.engine import Database
from zlh.api.db.models import (
    AddonPin,
    ApiToken,
    AuditEntry,
    Base,
    Container,
    ContainerState,
    Job,
    KeyValue,
    Pins,
    Replica,
    Session,
    Share,
    ShareRole,
    User,
)

__all__ = [
    "AddonPin",
    "ApiToken",
    "AuditEntry",
    "Base",
    "Container",
    "ContainerState",
    "Database",
    "Job",
    "KeyValue",
    "Pins",
    "Replica",
    "Session",
    "Share",
    "ShareRole",
    "User",
]
