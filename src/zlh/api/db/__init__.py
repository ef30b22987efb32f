"""Storage of the control plane: SQLAlchemy 2 models, an engine with migrations run on start."""

from zlh.api.db.engine import Database
from zlh.api.db.models import AuditEntry, Base, Container, ContainerState, KeyValue, Session, User

__all__ = [
    "AuditEntry",
    "Base",
    "Container",
    "ContainerState",
    "Database",
    "KeyValue",
    "Session",
    "User",
]
