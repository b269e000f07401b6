"""`skillmeat-db bench scans`: the scan queue's claim latency against its history, and
workers claiming and completing side by side.

1. Claim latency: two throwaway databases, one with `--history-small` finished scans
   (default 1,000), one with `--history-large` (default 1,000,000), built server-side
   with generate_series; each also holds the same queue of due scans. `claim_scans`
   (limit 1, its own worker transaction) runs alternately on both, and the medians
   are compared: the claim reads a partial index of queued scans, so history should
   not show (target: large/small within 1.2x).
2. Workers: `--threads` threads (default 4) claim and complete `--queued` scans
   (default 10,000), each completion a real `complete_scan` (a one-artifact rescan).
   Prints claims/s, duplicate claims (the same scan claimed twice: must be 0) and lost
   completions (a completion refused or missing at the end: must be 0).
"""

import argparse
import datetime as dt
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url

from skillmeat.core.database import make_engine, make_session_factory, tenant_scope
from skillmeat.core.database.provision import throwaway_database, upgrade_to_head
from skillmeat.core.errors import LeaseLost
from skillmeat.core.repositories.scans import claim_scans, complete_scan
from skillmeat.core.schemas.marketplace import DetectedArtifact
from skillmeat.core.schemas.scans import ScanStats
from skillmeat.tools.console import ProgressBar, render_table

CLAIM_TARGET = 1.2
STATS = ScanStats(duration_ms=1, files_scanned=1, bytes_fetched=1)


def run(args: argparse.Namespace) -> None:
    server = make_url(args.url)
    sizes = {"small": args.history_small, "large": args.history_large}
    with ExitStack() as stack:
        engines: dict[str, Engine] = {}
        for name, history in sizes.items():
            url = stack.enter_context(_database(server, f"skillmeat_benchs_{name[0]}"))
            engine = make_engine(url, pool_size=4, max_overflow=4)
            stack.callback(engine.dispose)
            _fill(engine, sources=max(args.claims + args.warmup, 1), history=history)
            _queue(engine, args.claims + args.warmup)
            engines[name] = engine
        medians = _claim_medians(engines, args.claims, args.warmup)
        url = stack.enter_context(_database(server, "skillmeat_benchs_w"))
        engine = make_engine(url, pool_size=args.threads, max_overflow=0)
        stack.callback(engine.dispose)
        _fill(engine, sources=args.queued, history=0)
        _queue(engine, args.queued)
        workers = _workers(engine, args.threads)

    small, large = medians["small"], medians["large"]
    print(f"claim_scans(limit=1) medians over {args.claims} claims each (interleaved):")
    print(
        render_table(
            ["finished scans in history", "claim median ms", "vs smallest"],
            [
                [f"{args.history_small:,}", small, 1.0],
                [f"{args.history_large:,}", large, large / small],
            ],
        )
    )
    verdict = "ok" if large / small <= CLAIM_TARGET else "OVER TARGET"
    print(f"target: within {CLAIM_TARGET}x ({verdict})")
    print(f"{args.threads} worker threads over {args.queued:,} queued scans (claim + complete):")
    print(
        render_table(
            ["threads", "scans", "seconds", "claims/s", "duplicate claims", "lost completions"],
            [
                [
                    args.threads,
                    workers["claimed"],
                    workers["seconds"],
                    workers["claimed"] / workers["seconds"] if workers["seconds"] else 0.0,
                    workers["duplicates"],
                    workers["lost"],
                ]
            ],
        )
    )


@contextmanager
def _database(server: URL, prefix: str) -> Iterator[URL]:
    with throwaway_database(server, prefix=prefix) as url:
        upgrade_to_head(url)
        yield url


