"""Repository functions, called as the application role through tenant_scope.

The connecting superuser only seeds values no repository function sets (memberships,
last_sync, chosen detected_at values); every read under test runs under row-level
security, and expected results come from independent Python over the seeded rows.
"""

import base64
import datetime as dt
import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from skillmeat.core.database import tenant_scope
from skillmeat.core.errors import (
    ConstraintViolation,
    DuplicateSource,
    InvalidValue,
    NotFound,
    PermissionDenied,
    ScopeError,
    ValidationFailed,
)
from skillmeat.core.models import ArtifactType, CatalogStatus, MarketplaceCatalogEntry
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.repositories.marketplace import Page
from skillmeat.core.repositories.query_paths import EntrySort
from skillmeat.core.schemas.marketplace import (
    CatalogEntryRead,
    DetectedArtifact,
    SourceCreate,
    SourceRead,
    SourceUpdate,
)
from tests.rls_world import Tenant, World, build_world

T = TypeVar("T")
BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DESCENDING = {EntrySort.PATH: False, EntrySort.CONFIDENCE: True, EntrySort.DETECTED_AT: True}


# --- helpers ------------------------------------------------------------------------


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


@contextmanager
def as_user(session: Session, user: uuid.UUID) -> Iterator[Session]:
    with tenant_scope(session, user_id=user) as scoped:
        yield scoped


@contextmanager
def refused(field_name: str, *mentions: str) -> Iterator[None]:
    """Expect ValidationFailed naming `field_name` and mentioning each of `mentions`."""
    with pytest.raises(ValidationFailed) as info:
        yield
    assert info.value.field == field_name
    for mention in mentions:
        assert mention in str(info.value)


def add_member(session: Session, project: uuid.UUID, user: uuid.UUID, role: str) -> None:
    """As the superuser, outside any scope: memberships are not what is under test."""
    session.execute(
        text("INSERT INTO project_members (project_id, user_id, role) VALUES (:p, :u, :r)"),
        {"p": project, "u": user, "r": role},
    )


def set_last_sync(session: Session, values: dict[uuid.UUID, dt.datetime | None]) -> None:
    """As the superuser: no repository function sets last_sync to a chosen value."""
    for source_id, when in values.items():
        session.execute(
            text("UPDATE marketplace_sources SET last_sync = :w WHERE id = :s"),
            {"w": when, "s": source_id},
        )


def create(session: Session, project: uuid.UUID, repo_url: str, **extra: Any) -> SourceRead:
    return repo.create_source(session, SourceCreate(project_id=project, repo_url=repo_url, **extra))


def drain(fetch: Callable[[str | None], Page[T]], limit: int, cursor: str | None = None) -> list[T]:
    """Every row from `cursor` on, checking that only the last page is short."""
    rows: list[T] = []
    for _ in range(1000):
        page = fetch(cursor)
        rows.extend(page.items)
        if page.next_cursor is None:
            assert len(page.items) <= limit
            return rows
        assert len(page.items) == limit
        cursor = page.next_cursor
    raise AssertionError("pagination did not end")


def ids(rows: Sequence[CatalogEntryRead | SourceRead]) -> list[uuid.UUID]:
    return [row.id for row in rows]


def all_entries(
    session: Session, source_id: uuid.UUID, *, limit: int = 4, **options: Any
) -> list[CatalogEntryRead]:
    return drain(
        lambda c: repo.list_entries(session, source_id, limit=limit, cursor=c, **options), limit
    )


def all_sources(
    session: Session, project_id: uuid.UUID | None = None, *, limit: int = 2
) -> list[SourceRead]:
    return drain(
        lambda c: repo.list_sources(session, project_id=project_id, limit=limit, cursor=c), limit
    )


# --- catalog entries with chosen sort keys ------------------------------------------


@dataclass(frozen=True)
class Spec:
    artifact_type: ArtifactType
    detected_path: str
    confidence_score: float
    detected_at: dt.datetime
    status: CatalogStatus = CatalogStatus.NEW
    id: uuid.UUID | None = None  # chosen ids are inserted as the superuser (grants exclude id)


def insert_entries(
    session: Session, source_id: uuid.UUID, specs: Sequence[Spec]
) -> list[CatalogEntryRead]:
    """Insert in the current scope (sync_catalog stamps one detected_at on every row).

    Rows with a chosen id are inserted as the connecting superuser: no request role may
    write an id.
    """
    chosen = any(s.id is not None for s in specs)
    if chosen:
        role = session.execute(text("SELECT current_setting('role')")).scalar_one()
        session.execute(text("SELECT set_config('role', 'none', true)"))
    rows = session.scalars(
        insert(MarketplaceCatalogEntry).returning(
            MarketplaceCatalogEntry, sort_by_parameter_order=True
        ),
        [
            {
                **({"id": s.id} if chosen else {}),
                "source_id": source_id,
                "artifact_type": s.artifact_type,
                "detected_path": s.detected_path,
                "upstream_url": f"https://github.com/o/r/tree/main/{s.detected_path}",
                "detected_version_sha": "abc123",
                "confidence_score": s.confidence_score,
                "detected_at": s.detected_at,
                "status": s.status,
            }
            for s in specs
        ],
    ).all()
    if chosen:
        session.execute(text("SELECT set_config('role', :r, true)"), {"r": role})
    return [CatalogEntryRead.model_validate(row) for row in rows]


def catalog_specs() -> list[Spec]:
    """24 entries with ties on every sort key: a path under several types, repeated
    confidence scores, repeated detected_at values."""
    scores = (55.5, 90.0, 12.25, 90.0, 100.0, 0.0)
    kinds = (ArtifactType.SKILL, ArtifactType.AGENT, ArtifactType.MCP)
    statuses = tuple(CatalogStatus)
    return [
        Spec(
            kind,
            f"skills/p{n:02d}",
            scores[k % len(scores)],
            BASE + dt.timedelta(minutes=k % 5),
            statuses[k % len(statuses)],
        )
        for k, (n, kind) in enumerate(itertools.product(range(9), kinds))
        if k % 9 != 8
    ]


