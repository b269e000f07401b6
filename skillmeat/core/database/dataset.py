"""A realistic marketplace dataset, generated server-side for plans and benchmarks.

Every row is produced by `INSERT ... SELECT` over `generate_series` (no ORM, no
client round trip per row), so a million catalog entries load in well under a
minute. The shape follows what a marketplace sees: most sources are small and a
few are large, most entries are unchanged, some users belong to many projects.
"""

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from skillmeat.core.errors import ValidationFailed

# progress(done, total, label): rows written so far out of the rows planned.
Progress = Callable[[int, int, str], None]

# Largest catalog one source gets (a big monorepo of skills and agents), and the
# average above which the log-normal shape would hit that cap too often.
MAX_ENTRIES_PER_SOURCE = 5000
MAX_AVERAGE_PER_SOURCE = 100

# Shares of the value sets, chosen to look like a catalog a few syncs after import.
ARTIFACT_TYPE_SHARES = (
    ("skill", 0.40),
    ("agent", 0.15),
    ("command", 0.15),
    ("mcp", 0.10),
    ("plugin", 0.08),
    ("hook", 0.07),
    ("bundle", 0.05),
)
STATUS_SHARES = (("unchanged", 0.78), ("new", 0.09), ("updated", 0.08), ("removed", 0.05))
NEVER_SYNCED_SHARE = 0.10


