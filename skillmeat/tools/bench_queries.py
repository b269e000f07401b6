"""`skillmeat-db bench queries`: what row-level security costs each named query path.

For every path, the same rows are read two ways, interleaved in one run:
under RLS as skillmeat_app for a sampled member (skillmeat_admin for path 7), and
with the tenant filter spelled out by the connecting superuser, which bypasses
RLS. Each timing is the statement's round trip (execute + fetch) through the
driver, with the prepared-statement behaviour the application gets. Figures,
not assertions: docs/performance.md records a run.
"""

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from skillmeat.core.database import DatabaseSettings, make_engine
from skillmeat.core.database.dataset import DatasetSpec, build_dataset
from skillmeat.core.database.provision import (
    create_database,
    database_exists,
    throwaway_database,
    upgrade_to_head,
)
from skillmeat.core.database.tenant import tenant_scope
from skillmeat.core.errors import ValidationFailed
from skillmeat.core.repositories.query_paths import NAMED_PATHS, NamedPath
from skillmeat.tools import CommandError
from skillmeat.tools.console import ProgressBar, render_table
from skillmeat.tools.plans import (
    Subject,
    compile_statement,
    explain_path,
    sample_subjects,
)

# Targets of the issue: RLS / explicit median ratio per path (path 7 runs as admin: none).
RATIO_TARGETS: dict[str, float] = {"1": 1.6, "2": 1.6, "3": 1.6, "3b": 1.6, "4": 1.6, "5": 1.6}
OVERVIEW_TARGET = 10.0  # path 6 against the explicit `source_id = ANY(...)` form
SCALING_TARGET = 1.5  # path 3's median, 1M entries against 10k
SCALING_PATH = "3"


@dataclass(frozen=True)
class PathTiming:
    path: NamedPath
    rls_ms: float
    explicit_ms: float
    seq_scan: bool
    problems: tuple[str, ...]

    @property
    def ratio(self) -> float:
        """RLS / explicit, rounded as printed (so "1.60" meets a 1.6 target)."""
        return round(self.rls_ms / self.explicit_ms, 2) if self.explicit_ms else float("inf")


def run(args: argparse.Namespace) -> None:
    url = make_url(args.url or DatabaseSettings().database_url)
    spec = _spec(args)
    small: Measurement | None = None
    if args.scaling_entries:
        with _generated(url, DatasetSpec.scaled(args.scaling_entries), quiet=True) as small_db:
            small = measure(small_db, args, keys={SCALING_PATH})
    if args.existing:
        result = measure(url, args)
        described = f"database {url.database!r} as it is"
    else:
        with _generated(url, spec, keep=args.keep) as db:
            result = measure(db, args)
        described = (
            f"generated: {spec.projects:,} projects, {spec.sources:,} sources, "
            f"{spec.entries:,} entries"
        )
    if args.keep and not args.existing:
        described += f" in database {args.keep!r} (kept)"
    for line in _report(described, args, result, small):
        print(line)


def _spec(args: argparse.Namespace) -> DatasetSpec:
    if args.keep and args.existing:
        raise CommandError("--keep: not allowed with --existing (nothing is generated to keep)")
    for name in ("repeat", "users"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name}: {getattr(args, name)} is not allowed (must be >= 1)")
    for name in ("warmup", "scaling_entries"):
        if getattr(args, name) < 0:
            flag = name.replace("_", "-")
            raise CommandError(f"--{flag}: {getattr(args, name)} is not allowed (must be >= 0)")
    spec = DatasetSpec(projects=args.projects, sources=args.sources, entries=args.entries)
    if not args.existing and args.entries < args.sources:
        raise CommandError(
            f"--entries: {args.entries} is not allowed (at least --sources, {args.sources}, "
            "so that every source has a catalog to query)"
        )
    try:
        spec.validate()
        if args.scaling_entries:
            DatasetSpec.scaled(args.scaling_entries).validate()
    except ValidationFailed as exc:
        raise CommandError(f"--{exc.field.replace('_', '-')}: {exc.reason}") from None
    return spec


