"""The migration chain is reversible and leaves nothing behind.

pytest-alembic's built-in tests (bound to conftest.py) cover a single head,
upgrade, models matching the DDL, and up/down consistency per revision.
"""

import hashlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from skillmeat.core.database import make_engine
from skillmeat.core.database.provision import alembic_config, throwaway_database

VERSIONS = Path(__file__).resolve().parents[1] / "alembic" / "versions"

# A released revision is never edited: fixes go forward in a new revision.
# Add a line here when you add a revision (first 16 hex digits of its sha256);
# never change an existing one.
RELEASED_REVISIONS = {
    "20261127_1800_projects.py": "bbc83bdfdbe111e0",
    "20261127_1810_row_level_security.py": "eec1a20429c75300",
    "20261127_1810_row_level_security.sql": "87b731e4b476e2a4",
    "20261127_1805_marketplace_schema.py": "a481bf967fc08849",
    "20261205_2250_request_isolation.py": "560d4163de77b495",
    "20261205_2250_request_isolation.sql": "a8176dee1dc63825",
    "20261205_2320_96234684d7d9_bounded_input.py": "75689afa6ec6adf1",
    "20261205_2310_ac48ebd7ed9a_projects_api.py": "7f5150403d3846b2",
    "20261206_0030_scan_lifecycle.py": "2719f59f2e9c7f27",
    "20261206_0030_scan_lifecycle.sql": "96ac71da541410ed",
    "20261206_0040_catalog_search.py": "261e535a62978dde",
    "20261206_0040_catalog_search.sql": "4702a3a87433aec4",
    "20261206_0050_tokens_and_links.py": "7173bd9e3e507055",
    "20261206_0050_tokens_and_links.sql": "245dfa539a6c14f9",
    "20261206_0300_search_per_source.py": "a31a4ae05892c46a",
    "20261206_0300_search_per_source.sql": "a7009a26f90a4bed",
}

# Everything the chain creates outside pg_catalog/information_schema.
LEFTOVERS = """
SELECT 'relation ' || n.nspname || '.' || c.relname FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
   AND c.relname NOT IN ('alembic_version', 'alembic_version_pkc')
UNION ALL
SELECT 'type ' || n.nspname || '.' || t.typname FROM pg_type t
  JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
   AND t.typname NOT IN ('alembic_version', '_alembic_version')
UNION ALL
SELECT 'function ' || n.nspname || '.' || p.proname FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'policy ' || polname FROM pg_policy
UNION ALL
SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'schema ' || nspname FROM pg_namespace
 WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'public')
   AND nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%'
ORDER BY 1
"""


@pytest.fixture
def empty_database(pg_server_url: URL) -> Iterator[tuple[URL, Engine]]:
    with throwaway_database(pg_server_url, prefix="skillmeat_migr") as url:
        engine = make_engine(url, poolclass=NullPool)
        try:
            yield url, engine
        finally:
            engine.dispose()


def _leftovers(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(LEFTOVERS)).scalars())


