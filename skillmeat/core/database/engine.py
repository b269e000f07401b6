"""Engine and session factories: built from settings, never at import time."""

from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from skillmeat.core.database.settings import DatabaseSettings


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """An Engine for `url` (default: `DatabaseSettings().database_url`).

    `pool_pre_ping` is on so a connection dropped by a failover is replaced
    rather than handed to a request.
    """
    settings = DatabaseSettings()
    sa_url = make_url(url or settings.database_url)
    connect_args: dict[str, Any] = kwargs.pop("connect_args", {})
    if settings.statement_timeout_ms:
        connect_args.setdefault("options", f"-c statement_timeout={settings.statement_timeout_ms}")
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(sa_url, connect_args=connect_args, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (read models are built afterwards)."""
    return sessionmaker(bind=engine, expire_on_commit=False)
