"""The named query paths: one definition, used by the repositories, the EXPLAIN
tests and `skillmeat-db explain` / `bench queries`.

Every predicate compares uuid, text, double precision or timestamptz columns,
whose operators are LEAKPROOF: under row-level security PostgreSQL may then use
them as index conditions next to the policy's own `= ANY (InitPlan)` condition.
"""

import base64
import binascii
import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeAlias

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from skillmeat.core.errors import ValidationFailed
from skillmeat.core.models import (
    ArtifactType,
    CatalogStatus,
    MarketplaceCatalogEntry,
    MarketplaceScan,
    MarketplaceSource,
    MarketplaceSourceToken,
    ScanState,
)

AnySelect: TypeAlias = Select[*tuple[Any, ...]]
Entry = MarketplaceCatalogEntry
Source = MarketplaceSource
Scan = MarketplaceScan
SourceToken = MarketplaceSourceToken

MAX_PAGE = 500


class EntrySort(StrEnum):
    """Orders a catalog page can be read in; each ends with id as the tie-breaker."""

    PATH = "path"  # detected_path ascending
    CONFIDENCE = "confidence"  # confidence_score descending
    # detected_at descending: the newest versions first (detected_at is when the entry's
    # current version was first detected, not when it was last seen)
    DETECTED_AT = "detected_at"


_SORT_KEYS: dict[EntrySort, tuple[Any, bool]] = {
    # sort -> (column, descending)
    EntrySort.PATH: (Entry.detected_path, False),
    EntrySort.CONFIDENCE: (Entry.confidence_score, True),
    EntrySort.DETECTED_AT: (Entry.detected_at, True),
}


# --- opaque keyset cursors ----------------------------------------------------------


