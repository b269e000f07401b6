"""Alembic environment: URL from SKILLMEAT_DATABASE_URL, or a connection handed in.

Tests and pytest-alembic pass an open connection in
`config.attributes["connection"]`; the CLI and `alembic upgrade head` connect
from settings.
"""

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool

from skillmeat.core.database.engine import make_engine
from skillmeat.core.database.identity import install_configured_key
from skillmeat.core.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Used by autogenerate and `alembic check`; the revisions themselves never import models.
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        # Every online upgrade installs SKILLMEAT_IDENTITY_KEY (idempotent), or
        # generates a development key when the database has none; never offline,
        # where the key would be written into the SQL script.
        said = install_configured_key(connection)
        if said:
            config.attributes["identity_key_message"] = said
            logging.getLogger("skillmeat.migrations").info(said)


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or str(make_engine().url),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    handed_in = config.attributes.get("connection")
    if isinstance(handed_in, Connection):
        _configure(handed_in)
        return
    if handed_in is not None:
        # An Engine, or pytest-alembic's wrapper that presents an open connection as
        # one: never fall through to the settings' database when something was handed in.
        with handed_in.connect() as conn:
            _configure(conn)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _configure(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
