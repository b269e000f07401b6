"""Deployment login roles for tests: NOINHERIT, members of the request roles only.

Roles are cluster-wide and test runs may share a server, so every name is random and
every role is dropped afterwards.
"""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from skillmeat.core.database.tenant import ADMIN_ROLE, APP_ROLE, WORKER_ROLE

MEMBER_POOL = (APP_ROLE,)
ADMIN_POOL = (ADMIN_ROLE,)


@contextmanager
def login_role(engine: Engine, database_url: URL, member_of: tuple[str, ...]) -> Iterator[URL]:
    """A LOGIN NOINHERIT role that is a member of `member_of`; yields its database URL."""
    name = f"skillmeat_test_login_{secrets.token_hex(4)}"
    password = secrets.token_hex(12)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {name} LOGIN NOINHERIT PASSWORD '{password}'"))
        for role in member_of:
            conn.execute(text(f"GRANT {role} TO {name}"))
    try:
        yield database_url.set(username=name, password=password)
    finally:
        with engine.begin() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :n"),
                {"n": name},
            )
            conn.execute(text(f"DROP ROLE IF EXISTS {name}"))


WORKER_POOL = (WORKER_ROLE,)
