"""`skillmeat-db demo`: the library end to end on the configured database.

Two projects, three users, two real catalogs (bundled snapshots of public
repositories, each synced at an old and a new commit), what each user sees, and
a foreign write being refused. The demo's projects are deleted afterwards unless
--keep is given.
"""

import argparse
import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from skillmeat.core.database import (
    DatabaseSettings,
    make_engine,
    make_session_factory,
    tenant_scope,
)
from skillmeat.core.database.provision import database_exists
from skillmeat.core.errors import NotFound
from skillmeat.core.models import CatalogStatus
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.repositories import scans
from skillmeat.core.schemas.marketplace import SourceCreate
from skillmeat.core.schemas.scans import ClaimedScan, ScanStats
from skillmeat.data import load_snapshot, snapshot_pairs
from skillmeat.tools import CommandError


@dataclass
class DemoProject:
    name: str
    repo: str
    id: uuid.UUID | None = None
    source_id: uuid.UUID | None = None


def _members(session: Session, project: uuid.UUID, roles: dict[str, uuid.UUID]) -> None:
    for role, user in roles.items():
        session.execute(
            text("INSERT INTO project_members (project_id, user_id, role) VALUES (:p, :u, :r)"),
            {"p": project, "u": user, "r": role},
        )


def run(args: argparse.Namespace) -> None:
    url = make_url(args.url or DatabaseSettings().database_url)
    if not database_exists(url):
        raise CommandError(f"database {url.database!r} does not exist: run `skillmeat-db upgrade`")
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    pairs = snapshot_pairs()
    projects = [
        DemoProject("demo: skills team", "anthropics/skills"),
        DemoProject("demo: claude-code team", "anthropics/claude-code"),
    ]
    users = {"alice": uuid.uuid4(), "bob": uuid.uuid4(), "carol": uuid.uuid4()}
    roles = [
        {"owner": users["alice"], "viewer": users["carol"]},
        {"editor": users["bob"], "viewer": users["carol"]},
    ]
    try:
        with sessions() as session, tenant_scope(session, admin=True):
            for project, members in zip(projects, roles, strict=True):
                project.id = session.execute(
                    text("INSERT INTO projects (name) VALUES (:n) RETURNING id"),
                    {"n": project.name},
                ).scalar_one()
                _members(session, project.id, members)
        print("1. As admin: two projects; alice owns the first, bob edits the second,")
        print("   carol views both.\n")

        writers = [users["alice"], users["bob"]]
        for project, writer in zip(projects, writers, strict=True):
            assert project.id is not None
            old_file, new_file = pairs[project.repo]
            with sessions() as session, tenant_scope(session, user_id=writer):
                source = repo.create_source(
                    session,
                    SourceCreate(
                        project_id=project.id, repo_url=f"git@github.com:{project.repo}.git"
                    ),
                )
                project.source_id = source.id
                first = repo.sync_catalog(session, source.id, load_snapshot(old_file).artifacts)
            with sessions() as session, tenant_scope(session, user_id=writer):
                page = repo.list_entries(session, source.id, limit=500)
                repo.mark_imported(session, [entry.id for entry in page.items])
            with sessions() as session, tenant_scope(session, user_id=writer):
                second = repo.sync_catalog(session, source.id, load_snapshot(new_file).artifacts)
            print(f"2. {project.repo}: registered as {source.repo_url}")
            print(f"   old commit: {first.inserted} artifacts, all imported;")
            print(
                f"   new commit: {second.new} new, {second.updated} updated, "
                f"{second.removed} removed, {second.unchanged} unchanged\n"
            )

        print("3. What each user sees (row-level security, no WHERE clause in the query):\n")
        print(f"   {'user':<7}{'projects':>9}{'sources':>9}{'entries':>9}{'new':>6}{'updated':>9}")
        for name, user in users.items():
            with sessions() as session, tenant_scope(session, user_id=user):
                counts = repo.catalog_counts(session)
                seen_projects = session.execute(text("SELECT count(*) FROM projects")).scalar_one()
            total = sum(n for per in counts.values() for n in per.values())
            by_status = {
                status: sum(
                    n for per in counts.values() for (_, s), n in per.items() if s == status
                )
                for status in (CatalogStatus.NEW, CatalogStatus.UPDATED)
            }
            print(
                f"   {name:<7}{seen_projects:>9}{len(counts):>9}{total:>9}"
                f"{by_status[CatalogStatus.NEW]:>6}{by_status[CatalogStatus.UPDATED]:>9}"
            )

        print("\n4. bob (editor of the second project) syncs into alice's source:")
        target = projects[0].source_id
        assert target is not None
        try:
            with sessions() as session, tenant_scope(session, user_id=users["bob"]):
                repo.sync_catalog(session, target, [])
        except NotFound as refused:  # another tenant's source: invisible, as if absent
            print(f"   refused: {refused}")
        else:  # pragma: no cover - would be a security bug
            raise CommandError("a foreign write was NOT refused: check the RLS policies")

        _scan_lifecycle(sessions, projects[1], users, pairs)
    finally:
        if not args.keep:
            with sessions() as session, tenant_scope(session, admin=True):
                ids = [p.id for p in projects if p.id is not None]
                for project_id in ids:
                    session.execute(text("DELETE FROM projects WHERE id = :p"), {"p": project_id})
            print("\nThe demo's projects were deleted (run with --keep to keep them).")
        engine.dispose()


