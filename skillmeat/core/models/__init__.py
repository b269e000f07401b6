"""Declarative models of the marketplace data layer."""

from skillmeat.core.models.base import NAMING_CONVENTION, Base
from skillmeat.core.models.enums import (
    ArtifactType,
    CatalogStatus,
    MemberRole,
    ScanState,
    TrustLevel,
    Visibility,
)
from skillmeat.core.models.links import MarketplaceSourceLink
from skillmeat.core.models.marketplace import MarketplaceCatalogEntry, MarketplaceSource
from skillmeat.core.models.project import Project, ProjectMember
from skillmeat.core.models.scans import MarketplaceScan
from skillmeat.core.models.tokens import MarketplaceSourceToken

__all__ = [
    "NAMING_CONVENTION",
    "ArtifactType",
    "Base",
    "CatalogStatus",
    "MarketplaceCatalogEntry",
    "MarketplaceScan",
    "MarketplaceSource",
    "MarketplaceSourceLink",
    "MarketplaceSourceToken",
    "MemberRole",
    "Project",
    "ProjectMember",
    "ScanState",
    "TrustLevel",
    "Visibility",
]
