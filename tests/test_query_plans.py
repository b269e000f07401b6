"""Plans of the named query paths on a realistic 200k-entry dataset, read as the real roles.

Each path is EXPLAINed (FORMAT JSON) as skillmeat_app inside tenant_scope for a real
member (skillmeat_admin for path 7) and, as the baseline, in its explicit-filter form
by the connecting superuser, which bypasses RLS. A test fails on a Seq Scan of the
big tables, when RLS turns an index condition of the baseline into a filter, when
a path stops reading the index that serves it, or when RLS adds a sort.
"""

import argparse
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from skillmeat import cli
from skillmeat.core.database import make_engine
from skillmeat.core.database.dataset import DatasetSpec, build_dataset
from skillmeat.core.database.provision import throwaway_database, upgrade_to_head
from skillmeat.core.repositories.query_paths import NAMED_PATHS, NamedPath
from skillmeat.tools import CommandError, explain
from skillmeat.tools.plans import (
    PathPlans,
    Plan,
    Subject,
    explain_path,
    first_subject,
    predicate_atoms,
    split_conjuncts,
    subject_for,
)

PLAN_SPEC = DatasetSpec.scaled(200_000)

ENTRIES_BY_SOURCE = {
    "uq_marketplace_catalog_entries_source_type_path",
    "ix_marketplace_catalog_entries_source_id_status",
    "ix_marketplace_catalog_entries_source_id_confidence_score_id",
}
# The index that serves each path (docs/performance.md gives the reasons).
SERVING_INDEX: dict[str, set[str]] = {
    "1": {"uq_marketplace_catalog_entries_source_type_path"},
    # The partial index of new/updated entries, in path order.
    "2": {"ix_marketplace_catalog_entries_source_id_detected_path_id"},
    "3": {"ix_marketplace_catalog_entries_source_id_confidence_score_id"},
    "3b": {"ix_marketplace_catalog_entries_source_id_confidence_score_id"},
    # No index holds (artifact_type, status): any index on source_id reads the same rows.
    "4": ENTRIES_BY_SOURCE,
    # Plus one probe per source row for its latest scan (the LATERAL ... LIMIT 1).
    "5": {
        "ix_marketplace_sources_project_id_last_sync",
        "ix_marketplace_scans_source_id_created_at_id",
    },
    "6": {
        "ix_marketplace_catalog_entries_source_id_status",
        "ix_marketplace_catalog_entries_source_id_detected_path_id",
    },
    "7": {"ix_marketplace_sources_last_sync"},
}
# Paths whose LIMIT stops after a page of index entries: no Sort node at all.
IN_INDEX_ORDER = {"3", "3b"}

# Path 3 on the largest source (3.6k entries among 4k sources): the same misestimate
# (~12 rows) puts "bitmap scan + sort of the whole source" within 2% of the ordered
# index scan (cost 91.6 against 92.7), so ANALYZE's sample decides. Not strict: the
# coin may land either way; at 1M entries / 20k sources the estimate is ~5 and the
# ordered scan wins (the benchmark checks it there).
PATH_3_NEAR_TIE = pytest.mark.xfail(
    reason="under RLS the custom plan of path 3 on the largest source may sort the whole "
    "source (docs/performance.md, 'Known plan problems')",
    strict=False,
)

SUBJECT_KINDS = ("first member", "largest source", "most projects", "small catalog")
GENERIC = "generic"  # the prepared statement's generic plan (run as the first member)


# --- fixtures: one 200k-entry database, built once per test session -----------------


@pytest.fixture(scope="session")
def plan_db(pg_server_url: URL) -> Iterator[URL]:
    """A throwaway database at head, filled with the 200k-entry dataset and analyzed."""
    with throwaway_database(pg_server_url, prefix="skillmeat_plans") as url:
        upgrade_to_head(url)
        engine = make_engine(url, poolclass=NullPool)
        try:
            build_dataset(engine, PLAN_SPEC)
        finally:
            engine.dispose()
        yield url


@pytest.fixture(scope="session")
def plan_session(plan_db: URL) -> Iterator[Session]:
    """One connection for every EXPLAIN (each runs in its own tenant_scope transaction)."""
    engine = make_engine(plan_db, poolclass=NullPool)
    with engine.connect() as conn, Session(bind=conn) as session:
        yield session
    engine.dispose()