@dataclass(frozen=True)
class Catalog:
    world: World
    source: uuid.UUID
    rows: list[CatalogEntryRead]

    @property
    def viewer(self) -> uuid.UUID:
        return self.world.a.members["viewer"]

    @property
    def editor(self) -> uuid.UUID:
        return self.world.a.members["editor"]


@pytest.fixture
def catalog(session: Session, world: World) -> Catalog:
    """A fresh source of tenant A holding exactly the catalog_specs() entries."""
    with as_user(session, world.a.members["editor"]):
        source = create(session, world.a.project, "https://github.com/acme/catalog")
        rows = insert_entries(session, source.id, catalog_specs())
    return Catalog(world, source.id, rows)


def sort_key(sort: EntrySort) -> Callable[[CatalogEntryRead], Any]:
    return {
        EntrySort.PATH: lambda r: r.detected_path,
        EntrySort.CONFIDENCE: lambda r: r.confidence_score,
        EntrySort.DETECTED_AT: lambda r: r.detected_at,
    }[sort]


def in_order(rows: Sequence[CatalogEntryRead], sort: EntrySort) -> list[CatalogEntryRead]:
    key = sort_key(sort)
    return sorted(rows, key=lambda r: (key(r), r.id), reverse=DESCENDING[sort])


def comes_after(row: CatalogEntryRead, last: CatalogEntryRead, sort: EntrySort) -> bool:
    key = sort_key(sort)
    mine, theirs = (key(row), row.id), (key(last), last.id)
    return mine < theirs if DESCENDING[sort] else mine > theirs


def matches(row: CatalogEntryRead, options: dict[str, Any]) -> bool:
    """The listing's filters, restated in Python."""
    kinds = {ArtifactType(k) for k in options.get("artifact_types") or ()}
    statuses = {CatalogStatus(s) for s in options.get("statuses") or ()}
    minimum = options.get("min_confidence")
    return (
        (not kinds or row.artifact_type in kinds)
        and (not statuses or row.status in statuses)
        and (minimum is None or row.confidence_score >= minimum)
    )


# --- everything needs a scope -------------------------------------------------------

