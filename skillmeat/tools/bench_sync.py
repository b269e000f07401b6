"""`skillmeat-db bench sync`: sync_catalog against COPY of the same rows (the physical floor).

Each round: COPY the N-artifact scan into a fresh source, and (before or after
it, alternating) a first sync_catalog of the same scan into another fresh source
followed by three rescans of it: identical, then 1% and 10% of the artifacts
changed, gone and new. Median times and their ratios to COPY, WAL bytes and the
rows each step wrote are printed against issue 9's targets; nothing here is a
pass/fail test.
"""

import argparse
import random
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url

from skillmeat.core.database import DatabaseSettings, make_engine, make_session_factory
from skillmeat.core.database.provision import throwaway_database, upgrade_to_head
from skillmeat.core.database.tenant import tenant_scope
from skillmeat.core.models import ArtifactType
from skillmeat.core.repositories.marketplace import sync_catalog
from skillmeat.core.schemas.marketplace import DetectedArtifact
from skillmeat.data import load_snapshot
from skillmeat.tools import CommandError
from skillmeat.tools.console import ProgressBar, render_table

REAL_CATALOGS = Path(__file__).resolve().parents[2] / "tests" / "data" / "real_catalogs"
# This transaction's own counters for the entries table (not yet in pg_stat_user_tables).
XACT_WRITES = """
SELECT pg_stat_get_xact_tuples_inserted(c.oid) AS inserted,
       pg_stat_get_xact_tuples_updated(c.oid) AS updated,
       pg_stat_get_xact_tuples_hot_updated(c.oid) AS hot
  FROM pg_class c WHERE c.oid = 'marketplace_catalog_entries'::regclass
"""
# A block reference reads "rel <tablespace>/<database>/<relfilenode> ...". The step
# has committed, so its records are before the flush LSN (the function's limit).
WAL_OF_THIS_DATABASE = """
SELECT coalesce(sum(record_length), 0)
  FROM pg_get_wal_records_info(:start, pg_current_wal_flush_lsn())
 WHERE block_ref ~ ('rel [0-9]+/'
                    || (SELECT oid FROM pg_database WHERE datname = current_database())
                    || '/')
"""
ADVANCE_SLOT = """
SELECT pg_replication_slot_advance(slot_name, pg_current_wal_flush_lsn())
  FROM pg_replication_slots
 WHERE slot_name = :name AND restart_lsn < pg_current_wal_flush_lsn()
"""
COPY_SQL = (
    "COPY marketplace_catalog_entries (source_id, artifact_type, detected_path, upstream_url, "
    "detected_version_sha, confidence_score) FROM STDIN (FORMAT BINARY)"
)


def scan_of(size: int, rng: random.Random) -> list[DetectedArtifact]:
    """`size` artifacts: every real snapshot record, then synthetic copies under new roots."""
    real: list[DetectedArtifact] = []
    for snapshot_file in sorted(REAL_CATALOGS.glob("*__new.jsonl.gz")):
        repo = snapshot_file.name.split("__new")[0]  # owner__repo: paths stay unique
        for artifact in load_snapshot(snapshot_file).artifacts:
            path = repo if artifact.detected_path == "." else f"{repo}/{artifact.detected_path}"
            real.append(artifact.model_copy(update={"detected_path": path}))
    if not real:  # an installed package without the test data: synthetic only
        real = [
            DetectedArtifact(
                artifact_type=ArtifactType.AGENT,
                detected_path=f"agents/a{i}.md",
                upstream_url=f"https://github.com/o/r/blob/main/agents/a{i}.md",
                detected_version_sha=f"{i:040x}",
                confidence_score=80,
            )
            for i in range(100)
        ]
    scan: list[DetectedArtifact] = []
    for i in range(size):
        artifact = real[i % len(real)]
        copy = i // len(real)
        prefix = "" if copy == 0 else f"mirror-{copy}/"
        scan.append(
            artifact.model_copy(
                update={
                    "detected_path": prefix + artifact.detected_path,
                    "detected_version_sha": f"{rng.getrandbits(160):040x}",
                }
            )
        )
    return scan


def changed_by(
    scan: list[DetectedArtifact], percent: int, rng: random.Random, tag: str
) -> list[DetectedArtifact]:
    """`percent`% of the artifacts get a new SHA, another `percent`% are gone and as many
    new ones appear (so 3 x `percent`% of the rows are written)."""
    n = len(scan)
    k = n * percent // 100
    order = list(range(n))
    rng.shuffle(order)
    gone = set(order[:k])
    changed = set(order[k : 2 * k])
    out = []
    for i, artifact in enumerate(scan):
        if i in gone:
            continue
        if i in changed:
            artifact = artifact.model_copy(
                update={"detected_version_sha": f"{rng.getrandbits(160):040x}"}
            )
        out.append(artifact)
    for i in order[2 * k : 3 * k]:
        out.append(
            scan[i].model_copy(update={"detected_path": f"{tag}-{i}/{scan[i].detected_path}"})
        )
    return out


