"""The library on asyncio: make_async_engine, async_tenant_scope, run_sync (COPY included)."""

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from skillmeat.core.database import async_tenant_scope, make_async_engine
from skillmeat.core.errors import NotFound
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.schemas.marketplace import DetectedArtifact, SourceCreate
from tests.rls_world import World

ARTIFACTS = [
    DetectedArtifact(
        artifact_type="skill",
        detected_path=f"skills/async-{i}",
        upstream_url=f"https://github.com/acme/async/tree/main/skills/async-{i}",
        detected_version_sha=f"sha{i}",
        confidence_score=80,
    )
    for i in range(300)
]


def test_repositories_run_on_an_async_session(database_url: URL, committed_world: World) -> None:
    a, b = committed_world.a, committed_world.b

    async def main() -> tuple[int, int, list[uuid.UUID], bool]:
        engine = make_async_engine(database_url, pool_size=1, max_overflow=0)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        try:
            async with (
                sessions() as session,
                async_tenant_scope(session, user_id=a.members["editor"]),
            ):
                source = await session.run_sync(
                    repo.create_source,
                    SourceCreate(project_id=a.project, repo_url="https://github.com/acme/async"),
                )
                result = await session.run_sync(repo.sync_catalog, source.id, ARTIFACTS)
            async with (
                sessions() as session,
                async_tenant_scope(session, user_id=a.members["viewer"]),
            ):
                page = await session.run_sync(repo.list_entries, source.id, limit=500)
                visible = await session.run_sync(
                    lambda s: list(s.execute(text("SELECT id FROM projects")).scalars())
                )
            refused = False
            async with sessions() as session:
                try:
                    async with async_tenant_scope(session, user_id=b.members["viewer"]):
                        await session.run_sync(repo.sync_catalog, source.id, ARTIFACTS[:1])
                except NotFound:  # another tenant's source: invisible
                    refused = True
            return result.inserted, len(page.items), visible, refused
        finally:
            await engine.dispose()

    inserted, listed, visible, refused = asyncio.run(main())
    assert (inserted, listed) == (300, 300)
    assert visible == [a.project]
    assert refused


def test_async_engine_discards_a_request_s_leftovers(database_url: URL) -> None:
    async def main() -> tuple[int, int, object, object]:
        engine = make_async_engine(database_url, pool_size=1, max_overflow=0)
        try:
            async with engine.connect() as conn:
                pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                await conn.execute(text("CREATE TEMP TABLE async_leftover (x int)"))
                await conn.execute(text("SET SESSION work_mem = '77MB'"))
                await conn.commit()
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            "SELECT pg_backend_pid(), to_regclass('pg_temp.async_leftover'), "
                            "current_setting('work_mem')"
                        )
                    )
                ).one()
            return pid, row[0], row[1], row[2]
        finally:
            await engine.dispose()

    pid, again, leftover, work_mem = asyncio.run(main())
    assert pid == again, "the test must reuse the pooled connection"
    assert leftover is None and work_mem != "77MB"


def test_async_scope_rolls_back_on_error(database_url: URL, committed_world: World) -> None:
    a = committed_world.a

    async def main() -> str:
        engine = make_async_engine(database_url)
        try:
            async with AsyncSession(engine) as session:
                with pytest.raises(RuntimeError):
                    async with async_tenant_scope(session, user_id=a.members["owner"]):
                        await session.execute(
                            text("UPDATE projects SET name = 'async-renamed' WHERE id = :p"),
                            {"p": a.project},
                        )
                        raise RuntimeError("the endpoint failed")
                async with async_tenant_scope(session, user_id=a.members["owner"]):
                    name = (
                        await session.execute(
                            text("SELECT name FROM projects WHERE id = :p"), {"p": a.project}
                        )
                    ).scalar_one()
            return str(name)
        finally:
            await engine.dispose()

    assert asyncio.run(main()) != "async-renamed"