@contextmanager
def _generated(
    server: URL, spec: DatasetSpec, *, quiet: bool = False, keep: str | None = None
) -> Iterator[URL]:
    """A database on `server`, migrated and filled with `spec`; dropped afterwards unless kept."""
    if keep is None:
        with throwaway_database(server, prefix="skillmeat_benchq") as db:
            _fill(db, spec, quiet=quiet)
            yield db
        return
    db = server.set(database=keep)
    if database_exists(db):
        raise CommandError(
            f"--keep: database {keep!r} already exists on {server.host}; drop it first, or "
            f"measure it with `skillmeat-db --url <its url> bench queries --existing`"
        )
    create_database(db)
    _fill(db, spec, quiet=quiet)
    yield db


def _fill(db: URL, spec: DatasetSpec, *, quiet: bool) -> None:
    upgrade_to_head(db)
    engine = make_engine(db)
    try:
        bar = None if quiet else ProgressBar(f"building {spec.entries:,}-entry dataset")
        summary = build_dataset(engine, spec, progress=bar)
        if bar is not None:
            bar.close(f"{summary.seconds:.1f} s, largest source {summary.largest_source:,}")
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Measurement:
    subjects: list[Subject]
    timings: list[PathTiming]

    def timing(self, key: str) -> PathTiming | None:
        return next((t for t in self.timings if t.path.key == key), None)


def measure(db: URL, args: argparse.Namespace, *, keys: set[str] | None = None) -> Measurement:
    """Interleaved medians of the paths in `keys` (all if None), with a plan check of each."""
    threshold = getattr(args, "prepare_threshold", None)
    if threshold is None:
        engine = make_engine(db)
    else:  # psycopg's prepared statements do not survive the check-in DISCARD ALL
        engine = make_engine(
            db,
            connect_args={"prepare_threshold": threshold},
            pool_reset_on_return="rollback",
            allow_prepared_statements=True,
        )
    try:
        with engine.connect() as conn:
            subjects = sample_subjects(conn, args.users)
        if not subjects:
            hint = (
                "run without --existing to generate the benchmark dataset"
                if args.existing
                else "generate more entries (--entries at least --sources)"
            )
            raise CommandError(
                f"database {db.database!r} has no project member with a source that has "
                f"catalog entries; {hint}"
            )
        timings = []
        for path in NAMED_PATHS:
            if keys is not None and path.key not in keys:
                continue
            rls_ms, explicit_ms = _interleaved(engine, path, subjects, args.repeat, args.warmup)
            seq_scan, problems = _plan_check(engine, path, subjects)
            timings.append(PathTiming(path, rls_ms, explicit_ms, seq_scan, problems))
    finally:
        engine.dispose()
    return Measurement(subjects, timings)


# --- measuring --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """A path's two statements for one subject, compiled once (the timing is the database's)."""

    subject: Subject
    rls: tuple[str, dict[str, Any]]
    explicit: tuple[str, dict[str, Any]]


def _interleaved(
    engine: Engine, path: NamedPath, subjects: list[Subject], repeat: int, warmup: int
) -> tuple[float, float]:
    """Median ms (RLS, explicit): alternating sides and their order, cycling through subjects.

    Two connections, one per side, so each keeps its own prepared statements (a
    cached plan is re-planned when the role that rewrote it changes).
    """
    rls_times: list[float] = []
    explicit_times: list[float] = []
    with (
        engine.connect() as rls_conn,
        engine.connect() as base_conn,
        Session(bind=rls_conn) as rls_session,
        Session(bind=base_conn) as base_session,
    ):
        prepared = [
            _Prepared(
                s,
                compile_statement(path.under_rls(s.params), rls_conn.dialect),
                compile_statement(path.explicit(s.params), base_conn.dialect),
            )
            for s in subjects
        ]

        def rls(p: _Prepared) -> float:
            scope: dict[str, Any] = (
                {"admin": True} if path.admin else {"user_id": p.subject.user_id}
            )
            with tenant_scope(rls_session, **scope):
                return _timed(rls_session.connection(), *p.rls)

        def explicit(p: _Prepared) -> float:
            with base_session.begin():
                return _timed(base_session.connection(), *p.explicit)

        sides: tuple[Callable[[_Prepared], float], Callable[[_Prepared], float]] = (rls, explicit)
        for i in range(warmup + repeat):
            p = prepared[i % len(prepared)]
            order = sides if i % 2 == 0 else sides[::-1]
            first, second = order[0](p), order[1](p)
            if i < warmup:
                continue
            rls_ms, explicit_ms = (first, second) if i % 2 == 0 else (second, first)
            rls_times.append(rls_ms)
            explicit_times.append(explicit_ms)
    return statistics.median(rls_times), statistics.median(explicit_times)