_USER_QUERIES = {
    "largest source": """
        SELECT m.user_id
          FROM marketplace_catalog_entries e
          JOIN marketplace_sources s ON s.id = e.source_id
          JOIN project_members m ON m.project_id = s.project_id
         GROUP BY e.source_id, m.user_id
         ORDER BY count(*) DESC, m.user_id
         LIMIT 1""",
    "most projects": """
        SELECT user_id FROM project_members GROUP BY user_id
         ORDER BY count(*) DESC, user_id LIMIT 1""",
    # A member whose every visible source holds at most a page (50) of entries.
    "small catalog": """
        WITH sizes AS (SELECT source_id, count(*) AS n
                         FROM marketplace_catalog_entries GROUP BY source_id)
        SELECT m.user_id
          FROM project_members m
          JOIN marketplace_sources s ON s.project_id = m.project_id
          JOIN sizes z ON z.source_id = s.id
         GROUP BY m.user_id
        HAVING max(z.n) BETWEEN 10 AND 50
         ORDER BY m.user_id
         LIMIT 1""",
}


@pytest.fixture(scope="session")
def subjects(plan_session: Session) -> dict[str, Subject]:
    """Members the paths run as: typical, biggest catalog, widest membership, tiny catalog."""
    with plan_session.begin():
        conn = plan_session.connection()
        found = {"first member": first_subject(conn)}
        for kind, sql in _USER_QUERIES.items():
            found[kind] = subject_for(conn, conn.execute(text(sql)).scalar_one())
    assert all(found.values()), found
    return {kind: s for kind, s in found.items() if s is not None}


@pytest.fixture(scope="session")
def plans_of(
    plan_session: Session, subjects: dict[str, Subject]
) -> Callable[[NamedPath, str], PathPlans]:
    """The custom plans (values bound) of a path for a subject; `generic` for the generic ones."""
    cache: dict[tuple[str, str], PathPlans] = {}

    def get(path: NamedPath, kind: str) -> PathPlans:
        if (path.key, kind) not in cache:
            subject = subjects["first member" if kind == GENERIC else kind]
            cache[path.key, kind] = explain_path(
                plan_session,
                path,
                subject.params,
                user_id=subject.user_id,
                generic=kind == GENERIC,
            )
        return cache[path.key, kind]

    return get


def _cases(*marked: tuple[str, str | None, pytest.MarkDecorator]) -> list[object]:
    """(path, subject kind) cases; `marked` adds a mark to (path key, kind or None: all kinds)."""
    return [
        pytest.param(
            path,
            kind,
            id=f"path{path.key}-{kind.replace(' ', '_')}",
            marks=[m for key, k, m in marked if key == path.key and k in (None, kind)],
        )
        for path in NAMED_PATHS
        for kind in SUBJECT_KINDS
    ]


def _generic_cases(*marked: tuple[str, pytest.MarkDecorator]) -> list[object]:
    return [
        pytest.param(
            path,
            id=f"path{path.key}-generic",
            marks=[m for key, m in marked if key == path.key],
        )
        for path in NAMED_PATHS
    ]


# --- the plans --------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "kind"), _cases())
def test_no_seq_scan_of_the_big_tables(
    plans_of: Callable[[NamedPath, str], PathPlans], path: NamedPath, kind: str
) -> None:
    _check_no_seq_scan(plans_of(path, kind))


@pytest.mark.parametrize(("path", "kind"), _cases())
def test_rls_keeps_the_index_conditions_of_the_plan_without_rls(
    plans_of: Callable[[NamedPath, str], PathPlans], path: NamedPath, kind: str
) -> None:
    _check_index_conditions(plans_of(path, kind))


@pytest.mark.parametrize(("path", "kind"), _cases())
def test_rls_plan_reads_the_index_that_serves_the_path(
    plans_of: Callable[[NamedPath, str], PathPlans], path: NamedPath, kind: str
) -> None:
    _check_serving_index(plans_of(path, kind))


