"""The write paths under concurrency: imports and rescans of one source in any mix
never deadlock and end as some serial order would; lock conflicts and timeouts
reach the caller as typed, retryable library errors (each provoked for real)."""

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from skillmeat.core.database import make_session_factory, tenant_scope
from skillmeat.core.errors import (
    DeadlockDetected,
    LockTimeout,
    RetryableError,
    SerializationFailure,
    StatementTimeout,
)
from skillmeat.core.repositories import marketplace as repo
from tests.rls_world import World
from tests.test_catalog_sync import artifact, model_apply

ENTRIES = 500
CALLERS = 8


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def commit_order(engine: Engine) -> Iterator[str]:
    """A sequence read by each caller just before it commits, with its locks still held:
    for callers serialized on one lock, the values are the serial order."""
    name = f"commit_order_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SEQUENCE {name}"))
    yield name
    with engine.begin() as conn:
        conn.execute(text(f"DROP SEQUENCE {name}"))


def state(session: Session, source: uuid.UUID) -> dict[str, dict[str, Any]]:
    """The catalog in the model's terms (read as the superuser)."""
    rows = session.execute(
        text(
            "SELECT detected_path, status, detected_version_sha, imported_at IS NOT NULL, "
            "imported_version_sha FROM marketplace_catalog_entries WHERE source_id = :s"
        ),
        {"s": source},
    )
    return {
        path: {"status": status, "sha": sha, "imported": imported, "imported_sha": imported_sha}
        for path, status, sha, imported, imported_sha in rows
    }


def comparable(model: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {
        path: (row["status"], row["sha"], row["imported"], row.get("imported_sha"))
        for path, row in model.items()
    }


Op = tuple[str, Any]  # ("import", [ids]) or ("sync", {path: sha})


def test_imports_and_rescans_of_one_source_never_deadlock(
    sessions: sessionmaker[Session], committed_world: World, commit_order: str
) -> None:
    ed, src = committed_world.a.members["editor"], committed_world.a.source
    paths = [f"skills/s{i:03}" for i in range(ENTRIES)]
    rng = random.Random(40)
    with sessions() as s, tenant_scope(s, user_id=ed):
        repo.sync_catalog(s, src, [artifact(p, "v1") for p in paths])

    # Four rounds of the case (8 imports of the same 500 ids, each shuffled),
    # then four of imports and rescans mixed in random order.
    for round_no in range(8):
        with sessions() as s:
            before = state(s, src)
            ids: dict[uuid.UUID, str] = dict(
                s.execute(
                    text(
                        "SELECT id, detected_path FROM marketplace_catalog_entries "
                        "WHERE source_id = :s"
                    ),
                    {"s": src},
                ).all()
            )
        ops: list[Op] = []
        for _ in range(CALLERS):
            if round_no < 4 or rng.random() < 0.5:
                chosen = list(ids) if round_no < 4 else rng.sample(list(ids), len(ids) // 2)
                rng.shuffle(chosen)
                ops.append(("import", chosen))
            else:
                scan = {p: rng.choice(["v1", "v2", "v3"]) for p in rng.sample(paths, ENTRIES - 5)}
                ops.append(("sync", scan))
        done, errors = run_concurrently(sessions, ed, src, ops, commit_order)
        assert errors == [], f"round {round_no}: {errors}"

        model = before
        for index in sorted(done, key=done.__getitem__):
            kind, arg = ops[index]
            model_apply(model, (kind, {ids[i] for i in arg} if kind == "import" else arg))
        with sessions() as s:
            assert comparable(state(s, src)) == comparable(model), f"round {round_no}"


def run_concurrently(
    sessions: sessionmaker[Session], user: uuid.UUID, source: uuid.UUID, ops: list[Op], order: str
) -> tuple[dict[int, int], list[BaseException]]:
    """Each op in its own transaction and thread, all released at once; returns each op's
    place in the commit order, and what was raised."""
    done: dict[int, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(ops))

    def call(index: int, op: Op) -> None:
        try:
            with sessions() as s, s.begin():
                start.wait(timeout=30)
                with tenant_scope(s, user_id=user):
                    if op[0] == "import":
                        repo.mark_imported(s, op[1])
                    else:
                        scan = [artifact(p, sha) for p, sha in op[1].items()]
                        repo.sync_catalog(s, source, scan)
                # Still holding the locks: the next caller cannot have committed yet.
                done[index] = s.execute(text(f"SELECT nextval('{order}')")).scalar_one()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i, op)) for i, op in enumerate(ops)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return done, errors


# --- retryable errors, provoked for real -------------------------------------------------


def _hold_source_lock(engine: Engine, source: uuid.UUID) -> Any:
    conn = engine.connect()
    conn.execute(text("SELECT 1 FROM marketplace_sources WHERE id = :s FOR UPDATE"), {"s": source})
    return conn


WRITES: dict[str, Callable[[Session, World], object]] = {
    "sync_catalog": lambda s, w: repo.sync_catalog(s, w.a.source, [artifact("skills/a")]),
    "mark_imported": lambda s, w: repo.mark_imported(s, [w.a.entry]),
    "record_sync_failure": lambda s, w: repo.record_sync_failure(s, w.a.source, "rate limited"),
}


