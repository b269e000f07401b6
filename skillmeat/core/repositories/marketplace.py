"""Repository functions for marketplace sources and their catalog.

Each takes a Session first and keyword-only options after, runs inside the
caller's `tenant_scope` (so row-level security applies), and never commits.
Filtering, sorting and paging happen in SQL; bulk work is set-based.
"""

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.orm import Session

from skillmeat.core.database.errors import translated_errors
from skillmeat.core.database.tenant import current_scope
from skillmeat.core.errors import (
    ConstraintViolation,
    DuplicateSource,
    NotFound,
    PermissionDenied,
    ScopeError,
    ValidationFailed,
)
from skillmeat.core.models import (
    ArtifactType,
    CatalogStatus,
    MarketplaceCatalogEntry,
    MarketplaceSource,
)
from skillmeat.core.repositories import query_paths as paths
from skillmeat.core.repositories.query_paths import EntrySort
from skillmeat.core.schemas.marketplace import (
    CatalogEntryRead,
    DetectedArtifact,
    SourceCreate,
    SourceRead,
    SourceUpdate,
    validate_artifacts,
)

T = TypeVar("T")
Source = MarketplaceSource
Entry = MarketplaceCatalogEntry
MAX_ERROR_LENGTH = 10_000
DUPLICATE_REPO_CONSTRAINT = "uq_marketplace_sources_project_id_lower_repo_url"


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset-paginated listing; pass next_cursor back for the next one."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class SyncResult:
    """The source's entry counts by status after a sync, and what this sync wrote."""

    new: int
    updated: int
    removed: int
    unchanged: int
    inserted: int
    changed: int


# --- sources ------------------------------------------------------------------------


def create_source(session: Session, data: SourceCreate) -> SourceRead:
    """Register a repository as a source of data.project_id (editor or owner)."""
    current_scope(session)
    values = data.model_dump(exclude={"manual_map"}) | {"manual_map": data.manual_map_json()}
    with _duplicate_repo_refused(session, data.repo_url):
        row = session.execute(insert(Source).values(**values).returning(Source)).scalar_one()
    return SourceRead.model_validate(row)


@contextmanager
def _duplicate_repo_refused(session: Session, repo_url: str) -> Iterator[None]:
    """Run in a savepoint (the caller's transaction survives a refusal); map the unique
    violation on the project's repositories to DuplicateSource."""
    try:
        with translated_errors(), session.begin_nested():
            yield
    except ConstraintViolation as exc:
        if exc.constraint == DUPLICATE_REPO_CONSTRAINT:
            raise DuplicateSource(repo_url) from exc
        raise


def get_source(session: Session, source_id: uuid.UUID) -> SourceRead:
    current_scope(session)
    row = session.execute(select(Source).where(Source.id == source_id)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"source_id: {source_id} is not a source visible to this user")
    return SourceRead.model_validate(row)


