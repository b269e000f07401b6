"""tenant_scope: the library's way in, and what it leaves behind on pooled connections."""

import functools
import uuid

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from skillmeat.core.database import (
    DatabaseSettings,
    make_engine,
    make_session_factory,
    tenant_scope,
)
from skillmeat.core.database import settings as settings_module
from skillmeat.core.errors import ConfigurationError, PermissionDenied, ScopeError
from tests.login_roles import ADMIN_POOL, MEMBER_POOL, login_role
from tests.rls_world import World, build_world

NEW_SOURCE = (
    "INSERT INTO marketplace_sources (project_id, repo_url) "
    "VALUES (:p, 'https://github.com/scope/test') RETURNING id"
)


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


def _identity(session: Session) -> tuple[str, str | None]:
    role, user = session.execute(
        text("SELECT current_setting('role'), current_setting('skillmeat.user_id', true)")
    ).one()
    return role, user


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"user_id": uuid.uuid4(), "admin": True}, {"user_id": str(uuid.uuid4())}],
    ids=["neither", "both", "string-id"],
)
def test_scope_needs_exactly_one_identity(session: Session, kwargs: dict[str, object]) -> None:
    with pytest.raises(ScopeError), tenant_scope(session, **kwargs):  # type: ignore[arg-type]
        pass


def test_member_scope_sees_own_project_only(session: Session, world: World) -> None:
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        ids = session.execute(text("SELECT id FROM projects")).scalars().all()
    assert ids == [world.a.project]


def test_admin_scope_sees_every_project(session: Session, world: World) -> None:
    with tenant_scope(session, admin=True):
        ids = set(session.execute(text("SELECT id FROM projects")).scalars())
    assert {world.a.project, world.b.project} <= ids


def test_scope_commits_on_success_and_restores_identity(session: Session, world: World) -> None:
    before = _identity(session)
    with tenant_scope(session, user_id=world.a.members["editor"]):
        assert _identity(session) == ("skillmeat_app", str(world.a.members["editor"]))
        created = session.execute(text(NEW_SOURCE), {"p": world.a.project}).scalar_one()
    # A custom setting cannot be unset once defined: '' is "nobody", as absent is.
    assert _identity(session) == (before[0], before[1] or "")
    found = session.execute(
        text("SELECT count(*) FROM marketplace_sources WHERE id = :s"), {"s": created}
    ).scalar_one()
    assert found == 1


def test_refusal_is_a_library_error_and_rolls_back(session: Session, world: World) -> None:
    # The library's sentence (what, and the role needed), never PostgreSQL's policy text.
    with (
        pytest.raises(PermissionDenied, match="make that change to a source") as refused,
        tenant_scope(session, user_id=world.a.members["editor"]),
    ):
        session.execute(
            text("UPDATE marketplace_sources SET branch_or_ref = 'dev' WHERE id = :s"),
            {"s": world.a.source},
        )
        session.execute(text(NEW_SOURCE), {"p": world.b.project})
    assert "row-level security" not in str(refused.value)
    assert "editor or owner role required" in str(refused.value)
    assert _identity(session)[0] == "none"
    ref = session.execute(
        text("SELECT branch_or_ref FROM marketplace_sources WHERE id = :s"), {"s": world.a.source}
    ).scalar_one()
    assert ref == "HEAD"


def test_scopes_do_not_nest(session: Session, world: World) -> None:
    with tenant_scope(session, admin=True), pytest.raises(ScopeError):  # noqa: SIM117
        with tenant_scope(session, user_id=world.a.members["viewer"]):
            pass


# --- Pooled connections: committed data, real transactions, a pool of one.


