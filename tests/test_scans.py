"""The scan queue: lifecycle, fencing, backoff, concurrency, and its row-level security
as the real login roles (docs/scans.md)."""

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from skillmeat.core.database import make_engine, make_session_factory, tenant_scope
from skillmeat.core.errors import (
    LeaseLost,
    NotFound,
    PermissionDenied,
    ScopeError,
    ValidationFailed,
)
from skillmeat.core.models import ScanState
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.repositories import scans
from skillmeat.core.repositories.scans import scan_backoff
from skillmeat.core.schemas.scans import ScanStats
from tests.login_roles import ADMIN_POOL, MEMBER_POOL, WORKER_POOL, login_role
from tests.rls_world import World, build_world
from tests.test_catalog_sync import artifact

STATS = ScanStats(duration_ms=1200, files_scanned=40, bytes_fetched=9000, rate_limit_remaining=4000)


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def paths_of(session: Session, source: uuid.UUID) -> dict[str, tuple[str, str]]:
    rows = session.execute(
        text(
            "SELECT detected_path, detected_version_sha, status FROM marketplace_catalog_entries "
            "WHERE source_id = :s"
        ),
        {"s": source},
    )
    return {path: (sha, status) for path, sha, status in rows}


def scan_row(session: Session, scan_id: uuid.UUID) -> Any:
    return session.execute(
        text("SELECT * FROM marketplace_scans WHERE id = :i"), {"i": scan_id}
    ).one()


# --- backoff: one pure function -----------------------------------------------------


def test_backoff_doubles_from_30_seconds_and_caps_at_6_hours() -> None:
    middle = [scan_backoff(n, rand=lambda: 0.5).total_seconds() for n in range(1, 14)]
    assert middle[:10] == [30 * 2**k for k in range(10)]
    assert middle[10:] == [6 * 3600] * 3  # 30 * 2**10 s is past the cap


@pytest.mark.parametrize("attempt", [1, 2, 5, 9, 10, 11, 40])
def test_backoff_jitter_stays_within_20_percent_and_the_cap(attempt: int) -> None:
    nominal = min(6 * 3600, 30 * 2 ** (attempt - 1))
    low = scan_backoff(attempt, rand=lambda: 0.0).total_seconds()
    high = scan_backoff(attempt, rand=lambda: 0.999999).total_seconds()
    assert low == pytest.approx(0.8 * nominal)
    assert high == pytest.approx(min(1.2 * nominal, 6 * 3600), rel=1e-5)
    samples = [scan_backoff(attempt).total_seconds() for _ in range(500)]
    assert all(0.8 * nominal <= s <= min(1.2 * nominal, 6 * 3600) for s in samples)
    if attempt < 9:
        assert len(set(samples)) > 400  # jittered, not constant


@pytest.mark.parametrize("attempt", [0, -1, 1.5, True, "2"])
def test_backoff_refuses_a_bad_attempt(attempt: Any) -> None:
    with pytest.raises(ValidationFailed, match="attempt"):
        scan_backoff(attempt)


# --- the lifecycle, one transaction -------------------------------------------------


