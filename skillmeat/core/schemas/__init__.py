"""Pydantic v2 inputs (validated before the database sees them) and read models."""

from skillmeat.core.schemas.marketplace import (
    CatalogEntryRead,
    DetectedArtifact,
    ImportConflict,
    ImportConflictMember,
    SearchHit,
    SourceCreate,
    SourceRead,
    SourceUpdate,
    normalize_repo_url,
    validate_artifacts,
)
from skillmeat.core.schemas.projects import MemberRead, ProjectCreate, ProjectRead

__all__ = [
    "CatalogEntryRead",
    "DetectedArtifact",
    "ImportConflict",
    "ImportConflictMember",
    "MemberRead",
    "ProjectCreate",
    "ProjectRead",
    "SearchHit",
    "SourceCreate",
    "SourceRead",
    "SourceUpdate",
    "normalize_repo_url",
    "validate_artifacts",
]
