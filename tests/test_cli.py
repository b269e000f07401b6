"""`skillmeat-db` on click: exit codes of `current`, options after the command, URL
forms, --version, defaults in help; and check_at_head as the documented login role."""

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool

from skillmeat import cli
from skillmeat.core.database import check_at_head, make_engine, schema_status
from skillmeat.core.database.migrations import SchemaState, alembic_config, head_revision
from skillmeat.core.database.provision import throwaway_database, upgrade_to_head

PREVIOUS = "c71f5e0a4d22"


@pytest.fixture
def migrated(pg_server_url: URL) -> Iterator[URL]:
    with throwaway_database(pg_server_url, prefix="skillmeat_cli") as url:
        upgrade_to_head(url)
        yield url


def current(url: URL | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    shown = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    code = cli.main(["current", "--url", shown])
    out, err = capsys.readouterr()
    return code, out, err


def test_current_exits_0_only_at_head(migrated: URL, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = current(migrated, capsys)
    assert (code, out) == (0, f"{migrated.database}: revision {head_revision()} (at head)\n")

    command.downgrade(alembic_config(migrated), PREVIOUS)
    code, out, _ = current(migrated, capsys)
    assert code == 1
    assert out.count("\n") == 1 and f"revision {PREVIOUS} (behind head" in out
    assert "run `skillmeat-db upgrade`" in out

    engine = make_engine(migrated, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'feedfacecafe'"))
    engine.dispose()
    code, out, _ = current(migrated, capsys)
    assert code == 2
    assert out.count("\n") == 1 and "feedfacecafe (unknown to this code" in out
    assert "pip install -U skillmeat" in out


def test_current_on_a_missing_database_says_to_upgrade(
    pg_server_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = pg_server_url.set(database=f"skillmeat_missing_{uuid.uuid4().hex[:8]}")
    code, out, _ = current(missing, capsys)
    assert code == 1
    assert "no such database" in out and "run `skillmeat-db upgrade`" in out


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_url_forms_after_or_before_the_command(
    migrated: URL, scheme: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rest = migrated.render_as_string(hide_password=False).split("://", 1)[1]
    code, out, err = current(f"{scheme}://{rest}", capsys)
    assert (code, err) == (0, "")
    assert "(at head)" in out
    assert cli.main(["--url", f"{scheme}://{rest}", "current"]) == 0


def test_other_drivers_are_refused_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = current("postgresql+asyncpg://postgres@127.0.0.1/x", capsys)
    assert (code, out) == (3, "")
    assert err == (
        "skillmeat-db current: bad database URL: driver 'postgresql+asyncpg' is not supported "
        "(use postgresql+psycopg://user:password@host:5432/database; postgres:// and "
        "postgresql:// are read as that)\n"
    )


def test_version_and_defaults_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == "skillmeat-db, version 0.1.0\n"
    assert cli.main(["bench", "sync", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "[default: 20000]" in help_text and "[default: 7]" in help_text
    assert "$SKILLMEAT_DATABASE_URL, else postgresql+psycopg://" in help_text
    assert cli.main(["bench", "sync", "--rounds", "x"]) == 2
    assert capsys.readouterr().err == (
        "skillmeat-db bench sync: Invalid value for '--rounds': 'x' is not a valid integer. "
        "(see `skillmeat-db bench sync --help`)\n"
    )
    assert cli.main(["current", "--bogus"]) == 3  # 2 would read as "unknown revision"
    assert capsys.readouterr().err.count("\n") == 1


def test_check_at_head_as_a_noinherit_login_role(migrated: URL) -> None:
    """docs/security.md's wiring: the login role holds nothing until SET ROLE."""
    role, password = f"skillmeat_test_login_{uuid.uuid4().hex[:6]}", "login-secret"
    admin = make_engine(migrated, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN NOINHERIT PASSWORD '{password}'"))
            conn.execute(text(f"GRANT skillmeat_app TO {role}"))
        as_login = migrated.set(username=role, password=password)
        login = make_engine(as_login, poolclass=NullPool)
        try:
            with pytest.raises(ProgrammingError, match="permission denied"), login.connect() as c:
                c.execute(text("SELECT version_num FROM alembic_version"))
        finally:
            login.dispose()
        assert check_at_head(as_login) is True
        assert schema_status(as_login).state is SchemaState.AT_HEAD
        assert check_at_head(migrated) is True  # and as the owner, who needs no SET ROLE
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def test_a_wide_table_keeps_every_header_and_cell() -> None:
    """explain's check column can hold a long message: the table grows, nothing is cut
    (rich used to fit it into 220 columns, printing "pa…" for "path")."""
    from skillmeat.tools.console import render_table

    message = "RLS adds a sort (the plan without RLS reads the index in order) " * 4
    lines = render_table(["path", "index used (RLS)", "check"], [["3", "ix_" + "a" * 120, message]])
    header, rule, row = lines.splitlines()
    assert header.split() == ["path", "index", "used", "(RLS)", "check"]
    assert row.endswith(message.rstrip()) and "…" not in lines
    assert set(rule) == {"─"} and len(rule) >= len(row)
