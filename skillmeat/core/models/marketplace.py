"""Marketplace sources (GitHub repositories registered by a project) and their catalog."""

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Computed,
    Double,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship

from skillmeat.core.models.base import (
    Base,
    TimestampMixin,
    UUIDPrimaryKeyMixin,
    not_blank,
    text_enum,
)
from skillmeat.core.models.enums import ArtifactType, CatalogStatus, TrustLevel, Visibility
from skillmeat.core.models.project import Project

# The CHECK expressions below are repeated verbatim in the migrations, which must
# not import this module (a revision must keep meaning what it meant when written).

# Canonical GitHub repository URL: owner (1-39 chars, alphanumerics and inner
# hyphens) and repository name (1-100 of [A-Za-z0-9._-]), no .git, no slash.
REPO_URL_CHECK = (
    "repo_url ~ '^https://github\\.com/[A-Za-z0-9](-?[A-Za-z0-9])*/[A-Za-z0-9._-]{1,100}$' "
    "AND char_length(split_part(repo_url, '/', 4)) <= 39 "
    "AND repo_url !~* '\\.git$' AND split_part(repo_url, '/', 5) NOT IN ('.', '..')"
)


MAX_HARVEST_LIMIT = 20
HARVEST_LIMIT_CHECK = f"harvest_limit >= 0 AND harvest_limit <= {MAX_HARVEST_LIMIT}"
DISCOVERED_NEVER_HARVESTS_CHECK = "discovered_at IS NULL OR NOT harvest_links"


def relative_path_check(column: str) -> str:
    """SQL for a canonical relative POSIX path inside a repository: '.' (the root) or
    segments joined by single '/', none of them empty, '.' or '..'; at most 1024
    bytes, so that it always fits a B-tree index entry."""
    return (
        f"octet_length({column}) <= 1024 AND ({column} = '.' "
        f"OR ({column} <> '' AND {column} !~ '(^|/)(\\.\\.?)?(/|$)'))"
    )


# C0 (text cannot hold NUL), DEL, C1 and the bidi embeddings, overrides and isolates;
# paths refuse backslashes too. PostgreSQL's regex engine reads the \x and \u escapes.
# skillmeat/core/schemas/marketplace.py refuses the same characters with a message.
UNCLEAN_TEXT_RE = r"[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
UNCLEAN_PATH_RE = r"[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\\]"


def clean_text_check(column: str, *, path: bool = False) -> CheckConstraint:
    """No control or bidi characters (nor backslashes in a path), and NFC, so that one
    name has one spelling in the unique (source_id, artifact_type, detected_path)."""
    regex = UNCLEAN_PATH_RE if path else UNCLEAN_TEXT_RE
    return CheckConstraint(
        f"{column} !~ '{regex}' AND {column} IS NFC NORMALIZED", name=f"{column}_clean"
    )


# The search document of an entry (revision 20261206_0040): weights A name, B tags,
# C description; names and tags in 'simple' (unstemmed) and 'english', descriptions in
# 'english'. An IMMUTABLE SQL function because array_to_string() is only STABLE.
SEARCH_VECTOR_SQL = "skillmeat_private.catalog_search_vector(name, description, tags)"


def max_chars(column: str, limit: int) -> CheckConstraint:
    return CheckConstraint(f"char_length({column}) <= {limit}", name=f"{column}_length")


class MarketplaceSource(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    __tablename__ = "marketplace_sources"
    __table_args__ = (
        CheckConstraint(REPO_URL_CHECK, name="repo_url_canonical"),
        not_blank("branch_or_ref", "branch_or_ref_not_blank"),
        CheckConstraint(relative_path_check("root_hint"), name="root_hint_relative"),
        CheckConstraint("jsonb_typeof(manual_map) = 'object'", name="manual_map_object"),
        max_chars("branch_or_ref", 255),
        clean_text_check("branch_or_ref"),
        clean_text_check("root_hint", path=True),
        # Every element of every value; lax mode counts a bare string value as one path.
        CheckConstraint(
            "jsonb_array_length(jsonb_path_query_array(manual_map, 'lax $.*[*]')) <= 100",
            name="manual_map_size",
        ),
        # GitHub owner/repo names are case-insensitive: one registration per project.
        Index(
            "uq_marketplace_sources_project_id_lower_repo_url",
            "project_id",
            func.lower(text("repo_url")),
            unique=True,
        ),
        # Expression indexes carry explicit names (the convention needs plain columns).
        # Path 5 (a project's sources, never-synced first) reads it in order.
        # id: path 5's keyset, and the policy helper listing a member's sources reads
        # (project_id, id) from the index alone.
        Index(
            "ix_marketplace_sources_project_id_last_sync",
            "project_id",
            text("last_sync NULLS FIRST"),
            "id",
        ),
        # Path 7 (rescan scheduler across all projects, admin) reads it in order.
        Index("ix_marketplace_sources_last_sync", text("last_sync NULLS FIRST")),
        # Harvesting: how many linked repositories a README may add, and depth 1.
        CheckConstraint(HARVEST_LIMIT_CHECK, name="harvest_limit_range"),
        CheckConstraint(DISCOVERED_NEVER_HARVESTS_CHECK, name="discovered_never_harvests"),
        Index(None, "discovered_by"),
    )

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    repo_url: Mapped[str] = mapped_column(Text)
    branch_or_ref: Mapped[str] = mapped_column(Text, server_default="HEAD")
    root_hint: Mapped[str | None] = mapped_column(Text)
    manual_map: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    last_sync: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    trust_level: Mapped[TrustLevel] = mapped_column(
        text_enum(TrustLevel, "trust_level"), server_default=TrustLevel.UNSIGNED.value
    )
    visibility: Mapped[Visibility] = mapped_column(
        text_enum(Visibility, "visibility"), server_default=Visibility.PRIVATE.value
    )
    # --- README link harvesting (docs/usage.md, "Discovered repositories") ---
    harvest_links: Mapped[bool] = mapped_column(server_default=text("false"))
    harvest_limit: Mapped[int] = mapped_column(Integer, server_default=text("5"))
    # Set when harvesting created the source (depth 1: it never harvests itself);
    # discovered_by names the source whose README linked it, while that one exists.
    discovered_at: Mapped[dt.datetime | None]
    discovered_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("marketplace_sources.id", ondelete="SET NULL")
    )

    project: Mapped[Project] = relationship()
    entries: Mapped[list["MarketplaceCatalogEntry"]] = relationship(
        back_populates="source", cascade="all, delete-orphan", passive_deletes=True
    )


