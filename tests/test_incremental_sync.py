"""A rescan writes only what changed (row versions by xmin), and its plan does not
depend on fresh statistics (a just-created database, 50,000 artifacts, no ANALYZE)."""

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import errors as pg_errors
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from skillmeat.core.database import make_engine, tenant_scope
from skillmeat.core.database.provision import throwaway_database, upgrade_to_head
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.schemas.marketplace import DetectedArtifact
from skillmeat.tools.bench_sync import changed_by, scan_of
from tests.rls_world import World, build_world
from tests.test_catalog_sync import artifact, import_all, sync

Version = tuple[str, str]  # (xmin, ctid)


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


def versions(session: Session, source: uuid.UUID) -> dict[str, Version]:
    rows = session.execute(
        text(
            "SELECT detected_path, xmin::text, ctid::text FROM marketplace_catalog_entries "
            "WHERE source_id = :s"
        ),
        {"s": source},
    )
    return {path: (xmin, ctid) for path, xmin, ctid in rows}


def row(session: Session, source: uuid.UUID, path: str) -> Any:
    return session.execute(
        text(
            "SELECT e.status, e.detected_at, e.detected_version_sha, s.last_sync "
            "FROM marketplace_catalog_entries e JOIN marketplace_sources s ON s.id = e.source_id "
            "WHERE e.source_id = :s AND e.detected_path = :p"
        ),
        {"s": source, "p": path},
    ).one()


def rewritten(before: dict[str, Version], after: dict[str, Version]) -> set[str]:
    """Paths whose row version changed, plus new paths."""
    return {path for path, version in after.items() if before.get(path) != version}


def catalog(n: int, sha: str = "v1") -> list[DetectedArtifact]:
    return [artifact(f"skills/s{i:03}", sha) for i in range(n)]


def last_sync(session: Session, source: uuid.UUID) -> Any:
    return session.execute(
        text("SELECT last_sync FROM marketplace_sources WHERE id = :s"), {"s": source}
    ).scalar_one()


