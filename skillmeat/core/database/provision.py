"""Create, drop and migrate databases: used by `skillmeat-db`, the tests and the benchmarks."""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from skillmeat.core.database.engine import make_engine
from skillmeat.core.database.migrations import alembic_config, upgrade

__all__ = [
    "alembic_config",
    "create_database",
    "database_exists",
    "drop_database",
    "throwaway_database",
    "upgrade_to_head",
]


def upgrade_to_head(url: str | URL) -> str | None:
    """Migrate to head and install the identity key; returns what the key step said."""
    return upgrade(url)


def _maintenance_engine(url: URL) -> Engine:
    """An autocommit engine on the server's `postgres` database (CREATE/DROP DATABASE)."""
    return make_engine(
        url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )


def database_exists(url: str | URL) -> bool:
    sa_url = make_url(url)
    engine = _maintenance_engine(sa_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": sa_url.database}
            ).first()
        return found is not None
    finally:
        engine.dispose()


def create_database(url: str | URL) -> None:
    sa_url = make_url(url)
    engine = _maintenance_engine(sa_url)
    try:
        with engine.connect() as conn:
            name = conn.dialect.identifier_preparer.quote(sa_url.database or "")
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        engine.dispose()


def drop_database(url: str | URL) -> None:
    sa_url = make_url(url)
    engine = _maintenance_engine(sa_url)
    try:
        with engine.connect() as conn:
            name = conn.dialect.identifier_preparer.quote(sa_url.database or "")
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        engine.dispose()


@contextmanager
def throwaway_database(server_url: str | URL, prefix: str = "skillmeat_test") -> Iterator[URL]:
    """A fresh, empty database named `<prefix>_<random>` on the server; dropped afterwards."""
    url = make_url(server_url).set(database=f"{prefix}_{secrets.token_hex(6)}")
    create_database(url)
    try:
        yield url
    finally:
        drop_database(url)
