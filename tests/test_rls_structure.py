"""Structural guarantees of the row-level security set-up, read from the catalogs."""

import uuid
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from skillmeat.core.database import identity_settings
from skillmeat.core.database.tenant import ADMIN_ROLE, APP_ROLE, WORKER_ROLE

TABLES = [
    "projects",
    "project_members",
    "marketplace_sources",
    "marketplace_catalog_entries",
    "marketplace_scans",
    "marketplace_source_tokens",
    "marketplace_source_links",
]
HARVESTER_ROLE = "skillmeat_harvester"
COMMANDS = ["SELECT", "INSERT", "UPDATE", "DELETE"]
ROOT = Path(__file__).resolve().parents[1]
SEARCH_ROLE = "skillmeat_search"
SEARCH_FUNCTIONS = {"search_core", "search_catalog", "search_catalog_admin"}
SEARCH_PLANNER = [
    "enable_seqscan=off",
    "enable_indexscan=on",
    "enable_bitmapscan=on",
    "enable_nestloop=on",
    "enable_hashjoin=on",
    "enable_sort=on",
    "enable_hashagg=on",
    "jit=off",
]


@pytest.mark.parametrize("table", TABLES)
def test_rls_enabled_and_forced(connection: Connection, table: str) -> None:
    enabled, forced = connection.execute(
        text(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE oid = CAST(:t AS regclass)"
        ),
        {"t": f"public.{table}"},
    ).one()
    assert (enabled, forced) == (True, True)


def _may(connection: Connection, role: str, table: str, command: str) -> bool:
    """Whether `role` holds `command` on the table, on the table or on any column."""
    check = "has_table_privilege" if command == "DELETE" else "has_any_column_privilege"
    return bool(
        connection.execute(
            text(f"SELECT {check}(:r, :t, :c)"), {"r": role, "t": f"public.{table}", "c": command}
        ).scalar_one()
    )


def _policies(connection: Connection, table: str) -> list[tuple[str, str, list[str], str, str]]:
    return [
        (row.policyname, row.cmd, list(row.roles), row.qual, row.with_check)
        for row in connection.execute(
            text(
                "SELECT policyname, cmd, roles::text[] AS roles, qual, with_check, permissive "
                "FROM pg_policies WHERE schemaname = 'public' AND tablename = :t"
            ),
            {"t": table},
        )
    ]


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_granted_command_has_a_policy_per_role(
    connection: Connection, table: str, command: str
) -> None:
    policies = _policies(connection, table)
    for role in (APP_ROLE, ADMIN_ROLE, WORKER_ROLE):
        granted = _may(connection, role, table, command)
        covering = [name for name, cmd, roles, _, _ in policies if cmd == command and role in roles]
        if role == ADMIN_ROLE:
            assert granted, f"{role} lacks {command} on {table}"
        if granted:
            assert covering, f"{role} may {command} {table} but no policy covers it"


@pytest.mark.parametrize("table", TABLES)
def test_policies_name_their_roles_and_update_checks_both_sides(
    connection: Connection, table: str
) -> None:
    for name, cmd, roles, qual, with_check in _policies(connection, table):
        assert "public" not in roles, f"{name} applies to PUBLIC"
        assert set(roles) <= {
            APP_ROLE,
            ADMIN_ROLE,
            WORKER_ROLE,
            "skillmeat_definer",
            SEARCH_ROLE,
            HARVESTER_ROLE,
        }, name
        if cmd == "UPDATE":
            assert qual and with_check, f"{name} needs USING and WITH CHECK"