CALLS: dict[str, Callable[[Session, World], object]] = {
    "create_source": lambda s, w: create(s, w.a.project, "https://github.com/acme/unscoped"),
    "get_source": lambda s, w: repo.get_source(s, w.a.source),
    "update_source": lambda s, w: repo.update_source(
        s, w.a.source, SourceUpdate(branch_or_ref="unscoped")
    ),
    "delete_source": lambda s, w: repo.delete_source(s, w.a.source),
    "list_sources": lambda s, w: repo.list_sources(s),
    "stale_sources": lambda s, w: repo.stale_sources(s, older_than=dt.timedelta(0)),
    "list_entries": lambda s, w: repo.list_entries(s, w.a.source),
    "catalog_counts": lambda s, w: repo.catalog_counts(s),
    "mark_imported": lambda s, w: repo.mark_imported(s, [w.a.entry]),
    "record_sync_failure": lambda s, w: repo.record_sync_failure(s, w.a.source, "unscoped"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_function_refuses_to_run_outside_tenant_scope(
    session: Session, world: World, name: str
) -> None:
    # The connecting superuser bypasses RLS: without the check each call would succeed.
    with pytest.raises(ScopeError, match="tenant_scope"):
        CALLS[name](session, world)
    with as_user(session, world.a.members["viewer"]):
        source = repo.get_source(session, world.a.source)
        (entry,) = repo.list_entries(session, world.a.source).items
        sources = repo.list_sources(session, project_id=world.a.project).items
    assert (source.branch_or_ref, source.last_error) == ("HEAD", None)
    assert (entry.status, entry.imported_at) == (CatalogStatus.NEW, None)
    assert ids(sources) == [world.a.source]


# --- create_source ------------------------------------------------------------------


@pytest.mark.parametrize(
    "pasted",
    [
        "git@github.com:Owner/Repo.git",
        "ssh://git@github.com/Owner/Repo.git",
        "https://github.com/Owner/Repo.git",
        "http://www.github.com/Owner/Repo/",
        "github.com/Owner/Repo",
        "  https://github.com/Owner/Repo  ",
    ],
)
def test_create_source_stores_the_canonical_url(
    session: Session, world: World, pasted: str
) -> None:
    with as_user(session, world.a.members["editor"]):
        created = create(session, world.a.project, pasted)
    with as_user(session, world.a.members["viewer"]):
        stored = repo.get_source(session, created.id)
    assert stored == created
    assert stored.repo_url == "https://github.com/Owner/Repo"
    assert stored.project_id == world.a.project
    assert (stored.branch_or_ref, stored.root_hint, stored.manual_map) == ("HEAD", None, {})
    assert (stored.last_sync, stored.last_error) == (None, None)


def test_create_source_keeps_every_field(session: Session, world: World) -> None:
    with as_user(session, world.a.members["owner"]):
        created = create(
            session,
            world.a.project,
            "https://github.com/acme/tools",
            branch_or_ref="release/1.x",
            root_hint="plugins",
            manual_map={"skill": "skills/a", "agent": ["agents/x", "agents/y"]},
            trust_level="signed",
            visibility="public",
        )
        stored = repo.get_source(session, created.id)
    assert stored.branch_or_ref == "release/1.x"
    assert stored.root_hint == "plugins"
    assert stored.manual_map == {"skill": ["skills/a"], "agent": ["agents/x", "agents/y"]}
    assert (stored.trust_level, stored.visibility) == ("signed", "public")


def test_duplicate_repo_differing_in_case_is_refused_and_the_scope_goes_on(
    session: Session, world: World
) -> None:
    with as_user(session, world.a.members["editor"]):
        first = create(session, world.a.project, "https://github.com/Owner/Repo")
        with pytest.raises(DuplicateSource) as info:
            create(session, world.a.project, "git@github.com:owner/REPO.git")
        # The refusal rolled back a savepoint only: the scope's transaction is usable,
        # and it still acts as this user (another tenant's source stays invisible).
        other = create(session, world.a.project, "https://github.com/Owner/Other")
        assert repo.get_source(session, first.id) == first
        with pytest.raises(NotFound):
            repo.get_source(session, world.b.source)
    assert isinstance(info.value, ConstraintViolation)
    assert "https://github.com/owner/REPO" in str(info.value)
    assert info.value.repo_url == "https://github.com/owner/REPO"
    with as_user(session, world.a.members["viewer"]):
        stored = {s.id: s.repo_url for s in all_sources(session, world.a.project)}
    assert stored == {
        world.a.source: stored[world.a.source],
        first.id: "https://github.com/Owner/Repo",
        other.id: "https://github.com/Owner/Other",
    }


def test_same_repo_in_another_project_is_allowed(session: Session, world: World) -> None:
    editor = world.a.members["editor"]
    add_member(session, world.b.project, editor, "editor")
    with as_user(session, editor):
        in_a = create(session, world.a.project, "https://github.com/Owner/Shared")
        in_b = create(session, world.b.project, "git@github.com:owner/shared.git")
    with as_user(session, world.b.members["viewer"]):
        seen_by_b = repo.get_source(session, in_b.id)
    assert in_a.id != in_b.id
    assert (seen_by_b.project_id, seen_by_b.repo_url) == (
        world.b.project,
        "https://github.com/owner/shared",
    )


@pytest.mark.parametrize(
    ("actor", "target"), [("viewer", "a"), ("editor", "b"), ("owner", "b")], ids=str
)
def test_create_source_refused_without_editor_rights(
    session: Session, world: World, actor: str, target: str
) -> None:
    project = getattr(world, target).project
    with as_user(session, world.a.members[actor]):
        with pytest.raises(PermissionDenied):
            create(session, project, "https://github.com/acme/refused")
        # The refusal does not abort the caller's transaction either.
        assert repo.get_source(session, world.a.source).id == world.a.source
    with as_user(session, getattr(world, target).members["owner"]):
        assert ids(all_sources(session)) == [getattr(world, target).source]


# --- get_source ---------------------------------------------------------------------


def test_get_source_own(session: Session, world: World) -> None:
    with as_user(session, world.a.members["viewer"]):
        source = repo.get_source(session, world.a.source)
    assert isinstance(source, SourceRead)
    assert (source.id, source.project_id) == (world.a.source, world.a.project)
    assert source.repo_url.startswith("https://github.com/tenant-a-")
    assert source.repo_url.endswith("/catalog")


def test_get_source_foreign_and_unknown_are_the_same_not_found(
    session: Session, world: World
) -> None:
    messages = []
    with as_user(session, world.a.members["owner"]):
        for source_id in (world.b.source, uuid.uuid4()):
            with pytest.raises(NotFound) as info:
                repo.get_source(session, source_id)
            assert type(info.value) is NotFound
            messages.append(str(info.value).replace(str(source_id), "<id>"))
    # Nothing but the id tells them apart: no hint that the foreign one exists.
    assert messages[0] == messages[1] == "source_id: <id> is not a source visible to this user"


# --- update_source ------------------------------------------------------------------


def test_update_source_changes_only_what_was_sent(session: Session, world: World) -> None:
    with as_user(session, world.a.members["editor"]):
        before = create(
            session,
            world.a.project,
            "https://github.com/acme/tools",
            root_hint="plugins",
            manual_map={"skill": ["skills/a"]},
        )
        changed = repo.update_source(
            session,
            before.id,
            SourceUpdate(branch_or_ref=" dev ", manual_map={"agent": "agents/x"}),
        )
        cleared = repo.update_source(session, before.id, SourceUpdate(root_hint=None))
        untouched = repo.update_source(session, before.id, SourceUpdate())
    with as_user(session, world.a.members["viewer"]):
        stored = repo.get_source(session, before.id)
    assert (changed.branch_or_ref, changed.manual_map) == ("dev", {"agent": ["agents/x"]})
    assert changed.root_hint == "plugins"  # not sent, so kept
    assert (cleared.root_hint, cleared.branch_or_ref) == (None, "dev")
    assert cleared.manual_map == {"agent": ["agents/x"]}
    assert stored == cleared == untouched
    assert (stored.repo_url, stored.created_at) == (before.repo_url, before.created_at)
    assert before.updated_at < changed.updated_at < cleared.updated_at


def test_update_source_renames_to_a_canonical_url(session: Session, world: World) -> None:
    with as_user(session, world.a.members["editor"]):
        renamed = repo.update_source(
            session, world.a.source, SourceUpdate(repo_url="git@github.com:Acme/Moved.git")
        )
    assert renamed.repo_url == "https://github.com/Acme/Moved"


def test_update_source_refused_for_a_viewer(session: Session, world: World) -> None:
    with as_user(session, world.a.members["viewer"]):
        before = repo.get_source(session, world.a.source)
        with pytest.raises(PermissionDenied, match="editor or owner"):
            repo.update_source(session, world.a.source, SourceUpdate(branch_or_ref="dev"))
        assert repo.get_source(session, world.a.source) == before


def test_update_source_of_a_foreign_source_is_not_found(session: Session, world: World) -> None:
    with as_user(session, world.a.members["owner"]), pytest.raises(NotFound):
        repo.update_source(session, world.b.source, SourceUpdate(branch_or_ref="dev"))
    with as_user(session, world.b.members["viewer"]):
        assert repo.get_source(session, world.b.source).branch_or_ref == "HEAD"


def test_update_source_rename_to_a_duplicate_is_refused(session: Session, world: World) -> None:
    with as_user(session, world.a.members["editor"]):
        taken = create(session, world.a.project, "https://github.com/Acme/Taken")
        mine = create(session, world.a.project, "https://github.com/acme/mine")
        with pytest.raises(DuplicateSource) as info:
            repo.update_source(session, mine.id, SourceUpdate(repo_url="github.com/ACME/taken"))
        assert repo.get_source(session, mine.id) == mine
        # Renaming a source to another case of its own name is no duplicate.
        recased = repo.update_source(
            session, taken.id, SourceUpdate(repo_url="https://github.com/acme/taken")
        )
    assert "https://github.com/ACME/taken" in str(info.value)
    assert recased.repo_url == "https://github.com/acme/taken"


# --- delete_source ------------------------------------------------------------------


def test_delete_source_cascades_to_its_entries(session: Session, catalog: Catalog) -> None:
    entry_ids = ids(catalog.rows)
    with as_user(session, catalog.editor):
        repo.delete_source(session, catalog.source)
        with pytest.raises(NotFound):
            repo.get_source(session, catalog.source)
        with pytest.raises(NotFound):
            repo.list_entries(session, catalog.source)
        with pytest.raises(NotFound, match="is not a catalog entry visible"):
            repo.mark_imported(session, entry_ids)
    with as_user(session, catalog.viewer):
        counts = repo.catalog_counts(session)
    with tenant_scope(session, admin=True):  # sees every row: are they really gone?
        remaining = session.execute(
            text("SELECT count(*) FROM marketplace_catalog_entries WHERE id = ANY(:ids)"),
            {"ids": entry_ids},
        ).scalar_one()
    assert len(entry_ids) == 24
    assert remaining == 0
    assert set(counts) == {catalog.world.a.source}


@pytest.mark.parametrize(
    ("actor", "target", "error"),
    [("viewer", "a", PermissionDenied), ("owner", "b", NotFound)],
    ids=["viewer", "foreign"],
)
def test_delete_source_refused(
    session: Session, world: World, actor: str, target: str, error: type[Exception]
) -> None:
    tenant: Tenant = getattr(world, target)
    with as_user(session, world.a.members[actor]), pytest.raises(error):
        repo.delete_source(session, tenant.source)
    with as_user(session, tenant.members["viewer"]):
        assert repo.get_source(session, tenant.source).id == tenant.source
        assert ids(repo.list_entries(session, tenant.source).items) == [tenant.entry]


# --- list_sources -------------------------------------------------------------------


def test_list_sources_never_synced_first_then_oldest(session: Session, world: World) -> None:
    with as_user(session, world.a.members["editor"]):
        s = [create(session, world.a.project, f"https://github.com/acme/r{n}").id for n in range(5)]
    set_last_sync(
        session,
        {
            s[0]: None,
            s[1]: BASE + dt.timedelta(days=2),
            s[2]: BASE,
            s[3]: BASE + dt.timedelta(days=2),  # a tie with s[1]: id decides
            s[4]: BASE + dt.timedelta(days=1),
        },
    )
    expected = [*sorted([world.a.source, s[0]]), s[2], s[4], *sorted([s[1], s[3]])]
    with as_user(session, world.a.members["viewer"]):
        by_two = all_sources(session, world.a.project, limit=2)
        by_four = all_sources(session, limit=4)
        whole = repo.list_sources(session, limit=500)
    assert ids(by_two) == ids(by_four) == ids(whole.items) == expected
    assert whole.next_cursor is None


def test_list_sources_project_filter(session: Session, world: World) -> None:
    both = world.a.members["editor"]
    add_member(session, world.b.project, both, "viewer")
    with as_user(session, both):
        extra = create(session, world.a.project, "https://github.com/acme/extra")
        everything = set(ids(all_sources(session)))
        only_a = set(ids(all_sources(session, world.a.project)))
        only_b = ids(all_sources(session, world.b.project))
    with as_user(session, world.a.members["viewer"]):
        seen_by_a = set(ids(all_sources(session)))
        foreign = repo.list_sources(session, project_id=world.b.project)
    assert everything == {world.a.source, extra.id, world.b.source}
    assert only_a == seen_by_a == {world.a.source, extra.id}
    assert only_b == [world.b.source]
    assert (foreign.items, foreign.next_cursor) == ([], None)


# --- stale_sources ------------------------------------------------------------------


@pytest.fixture
def stale_world(session: Session, world: World) -> dict[str, uuid.UUID]:
    with as_user(session, world.a.members["editor"]):
        a1 = create(session, world.a.project, "https://github.com/acme/a1").id
        a2 = create(session, world.a.project, "https://github.com/acme/a2").id
        recent = create(session, world.a.project, "https://github.com/acme/recent").id
    with as_user(session, world.b.members["editor"]):
        b_never = create(session, world.b.project, "https://github.com/acme/b-never").id
    set_last_sync(
        session,
        {
            a1: BASE + dt.timedelta(days=1),
            a2: BASE,
            world.b.source: BASE + dt.timedelta(days=2),
        },
    )
    session.execute(
        text("UPDATE marketplace_sources SET last_sync = now() WHERE id = :s"), {"s": recent}
    )
    return {
        "a_never": world.a.source,
        "b_never": b_never,
        "a1": a1,
        "a2": a2,
        "b2": world.b.source,
        "recent": recent,
    }


@pytest.mark.parametrize(
    ("older_than", "due"),
    [
        (dt.timedelta(days=1), ["a2", "a1", "b2"]),
        (BASE + dt.timedelta(hours=36), ["a2", "a1"]),
        # The same instant in another zone.
        (
            (BASE + dt.timedelta(hours=36)).astimezone(dt.timezone(dt.timedelta(hours=-5))),
            ["a2", "a1"],
        ),
        (BASE, []),
    ],
    ids=["timedelta", "aware-utc", "aware-minus-5h", "nothing-older"],
)
def test_stale_sources_never_synced_first_then_oldest(
    session: Session,
    stale_world: dict[str, uuid.UUID],
    older_than: dt.datetime | dt.timedelta,
    due: list[str],
) -> None:
    with tenant_scope(session, admin=True):
        found = ids(repo.stale_sources(session, older_than=older_than))
        limited = ids(repo.stale_sources(session, older_than=older_than, limit=3))
        # Every source in the database: the admin role sees all, and there may be others.
        every = session.execute(text("SELECT id, last_sync FROM marketplace_sources")).all()
    cutoff = (
        older_than if isinstance(older_than, dt.datetime) else dt.datetime.now(dt.UTC) - older_than
    )
    expected = [
        row.id
        for row in sorted(every, key=lambda r: (r.last_sync is not None, r.last_sync, r.id))
        if row.last_sync is None or row.last_sync < cutoff
    ]
    assert found == expected
    assert limited == expected[:3]
    mine = {source_id: name for name, source_id in stale_world.items()}
    never = sorted([stale_world["a_never"], stale_world["b_never"]])
    assert [i for i in found if i in mine] == never + [stale_world[name] for name in due]


def test_stale_sources_needs_the_admin_scope(session: Session, world: World) -> None:
    with as_user(session, world.a.members["owner"]), pytest.raises(ScopeError, match="admin"):
        repo.stale_sources(session, older_than=dt.timedelta(days=1))


def test_stale_sources_refuses_a_naive_datetime(session: Session, world: World) -> None:
    with tenant_scope(session, admin=True), refused("older_than", "timezone-aware"):
        repo.stale_sources(session, older_than=dt.datetime(2024, 1, 1))


# --- limits, enums, cursors ---------------------------------------------------------

LIMITED: dict[str, Callable[[Session, World, int], object]] = {
    "list_sources": lambda s, w, n: repo.list_sources(s, limit=n),
    "list_entries": lambda s, w, n: repo.list_entries(s, w.a.source, limit=n),
    "stale_sources": lambda s, w, n: repo.stale_sources(
        s, older_than=dt.timedelta(days=1), limit=n
    ),
}


@contextmanager
def scope_for(session: Session, world: World, name: str) -> Iterator[Session]:
    if name == "stale_sources":
        with tenant_scope(session, admin=True) as scoped:
            yield scoped
    else:
        with as_user(session, world.a.members["viewer"]) as scoped:
            yield scoped


@pytest.mark.parametrize("name", sorted(LIMITED))
@pytest.mark.parametrize("limit", [0, -1, 501])
def test_limit_out_of_range_is_refused(
    session: Session, world: World, name: str, limit: int
) -> None:
    with scope_for(session, world, name), refused("limit", "1 to 500", repr(limit)):
        LIMITED[name](session, world, limit)


@pytest.mark.parametrize("name", sorted(LIMITED))
@pytest.mark.parametrize("limit", [1, 500])
def test_limit_bounds_are_accepted(session: Session, world: World, name: str, limit: int) -> None:
    with scope_for(session, world, name):
        LIMITED[name](session, world, limit)


@pytest.mark.parametrize(
    ("option", "value", "bad", "allowed"),
    [
        ("sort", "name", "name", EntrySort),
        ("artifact_types", ["skill", "skills"], "skills", ArtifactType),
        ("statuses", ["NEW"], "NEW", CatalogStatus),
    ],
)
def test_unknown_enum_values_are_refused_listing_the_allowed_ones(
    session: Session, world: World, option: str, value: Any, bad: str, allowed: type[StrEnum]
) -> None:
    options: dict[str, Any] = {option: value}
    with (
        as_user(session, world.a.members["viewer"]),
        refused(option, repr(bad), ", ".join(member.value for member in allowed)),
    ):
        repo.list_entries(session, world.a.source, **options)


@pytest.mark.parametrize("minimum", [-0.01, 100.01, float("nan"), float("inf")])
def test_min_confidence_out_of_range_is_refused(
    session: Session, world: World, minimum: float
) -> None:
    with as_user(session, world.a.members["viewer"]), refused("min_confidence", "0 to 100"):
        repo.list_entries(session, world.a.source, min_confidence=minimum)


def forged(**payload: object) -> str:
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


SOME_ID = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("sort", "cursor"),
    [
        ("path", "not-a-cursor"),
        ("path", "%%%"),
        ("path", forged()),
        ("path", forged(s="path", k="skills/a")),
        ("path", forged(s="path", k="skills/a", i="not-a-uuid")),
        ("path", forged(s="path", k=5, i=SOME_ID)),
        ("confidence", forged(s="confidence", k="high", i=SOME_ID)),
        ("confidence", forged(s="confidence", k=None, i=SOME_ID)),
        ("detected_at", forged(s="detected_at", k="yesterday", i=SOME_ID)),
        ("path", base64.urlsafe_b64encode(b"[1, 2]").decode()),
        ("path", base64.urlsafe_b64encode(b'"path"').decode()),
    ],
)
def test_bad_cursor_is_refused(session: Session, world: World, sort: str, cursor: str) -> None:
    with as_user(session, world.a.members["viewer"]), refused("cursor", "not a cursor"):
        repo.list_entries(session, world.a.source, sort=sort, cursor=cursor)


def test_cursor_with_a_numeric_id_is_refused(session: Session, world: World) -> None:
    with as_user(session, world.a.members["viewer"]), refused("cursor"):
        repo.list_entries(session, world.a.source, cursor=forged(s="path", k="a", i=5))


def test_cursor_with_a_nul_key_is_refused(session: Session, world: World) -> None:
    with as_user(session, world.a.members["viewer"]), refused("cursor"):
        repo.list_entries(session, world.a.source, cursor=forged(s="path", k="a\x00", i=SOME_ID))


def test_cursor_from_another_listing_is_refused(session: Session, catalog: Catalog) -> None:
    with as_user(session, catalog.viewer):
        by_path = repo.list_entries(session, catalog.source, limit=2).next_cursor
        by_confidence = repo.list_entries(
            session, catalog.source, sort="confidence", limit=2
        ).next_cursor
        by_sync = repo.list_sources(session, limit=1).next_cursor
        assert by_path and by_confidence
        for sort, cursor in (("confidence", by_path), ("detected_at", by_confidence)):
            with refused("cursor", "restart from the first page"):
                repo.list_entries(session, catalog.source, sort=sort, cursor=cursor)
        assert by_sync
        with refused("cursor", "'last_sync'"):
            repo.list_entries(session, catalog.source, cursor=by_sync)
        with refused("cursor", "'path'"):
            repo.list_sources(session, cursor=by_path)


# --- list_entries: filters, order, stable pages -------------------------------------

FILTERS = [
    pytest.param({}, "all", id="no-filter"),
    pytest.param({"artifact_types": ["skill"]}, "some", id="one-type"),
    pytest.param({"artifact_types": [ArtifactType.AGENT, "mcp"]}, "some", id="two-types"),
    pytest.param({"artifact_types": ["hook"]}, "none", id="absent-type"),
    pytest.param({"statuses": ["removed"]}, "some", id="one-status"),
    pytest.param({"statuses": [CatalogStatus.NEW, "updated"]}, "some", id="two-statuses"),
    pytest.param({"min_confidence": 90}, "some", id="min-90"),
    pytest.param({"min_confidence": 55.5}, "some", id="min-55.5-inclusive"),
    pytest.param({"min_confidence": 0}, "all", id="min-0"),
    pytest.param({"min_confidence": 100}, "some", id="min-100"),
    pytest.param(
        {
            "artifact_types": ["skill", "mcp"],
            "statuses": ["new", "unchanged"],
            "min_confidence": 50,
        },
        "some",
        id="combined",
    ),
]


@pytest.mark.parametrize("sort", list(EntrySort))
@pytest.mark.parametrize(("options", "selects"), FILTERS)
def test_list_entries_filters_match_python(
    session: Session, catalog: Catalog, options: dict[str, Any], selects: str, sort: EntrySort
) -> None:
    expected = in_order([r for r in catalog.rows if matches(r, options)], sort)
    with as_user(session, catalog.viewer):
        got = all_entries(session, catalog.source, sort=sort, **options)
    assert got == expected
    size = {"all": len(catalog.rows), "none": 0}.get(selects)
    assert len(expected) == size if size is not None else 0 < len(expected) < len(catalog.rows)


@pytest.mark.parametrize("sort", list(EntrySort))
def test_list_entries_sort_with_id_tie_breaker(
    session: Session, catalog: Catalog, sort: EntrySort
) -> None:
    key = sort_key(sort)
    with as_user(session, catalog.viewer):
        whole = repo.list_entries(session, catalog.source, sort=sort, limit=500)
        paged = all_entries(session, catalog.source, sort=sort, limit=3)
    got = ids(whole.items)
    # Spelled out rather than via in_order: key direction and id direction both.
    for before, after in itertools.pairwise(whole.items):
        if key(before) == key(after):
            assert (before.id < after.id) != DESCENDING[sort]
        else:
            assert (key(before) < key(after)) != DESCENDING[sort]
    ties = sum(key(x) == key(y) for x, y in itertools.pairwise(whole.items))
    assert ties >= 5, "the data must exercise the tie-breaker"
    assert got == ids(paged) == ids(in_order(catalog.rows, sort))
    assert whole.next_cursor is None


def around(last: CatalogEntryRead, sort: EntrySort) -> tuple[list[Spec], list[Spec]]:
    """New entries just before and just after `last` in `sort` order: one with a
    different key and one with the same key (ordered by id) on each side."""
    desc = DESCENDING[sort]

    def neighbour(step: int) -> uuid.UUID:  # step -1: earlier in the listing
        return uuid.UUID(int=last.id.int + (-step if desc else step))

    def entry(step: int, tie: bool) -> Spec:
        # Only the sort key is chosen; the other columns stay out of the way.
        ident = neighbour(step) if tie else uuid.uuid4()
        name = f"new/{'tie-' if tie else ''}{'before' if step < 0 else 'after'}"
        if sort is EntrySort.PATH:
            kind = ArtifactType.HOOK if step < 0 else ArtifactType.BUNDLE
            path = last.detected_path if tie else ("skills/a" if step < 0 else "skills/z")
            return Spec(kind, path, 50.0, BASE, id=ident)
        if sort is EntrySort.CONFIDENCE:
            score = last.confidence_score + (0 if tie else -step * 0.25)
            return Spec(ArtifactType.SKILL, name, score, BASE, id=ident)
        at = last.detected_at + (dt.timedelta(0) if tie else dt.timedelta(seconds=-step))
        return Spec(ArtifactType.SKILL, name, 50.0, at, id=ident)

    return [entry(-1, False), entry(-1, True)], [entry(1, False), entry(1, True)]


@pytest.mark.parametrize("sort", list(EntrySort))
def test_list_entries_pages_stay_stable_across_inserts(
    session: Session, catalog: Catalog, sort: EntrySort
) -> None:
    order = in_order(catalog.rows, sort)
    key = sort_key(sort)
    # The first page ends inside a run of equal keys (so the cursor's id matters), in
    # the middle of the catalog (so there is room for new keys on both sides).
    limit = next(
        k for k in range(len(order) // 3, len(order)) if key(order[k - 1]) == key(order[k])
    )
    with as_user(session, catalog.editor):
        first = repo.list_entries(session, catalog.source, sort=sort, limit=limit)
        assert ids(first.items) == ids(order[:limit])
        last = first.items[-1]
        before, after = around(last, sort)
        added = insert_entries(session, catalog.source, [*before, *after])
        rest = drain(
            lambda c: repo.list_entries(session, catalog.source, sort=sort, limit=limit, cursor=c),
            limit,
            first.next_cursor,
        )
    seen = ids(first.items) + ids(rest)
    assert len(seen) == len(set(seen)), "a row was repeated"
    assert set(ids(catalog.rows)) <= set(seen), "a row present at the start was lost"
    assert set(ids(rest)) & {s.id for s in before} == set()
    assert {s.id for s in after} <= set(ids(rest))
    everything = in_order(catalog.rows + added, sort)
    assert ids(rest) == [r.id for r in everything if comes_after(r, last, sort)]


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kinds=st.lists(st.sampled_from(list(ArtifactType)), max_size=3),
    statuses=st.lists(st.sampled_from(list(CatalogStatus)), max_size=3),
    minimum=st.none() | st.sampled_from([0.0, 12.25, 12.26, 55.5, 90.0, 99.99, 100.0]),
    sort=st.sampled_from(list(EntrySort)),
    limit=st.integers(1, 30),
)
def test_list_entries_any_filter_sort_and_page_size(
    session: Session,
    catalog: Catalog,
    kinds: list[ArtifactType],
    statuses: list[CatalogStatus],
    minimum: float | None,
    sort: EntrySort,
    limit: int,
) -> None:
    # Read-only: the catalog fixture is shared by every example.
    options: dict[str, Any] = {
        "artifact_types": kinds or None,
        "statuses": statuses or None,
        "min_confidence": minimum,
        "sort": sort,
    }
    with as_user(session, catalog.viewer):
        got = all_entries(session, catalog.source, limit=limit, **options)
    assert got == in_order([r for r in catalog.rows if matches(r, options)], sort)


# --- catalog_counts -----------------------------------------------------------------


def python_counts(
    rows: Sequence[CatalogEntryRead],
) -> dict[tuple[ArtifactType, CatalogStatus], int]:
    counts: dict[tuple[ArtifactType, CatalogStatus], int] = {}
    for row in rows:
        counts[(row.artifact_type, row.status)] = counts.get((row.artifact_type, row.status), 0) + 1
    return counts


def test_catalog_counts_match_the_listed_entries(session: Session, catalog: Catalog) -> None:
    world = catalog.world
    with as_user(session, catalog.editor):
        empty = create(session, world.a.project, "https://github.com/acme/empty").id
    with as_user(session, catalog.viewer):
        two = repo.catalog_counts(session, [catalog.source, world.a.source])
        every = repo.catalog_counts(session)
        asked_empty = repo.catalog_counts(session, [empty])
        with pytest.raises(NotFound, match=str(world.b.source)):
            repo.catalog_counts(session, [empty, world.b.source])
        expected = {
            source: python_counts(all_entries(session, source, limit=500))
            for source in (catalog.source, world.a.source)
        }
    assert two == every == expected
    assert sum(expected[catalog.source].values()) == 24
    assert expected[world.a.source] == {(ArtifactType.SKILL, CatalogStatus.NEW): 1}
    assert world.b.source not in every
    assert asked_empty == {}  # visible, no entries


# --- mark_imported ------------------------------------------------------------------


def by_status(rows: Sequence[CatalogEntryRead], status: CatalogStatus) -> CatalogEntryRead:
    return next(r for r in rows if r.status == status)


def test_mark_imported_marks_only_writable_live_entries(session: Session, catalog: Catalog) -> None:
    world = catalog.world
    new, updated, unchanged, removed = (
        by_status(catalog.rows, s)
        for s in (
            CatalogStatus.NEW,
            CatalogStatus.UPDATED,
            CatalogStatus.UNCHANGED,
            CatalogStatus.REMOVED,
        )
    )
    asked = [new.id, updated.id, unchanged.id, removed.id, new.id]
    with as_user(session, catalog.editor):
        # An id this user cannot see (another tenant's, or none at all) refuses the
        # whole call, before anything is written.
        for invisible in (world.b.entry, uuid.uuid4()):
            with pytest.raises(NotFound, match=str(invisible)):
                repo.mark_imported(session, [*asked, invisible])
        with pytest.raises(NotFound, match="is not an entry of source"):
            repo.mark_imported(session, asked, source_id=world.a.source)
        now = session.execute(text("SELECT now()")).scalar_one()
        marked = repo.mark_imported(session, asked, source_id=catalog.source)
        after = {r.id: r for r in all_entries(session, catalog.source, limit=500)}
    with as_user(session, world.b.members["viewer"]):
        (foreign,) = repo.list_entries(session, world.b.source).items
    assert sorted(marked) == sorted([new.id, updated.id, unchanged.id])
    for entry_id in marked:
        assert (after[entry_id].imported_at, after[entry_id].status) == (
            now,
            CatalogStatus.UNCHANGED,
        )
    assert (after[removed.id].imported_at, after[removed.id].status) == (
        None,
        CatalogStatus.REMOVED,
    )
    untouched = [r for r in catalog.rows if r.id not in marked]
    assert [after[r.id] for r in untouched] == untouched
    assert (foreign.id, foreign.imported_at, foreign.status) == (
        world.b.entry,
        None,
        CatalogStatus.NEW,
    )


def test_mark_imported_by_a_viewer_is_refused_and_marks_nothing(
    session: Session, catalog: Catalog
) -> None:
    with as_user(session, catalog.viewer):
        with pytest.raises(PermissionDenied, match="editor or owner role required"):
            repo.mark_imported(session, ids(catalog.rows))
        nothing = repo.mark_imported(session, [])
        after = all_entries(session, catalog.source, limit=500)
    assert nothing == []
    assert after == in_order(catalog.rows, EntrySort.PATH)


# --- record_sync_failure ------------------------------------------------------------


def test_record_sync_failure_keeps_last_sync_and_the_catalog(
    session: Session, catalog: Catalog
) -> None:
    set_last_sync(session, {catalog.source: BASE})
    with as_user(session, catalog.editor):
        before = repo.get_source(session, catalog.source)
        repo.record_sync_failure(session, catalog.source, "clone failed: 404 Not Found")
        failed = repo.get_source(session, catalog.source)
        repo.record_sync_failure(session, catalog.source, "x" * 10_050)
        long = repo.get_source(session, catalog.source)
        entries = all_entries(session, catalog.source, limit=500)
    assert (failed.last_error, failed.last_sync) == ("clone failed: 404 Not Found", BASE)
    assert failed.model_dump(exclude={"last_error", "updated_at"}) == before.model_dump(
        exclude={"last_error", "updated_at"}
    )
    assert long.last_error == "x" * 10_000
    assert entries == in_order(catalog.rows, EntrySort.PATH)


@pytest.mark.parametrize("message", ["", "   ", "\n\t"])
def test_record_sync_failure_refuses_a_blank_message(
    session: Session, world: World, message: str
) -> None:
    with as_user(session, world.a.members["editor"]):
        with refused("message", "not blank"):
            repo.record_sync_failure(session, world.a.source, message)
        assert repo.get_source(session, world.a.source).last_error is None


def test_record_sync_failure_refuses_a_nul_in_the_message(session: Session, world: World) -> None:
    with as_user(session, world.a.members["editor"]), refused("message"):
        repo.record_sync_failure(session, world.a.source, "git: bad\x00output")


@pytest.mark.parametrize(
    ("actor", "target"), [("viewer", "a"), ("owner", "b")], ids=["viewer", "foreign"]
)
def test_record_sync_failure_refused_without_write_rights(
    session: Session, world: World, actor: str, target: str
) -> None:
    tenant: Tenant = getattr(world, target)
    # A foreign source does not exist for this user; its own is visible but read-only.
    expected = NotFound if target == "b" else PermissionDenied
    with as_user(session, world.a.members[actor]), pytest.raises(expected):
        repo.record_sync_failure(session, tenant.source, "clone failed")
    with as_user(session, tenant.members["viewer"]):
        assert repo.get_source(session, tenant.source).last_error is None


# --- wrong types and values the database cannot take: library errors, nothing written --


def test_ids_must_be_uuids(session: Session, world: World) -> None:
    with as_user(session, world.a.members["viewer"]), refused("source_id", "uuid.UUID"):
        repo.get_source(session, "nope")  # type: ignore[arg-type]
    with as_user(session, world.a.members["editor"]), refused("entry_ids", "uuid.UUID"):
        repo.mark_imported(session, [str(world.a.entry)])  # type: ignore[list-item]


def test_limit_must_be_an_int(session: Session, world: World) -> None:
    with as_user(session, world.a.members["viewer"]), refused("limit", "an int"):
        repo.list_entries(session, world.a.source, limit="10")  # type: ignore[arg-type]


def test_sync_needs_an_iterable_of_artifacts(session: Session, world: World) -> None:
    with as_user(session, world.a.members["editor"]), refused("artifacts", "iterable"):
        repo.sync_catalog(session, world.a.source, None)  # type: ignore[arg-type]


def test_an_unvalidated_copy_of_an_artifact_is_validated(session: Session, world: World) -> None:
    good = DetectedArtifact(
        artifact_type="skill",
        detected_path="skills/a",
        upstream_url="https://github.com/o/r",
        detected_version_sha="a1",
        confidence_score=50,
    )
    bad = good.model_copy(update={"artifact_type": "widget"})  # model_copy skips validation
    with as_user(session, world.a.members["editor"]), refused("artifacts[1].artifact_type"):
        repo.sync_catalog(session, world.a.source, [good, bad])


def test_a_detected_at_cursor_without_a_key_is_refused(session: Session, world: World) -> None:
    with as_user(session, world.a.members["viewer"]), refused("cursor"):
        repo.list_entries(
            session,
            world.a.source,
            sort="detected_at",
            cursor=forged(s="detected_at", k=None, i=SOME_ID),
        )


def test_a_failure_message_with_a_lone_surrogate_is_stored_readably(
    session: Session, world: World
) -> None:
    with as_user(session, world.a.members["editor"]):
        repo.record_sync_failure(session, world.a.source, "git said \ud800 and stopped")
        assert repo.get_source(session, world.a.source).last_error == "git said ? and stopped"


def test_a_value_the_database_cannot_parse_is_a_library_error(
    session: Session, world: World
) -> None:
    with pytest.raises(InvalidValue, match="invalid input syntax for type uuid"):  # noqa: SIM117
        with as_user(session, world.a.members["viewer"]):
            session.execute(text("SELECT CAST('not-a-uuid' AS uuid)"))