def encode_cursor(sort: str, key: Any, row_id: uuid.UUID) -> str:
    """An opaque token for "the row after (key, id)" in `sort` order."""
    if isinstance(key, dt.datetime):
        key = key.isoformat()
    raw = json.dumps({"s": sort, "k": key, "i": str(row_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, uuid.UUID]:
    """(key, id) from a cursor made by `encode_cursor` for the same sort; else ValidationFailed."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data["s"] != sort:
            raise ValidationFailed(
                "cursor",
                cursor,
                f"cursor was made for sort {data['s']!r}, not {sort!r} "
                "(restart from the first page)",
            )
        key = data["k"]
        if sort == EntrySort.DETECTED_AT:
            key = dt.datetime.fromisoformat(key)  # never null: a TypeError is refused below
        elif sort == "created_at":
            key = dt.datetime.fromisoformat(key)
        elif sort == "last_sync":
            key = None if key is None else dt.datetime.fromisoformat(key)
        elif sort in (EntrySort.CONFIDENCE, "search"):
            key = float(key)
        if isinstance(key, float) and not math.isfinite(key):
            raise ValueError("confidence key must be finite")
        if sort == EntrySort.PATH and (not isinstance(key, str) or "\x00" in key):
            raise TypeError("path key must be text without NUL")
        return key, uuid.UUID(str(data["i"]))
    except ValidationFailed:
        raise
    except (
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        binascii.Error,
        UnicodeDecodeError,
    ) as exc:
        raise ValidationFailed(
            "cursor", cursor, f"{cursor[:40]!r} is not a cursor returned by this listing"
        ) from exc


# --- catalog entries (paths 1-4, 6) -------------------------------------------------


def entries_page(
    source_id: uuid.UUID,
    *,
    artifact_types: Sequence[ArtifactType] | None = None,
    statuses: Sequence[CatalogStatus] | None = None,
    min_confidence: float | None = None,
    sort: EntrySort = EntrySort.PATH,
    limit: int = 50,
    after: tuple[Any, uuid.UUID] | None = None,
    include_excluded: bool = False,
) -> AnySelect:
    """Paths 1-3: a page of a source's entries, filtered, sorted and paged in SQL.

    Fetches limit + 1 rows so the caller knows whether another page follows.
    """
    column, descending = _SORT_KEYS[sort]
    where: list[ColumnElement[bool]] = [Entry.source_id == source_id]
    if not include_excluded:
        where.append(not_excluded())
    if artifact_types:
        where.append(_in(Entry.artifact_type, [t.value for t in artifact_types]))
    if statuses:
        where.append(_in(Entry.status, [s.value for s in statuses]))
    if min_confidence is not None:
        where.append(Entry.confidence_score >= float(min_confidence))
    if after is not None:
        key, row_id = after
        pair = tuple_(column, Entry.id)
        where.append(
            pair < tuple_(literal(key), literal(row_id))
            if descending
            else pair > tuple_(literal(key), literal(row_id))
        )
    order = (column.desc(), Entry.id.desc()) if descending else (column.asc(), Entry.id.asc())
    return select(Entry).where(*where).order_by(*order).limit(limit + 1)


def uuid_array(ids: Sequence[uuid.UUID]) -> BindParameter[Any]:
    """One uuid[] parameter (not an IN list): one plan whatever the number of ids."""
    array_type: Any = ARRAY(PG_UUID(as_uuid=True))
    return bindparam(None, list(ids), type_=array_type)


def any_uuid(ids: Sequence[uuid.UUID]) -> ColumnElement[Any]:
    """`= ANY(:uuid[])`: one parameter and one plan whatever the number of ids."""
    return any_(uuid_array(ids))


def _in(column: Any, values: list[str]) -> ColumnElement[bool]:
    """Equality or IN with the values rendered inline (they are validated enum values).

    Inline, so that a prepared statement's generic plan can still prove a partial
    index's predicate (status IN ('new', 'updated')) from the query's own filter.
    """
    if len(values) == 1:
        return column == bindparam(None, values[0], literal_execute=True)  # type: ignore[no-any-return]
    return column.in_(bindparam(None, values, expanding=True, literal_execute=True))  # type: ignore[no-any-return]


def not_excluded() -> ColumnElement[bool]:
    """Excluded entries are hidden from listings, counts and search by default.

    IS NULL is a null test, not an operator call: RLS never has to order it after the
    policy, and rows are few (an exclusion is a user's decision, one entry at a time).
    """
    return Entry.excluded_at.is_(None)


def catalog_counts(
    source_ids: Sequence[uuid.UUID] | None = None, *, include_excluded: bool = False
) -> AnySelect:
    """Path 4: entry counts by (source, artifact_type, status); all visible sources if None."""
    stmt: AnySelect = select(
        Entry.source_id, Entry.artifact_type, Entry.status, func.count().label("entries")
    ).group_by(Entry.source_id, Entry.artifact_type, Entry.status)
    if not include_excluded:
        stmt = stmt.where(not_excluded())
    if source_ids is not None:
        stmt = stmt.where(Entry.source_id == any_(uuid_array(source_ids)))
    return stmt.order_by(Entry.source_id, Entry.artifact_type, Entry.status)


def overview(source_ids: Sequence[uuid.UUID] | None = None) -> AnySelect:
    """Path 6: per visible source, how many entries are new and updated.

    With source_ids=None it relies on row-level security alone (what the UI runs);
    with ids it is the explicit-filter form the benchmark compares against.
    """
    pending = [CatalogStatus.NEW.value, CatalogStatus.UPDATED.value]
    stmt: AnySelect = (
        select(
            Entry.source_id,
            func.count().filter(Entry.status == CatalogStatus.NEW.value).label("new"),
            func.count().filter(Entry.status == CatalogStatus.UPDATED.value).label("updated"),
        )
        .where(_in(Entry.status, pending))
        .group_by(Entry.source_id)
        .order_by(Entry.source_id)
    )
    if source_ids is not None:
        stmt = stmt.where(Entry.source_id == any_(uuid_array(source_ids)))
    return stmt


# --- sources (paths 5, 7) -----------------------------------------------------------


def _last_sync_after(after: tuple[dt.datetime | None, uuid.UUID]) -> ColumnElement[bool]:
    """Rows after (last_sync, id) in `last_sync NULLS FIRST, id` order."""
    key, row_id = after
    if key is None:
        return or_(
            and_(Source.last_sync.is_(None), Source.id > row_id), Source.last_sync.is_not(None)
        )
    return or_(Source.last_sync > key, and_(Source.last_sync == key, Source.id > row_id))


def with_latest_scan() -> AnySelect:
    """Sources with their latest scan's state and, while it is queued, when it is due.

    A LEFT JOIN LATERAL ... LIMIT 1: one probe of (source_id, created_at, id) per
    source row read, in the listing's own query, so a source card needs no second one.
    """
    latest = (
        select(
            Scan.state.label("scan_state"),
            case((Scan.state == ScanState.QUEUED.value, Scan.not_before)).label("next_scan_at"),
        )
        .where(Scan.source_id == Source.id)
        .order_by(Scan.created_at.desc(), Scan.id.desc())
        .limit(1)
        .lateral("latest_scan")
    )
    return select(Source, latest.c.scan_state, latest.c.next_scan_at).outerjoin(latest, true())


def sources_with_tokens(source_ids: Sequence[uuid.UUID]) -> AnySelect:
    """Which of these sources have a stored token: the tokens' primary key, the one
    column of marketplace_source_tokens the request roles may read. A second query
    after a page, not a column of path 5 (its plan stays what docs/performance.md shows)."""
    return select(SourceToken.source_id).where(SourceToken.source_id.in_(source_ids))


def sources_page(
    project_id: uuid.UUID | None = None,
    *,
    limit: int = 50,
    after: tuple[dt.datetime | None, uuid.UUID] | None = None,
) -> AnySelect:
    """Path 5: a project's sources, never-synced first, then oldest sync first; each
    with its latest scan's state (`with_latest_scan`)."""
    stmt: AnySelect = with_latest_scan()
    if project_id is not None:
        stmt = stmt.where(Source.project_id == project_id)
    if after is not None:
        stmt = stmt.where(_last_sync_after(after))
    return stmt.order_by(Source.last_sync.asc().nulls_first(), Source.id).limit(limit + 1)


def stale_sources(*, older_than: dt.datetime, limit: int) -> AnySelect:
    """Path 7 (admin): the sources across all projects most in need of a rescan."""
    return (
        select(Source)
        .where(or_(Source.last_sync.is_(None), Source.last_sync < older_than))
        .order_by(Source.last_sync.asc().nulls_first(), Source.id)
        .limit(limit)
    )


# --- the registry read by the EXPLAIN tests and `skillmeat-db explain` / `bench` ----


@dataclass(frozen=True)
class PathParams:
    """Concrete values to run the named paths with (one user, one of its sources)."""

    project_id: uuid.UUID
    source_id: uuid.UUID
    artifact_type: ArtifactType
    visible_source_ids: Sequence[uuid.UUID]
    min_confidence: float = 80.0
    older_than: dt.datetime = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    stale_limit: int = 100


@dataclass(frozen=True)
class NamedPath:
    """A query the backend runs, as sent under RLS and in an explicit-filter form.

    `explicit` returns the same rows with the tenant filter spelled out; run by a
    role that bypasses RLS it is the baseline that RLS's overhead is measured against.
    """

    key: str
    title: str
    admin: bool
    under_rls: Callable[[PathParams], AnySelect]
    # None: the statement already names its source or project.
    explicit_filter: Callable[[PathParams], AnySelect] | None = None

    def explicit(self, params: PathParams) -> AnySelect:
        return (self.explicit_filter or self.under_rls)(params)


NAMED_PATHS: tuple[NamedPath, ...] = (
    NamedPath(
        "1",
        "entries of a source by type, by path, first page",
        False,
        (lambda p: entries_page(p.source_id, artifact_types=[p.artifact_type])),
    ),
    NamedPath(
        "2",
        "entries of a source with status new or updated",
        False,
        (lambda p: entries_page(p.source_id, statuses=[CatalogStatus.NEW, CatalogStatus.UPDATED])),
    ),
    NamedPath(
        "3",
        "entries of a source by confidence, first page",
        False,
        (lambda p: entries_page(p.source_id, sort=EntrySort.CONFIDENCE)),
    ),
    NamedPath(
        "3b",
        "entries of a source by confidence, minimum confidence",
        False,
        (
            lambda p: entries_page(
                p.source_id, sort=EntrySort.CONFIDENCE, min_confidence=p.min_confidence
            )
        ),
    ),
    NamedPath(
        "4",
        "counts of a source's entries by type and status",
        False,
        (lambda p: catalog_counts([p.source_id])),
    ),
    NamedPath(
        "5",
        "a project's sources, never-synced first",
        False,
        (lambda p: sources_page(p.project_id)),
    ),
    NamedPath(
        "6",
        "overview: new/updated counts of every visible source (RLS alone)",
        False,
        lambda p: overview(),
        lambda p: overview(p.visible_source_ids),
    ),
    NamedPath(
        "7",
        "rescan scheduler: stalest sources across all projects (admin)",
        True,
        (lambda p: stale_sources(older_than=p.older_than, limit=p.stale_limit)),
    ),
)