class MarketplaceCatalogEntry(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    __tablename__ = "marketplace_catalog_entries"
    __table_args__ = (
        # Also serves path 1 (a source's entries of one type ordered by path) and
        # every (source_id) or (source_id, artifact_type) lookup: no separate index.
        # Named by hand: the convention's name would pass 63 characters.
        UniqueConstraint(
            "source_id",
            "artifact_type",
            "detected_path",
            name="uq_marketplace_catalog_entries_source_type_path",
        ),
        CheckConstraint(relative_path_check("detected_path"), name="detected_path_relative"),
        CheckConstraint(
            "upstream_url ~ '^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^[:space:]]*)?$'",
            name="upstream_url_https",
        ),
        not_blank("detected_version_sha", "detected_version_sha_not_blank"),
        clean_text_check("detected_path", path=True),
        max_chars("upstream_url", 2048),
        clean_text_check("upstream_url"),
        max_chars("detected_version_sha", 256),
        clean_text_check("detected_version_sha"),
        max_chars("imported_version_sha", 256),
        clean_text_check("imported_version_sha"),
        # double precision, not numeric: numeric comparisons are not LEAKPROOF, so
        # under RLS a minimum-confidence filter could not be an index condition.
        CheckConstraint(
            "confidence_score >= 0 AND confidence_score <= 100 "
            "AND confidence_score::numeric = round(confidence_score::numeric, 2)",
            name="confidence_score_range",
        ),
        # Catalog content (revision 20261206_0040).
        not_blank("name", "name_not_blank"),
        max_chars("name", 200),
        clean_text_check("name"),
        max_chars("description", 2000),
        clean_text_check("description"),
        CheckConstraint("cardinality(tags) <= 20", name="tags_size"),
        CheckConstraint(
            "(excluded_at IS NULL) = (excluded_reason IS NULL)", name="excluded_with_reason"
        ),
        max_chars("excluded_reason", 500),
        # Search (skillmeat_private.search_catalog*): btree_gin lets the tenant filter and
        # the text predicate be index conditions of one GIN scan.
        Index(None, "source_id", "search_vector", postgresql_using="gin"),
        # Name prefixes (ILIKE 'pyth%') and typos (name % 'pyhton-pro') by trigrams.
        Index(
            None,
            "source_id",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
        ),
        Index(None, "source_id", "status"),
        # id completes the keyset (confidence_score DESC, id DESC) of path 3.
        Index(None, "source_id", "confidence_score", "id"),
        # Paths 2 and 6 (what is new or updated): under RLS the planner's row estimate
        # for one source collapses, and it filtered status instead of using
        # (source_id, status); this partial index holds only those rows, in path order.
        Index(
            None,
            "source_id",
            "detected_path",
            "id",
            postgresql_where=text("status IN ('new', 'updated')"),
            # status lets path 6 count new and updated apart from the index alone.
            postgresql_include=["status"],
        ),
    )

    source_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("marketplace_sources.id", ondelete="CASCADE")
    )
    artifact_type: Mapped[ArtifactType] = mapped_column(text_enum(ArtifactType, "artifact_type"))
    detected_path: Mapped[str] = mapped_column(Text)
    upstream_url: Mapped[str] = mapped_column(Text)
    detected_version_sha: Mapped[str] = mapped_column(Text)
    detected_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    confidence_score: Mapped[float] = mapped_column(Double)
    status: Mapped[CatalogStatus] = mapped_column(
        text_enum(CatalogStatus, "status"), server_default=CatalogStatus.NEW.value
    )
    imported_at: Mapped[dt.datetime | None]
    # The version the user imported: a rescan compares against it, so an entry that
    # went away and came back changed is still "updated".
    imported_version_sha: Mapped[str | None] = mapped_column(Text)
    # Catalog content, refreshed by every rescan (a change rewrites the row).
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    # Hidden from listings, counts and search; a rescan never clears it.
    excluded_at: Mapped[dt.datetime | None]
    excluded_reason: Mapped[str | None] = mapped_column(Text)
    # Generated; deferred so that reading an entry never ships its search document.
    search_vector: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(SEARCH_VECTOR_SQL, persisted=True), deferred=True
    )

    source: Mapped[MarketplaceSource] = relationship(back_populates="entries")