def test_security_definer_helpers_pin_search_path(connection: Connection) -> None:
    rows = connection.execute(
        text(
            "SELECT p.proname, p.prosecdef, p.proconfig, r.rolname, l.lanname "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "JOIN pg_roles r ON r.oid = p.proowner JOIN pg_language l ON l.oid = p.prolang "
            "WHERE n.nspname = 'skillmeat_private'"
        )
    ).all()
    assert {row.proname for row in rows} == {
        "current_user_id",
        "member_project_ids",
        "member_source_ids",
        "project_keeps_an_owner",
        "catalog_search_vector",
        "catalog_entry_default_name",
        *SEARCH_FUNCTIONS,
        "record_harvested_links",
    }
    owners = {"record_harvested_links": HARVESTER_ROLE}
    for row in rows:
        assert row.proconfig[0] == "search_path=pg_catalog, pg_temp", row.proname
        # search_core plans its own statements: the caller's planner settings do not reach it
        assert row.proconfig[1:] == (SEARCH_PLANNER if row.proname == "search_core" else []), (
            row.proname
        )
        if row.prosecdef:
            # plpgsql caches its plans; a non-inlined SQL function re-plans every call
            assert row.lanname == "plpgsql", row.proname
            owner = (
                SEARCH_ROLE
                if row.proname in SEARCH_FUNCTIONS
                else owners.get(row.proname, "skillmeat_definer")
            )
            assert row.rolname == owner, row.proname
    executable: dict[str, list[str]] = dict(
        connection.execute(
            text(
                "SELECT p.proname, array_agg(coalesce(g.rolname, 'PUBLIC') "
                "ORDER BY coalesce(g.rolname, 'PUBLIC')) "
                "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a "
                "LEFT JOIN pg_roles g ON g.oid = a.grantee "
                "WHERE n.nspname = 'skillmeat_private' AND a.privilege_type = 'EXECUTE' "
                "AND a.grantee <> p.proowner GROUP BY 1"
            )
        ).all()
    )
    assert executable == {
        # only says whether the transaction's own proof verifies (tenant_scope asks it)
        "current_user_id": ["PUBLIC"],
        "member_project_ids": [APP_ROLE],
        "member_source_ids": [APP_ROLE, SEARCH_ROLE],
        # pure functions of their arguments (the generated column, the default name)
        "catalog_search_vector": ["PUBLIC"],
        "catalog_entry_default_name": ["PUBLIC"],
        # search_core: its owner only (it trusts the sources it is given)
        "search_catalog": [APP_ROLE],
        "search_catalog_admin": [ADMIN_ROLE],
        # creates discovered sources in the finder's project only (docs/usage.md)
        "record_harvested_links": sorted([ADMIN_ROLE, WORKER_ROLE]),
    }


@pytest.mark.parametrize(
    "role",
    [APP_ROLE, ADMIN_ROLE, WORKER_ROLE, "skillmeat_definer", SEARCH_ROLE, HARVESTER_ROLE],
)
def test_roles_are_plain_and_own_nothing(connection: Connection, role: str) -> None:
    attrs = connection.execute(
        text("SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = :r"),
        {"r": role},
    ).one()
    assert tuple(attrs) == (False, False, False)
    owned = connection.execute(
        text(
            "SELECT count(*) FROM ("
            " SELECT relowner AS o FROM pg_class UNION ALL SELECT proowner FROM pg_proc"
            "  WHERE proowner <> 0 AND :r NOT IN "
            "('skillmeat_definer', 'skillmeat_search', 'skillmeat_harvester')"
            " UNION ALL SELECT nspowner FROM pg_namespace UNION ALL SELECT typowner FROM pg_type"
            ") x WHERE o = (SELECT oid FROM pg_roles WHERE rolname = :r)"
        ),
        {"r": role},
    ).scalar_one()
    assert owned == 0
    for schema in ("public", "skillmeat_private"):
        may_create = connection.execute(
            text("SELECT has_schema_privilege(:r, :s, 'CREATE')"), {"r": role, "s": schema}
        ).scalar_one()
        assert may_create is False, f"{role} may create objects in {schema}"


def test_no_request_role_can_read_identity_keys(connection: Connection) -> None:
    for role in (APP_ROLE, ADMIN_ROLE, WORKER_ROLE, "PUBLIC"):
        readable = connection.execute(
            text(
                "SELECT has_any_column_privilege(:r, 'skillmeat_private.identity_keys', 'SELECT')"
                if role != "PUBLIC"
                else "SELECT count(*) > 0 FROM information_schema.column_privileges "
                "WHERE table_name = 'identity_keys' AND grantee = 'PUBLIC'"
            ),
            {"r": role},
        ).scalar_one()
        assert readable is False, role
    definer_columns = connection.execute(
        text(
            "SELECT array_agg(column_name::text ORDER BY column_name) "
            "FROM information_schema.column_privileges WHERE table_name = 'identity_keys' "
            "AND grantee = 'skillmeat_definer' AND privilege_type = 'SELECT'"
        )
    ).scalar_one()
    assert definer_columns == ["inner_pad", "key_id", "outer_pad"]  # never the secret


