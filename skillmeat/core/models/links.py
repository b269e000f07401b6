"""Repositories a source's README links to (record_harvested_links; depth 1)."""

import datetime as dt
import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, func
from sqlalchemy.orm import Mapped, mapped_column

from skillmeat.core.models.base import Base


class MarketplaceSourceLink(Base):
    __tablename__ = "marketplace_source_links"
    __table_args__ = (
        CheckConstraint("source_id <> linked_source_id", name="not_itself"),
        CheckConstraint("position >= 0", name="position_not_negative"),
        # Which sources link to this one (a discovered source's finders).
        Index(None, "linked_source_id"),
    )

    source_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("marketplace_sources.id", ondelete="CASCADE"), primary_key=True
    )
    linked_source_id: Mapped[uuid.UUID] = mapped_column(
        # Named by hand: the convention's name would pass 63 characters.
        ForeignKey(
            "marketplace_sources.id",
            ondelete="CASCADE",
            name="fk_marketplace_source_links_linked_source_id",
        ),
        primary_key=True,
    )
    # Order of first appearance in the README.
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
