"""Tenant scope: the transaction-local identity that row-level security reads.

A member request runs as role skillmeat_app with `skillmeat.user_id` and a proof the
database verifies (`skillmeat.core.database.identity`); an admin request runs as
skillmeat_admin; a scan worker runs as skillmeat_worker. All of it is set with
set_config(..., true), so it ends with the transaction.

The scope's first statement also defends the request against what an earlier one
may have left on the session (on our pool the check-in reset removes it; behind a
transaction pooler nothing does): the search path is pinned with pg_temp last, the
session-level settings a request may change are put back to their defaults for this
transaction, and the statement and lock timeouts come from settings. psycopg sends
that statement with every name schema-qualified, so nothing on the search path can
redirect it.
"""

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from skillmeat.core.database.engine import FRESH
from skillmeat.core.database.errors import sqlstate_of, translated_errors
from skillmeat.core.database.identity import (
    KEY_ENV,
    PROOF_SETTING,
    USER_SETTING,
    configured_key,
    identity_settings,
    stored_generated_key,
)
from skillmeat.core.database.settings import current_settings
from skillmeat.core.errors import IdentityNotConfigured, ScopeError

log = logging.getLogger("skillmeat.database.scope")

APP_ROLE = "skillmeat_app"
ADMIN_ROLE = "skillmeat_admin"
WORKER_ROLE = "skillmeat_worker"
SEARCH_PATH = "pg_catalog, public, pg_temp"
_SCOPE_KEY = "skillmeat.scope"

# Settings a transaction pooler (PgBouncer) tracks per client and sets itself, and
# those this statement sets anyway.
_KEPT = (
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
    "role",
    "session_authorization",
    "search_path",
    "transaction_isolation",
    "transaction_read_only",
    "transaction_deferrable",
)

# The settings this statement changes, in one list, so a nested scope can put back
# exactly what it found.
_SETTINGS = (
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "role",
    USER_SETTING,
    PROOF_SETTING,
)

_RESTORE_SESSION = (
    "(SELECT pg_catalog.count(pg_catalog.set_config(g.name, g.reset_val, true)) "
    "FROM pg_catalog.pg_settings g WHERE g.source = 'session' AND g.context = 'user' "
    "AND g.name <> ALL (CAST(:kept AS pg_catalog.text[])))"
)


def _enter_sql(*, restore_session: bool, verify_member: bool) -> str:
    previous = ", ".join(
        f"pg_catalog.current_setting(:n{i}, true) AS p{i}" for i in range(len(_SETTINGS))
    )
    sets = ", ".join(f"pg_catalog.set_config(:n{i}, :v{i}, true)" for i in range(len(_SETTINGS)))
    restored = f"{_RESTORE_SESSION}, " if restore_session else ""
    verified = "skillmeat_private.current_user_id() IS NOT NULL" if verify_member else "true"
    cols = ", ".join(f"e.p{i}" for i in range(len(_SETTINGS)))
    # OFFSET 0 keeps the subquery (which sets everything) evaluated before the check.
    return (
        f"SELECT {cols}, {verified} AS verified FROM (SELECT {previous}, {restored}{sets} "
        "OFFSET 0) AS e"
    )


@dataclass(frozen=True)
class Scope:
    """Who the current transaction acts for."""

    user_id: uuid.UUID | None
    admin: bool
    worker: bool = False


def current_scope(session: Session) -> Scope:
    """The scope the session is in; ScopeError outside `tenant_scope`."""
    scope = session.info.get(_SCOPE_KEY)
    if not isinstance(scope, Scope):
        raise ScopeError(
            "this call must run inside tenant_scope(session, user_id=...), "
            "tenant_scope(session, admin=True) or tenant_scope(session, worker=True)"
        )
    return scope


