"""Through PgBouncer in transaction mode: concurrent tenants on a few shared server
connections get their own rows only, and no errors (requirement 4)."""

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from skillmeat.core.database import make_session_factory, tenant_scope
from skillmeat.core.models import ArtifactType
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.schemas.marketplace import DetectedArtifact
from tests.login_roles import MEMBER_POOL, login_role
from tests.pgbouncer import start_pgbouncer
from tests.rls_world import Tenant, add_tenant

THREADS = 8
ROUNDS = 4
SERVER_CONNECTIONS = 3


@pytest.fixture
def tenants(engine: Engine) -> Iterator[list[Tenant]]:
    suffix = uuid.uuid4().hex[:8]
    with engine.begin() as conn:
        made = [add_tenant(conn, f"pooler-{i}-{suffix}") for i in range(THREADS)]
    yield made
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM projects WHERE id = ANY(:ids)"), {"ids": [t.project for t in made]}
        )


def _scan(tenant: int, round_: int) -> list[DetectedArtifact]:
    return [
        DetectedArtifact(
            artifact_type=ArtifactType.SKILL,
            detected_path=f"skills/t{tenant}-{n}",
            upstream_url=f"https://github.com/t{tenant}/r/tree/r{round_}/skills/{n}",
            detected_version_sha=f"r{round_}",
            confidence_score=80,
        )
        for n in range(round_ + 2)
    ]


def test_concurrent_tenants_through_pgbouncer_see_only_their_rows(
    engine: Engine, database_url: URL, tenants: list[Tenant]
) -> None:
    errors: list[BaseException] = []
    leaks: list[str] = []
    pids: set[int] = set()
    with (
        login_role(engine, database_url, MEMBER_POOL) as login,
        start_pgbouncer(database_url, [login], pool_size=SERVER_CONNECTIONS) as bouncer,
    ):
        pooled = bouncer.engine(login, pool_size=THREADS)
        sessions = make_session_factory(pooled)
        start = threading.Barrier(THREADS)

        def run(i: int, tenant: Tenant) -> None:
            user = tenant.members["owner"]
            own_entries: set[uuid.UUID] = set()
            try:
                start.wait(timeout=30)
                for round_ in range(ROUNDS):
                    with sessions() as s:
                        with tenant_scope(s, user_id=user):
                            pids.add(s.execute(text("SELECT pg_backend_pid()")).scalar_one())
                            repo.sync_catalog(s, tenant.source, _scan(i, round_))
                        with tenant_scope(s, user_id=user):
                            projects = s.execute(text("SELECT id FROM projects")).scalars().all()
                            sources = repo.list_sources(s, limit=100).items
                            entries = repo.list_entries(s, tenant.source, limit=100).items
                            counts = repo.catalog_counts(s)
                        with tenant_scope(s, user_id=user):
                            marked = repo.mark_imported(s, [e.id for e in entries])
                    own_entries |= {e.id for e in entries}
                    if projects != [tenant.project]:
                        leaks.append(f"tenant {i} saw projects {projects}")
                    if [src.id for src in sources] != [tenant.source]:
                        leaks.append(f"tenant {i} saw sources {[src.id for src in sources]}")
                    foreign = [
                        e.detected_path
                        for e in entries
                        if e.source_id != tenant.source
                        or not e.detected_path.startswith((f"skills/t{i}-", "skills/x"))
                    ]
                    if foreign:
                        leaks.append(f"tenant {i} saw entries {foreign}")
                    if set(counts) != {tenant.source}:
                        leaks.append(f"tenant {i} counted sources {set(counts)}")
                    if not set(marked) <= own_entries:
                        leaks.append(f"tenant {i} marked {set(marked) - own_entries}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(tenants)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
        finally:
            pooled.dispose()

    assert not errors, errors
    assert not leaks, leaks
    assert 1 < len(pids) <= SERVER_CONNECTIONS, f"server connections used: {pids}"
    # What each tenant's catalog holds in the end, as the superuser sees it.
    with engine.connect() as conn:
        for i, tenant in enumerate(tenants):
            paths = set(
                conn.execute(
                    text(
                        "SELECT detected_path FROM marketplace_catalog_entries "
                        "WHERE source_id = :s AND status <> 'removed'"
                    ),
                    {"s": tenant.source},
                ).scalars()
            )
            assert paths == {a.detected_path for a in _scan(i, ROUNDS - 1)}


def test_check_at_head_is_not_fooled_by_a_request_s_leftovers(
    engine: Engine, database_url: URL
) -> None:
    """Behind PgBouncer a request leaves a temporary alembic_version and a session role
    on the shared server connection; the backend's start-up check still reads the real
    revision."""
    from skillmeat.core.database import check_at_head

    with (
        login_role(engine, database_url, MEMBER_POOL) as login,
        start_pgbouncer(database_url, [login], pool_size=1) as bouncer,
    ):
        pooled = bouncer.engine(login)
        try:
            with pooled.connect() as conn:
                conn.execute(text("SELECT set_config('role', 'skillmeat_app', false)"))
                conn.execute(
                    text(
                        "CREATE TEMP TABLE alembic_version (version_num varchar(32)); "
                        "INSERT INTO alembic_version VALUES ('deadbeef0000')"
                    )
                )
                conn.commit()
            assert check_at_head(bouncer.url(login)) is True
        finally:
            pooled.dispose()
