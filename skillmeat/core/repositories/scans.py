"""The scan queue's store: request, claim, heartbeat, finish, reap (docs/scans.md).

One row per requested scan in `marketplace_scans`. Members request and cancel
scans of sources they edit; a worker (`tenant_scope(session, worker=True)`)
claims due scans with one `FOR UPDATE SKIP LOCKED` statement, and every later
write of its run presents the claim's `lease_token` (a fencing token: a worker
whose lease expired and whose scan was reaped or claimed again cannot write).
Like every repository function these never commit; the scope's transaction does.
"""

import datetime as dt
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.orm import Session

from skillmeat.core.database.errors import translated_errors
from skillmeat.core.database.tenant import Scope, current_scope
from skillmeat.core.errors import (
    LeaseLost,
    NotFound,
    PermissionDenied,
    ScopeError,
    ValidationFailed,
)
from skillmeat.core.limits import ScanLimits
from skillmeat.core.models import MarketplaceScan, MarketplaceSource, ScanState
from skillmeat.core.models.scans import HISTOGRAM_BUCKETS
from skillmeat.core.repositories import query_paths as paths
from skillmeat.core.repositories.common import Page, check_id
from skillmeat.core.repositories.marketplace import MAX_ERROR_LENGTH
from skillmeat.core.repositories.sync import SyncResult, sync_catalog
from skillmeat.core.repositories.tokens import open_claimed_token
from skillmeat.core.schemas.marketplace import DetectedArtifact, validate_artifacts
from skillmeat.core.schemas.scans import ClaimedScan, ScanHealth, ScanRead, ScanStats

Scan = MarketplaceScan
Source = MarketplaceSource

BACKOFF_BASE = dt.timedelta(seconds=30)
BACKOFF_CAP = dt.timedelta(hours=6)
BACKOFF_JITTER = 0.2
DEFAULT_LEASE = dt.timedelta(minutes=5)
MAX_WORKER_CHARS = 200
MAX_COMMIT_SHA_CHARS = 256
_TERMINAL = "('succeeded', 'failed', 'cancelled')"


# --- backoff ------------------------------------------------------------------------