@pytest.mark.parametrize(("path", "kind"), _cases(("3", "largest source", PATH_3_NEAR_TIE)))
def test_rls_adds_no_sort(
    plans_of: Callable[[NamedPath, str], PathPlans], path: NamedPath, kind: str
) -> None:
    _check_sorts(plans_of(path, kind))


@pytest.mark.parametrize(("path", "kind"), _cases())
def test_policy_applies_and_is_an_index_condition(
    plans_of: Callable[[NamedPath, str], PathPlans], path: NamedPath, kind: str
) -> None:
    """Proves the tenant plans ran under RLS: the policy's InitPlan is an index condition."""
    _check_policy(plans_of(path, kind))


@pytest.mark.parametrize("path", _generic_cases())
def test_generic_plans_meet_the_same_checks(
    plans_of: Callable[[NamedPath, str], PathPlans], path: NamedPath
) -> None:
    """A warm connection runs the prepared statement's generic plan: check that one too."""
    plans = plans_of(path, GENERIC)
    _check_no_seq_scan(plans)
    _check_policy(plans)
    _check_index_conditions(plans)
    _check_serving_index(plans)
    _check_sorts(plans)


def _check_no_seq_scan(plans: PathPlans) -> None:
    assert plans.under_rls.seq_scans() == [], _dump(plans.under_rls)
    assert plans.baseline.seq_scans() == [], _dump(plans.baseline)


def _check_index_conditions(plans: PathPlans) -> None:
    assert plans.lost_predicates == frozenset(), _both(plans)


def _check_serving_index(plans: PathPlans) -> None:
    used = set(plans.under_rls.indexes())
    assert used and used <= SERVING_INDEX[plans.path.key], _dump(plans.under_rls)


def _check_sorts(plans: PathPlans) -> None:
    if plans.path.key in IN_INDEX_ORDER:
        assert plans.under_rls.sorts() == 0, _dump(plans.under_rls)
    assert plans.under_rls.sorts() <= plans.baseline.sorts(), _both(plans)


def _check_policy(plans: PathPlans) -> None:
    plan = plans.under_rls
    init_plans = [n for n in plan.nodes if n.init_plan]
    policy_conds = [
        n.index_cond for n in plan.main_nodes if n.index_cond and "= ANY ($0)" in n.index_cond
    ]
    if plans.path.admin:
        # skillmeat_admin's policies are USING (true): nothing is added to the plan.
        assert init_plans == [] and policy_conds == [], _dump(plan)
    else:
        assert init_plans and policy_conds, _dump(plan)


def _both(plans: PathPlans) -> str:
    return f"under RLS:\n{_dump(plans.under_rls)}\nwithout RLS:\n{_dump(plans.baseline)}"


def _dump(plan: Plan) -> str:
    return "\n".join(
        f"{'  ' * n.depth}{n.node_type} {n.index or n.relation or ''}"
        f"{' [InitPlan]' if n.init_plan else ''}"
        f"{f' cond={n.index_cond}' if n.index_cond else ''}"
        f"{f' filter={n.filter}' if n.filter else ''}"
        for n in plan.nodes
    )


# --- the dataset ------------------------------------------------------------------------


def _scalar(conn: Connection, sql: str) -> float:
    return float(conn.execute(text(sql)).scalar_one())


