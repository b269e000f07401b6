"""Connection settings, read from the environment (SKILLMEAT_*)."""

import functools
import os
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/skillmeat"


class DatabaseSettings(BaseSettings):
    """Where the marketplace database lives and how requests run on it (SKILLMEAT_*)."""

    model_config = SettingsConfigDict(env_prefix="SKILLMEAT_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    # Shown in pg_stat_activity and the server's logs for every connection.
    application_name: str = "skillmeat"
    # What sits between the library and PostgreSQL. "transaction": a transaction
    # pooler such as PgBouncer in pool_mode = transaction, where a server connection
    # is shared between clients: the check-in reset (DISCARD ALL) would run on some
    # other client's server connection, so it is skipped; every scope's own defences
    # (pinned search_path, session settings restored, no prepared statements) stay.
    database_pooler: Literal["none", "transaction"] = "none"
    # The pool of each engine make_engine() builds. A sync web app holds one connection
    # per request in flight: size pool_size + max_overflow to its worker threads
    # (FastAPI's threadpool runs 40), or the threads queue for pool_timeout seconds.
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: int = Field(default=10, ge=1)
    # Transaction-local limits set by every tenant_scope, in milliseconds (0 = none).
    statement_timeout_ms: int = Field(default=30_000, ge=0)
    lock_timeout_ms: int = Field(default=5_000, ge=0)


def current_settings() -> DatabaseSettings:
    """DatabaseSettings for the environment as it is now, parsed once per distinct
    SKILLMEAT_* environment: every tenant_scope needs its timeouts, and building a
    BaseSettings reads and validates the whole environment (~0.5 ms a request)."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k[:10].upper() == "SKILLMEAT_"))
    # a copy: a caller changing a field must not change every later scope's settings
    return _settings_for(env).model_copy()


@functools.lru_cache(maxsize=8)
def _settings_for(env: tuple[tuple[str, str], ...]) -> DatabaseSettings:
    return DatabaseSettings()
