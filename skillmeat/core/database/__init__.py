"""Database plumbing: settings, engine and session factories, tenant scope."""

from skillmeat.core.database.engine import make_engine, make_session_factory
from skillmeat.core.database.settings import DEFAULT_DATABASE_URL, DatabaseSettings

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DatabaseSettings",
    "make_engine",
    "make_session_factory",
]
