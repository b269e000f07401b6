"""The catalog as users curate it: exclusions and import conflicts.

Functions take a Session first, run inside the caller's `tenant_scope` (row-level
security applies) and never commit. Re-exported by `repositories.marketplace`.
"""

import unicodedata
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from skillmeat.core.database.errors import translated_errors
from skillmeat.core.database.tenant import current_scope
from skillmeat.core.errors import ValidationFailed
from skillmeat.core.models import MarketplaceCatalogEntry, MarketplaceSource
from skillmeat.core.repositories import query_paths as paths
from skillmeat.core.repositories.common import check_id
from skillmeat.core.repositories.sync import lock_entry_sources
from skillmeat.core.schemas.marketplace import (
    MAX_EXCLUSION_REASON_CHARS,
    MAX_NAME_CHARS,
    CatalogEntryRead,
    ImportConflict,
    ImportConflictMember,
)

Entry = MarketplaceCatalogEntry
Source = MarketplaceSource


def _ids(entry_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    if entry_ids is None or isinstance(entry_ids, (str, bytes)):
        raise ValidationFailed("entry_ids", entry_ids, "must be an iterable of uuid.UUID")
    return [check_id("entry_ids", entry_id) for entry_id in dict.fromkeys(entry_ids)]


def _refused_char(c: str) -> bool:
    """Control (C0, DEL, C1) and bidi characters, as the other text columns refuse."""
    o = ord(c)
    return o < 32 or 0x7F <= o <= 0x9F or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069


def _reason(reason: Any) -> str:
    rule = f"must say why, in 1-{MAX_EXCLUSION_REASON_CHARS} characters without control characters"
    if not isinstance(reason, str):
        raise ValidationFailed("reason", reason, f"{reason!r} is not allowed ({rule})")
    text_ = " ".join(reason.split())
    if not text_ or len(text_) > MAX_EXCLUSION_REASON_CHARS:
        why = "is blank" if not text_ else f"has {len(text_)} characters"
        raise ValidationFailed("reason", reason, f"{text_[:40]!r} is not allowed ({why}; {rule})")
    if any(_refused_char(c) for c in text_):
        raise ValidationFailed("reason", reason, f"{text_[:40]!r} is not allowed ({rule})")
    try:
        text_.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed("reason", reason, f"is not allowed ({rule})") from None
    return unicodedata.normalize("NFC", text_)


def _write_exclusion(
    session: Session, ids: list[uuid.UUID], values: dict[str, Any], where: Any
) -> list[uuid.UUID]:
    """Lock like mark_imported (sources, then entries, each in id order) and update."""
    with translated_errors():
        lock_entry_sources(session, ids, action="exclude or restore them")
        locked = (
            select(Entry.id)
            .where(Entry.id == paths.any_uuid(ids))
            .order_by(Entry.id)
            .with_for_update(key_share=True)
        )
        written = session.execute(
            update(Entry)
            .where(Entry.id.in_(locked), where)
            .values(**values)
            .returning(Entry.id)
            .execution_options(synchronize_session=False)
        ).scalars()
        return list(written)


def exclude_entries(
    session: Session, entry_ids: Iterable[uuid.UUID], *, reason: str
) -> list[uuid.UUID]:
    """Hide entries from listings, counts and search (editor or owner); returns the ids
    written. The status rules go on underneath and a rescan never clears it. An entry
    already excluded keeps its time and takes the new reason. NotFound for an entry this
    user cannot see, PermissionDenied for one it may only read; nothing is written then."""
    current_scope(session)
    ids = _ids(entry_ids)
    why = _reason(reason)
    if not ids:
        return []
    return _write_exclusion(
        session,
        ids,
        {"excluded_at": text("coalesce(excluded_at, now())"), "excluded_reason": why},
        Entry.excluded_reason.is_distinct_from(why),
    )


def restore_entries(session: Session, entry_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Undo exclude_entries (editor or owner); returns the ids that were excluded."""
    current_scope(session)
    ids = _ids(entry_ids)
    if not ids:
        return []
    return _write_exclusion(
        session, ids, {"excluded_at": None, "excluded_reason": None}, Entry.excluded_at.is_not(None)
    )


# The given entries' (project, type, lower(name)) keys, then every entry of those
# projects sharing a key that is given or already imported; groups of one are no
# conflict. Under RLS: a viewer sees only its projects' entries.
IMPORT_CONFLICTS = """
WITH given AS (
    SELECT DISTINCT s.project_id, e.artifact_type, lower(e.name) AS key
      FROM marketplace_catalog_entries e
      JOIN marketplace_sources s ON s.id = e.source_id
     WHERE e.id = ANY (:ids)
), grouped AS (
    SELECT g.project_id, g.artifact_type, g.key, e.id, s.repo_url,
           e.id <> ALL (:ids) AS imported,
           count(*) OVER (PARTITION BY g.project_id, g.artifact_type, g.key) AS size
      FROM given g
      JOIN marketplace_sources s ON s.project_id = g.project_id
      JOIN marketplace_catalog_entries e
        ON e.source_id = s.id AND e.artifact_type = g.artifact_type AND lower(e.name) = g.key
     WHERE e.id = ANY (:ids) OR e.imported_at IS NOT NULL
)
SELECT project_id, artifact_type, key, id, repo_url, imported
  FROM grouped
 WHERE size > 1
 ORDER BY project_id, artifact_type, key, imported DESC, id
"""


def suggested_name(name: str, repo_url: str, taken: set[str]) -> str:
    """`<name>-<repository>` (then -2, -3, ...), at most 200 characters, not in `taken`
    (lower-cased names); the PRD's "auto-suffix"."""
    repo = repo_url.rstrip("/").rsplit("/", 1)[-1]
    n = 1
    while True:
        suffix = f"-{repo}" + (f"-{n}" if n > 1 else "")
        candidate = name[: max(1, MAX_NAME_CHARS - len(suffix))] + suffix
        candidate = candidate[:MAX_NAME_CHARS]
        if candidate.lower() not in taken:
            return candidate
        n += 1


def import_conflicts(session: Session, entry_ids: Iterable[uuid.UUID]) -> list[ImportConflict]:
    """Groups of the given entries, with the entries already imported in the same project,
    that share (artifact_type, lower(name)); each member with a distinct suggested name
    (an imported entry keeps its own). Entries the user cannot see are ignored (viewer)."""
    current_scope(session)
    ids = _ids(entry_ids)
    if not ids:
        return []
    with translated_errors():
        rows = session.execute(text(IMPORT_CONFLICTS), {"ids": ids}).all()
        if not rows:
            return []
        entries = {
            row.id: CatalogEntryRead.model_validate(row)
            for row in session.execute(
                select(Entry).where(Entry.id == paths.any_uuid([r.id for r in rows]))
            ).scalars()
        }
    conflicts: list[ImportConflict] = []
    group: list[Any] = []
    for row in [*rows, None]:
        if group and (
            row is None
            or (row.project_id, row.artifact_type, row.key)
            != (group[0].project_id, group[0].artifact_type, group[0].key)
        ):
            conflicts.append(_conflict(group, entries))
            group = []
        if row is not None:
            group.append(row)
    return conflicts


def _conflict(group: list[Any], entries: dict[uuid.UUID, CatalogEntryRead]) -> ImportConflict:
    taken = {entries[r.id].name.lower() for r in group if r.imported}
    members = []
    for r in group:
        entry = entries[r.id]
        name = entry.name if r.imported else suggested_name(entry.name, r.repo_url, taken)
        taken.add(name.lower())
        members.append(
            ImportConflictMember(
                entry=entry, repo_url=r.repo_url, imported=r.imported, suggested_name=name
            )
        )
    first = group[0]
    return ImportConflict(
        project_id=first.project_id,
        artifact_type=first.artifact_type,
        name=first.key,
        members=members,
    )
