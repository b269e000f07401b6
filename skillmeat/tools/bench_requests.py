"""`skillmeat-db bench requests`: what request isolation costs a whole request.

One request = check a connection out, enter a member scope, list a page of a
source's catalog, commit, check the connection in. Measured side by side,
interleaved, on one throwaway database, with three engines of one connection each:

- `prepared, rollback`: the pool's plain rollback on check-in and psycopg's default
  prepare_threshold (5: statements become server-side prepared on their 5th use),
  as before request isolation;
- `unprepared, rollback`: the same with prepare_threshold=None: what a connection
  behind a transaction pooler costs;
- `library`: what make_engine() builds (prepare_threshold=None and DISCARD ALL on
  check-in).

Every engine uses the same tenant_scope. On a connection that was not reset on
check-in (the first two) a scope also resets the timeouts in a statement of its own
and restores session-level settings; on the library's it needs neither.
"""

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from skillmeat.core.database import make_engine, make_session_factory, tenant_scope
from skillmeat.core.database.provision import throwaway_database, upgrade_to_head
from skillmeat.core.repositories.marketplace import list_entries
from skillmeat.tools.console import ProgressBar, render_table


def run(args: argparse.Namespace) -> None:
    rounds: int = args.rounds
    with throwaway_database(make_url(args.url), prefix="skillmeat_benchr") as url:
        upgrade_to_head(url)
        setup = make_engine(url, pool_size=1)
        try:
            user, source = _world(setup)
        finally:
            setup.dispose()
        engines: dict[str, Engine] = {
            "prepared on 5th use, rollback on check-in": make_engine(
                url,
                pool_size=1,
                max_overflow=0,
                pool_reset_on_return="rollback",
                connect_args={"prepare_threshold": 5},
                allow_prepared_statements=True,
            ),
            "unprepared, rollback on check-in (as behind a pooler)": make_engine(
                url, pool_size=1, max_overflow=0, pool_reset_on_return="rollback"
            ),
            "library: unprepared, DISCARD ALL on check-in": make_engine(
                url, pool_size=1, max_overflow=0
            ),
        }
        try:
            timings = _measure(engines, user, source, rounds, args.warmup)
        finally:
            for engine in engines.values():
                engine.dispose()
    baseline = statistics.median(next(iter(timings.values())))
    rows = []
    for name, samples in timings.items():
        median = statistics.median(samples)
        rows.append([name, median, statistics.quantiles(samples, n=20)[-1], median / baseline])
    print(
        f"{rounds} interleaved requests per engine after {args.warmup} warm-up; one request = "
        "checkout, member tenant_scope, list_entries (20 of 200), commit, check-in"
    )
    print(render_table(["engine", "median ms", "p95 ms", "vs first"], rows))


def _world(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    user = uuid.uuid4()
    with engine.begin() as conn:
        project = conn.execute(
            text("INSERT INTO projects (name) VALUES ('bench') RETURNING id")
        ).scalar_one()
        conn.execute(
            text("INSERT INTO project_members VALUES (:p, :u, 'viewer')"), {"p": project, "u": user}
        )
        source = conn.execute(
            text(
                "INSERT INTO marketplace_sources (project_id, repo_url) "
                "VALUES (:p, 'https://github.com/bench/requests') RETURNING id"
            ),
            {"p": project},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, "
                "detected_path, upstream_url, detected_version_sha, confidence_score) "
                "SELECT :s, 'skill', 'skills/s' || g, 'https://github.com/bench/requests', "
                "'sha' || g, 50 + g % 50 FROM generate_series(1, 200) g"
            ),
            {"s": source},
        )
        conn.execute(text("ANALYZE"))
    return user, source


def _measure(
    engines: dict[str, Engine], user: uuid.UUID, source: uuid.UUID, rounds: int, warmup: int
) -> dict[str, list[float]]:
    factories = {name: make_session_factory(engine) for name, engine in engines.items()}
    requests: dict[str, Callable[[], Any]] = {
        name: _request(factory, user, source) for name, factory in factories.items()
    }
    for _ in range(warmup):
        for request in requests.values():
            request()
    timings: dict[str, list[float]] = {name: [] for name in requests}
    bar = ProgressBar("measuring requests")
    for i in range(rounds):
        for name, request in requests.items():
            started = time.perf_counter()
            request()
            timings[name].append((time.perf_counter() - started) * 1000)
        bar(i + 1, rounds, "")
    bar.close(f"{rounds} rounds")
    return timings


def _request(
    factory: sessionmaker[Session], user: uuid.UUID, source: uuid.UUID
) -> Callable[[], Any]:
    def request() -> Any:
        with factory() as session, tenant_scope(session, user_id=user):
            return list_entries(session, source, limit=20)

    return request
