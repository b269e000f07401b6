"""Engine and session factories: built from settings, never at import time.

Every engine is hardened against a request that ran arbitrary SQL (docs/security.md):
- no server-side prepared statements (psycopg's `prepare_threshold=None`), so no
  statement of the library's can be replaced by a request's `DEALLOCATE` + `PREPARE`;
- every transaction starts with `BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE`,
  whatever `default_transaction_*` a request left on the session;
- on check-in the connection is rolled back and `DISCARD ALL`ed, so temporary objects,
  prepared statements, session settings and role, advisory locks and LISTENs end with
  the request (skipped behind a transaction pooler, where `tenant_scope` alone defends).
"""

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, PoolResetState

from skillmeat.core.database.settings import DatabaseSettings
from skillmeat.core.errors import ConfigurationError

# Everything a request can leave on a session, plans included. Keeping the plans
# (the same list without DISCARD PLANS) measured about 5% faster a request here,
# within noise; `skillmeat-db bench requests` prints the check-in reset's cost.
RESET_SQL = "DISCARD ALL"


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """An Engine for `url` (default: `DatabaseSettings().database_url`).

    `pool_pre_ping` is on so a connection dropped by a failover is replaced
    rather than handed to a request.
    """
    sa_url, kwargs, discard = _engine_options(url, kwargs)
    engine = create_engine(sa_url, **kwargs)
    _harden(engine, discard)
    return engine


def make_async_engine(url: str | URL | None = None, **kwargs: Any) -> AsyncEngine:
    """make_engine() for asyncio (psycopg's async connection), with the same hardening.

    Use it with `AsyncSession`, `async_tenant_scope` and `await session.run_sync(fn, ...)`
    for the repository functions (docs/usage.md, "Async").
    """
    sa_url, kwargs, discard = _engine_options(url, kwargs)
    engine = create_async_engine(sa_url, **kwargs)
    _harden(engine.sync_engine, discard)
    return engine


def _engine_options(
    url: str | URL | None, kwargs: dict[str, Any]
) -> tuple[URL, dict[str, Any], bool]:
    settings = DatabaseSettings()
    sa_url = make_url(url or settings.database_url)
    kwargs = dict(kwargs)
    connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("prepare_threshold", None)
    # Sent at startup, so PgBouncer restores it for every client (1.18 only resets an
    # application_name the client gave when it connected).
    connect_args.setdefault("application_name", settings.application_name)
    connect_args.setdefault("connect_timeout", settings.connect_timeout_s)
    if kwargs.get("poolclass") is None:
        kwargs.setdefault("pool_size", settings.pool_size)
        kwargs.setdefault("max_overflow", settings.max_overflow)
        kwargs.setdefault("pool_timeout", settings.pool_timeout_s)
    kwargs.setdefault("pool_pre_ping", True)
    # Error messages and logs never show bound values (identity proofs, later tokens).
    kwargs.setdefault("hide_parameters", True)
    kwargs.setdefault("isolation_level", "READ COMMITTED")
    discard = settings.database_pooler == "none" and kwargs.get("poolclass") is not NullPool
    if discard:
        kwargs.setdefault("pool_reset_on_return", None)  # _reset_connection rolls back itself
    discard = discard and kwargs["pool_reset_on_return"] is None
    allow_prepared = kwargs.pop("allow_prepared_statements", False)
    if connect_args["prepare_threshold"] is not None and not allow_prepared:
        # A request could DEALLOCATE and re-PREPARE psycopg's statement names with SQL
        # of its own, run by later requests on a shared server connection.
        raise ConfigurationError(
            f"prepare_threshold: {connect_args['prepare_threshold']!r} is not allowed: "
            "server-side prepared statements can be replaced by a request's SQL "
            "(docs/security.md); pass allow_prepared_statements=True (and "
            "pool_reset_on_return='rollback', since DISCARD ALL drops them) only for "
            "measurements"
        )
    if discard and allow_prepared:
        raise ConfigurationError(
            "allow_prepared_statements needs pool_reset_on_return='rollback': the "
            "check-in DISCARD ALL drops the prepared statements"
        )
    kwargs["connect_args"] = connect_args
    return sa_url, kwargs, discard


def _harden(engine: Engine, discard: bool) -> None:
    event.listen(engine, "connect", _explicit_transactions)
    if discard:
        event.listen(engine, "reset", _reset_connection)
        event.listen(engine, "checkout", _mark_fresh)


FRESH = "skillmeat.fresh"


def _mark_fresh(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    # Reset at its last check-in (DISCARD ALL): the first scope on it needs no
    # session-settings restore. tenant_scope pops the mark.
    record.info[FRESH] = True


def _explicit_transactions(dbapi_connection: Any, _record: Any) -> None:
    # psycopg then spells out READ WRITE in every BEGIN: a session-level
    # default_transaction_read_only left by a request cannot turn a later one read-only.
    if not dbapi_connection.autocommit:
        dbapi_connection.set_read_only(False)


def _reset_connection(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """Roll back, then forget everything the request left on the session."""
    dbapi_connection.rollback()
    if state.terminate_only:
        return
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        cursor = dbapi_connection.cursor()  # psycopg's, or SQLAlchemy's asyncio adapter
        try:
            cursor.execute(RESET_SQL)
        finally:
            cursor.close()
    finally:
        dbapi_connection.autocommit = autocommit


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (read models are built afterwards)."""
    return sessionmaker(bind=engine, expire_on_commit=False)