def _scan_lifecycle(
    sessions: sessionmaker[Session],
    project: DemoProject,
    users: dict[str, uuid.UUID],
    pairs: dict[str, tuple[Path, Path]],
) -> None:
    """Step 5: a rescan as a background job: requested, claimed, completed, listed."""
    source_id = project.source_id
    assert source_id is not None
    print("\n5. A rescan as a background job (docs/scans.md):")
    with sessions() as session, tenant_scope(session, user_id=users["bob"]):
        requested = scans.request_scan(session, source_id)
    print(f"   requested by bob:         scan {str(requested.id)[:8]} {requested.state}")
    claimed = _claim(sessions, requested.id)
    print(
        f"   claimed by a worker:      attempt {claimed.attempt}, lease until "
        f"{claimed.lease_expires_at:%H:%M:%S} UTC, config {claimed.repo_url} "
        f"@ {claimed.branch_or_ref}"
    )
    started = time.perf_counter()
    artifacts = load_snapshot(pairs[project.repo][1]).artifacts
    with sessions() as session, tenant_scope(session, worker=True):
        result = scans.complete_scan(
            session,
            claimed.scan_id,
            lease_token=claimed.lease_token,
            artifacts=artifacts,
            commit_sha="demo",
            stats=ScanStats(
                duration_ms=int((time.perf_counter() - started) * 1000),
                files_scanned=len(artifacts),
                bytes_fetched=0,
            ),
        )
    print(
        f"   completed by the worker:  {result.new} new, {result.updated} updated, "
        f"{result.removed} removed, {result.unchanged} unchanged (one transaction)"
    )
    with sessions() as session, tenant_scope(session, user_id=users["carol"]):
        [latest, *_] = scans.list_scans(session, source_id, limit=5).items
        card = repo.get_source(session, source_id)
    print(
        f"   listed for carol:         scan {str(latest.id)[:8]} {latest.state} by "
        f"{latest.worker}, {latest.files_scanned} files, confidence deciles "
        f"{latest.confidence_histogram}"
    )
    print(f"   the source card reads:    scan_state={card.scan_state}")


def _claim(sessions: sessionmaker[Session], scan_id: uuid.UUID) -> ClaimedScan:
    """Claim the demo's scan; scans of other sources claimed meanwhile are put back."""
    for _ in range(100):
        with sessions() as session, tenant_scope(session, worker=True):
            claimed = scans.claim_scans(session, worker="demo-worker", limit=10)
            mine = [c for c in claimed if c.scan_id == scan_id]
            for other in claimed:
                if other.scan_id != scan_id:
                    scans.fail_scan(
                        session,
                        other.scan_id,
                        lease_token=other.lease_token,
                        error="put back by skillmeat-db demo",
                        retry_at=dt.datetime.now(dt.UTC),
                    )
        if mine:
            return mine[0]
        time.sleep(0.1)
    raise CommandError(f"scan {scan_id} could not be claimed (is it due?)")