@contextmanager
def tenant_scope(
    session: Session,
    *,
    user_id: uuid.UUID | None = None,
    admin: bool = False,
    worker: bool = False,
) -> Iterator[Session]:
    """Begin a transaction acting for `user_id` (or as admin, or as a scan worker); commit on
    success, else roll back.

    Inside an already open transaction it uses a savepoint and restores the
    previous role, identity and settings on exit.
    """
    if [user_id is not None, admin is True, worker is True].count(True) != 1 or (
        admin not in (True, False) or worker not in (True, False)
    ):
        raise ScopeError(
            "tenant_scope needs exactly one of user_id=<uuid.UUID> (a member request), "
            "admin=True (an admin request) or worker=True (a scan worker)"
        )
    if user_id is not None and not isinstance(user_id, uuid.UUID):
        raise ScopeError(f"user_id: {user_id!r} is not allowed (must be a uuid.UUID)")
    if _SCOPE_KEY in session.info:
        raise ScopeError("tenant_scope cannot be nested in another tenant_scope on one session")

    settings = current_settings()
    role = ADMIN_ROLE if admin else WORKER_ROLE if worker else APP_ROLE
    pool = "admin" if admin else "worker" if worker else "member"
    nested = session.in_transaction()
    transaction = session.begin_nested() if nested else session.begin()
    with translated_errors(), transaction:
        if getattr(session.connection().connection.driver_connection, "autocommit", False):
            # Every SET LOCAL would end with its own statement: no scope at all.
            raise ScopeError(
                "tenant_scope needs a transaction: this session's connection is in "
                "AUTOCOMMIT mode (use an engine without isolation_level='AUTOCOMMIT')"
            )
        identity = {USER_SETTING: "", PROOF_SETTING: ""}
        if user_id is not None:
            identity = _member_identity(session, user_id)
        values = {
            "search_path": SEARCH_PATH,
            "statement_timeout": str(settings.statement_timeout_ms),
            "lock_timeout": str(settings.lock_timeout_ms),
            "role": role,
            **identity,
        }
        params: dict[str, object] = {"kept": list(_KEPT)}
        for i, name in enumerate(_SETTINGS):
            params[f"n{i}"] = name
            params[f"v{i}"] = values[name]
        # A connection our pool DISCARDed on check-in carries no session settings:
        # only one that was not (behind a transaction pooler) needs them restored.
        unclean = not nested and not _fresh_from_the_pool(session)
        sql = _enter_sql(restore_session=unclean, verify_member=user_id is not None)
        if unclean:
            # Behind a transaction pooler a session statement_timeout left by another
            # client would also time the (slower) statement that restores it: a cheap
            # statement resets the timeouts first (our own pool DISCARDs on check-in).
            session.execute(
                text(
                    "SELECT pg_catalog.set_config('statement_timeout', :t, true), "
                    "pg_catalog.set_config('idle_in_transaction_session_timeout', '0', true)"
                ),
                {"t": values["statement_timeout"]},
            )
        try:
            row = session.execute(text(sql), params).one()
        except DBAPIError as exc:
            if sqlstate_of(exc) == "42501" and "role" in str(exc.orig):
                log.warning("scope refused: the login role may not act as %s", role)
                raise ScopeError(
                    f"this connection's login role may not act as {role}: "
                    f"{pool} requests need the {pool} pool's login "
                    "role (docs/security.md, 'Pools')"
                ) from None
            raise
        if not row.verified:
            # The user id is no secret; the proof is never logged.
            log.warning("scope refused: the database did not verify the proof for %s", user_id)
            raise ScopeError(
                f"the database did not accept the identity proof for user {user_id}: "
                f"install the key in {KEY_ENV} with `skillmeat-db upgrade`, and check "
                "that the backend's and the database's clocks agree"
            )
        session.info[_SCOPE_KEY] = Scope(user_id=user_id, admin=admin, worker=worker)
        try:
            yield session
            if session.connection().in_nested_transaction():
                # A savepoint's release keeps SET LOCAL: put back what the caller had.
                put_back = ", ".join(
                    f"pg_catalog.set_config(:n{i}, :v{i}, true)" for i in range(len(_SETTINGS))
                )
                restore: dict[str, object] = {}
                for i, name in enumerate(_SETTINGS):
                    restore[f"n{i}"] = name
                    restore[f"v{i}"] = row[i] or ""
                session.execute(text(f"SELECT {put_back}"), restore)
        finally:
            session.info.pop(_SCOPE_KEY, None)


def _fresh_from_the_pool(session: Session) -> bool:
    """True once per checkout of a connection our pool DISCARDed at its check-in: the
    first scope on it finds no session-level leftovers. A session bound to one
    connection across scopes, or an engine without the reset, gets False."""
    info = session.connection().connection.info
    return bool(info.pop(FRESH, False))


def _member_identity(session: Session, user_id: uuid.UUID) -> dict[str, str]:
    """The settings for `user_id`, signed with SKILLMEAT_IDENTITY_KEY or, in development,
    with the key `skillmeat-db upgrade` generated (readable by a superuser only)."""
    key = configured_key()
    if key is None:
        key = stored_generated_key(session.connection())
    if key is None:
        raise IdentityNotConfigured(
            f"member scopes need {KEY_ENV}: set it to the identity key installed in the "
            "database (32+ random bytes, hex or base64; docs/security.md)"
        )
    return identity_settings(user_id, key=key)


@asynccontextmanager
async def async_tenant_scope(
    session: AsyncSession,
    *,
    user_id: uuid.UUID | None = None,
    admin: bool = False,
    worker: bool = False,
) -> AsyncIterator[AsyncSession]:
    """tenant_scope for an `AsyncSession` (from make_async_engine()): the same scope, run
    on the session's sync twin through SQLAlchemy's greenlet bridge. Call the repository
    functions inside with `await session.run_sync(fn, ...)`."""
    scope = tenant_scope(session.sync_session, user_id=user_id, admin=admin, worker=worker)
    await greenlet_spawn(scope.__enter__)
    try:
        yield session
    except BaseException as exc:
        if not await greenlet_spawn(scope.__exit__, type(exc), exc, exc.__traceback__):
            raise
    else:
        await greenlet_spawn(scope.__exit__, None, None, None)