def _schema_dump(url: URL) -> str:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        pytest.fail("pg_dump is not installed: apt-get install postgresql-client", pytrace=False)
    result = subprocess.run(
        [
            pg_dump,
            "--schema-only",
            "--no-owner",
            "--exclude-table=alembic_version",
            "--host",
            url.host or "127.0.0.1",
            "--port",
            str(url.port or 5432),
            "--username",
            url.username or "postgres",
            url.database or "",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PGPASSWORD": url.password or "", "PATH": "/usr/bin:/bin"},
    )
    # pg_dump 15.14+ wraps the dump in \restrict <random key> lines: not schema.
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def test_downgrade_base_removes_everything(empty_database: tuple[URL, Engine]) -> None:
    url, engine = empty_database
    assert _leftovers(engine) == []
    config = alembic_config(url)
    command.upgrade(config, "head")
    created = _leftovers(engine)
    assert "relation public.marketplace_catalog_entries" in created
    assert "function public.skillmeat_set_updated_at" in created

    command.downgrade(config, "base")

    assert _leftovers(engine) == []


def test_upgrade_after_downgrade_yields_identical_schema(
    empty_database: tuple[URL, Engine],
) -> None:
    url, _ = empty_database
    config = alembic_config(url)
    command.upgrade(config, "head")
    first = _schema_dump(url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    second = _schema_dump(url)
    assert "CREATE TABLE public.marketplace_catalog_entries" in first
    assert first == second


def test_released_revisions_are_unchanged() -> None:
    files = sorted(p.name for p in VERSIONS.iterdir() if p.suffix in (".py", ".sql"))
    assert files == sorted(RELEASED_REVISIONS), (
        "every revision file must be listed in RELEASED_REVISIONS (and none removed)"
    )
    for name, digest in RELEASED_REVISIONS.items():
        actual = hashlib.sha256((VERSIONS / name).read_bytes()).hexdigest()[:16]
        assert actual == digest, (
            f"{name} changed after release: add a new revision instead of editing this one"
        )


def test_a_non_superuser_owner_with_createrole_can_migrate_up_and_down(
    pg_server_url: URL,
) -> None:
    """The deployment path docs/security.md describes for managed databases."""
    role, password = f"skillmeat_test_migrator_{secrets.token_hex(4)}", "migrator-secret"
    admin = make_engine(pg_server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
            conn.execute(text(f"CREATE ROLE {role} LOGIN CREATEROLE PASSWORD '{password}'"))
        with throwaway_database(pg_server_url, prefix="skillmeat_migr") as url:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{url.database}" OWNER TO {role}'))
            as_owner = url.set(username=role, password=password)
            config = alembic_config(as_owner)
            command.upgrade(config, "head")
            owner_engine = make_engine(as_owner, poolclass=NullPool)
            try:
                with owner_engine.connect() as conn:
                    owner = conn.execute(
                        text(
                            "SELECT r.rolname FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner "
                            "WHERE p.proname = 'member_project_ids'"
                        )
                    ).scalar_one()
                    superuser = conn.execute(
                        text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                    ).scalar_one()
                assert (owner, superuser) == ("skillmeat_definer", False)
                command.downgrade(config, "base")
                assert _leftovers(owner_engine) == []
            finally:
                owner_engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


BAD_ROWS = """
WITH p AS (INSERT INTO projects (name) VALUES ('p') RETURNING id),
s AS (
    INSERT INTO marketplace_sources (project_id, repo_url, branch_or_ref)
    SELECT id, 'https://github.com/a/b', E'main\\u202e' FROM p RETURNING id
)
INSERT INTO marketplace_catalog_entries
    (source_id, artifact_type, detected_path, upstream_url, detected_version_sha,
     confidence_score)
SELECT s.id, 'skill', 'skills/' || n, 'https://x.io/' || repeat('a', 3000), 'abc', 50
  FROM s, generate_series(1, 2) AS n
"""
BOUNDED_INPUT = "96234684d7d9"


def _new_checks(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT conname FROM pg_constraint WHERE contype = 'c' AND ("
                    "conname LIKE '%\\_clean' OR conname LIKE '%\\_length' "
                    "OR conname LIKE '%\\_size') ORDER BY 1"
                )
            ).scalars()
        )


def _forced(engine: Engine) -> list[bool]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT relforcerowsecurity FROM pg_class WHERE relname IN "
                    "('marketplace_sources', 'marketplace_catalog_entries')"
                )
            ).scalars()
        )


def _upgrade_over_bad_rows(migrate_as: URL, admin: Engine, observer: Engine) -> None:
    """Rows that break the new CHECKs stop the upgrade with counts; nothing changes."""
    config = alembic_config(migrate_as)
    command.upgrade(config, "5e0b2d7a9c14")
    with admin.begin() as conn:
        conn.execute(text(BAD_ROWS))

    with pytest.raises(RuntimeError) as caught:
        command.upgrade(config, BOUNDED_INPUT)

    message = str(caught.value)
    assert "cannot add its CHECKs to marketplace_sources: 1 rows break " in message
    assert "ck_marketplace_sources_branch_or_ref_clean (branch_or_ref !~ '[" in message
    assert "SELECT id FROM marketplace_sources WHERE NOT (branch_or_ref !~" in message
    with observer.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == "5e0b2d7a9c14"
    assert _new_checks(observer) == []
    assert _forced(observer) == [True, True]

    with admin.begin() as conn:
        conn.execute(text("UPDATE marketplace_sources SET branch_or_ref = 'main'"))
    with pytest.raises(RuntimeError) as caught:
        command.upgrade(config, BOUNDED_INPUT)
    assert (
        "cannot add its CHECKs to marketplace_catalog_entries: 2 rows break "
        "ck_marketplace_catalog_entries_upstream_url_length (char_length(upstream_url) <= 2048)"
    ) in str(caught.value)

    with admin.begin() as conn:
        conn.execute(text("DELETE FROM marketplace_catalog_entries"))
    command.upgrade(config, BOUNDED_INPUT)
    assert len(_new_checks(observer)) == 11
    assert _forced(observer) == [True, True]


def test_existing_rows_that_break_the_bounds_stop_the_upgrade(
    empty_database: tuple[URL, Engine],
) -> None:
    url, engine = empty_database
    _upgrade_over_bad_rows(url, engine, engine)


def test_the_bounds_precheck_sees_every_row_when_the_owner_migrates(
    pg_server_url: URL,
) -> None:
    """FORCE ROW LEVEL SECURITY would hide every row from the owner: the count must not."""
    role, password = "skillmeat_test_migrator", "migrator-secret"
    admin = make_engine(pg_server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
            conn.execute(text(f"CREATE ROLE {role} LOGIN CREATEROLE PASSWORD '{password}'"))
        with throwaway_database(pg_server_url, prefix="skillmeat_migr") as url:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{url.database}" OWNER TO {role}'))
            superuser = make_engine(url, poolclass=NullPool)
            try:
                _upgrade_over_bad_rows(
                    url.set(username=role, password=password), superuser, superuser
                )
                command.downgrade(alembic_config(url.set(username=role, password=password)), "base")
            finally:
                superuser.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()