def _assert_retryable(exc: RetryableError, sqlstate: str) -> None:
    assert exc.sqlstate == sqlstate
    assert str(exc).endswith("retrying the whole transaction is safe")
    assert isinstance(exc.__cause__, DBAPIError)  # chained, never raised itself


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_lock_timeout_is_a_retryable_lock_timeout(
    engine: Engine, sessions: sessionmaker[Session], committed_world: World, write: str
) -> None:
    blocker = _hold_source_lock(engine, committed_world.a.source)
    try:
        with (
            pytest.raises(LockTimeout) as info,
            sessions() as s,
            tenant_scope(s, user_id=committed_world.a.members["editor"]),
        ):
            s.execute(text("SET LOCAL lock_timeout = '100ms'"))
            WRITES[write](s, committed_world)
    finally:
        blocker.close()
    _assert_retryable(info.value, "55P03")


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_statement_timeout_is_a_retryable_statement_timeout(
    engine: Engine, sessions: sessionmaker[Session], committed_world: World, write: str
) -> None:
    blocker = _hold_source_lock(engine, committed_world.a.source)
    try:
        with (
            pytest.raises(StatementTimeout) as info,
            sessions() as s,
            tenant_scope(s, user_id=committed_world.a.members["editor"]),
        ):
            s.execute(text("SET LOCAL statement_timeout = '100ms'"))
            WRITES[write](s, committed_world)
    finally:
        blocker.close()
    _assert_retryable(info.value, "57014")


def test_any_statement_in_tenant_scope_times_out_as_a_library_error(
    sessions: sessionmaker[Session], committed_world: World
) -> None:
    with (
        pytest.raises(StatementTimeout) as info,
        sessions() as s,
        tenant_scope(s, user_id=committed_world.a.members["viewer"]),
    ):
        s.execute(text("SET LOCAL statement_timeout = '50ms'"))
        s.execute(text("SELECT pg_sleep(1)"))
    _assert_retryable(info.value, "57014")


def test_a_deadlock_is_a_retryable_deadlock(
    engine: Engine, sessions: sessionmaker[Session], committed_world: World
) -> None:
    ed = committed_world.a.members["editor"]
    with engine.begin() as conn:
        other = conn.execute(
            text(
                "INSERT INTO marketplace_sources (project_id, repo_url) "
                "VALUES (:p, 'https://github.com/deadlock/other') RETURNING id"
            ),
            {"p": committed_world.a.project},
        ).scalar_one()
    first = committed_world.a.source
    both_locked = threading.Barrier(2)
    outcomes: dict[str, BaseException | None] = {}

    def lock_then_sync(name: str, held: uuid.UUID, wanted: uuid.UUID) -> None:
        """Hold one source's lock, then sync the other: two of these form a cycle."""
        try:
            with sessions() as s, tenant_scope(s, user_id=ed):
                s.execute(
                    text("SELECT 1 FROM marketplace_sources WHERE id = :s FOR NO KEY UPDATE"),
                    {"s": held},
                )
                both_locked.wait(timeout=30)
                repo.sync_catalog(s, wanted, [artifact("skills/a")])
            outcomes[name] = None
        except BaseException as exc:
            outcomes[name] = exc

    threads = [
        threading.Thread(target=lock_then_sync, args=("x", first, other)),
        threading.Thread(target=lock_then_sync, args=("y", other, first)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    failures = [exc for exc in outcomes.values() if exc is not None]
    assert len(outcomes) == 2 and len(failures) == 1, outcomes
    assert isinstance(failures[0], DeadlockDetected), repr(failures[0])
    _assert_retryable(failures[0], "40P01")


def test_a_serialization_failure_is_retryable(
    engine: Engine, sessions: sessionmaker[Session], committed_world: World
) -> None:
    ed, src = committed_world.a.members["editor"], committed_world.a.source
    repeatable = make_session_factory(engine.execution_options(isolation_level="REPEATABLE READ"))
    with (
        pytest.raises(SerializationFailure) as info,
        repeatable() as reader,
        tenant_scope(reader, user_id=ed),
    ):
        repo.list_entries(reader, src)  # the transaction's snapshot is taken here
        with sessions() as s, tenant_scope(s, user_id=ed):
            repo.sync_catalog(s, src, [artifact("skills/x", "abc")])  # commits
        repo.mark_imported(reader, [committed_world.a.entry])  # its source changed since
    _assert_retryable(info.value, "40001")


def test_a_serialization_failure_at_commit_leaves_tenant_scope_as_a_library_error(
    engine: Engine, committed_world: World
) -> None:
    """Write skew under SERIALIZABLE fails when the second transaction commits: the
    commit is inside tenant_scope's error translation too."""
    serializable = make_session_factory(engine.execution_options(isolation_level="SERIALIZABLE"))
    x, y = committed_world.a.source, committed_world.b.source
    read = text("SELECT last_error FROM marketplace_sources WHERE id = :s")
    write = text("UPDATE marketplace_sources SET last_error = 'skew' WHERE id = :s")
    with serializable() as one, serializable() as two:
        first = tenant_scope(one, admin=True)
        second = tenant_scope(two, admin=True)
        first.__enter__()
        second.__enter__()
        one.execute(read, {"s": x})
        two.execute(read, {"s": y})
        one.execute(write, {"s": y})
        two.execute(write, {"s": x})
        first.__exit__(None, None, None)  # commits
        with pytest.raises(SerializationFailure) as info:
            second.__exit__(None, None, None)  # the commit is refused
    _assert_retryable(info.value, "40001")
