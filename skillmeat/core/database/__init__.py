"""Database plumbing: settings, engine and session factories, tenant scope, migrations."""

from skillmeat.core.database.engine import make_async_engine, make_engine, make_session_factory
from skillmeat.core.database.identity import identity_settings
from skillmeat.core.database.migrations import (
    SchemaState,
    SchemaStatus,
    check_at_head,
    schema_status,
    upgrade,
)
from skillmeat.core.database.settings import DEFAULT_DATABASE_URL, DatabaseSettings
from skillmeat.core.database.tenant import (
    Scope,
    async_tenant_scope,
    current_scope,
    tenant_scope,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DatabaseSettings",
    "SchemaState",
    "SchemaStatus",
    "Scope",
    "async_tenant_scope",
    "check_at_head",
    "current_scope",
    "identity_settings",
    "make_async_engine",
    "make_engine",
    "make_session_factory",
    "schema_status",
    "tenant_scope",
    "upgrade",
]
