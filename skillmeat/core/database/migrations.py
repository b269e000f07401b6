"""The schema's revision: migrate to head, or check it at start-up.

The migration scripts ship inside the wheel as `skillmeat/migrations/` (mapped from
the repository's `alembic/` at build time, one copy in git); from a checkout they
are read from `alembic/` beside the package.
"""

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from skillmeat.core.database.engine import make_engine
from skillmeat.core.database.errors import translated_errors
from skillmeat.core.database.settings import DatabaseSettings
from skillmeat.core.errors import PermissionDenied, SkillmeatError, ValidationFailed

_PACKAGE = Path(__file__).resolve().parents[2]  # .../skillmeat
PACKAGED_SCRIPTS = _PACKAGE / "migrations"
CHECKOUT_SCRIPTS = _PACKAGE.parent / "alembic"
DRIVER = "postgresql+psycopg"
_URL_HINT = f"use {DRIVER}://user:password@host:5432/database"
# The roles a NOINHERIT login role switches to before reading the revision.
_REQUEST_ROLES = ("skillmeat_app", "skillmeat_admin", "skillmeat_worker")


class MigrationsMissing(SkillmeatError):
    """Neither the packaged nor the checkout's migration scripts exist (a broken install)."""


def script_location() -> Path:
    """Where the migration scripts are: in the installed package, else in the checkout."""
    if (PACKAGED_SCRIPTS / "env.py").is_file():
        return PACKAGED_SCRIPTS
    # A checkout has alembic.ini beside alembic/ (site-packages/alembic is the library).
    if (CHECKOUT_SCRIPTS / "env.py").is_file() and (
        CHECKOUT_SCRIPTS.parent / "alembic.ini"
    ).is_file():
        return CHECKOUT_SCRIPTS
    raise MigrationsMissing(
        f"migration scripts not found in {PACKAGED_SCRIPTS} or {CHECKOUT_SCRIPTS}: "
        "reinstall skillmeat (pip install --force-reinstall skillmeat)"
    )


def normalize_url(url: str | URL) -> URL:
    """The URL with `postgres://` and `postgresql://` read as psycopg; other drivers refused."""
    shown = url.render_as_string(hide_password=True) if isinstance(url, URL) else url
    try:
        sa_url = make_url(url)
    except ArgumentError:
        raise ValidationFailed(
            "url", shown, f"{shown!r} is not a database URL ({_URL_HINT})"
        ) from None
    if sa_url.drivername in ("postgres", "postgresql"):
        return sa_url.set(drivername=DRIVER)
    if sa_url.drivername != DRIVER:
        raise ValidationFailed(
            "url",
            shown,
            f"driver {sa_url.drivername!r} is not supported ({_URL_HINT}; "
            "postgres:// and postgresql:// are read as that)",
        )
    return sa_url


def configured_url(url: str | URL | None = None) -> URL:
    """`url`, else SKILLMEAT_DATABASE_URL, else the local default; normalized."""
    return normalize_url(url if url is not None else DatabaseSettings().database_url)


def alembic_config(url: str | URL | None = None, connection: Connection | None = None) -> Config:
    """An Alembic Config for the packaged migrations, bound to `url` or an open connection."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
    config.attributes["configure_logger"] = False
    if url is not None:
        config.set_main_option(
            "sqlalchemy.url",
            normalize_url(url).render_as_string(hide_password=False).replace("%", "%%"),
        )
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migration chain is empty"
    return head


def known_revisions() -> set[str]:
    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


class SchemaState(StrEnum):
    AT_HEAD = "at head"
    BEHIND = "behind"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SchemaStatus:
    """The database's revision against the code's head."""

    current: str | None
    head: str
    state: SchemaState


def upgrade(url: str | URL | None = None) -> str | None:
    """Migrate the (existing) database at `url` to head: for backends that migrate at start-up.

    Connect as the owner role (locally `postgres`), not as the application's login role.
    Also installs SKILLMEAT_IDENTITY_KEY (or generates a development key when none is
    configured or stored); returns what that step said, or None when nothing changed.
    """
    config = alembic_config(configured_url(url))
    command.upgrade(config, "head")
    said = config.attributes.get("identity_key_message")
    return said if isinstance(said, str) else None


def schema_status(url: str | URL | None = None) -> SchemaStatus:
    """The database's revision, readable as the application's NOINHERIT login role."""
    engine = make_engine(configured_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn, conn.begin():
            _become_a_reader(conn)
            try:
                with translated_errors():
                    heads = MigrationContext.configure(
                        conn, opts={"version_table_schema": "public"}
                    ).get_current_heads()
            except PermissionDenied:
                user = conn.execute(text("SELECT session_user")).scalar_one()
                raise PermissionDenied(
                    f"permission denied: {user} cannot read the schema's revision "
                    "(alembic_version): the database is older than revision ac48ebd7ed9a, "
                    "which grants it to skillmeat_app; run `skillmeat-db upgrade` as the owner"
                ) from None
    finally:
        engine.dispose()
    head = head_revision()
    current = heads[0] if len(heads) == 1 else (",".join(heads) or None)
    if heads == (head,):
        state = SchemaState.AT_HEAD
    elif any(rev not in known_revisions() for rev in heads):
        state = SchemaState.UNKNOWN
    else:
        state = SchemaState.BEHIND
    return SchemaStatus(current=current, head=head, state=state)


def check_at_head(url: str | URL | None = None) -> bool:
    """True when the database is at the code's head revision: a backend's start-up check."""
    return schema_status(url).state is SchemaState.AT_HEAD


def _become_a_reader(conn: Connection) -> None:
    """A NOINHERIT login role holds no privilege of its own: switch to a request role it
    may SET ROLE to (for this transaction only) when it cannot read alembic_version.

    First pin the search path and reset the role, transaction-locally: behind a
    transaction pooler an earlier client may have left a session role or a temporary
    `alembic_version` that would otherwise answer for the real one.
    """
    conn.execute(
        text(
            "SELECT pg_catalog.set_config('search_path', 'pg_catalog, public, pg_temp', true), "
            "pg_catalog.set_config('role', 'none', true)"
        )
    )
    role = conn.execute(
        text(
            "SELECT r FROM pg_catalog.unnest(CAST(:roles AS pg_catalog.text[])) "
            "WITH ORDINALITY AS t(r, n) "
            "WHERE pg_catalog.to_regclass('public.alembic_version') IS NOT NULL "
            "AND NOT pg_catalog.has_table_privilege('public.alembic_version', 'SELECT') "
            "AND CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) "
            "THEN pg_catalog.pg_has_role(r, 'MEMBER') ELSE false END ORDER BY n LIMIT 1"
        ),
        {"roles": list(_REQUEST_ROLES)},
    ).scalar_one_or_none()
    if role is not None:
        conn.execute(text("SELECT set_config('role', :role, true)"), {"role": role})