@dataclass(frozen=True)
class Written:
    """Entry rows a step wrote: inserted, updated (of which HOT: no index entries)."""

    inserted: int
    updated: int
    hot: int


class Fixture:
    """A project with an editor; fresh sources on demand."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = make_session_factory(engine)
        self.editor = uuid.uuid4()
        with engine.begin() as conn:
            self.project = conn.execute(
                text("INSERT INTO projects (name) VALUES ('bench sync') RETURNING id")
            ).scalar_one()
            conn.execute(
                text("INSERT INTO project_members VALUES (:p, :u, 'editor')"),
                {"p": self.project, "u": self.editor},
            )
            # pg_walinspect attributes WAL to this database, whatever else the server
            # runs; without it (not a superuser), the server-wide LSN difference.
            installed = "SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect'"
            superuser = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            self.walinspect_added = False
            if not conn.execute(text(installed)).first() and conn.execute(text(superuser)).scalar():
                conn.execute(text("CREATE EXTENSION pg_walinspect"))
                self.walinspect_added = True
            self.walinspect = conn.execute(text(installed)).first() is not None
        # pg_walinspect reads the step's WAL after the step: a checkpoint in between may
        # already have recycled its first segment ("requested WAL segment ... has already
        # been removed", seen with other work writing WAL on the server). A temporary
        # physical slot, moved to each step's start, keeps it; released with the session.
        self.slot: str | None = None
        self.slot_conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if self.walinspect:
            name = f"skillmeat_bench_sync_{secrets.token_hex(4)}"
            self.slot_conn.execute(
                text("SELECT pg_create_physical_replication_slot(:name, true, true)"),
                {"name": name},
            )
            self.slot = name

    def new_source(self) -> uuid.UUID:
        with self.engine.begin() as conn:
            source: uuid.UUID = conn.execute(
                text(
                    "INSERT INTO marketplace_sources (project_id, repo_url) "
                    "VALUES (:p, :u) RETURNING id"
                ),
                {"p": self.project, "u": f"https://github.com/bench/r{uuid.uuid4().hex[:12]}"},
            ).scalar_one()
        return source

    def sync(self, source: uuid.UUID, scan: list[DetectedArtifact]) -> Written:
        """One sync_catalog in its own transaction; the entry rows it wrote (read from the
        transaction's own statistics before it commits)."""
        with self.sessions() as session, tenant_scope(session, user_id=self.editor):
            # The counters accumulate until the backend flushes them after a commit:
            # the difference inside one transaction is this sync's.
            before = session.execute(text(XACT_WRITES)).one()
            sync_catalog(session, source, scan)
            after = session.execute(text(XACT_WRITES)).one()
        return Written(*(int(a) - int(b) for a, b in zip(after, before, strict=True)))

    def copy(self, source: uuid.UUID, scan: list[DetectedArtifact]) -> Written:
        with self.engine.begin() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur, cur.copy(COPY_SQL) as copy:
                copy.set_types(["uuid", "text", "text", "text", "text", "float8"])
                for a in scan:
                    copy.write_row(
                        (
                            source,
                            a.artifact_type.value,
                            a.detected_path,
                            a.upstream_url,
                            a.detected_version_sha,
                            a.confidence_score,
                        )
                    )
        return Written(len(scan), 0, 0)

    def wal_lsn(self) -> str:
        """Where a step starts; the slot, moved up to the WAL flushed so far, keeps the
        WAL from there on (it cannot move back, hence the condition)."""
        if self.slot:
            self.slot_conn.execute(text(ADVANCE_SLOT), {"name": self.slot})
        return str(self.slot_conn.execute(text("SELECT pg_current_wal_insert_lsn()")).scalar_one())

    def wal_bytes(self, start: str) -> int:
        """WAL written since `start`: records that touch this database's blocks (the step's
        commit records, a few dozen bytes each, are not counted), else all of it."""
        with self.engine.connect() as conn:
            if not self.walinspect:
                return int(
                    conn.execute(
                        text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :start)"),
                        {"start": start},
                    ).scalar_one()
                )
            return int(conn.execute(text(WAL_OF_THIS_DATABASE), {"start": start}).scalar_one())

    def cleanup(self) -> None:
        self.slot_conn.close()  # drops the temporary slot
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM projects WHERE id = :p"), {"p": self.project})
            if self.walinspect_added:
                conn.execute(text("DROP EXTENSION pg_walinspect"))


@dataclass
class Step:
    seconds: list[float] = field(default_factory=list)
    wal: list[int] = field(default_factory=list)
    written: list[Written] = field(default_factory=list)