def test_dataset_has_the_requested_size_and_a_realistic_shape(plan_session: Session) -> None:
    with plan_session.begin():
        conn = plan_session.connection()
        counts = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM projects),"
                " (SELECT count(*) FROM marketplace_sources),"
                " (SELECT count(*) FROM marketplace_catalog_entries)"
            )
        ).one()
        assert tuple(counts) == (PLAN_SPEC.projects, PLAN_SPEC.sources, PLAN_SPEC.entries)
        sizes = conn.execute(
            text(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY n), max(n),"
                " count(*) FILTER (WHERE n >= 1000)"
                " FROM (SELECT count(e.id) AS n FROM marketplace_sources s"
                " LEFT JOIN marketplace_catalog_entries e ON e.source_id = s.id GROUP BY s.id) x"
            )
        ).one()
        median_size, largest, big_sources = sizes
        assert median_size < 30 and largest >= 1000 and big_sources >= 3, sizes
        statuses: dict[str, int] = dict(
            conn.execute(
                text("SELECT status, count(*) FROM marketplace_catalog_entries GROUP BY status")
            ).all()
        )
        assert statuses["unchanged"] > 0.7 * PLAN_SPEC.entries
        assert all(statuses[s] > 0.03 * PLAN_SPEC.entries for s in ("new", "updated", "removed"))
        assert (
            _scalar(conn, "SELECT count(DISTINCT artifact_type) FROM marketplace_catalog_entries")
            == 7
        )
        assert _scalar(
            conn,
            "SELECT bool_and(confidence_score::numeric = round(confidence_score::numeric, 2)"
            " AND confidence_score BETWEEN 0 AND 100) FROM marketplace_catalog_entries",
        )
        never_synced = _scalar(
            conn, "SELECT avg((last_sync IS NULL)::int) FROM marketplace_sources"
        )
        assert 0.07 <= never_synced <= 0.13
        members = conn.execute(
            text(
                "SELECT min(n), max(n), bool_and(owners = 1) FROM (SELECT project_id, count(*) n,"
                " count(*) FILTER (WHERE role = 'owner') owners FROM project_members"
                " GROUP BY project_id) x"
            )
        ).one()
        assert tuple(members) == (1, 5, True)
        assert _scalar(conn, "SELECT count(DISTINCT role) FROM project_members") == 3
        memberships = conn.execute(
            text(
                "SELECT max(n), avg((n > 1)::int) FROM"
                " (SELECT count(*) n FROM project_members GROUP BY user_id) x"
            )
        ).one()
        assert memberships[0] >= 5 and memberships[1] >= 0.2, memberships


def test_dataset_refuses_a_database_that_has_data(plan_db: URL) -> None:
    engine = make_engine(plan_db, poolclass=NullPool)
    try:
        with pytest.raises(ValueError, match="already has projects"):
            build_dataset(engine, DatasetSpec.scaled(100))
    finally:
        engine.dispose()


def test_dataset_spec_names_the_field_it_refuses() -> None:
    with pytest.raises(ValueError, match="entries: 100000 entries are too many for 1 sources"):
        DatasetSpec(projects=1, sources=1, entries=100_000).validate()


# --- the EXPLAIN parsing ----------------------------------------------------------------


def test_conjuncts_split_at_top_level_and_outside_quotes() -> None:
    cond = (
        "((source_id = ANY ($0)) AND (source_id = 'a AND b'::uuid) AND "
        "((artifact_type)::text = 'skill'::text))"
    )
    assert split_conjuncts(cond) == [
        "source_id = ANY ($0)",
        "source_id = 'a AND b'::uuid",
        "(artifact_type)::text = 'skill'::text",
    ]
    assert predicate_atoms(cond) == ["source_id = ANY", "source_id =", "artifact_type ="]
    assert predicate_atoms("(confidence_score >= '80'::double precision)") == [
        "confidence_score >="
    ]


def test_plan_walk_separates_init_plans() -> None:
    plan = Plan.from_json(
        [
            {
                "Plan": {
                    "Node Type": "Limit",
                    "Plan Rows": 1,
                    "Plans": [
                        {"Node Type": "Result", "Parent Relationship": "InitPlan", "Plan Rows": 1},
                        {
                            "Node Type": "Index Scan",
                            "Parent Relationship": "Outer",
                            "Relation Name": "marketplace_catalog_entries",
                            "Index Name": "ix",
                            "Index Cond": "(source_id = ANY ($0))",
                            "Plan Rows": 1,
                        },
                    ],
                }
            }
        ]
    )
    assert [n.node_type for n in plan.main_nodes] == ["Limit", "Index Scan"]
    assert plan.index_predicates() == {"source_id = ANY"}
    assert plan.seq_scans() == []


# --- the commands -----------------------------------------------------------------------


def test_explain_prints_one_row_per_path(plan_db: URL, capsys: pytest.CaptureFixture[str]) -> None:
    explain.run(argparse.Namespace(url=str(plan_db), user_id=None, plans=True))
    out = capsys.readouterr().out
    table = out.split("\n\n")[1].splitlines()
    assert "index used (RLS)" in table[0] and "RLS changed plan" in table[0]
    assert [row.split()[0] for row in table[2:]] == [p.key for p in NAMED_PATHS]
    assert "Seq Scan" not in out
    assert "InitPlan (policy helper)" in out


