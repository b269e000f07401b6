"""sync_catalog: every status rule, real rescans, a model-based property test,
refusals that change nothing, constant round trips, and concurrent syncs."""

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from skillmeat.core.database import make_session_factory, tenant_scope
from skillmeat.core.errors import NotFound, PermissionDenied, ValidationFailed
from skillmeat.core.models import ArtifactType, CatalogStatus
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.schemas.marketplace import DetectedArtifact
from skillmeat.data import load_snapshot, snapshot_pairs
from tests.rls_world import World, build_world

REAL = Path(__file__).resolve().parent / "data" / "real_catalogs"
Key = tuple[ArtifactType, str]
NEW_SOURCE = "INSERT INTO marketplace_sources (project_id, repo_url) VALUES (:p, :u) RETURNING id"


def artifact(
    path: str, sha: str = "a1", kind: ArtifactType = ArtifactType.SKILL, **kw: Any
) -> DetectedArtifact:
    return DetectedArtifact(
        artifact_type=kind,
        detected_path=path,
        upstream_url=kw.pop("upstream_url", f"https://github.com/o/r/tree/{sha}/{path}"),
        detected_version_sha=sha,
        confidence_score=kw.pop("confidence_score", 80),
    )


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


@pytest.fixture
def editor(session: Session, world: World) -> Callable[[], Any]:
    return lambda: tenant_scope(session, user_id=world.a.members["editor"])


def entries(session: Session, source_id: uuid.UUID) -> dict[Key, dict[str, Any]]:
    """The catalog as the superuser sees it (the test's own view, outside RLS)."""
    rows = session.execute(
        text(
            "SELECT artifact_type, detected_path, status, detected_version_sha, upstream_url, "
            "confidence_score, detected_at, imported_at, id FROM marketplace_catalog_entries "
            "WHERE source_id = :s"
        ),
        {"s": source_id},
    ).mappings()
    return {(ArtifactType(r["artifact_type"]), r["detected_path"]): dict(r) for r in rows}


def statuses(session: Session, source_id: uuid.UUID) -> dict[str, str]:
    return {path: row["status"] for (_, path), row in entries(session, source_id).items()}


def sync(
    session: Session, user: uuid.UUID, source: uuid.UUID, arts: list[DetectedArtifact]
) -> repo.SyncResult:
    with tenant_scope(session, user_id=user):
        return repo.sync_catalog(session, source, arts)


def import_all(
    session: Session, user: uuid.UUID, source: uuid.UUID, paths: list[str] | None = None
) -> None:
    ids = [
        row["id"] for (_, p), row in entries(session, source).items() if paths is None or p in paths
    ]
    with tenant_scope(session, user_id=user):
        repo.mark_imported(session, ids)


# --- the rules, one at a time -----------------------------------------------------