def scan_backoff(attempt: int, *, rand: Callable[[], float] = random.random) -> dt.timedelta:
    """How long a scan waits after its `attempt`-th failed run (1 = the first).

    30 s doubling per attempt, capped at 6 h, times a jitter factor uniform in
    [0.8, 1.2] (`rand` returns a float in [0, 1)) so that scans failing together do
    not retry together; the result never exceeds the cap.
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValidationFailed("attempt", attempt, f"{attempt!r} is not allowed (an int >= 1)")
    cap = BACKOFF_CAP.total_seconds()
    # The exponent is bounded: 2**20 * 30 s is far past the cap already.
    nominal = min(cap, BACKOFF_BASE.total_seconds() * 2 ** min(attempt - 1, 20))
    factor = 1 + BACKOFF_JITTER * (2 * rand() - 1)
    return dt.timedelta(seconds=min(cap, nominal * factor))


# --- members: request, cancel, list -------------------------------------------------


def request_scan(session: Session, source_id: uuid.UUID) -> ScanRead:
    """Queue a scan of the source now (editor or owner); if it already has a queued or
    running scan, return that one and add nothing."""
    current_scope(session)
    check_id("source_id", source_id)
    with translated_errors():
        if session.execute(select(Source.id).where(Source.id == source_id)).first() is None:
            raise NotFound(f"source_id: {source_id} is not a source visible to this user")
        # Two requests racing: the loser's INSERT waits for the winner's commit, then does
        # nothing, and its next statement (a new READ COMMITTED snapshot) sees the winner.
        # The loop covers an active scan that finished between the two statements.
        for _ in range(3):
            added = _scan_from(
                session,
                "INSERT INTO marketplace_scans (source_id) VALUES (:source_id) "
                "ON CONFLICT (source_id) WHERE state IN ('queued', 'running') DO NOTHING "
                "RETURNING *",
                {"source_id": source_id},
            )
            if added is not None:
                return added
            active = session.execute(
                select(Scan)
                .where(Scan.source_id == source_id, Scan.state.in_(["queued", "running"]))
                .execution_options(populate_existing=True)
            ).scalar_one_or_none()
            if active is not None:
                return ScanRead.model_validate(active)
    raise PermissionDenied(  # pragma: no cover (three scans finished in a row meanwhile)
        f"source_id: {source_id} kept changing scans; request again"
    )


def cancel_scan(session: Session, scan_id: uuid.UUID) -> ScanRead:
    """A queued scan becomes cancelled; a running one gets a cancel request that its
    worker sees on its next heartbeat (editor or owner). A finished scan is returned
    unchanged."""
    current_scope(session)
    check_id("scan_id", scan_id)
    with translated_errors():
        cancelled = _scan_from(
            session,
            "UPDATE marketplace_scans SET "
            "state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, "
            "finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END, "
            "cancel_requested_at = coalesce(cancel_requested_at, now()) "
            "WHERE id = :scan_id AND state IN ('queued', 'running') RETURNING *",
            {"scan_id": scan_id},
        )
        if cancelled is not None:
            return cancelled
        scan = get_scan(session, scan_id)
    if scan.state in (ScanState.QUEUED, ScanState.RUNNING):
        raise PermissionDenied(
            f"permission denied: this user may read scan {scan_id} but not cancel it "
            "(editor or owner role required)"
        )
    return scan


def get_scan(session: Session, scan_id: uuid.UUID) -> ScanRead:
    current_scope(session)
    check_id("scan_id", scan_id)
    row = session.execute(
        select(Scan).where(Scan.id == scan_id).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"scan_id: {scan_id} is not a scan visible to this user")
    return ScanRead.model_validate(row)


def list_scans(
    session: Session, source_id: uuid.UUID, *, limit: int = 20, cursor: str | None = None
) -> Page[ScanRead]:
    """A source's scans, newest first, keyset-paged (viewer)."""
    current_scope(session)
    check_id("source_id", source_id)
    _check_count("limit", limit, 1, paths.MAX_PAGE)
    stmt = select(Scan).where(Scan.source_id == source_id)
    if cursor is not None:
        key, row_id = paths.decode_cursor(cursor, "created_at")
        stmt = stmt.where(tuple_(Scan.created_at, Scan.id) < tuple_(key, row_id))
    stmt = stmt.order_by(Scan.created_at.desc(), Scan.id.desc()).limit(limit + 1)
    rows = list(session.execute(stmt.execution_options(populate_existing=True)).scalars())
    items = [ScanRead.model_validate(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = paths.encode_cursor("created_at", items[-1].created_at, items[-1].id)
    return Page(items, next_cursor)


# --- workers: claim, heartbeat, complete, fail ---------------------------------------

# One round trip: the due scans in claim order from the partial index of queued
# scans (its size is the queue's, not the history's), locked SKIP LOCKED so
# concurrent claimers take disjoint rows, then marked running with a new token.
# The source's encrypted token comes along (decrypted in Python, never in SQL).
CLAIM_SQL = """
WITH due AS (
    SELECT id FROM marketplace_scans
     WHERE state = 'queued' AND not_before <= now()
     ORDER BY not_before, id
     LIMIT :limit
       FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE marketplace_scans s
       SET state = 'running', attempts = s.attempts + 1, worker = :worker,
           lease_token = gen_random_uuid(), lease_expires_at = clock_timestamp() + :lease,
           started_at = clock_timestamp(), heartbeat_at = clock_timestamp(), finished_at = NULL
      FROM due, marketplace_sources src
     WHERE s.id = due.id AND src.id = s.source_id
    RETURNING s.id AS scan_id, s.source_id, src.repo_url, src.branch_or_ref, src.root_hint,
              src.manual_map, s.attempts AS attempt, s.lease_token, s.lease_expires_at,
              s.not_before
)
SELECT c.*, tok.key_id AS token_key_id, tok.nonce AS token_nonce,
       tok.ciphertext AS token_ciphertext
  FROM claimed c LEFT JOIN marketplace_source_tokens tok ON tok.source_id = c.source_id
"""


def claim_scans(
    session: Session, *, worker: str, limit: int = 1, lease: dt.timedelta = DEFAULT_LEASE
) -> list[ClaimedScan]:
    """Claim up to `limit` due queued scans, oldest `not_before` first (worker or admin).

    Concurrent claimers never get the same scan. Each claim uses an attempt and holds
    the scan for `lease`; heartbeat_scan extends it.
    """
    _require_worker(session, "claim_scans")
    _check_worker(worker)
    _check_count("limit", limit, 1, paths.MAX_PAGE)
    _check_lease(lease)
    with translated_errors():
        rows = list(
            session.execute(
                text(CLAIM_SQL), {"limit": limit, "worker": worker, "lease": lease}
            ).all()
        )
    rows.sort(key=lambda r: (r.not_before, r.scan_id))
    claims = []
    for row in rows:
        fields = {k: v for k, v in row._asdict().items() if not k.startswith("token_")}
        token = open_claimed_token(row.source_id, row)
        claims.append(ClaimedScan.model_validate(fields | {"token": token}))
    return claims


def heartbeat_scan(
    session: Session,
    scan_id: uuid.UUID,
    *,
    lease_token: uuid.UUID,
    lease: dt.timedelta = DEFAULT_LEASE,
) -> bool:
    """Extend the lease to `lease` from now; True if a cancel was requested (the worker
    should stop and call fail_scan, which records the cancellation). LeaseLost if
    the token no longer holds the scan."""
    _require_worker(session, "heartbeat_scan")
    check_id("scan_id", scan_id)
    check_id("lease_token", lease_token)
    _check_lease(lease)
    with translated_errors():
        row = session.execute(
            text(
                "UPDATE marketplace_scans SET lease_expires_at = clock_timestamp() + :lease, "
                "heartbeat_at = clock_timestamp() "
                "WHERE id = :scan_id AND lease_token = :token AND state = 'running' "
                "RETURNING cancel_requested_at IS NOT NULL"
            ),
            {"scan_id": scan_id, "token": lease_token, "lease": lease},
        ).first()
    if row is None:
        raise LeaseLost(scan_id)
    return bool(row[0])


def complete_scan(
    session: Session,
    scan_id: uuid.UUID,
    *,
    lease_token: uuid.UUID,
    artifacts: Iterable[DetectedArtifact | Mapping[str, Any]],
    commit_sha: str,
    stats: ScanStats,
) -> SyncResult:
    """Apply the scan to the source's catalog (`sync_catalog`) and mark it succeeded
    with its figures, atomically. LeaseLost, and nothing written, if the token no
    longer holds the scan."""
    _require_worker(session, "complete_scan")
    check_id("scan_id", scan_id)
    check_id("lease_token", lease_token)
    sha = _check_text("commit_sha", commit_sha, MAX_COMMIT_SHA_CHARS)
    figures = _check_stats(stats)
    if artifacts is None or isinstance(artifacts, (str, bytes)):
        raise ValidationFailed(
            "artifacts", artifacts, "must be an iterable of DetectedArtifact (empty: all removed)"
        )
    batch = validate_artifacts(artifacts)
    histogram = confidence_histogram(a.confidence_score for a in batch)
    with translated_errors(), session.begin_nested():
        # The fence: the scan row stays locked to the end of the transaction, so
        # the reaper (SKIP LOCKED) and a new claim cannot take it meanwhile.
        source_id = _hold(session, scan_id, lease_token)
        result = sync_catalog(session, source_id, batch)
        session.execute(
            text(
                "UPDATE marketplace_scans SET state = 'succeeded', "
                "finished_at = clock_timestamp(), lease_token = NULL, lease_expires_at = NULL, "
                "error = NULL, commit_sha = :sha, "
                "duration_ms = :duration_ms, files_scanned = :files_scanned, "
                "bytes_fetched = :bytes_fetched, rate_limit_remaining = :rate_limit_remaining, "
                "entries_new = :new, entries_updated = :updated, entries_removed = :removed, "
                "entries_unchanged = :unchanged, entries_inserted = :inserted, "
                "entries_changed = :changed, confidence_histogram = :histogram "
                "WHERE id = :scan_id"
            ),
            {
                "scan_id": scan_id,
                "sha": sha,
                **figures.model_dump(),
                **vars(result),
                "histogram": histogram,
            },
        )
    return result


def fail_scan(
    session: Session,
    scan_id: uuid.UUID,
    *,
    lease_token: uuid.UUID,
    error: str,
    retryable: bool = True,
    retry_at: dt.datetime | None = None,
) -> ScanRead:
    """Record a failed run on the scan and on its source (`last_error`; `last_sync` and the
    catalog stay). Then: cancelled if a cancel was requested; queued at `retry_at`
    without using an attempt if given (a rate limit's reset); queued again after
    `scan_backoff` if retryable with attempts left (SKILLMEAT_SCAN_MAX_ATTEMPTS);
    else failed. LeaseLost if the token no longer holds the scan."""
    _require_worker(session, "fail_scan")
    check_id("scan_id", scan_id)
    check_id("lease_token", lease_token)
    message = _check_text("error", error, None)[:MAX_ERROR_LENGTH]
    if not isinstance(retryable, bool):
        raise ValidationFailed("retryable", retryable, f"{retryable!r} is not allowed (a bool)")
    if retry_at is not None and (not isinstance(retry_at, dt.datetime) or retry_at.tzinfo is None):
        raise ValidationFailed(
            "retry_at", retry_at, f"{retry_at!r} is not allowed (a timezone-aware datetime)"
        )
    max_attempts = ScanLimits().scan_max_attempts
    with translated_errors(), session.begin_nested():
        held = session.execute(
            text(
                "SELECT source_id, attempts, cancel_requested_at IS NOT NULL AS cancelled "
                "FROM marketplace_scans "
                "WHERE id = :scan_id AND lease_token = :token AND state = 'running' FOR UPDATE"
            ),
            {"scan_id": scan_id, "token": lease_token},
        ).first()
        if held is None:
            raise LeaseLost(scan_id)
        attempts, delay, not_before = held.attempts, dt.timedelta(0), None
        if held.cancelled:
            state = ScanState.CANCELLED
        elif retry_at is not None:
            state, attempts, not_before = ScanState.QUEUED, max(attempts - 1, 0), retry_at
        elif retryable and attempts < max_attempts:
            state, delay = ScanState.QUEUED, scan_backoff(attempts)
        else:
            state = ScanState.FAILED
        scan = _scan_from(
            session,
            "UPDATE marketplace_scans SET state = :state, attempts = :attempts, error = :error, "
            "lease_token = NULL, lease_expires_at = NULL, "
            "not_before = coalesce(CAST(:not_before AS timestamptz), clock_timestamp() + :delay), "
            "finished_at = CASE WHEN :finished THEN clock_timestamp() END "
            "WHERE id = :scan_id RETURNING *",
            {
                "scan_id": scan_id,
                "state": state.value,
                "finished": state is not ScanState.QUEUED,
                "attempts": attempts,
                "error": message,
                "not_before": not_before,
                "delay": delay,
            },
        )
        session.execute(
            text("UPDATE marketplace_sources SET last_error = :error WHERE id = :source_id"),
            {"error": message, "source_id": held.source_id},
        )
    assert scan is not None  # the row is locked by this transaction
    return scan


# --- the scheduler, the reaper, the dashboard, pruning ------------------------------

# Running scans whose lease expired: back to queued (the claim used an attempt), or
# failed when none are left, or cancelled when a cancel was requested. SKIP LOCKED:
# a worker completing or failing a scan holds its row, and is left to finish.
REAP_SQL = """
WITH stalled AS (
    SELECT id FROM marketplace_scans
     WHERE state = 'running' AND lease_expires_at < now()
     ORDER BY lease_expires_at
       FOR UPDATE SKIP LOCKED
),
reaped AS (
    UPDATE marketplace_scans s
       SET state = CASE WHEN s.cancel_requested_at IS NOT NULL THEN 'cancelled'
                        WHEN s.attempts >= :max_attempts THEN 'failed'
                        ELSE 'queued' END,
           finished_at = CASE WHEN s.cancel_requested_at IS NOT NULL
                                   OR s.attempts >= :max_attempts THEN now() END,
           not_before = now(), lease_token = NULL, lease_expires_at = NULL,
           error = 'worker ' || coalesce(s.worker, '?') || ' stopped renewing its lease '
                   || '(expired ' || to_char(s.lease_expires_at AT TIME ZONE 'UTC',
                                             'YYYY-MM-DD"T"HH24:MI:SS"Z"') || ')'
      FROM stalled
     WHERE s.id = stalled.id
    RETURNING s.source_id, s.state, s.error
),
noted AS (
    UPDATE marketplace_sources src SET last_error = r.error
      FROM reaped r
     WHERE src.id = r.source_id AND r.state = 'failed'
)
SELECT count(*) FROM reaped
"""


def reap_stalled_scans(session: Session) -> int:
    """Running scans whose lease expired go back to queued (their claim used an attempt),
    or to failed when no attempt is left; returns how many (worker or admin)."""
    _require_worker(session, "reap_stalled_scans")
    with translated_errors():
        reaped = session.execute(
            text(REAP_SQL), {"max_attempts": ScanLimits().scan_max_attempts}
        ).scalar_one()
    return int(reaped)


SCHEDULE_SQL = """
WITH due AS (
    SELECT s.id FROM marketplace_sources s
     WHERE (s.last_sync IS NULL OR s.last_sync < now() - :older_than)
       AND NOT EXISTS (SELECT 1 FROM marketplace_scans q
                        WHERE q.source_id = s.id AND q.state IN ('queued', 'running'))
     ORDER BY s.last_sync NULLS FIRST, s.id
     LIMIT :limit
),
added AS (
    INSERT INTO marketplace_scans (source_id)
    SELECT id FROM due
    ON CONFLICT (source_id) WHERE state IN ('queued', 'running') DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM added
"""


def schedule_due_scans(session: Session, *, older_than: dt.timedelta, limit: int = 1000) -> int:
    """Queue scans of the sources not synced within `older_than` (never synced first) that
    have none queued or running, in one statement; returns how many (worker or admin)."""
    _require_worker(session, "schedule_due_scans")
    if not isinstance(older_than, dt.timedelta) or older_than < dt.timedelta(0):
        raise ValidationFailed(
            "older_than", older_than, f"{older_than!r} is not allowed (a timedelta >= 0)"
        )
    _check_count("limit", limit, 1, 100_000)
    with translated_errors():
        added = session.execute(
            text(SCHEDULE_SQL), {"older_than": older_than, "limit": limit}
        ).scalar_one()
    return int(added)


HEALTH_SQL = """
SELECT
    (SELECT coalesce(json_object_agg(state, n), '{}'::json) FROM (
        SELECT state, count(*) AS n FROM marketplace_scans
         WHERE created_at >= :since GROUP BY state) c) AS counts,
    (SELECT percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY duration_ms)
       FROM marketplace_scans
      WHERE created_at >= :since AND state = 'succeeded' AND duration_ms IS NOT NULL)
        AS percentiles,
    (SELECT now() - min(not_before) FROM marketplace_scans
      WHERE state = 'queued' AND not_before <= now()) AS oldest_queued_age,
    (SELECT count(*) FROM marketplace_scans
      WHERE state = 'running' AND lease_expires_at < now()) AS stalled,
    (SELECT min(rate_limit_remaining) FROM marketplace_scans
      WHERE created_at >= :since) AS min_rate_limit_remaining
"""


def scan_health(session: Session, *, since: dt.datetime) -> ScanHealth:
    """The figures a monitoring dashboard polls, in one query (worker or admin)."""
    _require_worker(session, "scan_health")
    if not isinstance(since, dt.datetime) or since.tzinfo is None:
        raise ValidationFailed(
            "since", since, f"{since!r} is not allowed (a timezone-aware datetime)"
        )
    with translated_errors():
        row = session.execute(text(HEALTH_SQL), {"since": since}).one()
    counts = {state: int(row.counts.get(state.value, 0)) for state in ScanState}
    finished = counts[ScanState.SUCCEEDED] + counts[ScanState.FAILED]
    p50, p95 = row.percentiles if row.percentiles is not None else (None, None)
    return ScanHealth(
        since=since,
        counts=counts,
        success_ratio=counts[ScanState.SUCCEEDED] / finished if finished else None,
        p50_duration_ms=p50,
        p95_duration_ms=p95,
        oldest_queued_age=row.oldest_queued_age,
        stalled=row.stalled,
        min_rate_limit_remaining=row.min_rate_limit_remaining,
    )


PRUNE_SQL = f"""
WITH ranked AS (
    SELECT id, row_number() OVER (PARTITION BY source_id ORDER BY created_at DESC, id DESC) AS n
      FROM marketplace_scans
     WHERE state IN {_TERMINAL}
),
pruned AS (
    DELETE FROM marketplace_scans d USING ranked r
     WHERE d.id = r.id AND r.n > :keep
    RETURNING 1
)
SELECT count(*) FROM pruned
"""


def prune_scans(session: Session, *, keep_per_source: int = 100) -> int:
    """Delete finished scans past the newest `keep_per_source` of each source; queued and
    running ones are never touched. Returns how many (worker or admin)."""
    _require_worker(session, "prune_scans")
    _check_count("keep_per_source", keep_per_source, 0, 1_000_000)
    with translated_errors():
        pruned = session.execute(text(PRUNE_SQL), {"keep": keep_per_source}).scalar_one()
    return int(pruned)


def confidence_histogram(scores: Iterable[float]) -> list[int]:
    """Counts per confidence decile: [0, 10), [10, 20), ..., [90, 100] (100 in the last)."""
    buckets = [0] * HISTOGRAM_BUCKETS
    for score in scores:
        buckets[min(int(score // 10), HISTOGRAM_BUCKETS - 1)] += 1
    return buckets


# --- helpers ------------------------------------------------------------------------


def _require_worker(session: Session, name: str) -> Scope:
    scope = current_scope(session)
    if not (scope.worker or scope.admin):
        raise ScopeError(
            f"{name} is for scan workers: use tenant_scope(session, worker=True) (or admin=True)"
        )
    return scope


def _hold(session: Session, scan_id: uuid.UUID, lease_token: uuid.UUID) -> uuid.UUID:
    """Lock the scan if `lease_token` still holds it; its source id. Else LeaseLost."""
    source_id = session.execute(
        text(
            "SELECT source_id FROM marketplace_scans "
            "WHERE id = :scan_id AND lease_token = :token AND state = 'running' FOR UPDATE"
        ),
        {"scan_id": scan_id, "token": lease_token},
    ).scalar_one_or_none()
    if source_id is None:
        raise LeaseLost(scan_id)
    assert isinstance(source_id, uuid.UUID)
    return source_id


def _scan_from(session: Session, sql: str, params: dict[str, Any]) -> ScanRead | None:
    """Run a statement ending in RETURNING * on marketplace_scans; its row as a ScanRead."""
    row = session.execute(
        select(Scan).from_statement(text(sql)).execution_options(populate_existing=True),
        params,
    ).scalar_one_or_none()
    return None if row is None else ScanRead.model_validate(row)


def _check_count(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationFailed(field, value, f"{value!r} is not allowed (an int, {low} to {high})")
    return value


def _check_lease(lease: Any) -> None:
    if not isinstance(lease, dt.timedelta) or lease <= dt.timedelta(0):
        raise ValidationFailed("lease", lease, f"{lease!r} is not allowed (a positive timedelta)")


def _check_text(field: str, value: Any, limit: int | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(field, value, f"{value!r} is not allowed (non-blank text)")
    if "\x00" in value:
        raise ValidationFailed(
            field, value, "contains a NUL character, which PostgreSQL text cannot hold"
        )
    clean = value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
    if limit is not None and len(clean) > limit:
        raise ValidationFailed(field, value, f"is {len(clean)} characters (at most {limit})")
    return clean


def _check_worker(worker: Any) -> None:
    _check_text("worker", worker, MAX_WORKER_CHARS)


def _check_stats(stats: Any) -> ScanStats:
    if isinstance(stats, ScanStats):
        return stats
    try:
        return ScanStats.model_validate(stats)
    except ValueError as exc:
        raise ValidationFailed("stats", stats, f"is not allowed ({exc})") from None
