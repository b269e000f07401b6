"""Tenant isolation, exercised as skillmeat_app / skillmeat_admin (never as the superuser).

The matrix covers {no scope, stale scope, malformed id, non-member, viewer, editor,
owner, admin} x {SELECT, INSERT, UPDATE, DELETE, upsert, RETURNING} x {own, foreign}
project on all four tables. Each case runs in a savepoint that is rolled back, so
the role and identity it sets end with it.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from skillmeat.core.database import identity_settings
from skillmeat.core.database.identity import USER_SETTING
from tests.rls_world import Tenant, World, build_world

RANK = {"viewer": 1, "editor": 2, "owner": 3}
ADMIN_ONLY = 99
NOBODY = 100  # no request role may write the column (explicit ids: INSERT grants exclude id)
ACTORS = ["no_scope", "stale", "malformed", "outsider", "viewer", "editor", "owner", "admin"]
COMMANDS = ["select", "insert", "update", "delete", "upsert", "returning"]
TABLES = ["projects", "project_members", "marketplace_sources", "marketplace_catalog_entries"]


@pytest.fixture
def world(connection: Connection) -> World:
    return build_world(connection)


def act_as(conn: Connection, world: World, actor: str) -> None:
    """Set the role and identity for `actor`, transaction-locally, as the backend would."""
    if actor == "admin":
        conn.execute(text("SELECT set_config('role', 'skillmeat_admin', true)"))
        return
    conn.execute(text("SELECT set_config('role', 'skillmeat_app', true)"))
    identity = {
        "no_scope": None,
        "stale": "",  # what PostgreSQL returns after an earlier transaction's set_config
        "malformed": "not-a-uuid' OR true --",
        "outsider": str(world.outsider),
    }.get(actor, str(world.a.members.get(actor, "")))
    if identity is None:
        return
    try:
        settings = identity_settings(uuid.UUID(identity))
    except ValueError:  # stale or malformed: the id alone, as a buggy or hostile caller would
        settings = {USER_SETTING: identity}
    for name, value in settings.items():
        conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})


@dataclass(frozen=True)
class Op:
    sql: str
    params: dict[str, Any]
    required: int  # minimum rank in the target project (ADMIN_ONLY: admin role only)


def operation(table: str, command: str, t: Tenant) -> Op:
    new = uuid.uuid4()
    viewer = t.members["viewer"]
    if table == "projects":
        return {
            "select": Op("SELECT id FROM projects WHERE id = :p", {"p": t.project}, 1),
            "insert": Op("INSERT INTO projects (name) VALUES ('new')", {}, ADMIN_ONLY),
            "update": Op("UPDATE projects SET name = 'renamed' WHERE id = :p", {"p": t.project}, 3),
            "delete": Op("DELETE FROM projects WHERE id = :p", {"p": t.project}, 3),
            "upsert": Op(
                "INSERT INTO projects (id, name) VALUES (:p, 'x') "
                "ON CONFLICT (id) DO UPDATE SET name = 'upserted'",
                {"p": t.project},
                NOBODY,
            ),
            "returning": Op(
                "UPDATE projects SET name = 'renamed' WHERE id = :p RETURNING id",
                {"p": t.project},
                3,
            ),
        }[command]
    if table == "project_members":
        key = {"p": t.project, "u": viewer}
        return {
            "select": Op(
                "SELECT user_id FROM project_members WHERE project_id = :p AND user_id = :u",
                key,
                1,
            ),
            "insert": Op(
                "INSERT INTO project_members (project_id, user_id, role) VALUES (:p, :u, 'viewer')",
                {"p": t.project, "u": new},
                3,
            ),
            "update": Op(
                "UPDATE project_members SET role = 'editor' WHERE project_id = :p AND user_id = :u",
                key,
                3,
            ),
            "delete": Op(
                "DELETE FROM project_members WHERE project_id = :p AND user_id = :u", key, 3
            ),
            "upsert": Op(
                "INSERT INTO project_members (project_id, user_id, role) VALUES (:p, :u, 'editor') "
                "ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
                key,
                3,
            ),
            "returning": Op(
                "UPDATE project_members SET role = 'editor' "
                "WHERE project_id = :p AND user_id = :u RETURNING user_id",
                key,
                3,
            ),
        }[command]
    if table == "marketplace_sources":
        key = {"s": t.source}
        return {
            "select": Op("SELECT id FROM marketplace_sources WHERE id = :s", key, 1),
            "insert": Op(
                "INSERT INTO marketplace_sources (project_id, repo_url) "
                "VALUES (:p, 'https://github.com/new-owner/new-repo')",
                {"p": t.project},
                2,
            ),
            "update": Op(
                "UPDATE marketplace_sources SET branch_or_ref = 'dev' WHERE id = :s", key, 2
            ),
            "delete": Op("DELETE FROM marketplace_sources WHERE id = :s", key, 2),
            "upsert": Op(
                "INSERT INTO marketplace_sources (id, project_id, repo_url) "
                "VALUES (:s, :p, 'https://github.com/x/upserted') "
                "ON CONFLICT (id) DO UPDATE SET branch_or_ref = 'dev'",
                {"s": t.source, "p": t.project},
                NOBODY,
            ),
            "returning": Op(
                "UPDATE marketplace_sources SET branch_or_ref = 'dev' WHERE id = :s RETURNING id",
                key,
                2,
            ),
        }[command]
    key = {"e": t.entry}
    columns = (
        "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
        "upstream_url, detected_version_sha, confidence_score) "
    )
    return {
        "select": Op("SELECT id FROM marketplace_catalog_entries WHERE id = :e", key, 1),
        "insert": Op(
            columns + "VALUES (:s, 'agent', 'agents/new.md', 'https://github.com/x/y', 'a1', 50)",
            {"s": t.source},
            2,
        ),
        "update": Op(
            "UPDATE marketplace_catalog_entries SET status = 'updated' WHERE id = :e", key, 2
        ),
        "delete": Op("DELETE FROM marketplace_catalog_entries WHERE id = :e", key, 2),
        "upsert": Op(
            columns + "VALUES (:s, 'skill', 'skills/x', 'https://github.com/x/y', 'def', 50) "
            "ON CONFLICT ON CONSTRAINT uq_marketplace_catalog_entries_source_type_path "
            "DO UPDATE SET detected_version_sha = excluded.detected_version_sha",
            {"s": t.source},
            2,
        ),
        "returning": Op(
            "UPDATE marketplace_catalog_entries SET status = 'updated' WHERE id = :e RETURNING id",
            key,
            2,
        ),
    }[command]


def allowed(actor: str, target: str, required: int) -> bool:
    if required == NOBODY:
        return False
    if actor == "admin":
        return True
    rank = RANK.get(actor, 0) if target == "own" else 0
    return rank >= required


def sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


@pytest.mark.parametrize("target", ["own", "foreign"])
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("actor", ACTORS)
def test_isolation_matrix(
    connection: Connection, world: World, actor: str, table: str, command: str, target: str
) -> None:
    tenant = world.a if target == "own" else world.b
    op = operation(table, command, tenant)
    expect = allowed(actor, target, op.required)
    if (table, command, actor, target) == ("project_members", "delete", "viewer", "own"):
        expect = True  # the row is the viewer's own membership: a member may leave
    savepoint = connection.begin_nested()
    try:
        act_as(connection, world, actor)
        if command in ("insert", "upsert") and not expect:
            with pytest.raises(DBAPIError) as refused:
                connection.execute(text(op.sql), op.params)
            assert sqlstate(refused.value) == "42501", refused.value
            return
        result = connection.execute(text(op.sql), op.params)
        if command in ("select", "returning"):
            assert len(result.all()) == (1 if expect else 0)
        else:
            assert result.rowcount == (1 if expect else 0)
    finally:
        savepoint.rollback()


def scoped(conn: Connection, world: World, actor: str) -> Callable[[str, dict[str, Any]], Any]:
    act_as(conn, world, actor)
    return lambda sql, params: conn.execute(text(sql), params)


@pytest.fixture
def as_actor(connection: Connection, world: World) -> Iterator[Callable[[str], None]]:
    savepoints = []

    def enter(actor: str) -> None:
        savepoints.append(connection.begin_nested())
        act_as(connection, world, actor)

    yield enter
    for sp in reversed(savepoints):
        if sp.is_active:
            sp.rollback()


def expect_refused(connection: Connection, sql: str, params: dict[str, Any]) -> str:
    with pytest.raises(DBAPIError) as refused, connection.begin_nested():
        connection.execute(text(sql), params)
    assert sqlstate(refused.value) == "42501"
    diag = getattr(refused.value.orig, "diag", None)
    return str(getattr(diag, "message_primary", ""))


def test_editor_cannot_move_a_source_to_another_project(
    connection: Connection, world: World, as_actor: Callable[[str], None]
) -> None:
    # Make the A editor a viewer of B: it can see B but not write there.
    connection.execute(
        text("INSERT INTO project_members VALUES (:p, :u, 'viewer')"),
        {"p": world.b.project, "u": world.a.members["editor"]},
    )
    as_actor("editor")
    expect_refused(
        connection,
        "UPDATE marketplace_sources SET project_id = :b WHERE id = :s",
        {"b": world.b.project, "s": world.a.source},
    )
    # Without WHERE: the statement touches only rows it may write, and still may
    # not move them.
    expect_refused(
        connection, "UPDATE marketplace_sources SET project_id = :b", {"b": world.b.project}
    )


def test_editor_cannot_move_an_entry_to_a_foreign_source(
    connection: Connection, world: World, as_actor: Callable[[str], None]
) -> None:
    as_actor("editor")
    expect_refused(
        connection,
        "UPDATE marketplace_catalog_entries SET source_id = :b WHERE id = :e",
        {"b": world.b.source, "e": world.a.entry},
    )
    expect_refused(
        connection, "UPDATE marketplace_catalog_entries SET source_id = :b", {"b": world.b.source}
    )


def test_update_without_where_touches_only_own_rows(
    connection: Connection, world: World, as_actor: Callable[[str], None]
) -> None:
    as_actor("editor")
    changed = connection.execute(text("UPDATE marketplace_sources SET branch_or_ref = 'dev'"))
    assert changed.rowcount == 1
    connection.execute(text("SELECT set_config('role', 'none', true)"))
    refs: dict[uuid.UUID, str] = dict(
        connection.execute(
            text("SELECT id, branch_or_ref FROM marketplace_sources WHERE id IN (:a, :b)"),
            {"a": world.a.source, "b": world.b.source},
        ).all()
    )
    assert refs == {world.a.source: "dev", world.b.source: "HEAD"}


@pytest.mark.parametrize("actor", ["viewer", "editor"])
def test_member_cannot_raise_its_own_role(
    connection: Connection, world: World, as_actor: Callable[[str], None], actor: str
) -> None:
    me = world.a.members[actor]
    as_actor(actor)
    raised = connection.execute(
        text("UPDATE project_members SET role = 'owner' WHERE user_id = :me"), {"me": me}
    )
    assert raised.rowcount == 0
    expect_refused(
        connection,
        "INSERT INTO project_members VALUES (:p, :me, 'owner') "
        "ON CONFLICT (project_id, user_id) DO UPDATE SET role = 'owner'",
        {"p": world.a.project, "me": me},
    )


def test_owner_cannot_add_itself_to_another_project_nor_change_its_own_role(
    connection: Connection, world: World, as_actor: Callable[[str], None]
) -> None:
    me = world.a.members["owner"]
    as_actor("owner")
    for project in (world.a.project, world.b.project):
        # Refused by policy (42501) before the primary key could say "already a member".
        expect_refused(
            connection,
            "INSERT INTO project_members VALUES (:p, :me, 'owner')",
            {"p": project, "me": me},
        )
    demoted = connection.execute(
        text("UPDATE project_members SET role = 'viewer' WHERE user_id = :me"), {"me": me}
    )
    assert demoted.rowcount == 0


def test_outsider_cannot_add_itself_to_a_project(
    connection: Connection, world: World, as_actor: Callable[[str], None]
) -> None:
    as_actor("outsider")
    expect_refused(
        connection,
        "INSERT INTO project_members VALUES (:p, :me, 'viewer')",
        {"p": world.a.project, "me": world.outsider},
    )


def test_foreign_key_probing_gets_the_same_refusal(
    connection: Connection, world: World, as_actor: Callable[[str], None]
) -> None:
    as_actor("editor")
    insert = (
        "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
        "upstream_url, detected_version_sha, confidence_score) "
        "VALUES (:s, 'agent', 'agents/probe.md', 'https://github.com/x/y', 'a1', 50)"
    )
    existing = expect_refused(connection, insert, {"s": world.b.source})
    missing = expect_refused(connection, insert, {"s": uuid.uuid4()})
    assert existing == missing
    source_insert = (
        "INSERT INTO marketplace_sources (project_id, repo_url) "
        "VALUES (:p, 'https://github.com/probe/probe')"
    )
    assert expect_refused(connection, source_insert, {"p": world.b.project}) == expect_refused(
        connection, source_insert, {"p": uuid.uuid4()}
    )


@pytest.mark.parametrize(
    "setting",
    ["skillmeat.is_admin", "skillmeat.admin", "skillmeat.role", "request.jwt.claims"],
)
def test_other_settings_grant_nothing(
    connection: Connection, world: World, as_actor: Callable[[str], None], setting: str
) -> None:
    as_actor("outsider")
    connection.execute(text("SELECT set_config(:s, 'true', true)"), {"s": setting})
    for table in TABLES:
        assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0


@pytest.mark.parametrize(
    "identity",
    ["", " ", "null", "00000000-0000-0000-0000-00000000000g", "{}", "1", "x" * 200],
)
def test_malformed_identity_reads_nothing_without_error(
    connection: Connection, world: World, identity: str
) -> None:
    with connection.begin_nested() as savepoint:
        connection.execute(text("SELECT set_config('role', 'skillmeat_app', true)"))
        connection.execute(
            text("SELECT set_config('skillmeat.user_id', :u, true)"), {"u": identity}
        )
        for table in TABLES:
            assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
        savepoint.rollback()


def test_member_sees_exactly_its_projects(
    connection: Connection, world: World, as_actor: Callable[[str], None]
) -> None:
    as_actor("viewer")
    counts = {
        table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        for table in TABLES
    }
    assert counts == {
        "projects": 1,
        "project_members": 3,
        "marketplace_sources": 1,
        "marketplace_catalog_entries": 1,
    }