def test_request_claim_heartbeat_complete_and_list(session: Session, world: World) -> None:
    editor, viewer, src = world.a.members["editor"], world.a.members["viewer"], world.a.source
    with tenant_scope(session, user_id=editor):
        requested = scans.request_scan(session, src)
        again = scans.request_scan(session, src)
        card = repo.get_source(session, src)
    assert requested.state is ScanState.QUEUED and again.id == requested.id
    assert card.scan_state is ScanState.QUEUED and card.next_scan_at == requested.not_before

    with tenant_scope(session, worker=True):
        [claimed] = scans.claim_scans(session, worker="w-1", limit=5)
        assert scans.claim_scans(session, worker="w-2") == []  # nothing else is due
        assert (
            scans.heartbeat_scan(session, claimed.scan_id, lease_token=claimed.lease_token) is False
        )
        result = scans.complete_scan(
            session,
            claimed.scan_id,
            lease_token=claimed.lease_token,
            artifacts=[
                artifact("skills/a", confidence_score=5),
                artifact("skills/b", confidence_score=95.5),
                artifact("skills/c", confidence_score=100),
            ],
            commit_sha="abc123",
            stats=STATS,
        )
    assert (claimed.scan_id, claimed.source_id, claimed.attempt) == (requested.id, src, 1)
    assert claimed.repo_url.startswith("https://github.com/tenant-a-")
    assert (claimed.branch_or_ref, claimed.manual_map) == ("HEAD", {})
    assert (result.new, result.removed, result.inserted) == (3, 1, 3)  # skills/x went away

    with tenant_scope(session, user_id=viewer):
        page = scans.list_scans(session, src)
        card = repo.list_sources(session, project_id=world.a.project).items[0]
    [done] = page.items
    assert done.state is ScanState.SUCCEEDED and done.worker == "w-1" and done.attempts == 1
    assert (done.commit_sha, done.duration_ms, done.files_scanned) == ("abc123", 1200, 40)
    assert (done.bytes_fetched, done.rate_limit_remaining) == (9000, 4000)
    assert (done.new, done.updated, done.removed, done.unchanged) == (3, 0, 1, 0)
    assert (done.inserted, done.changed) == (3, 1)
    assert done.confidence_histogram == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert done.finished_at is not None and done.error is None
    assert card.scan_state is ScanState.SUCCEEDED and card.next_scan_at is None
    assert card.last_sync is not None
    assert set(paths_of(session, src)) == {"skills/a", "skills/b", "skills/c", "skills/x"}


