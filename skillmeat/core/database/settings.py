"""Connection settings, read from the environment (SKILLMEAT_*)."""

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/skillmeat"


class DatabaseSettings(BaseSettings):
    """Where the marketplace database lives; `SKILLMEAT_DATABASE_URL` overrides the default."""

    model_config = SettingsConfigDict(env_prefix="SKILLMEAT_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    # Statement timeout applied to every pooled connection (0 = none), in milliseconds.
    statement_timeout_ms: int = 0