def test_definer_can_only_read_and_lock_project_rows(connection: Connection) -> None:
    """The definer reads; its only write privilege is UPDATE of projects.updated_at,
    which the last-owner trigger needs to lock a project row."""
    for table in TABLES:
        for command in ("INSERT", "UPDATE", "DELETE"):
            allowed = (table, command) == ("projects", "UPDATE")
            assert _may(connection, "skillmeat_definer", table, command) is allowed
    columns = connection.execute(
        text(
            "SELECT array_agg(column_name::text) FROM information_schema.column_privileges "
            "WHERE table_name = 'projects' AND grantee = 'skillmeat_definer' "
            "AND privilege_type = 'UPDATE'"
        )
    ).scalar_one()
    assert columns == ["updated_at"]


def test_bundled_policies_match_the_newest_frozen_revision() -> None:
    bundled = (ROOT / "skillmeat" / "core" / "database" / "rls_policies.sql").read_text()
    frozen = sorted((ROOT / "alembic" / "versions").glob("*.sql"))
    assert frozen, "no revision carries a frozen copy of rls_policies.sql"
    assert bundled == frozen[-1].read_text(), (
        "rls_policies.sql differs from the copy its newest revision applies: add a new "
        "revision carrying the new file (a released revision is never edited)"
    )


@pytest.mark.parametrize("sources", [15, 300])
def test_policy_helpers_run_once_per_statement(connection: Connection, sources: int) -> None:
    """The entries policy's helper answers in one query: however many sources the user
    sees, a statement verifies the identity once per policy InitPlan, never per source
    row (a nested helper was called once per source on a 15-source database)."""
    user = uuid.uuid4()
    project = connection.execute(
        text("INSERT INTO projects (name) VALUES ('calls') RETURNING id")
    ).scalar_one()
    connection.execute(
        text("INSERT INTO project_members VALUES (:p, :u, 'viewer')"), {"p": project, "u": user}
    )
    connection.execute(
        text(
            "INSERT INTO marketplace_sources (project_id, repo_url) "
            "SELECT :p, 'https://github.com/calls/r' || g FROM generate_series(1, :n) g"
        ),
        {"p": project, "n": sources},
    )
    connection.execute(
        text(
            "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
            "upstream_url, detected_version_sha, confidence_score) "
            "SELECT id, 'skill', 'skills/x', 'https://github.com/calls/x', 'abc', 50 "
            "FROM marketplace_sources WHERE project_id = :p"
        ),
        {"p": project},
    )
    calls = text(
        "SELECT p.proname, coalesce(pg_stat_get_xact_function_calls(p.oid), 0) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'skillmeat_private' "
        "AND p.proname IN ('current_user_id', 'member_project_ids', 'member_source_ids')"
    )
    with connection.begin_nested() as savepoint:
        connection.execute(text("SET LOCAL track_functions = 'pl'"))
        # Unflushed counts of earlier transactions linger: compare before and after.
        before: dict[str, int] = dict(connection.execute(calls).all())
        connection.execute(text("SELECT set_config('role', 'skillmeat_app', true)"))
        for name, value in identity_settings(user).items():
            connection.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
        visible = connection.execute(text("SELECT count(*) FROM marketplace_sources")).scalar_one()
        seen = connection.execute(
            text(
                "SELECT count(*) FROM marketplace_sources s "
                "JOIN marketplace_catalog_entries e ON e.source_id = s.id"
            )
        ).scalar_one()
        connection.execute(text("SELECT set_config('role', 'none', true)"))
        after: dict[str, int] = dict(connection.execute(calls).all())
        savepoint.rollback()
    assert (seen, visible) == (sources, sources)
    # two statements: sources (one InitPlan) and the join (two InitPlans)
    assert {name: after[name] - before[name] for name in after} == {
        "current_user_id": 3,
        "member_project_ids": 2,
        "member_source_ids": 1,
    }


# What the worker may do on each table: (command, columns) pairs, None = none at all.
WORKER_MAY = {
    "projects": set(),
    "project_members": set(),
    "marketplace_sources": {"SELECT", "UPDATE"},
    "marketplace_catalog_entries": {"SELECT", "INSERT", "UPDATE"},
    "marketplace_scans": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    # the token it scans with; UPDATE re-encrypts it (rotate_token_keys)
    "marketplace_source_tokens": {"SELECT", "UPDATE"},
    # written through record_harvested_links only
    "marketplace_source_links": set(),
}