def test_list_scans_is_newest_first_and_keyset_paged(session: Session, world: World) -> None:
    src = world.a.source
    session.execute(
        text(
            "INSERT INTO marketplace_scans (source_id, state, created_at, finished_at) "
            "SELECT :s, 'succeeded', now() - g * interval '1 minute', now() "
            "FROM generate_series(1, 7) g"
        ),
        {"s": src},
    )
    seen: list[dt.datetime] = []
    cursor = None
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        while True:
            page = scans.list_scans(session, src, limit=3, cursor=cursor)
            seen += [scan.created_at for scan in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert scans.list_scans(session, world.b.source).items == []  # another tenant's
    assert len(seen) == 7 and seen == sorted(seen, reverse=True)
    with tenant_scope(session, user_id=world.a.members["editor"]):
        fresh = scans.request_scan(session, src)
        card = repo.get_source(session, src)
    assert card.scan_state is ScanState.QUEUED and card.next_scan_at == fresh.not_before


def test_request_and_cancel_need_an_editor(session: Session, world: World) -> None:
    src = world.a.source
    with pytest.raises(PermissionDenied), tenant_scope(session, user_id=world.a.members["viewer"]):
        scans.request_scan(session, src)
    with pytest.raises(NotFound), tenant_scope(session, user_id=world.b.members["owner"]):
        scans.request_scan(session, src)
    with tenant_scope(session, user_id=world.a.members["editor"]):
        queued = scans.request_scan(session, src)
    with pytest.raises(PermissionDenied), tenant_scope(session, user_id=world.a.members["viewer"]):
        scans.cancel_scan(session, queued.id)
    with pytest.raises(NotFound), tenant_scope(session, user_id=world.b.members["owner"]):
        scans.cancel_scan(session, queued.id)
    with tenant_scope(session, user_id=world.a.members["owner"]):
        cancelled = scans.cancel_scan(session, queued.id)
        fresh = scans.request_scan(session, src)  # a cancelled scan is not active
    assert cancelled.state is ScanState.CANCELLED and cancelled.finished_at is not None
    assert fresh.id != queued.id


def test_worker_functions_refuse_a_member_scope(session: Session, world: World) -> None:
    with (
        pytest.raises(ScopeError, match="worker=True"),
        tenant_scope(session, user_id=world.a.members["owner"]),
    ):
        scans.claim_scans(session, worker="w")
    with (
        pytest.raises(ScopeError, match="exactly one"),
        tenant_scope(session, worker=True, admin=True),
    ):
        pass


def test_cancel_of_a_running_scan_reaches_the_worker(session: Session, world: World) -> None:
    with tenant_scope(session, user_id=world.a.members["editor"]):
        scans.request_scan(session, world.a.source)
    with tenant_scope(session, worker=True):
        [claimed] = scans.claim_scans(session, worker="w")
    with tenant_scope(session, user_id=world.a.members["editor"]):
        asked = scans.cancel_scan(session, claimed.scan_id)
    assert asked.state is ScanState.RUNNING and asked.cancel_requested_at is not None
    with tenant_scope(session, worker=True):
        assert scans.heartbeat_scan(session, claimed.scan_id, lease_token=claimed.lease_token)
        stopped = scans.fail_scan(
            session, claimed.scan_id, lease_token=claimed.lease_token, error="cancelled by user"
        )
    assert stopped.state is ScanState.CANCELLED and stopped.finished_at is not None


# --- failures: backoff, attempts, rate limits ---------------------------------------


def claim_one(session: Session) -> Any:
    with tenant_scope(session, worker=True):
        [claimed] = scans.claim_scans(session, worker="w")
    return claimed


def make_due(session: Session, scan_id: uuid.UUID) -> None:
    session.execute(
        text("UPDATE marketplace_scans SET not_before = now() WHERE id = :i"), {"i": scan_id}
    )


def test_retryable_failures_back_off_then_fail_after_max_attempts(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKILLMEAT_SCAN_MAX_ATTEMPTS", "3")
    src = world.a.source
    before = paths_of(session, src)
    with tenant_scope(session, user_id=world.a.members["editor"]):
        scan_id = scans.request_scan(session, src).id
    delays = []
    for attempt in (1, 2, 3):
        claimed = claim_one(session)
        assert claimed.attempt == attempt
        with tenant_scope(session, worker=True):
            failed = scans.fail_scan(
                session, scan_id, lease_token=claimed.lease_token, error=f"boom {attempt}"
            )
        now = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        delays.append((failed.not_before - now).total_seconds())
        assert failed.error == f"boom {attempt}" and failed.attempts == attempt
        if attempt < 3:
            assert failed.state is ScanState.QUEUED and failed.finished_at is None
            make_due(session, scan_id)
    assert failed.state is ScanState.FAILED and failed.finished_at is not None
    assert 0.8 * 30 - 1 <= delays[0] <= 1.2 * 30 and 0.8 * 60 - 1 <= delays[1] <= 1.2 * 60
    last_error, last_sync = session.execute(
        text("SELECT last_error, last_sync FROM marketplace_sources WHERE id = :s"), {"s": src}
    ).one()
    assert (last_error, last_sync) == ("boom 3", None)
    assert paths_of(session, src) == before  # the catalog is untouched


def test_non_retryable_failure_is_final(session: Session, world: World) -> None:
    with tenant_scope(session, user_id=world.a.members["editor"]):
        scan_id = scans.request_scan(session, world.a.source).id
    claimed = claim_one(session)
    with tenant_scope(session, worker=True):
        failed = scans.fail_scan(
            session, scan_id, lease_token=claimed.lease_token, error="404", retryable=False
        )
    assert failed.state is ScanState.FAILED and failed.attempts == 1


def test_rate_limit_requeues_at_the_reset_without_using_an_attempt(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKILLMEAT_SCAN_MAX_ATTEMPTS", "1")
    with tenant_scope(session, user_id=world.a.members["editor"]):
        scan_id = scans.request_scan(session, world.a.source).id
    reset = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    for _ in range(3):  # more rate limits than attempts: never failed
        claimed = claim_one(session)
        with tenant_scope(session, worker=True):
            queued = scans.fail_scan(
                session,
                scan_id,
                lease_token=claimed.lease_token,
                error="rate limited",
                retry_at=reset,
            )
        assert queued.state is ScanState.QUEUED and queued.attempts == 0
        assert queued.not_before == reset
        make_due(session, scan_id)
    with pytest.raises(ValidationFailed, match="retry_at"), tenant_scope(session, worker=True):
        scans.fail_scan(
            session, scan_id, lease_token=uuid.uuid4(), error="x", retry_at=dt.datetime(2030, 1, 1)
        )


def test_schedule_due_scans_queues_stale_sources_once(session: Session, world: World) -> None:
    session.execute(
        text("UPDATE marketplace_sources SET last_sync = now() WHERE id = :s"),
        {"s": world.b.source},
    )
    with tenant_scope(session, worker=True):
        first = scans.schedule_due_scans(session, older_than=dt.timedelta(hours=1))
        again = scans.schedule_due_scans(session, older_than=dt.timedelta(hours=1))
        queued = (
            session.execute(text("SELECT source_id FROM marketplace_scans WHERE state = 'queued'"))
            .scalars()
            .all()
        )
    assert world.a.source in queued and world.b.source not in queued
    assert first >= 1 and again == 0


def test_scan_health_and_prune(session: Session, world: World) -> None:
    src = world.a.source
    session.execute(
        text(
            "INSERT INTO marketplace_scans (source_id, state, duration_ms, finished_at, "
            "rate_limit_remaining, created_at) "
            "SELECT :s, CASE WHEN g % 4 = 0 THEN 'failed' ELSE 'succeeded' END, g * 100, now(), "
            "5000 - g, now() - g * interval '1 second' FROM generate_series(1, 20) g"
        ),
        {"s": src},
    )
    session.execute(
        text(
            "INSERT INTO marketplace_scans (source_id, state, not_before) "
            "VALUES (:s, 'queued', now() - interval '90 seconds')"
        ),
        {"s": world.b.source},
    )
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with tenant_scope(session, worker=True):
        health = scans.scan_health(session, since=since)
        pruned = scans.prune_scans(session, keep_per_source=4)
        left = session.execute(
            text("SELECT count(*) FROM marketplace_scans WHERE source_id = :s"), {"s": src}
        ).scalar_one()
    assert health.counts[ScanState.SUCCEEDED] == 15 and health.counts[ScanState.FAILED] == 5
    assert health.counts[ScanState.RUNNING] == 0
    assert health.success_ratio == pytest.approx(0.75)
    assert health.p50_duration_ms is not None and health.p95_duration_ms is not None
    assert 900 <= health.p50_duration_ms <= 1100 and health.p95_duration_ms > 1800
    assert health.oldest_queued_age is not None
    assert health.oldest_queued_age >= dt.timedelta(seconds=89)
    assert (health.stalled, health.min_rate_limit_remaining) == (0, 4980)
    assert (pruned, left) == (16, 4)
    with pytest.raises(ScopeError), tenant_scope(session, user_id=world.a.members["owner"]):
        scans.scan_health(session, since=since)


# --- concurrency (committed data, one connection per thread) -------------------------


def run_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]


def add_sources(engine: Engine, project: uuid.UUID, n: int, *, queue: bool) -> list[uuid.UUID]:
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                text(
                    "INSERT INTO marketplace_sources (project_id, repo_url) "
                    "SELECT :p, 'https://github.com/many/r' || g || '-' || :tag "
                    "FROM generate_series(1, :n) g RETURNING id"
                ),
                {"p": project, "n": n, "tag": uuid.uuid4().hex[:8]},
            ).scalars()
        )
        if queue:
            conn.execute(
                text(
                    "INSERT INTO marketplace_scans (source_id, not_before) "
                    "SELECT id, now() - interval '1 minute' FROM unnest(CAST(:ids AS uuid[])) id"
                ),
                {"ids": ids},
            )
    return ids