def test_first_sync_inserts_everything_as_new(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    result = sync(session, ed, src, [artifact("skills/a"), artifact("skills/b")])
    # The world's own entry (skills/x) was not detected: removed.
    assert result == repo.SyncResult(
        new=2, updated=0, removed=1, unchanged=0, inserted=2, changed=1
    )
    assert statuses(session, src) == {"skills/a": "new", "skills/b": "new", "skills/x": "removed"}


def test_rerunning_the_same_input_returns_the_same_result(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    scan = [artifact("skills/a"), artifact("skills/b", "b1")]
    first = sync(session, ed, src, scan)
    again = sync(session, ed, src, scan)
    assert (again.new, again.updated, again.removed, again.unchanged) == (
        first.new,
        first.updated,
        first.removed,
        first.unchanged,
    )
    assert (again.inserted, again.changed) == (0, 0)


def test_never_imported_stays_new_even_when_its_sha_changes(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    sync(session, ed, src, [artifact("skills/a", "v1")])
    sync(session, ed, src, [artifact("skills/a", "v2")])
    row = entries(session, src)[(ArtifactType.SKILL, "skills/a")]
    assert (row["status"], row["detected_version_sha"]) == ("new", "v2")


def test_imported_and_changed_is_updated_until_imported_again(
    session: Session, world: World
) -> None:
    ed, src = world.a.members["editor"], world.a.source
    sync(session, ed, src, [artifact("skills/a", "v1")])
    import_all(session, ed, src, ["skills/a"])
    assert statuses(session, src)["skills/a"] == "unchanged"
    sync(session, ed, src, [artifact("skills/a", "v2")])
    assert statuses(session, src)["skills/a"] == "updated"
    sync(session, ed, src, [artifact("skills/a", "v2")])  # same SHA again: still updated
    assert statuses(session, src)["skills/a"] == "updated"
    import_all(session, ed, src, ["skills/a"])
    sync(session, ed, src, [artifact("skills/a", "v2")])
    assert statuses(session, src)["skills/a"] == "unchanged"


def test_imported_with_same_sha_is_unchanged(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    sync(session, ed, src, [artifact("skills/a", "v1")])
    import_all(session, ed, src)
    result = sync(session, ed, src, [artifact("skills/a", "v1")])
    assert statuses(session, src)["skills/a"] == "unchanged"
    assert result.unchanged == 1


def test_undetected_entry_is_soft_removed_and_can_come_back(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    sync(session, ed, src, [artifact("skills/a", "v1"), artifact("skills/b", "v1")])
    import_all(session, ed, src, ["skills/a"])
    imported_at = entries(session, src)[(ArtifactType.SKILL, "skills/a")]["imported_at"]
    result = sync(session, ed, src, [artifact("skills/b", "v1")])
    gone = entries(session, src)[(ArtifactType.SKILL, "skills/a")]
    assert (gone["status"], gone["imported_at"]) == ("removed", imported_at)
    assert result.removed == 2  # skills/a and the world's skills/x
    sync(session, ed, src, [artifact("skills/a", "v2"), artifact("skills/b", "v1")])
    assert statuses(session, src)["skills/a"] == "updated"  # imported, SHA changed


def test_a_change_seen_before_a_removal_is_still_updated_when_it_comes_back(
    session: Session, world: World
) -> None:
    ed, src = world.a.members["editor"], world.a.source
    sync(session, ed, src, [artifact("skills/a", "v1")])
    import_all(session, ed, src, ["skills/a"])  # the user has v1
    sync(session, ed, src, [artifact("skills/a", "v2")])
    sync(session, ed, src, [])  # gone for a while
    sync(session, ed, src, [artifact("skills/a", "v2")])  # back, still not what was imported
    assert statuses(session, src)["skills/a"] == "updated"
    sync(session, ed, src, [])
    sync(session, ed, src, [artifact("skills/a", "v1")])  # back as imported
    assert statuses(session, src)["skills/a"] == "unchanged"


def test_detected_fields_are_refreshed(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    sync(session, ed, src, [artifact("skills/a", "v1", confidence_score=50)])
    before = entries(session, src)[(ArtifactType.SKILL, "skills/a")]
    sync(
        session,
        ed,
        src,
        [
            artifact(
                "skills/a",
                "v2",
                confidence_score=72.5,
                upstream_url="https://github.com/o/r/tree/v2/x",
            )
        ],
    )
    after = entries(session, src)[(ArtifactType.SKILL, "skills/a")]
    assert (after["upstream_url"], after["confidence_score"], after["detected_version_sha"]) == (
        "https://github.com/o/r/tree/v2/x",
        72.5,
        "v2",
    )
    assert after["detected_at"] >= before["detected_at"]
    assert after["id"] == before["id"]


def test_last_sync_advances_and_detected_at_stays_with_the_version(
    session: Session, world: World
) -> None:
    ed, src = world.a.members["editor"], world.a.source
    sync(session, ed, src, [artifact("skills/a")])
    first = session.execute(
        text("SELECT last_sync FROM marketplace_sources WHERE id = :s"), {"s": src}
    ).scalar_one()
    sync(session, ed, src, [artifact("skills/a")])  # same transaction: now() would not move
    last_sync, detected_at = session.execute(
        text(
            "SELECT s.last_sync, e.detected_at FROM marketplace_sources s "
            "JOIN marketplace_catalog_entries e ON e.source_id = s.id "
            "WHERE s.id = :s AND e.detected_path = 'skills/a'"
        ),
        {"s": src},
    ).one()
    assert last_sync > first  # last seen: the source's last_sync
    assert detected_at == first  # first detected: this version, at the first sync
    sync(session, ed, src, [artifact("skills/a", "a2")])  # a new version
    last_sync, detected_at = session.execute(
        text(
            "SELECT s.last_sync, e.detected_at FROM marketplace_sources s "
            "JOIN marketplace_catalog_entries e ON e.source_id = s.id "
            "WHERE s.id = :s AND e.detected_path = 'skills/a'"
        ),
        {"s": src},
    ).one()
    assert detected_at == last_sync


def test_sync_sets_last_sync_and_clears_last_error(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    with tenant_scope(session, user_id=ed):
        repo.record_sync_failure(session, src, "rate limited by GitHub")
    row = session.execute(
        text("SELECT last_sync, last_error FROM marketplace_sources WHERE id = :s"), {"s": src}
    ).one()
    assert (row.last_sync, row.last_error) == (None, "rate limited by GitHub")
    sync(session, ed, src, [artifact("skills/a")])
    row = session.execute(
        text("SELECT last_sync, last_error FROM marketplace_sources WHERE id = :s"), {"s": src}
    ).one()
    assert row.last_sync is not None and row.last_error is None


# --- refusals change nothing ------------------------------------------------------


def _snapshot(session: Session, source: uuid.UUID) -> tuple[Any, ...]:
    catalog = sorted((k, tuple(sorted(v.items()))) for k, v in entries(session, source).items())
    last = session.execute(
        text("SELECT last_sync, last_error, updated_at FROM marketplace_sources WHERE id = :s"),
        {"s": source},
    ).one()
    return (tuple(catalog), tuple(last))


def test_duplicate_in_input_names_the_path_and_writes_nothing(
    session: Session, world: World
) -> None:
    ed, src = world.a.members["editor"], world.a.source
    before = _snapshot(session, src)
    with pytest.raises(ValidationFailed, match=r"artifacts\[2\]\.detected_path: 'skills/a'"):
        sync(
            session,
            ed,
            src,
            [artifact("skills/a"), artifact("skills/b"), artifact("skills/a", "z")],
        )
    assert _snapshot(session, src) == before


def test_bad_item_names_its_index_and_field_and_writes_nothing(
    session: Session, world: World
) -> None:
    ed, src = world.a.members["editor"], world.a.source
    before = _snapshot(session, src)
    bad = {
        "artifact_type": "skill",
        "detected_path": "skills/c",
        "upstream_url": "https://x.y",
        "detected_version_sha": "c",
        "confidence_score": 120,
    }
    with pytest.raises(ValidationFailed, match=r"artifacts\[1\]\.confidence_score"):
        sync(session, ed, src, [artifact("skills/a"), bad])  # type: ignore[list-item]
    assert _snapshot(session, src) == before


def test_a_scan_over_the_limit_is_refused_before_anything_is_written(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ed, src = world.a.members["editor"], world.a.source
    monkeypatch.setenv("SKILLMEAT_MAX_SCAN_ARTIFACTS", "3")
    before = _snapshot(session, src)
    pulled: list[int] = []

    def endless() -> Iterator[DetectedArtifact]:
        for n in itertools.count():
            pulled.append(n)
            yield artifact(f"skills/s{n}")

    with pytest.raises(ValidationFailed) as caught, tenant_scope(session, user_id=ed):
        repo.sync_catalog(session, src, endless())
    assert str(caught.value).startswith(
        "artifacts: more than 3 artifacts is not allowed (at most 3 per sync_catalog call, "
        "set by SKILLMEAT_MAX_SCAN_ARTIFACTS"
    )
    assert len(pulled) == 4
    assert _snapshot(session, src) == before
    # At the limit the same scan goes through.
    assert sync(session, ed, src, [artifact(f"skills/s{n}") for n in range(3)]).inserted == 3


def test_sync_works_where_temporary_is_revoked_from_public(session: Session, world: World) -> None:
    database = session.execute(text("SELECT current_database()")).scalar_one()
    session.execute(text(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC'))
    result = sync(session, world.a.members["editor"], world.a.source, [artifact("skills/a")])
    assert result.inserted == 1


@pytest.mark.parametrize("who", ["viewer", "foreign-editor", "outsider"])
def test_refused_sync_changes_nothing(session: Session, world: World, who: str) -> None:
    user = {
        "viewer": world.a.members["viewer"],
        "foreign-editor": world.b.members["editor"],
        "outsider": world.outsider,
    }[who]
    before = _snapshot(session, world.a.source)
    # A viewer sees the source but may not write it; to anybody else it does not exist.
    expected = PermissionDenied if who == "viewer" else NotFound
    with pytest.raises(expected):
        sync(session, user, world.a.source, [artifact("skills/a")])
    assert _snapshot(session, world.a.source) == before


def test_round_trips_do_not_grow_with_the_input(
    session: Session, world: World, engine: Engine
) -> None:
    counts = []
    for size in (1, 10, 2000):
        scan = [artifact(f"agents/a{i}.md", kind=ArtifactType.AGENT) for i in range(size)]
        statements: list[str] = []

        def count(*args: Any, statements: list[str] = statements) -> None:
            statements.append(args[2])

        event.listen(engine, "before_cursor_execute", count)
        try:
            sync(session, world.a.members["editor"], world.a.source, scan)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        counts.append(len(statements))
    assert counts[0] == counts[1] == counts[2], counts


# --- real repositories: old -> new is a real rescan --------------------------------


@pytest.mark.parametrize("repo_name", sorted(snapshot_pairs(REAL)))
def test_real_rescan_matches_an_independent_diff(
    session: Session, world: World, repo_name: str
) -> None:
    old_file, new_file = snapshot_pairs(REAL)[repo_name]
    old, new = load_snapshot(old_file).artifacts, load_snapshot(new_file).artifacts
    ed = world.a.members["editor"]
    with tenant_scope(session, admin=True):
        src = session.execute(
            text(NEW_SOURCE),
            {"p": world.a.project, "u": f"https://github.com/{repo_name}"},
        ).scalar_one()
    first = sync(session, ed, src, old)
    assert (first.new, first.inserted) == (len(old), len(old))
    import_all(session, ed, src)
    result = sync(session, ed, src, new)

    before = {(a.artifact_type, a.detected_path): a.detected_version_sha for a in old}
    after = {(a.artifact_type, a.detected_path): a.detected_version_sha for a in new}
    added = after.keys() - before.keys()
    removed = before.keys() - after.keys()
    changed = {k for k in after.keys() & before.keys() if after[k] != before[k]}
    unchanged = (after.keys() & before.keys()) - changed
    assert (result.new, result.updated, result.removed, result.unchanged) == (
        len(added),
        len(changed),
        len(removed),
        len(unchanged),
    )
    assert result.inserted == len(added)
    assert result.changed == len(changed) + len(removed)


# --- property: the database agrees with a small model of the rules -----------------

PATHS = [f"skills/s{i}" for i in range(5)]
scans = st.dictionaries(st.sampled_from(PATHS), st.sampled_from(["v1", "v2", "v3"]), max_size=5)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("sync"), scans),
        st.tuples(st.just("import"), st.sets(st.sampled_from(PATHS), max_size=5)),
    ),
    min_size=1,
    max_size=8,
)


def model_apply(state: dict[str, dict[str, Any]], step: tuple[str, Any]) -> None:
    kind, arg = step
    if kind == "import":
        for path in arg:
            if path in state and state[path]["status"] != "removed":
                state[path].update(
                    status="unchanged", imported=True, imported_sha=state[path]["sha"]
                )
        return
    for path, sha in arg.items():
        row = state.get(path)
        if row is None:
            state[path] = {"status": "new", "sha": sha, "imported": False}
            continue
        if not row["imported"]:
            status = "new"
        elif row["status"] == "updated" or row["imported_sha"] != sha:
            status = "updated"
        else:
            status = "unchanged"
        row.update(status=status, sha=sha)
    for path, row in state.items():
        if path not in arg:
            row["status"] = "removed"


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps)
def test_sync_agrees_with_the_model(
    session: Session, world: World, steps: list[tuple[str, Any]]
) -> None:
    ed = world.a.members["editor"]
    savepoint = session.begin_nested()
    try:
        src = session.execute(
            text(NEW_SOURCE),
            {"p": world.a.project, "u": f"https://github.com/model/r{uuid.uuid4().hex[:8]}"},
        ).scalar_one()
        model: dict[str, dict[str, Any]] = {}
        for step in steps:
            model_apply(model, step)
            if step[0] == "sync":
                result = sync(session, ed, src, [artifact(p, sha) for p, sha in step[1].items()])
                expected = {s: sum(r["status"] == s for r in model.values()) for s in CatalogStatus}
                assert (result.new, result.updated, result.removed, result.unchanged) == (
                    expected[CatalogStatus.NEW],
                    expected[CatalogStatus.UPDATED],
                    expected[CatalogStatus.REMOVED],
                    expected[CatalogStatus.UNCHANGED],
                )
            else:
                import_all(session, ed, src, sorted(step[1]))
            assert statuses(session, src) == {p: r["status"] for p, r in model.items()}
    finally:
        savepoint.rollback()


# --- concurrency: two syncs of one source serialize ----------------------------------


def test_concurrent_syncs_serialize(engine: Engine, committed_world: World) -> None:
    sessions = make_session_factory(engine)
    ed, src = committed_world.a.members["editor"], committed_world.a.source
    with sessions() as s:
        sync(s, ed, src, [artifact("skills/a", "v1"), artifact("skills/b", "v1")])
        import_all(s, ed, src)  # reads as the superuser first: the scope is a savepoint
        s.commit()
    scan_x = [artifact("skills/a", "v2"), artifact("skills/c", "v1")]
    scan_y = [artifact("skills/b", "v1"), artifact("skills/c", "v1"), artifact("skills/d", "v1")]
    results: dict[str, repo.SyncResult] = {}
    errors: list[BaseException] = []

    def run(name: str, scan: list[DetectedArtifact]) -> None:
        try:
            with sessions() as s:
                results[name] = sync(s, ed, src, scan)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # Hold the source lock so both syncs queue up on it, then let them race.
    with engine.connect() as blocker:
        blocker.execute(
            text("SELECT 1 FROM marketplace_sources WHERE id = :s FOR NO KEY UPDATE"), {"s": src}
        )
        threads = [
            threading.Thread(target=run, args=("x", scan_x)),
            threading.Thread(target=run, args=("y", scan_y)),
        ]
        for t in threads:
            t.start()
        waiting = 0
        for _ in range(100):
            blocker.execute(text("SELECT pg_stat_clear_snapshot()"))  # stats are cached per xact
            waiting = blocker.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
            if waiting == 2:
                break
            threading.Event().wait(0.05)
        assert waiting == 2, f"both syncs should wait on the source lock ({errors})"
        blocker.rollback()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors

    with sessions() as s:
        final = statuses(s, src)
        rows = s.execute(
            text("SELECT count(*) FROM marketplace_catalog_entries WHERE source_id = :s"),
            {"s": src},
        ).scalar_one()
    assert rows == len(final)  # no duplicate rows

    def serial(first: list[DetectedArtifact], second: list[DetectedArtifact]) -> dict[str, str]:
        model: dict[str, dict[str, Any]] = {}
        model_apply(model, ("sync", {"skills/x": "abc", "skills/a": "v1", "skills/b": "v1"}))
        model_apply(model, ("import", {"skills/a", "skills/b"}))
        model["skills/x"]["status"] = "removed"
        for scan in (first, second):
            model_apply(model, ("sync", {a.detected_path: a.detected_version_sha for a in scan}))
        return {p: r["status"] for p, r in model.items()}

    assert final in (serial(scan_x, scan_y), serial(scan_y, scan_x))


def test_a_sync_logs_its_counts_and_duration(
    session: Session, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="skillmeat.sync"):
        sync(session, world.a.members["editor"], world.a.source, [artifact("skills/logged")])
    (record,) = [r for r in caplog.records if r.name == "skillmeat.sync"]
    assert f"synced source {world.a.source}: 1 artifacts, 2 rows written (1 inserted)" in (
        record.getMessage()
    )
    assert "new=1 updated=0 removed=1 unchanged=0" in record.getMessage()
