"""Create, drop and migrate databases: used by `skillmeat-db`, the tests and the benchmarks."""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from skillmeat.core.database.engine import make_engine

# The migration scripts live beside the package in a source checkout (alembic/).
PROJECT_ROOT = Path(__file__).resolve().parents[3]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(url: str | URL | None = None, connection: Connection | None = None) -> Config:
    """An Alembic Config for this project's migrations, bound to `url` or an open connection."""
    if not ALEMBIC_INI.exists():
        raise FileNotFoundError(
            f"alembic.ini not found at {ALEMBIC_INI}: run from a checkout of the skillmeat "
            "repository (pip install -e .)"
        )
    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logger"] = False
    if url is not None:
        config.set_main_option(
            "sqlalchemy.url", make_url(url).render_as_string(hide_password=False).replace("%", "%%")
        )
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(url: str | URL) -> str | None:
    """Migrate to head and install the identity key; returns what the key step said."""
    config = alembic_config(url)
    command.upgrade(config, "head")
    said = config.attributes.get("identity_key_message")
    return said if isinstance(said, str) else None


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