def test_eight_claimers_never_share_a_scan(
    engine: Engine, sessions: sessionmaker[Session], committed_world: World
) -> None:
    queued = set(add_sources(engine, committed_world.a.project, 240, queue=True))
    claimed: list[list[uuid.UUID]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def claimer(i: int) -> None:
        start.wait()
        while True:
            with sessions() as s, tenant_scope(s, worker=True):
                got = scans.claim_scans(s, worker=f"w{i}", limit=3)
            if not got:
                return
            claimed[i] += [c.scan_id for c in got if c.source_id in queued]

    run_threads(8, claimer)
    everything = [scan_id for mine in claimed for scan_id in mine]
    assert len(everything) == len(set(everything)) == 240
    assert sum(1 for mine in claimed if mine) > 1  # they really ran side by side


def test_request_scan_is_idempotent_under_concurrency(
    sessions: sessionmaker[Session], committed_world: World
) -> None:
    editor, src = committed_world.a.members["editor"], committed_world.a.source
    for _ in range(5):
        got: list[uuid.UUID] = []
        start = threading.Barrier(2)

        def requester(
            _i: int, got: list[uuid.UUID] = got, start: threading.Barrier = start
        ) -> None:
            with sessions() as s, tenant_scope(s, user_id=editor):
                start.wait()
                got.append(scans.request_scan(s, src).id)

        run_threads(2, requester)
        assert len(got) == 2 and got[0] == got[1]
        with sessions() as s:
            rows = (
                s.execute(
                    text("SELECT state FROM marketplace_scans WHERE source_id = :s"), {"s": src}
                )
                .scalars()
                .all()
            )
            assert rows == ["queued"]
            s.execute(text("DELETE FROM marketplace_scans WHERE source_id = :s"), {"s": src})
            s.commit()


def complete(sessions: sessionmaker[Session], claimed: Any, paths: list[str], sha: str) -> Any:
    with sessions() as s, tenant_scope(s, worker=True):
        return scans.complete_scan(
            s,
            claimed.scan_id,
            lease_token=claimed.lease_token,
            artifacts=[artifact(p, sha) for p in paths],
            commit_sha=sha,
            stats=STATS,
        )


def claim_source_scan(
    sessions: sessionmaker[Session], source: uuid.UUID, worker: str, lease: dt.timedelta
) -> Any:
    """Claim until this test's scan comes up (other tests' queued scans are left alone)."""
    with sessions() as s, tenant_scope(s, worker=True):
        s.execute(text("SELECT set_config('lock_timeout', '2000', true)"))
        for claimed in scans.claim_scans(s, worker=worker, limit=50, lease=lease):
            if claimed.source_id == source:
                return claimed
    raise AssertionError("the scan was not claimable")


def test_late_complete_after_takeover_raises_lease_lost(
    sessions: sessionmaker[Session], committed_world: World
) -> None:
    src = committed_world.a.source
    with sessions() as s, tenant_scope(s, user_id=committed_world.a.members["editor"]):
        scan_id = scans.request_scan(s, src).id
    slow = claim_source_scan(sessions, src, "slow", dt.timedelta(milliseconds=300))
    time.sleep(0.5)
    with sessions() as s, tenant_scope(s, worker=True):
        assert scans.reap_stalled_scans(s) >= 1
    fast = claim_source_scan(sessions, src, "fast", dt.timedelta(minutes=5))
    assert (fast.scan_id, fast.attempt) == (scan_id, 2) and fast.lease_token != slow.lease_token
    complete(sessions, fast, ["skills/winner"], "w1")

    with pytest.raises(LeaseLost, match=str(scan_id)):
        complete(sessions, slow, ["skills/loser"], "l1")
    with pytest.raises(LeaseLost), sessions() as s, tenant_scope(s, worker=True):
        scans.heartbeat_scan(s, scan_id, lease_token=slow.lease_token)
    with pytest.raises(LeaseLost), sessions() as s, tenant_scope(s, worker=True):
        scans.fail_scan(s, scan_id, lease_token=slow.lease_token, error="late")
    with sessions() as s:
        assert paths_of(s, src) == {"skills/winner": ("w1", "new"), "skills/x": ("abc", "removed")}
        row = scan_row(s, scan_id)
    assert (row.state, row.worker, row.attempts, row.commit_sha) == ("succeeded", "fast", 2, "w1")


def test_a_killed_worker_is_reaped_and_its_scan_done_once_by_another(
    engine: Engine, sessions: sessionmaker[Session], committed_world: World
) -> None:
    src = committed_world.a.source
    with sessions() as s, tenant_scope(s, user_id=committed_world.a.members["editor"]):
        scan_id = scans.request_scan(s, src).id
    doomed = claim_source_scan(sessions, src, "doomed", dt.timedelta(milliseconds=300))

    # The doomed worker is mid-scan: its transaction holds the scan row (a heartbeat
    # not yet committed), then its connection is terminated.
    victim = sessions()
    died: list[BaseException] = []
    held_back, terminated = None, False
    try:
        with tenant_scope(victim, worker=True):
            pid = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
            scans.heartbeat_scan(victim, scan_id, lease_token=doomed.lease_token)
            time.sleep(0.5)  # the committed lease has expired meanwhile
            with sessions() as s, tenant_scope(s, worker=True):
                held_back = _reaped(s, scan_id)  # SKIP LOCKED: a live holder stays
            with engine.begin() as conn:
                terminated = conn.execute(
                    text("SELECT pg_terminate_backend(:p)"), {"p": pid}
                ).scalar_one()
            victim.execute(text("SELECT 1"))
    except Exception as exc:  # the driver's "connection terminated", then the rollback's
        died.append(exc)
    finally:
        victim.close()
    assert terminated and died, "the victim's connection survived pg_terminate_backend"
    assert held_back is False

    with sessions() as s, tenant_scope(s, worker=True):
        assert _reaped(s, scan_id) is True
    rescuer = claim_source_scan(sessions, src, "rescuer", dt.timedelta(minutes=5))
    complete(sessions, rescuer, ["skills/once"], "r1")
    with pytest.raises(LeaseLost):
        complete(sessions, doomed, ["skills/twice"], "d1")
    with sessions() as s:
        rows = s.execute(
            text("SELECT state, worker, attempts FROM marketplace_scans WHERE source_id = :s"),
            {"s": src},
        ).all()
        assert [tuple(r) for r in rows] == [("succeeded", "rescuer", 2)]
        assert paths_of(s, src) == {"skills/once": ("r1", "new"), "skills/x": ("abc", "removed")}


def _reaped(session: Session, scan_id: uuid.UUID) -> bool:
    scans.reap_stalled_scans(session)
    state = session.execute(
        text("SELECT state FROM marketplace_scans WHERE id = :i"), {"i": scan_id}
    ).scalar_one()
    return bool(state == "queued")


# --- row-level security as the real login roles -------------------------------------

DENIED = "42501"


@pytest.fixture
def pools(engine: Engine, database_url: URL) -> Iterator[dict[str, sessionmaker[Session]]]:
    with (
        login_role(engine, database_url, MEMBER_POOL) as member,
        login_role(engine, database_url, ADMIN_POOL) as admin,
        login_role(engine, database_url, WORKER_POOL) as worker,
    ):
        engines = {
            name: make_engine(url)
            for name, url in (("member", member), ("admin", admin), ("worker", worker))
        }
        try:
            yield {name: make_session_factory(e) for name, e in engines.items()}
        finally:
            for e in engines.values():
                e.dispose()


def attempt(
    pools: dict[str, sessionmaker[Session]], world: World, actor: str, sql: str, **params: Any
) -> int | str:
    """Rows affected (or read), or DENIED; always rolled back."""
    pool = actor if actor in ("admin", "worker") else "member"
    user = {
        "viewer": world.a.members["viewer"],
        "editor": world.a.members["editor"],
        "other": world.b.members["owner"],
    }.get(actor)
    with pools[pool]() as s:
        s.begin()
        try:
            scope = (
                tenant_scope(s, user_id=user)
                if user
                else tenant_scope(s, admin=actor == "admin", worker=actor == "worker")
            )
            with scope:
                result: Any = s.execute(text(sql), params)
                return len(result.all()) if result.returns_rows else int(result.rowcount)
        except PermissionDenied:
            return DENIED
        finally:
            s.rollback()


SCAN_CASES = {
    # name: (sql, viewer, editor, other project, worker, admin)
    "select": ("SELECT id FROM marketplace_scans WHERE id = :scan", 1, 1, 0, 1, 1),
    "insert (request)": (
        "INSERT INTO marketplace_scans (source_id) VALUES (:spare)",
        DENIED,
        1,
        DENIED,
        1,
        1,
    ),
    "update (cancel)": (
        "UPDATE marketplace_scans SET cancel_requested_at = now() WHERE id = :scan",
        0,
        1,
        0,
        1,
        1,
    ),
    "update (mark succeeded)": (
        "UPDATE marketplace_scans SET state = 'succeeded' WHERE id = :scan",
        0,
        DENIED,
        0,
        1,
        1,
    ),
    "update attempts": (
        "UPDATE marketplace_scans SET attempts = 0 WHERE id = :scan",
        DENIED,
        DENIED,
        DENIED,
        1,
        1,
    ),
    "delete": ("DELETE FROM marketplace_scans WHERE id = :scan", DENIED, DENIED, DENIED, 1, 1),
    "insert an id": (
        "INSERT INTO marketplace_scans (id, source_id) VALUES (gen_random_uuid(), :spare)",
        DENIED,
        DENIED,
        DENIED,
        DENIED,
        DENIED,
    ),
}
WORKER_CASES = {
    # what a scan needs, and nothing more
    "read scan configuration": (
        "SELECT repo_url, branch_or_ref, root_hint, manual_map FROM marketplace_sources "
        "WHERE id = :source",
        1,
    ),
    "record a sync": ("UPDATE marketplace_sources SET last_error = 'x' WHERE id = :source", 1),
    "read a source's project": ("SELECT project_id FROM marketplace_sources", DENIED),
    "read projects": ("SELECT name FROM projects", DENIED),
    "read memberships": ("SELECT user_id FROM project_members", DENIED),
    "rename a project": ("UPDATE projects SET name = 'mine' WHERE id = :project", DENIED),
    "delete a project": ("DELETE FROM projects WHERE id = :project", DENIED),
    "move a source": (
        "UPDATE marketplace_sources SET repo_url = 'https://github.com/x/y' WHERE id = :source",
        DENIED,
    ),
    "delete a source": ("DELETE FROM marketplace_sources WHERE id = :source", DENIED),
    "add a source": (
        "INSERT INTO marketplace_sources (project_id, repo_url) "
        "VALUES (:project, 'https://github.com/x/z')",
        DENIED,
    ),
    "mark an import": (
        "UPDATE marketplace_catalog_entries SET imported_at = now() WHERE source_id = :source",
        DENIED,
    ),
    "delete entries": ("DELETE FROM marketplace_catalog_entries WHERE source_id = :source", DENIED),
}


def test_scan_rls_matrix_as_the_real_login_roles(
    engine: Engine, pools: dict[str, sessionmaker[Session]], committed_world: World
) -> None:
    world = committed_world
    [spare] = add_sources(engine, world.a.project, 1, queue=False)
    with engine.begin() as conn:
        scan = conn.execute(
            text("INSERT INTO marketplace_scans (source_id) VALUES (:s) RETURNING id"),
            {"s": world.a.source},
        ).scalar_one()
    params = {"scan": scan, "spare": spare, "source": world.a.source, "project": world.a.project}
    actors = ["viewer", "editor", "other", "worker", "admin"]
    got = {
        name: [attempt(pools, world, actor, sql, **params) for actor in actors]
        for name, (sql, *_) in SCAN_CASES.items()
    }
    assert got == {name: list(expected) for name, (_, *expected) in SCAN_CASES.items()}
    got_worker = {
        name: attempt(pools, world, "worker", sql, **params)
        for name, (sql, _) in WORKER_CASES.items()
    }
    assert got_worker == {name: expected for name, (_, expected) in WORKER_CASES.items()}


def test_worker_scope_needs_the_worker_pool(
    pools: dict[str, sessionmaker[Session]], committed_world: World
) -> None:
    with (
        pools["member"]() as s,
        pytest.raises(ScopeError, match="worker pool"),
        tenant_scope(s, worker=True),
    ):
        pass
    with (
        pools["worker"]() as s,
        pytest.raises(ScopeError, match="admin pool"),
        tenant_scope(s, admin=True),
    ):
        pass


def test_the_worker_pool_runs_a_whole_scan(
    pools: dict[str, sessionmaker[Session]], committed_world: World
) -> None:
    src = committed_world.a.source
    with pools["member"]() as s, tenant_scope(s, user_id=committed_world.a.members["editor"]):
        scans.request_scan(s, src)
    worker = pools["worker"]
    claimed = claim_source_scan(worker, src, "pool", dt.timedelta(minutes=1))
    result = complete(worker, claimed, ["skills/pool"], "p1")
    assert (result.new, result.removed) == (1, 1)
    with worker() as s, tenant_scope(s, worker=True):
        assert scans.reap_stalled_scans(s) >= 0
        assert scans.scan_health(s, since=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)).counts
        assert scans.schedule_due_scans(s, older_than=dt.timedelta(days=3650), limit=1) >= 0


def test_an_editor_cannot_requeue_a_finished_scan(
    engine: Engine, pools: dict[str, sessionmaker[Session]], committed_world: World
) -> None:
    """Cancel is the editor's only write on a scan: a finished one is out of reach."""
    world = committed_world
    [spare] = add_sources(engine, world.a.project, 1, queue=False)
    with engine.begin() as conn:
        finished = conn.execute(
            text(
                "INSERT INTO marketplace_scans (source_id, state, finished_at) "
                "VALUES (:s, 'succeeded', now()) RETURNING id"
            ),
            {"s": spare},
        ).scalar_one()
    requeue = "UPDATE marketplace_scans SET state = 'queued' WHERE id = :scan"
    assert attempt(pools, world, "editor", requeue, scan=finished) == 0
    assert attempt(pools, world, "admin", requeue, scan=finished) == 1