def update_source(session: Session, source_id: uuid.UUID, changes: SourceUpdate) -> SourceRead:
    """Apply the fields that were sent; PermissionDenied for a viewer, NotFound if invisible."""
    current_scope(session)
    values = changes.changes()
    if not values:
        return get_source(session, source_id)
    with _duplicate_repo_refused(session, str(values.get("repo_url"))):
        row = session.execute(
            update(Source)
            .where(Source.id == source_id)
            .values(**values)
            .returning(Source)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
    if row is None:
        _refuse_write(session, source_id, "update")
    return SourceRead.model_validate(row)


def delete_source(session: Session, source_id: uuid.UUID) -> None:
    """Delete a source and (by cascade) its catalog."""
    current_scope(session)
    with translated_errors():
        deleted = session.execute(
            delete(Source).where(Source.id == source_id).returning(Source.id)
        ).first()
    if deleted is None:
        _refuse_write(session, source_id, "delete")


def _refuse_write(session: Session, source_id: uuid.UUID, action: str) -> None:
    """A write matched no row: PermissionDenied if the user can see it, else NotFound."""
    visible = session.execute(select(Source.id).where(Source.id == source_id)).first()
    if visible is not None:
        raise PermissionDenied(
            f"permission denied: this user may read source {source_id} but not {action} it "
            "(editor or owner role required)"
        )
    raise NotFound(f"source_id: {source_id} is not a source visible to this user")


def list_sources(
    session: Session,
    *,
    project_id: uuid.UUID | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[SourceRead]:
    """Path 5: sources (of one project, or all visible), never-synced first."""
    current_scope(session)
    _check_limit(limit)
    after = paths.decode_cursor(cursor, "last_sync") if cursor else None
    rows = list(session.execute(paths.sources_page(project_id, limit=limit, after=after)).scalars())
    items = [SourceRead.model_validate(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = paths.encode_cursor("last_sync", last.last_sync, last.id)
    return Page(items, next_cursor)


def stale_sources(
    session: Session, *, older_than: dt.datetime | dt.timedelta, limit: int = 100
) -> list[SourceRead]:
    """Path 7: the sources across all projects due for a rescan (admin scope only)."""
    if not current_scope(session).admin:
        raise ScopeError("stale_sources is for the rescan scheduler: use tenant_scope(admin=True)")
    _check_limit(limit)
    cutoff = (
        dt.datetime.now(dt.UTC) - older_than if isinstance(older_than, dt.timedelta) else older_than
    )
    if cutoff.tzinfo is None:
        raise ValidationFailed("older_than", older_than, "must be timezone-aware (e.g. UTC)")
    rows = session.execute(paths.stale_sources(older_than=cutoff, limit=limit)).scalars()
    return [SourceRead.model_validate(row) for row in rows]


# --- catalog ------------------------------------------------------------------------


def list_entries(
    session: Session,
    source_id: uuid.UUID,
    *,
    artifact_types: Iterable[ArtifactType | str] | None = None,
    statuses: Iterable[CatalogStatus | str] | None = None,
    min_confidence: float | None = None,
    sort: EntrySort | str = EntrySort.PATH,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[CatalogEntryRead]:
    """Paths 1-3: a page of a source's catalog, filtered, sorted and paged in SQL.

    The cursor is keyset-based (sort key, then id), so rows inserted between two
    pages are neither lost nor repeated.
    """
    current_scope(session)
    _check_limit(limit)
    sort_key = _enum("sort", sort, EntrySort)
    types = [_enum("artifact_types", t, ArtifactType) for t in artifact_types or ()]
    wanted = [_enum("statuses", s, CatalogStatus) for s in statuses or ()]
    if min_confidence is not None and not 0 <= min_confidence <= 100:
        raise ValidationFailed(
            "min_confidence", min_confidence, f"{min_confidence!r} is not allowed (0 to 100)"
        )
    after = paths.decode_cursor(cursor, sort_key.value) if cursor else None
    stmt = paths.entries_page(
        source_id,
        artifact_types=types or None,
        statuses=wanted or None,
        min_confidence=min_confidence,
        sort=sort_key,
        limit=limit,
        after=after,
    )
    rows = list(session.execute(stmt).scalars())
    items = [CatalogEntryRead.model_validate(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        key = {
            EntrySort.PATH: last.detected_path,
            EntrySort.CONFIDENCE: last.confidence_score,
            EntrySort.DETECTED_AT: last.detected_at,
        }[sort_key]
        next_cursor = paths.encode_cursor(sort_key.value, key, last.id)
    return Page(items, next_cursor)


def catalog_counts(
    session: Session, source_ids: Sequence[uuid.UUID] | None = None
) -> dict[uuid.UUID, dict[tuple[ArtifactType, CatalogStatus], int]]:
    """Path 4: entry counts by (artifact_type, status) per source, in one query.

    None counts every source the user can see.
    """
    current_scope(session)
    counts: dict[uuid.UUID, dict[tuple[ArtifactType, CatalogStatus], int]] = {}
    for source_id, kind, status, n in session.execute(paths.catalog_counts(source_ids)):
        counts.setdefault(source_id, {})[(ArtifactType(kind), CatalogStatus(status))] = n
    return counts


def mark_imported(session: Session, entry_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Record that the user imported these entries: imported_at now, status unchanged.

    Entries the user may not write, and removed ones (gone upstream), are left
    alone; the ids actually marked are returned.
    """
    current_scope(session)
    ids = list(dict.fromkeys(entry_ids))
    if not ids:
        return []
    with translated_errors():
        marked = session.execute(
            update(Entry)
            .where(Entry.id == paths.any_uuid(ids), Entry.status != CatalogStatus.REMOVED.value)
            .values(imported_at=text("now()"), status=CatalogStatus.UNCHANGED.value)
            .returning(Entry.id)
            .execution_options(synchronize_session=False)
        ).scalars()
        return list(marked)


def record_sync_failure(session: Session, source_id: uuid.UUID, message: str) -> None:
    """A scan failed: keep its message in last_error; last_sync and the catalog stay."""
    current_scope(session)
    if not message.strip():
        raise ValidationFailed("message", message, "must say why the scan failed (not blank)")
    with translated_errors():
        _lock_source(session, source_id)
        session.execute(
            update(Source)
            .where(Source.id == source_id)
            .values(last_error=message[:MAX_ERROR_LENGTH])
            .execution_options(synchronize_session=False)
        )


def _lock_source(session: Session, source_id: uuid.UUID) -> None:
    """Serialize writers of one source's catalog (held to the end of the transaction).

    FOR NO KEY UPDATE: under RLS it also requires the UPDATE policy, so a viewer
    or a foreign source finds nothing, and it does not block foreign-key checks.
    """
    locked = session.execute(
        select(Source.id).where(Source.id == source_id).with_for_update(key_share=True)
    ).first()
    if locked is None:
        raise PermissionDenied(
            f"permission denied: source {source_id} does not exist or this user may not "
            "write its catalog (editor or owner role required)"
        )


# One statement applies a whole rescan. `stage` is the scan, unnested from five
# array parameters (no temporary table, no statement per artifact); `prior` is the
# catalog before it, read from the same snapshot, to count what changed.
_SYNC_SQL = text(
    """
WITH stage AS MATERIALIZED (
    SELECT * FROM unnest(
        CAST(:types AS text[]), CAST(:paths AS text[]), CAST(:urls AS text[]),
        CAST(:shas AS text[]), CAST(:scores AS double precision[])
    ) AS s(artifact_type, detected_path, upstream_url, detected_version_sha, confidence_score)
),
prior AS MATERIALIZED (
    SELECT artifact_type, detected_path, status, detected_version_sha
      FROM marketplace_catalog_entries
     WHERE source_id = :source_id
),
upserted AS (
    INSERT INTO marketplace_catalog_entries AS e (
        source_id, artifact_type, detected_path, upstream_url, detected_version_sha,
        confidence_score, detected_at, status)
    SELECT :source_id, s.artifact_type, s.detected_path, s.upstream_url,
           s.detected_version_sha, s.confidence_score, now(), 'new'
      FROM stage s
    ON CONFLICT ON CONSTRAINT uq_marketplace_catalog_entries_source_type_path DO UPDATE SET
        upstream_url = excluded.upstream_url,
        detected_version_sha = excluded.detected_version_sha,
        confidence_score = excluded.confidence_score,
        detected_at = excluded.detected_at,
        status = CASE
            WHEN e.imported_at IS NULL THEN 'new'            -- new until imported
            WHEN e.status = 'updated' THEN 'updated'         -- until imported again
            WHEN e.detected_version_sha <> excluded.detected_version_sha THEN 'updated'
            ELSE 'unchanged'
        END
    RETURNING e.artifact_type, e.detected_path, e.status, e.detected_version_sha,
              (e.xmax = 0) AS inserted
),
removed AS (
    UPDATE marketplace_catalog_entries e
       SET status = 'removed'
     WHERE e.source_id = :source_id
       AND e.status <> 'removed'
       AND NOT EXISTS (SELECT 1 FROM stage s
                        WHERE s.artifact_type = e.artifact_type
                          AND s.detected_path = e.detected_path)
    RETURNING 1
),
synced AS (
    UPDATE marketplace_sources SET last_sync = now(), last_error = NULL
     WHERE id = :source_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted WHERE inserted) AS inserted,
       (SELECT count(*) FROM upserted u
          JOIN prior p USING (artifact_type, detected_path)
         WHERE u.status <> p.status OR u.detected_version_sha <> p.detected_version_sha)
       + (SELECT count(*) FROM removed) AS changed,
       (SELECT count(*) FROM synced) AS synced
"""
)


def sync_catalog(
    session: Session, source_id: uuid.UUID, artifacts: Iterable[DetectedArtifact]
) -> SyncResult:
    """Apply one rescan of a source atomically, in a constant number of statements.

    New artifacts are inserted as new; never-imported entries stay new; imported
    entries become updated when their SHA changes (and stay so until imported
    again), else unchanged; entries not detected any more become removed (soft).
    Concurrent syncs of one source serialize on the source row. Bad input is
    refused before anything is written.
    """
    current_scope(session)
    batch = validate_artifacts(artifacts)
    columns: dict[str, list[Any]] = {"types": [], "paths": [], "urls": [], "shas": [], "scores": []}
    for artifact in batch:
        columns["types"].append(artifact.artifact_type.value)
        columns["paths"].append(artifact.detected_path)
        columns["urls"].append(artifact.upstream_url)
        columns["shas"].append(artifact.detected_version_sha)
        columns["scores"].append(artifact.confidence_score)
    with translated_errors(), session.begin_nested():
        _lock_source(session, source_id)
        written = session.execute(_SYNC_SQL, {"source_id": source_id, **columns}).one()
        by_status: dict[str, int] = dict(
            session.execute(
                select(Entry.status, text("count(*)"))
                .where(Entry.source_id == source_id)
                .group_by(Entry.status)
            ).all()
        )
    return SyncResult(
        new=by_status.get(CatalogStatus.NEW, 0),
        updated=by_status.get(CatalogStatus.UPDATED, 0),
        removed=by_status.get(CatalogStatus.REMOVED, 0),
        unchanged=by_status.get(CatalogStatus.UNCHANGED, 0),
        inserted=written.inserted,
        changed=written.changed,
    )


# --- helpers ------------------------------------------------------------------------


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= paths.MAX_PAGE:
        raise ValidationFailed("limit", limit, f"{limit!r} is not allowed (1 to {paths.MAX_PAGE})")


E = TypeVar("E", ArtifactType, CatalogStatus, EntrySort)


def _enum(field: str, value: Any, enum_cls: type[E]) -> E:
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ValidationFailed(field, value, f"{value!r} is not allowed ({allowed})") from None