def _fill(engine: Engine, *, sources: int, history: int) -> None:
    """One project with `sources` sources and `history` finished scans spread over them."""
    with engine.begin() as conn:
        project = conn.execute(
            text("INSERT INTO projects (name) VALUES ('bench scans') RETURNING id")
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO marketplace_sources (project_id, repo_url) "
                "SELECT :p, 'https://github.com/bench/scans-' || g FROM generate_series(1, :n) g"
            ),
            {"p": project, "n": sources},
        )
        if history:
            conn.execute(
                text(
                    "WITH s AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS i "
                    "FROM marketplace_sources) "
                    "INSERT INTO marketplace_scans (source_id, state, attempts, not_before, "
                    "started_at, finished_at, duration_ms, created_at) "
                    "SELECT s.id, CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'succeeded' END, 1, "
                    "now() - g * interval '1 second', now() - g * interval '1 second', "
                    "now() - g * interval '1 second' + interval '2 seconds', 2000, "
                    "now() - g * interval '1 second' "
                    "FROM generate_series(1, :h) g JOIN s ON s.i = g % :n"
                ),
                {"h": history, "n": sources},
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def _queue(engine: Engine, n: int) -> None:
    """Queue a due scan on each of the first `n` sources, oldest not_before first."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO marketplace_scans (source_id, not_before) "
                "SELECT id, now() - interval '1 hour' + row_number() OVER (ORDER BY id) "
                "* interval '1 millisecond' FROM marketplace_sources ORDER BY id LIMIT :n"
            ),
            {"n": n},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE marketplace_scans"))


def _claim_medians(engines: dict[str, Engine], claims: int, warmup: int) -> dict[str, float]:
    factories = {name: make_session_factory(engine) for name, engine in engines.items()}
    timings: dict[str, list[float]] = {name: [] for name in engines}
    bar = ProgressBar("claiming")
    for i in range(warmup + claims):
        for name, factory in factories.items():
            started = time.perf_counter()
            with factory() as session, tenant_scope(session, worker=True):
                got = claim_scans(session, worker="bench", limit=1)
            elapsed = (time.perf_counter() - started) * 1000
            if not got:
                raise RuntimeError(f"the {name} database ran out of queued scans")
            if i >= warmup:
                timings[name].append(elapsed)
        bar(i + 1, warmup + claims, "")
    bar.close(f"{claims} claims per database")
    return {name: statistics.median(samples) for name, samples in timings.items()}


def _workers(engine: Engine, threads: int) -> dict[str, float]:
    factory = make_session_factory(engine)
    claimed: list[uuid.UUID] = []
    lost: list[uuid.UUID] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            while True:
                with factory() as session, tenant_scope(session, worker=True):
                    got = claim_scans(session, worker=name, limit=1, lease=dt.timedelta(minutes=5))
                if not got:
                    return
                [scan] = got
                with lock:
                    claimed.append(scan.scan_id)
                artifact = DetectedArtifact(
                    artifact_type="skill",
                    detected_path="skills/bench",
                    upstream_url=f"{scan.repo_url}/tree/main/skills/bench",
                    detected_version_sha=f"sha-{scan.attempt}",
                    confidence_score=90,
                )
                try:
                    with factory() as session, tenant_scope(session, worker=True):
                        complete_scan(
                            session,
                            scan.scan_id,
                            lease_token=scan.lease_token,
                            artifacts=[artifact],
                            commit_sha="bench",
                            stats=STATS,
                        )
                except LeaseLost:
                    with lock:
                        lost.append(scan.scan_id)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    started = time.perf_counter()
    pool = [threading.Thread(target=work, args=(f"bench-{i}",)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    with engine.connect() as conn:
        succeeded = conn.execute(
            text("SELECT count(*) FROM marketplace_scans WHERE state = 'succeeded'")
        ).scalar_one()
    duplicates = sum(n - 1 for n in Counter(claimed).values() if n > 1)
    missing = len(set(claimed)) - succeeded
    return {
        "claimed": len(claimed),
        "seconds": seconds,
        "duplicates": duplicates,
        "lost": len(lost) + max(missing, 0),
    }