def test_explain_refuses_a_user_who_sees_nothing(plan_db: URL) -> None:
    outsider = uuid.uuid4()
    args = argparse.Namespace(url=str(plan_db), user_id=outsider, plans=False)
    with pytest.raises(CommandError, match=f"--user-id: {outsider} sees no source"):
        explain.run(args)


def test_explain_and_bench_say_so_in_one_line_on_an_empty_database(
    pg_server_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    with throwaway_database(pg_server_url, prefix="skillmeat_plans_empty") as url:
        upgrade_to_head(url)
        shown = url.render_as_string(hide_password=False)
        assert cli.main(["--url", shown, "explain"]) == 1
        assert cli.main(
            ["--url", shown, "bench", "queries", "--existing", "--scaling-entries", "0"]
        )
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("skillmeat-db explain: database ") and "no project member" in err[0]
    assert err[1].startswith("skillmeat-db bench: database ") and "no project member" in err[1]


def test_bench_on_existing_data_prints_every_path(
    plan_db: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--url", plan_db.render_as_string(hide_password=False), "bench", "queries"]
    argv += ["--existing", "--repeat", "4", "--warmup", "2", "--users", "3"]
    argv += ["--scaling-entries", "0"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line[:3].strip() in _KEYS]
    assert rows == [p.key for p in NAMED_PATHS]


_KEYS = {p.key for p in NAMED_PATHS}


def test_bench_builds_and_drops_its_databases(
    pg_server_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    def bench_databases() -> set[str]:
        engine = make_engine(pg_server_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                names = conn.execute(
                    text("SELECT datname FROM pg_database WHERE datname LIKE 'skillmeat_benchq_%'")
                )
                return set(names.scalars())
        finally:
            engine.dispose()

    before = bench_databases()
    argv = ["--url", pg_server_url.render_as_string(hide_password=False), "bench", "queries"]
    argv += ["--entries", "3000", "--sources", "60", "--projects", "6", "--repeat", "4"]
    argv += ["--warmup", "1", "--users", "2", "--scaling-entries", "1000"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "building 3,000-entry dataset" in captured.err and "100%" in captured.err
    assert "generated: 6 projects, 60 sources, 3,000 entries" in captured.out
    assert "path 3 median, 1,000 entries -> here: under RLS" in captured.out
    assert bench_databases() <= before


def test_bench_refuses_bad_options_before_touching_a_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    assert cli.main(["--url", unreachable, "bench", "queries", "--repeat", "0"]) == 1
    assert cli.main(["--url", unreachable, "bench", "queries", "--entries", "10", "--sources", "0"])
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "skillmeat-db bench: --repeat: 0 is not allowed (must be >= 1)",
        "skillmeat-db bench: --sources: 0 is not allowed (must be >= 1)",
    ]


def test_policy_helper_lists_a_members_sources_from_the_index_alone(
    plan_session: Session, subjects: dict[str, Subject]
) -> None:
    """The query inside skillmeat_private.member_source_ids, as its owner runs it: an
    index-only scan of (project_id, last_sync, id) keeps RLS's fixed cost small."""
    member = subjects["most projects"].user_id
    with plan_session.begin():
        conn = plan_session.connection()
        projects = list(
            conn.execute(
                text("SELECT project_id FROM project_members WHERE user_id = :u"), {"u": member}
            ).scalars()
        )
        conn.execute(text("SET LOCAL ROLE skillmeat_definer"))
        document = conn.execute(
            text(
                "EXPLAIN (FORMAT JSON) SELECT array_agg(s.id) FROM public.marketplace_sources s "
                "WHERE s.project_id = ANY(CAST(:p AS uuid[]))"
            ),
            {"p": projects},
        ).scalar_one()
    plan = Plan.from_json(document)
    scans = [(n.node_type, n.index) for n in plan.main_nodes if n.index is not None]
    assert scans == [("Index Only Scan", "ix_marketplace_sources_project_id_last_sync")], scans