def _timed(conn: Connection, sql: str, params: dict[str, Any]) -> float:
    """Milliseconds to execute `sql` and fetch every row, at the driver (no ORM in the way)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        start = time.perf_counter_ns()
        cursor.execute(sql, params)
        cursor.fetchall()
        return (time.perf_counter_ns() - start) / 1e6
    finally:
        cursor.close()


def _plan_check(
    engine: Engine, path: NamedPath, subjects: list[Subject]
) -> tuple[bool, tuple[str, ...]]:
    """Seq scan anywhere, and the plan problems with how many members' custom plans show them.

    The generic plan (what a warm connection's prepared statement may run) is checked once.
    """
    seen: Counter[str] = Counter()
    seq_scan = False
    with engine.connect() as conn, Session(bind=conn) as session:
        for subject in subjects:
            plans = explain_path(session, path, subject.params, user_id=subject.user_id)
            seq_scan |= bool(plans.under_rls.seq_scans() or plans.baseline.seq_scans())
            seen.update(plans.problems())
        s = subjects[0]
        generic = explain_path(session, path, s.params, user_id=s.user_id, generic=True)
    seq_scan |= bool(generic.under_rls.seq_scans() or generic.baseline.seq_scans())
    found = [f"{p} (custom plans of {n} of {len(subjects)} members)" for p, n in seen.items()]
    found += [f"{p} (generic plan)" for p in generic.problems()]
    return seq_scan, tuple(found)


# --- reporting --------------------------------------------------------------------------


def _target(key: str) -> float | None:
    return OVERVIEW_TARGET if key == "6" else RATIO_TARGETS.get(key)


def _report(
    described: str, args: argparse.Namespace, result: Measurement, small: Measurement | None
) -> list[str]:
    subjects, timings = result.subjects, result.timings
    sizes = sorted(s.source_entries for s in subjects)
    rows = []
    for t in timings:
        target = _target(t.path.key)
        rows.append(
            [
                t.path.key,
                t.path.title,
                t.rls_ms,
                t.explicit_ms,
                f"{t.ratio:.2f}",
                "-" if target is None else f"<= {target:g}",
                "-" if target is None else ("yes" if t.ratio <= target else "NO"),
                "yes" if t.seq_scan else "no",
            ]
        )
    lines = [
        f"{described}; {len(subjects)} members sampled (their largest sources: "
        f"{sizes[0]:,}..{sizes[-1]:,} entries, median {statistics.median(sizes):,.0f}); "
        f"{args.repeat} interleaved runs per side after {args.warmup} warm-up; "
        + (
            "no server-side prepared statements (the library's setting)"
            if getattr(args, "prepare_threshold", None) is None
            else f"statements prepared on their use number {args.prepare_threshold}"
        ),
        "",
        render_table(
            [
                "path",
                "query",
                "RLS ms",
                "explicit ms",
                "ratio",
                "target",
                "met",
                "seq scan",
            ],
            rows,
        ),
    ]
    problems = [f"path {t.path.key}: {p}" for t in timings for p in t.problems]
    lines += ["", *(f"plan problem: {p}" for p in problems)] if problems else []
    before = small.timing(SCALING_PATH) if small else None
    after = result.timing(SCALING_PATH)
    if before and after:
        growth = after.rls_ms / before.rls_ms
        met = "met" if round(growth, 2) <= SCALING_TARGET else "NOT met"
        lines += [
            "",
            f"path {SCALING_PATH} median, {args.scaling_entries:,} entries -> here: "
            f"under RLS {before.rls_ms:.3f} -> {after.rls_ms:.3f} ms, x{growth:.2f} "
            f"(target <= {SCALING_TARGET:g}: {met}); explicit {before.explicit_ms:.3f} -> "
            f"{after.explicit_ms:.3f} ms, x{after.explicit_ms / before.explicit_ms:.2f}",
        ]
    return lines