def test_identical_rescan_writes_no_entry(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    scan = catalog(200)
    sync(session, ed, src, scan)
    # Every status present: new (never imported), unchanged, updated, removed (skills/x).
    import_all(session, ed, src, [f"skills/s{i:03}" for i in range(100)])
    scan[0] = artifact("skills/s000", "v2")
    sync(session, ed, src, scan)
    assert row(session, src, "skills/s000").status == "updated"
    before, synced_before = versions(session, src), last_sync(session, src)

    result = sync(session, ed, src, scan)

    assert rewritten(before, versions(session, src)) == set()
    assert last_sync(session, src) > synced_before
    assert result == repo.SyncResult(
        new=100, updated=1, removed=1, unchanged=99, inserted=0, changed=0
    )


def test_one_percent_rescan_writes_exactly_the_changed_rows(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    scan = catalog(200)
    sync(session, ed, src, scan)
    import_all(session, ed, src, ["skills/s001"])
    before = versions(session, src)
    first_detected = row(session, src, "skills/s003").detected_at

    rescan = list(scan)
    rescan[1] = artifact("skills/s001", "v2")  # new version of an imported entry: updated
    rescan[2] = artifact("skills/s002", "v2")  # new version, never imported: stays new
    rescan[3] = artifact("skills/s003", "v1", confidence_score=99)  # same version, new confidence
    del rescan[4:6]  # skills/s004 and skills/s005 are gone
    rescan.append(artifact("skills/new", "v1"))
    result = sync(session, ed, src, rescan)

    assert rewritten(before, versions(session, src)) == {
        "skills/s001",
        "skills/s002",
        "skills/s003",
        "skills/s004",
        "skills/s005",
        "skills/new",
    }
    assert (result.inserted, result.changed) == (1, 4)  # s001, s002 (SHA), s004, s005
    synced = last_sync(session, src)
    assert row(session, src, "skills/s001")[:1] == ("updated",)
    assert row(session, src, "skills/s002").detected_at == synced  # a new version
    assert row(session, src, "skills/s003").detected_at == first_detected  # same version
    assert row(session, src, "skills/s004").status == "removed"


def test_an_entry_already_removed_and_still_absent_is_not_touched(
    session: Session, world: World
) -> None:
    ed, src = world.a.members["editor"], world.a.source
    sync(session, ed, src, [artifact("skills/a"), artifact("skills/b")])
    before = versions(session, src)
    sync(session, ed, src, [artifact("skills/a")])
    after_removal = versions(session, src)
    assert rewritten(before, after_removal) == {"skills/b"}
    assert row(session, src, "skills/b").status == "removed"

    sync(session, ed, src, [artifact("skills/a")])
    sync(session, ed, src, [artifact("skills/a")])

    assert rewritten(after_removal, versions(session, src)) == set()


def test_an_entry_that_comes_back_is_written_and_redetected(session: Session, world: World) -> None:
    ed, src = world.a.members["editor"], world.a.source
    sync(session, ed, src, [artifact("skills/a"), artifact("skills/b")])
    import_all(session, ed, src, ["skills/b"])
    sync(session, ed, src, [artifact("skills/a")])
    before = versions(session, src)

    sync(session, ed, src, [artifact("skills/a"), artifact("skills/b")])  # back, same SHA

    assert rewritten(before, versions(session, src)) == {"skills/b"}
    back = row(session, src, "skills/b")
    assert (back.status, back.detected_at) == ("unchanged", back.last_sync)


# --- the plan on a just-created database ----------------------------------------------

ARTIFACTS = 50_000


@pytest.fixture
def fresh_database(pg_server_url: URL) -> Iterator[URL]:
    """Migrated, never analyzed (autovacuum off on the catalog, in case the server has it)."""
    with throwaway_database(pg_server_url, prefix="skillmeat_fresh") as url:
        upgrade_to_head(url)
        yield url


def scans_of_staged_rows(node: dict[str, Any]) -> list[str]:
    """Scans in this subtree that read the staged scan: its temporary tables, or a CTE."""
    found: list[str] = []
    relation = node.get("Relation Name", "")
    if relation.startswith("skillmeat_sync_") or node["Node Type"] == "CTE Scan":
        found.append(f"{node['Node Type']} {relation or node.get('CTE Name')}")
    for child in node.get("Plans", []):
        found.extend(scans_of_staged_rows(child))
    return found


def nested_loops_over_staged_rows(node: dict[str, Any]) -> list[str]:
    """Nested Loops that read staged rows on their inner side: once per outer row."""
    found: list[str] = []
    children = node.get("Plans", [])
    if node["Node Type"] == "Nested Loop":
        for child in children:
            if child.get("Parent Relationship") == "Inner":
                found.extend(f"Nested Loop, inner {s}" for s in scans_of_staged_rows(child))
    for child in children:
        found.extend(nested_loops_over_staged_rows(child))
    return found


def outline(node: dict[str, Any], depth: int = 0) -> str:
    """One line per node: type, relation, rows estimated."""
    join = f" ({node['Join Type']})" if "Join Type" in node else ""
    what = node.get("Relation Name") or node.get("CTE Name") or ""
    cond = node.get("Join Filter") or node.get("Index Cond") or node.get("Filter") or ""
    line = (
        f"{'  ' * depth}{node.get('Parent Relationship', '')}: {node['Node Type']}{join} "
        f"{what} rows={node.get('Plan Rows')} {cond[:80]}"
    )
    return "\n".join([line, *(outline(child, depth + 1) for child in node.get("Plans", []))])


def node_types(node: dict[str, Any]) -> set[str]:
    """e.g. {"Aggregate", "Hash Join (Full)", "Seq Scan"}."""
    join = f" ({node['Join Type']})" if "Join Type" in node else ""
    types = {node["Node Type"] + join}
    for child in node.get("Plans", []):
        types |= node_types(child)
    return types


def test_first_sync_and_rescan_on_fresh_statistics_never_loop_over_the_scan(
    fresh_database: URL,
) -> None:
    engine = make_engine(fresh_database, poolclass=NullPool)
    editor = uuid.uuid4()
    plans: list[dict[str, Any]] = []
    try:
        with engine.begin() as conn:
            project = conn.execute(
                text("INSERT INTO projects (name) VALUES ('fresh') RETURNING id")
            ).scalar_one()
            conn.execute(
                text("INSERT INTO project_members VALUES (:p, :u, 'editor')"),
                {"p": project, "u": editor},
            )
            source = conn.execute(
                text(
                    "INSERT INTO marketplace_sources (project_id, repo_url) "
                    "VALUES (:p, 'https://github.com/fresh/catalog') RETURNING id"
                ),
                {"p": project},
            ).scalar_one()
            for table in ("marketplace_catalog_entries", "marketplace_sources"):
                conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        rng = random.Random(9)
        scan = scan_of(ARTIFACTS, rng)
        rescan = changed_by(scan, 1, rng, "back")

        with engine.connect() as conn:
            _explain_every_statement(conn, plans)
            with Session(bind=conn) as session:
                for artifacts in (scan, rescan):
                    with tenant_scope(session, user_id=editor):
                        result = repo.sync_catalog(session, source, artifacts)
                    assert result.inserted == (ARTIFACTS if artifacts is scan else ARTIFACTS // 100)
            analyzed = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stats WHERE tablename = 'marketplace_catalog_entries'"
                )
            ).scalar_one()
        assert analyzed == 0, "the catalog was analyzed: the test no longer shows fresh statistics"
    finally:
        engine.dispose()

    for plan in plans:
        assert nested_loops_over_staged_rows(plan) == [], outline(plan)
    diffs = [plan for plan in plans if {"Hash Join (Full)", "Merge Join (Full)"} & node_types(plan)]
    merges = [plan for plan in plans if plan.get("Operation") == "Merge"]
    assert (len(diffs), len(merges)) == (2, 2), "expected both syncs' diff and MERGE plans"


def _explain_every_statement(conn: Connection, plans: list[dict[str, Any]]) -> None:
    """auto_explain as NOTICEs on this connection: the plans the sync really ran."""
    conn.execute(text("LOAD 'auto_explain'"))
    for setting, value in (
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_format", "json"),
        ("auto_explain.log_level", "notice"),
        # A guard, not a timing assertion: a nested loop over 50,000 staged rows ran
        # for minutes; fail fast instead.
        ("statement_timeout", "120s"),
    ):
        conn.execute(text("SELECT set_config(:k, :v, false)"), {"k": setting, "v": value})
    conn.commit()

    def collect(diag: pg_errors.Diagnostic) -> None:
        message = diag.message_primary or ""
        if "plan:" in message:
            plans.append(json.loads(message.split("plan:", 1)[1])["Plan"])

    raw = conn.connection.driver_connection
    assert raw is not None
    raw.add_notice_handler(collect)


def test_bench_sync_prints_every_scenario_and_target(
    pg_server_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    from skillmeat import cli

    url = pg_server_url.render_as_string(hide_password=False)
    assert cli.main(["--url", url, "bench", "sync", "--artifacts", "300", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("COPY of the scan", "first sync", "identical", "1% changed", "10% changed"):
        assert label in out
    assert "pg_walinspect" in out  # the tests connect as a superuser
    assert out.count("met ") + out.count("MISSED ") == 5


def test_bench_sync_keeps_the_wal_it_reads_across_checkpoints(pg_server_url: URL) -> None:
    """bench sync reads a step's WAL after the step; a checkpoint in between recycled its
    first segment when other work wrote WAL ("requested WAL segment ... has already been
    removed", running docs/performance.md's commands in a row). The fixture's temporary
    slot keeps that WAL, and goes with the fixture."""
    from skillmeat.tools.bench_sync import Fixture

    slots = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = :name"
    with throwaway_database(pg_server_url, prefix="skillmeat_walslot") as url:
        upgrade_to_head(url)
        engine = make_engine(url, poolclass=NullPool)
        fixture = Fixture(engine)
        try:
            assert fixture.slot
            start = fixture.wal_lsn()
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for _ in range(3):  # WAL in new segments, and checkpoints past the start
                    conn.execute(text("CREATE TABLE wal_probe (x int); DROP TABLE wal_probe"))
                    conn.execute(text("SELECT pg_switch_wal()"))
                    conn.execute(text("CHECKPOINT"))
            assert fixture.wal_bytes(start) > 0
        finally:
            fixture.cleanup()
        with engine.connect() as conn:
            assert conn.execute(text(slots), {"name": fixture.slot}).scalar_one() == 0
        engine.dispose()


def test_a_content_change_rewrites_only_that_row_and_keeps_the_status(
    session: Session, world: World
) -> None:
    ed, src = world.a.members["editor"], world.a.source
    scan = catalog(20)
    sync(session, ed, src, scan)
    import_all(session, ed, src)
    before = versions(session, src)
    scan[3] = scan[3].model_copy(update={"description": "Now with a description"})
    scan[5] = scan[5].model_copy(update={"tags": ["python"]})
    result = sync(session, ed, src, scan)
    assert rewritten(before, versions(session, src)) == {"skills/s003", "skills/s005"}
    # the status rules look only at the version SHA (changed counts status/SHA changes)
    assert (row(session, src, "skills/s003").status, result.changed) == ("unchanged", 0)
    desc = session.execute(
        text(
            "SELECT description FROM marketplace_catalog_entries "
            "WHERE source_id = :s AND detected_path = 'skills/s003'"
        ),
        {"s": src},
    ).scalar_one()
    assert desc == "Now with a description"
