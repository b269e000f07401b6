"""Read models and inputs of the scan queue (docs/scans.md)."""

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from skillmeat.core.models.enums import ScanState

__all__ = ["ClaimedScan", "ScanHealth", "ScanRead", "ScanStats"]


class ScanStats(BaseModel):
    """What a worker measured while scanning: logged on the scan row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_ms: int = Field(ge=0)
    files_scanned: int = Field(ge=0)
    bytes_fetched: int = Field(ge=0)
    # GitHub's X-RateLimit-Remaining after the scan, when the worker knows it.
    rate_limit_remaining: int | None = Field(default=None, ge=0)


class ScanRead(BaseModel):
    """A stored scan, built from a `MarketplaceScan` row."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: uuid.UUID
    source_id: uuid.UUID
    state: ScanState
    attempts: int
    not_before: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    worker: str | None
    lease_expires_at: dt.datetime | None
    cancel_requested_at: dt.datetime | None
    error: str | None
    commit_sha: str | None
    duration_ms: int | None
    files_scanned: int | None
    bytes_fetched: int | None
    rate_limit_remaining: int | None
    # The SyncResult of a succeeded scan.
    new: int | None
    updated: int | None
    removed: int | None
    unchanged: int | None
    inserted: int | None
    changed: int | None
    # Detected artifacts per confidence decile: [0, 10), [10, 20), ..., [90, 100].
    confidence_histogram: list[int] | None
    created_at: dt.datetime
    updated_at: dt.datetime


class ClaimedScan(BaseModel):
    """A scan a worker holds: the source's stored configuration and the lease to present."""

    model_config = ConfigDict(frozen=True)

    scan_id: uuid.UUID
    source_id: uuid.UUID
    repo_url: str
    branch_or_ref: str
    root_hint: str | None
    manual_map: dict[str, Any]
    attempt: int
    lease_token: uuid.UUID
    lease_expires_at: dt.datetime
    # The source's GitHub token, decrypted for the worker (None: none stored, or its
    # key id is not in SKILLMEAT_TOKEN_KEYS; a log line names the source). Masked
    # in repr and str: `token.get_secret_value()` where the clone needs it.
    token: SecretStr | None = None


class ScanHealth(BaseModel):
    """What a monitoring dashboard polls (docs/scans.md says what each number means)."""

    model_config = ConfigDict(frozen=True)

    since: dt.datetime
    # Scans requested since `since`, by state (every state present, 0 when none).
    counts: dict[ScanState, int]
    # succeeded / (succeeded + failed) among them; None before any finished.
    success_ratio: float | None
    p50_duration_ms: float | None
    p95_duration_ms: float | None
    # How long the oldest due queued scan has waited (now - not_before), any age.
    oldest_queued_age: dt.timedelta | None
    # Running scans whose lease has expired: the reaper's next catch.
    stalled: int
    # The lowest GitHub rate-limit remainder a scan reported since `since`.
    min_rate_limit_remaining: int | None