@dataclass(frozen=True)
class DatasetSpec:
    """How much to generate; `users` defaults to 1.5 per project (so users share projects)."""

    projects: int = 2_000
    sources: int = 20_000
    entries: int = 1_000_000
    users: int | None = None
    seed: float = 0.42

    @classmethod
    def scaled(cls, entries: int, *, seed: float = 0.42) -> "DatasetSpec":
        """The default shape (50 entries and 10 sources per project on average) at `entries`."""
        sources = max(1, entries // 50)
        return cls(projects=max(1, sources // 10), sources=sources, entries=entries, seed=seed)

    def validate(self) -> None:
        for field, value, low in (
            ("projects", self.projects, 1),
            ("sources", self.sources, 1),
            ("entries", self.entries, 0),
        ):
            if value < low:
                raise ValidationFailed(field, value, f"{value} is not allowed (must be >= {low})")
        if self.users is not None and self.users < 1:
            raise ValidationFailed(
                "users", self.users, f"{self.users} is not allowed (must be >= 1)"
            )
        if not -1.0 <= self.seed <= 1.0:
            raise ValidationFailed("seed", self.seed, f"{self.seed} is not allowed (-1..1)")
        if self.entries > self.sources * MAX_AVERAGE_PER_SOURCE:
            raise ValidationFailed(
                "entries",
                self.entries,
                f"{self.entries} entries are too many for {self.sources} sources "
                f"(at most {MAX_AVERAGE_PER_SOURCE} per source on average, so that the "
                f"largest stay under {MAX_ENTRIES_PER_SOURCE})",
            )


@dataclass(frozen=True)
class DatasetSummary:
    """What was written (entries can fall short of the spec only where the per-source cap binds)."""

    projects: int
    members: int
    users: int
    sources: int
    entries: int
    largest_source: int
    seconds: float


def _case(column: str, shares: tuple[tuple[str, float], ...]) -> str:
    """SQL picking a label by cumulative share of a uniform [0, 1) value in `column`."""
    parts, cumulative = [], 0.0
    for label, share in shares[:-1]:
        cumulative += share
        parts.append(f"WHEN {column} < {cumulative:.4f} THEN '{label}'")
    return f"CASE {' '.join(parts)} ELSE '{shares[-1][0]}' END"


def _uuid(kind: str, ordinal: str) -> str:
    """A deterministic uuid for the `ordinal`-th row of `kind` (reproducible ids across runs)."""
    return f"md5(:seed_text || ':{kind}:' || {ordinal})::uuid"


_PROJECTS = f"""
INSERT INTO projects (id, name, created_at, updated_at)
SELECT {_uuid("p", "i")}, 'project-' || i, now() - interval '400 days', now()
  FROM generate_series(1, :projects) AS i
"""

# 1-5 members a project (the first an owner). Users are drawn with a skew
# (u ** 1.5), so a few users belong to dozens of projects and most to one or two.
_MEMBERS = f"""
INSERT INTO project_members (project_id, user_id, role, created_at)
SELECT DISTINCT ON (p, uo) {_uuid("p", "p")}, {_uuid("u", "uo")},
       CASE WHEN k = 1 THEN 'owner' WHEN r < 0.35 THEN 'editor' ELSE 'viewer' END,
       now() - interval '300 days'
  FROM (SELECT p, k, random() AS r,
               1 + least(:users - 1, floor(:users * power(random(), 1.5))::int) AS uo
          FROM generate_series(1, :projects) AS p
         -- `p * 0` makes the call depend on p, so the member count is drawn per project.
         CROSS JOIN LATERAL generate_series(1, 1 + floor(random() * 5)::int + (p * 0)) AS k
       ) AS m
 ORDER BY p, uo, k
"""

# Source sizes: log-normal (median ~15 entries, a long tail), scaled so the
# total is exactly :entries (cumulative rounding), capped per source.
_SIZES = """
CREATE TEMPORARY TABLE dataset_source_sizes ON COMMIT DROP AS
WITH raw AS (
    SELECT j,
           least(:max_per_source * 0.9,
                 exp(2.7 + 1.5 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))) AS w,
           -- Every project gets one source first; the rest go to projects with a skew.
           CASE WHEN j <= :projects THEN j
                ELSE 1 + least(:projects - 1, floor(:projects * power(random(), 1.3))::int)
           END AS project_ordinal
      FROM generate_series(1, :sources) AS j
), cumulative AS (
    SELECT j, project_ordinal,
           floor(sum(w) OVER (ORDER BY j) * :entries / sum(w) OVER ())::bigint AS upto
      FROM raw
)
SELECT j, project_ordinal,
       least(:max_per_source, upto - coalesce(lag(upto) OVER (ORDER BY j), 0))::int AS n,
       -- The commit the source was last scanned at (40 hex digits, like a git sha).
       md5(:seed_text || ':sha:' || j) || left(md5(:seed_text || ':sha2:' || j), 8) AS sha
  FROM cumulative
"""

_SOURCES = f"""
INSERT INTO marketplace_sources (id, project_id, repo_url, branch_or_ref, root_hint,
                                 last_sync, last_error, trust_level, visibility,
                                 created_at, updated_at)
SELECT {_uuid("s", "j")}, {_uuid("p", "project_ordinal")},
       'https://github.com/org-' || project_ordinal || '/repo-' || j,
       CASE WHEN r1 < 0.8 THEN 'HEAD' ELSE 'main' END,
       CASE WHEN r1 > 0.9 THEN 'plugins' END,
       CASE WHEN r2 >= :never_synced
            THEN now() - (r3 * interval '30 days') - (j * interval '1 millisecond') END,
       CASE WHEN r3 > 0.97 THEN 'GitHub API rate limit exceeded' END,
       CASE WHEN r1 < 0.3 THEN 'signed' ELSE 'unsigned' END,
       CASE WHEN r3 < 0.6 THEN 'public' ELSE 'private' END,
       now() - interval '200 days', now()
  FROM (SELECT j, project_ordinal, random() AS r1, random() AS r2, random() AS r3
          FROM dataset_source_sizes) AS s
 ORDER BY j
"""

# One batch of sources' entries. detected_path embeds the entry's ordinal within
# its source, so (source_id, artifact_type, detected_path) is unique by construction.
_ENTRIES = f"""
INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, upstream_url,
                                         detected_version_sha, detected_at, confidence_score,
                                         status, imported_at, created_at, updated_at)
SELECT {_uuid("s", "j")}, artifact_type, path,
       'https://github.com/org-' || project_ordinal || '/repo-' || j || '/tree/' || sha
           || '/' || path,
       sha, detected_at,
       -- At most two decimals, skewed towards confident detections.
       round((100 * (1 - r_confidence * r_confidence))::numeric, 2)::double precision,
       status,
       CASE WHEN status IN ('unchanged', 'updated') AND r_import < 0.4
            THEN detected_at + interval '1 day' END,
       detected_at, detected_at
  FROM (SELECT j, project_ordinal, sha, r_confidence, r_import, detected_at, status,
               artifact_type, artifact_type || 's/item-' || g AS path
          FROM (SELECT j, project_ordinal, g, sha, r_confidence, r_import, detected_at,
                       {_case("r_type", ARTIFACT_TYPE_SHARES)} AS artifact_type,
                       {_case("r_status", STATUS_SHARES)} AS status
                  -- Volatile columns keep this subquery from being flattened, so
                  -- each CASE reads one random value per row.
                  FROM (SELECT s.j, s.project_ordinal, g, s.sha,
                               random() AS r_type, random() AS r_status,
                               random() AS r_confidence, random() AS r_import,
                               now() - (random() * interval '180 days') AS detected_at
                          FROM dataset_source_sizes AS s
                         CROSS JOIN LATERAL generate_series(1, s.n) AS g
                         WHERE s.j BETWEEN :first AND :last) AS r
               ) AS c
       ) AS e
"""

_ENTRY_BATCHES = 20


def build_dataset(
    engine: Engine, spec: DatasetSpec | None = None, *, progress: Progress | None = None
) -> DatasetSummary:
    """Fill an empty, migrated database with `spec`'s rows, then VACUUM ANALYZE it.

    `engine` must connect as a role that bypasses row-level security (the
    superuser that ran the migrations). Rows are committed in one transaction;
    the VACUUM after it sets the visibility map (index-only scans) and statistics.
    """
    spec = spec or DatasetSpec()
    spec.validate()
    users = spec.users or max(1, spec.projects * 3 // 2)
    started = dt.datetime.now(dt.UTC)
    planned = spec.projects + spec.sources + spec.entries
    report = progress or (lambda done, total, label: None)
    params: dict[str, object] = {
        "seed_text": f"skillmeat-dataset-{spec.seed}",
        "projects": spec.projects,
        "sources": spec.sources,
        "entries": spec.entries,
        "users": users,
        "max_per_source": MAX_ENTRIES_PER_SOURCE,
        "never_synced": NEVER_SYNCED_SHARE,
    }
    with engine.begin() as conn:
        _require_empty(conn)
        conn.execute(text("SELECT setseed(:seed)"), {"seed": spec.seed})
        report(0, planned, "projects")
        conn.execute(text(_PROJECTS), params)
        members = conn.execute(text(_MEMBERS), params).rowcount
        done = spec.projects
        report(done, planned, "sources")
        conn.execute(text(_SIZES), params)
        conn.execute(text(_SOURCES), params)
        done += spec.sources
        report(done, planned, "entries")
        largest = int(
            conn.execute(text("SELECT coalesce(max(n), 0) FROM dataset_source_sizes")).scalar_one()
        )
        batch = math.ceil(spec.sources / _ENTRY_BATCHES)
        entries = 0
        for first in range(1, spec.sources + 1, batch):
            entries += conn.execute(
                text(_ENTRIES), {**params, "first": first, "last": first + batch - 1}
            ).rowcount
            report(done + entries, planned, "entries")
        done += entries
    report(done, planned, "vacuum analyze")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in (
            "projects",
            "project_members",
            "marketplace_sources",
            "marketplace_catalog_entries",
        ):
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))
    report(planned, planned, "done")
    return DatasetSummary(
        projects=spec.projects,
        members=members,
        users=users,
        sources=spec.sources,
        entries=entries,
        largest_source=largest,
        seconds=(dt.datetime.now(dt.UTC) - started).total_seconds(),
    )


def _require_empty(conn: Connection) -> None:
    """Refuse a database that already has projects: generated ids would collide with them."""
    found = conn.execute(text("SELECT count(*) FROM (SELECT 1 FROM projects LIMIT 1) AS p"))
    if found.scalar_one():
        raise ValidationFailed(
            "database",
            conn.engine.url.database,
            "already has projects; the generator fills an empty, migrated database only",
        )