@pytest.mark.parametrize("table", TABLES)
def test_worker_privileges_are_what_a_scan_needs(connection: Connection, table: str) -> None:
    granted = {command for command in COMMANDS if _may(connection, WORKER_ROLE, table, command)}
    assert granted == WORKER_MAY[table]


def test_worker_columns_on_sources(connection: Connection) -> None:
    """Scan configuration and the sync's own columns; never a rename, a move or an id."""
    columns: dict[str, list[str]] = dict(
        connection.execute(
            text(
                "SELECT privilege_type, array_agg(column_name::text ORDER BY column_name) "
                "FROM information_schema.column_privileges WHERE table_name = :t "
                "AND grantee = :r GROUP BY 1"
            ),
            {"t": "marketplace_sources", "r": WORKER_ROLE},
        ).all()
    )
    assert columns == {
        "SELECT": [
            "branch_or_ref",
            "id",
            "last_error",
            "last_sync",
            "manual_map",
            "repo_url",
            "root_hint",
        ],
        "UPDATE": ["last_error", "last_sync"],
    }
    with_id = (
        "projects",
        "marketplace_sources",
        "marketplace_catalog_entries",
        "marketplace_scans",
    )
    for table in with_id:
        for command in ("INSERT", "UPDATE"):
            assert not connection.execute(
                text("SELECT has_column_privilege(:r, :t, 'id', :c)"),
                {"r": WORKER_ROLE, "t": f"public.{table}", "c": command},
            ).scalar_one(), (table, command)


def test_search_role_has_no_members(connection: Connection) -> None:
    """A member of skillmeat_search could SET ROLE to it and read every catalog entry
    (its policy is USING (true)): it must have none, nor log in or bypass RLS."""
    members = connection.execute(
        text(
            "SELECT array_agg(m.member::regrole::text) FROM pg_auth_members m "
            "WHERE m.roleid = CAST(:r AS regrole)"
        ),
        {"r": SEARCH_ROLE},
    ).scalar_one()
    assert members is None
    attrs = connection.execute(
        text(
            "SELECT rolsuper, rolbypassrls, rolcanlogin, rolinherit FROM pg_roles "
            "WHERE rolname = :r"
        ),
        {"r": SEARCH_ROLE},
    ).one()
    assert tuple(attrs) == (False, False, False, False)


def test_search_role_reads_only_what_search_needs(connection: Connection) -> None:
    columns: dict[str, list[str]] = dict(
        connection.execute(
            text(
                "SELECT table_name::text, array_agg(column_name::text ORDER BY column_name) "
                "FROM information_schema.column_privileges WHERE grantee = :r "
                "AND privilege_type = 'SELECT' GROUP BY 1"
            ),
            {"r": SEARCH_ROLE},
        ).all()
    )
    assert columns == {
        "marketplace_sources": ["id", "project_id"],
        "marketplace_catalog_entries": sorted(
            ["artifact_type", "excluded_at", "id", "name", "search_vector", "source_id", "status"]
        ),
    }
    for table in TABLES:
        for command in ("INSERT", "UPDATE", "DELETE"):
            assert not _may(connection, SEARCH_ROLE, table, command), (table, command)


def test_no_request_role_reads_a_ciphertext(connection: Connection) -> None:
    """Members may see that a token exists (source_id), never read it back."""
    readable = {
        (role, column): connection.execute(
            text(
                "SELECT has_column_privilege(:r, 'public.marketplace_source_tokens', :c, 'SELECT')"
            ),
            {"r": role, "c": column},
        ).scalar_one()
        for role in (APP_ROLE, "skillmeat_definer", HARVESTER_ROLE)
        for column in ("source_id", "key_id", "nonce", "ciphertext", "updated_at")
    }
    assert {key for key, may in readable.items() if may} == {
        (APP_ROLE, "source_id"),
        (HARVESTER_ROLE, "source_id"),
    }
    public = connection.execute(
        text(
            "SELECT count(*) FROM information_schema.column_privileges "
            "WHERE table_name = 'marketplace_source_tokens' AND grantee = 'PUBLIC'"
        )
    ).scalar_one()
    assert public == 0
