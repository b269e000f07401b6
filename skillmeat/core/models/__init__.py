"""Declarative models of the marketplace data layer."""

from skillmeat.core.models.base import NAMING_CONVENTION, Base
from skillmeat.core.models.enums import (
    ArtifactType,
    CatalogStatus,
    MemberRole,
    TrustLevel,
    Visibility,
)
from skillmeat.core.models.marketplace import MarketplaceCatalogEntry, MarketplaceSource
from skillmeat.core.models.project import Project, ProjectMember

__all__ = [
    "NAMING_CONVENTION",
    "ArtifactType",
    "Base",
    "CatalogStatus",
    "MarketplaceCatalogEntry",
    "MarketplaceSource",
    "MemberRole",
    "Project",
    "ProjectMember",
    "TrustLevel",
    "Visibility",
]