# (label, step key, target as a ratio of COPY's time, target as a share of the first
# sync's WAL); issue 9's targets.
SCENARIOS: list[tuple[str, str, float | None, float | None]] = [
    ("COPY of the scan (the floor)", "copy", None, None),
    ("sync_catalog first sync", "first", 1.5, None),
    ("rescan, identical", "identical", 0.3, 0.01),
    ("rescan, 1% changed/removed/new", "one", 0.4, None),
    ("rescan, 10% changed/removed/new", "ten", 0.7, None),
]


def measured(fixture: Fixture, action: Callable[[], Written], step: Step) -> None:
    start_lsn = fixture.wal_lsn()
    start = time.perf_counter()
    written = action()
    step.seconds.append(time.perf_counter() - start)
    step.wal.append(fixture.wal_bytes(start_lsn))
    step.written.append(written)


@contextmanager
def bench_database(args: argparse.Namespace) -> Iterator[URL]:
    url = make_url(args.url or DatabaseSettings().database_url)
    if args.existing:
        yield url
        return
    with throwaway_database(url, prefix="skillmeat_bench") as scratch:
        print(f"throwaway database {scratch.database} (dropped afterwards)", file=sys.stderr)
        upgrade_to_head(scratch)
        yield scratch


def run(args: argparse.Namespace) -> None:
    if args.artifacts < 100 or args.rounds < 1:
        raise CommandError("--artifacts must be at least 100 and --rounds at least 1")
    rng = random.Random(args.seed)
    scan = scan_of(args.artifacts, rng)
    one = changed_by(scan, 1, rng, "one")
    ten = changed_by(one, 10, rng, "ten")
    steps = {key: Step() for _, key, _, _ in SCENARIOS}
    with bench_database(args) as url:
        engine = make_engine(url)
        fixture = Fixture(engine)
        bar = ProgressBar(f"sync_catalog vs COPY, {args.artifacts:,} artifacts")
        try:
            for round_no in range(args.rounds + 1):
                synced = fixture.new_source()
                copied = fixture.new_source()
                # A fresh source per round: first sync, then rescans that each differ
                # from the previous scan by the stated share (identical, 1%, 10%).
                actions: list[tuple[str, Callable[[], Written]]] = [
                    ("first", partial(fixture.sync, synced, scan)),
                    ("identical", partial(fixture.sync, synced, scan)),
                    ("one", partial(fixture.sync, synced, one)),
                    ("ten", partial(fixture.sync, synced, ten)),
                ]
                copy_step: tuple[str, Callable[[], Written]] = (
                    "copy",
                    partial(fixture.copy, copied, scan),
                )
                # Alternate where the COPY runs, so neither side always meets a warmer cache.
                order = [copy_step, *actions] if round_no % 2 == 0 else [*actions, copy_step]
                target = steps if round_no > 0 else {k: Step() for k in steps}  # warm-up
                for key, action in order:
                    measured(fixture, action, target[key])
                bar(round_no + 1, args.rounds + 1, "warm-up" if round_no == 0 else "rounds")
            bar.close(f"{args.rounds} measured rounds after one warm-up")
        finally:
            fixture.cleanup()
            engine.dispose()
    wal_source = (
        "records on this database's blocks (pg_walinspect)"
        if fixture.walinspect
        else "server-wide pg_current_wal_insert_lsn() difference"
    )
    report(args, steps, wal_source)


def report(args: argparse.Namespace, steps: dict[str, Step], wal_source: str) -> None:
    med = {key: statistics.median(step.seconds) for key, step in steps.items()}
    wal = {key: statistics.median(step.wal) for key, step in steps.items()}
    print(
        f"sync_catalog vs COPY, {args.artifacts} artifacts, medians of {args.rounds} rounds; "
        f"WAL: {wal_source}; rows: the step's own counters, last round"
    )
    table = []
    for label, key, time_target, wal_target in SCENARIOS:
        ratio = med[key] / med["copy"]
        wal_share = wal[key] / wal["first"] if wal["first"] else 0.0
        last = steps[key].written[-1]
        table.append(
            [
                label,
                f"{med[key] * 1000:.0f}",
                f"{ratio:.2f}",
                f"<= {time_target}" if time_target is not None else "-",
                f"{wal[key] / 1e6:.2f}",
                f"{wal_share:.3f}" + (f" (<= {wal_target})" if wal_target is not None else ""),
                f"{last.inserted}/{last.updated}/{last.hot}",
            ]
        )
    headers = ["operation", "median ms", "x COPY", "target", "WAL MB", "x first", "ins/upd/HOT"]
    print(render_table(headers, table))
    checks = [
        (f"{label}: time {med[key] / med['copy']:.2f}x COPY <= {t}", med[key] / med["copy"] <= t)
        for label, key, t, _ in SCENARIOS
        if t is not None
    ] + [
        (
            f"{label}: WAL {wal[key] / wal['first']:.4f} of the first sync's <= {w}",
            wal[key] <= w * wal["first"],
        )
        for label, key, _, w in SCENARIOS
        if w is not None
    ]
    for text_, met in checks:
        print(f"{'met ' if met else 'MISSED'} {text_}")
