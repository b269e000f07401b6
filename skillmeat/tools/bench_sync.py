"""`skillmeat-db bench sync`: sync_catalog against COPY of the same rows (the physical floor).

Each round, interleaved: COPY N rows into a fresh source, a first sync_catalog of
the same N artifacts into another fresh source, a rescan of that source (10%
changed, 5% gone, 5% new), and a COPY of the rescan's rows. Medians and ratios
are printed; nothing here is a pass/fail test.
"""

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def rescan_of(scan: list[DetectedArtifact], rng: random.Random) -> list[DetectedArtifact]:
    """10% changed SHAs, 5% gone, 5% new."""
    n = len(scan)
    order = list(range(n))
    rng.shuffle(order)
    gone = set(order[: n // 20])
    changed = set(order[n // 20 : n // 20 + n // 10])
    out = []
    for i, artifact in enumerate(scan):
        if i in gone:
            continue
        if i in changed:
            artifact = artifact.model_copy(
                update={"detected_version_sha": f"{rng.getrandbits(160):040x}"}
            )
        out.append(artifact)
    for i in range(n // 20):
        out.append(
            scan[i].model_copy(update={"detected_path": f"added-{i}/{scan[i].detected_path}"})
        )
    return out


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

    def sync(self, source: uuid.UUID, scan: list[DetectedArtifact]) -> None:
        with self.sessions() as session, tenant_scope(session, user_id=self.editor):
            sync_catalog(session, source, scan)

    def copy(self, source: uuid.UUID, scan: list[DetectedArtifact]) -> None:
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

    def cleanup(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM projects WHERE id = :p"), {"p": self.project})


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


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
    rescan = rescan_of(scan, rng)
    with bench_database(args) as url:
        engine = make_engine(url)
        fixture = Fixture(engine)
        times: dict[str, list[float]] = {k: [] for k in ("copy", "first", "rescan", "copy_rescan")}
        bar = ProgressBar(f"sync_catalog vs COPY, {args.artifacts:,} artifacts")
        try:
            for round_no in range(args.rounds + 1):
                synced = fixture.new_source()
                steps: dict[str, Callable[[], None]] = {
                    "copy": lambda: fixture.copy(fixture.new_source(), scan),
                    "first": partial(fixture.sync, synced, scan),
                    "rescan": partial(fixture.sync, synced, rescan),
                    "copy_rescan": lambda: fixture.copy(fixture.new_source(), rescan),
                }
                # Alternate which side goes first, so neither always meets a warmer cache.
                order = ["copy", "first", "rescan", "copy_rescan"]
                if round_no % 2:
                    order = ["first", "copy", "copy_rescan", "rescan"]
                measured = {name: timed(steps[name]) for name in order}
                if round_no > 0:  # round 0 warms caches and plans
                    for name, seconds in measured.items():
                        times[name].append(seconds)
                bar(round_no + 1, args.rounds + 1, "warm-up" if round_no == 0 else "rounds")
            bar.close(f"{args.rounds} measured rounds after one warm-up")
        finally:
            fixture.cleanup()
            engine.dispose()
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"sync_catalog vs COPY, {args.artifacts} artifacts, median of {args.rounds} rounds")
    rows = [
        ("COPY (first)", "copy", len(scan), "copy"),
        ("sync_catalog first sync", "first", len(scan), "copy"),
        ("COPY (rescan rows)", "copy_rescan", len(rescan), "copy_rescan"),
        ("sync_catalog rescan 10/5/5%", "rescan", len(rescan), "copy_rescan"),
    ]
    table = [
        [label, f"{med[key] * 1000:.0f}", f"{n / med[key]:.0f}", f"{med[key] / med[floor]:.2f}"]
        for label, key, n, floor in rows
    ]
    print(render_table(["operation", "median ms", "rows/s", "x COPY"], table))
