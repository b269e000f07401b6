"""Repository functions for marketplace sources and their catalog.

Each takes a Session first and keyword-only options after, runs inside the
caller's `tenant_scope` (so row-level security applies), and never commits.
Filtering, sorting and paging happen in SQL; bulk work is set-based.
"""

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from skillmeat.core.database.errors import translated_errors
from skillmeat.core.database.tenant import current_scope
from skillmeat.core.errors import (
    ConstraintViolation,
    DuplicateSource,
    NotFound,
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
from skillmeat.core.repositories.catalog import exclude_entries as exclude_entries
from skillmeat.core.repositories.catalog import import_conflicts as import_conflicts
from skillmeat.core.repositories.catalog import restore_entries as restore_entries
from skillmeat.core.repositories.common import Page as Page
from skillmeat.core.repositories.common import check_id as _check_id
from skillmeat.core.repositories.common import (
    check_limit,
    enum_value,
    refuse_source_write,
    require_visible_source,
    require_visible_sources,
)
from skillmeat.core.repositories.query_paths import EntrySort

# The catalog's write paths live in sync.py; re-exported (`X as X`) so that
# `repositories.marketplace` stays the one front door.
from skillmeat.core.repositories.sync import SyncResult as SyncResult
from skillmeat.core.repositories.sync import lock_source
from skillmeat.core.repositories.sync import mark_imported as mark_imported
from skillmeat.core.repositories.sync import sync_catalog as sync_catalog

# Tokens at rest (tokens.py) and README link harvesting (links.py), same front door.
from skillmeat.core.repositories.tokens import RotationReport as RotationReport
from skillmeat.core.repositories.tokens import clear_source_token as clear_source_token
from skillmeat.core.repositories.tokens import rotate_token_keys as rotate_token_keys
from skillmeat.core.repositories.tokens import set_source_token as set_source_token
from skillmeat.core.schemas.marketplace import (
    CatalogEntryRead,
    SourceCreate,
    SourceRead,
    SourceUpdate,
)

Source = MarketplaceSource
Entry = MarketplaceCatalogEntry
MAX_ERROR_LENGTH = 10_000
DUPLICATE_REPO_CONSTRAINT = "uq_marketplace_sources_project_id_lower_repo_url"


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
    _check_id("source_id", source_id)
    row = session.execute(paths.with_latest_scan().where(Source.id == source_id)).first()
    if row is None:
        raise NotFound(f"source_id: {source_id} is not a source visible to this user")
    [source] = with_has_token(session, [_source_read(row)])
    return source


def _source_read(row: Any) -> SourceRead:
    """A SourceRead from a (source, scan_state, next_scan_at) row of `with_latest_scan`."""
    source, scan_state, next_scan_at = row
    return SourceRead.model_validate(source).model_copy(
        update={"scan_state": scan_state, "next_scan_at": next_scan_at}
    )


def with_has_token(session: Session, sources: list[SourceRead]) -> list[SourceRead]:
    """The sources with `has_token` read in one query (never the token or its ciphertext)."""
    if not sources:
        return sources
    with_tokens = set(session.execute(paths.sources_with_tokens([s.id for s in sources])).scalars())
    return [s.model_copy(update={"has_token": s.id in with_tokens}) for s in sources]


def update_source(session: Session, source_id: uuid.UUID, changes: SourceUpdate) -> SourceRead:
    """Apply the fields that were sent; PermissionDenied for a viewer, NotFound if invisible."""
    current_scope(session)
    _check_id("source_id", source_id)
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
        refuse_source_write(session, source_id, "update it")
    return get_source(session, source_id)  # with its latest scan


def delete_source(session: Session, source_id: uuid.UUID) -> None:
    """Delete a source and (by cascade) its catalog."""
    current_scope(session)
    _check_id("source_id", source_id)
    with translated_errors():
        deleted = session.execute(
            delete(Source).where(Source.id == source_id).returning(Source.id)
        ).first()
    if deleted is None:
        refuse_source_write(session, source_id, "delete it")


def list_sources(
    session: Session,
    *,
    project_id: uuid.UUID | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[SourceRead]:
    """Path 5: sources (of one project, or all visible), never-synced first."""
    current_scope(session)
    if project_id is not None:
        _check_id("project_id", project_id)
    check_limit(limit)
    after = paths.decode_cursor(cursor, "last_sync") if cursor else None
    rows = list(session.execute(paths.sources_page(project_id, limit=limit, after=after)).all())
    items = with_has_token(session, [_source_read(row) for row in rows[:limit]])
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
    check_limit(limit)
    cutoff = (
        dt.datetime.now(dt.UTC) - older_than if isinstance(older_than, dt.timedelta) else older_than
    )
    if cutoff.tzinfo is None:
        raise ValidationFailed("older_than", older_than, "must be timezone-aware (e.g. UTC)")
    rows = session.execute(paths.stale_sources(older_than=cutoff, limit=limit)).scalars()
    return with_has_token(session, [SourceRead.model_validate(row) for row in rows])


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
    include_excluded: bool = False,
) -> Page[CatalogEntryRead]:
    """Paths 1-3: a page of a source's catalog, filtered, sorted and paged in SQL.

    Excluded entries are left out unless include_excluded=True.

    The cursor is keyset-based (sort key, then id), so rows inserted between two
    pages are neither lost nor repeated.
    """
    current_scope(session)
    _check_id("source_id", source_id)
    check_limit(limit)
    sort_key = enum_value("sort", sort, EntrySort)
    types = [enum_value("artifact_types", t, ArtifactType) for t in artifact_types or ()]
    wanted = [enum_value("statuses", s, CatalogStatus) for s in statuses or ()]
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
        include_excluded=include_excluded,
    )
    rows = list(session.execute(stmt).scalars())
    if not rows and after is None:
        # An empty first page: an empty catalog, or a source this user cannot see.
        require_visible_source(session, source_id)
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
    session: Session,
    source_ids: Sequence[uuid.UUID] | None = None,
    *,
    include_excluded: bool = False,
) -> dict[uuid.UUID, dict[tuple[ArtifactType, CatalogStatus], int]]:
    """Path 4: entry counts by (artifact_type, status) per source, in one query.

    None counts every source the user can see; NotFound for a given id it cannot see
    (a visible source without entries is absent from the result); excluded entries
    only with include_excluded=True.
    """
    current_scope(session)
    for source_id in source_ids or ():
        _check_id("source_ids", source_id)
    counts: dict[uuid.UUID, dict[tuple[ArtifactType, CatalogStatus], int]] = {}
    for source_id, kind, status, n in session.execute(
        paths.catalog_counts(source_ids, include_excluded=include_excluded)
    ):
        counts.setdefault(source_id, {})[(ArtifactType(kind), CatalogStatus(status))] = n
    require_visible_sources(
        session, [i for i in dict.fromkeys(source_ids or ()) if i not in counts]
    )
    return counts


def record_sync_failure(session: Session, source_id: uuid.UUID, message: str) -> None:
    """A scan failed: keep its message in last_error; last_sync and the catalog stay."""
    current_scope(session)
    _check_id("source_id", source_id)
    if not isinstance(message, str) or not message.strip():
        raise ValidationFailed("message", message, "must say why the scan failed (not blank)")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        message = message.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in message:
        raise ValidationFailed(
            "message", message, "contains a NUL character, which PostgreSQL text cannot hold"
        )
    with translated_errors():
        lock_source(session, source_id)
        session.execute(
            update(Source)
            .where(Source.id == source_id)
            .values(last_error=message[:MAX_ERROR_LENGTH])
            .execution_options(synchronize_session=False)
        )


# --- helpers ------------------------------------------------------------------------


# README link harvesting (links.py), same front door; imported last (it reads helpers above).
from skillmeat.core.repositories.links import list_linked_sources as list_linked_sources  # noqa: E402
from skillmeat.core.repositories.links import record_harvested_links as record_harvested_links  # noqa: E402