def test_pool_of_one_alternating_users_never_leaks(
    database_url: URL, committed_world: World
) -> None:
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    sessions = make_session_factory(engine)
    try:
        pids = set()
        for turn in range(6):
            tenant = committed_world.a if turn % 2 == 0 else committed_world.b
            with sessions() as session:
                with tenant_scope(session, user_id=tenant.members["viewer"]):
                    pids.add(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
                    seen = session.execute(text("SELECT id FROM projects")).scalars().all()
                assert seen == [tenant.project]
                # The next transaction on this connection carries nothing over.
                role, user = _identity(session)
                assert (role, user or "") == ("none", "")
                session.rollback()
            with sessions() as session, session.begin():
                # A stale scope: the role without an identity, as a buggy caller would.
                session.execute(text("SET LOCAL ROLE skillmeat_app"))
                leaked = session.execute(text("SELECT count(*) FROM projects")).scalar_one()
                assert leaked == 0
        assert len(pids) == 1, "the test must reuse one pooled connection"
    finally:
        engine.dispose()


def test_member_pool_login_role_touches_nothing_without_a_scope_and_cannot_be_admin(
    database_url: URL, engine: Engine, committed_world: World
) -> None:
    """The member pool's wiring from docs/security.md: NOINHERIT member of skillmeat_app only."""
    with login_role(engine, database_url, MEMBER_POOL) as url:
        member_pool = make_engine(url, poolclass=NullPool)
        try:
            with member_pool.connect() as conn, pytest.raises(DBAPIError) as refused:
                conn.execute(text("SELECT count(*) FROM projects"))
            assert getattr(refused.value.orig, "sqlstate", None) == "42501"
            with member_pool.connect() as conn, pytest.raises(DBAPIError) as refused:
                conn.execute(text("SET ROLE skillmeat_admin"))
            assert getattr(refused.value.orig, "sqlstate", None) == "42501"
            with make_session_factory(member_pool)() as session:
                with tenant_scope(session, user_id=committed_world.b.members["owner"]):
                    seen = session.execute(text("SELECT id FROM projects")).scalars().all()
                assert seen == [committed_world.b.project]
                with (
                    pytest.raises(ScopeError, match="admin pool"),
                    tenant_scope(session, admin=True),
                ):
                    pass
                assert not session.in_transaction()
        finally:
            member_pool.dispose()


def test_admin_pool_login_role_serves_admin_scopes_only(
    database_url: URL, engine: Engine, committed_world: World
) -> None:
    with login_role(engine, database_url, ADMIN_POOL) as url:
        admin_pool = make_engine(url, poolclass=NullPool)
        try:
            with make_session_factory(admin_pool)() as session:
                with tenant_scope(session, admin=True):
                    ids = set(session.execute(text("SELECT id FROM projects")).scalars())
                assert {committed_world.a.project, committed_world.b.project} <= ids
                with (
                    pytest.raises(ScopeError, match="member pool"),
                    tenant_scope(session, user_id=committed_world.a.members["owner"]),
                ):
                    pass
        finally:
            admin_pool.dispose()


def test_scope_sets_its_timeouts_and_search_path(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKILLMEAT_STATEMENT_TIMEOUT_MS", "1234")
    monkeypatch.setenv("SKILLMEAT_LOCK_TIMEOUT_MS", "567")
    session.execute(text("SET LOCAL search_path = pg_temp, public"))
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        inside = session.execute(
            text(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                "current_setting('search_path')"
            )
        ).one()
    assert tuple(inside) == ("1234ms", "567ms", "pg_catalog, public, pg_temp")
    # A nested scope puts back what the caller had.
    assert session.execute(text("SELECT current_setting('search_path')")).scalar_one() == (
        "pg_temp, public"
    )


def test_scope_parses_the_settings_once_per_environment(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings are read once per distinct SKILLMEAT_* environment, and a changed
    environment is seen by the next scope."""
    built: list[DatabaseSettings] = []
    original = settings_module._settings_for.__wrapped__

    def counting(env: tuple[tuple[str, str], ...]) -> DatabaseSettings:
        built.append(original(env))
        return built[-1]

    monkeypatch.setattr(settings_module, "_settings_for", functools.lru_cache(maxsize=8)(counting))
    timeouts = "SELECT current_setting('statement_timeout')"
    for value in ("4321", "4321", "4321", "999", "4321"):
        monkeypatch.setenv("SKILLMEAT_STATEMENT_TIMEOUT_MS", value)
        with tenant_scope(session, user_id=world.a.members["viewer"]):
            assert session.execute(text(timeouts)).scalar_one() == f"{value}ms"
    assert len(built) == 2


def test_engine_refuses_prepared_statements_with_the_check_in_reset(database_url: URL) -> None:
    for threshold in (5, 0):  # 0: prepare every statement
        with pytest.raises(ConfigurationError, match="prepare_threshold"):
            make_engine(database_url, connect_args={"prepare_threshold": threshold})
        with pytest.raises(ConfigurationError, match="prepare_threshold"):
            make_engine(
                database_url,
                connect_args={"prepare_threshold": threshold},
                pool_reset_on_return="rollback",
            )
    with pytest.raises(ConfigurationError, match="pool_reset_on_return"):
        make_engine(
            database_url, connect_args={"prepare_threshold": 5}, allow_prepared_statements=True
        )
    # an explicit opt-out, for measurements (the benchmarks compare both)
    make_engine(
        database_url,
        connect_args={"prepare_threshold": 5},
        pool_reset_on_return="rollback",
        allow_prepared_statements=True,
    ).dispose()


def test_scope_refuses_an_autocommit_connection(database_url: URL, world: World) -> None:
    engine = make_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with (
            make_session_factory(engine)() as session,
            pytest.raises(ScopeError, match="AUTOCOMMIT"),
            tenant_scope(session, admin=True),
        ):
            pass
    finally:
        engine.dispose()


def test_a_session_kept_on_one_connection_restores_settings_in_its_next_scope(
    database_url: URL, committed_world: World
) -> None:
    """A request's session-level setting on a connection that was not checked in
    between two scopes is undone for the next scope, which may be another user's."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn, Session(bind=conn) as session:
            with tenant_scope(session, user_id=committed_world.a.members["owner"]):
                session.execute(text("SELECT set_config('row_security', 'off', false)"))
                session.execute(text("SELECT set_config('statement_timeout', '1', false)"))
            with tenant_scope(session, user_id=committed_world.b.members["viewer"]):
                seen = session.execute(text("SELECT id FROM projects")).scalars().all()
                row_security = session.execute(
                    text("SELECT current_setting('row_security')")
                ).scalar_one()
        assert (seen, row_security) == ([committed_world.b.project], "on")
    finally:
        engine.dispose()


def test_check_in_reset_leaves_a_clean_session(database_url: URL, committed_world: World) -> None:
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            conn.execute(text("CREATE TEMP TABLE leftover (x int)"))
            conn.execute(text("PREPARE leftover_stmt AS SELECT 1"))
            conn.execute(text("SET SESSION work_mem = '77MB'"))
            conn.execute(text("SELECT pg_advisory_lock(4242)"))
            conn.execute(text("LISTEN leftover_channel"))
            conn.commit()
        with engine.connect() as conn:
            state = conn.execute(
                text(
                    "SELECT pg_backend_pid(), to_regclass('pg_temp.leftover'), "
                    "(SELECT count(*) FROM pg_prepared_statements), current_setting('work_mem'), "
                    "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    " AND pid = pg_backend_pid()), "
                    "(SELECT count(*) FROM pg_listening_channels())"
                )
            ).one()
        assert state[0] == pid, "the test must reuse the pooled connection"
        assert (state[1], state[2], state[4], state[5]) == (None, 0, 0, 0)
        assert state[3] != "77MB"
    finally:
        engine.dispose()


def test_bench_requests_prints_the_three_engines(
    pg_server_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    from skillmeat import cli

    argv = ["--url", pg_server_url.render_as_string(hide_password=False), "bench", "requests"]
    assert cli.main([*argv, "--rounds", "20", "--warmup", "2"]) == 0
    out = capsys.readouterr().out
    for engine in ("prepared on 5th use", "unprepared, rollback", "library: unprepared, DISCARD"):
        assert engine in out
    assert "20 interleaved requests per engine" in out


def test_engine_pool_and_connection_come_from_settings(
    database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKILLMEAT_POOL_SIZE", "7")
    monkeypatch.setenv("SKILLMEAT_MAX_OVERFLOW", "3")
    monkeypatch.setenv("SKILLMEAT_APPLICATION_NAME", "skillmeat-test-app")
    engine = make_engine(database_url)
    try:
        assert (engine.pool.size(), engine.pool._max_overflow) == (7, 3)  # type: ignore[attr-defined]
        with engine.connect() as conn:
            name = conn.execute(text("SELECT current_setting('application_name')")).scalar_one()
        assert name == "skillmeat-test-app"
    finally:
        engine.dispose()


def test_bench_scans_prints_claims_and_workers(
    pg_server_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    from skillmeat import cli

    argv = ["--url", pg_server_url.render_as_string(hide_password=False), "bench", "scans"]
    sizes = ["--history-small", "10", "--history-large", "200", "--claims", "5", "--warmup", "1"]
    assert cli.main([*argv, *sizes, "--queued", "40", "--threads", "4"]) == 0
    out = capsys.readouterr().out
    assert "claim_scans(limit=1) medians over 5 claims each" in out
    assert "4 worker threads over 40 queued scans" in out
    workers = out.splitlines()[-1].split()
    assert workers[:2] == ["4", "40"] and workers[-2:] == ["0", "0"]  # no duplicates, none lost
