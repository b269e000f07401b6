"""How the tests run the docs' shell commands as written.

The docs name the local server (127.0.0.1:5432, user postgres) and databases on it
(`skillmeat`, `skillmeat_bench`). Their commands run unchanged; what the tests set
is the environment: SKILLMEAT_DATABASE_URL for the commands that read it, and PATH,
so that `skillmeat-db`, `alembic` and `pytest` are this environment's. A database
the docs name is never one a developer is using: `docs_database` only reads an
existing one, `new_database` refuses to start when the name exists, and an advisory
lock keeps concurrent test sessions on one server from sharing a name.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from skillmeat.core.database import make_engine
from skillmeat.core.database.provision import (
    create_database,
    database_exists,
    drop_database,
    upgrade_to_head,
)
from tests.docblocks import ROOT

DOCS_SERVER = ("127.0.0.1", 5432, "postgres")


def docs_server(pg_server_url: URL) -> URL:
    """The test server, if it is the one the docs' commands name; else the test skips
    with the reason (the commands cannot reach the test server as written)."""
    where = (pg_server_url.host, pg_server_url.port or 5432, pg_server_url.username)
    if where != DOCS_SERVER:
        pytest.skip(
            "the docs' commands name the server 127.0.0.1:5432 (user postgres); the tests "
            f"run on {pg_server_url.render_as_string()}, which the commands cannot reach "
            "as written"
        )
    return pg_server_url.set(database="postgres")


def shell(
    command: str, *, url: URL | str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """One command line through bash, from the repository root, with
    SKILLMEAT_DATABASE_URL = `url` and this environment's scripts first on PATH."""
    shown = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    full = os.environ | {"SKILLMEAT_DATABASE_URL": shown, "PATH": path} | (env or {})
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env=full,
        cwd=ROOT,
        timeout=timeout,
    )


@contextmanager
def exclusive(server: URL, name: str) -> Iterator[None]:
    """Other test sessions wait here for `name` (a session-level advisory lock)."""
    engine = make_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            key = {"key": f"skillmeat docs database {name}"}
            conn.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), key)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), key)
    finally:
        engine.dispose()


@contextmanager
def docs_database(server: URL, name: str) -> Iterator[bool]:
    """Database `name`, for commands that only read it: created at head when missing
    (and dropped afterwards), else used as it is. Yields whether it was created."""
    url = server.set(database=name)
    with exclusive(server, name):
        created = not database_exists(url)
        if created:
            create_database(url)
        try:
            if created:
                upgrade_to_head(url)
            yield created
        finally:
            if created:
                drop_database(url)


@contextmanager
def new_database(server: URL, name: str) -> Iterator[URL]:
    """Database `name` for commands that create it (and drop it first, as the docs' do):
    the test skips if it exists before (a developer's), and drops it afterwards."""
    url = server.set(database=name)
    with exclusive(server, name):
        if database_exists(url):
            pytest.skip(
                f"database {name!r} exists on {server.render_as_string()}: the docs' commands "
                "would drop and rebuild it; drop it (or keep it and skip this test)"
            )
        try:
            yield url
        finally:
            drop_database(url)
