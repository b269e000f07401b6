"""Test harness: a throwaway PostgreSQL database per test session, migrated by Alembic.

Server, in order: SKILLMEAT_TEST_DATABASE_URL; a testcontainers PostgreSQL if a
Docker engine answers; the local server on 127.0.0.1:5432. Each test runs in a
transaction that is rolled back (the Session joins it with savepoints).
"""

import os
import secrets
from collections.abc import Iterator

import pytest
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from skillmeat.core.database import make_engine
from skillmeat.core.database.provision import alembic_config as alembic_config_for_tests
from skillmeat.core.database.provision import throwaway_database, upgrade_to_head
from tests.rls_world import World, build_world

# The key the throwaway database installs and every member scope signs with; tests of
# the development fallback (no key configured) unset it themselves.
os.environ.setdefault("SKILLMEAT_IDENTITY_KEY", secrets.token_hex(32))

LOCAL_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NO_SERVER = (
    "No PostgreSQL server for the tests: set SKILLMEAT_TEST_DATABASE_URL to a server URL "
    "whose user may CREATE DATABASE (e.g. postgresql+psycopg://postgres@host:5432/postgres), "
    "start a Docker engine for testcontainers, or run PostgreSQL on 127.0.0.1:5432 with user "
    "postgres."
)


def _connect_error(url: str | URL) -> str | None:
    """None if the server answers, else the driver's reason in one line."""
    engine = make_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except OperationalError as exc:
        return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    finally:
        engine.dispose()


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[URL]:
    """A server on which the tests may create and drop databases."""
    explicit = os.environ.get("SKILLMEAT_TEST_DATABASE_URL")
    if explicit:
        error = _connect_error(explicit)
        if error:
            pytest.fail(f"SKILLMEAT_TEST_DATABASE_URL does not answer: {error}", pytrace=False)
        yield make_url(explicit)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver="psycopg") as container:
            yield make_url(container.get_connection_url())
        return
    if _connect_error(LOCAL_SERVER_URL) is None:
        yield make_url(LOCAL_SERVER_URL)
        return
    pytest.fail(NO_SERVER, pytrace=False)


@pytest.fixture(scope="session")
def database_url(pg_server_url: URL) -> Iterator[URL]:
    """A throwaway database for this test session, migrated to head by Alembic."""
    with throwaway_database(pg_server_url) as url:
        upgrade_to_head(url)
        # Anything that falls back to settings during the tests lands here, never on
        # the developer's configured database.
        previous = os.environ.get("SKILLMEAT_DATABASE_URL")
        os.environ["SKILLMEAT_DATABASE_URL"] = url.render_as_string(hide_password=False)
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("SKILLMEAT_DATABASE_URL", None)
            else:
                os.environ["SKILLMEAT_DATABASE_URL"] = previous


@pytest.fixture(scope="session")
def engine(database_url: URL) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                outer.rollback()


@pytest.fixture
def committed_world(engine: Engine) -> Iterator[World]:
    """Two tenants committed for real (for pooled connections and concurrent sessions)."""
    with engine.begin() as conn:
        world = build_world(conn)
    yield world
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM projects WHERE id IN (:a, :b)"),
            {"a": world.a.project, "b": world.b.project},
        )


@pytest.fixture
def session(connection: Connection) -> Iterator[Session]:
    """A Session joined to the test's transaction: its commits become savepoint releases."""
    with Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    ) as sess:
        yield sess


# --- pytest-alembic: its built-in tests (single head, upgrade, model/DDL match,
# up-down consistency) bind to this file and get a fresh, empty database each.


@pytest.fixture
def alembic_config() -> AlembicConfig:
    return alembic_config_for_tests()


@pytest.fixture
def alembic_engine(pg_server_url: URL) -> Iterator[Engine]:
    with throwaway_database(pg_server_url, prefix="skillmeat_migr") as url:
        engine = make_engine(url, poolclass=NullPool)
        try:
            yield engine
        finally:
            engine.dispose()
