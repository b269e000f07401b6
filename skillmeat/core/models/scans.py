"""The scan queue: one row per requested scan of a source (docs/scans.md).

The shape of Sourcegraph's dbworker: states as a CHECK'd value set, a partial unique
index for "at most one queued or running scan per source", dequeue by one statement
with FOR UPDATE SKIP LOCKED over a partial index of queued rows, and a lease whose
token every later write of the worker must present.
"""

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from skillmeat.core.models.base import Base, TimestampMixin, UUIDPrimaryKeyMixin, text_enum
from skillmeat.core.models.enums import ScanState
from skillmeat.core.models.marketplace import clean_text_check, max_chars

# Repeated verbatim in the revision (which must not import this module).
ACTIVE_STATES_SQL = "state IN ('queued', 'running')"
HISTOGRAM_BUCKETS = 10
COUNT_COLUMNS = (
    "attempts",
    "duration_ms",
    "files_scanned",
    "bytes_fetched",
    "rate_limit_remaining",
    "entries_new",
    "entries_updated",
    "entries_removed",
    "entries_unchanged",
    "entries_inserted",
    "entries_changed",
)


class MarketplaceScan(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    __tablename__ = "marketplace_scans"
    __table_args__ = (
        # At most one queued or running scan per source: request_scan and the
        # scheduler insert with ON CONFLICT DO NOTHING against it.
        Index(
            "uq_marketplace_scans_source_id_active",
            "source_id",
            unique=True,
            postgresql_where=text(ACTIVE_STATES_SQL),
        ),
        # The claim: queued rows only, in claim order, so its cost does not grow
        # with the history of finished scans.
        Index(None, "not_before", "id", postgresql_where=text("state = 'queued'")),
        # The reaper and the dashboard's stalled count: running rows only.
        Index(None, "lease_expires_at", postgresql_where=text("state = 'running'")),
        # A source's scans newest first (list_scans' keyset, the source card's latest
        # scan, pruning); the dashboard's window.
        Index(None, "source_id", "created_at", "id"),
        Index(None, "created_at"),
        CheckConstraint(
            "(state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name="lease_when_running",
        ),
        CheckConstraint(
            " AND ".join(f"({c} IS NULL OR {c} >= 0)" for c in COUNT_COLUMNS),
            name="counts_not_negative",
        ),
        CheckConstraint(
            f"cardinality(confidence_histogram) = {HISTOGRAM_BUCKETS}",
            name="confidence_histogram_buckets",
        ),
        max_chars("worker", 200),
        clean_text_check("worker"),
        max_chars("error", 10_000),
        max_chars("commit_sha", 256),
        clean_text_check("commit_sha"),
    )

    source_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("marketplace_sources.id", ondelete="CASCADE")
    )
    state: Mapped[ScanState] = mapped_column(
        text_enum(ScanState, "state"), server_default=ScanState.QUEUED.value
    )
    # Runs that counted: a claim uses one; a rate-limit requeue gives it back.
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    not_before: Mapped[dt.datetime] = mapped_column(server_default=text("now()"))
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    worker: Mapped[str | None] = mapped_column(Text)
    # The fencing token: new on every claim, cleared when the claim ends.
    lease_token: Mapped[uuid.UUID | None]
    lease_expires_at: Mapped[dt.datetime | None]
    cancel_requested_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    commit_sha: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    files_scanned: Mapped[int | None] = mapped_column(Integer)
    bytes_fetched: Mapped[int | None] = mapped_column(BigInteger)
    rate_limit_remaining: Mapped[int | None] = mapped_column(Integer)
    # The SyncResult of a succeeded scan.
    new: Mapped[int | None] = mapped_column("entries_new", Integer)
    updated: Mapped[int | None] = mapped_column("entries_updated", Integer)
    removed: Mapped[int | None] = mapped_column("entries_removed", Integer)
    unchanged: Mapped[int | None] = mapped_column("entries_unchanged", Integer)
    inserted: Mapped[int | None] = mapped_column("entries_inserted", Integer)
    changed: Mapped[int | None] = mapped_column("entries_changed", Integer)
    # Detected artifacts per confidence decile: [0, 10), [10, 20), ..., [90, 100].
    confidence_histogram: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
