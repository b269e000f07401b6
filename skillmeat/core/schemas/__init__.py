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
from skillmeat.core.schemas.scans import ClaimedScan, ScanHealth, ScanRead, ScanStats

__all__ = [
    "CatalogEntryRead",
    "ClaimedScan",
    "DetectedArtifact",
    "ImportConflict",
    "ImportConflictMember",
    "MemberRead",
    "ProjectCreate",
    "ProjectRead",
    "ScanHealth",
    "ScanRead",
    "ScanStats",
    "SearchHit",
    "SourceCreate",
    "SourceRead",
    "SourceUpdate",
    "normalize_repo_url",
    "validate_artifacts",
]
