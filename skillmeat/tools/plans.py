"""EXPLAIN (FORMAT JSON) of the named query paths, as a tenant and as the superuser.

One implementation for `skillmeat-db explain`, `skillmeat-db bench queries` and
tests/test_query_plans.py: how a path is run under a scope, how its plan tree is
walked, and what counts as "row-level security changed the plan".
"""

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, text
from sqlalchemy.orm import Session

from skillmeat.core.database.tenant import tenant_scope
from skillmeat.core.models import ArtifactType
from skillmeat.core.repositories.query_paths import AnySelect, NamedPath, PathParams

# The tables a named path must never read sequentially: they grow with tenants.
BIG_TABLES = frozenset({"marketplace_sources", "marketplace_catalog_entries"})

_SORT_TYPES = frozenset({"Sort", "Incremental Sort"})
_ATOM = re.compile(
    r"^\(*(?P<column>[a-z_][a-z0-9_]*)\)?(?:::[a-z ]+)?\s*"
    r"(?P<op>=|<>|<=|>=|<|>|IS NOT NULL|IS NULL)\s*(?P<any>ANY\b)?"
)


# --- compiling a statement for EXPLAIN -----------------------------------------------


def compile_statement(stmt: AnySelect, dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The driver-level SQL and parameters of `stmt` (IN lists expanded), to prefix with EXPLAIN.

    Parameters stay bound (not inlined), so the server plans exactly what the
    application sends.
    """
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    return str(compiled), dict(compiled.params)


# --- walking a plan -----------------------------------------------------------------


@dataclass(frozen=True)
class PlanNode:
    """One node of a plan tree; `depth` 0 is the root, `init_plan` marks InitPlan subtrees."""

    node_type: str
    relation: str | None
    index: str | None
    index_cond: str | None
    filter: str | None
    plan_rows: float
    actual_rows: float | None
    loops: float | None
    removed_by_filter: float | None
    depth: int
    init_plan: bool


@dataclass(frozen=True)
class Plan:
    """An EXPLAIN (FORMAT JSON) result, flattened in depth-first order."""

    raw: dict[str, Any]
    nodes: tuple[PlanNode, ...]
    planning_ms: float | None = None
    execution_ms: float | None = None

    @classmethod
    def from_json(cls, document: Any) -> "Plan":
        """From EXPLAIN's JSON (a one-element list), as text or already decoded."""
        if isinstance(document, str):
            document = json.loads(document)
        top = document[0] if isinstance(document, list) else document
        return cls(
            raw=top,
            nodes=tuple(_walk(top["Plan"], 0, False)),
            planning_ms=top.get("Planning Time"),
            execution_ms=top.get("Execution Time"),
        )

    @property
    def main_nodes(self) -> tuple[PlanNode, ...]:
        """The nodes of the query itself (InitPlans, e.g. the policy's helper call, excluded)."""
        return tuple(n for n in self.nodes if not n.init_plan)

    def seq_scans(self, tables: frozenset[str] = BIG_TABLES) -> list[str]:
        """Tables of `tables` read by a Seq Scan anywhere in the plan, InitPlans included."""
        return [
            n.relation for n in self.nodes if n.node_type == "Seq Scan" and n.relation in tables
        ]

    def indexes(self) -> list[str]:
        """Indexes the query reads (plain, index-only and bitmap scans), in plan order."""
        return [n.index for n in self.main_nodes if n.index is not None]

    def index_predicates(self) -> frozenset[str]:
        """Every index condition of the plan as `column op` (values and parameters dropped)."""
        return frozenset(
            atom for n in self.main_nodes if n.index_cond for atom in predicate_atoms(n.index_cond)
        )

    def shape(self) -> tuple[tuple[str, str | None], ...]:
        """Node types and indexes outside InitPlans: equal shapes mean the same plan."""
        return tuple((n.node_type, n.index) for n in self.main_nodes)

    def sorts(self) -> int:
        """Sort and Incremental Sort nodes: each one means an index did not give the order."""
        return sum(n.node_type in _SORT_TYPES for n in self.main_nodes)

    def estimated_rows(self) -> float:
        return self.nodes[0].plan_rows

    def actual_rows(self) -> float | None:
        root = self.nodes[0]
        return None if root.actual_rows is None else root.actual_rows * (root.loops or 1)


def _walk(node: dict[str, Any], depth: int, init_plan: bool) -> Iterator[PlanNode]:
    yield PlanNode(
        node_type=node["Node Type"],
        relation=node.get("Relation Name"),
        index=node.get("Index Name"),
        index_cond=node.get("Index Cond"),
        filter=node.get("Filter"),
        plan_rows=float(node.get("Plan Rows", 0)),
        actual_rows=node.get("Actual Rows"),
        loops=node.get("Actual Loops"),
        removed_by_filter=node.get("Rows Removed by Filter"),
        depth=depth,
        init_plan=init_plan,
    )
    for child in node.get("Plans", ()):
        inner = init_plan or child.get("Parent Relationship") == "InitPlan"
        yield from _walk(child, depth + 1, inner)


def split_conjuncts(condition: str) -> list[str]:
    """`((a = 1) AND (b = 2))` -> [`a = 1`, `b = 2`]: top-level AND terms, parentheses stripped."""
    condition = _strip_parens(condition.strip())
    terms, depth, start, i = [], 0, 0, 0
    quoted = False
    while i < len(condition):
        ch = condition[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and condition.startswith(" AND ", i):
            terms.append(condition[start:i])
            start = i + len(" AND ")
            i = start
            continue
        i += 1
    terms.append(condition[start:])
    return [_strip_parens(t.strip()) for t in terms]


def _strip_parens(s: str) -> str:
    """Remove parentheses that enclose the whole string."""
    while s.startswith("(") and s.endswith(")"):
        depth = 0
        for i, ch in enumerate(s):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(s) - 1:
                return s
        s = s[1:-1].strip()
    return s


def predicate_atoms(condition: str) -> list[str]:
    """`column op` for each conjunct, e.g. `source_id = ANY`, `confidence_score >=`.

    Values, casts and parameter numbers are dropped so a condition on a literal
    (explicit filter) and on an InitPlan parameter (the policy) compare equal.
    """
    atoms = []
    for term in split_conjuncts(condition):
        match = _ATOM.match(term)
        if match is None:
            atoms.append(term)
            continue
        atom = f"{match['column']} {match['op']}"
        atoms.append(f"{atom} ANY" if match["any"] else atom)
    return atoms


# --- running a path under a scope ----------------------------------------------------


EXPLAIN_ONLY = "EXPLAIN (FORMAT JSON)"
EXPLAIN_ANALYZE = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)"


def explain(conn: Connection, stmt: AnySelect, *, analyze: bool = False) -> Plan:
    """The plan of `stmt` on `conn`, in whatever role and identity `conn` currently has.

    Parameters are bound, so this is the custom plan PostgreSQL makes for these values.
    """
    sql, params = compile_statement(stmt, conn.dialect)
    prefix = EXPLAIN_ANALYZE if analyze else EXPLAIN_ONLY
    document = conn.exec_driver_sql(f"{prefix} {sql}", params).scalar_one()
    return Plan.from_json(document)


_GENERIC = "skillmeat_generic_plan"


def explain_generic(conn: Connection, stmt: AnySelect) -> Plan:
    """The generic plan of `stmt` (no parameter values), inside the current transaction.

    psycopg prepares a statement on its 5th execution on a connection and PostgreSQL
    may then switch to a generic plan, so a warm connection runs this one.
    """
    # The same dialect with $n placeholders: PREPARE takes no driver-side parameters.
    dialect_cls: Any = type(conn.dialect)
    dialect = dialect_cls(paramstyle="numeric_dollar")
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    arguments = ", ".join(["NULL"] * len(compiled.positiontup or ()))
    conn.exec_driver_sql(f"PREPARE {_GENERIC} AS {compiled}")
    try:
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        document = conn.exec_driver_sql(
            f"{EXPLAIN_ONLY} EXECUTE {_GENERIC}({arguments})"
        ).scalar_one()
    finally:
        conn.exec_driver_sql(f"DEALLOCATE {_GENERIC}")
    return Plan.from_json(document)


@dataclass(frozen=True)
class PathPlans:
    """A path's plan as the tenant (RLS applies) and its explicit form as the superuser."""

    path: NamedPath
    under_rls: Plan
    baseline: Plan

    @property
    def lost_predicates(self) -> frozenset[str]:
        """Index conditions the baseline uses that RLS turned into filters (or dropped)."""
        return self.baseline.index_predicates() - self.under_rls.index_predicates()

    @property
    def rls_changed_plan(self) -> bool:
        return self.under_rls.shape() != self.baseline.shape()

    def problems(self) -> list[str]:
        """Why this pair of plans is not acceptable, one short phrase each; empty when it is."""
        found = []
        for plan, who in ((self.under_rls, "under RLS"), (self.baseline, "without RLS")):
            found += [f"Seq Scan on {table} {who}" for table in plan.seq_scans()]
        if self.lost_predicates:
            lost = ", ".join(sorted(self.lost_predicates))
            found.append(f"index condition lost under RLS: {lost}")
        if self.under_rls.sorts() > self.baseline.sorts():
            found.append("RLS adds a sort (the plan without RLS reads the index in order)")
        return found


def explain_path(
    session: Session,
    path: NamedPath,
    params: PathParams,
    *,
    user_id: uuid.UUID,
    analyze: bool = False,
    generic: bool = False,
) -> PathPlans:
    """Plan `path` as the app role for `user_id` (or as admin) and as the connecting superuser.

    Each plan runs in its own transaction. analyze=True executes the statements
    (read-only), so actual rows and times are those of a real request; generic=True
    gives the plans of a prepared statement instead of the custom ones.
    """

    def plan(stmt: AnySelect) -> Plan:
        conn = session.connection()
        return explain_generic(conn, stmt) if generic else explain(conn, stmt, analyze=analyze)

    with tenant_scope(session, **_scope(path, user_id)):
        under_rls = plan(path.under_rls(params))
    with session.begin():
        baseline = plan(path.explicit(params))
    return PathPlans(path=path, under_rls=under_rls, baseline=baseline)


def _scope(path: NamedPath, user_id: uuid.UUID) -> dict[str, Any]:
    return {"admin": True} if path.admin else {"user_id": user_id}


# --- choosing realistic parameters ---------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A member and the values the named paths are run with for it."""

    user_id: uuid.UUID
    params: PathParams
    source_entries: int
    visible_sources: int


_SUBJECT = text(
    """
    WITH visible AS (
        SELECT s.id, s.project_id
          FROM project_members m
          JOIN marketplace_sources s ON s.project_id = m.project_id
         WHERE m.user_id = :user_id
    ), biggest AS (
        SELECT e.source_id, v.project_id, count(*) AS entries
          FROM visible v
          JOIN marketplace_catalog_entries e ON e.source_id = v.id
         GROUP BY e.source_id, v.project_id
         ORDER BY count(*) DESC, e.source_id
         LIMIT 1
    )
    SELECT b.source_id, b.project_id, b.entries,
           (SELECT e.artifact_type
              FROM marketplace_catalog_entries e
             WHERE e.source_id = b.source_id
             GROUP BY e.artifact_type
             ORDER BY count(*) DESC, e.artifact_type
             LIMIT 1) AS artifact_type,
           (SELECT array_agg(v.id ORDER BY v.id) FROM visible v) AS visible
      FROM biggest b
    """
)


def subject_for(conn: Connection, user_id: uuid.UUID) -> Subject | None:
    """The user's largest visible source (its most common type); None if it sees no entry.

    Read as the superuser, so it sees what the member would see and nothing is timed.
    """
    row = conn.execute(_SUBJECT, {"user_id": user_id}).one_or_none()
    if row is None:
        return None
    visible = list(row.visible or [])
    return Subject(
        user_id=user_id,
        params=PathParams(
            project_id=row.project_id,
            source_id=row.source_id,
            artifact_type=ArtifactType(row.artifact_type),
            visible_source_ids=visible,
        ),
        source_entries=int(row.entries),
        visible_sources=len(visible),
    )


_FIRST_MEMBER = text(
    """
    SELECT m.user_id
      FROM project_members m
     WHERE EXISTS (SELECT 1
                     FROM marketplace_sources s
                     JOIN marketplace_catalog_entries e ON e.source_id = s.id
                    WHERE s.project_id = m.project_id)
     ORDER BY m.created_at, m.project_id, m.user_id
     LIMIT 1
    """
)


def first_subject(conn: Connection) -> Subject | None:
    """The first member (oldest membership) of a project that has catalog entries."""
    user_id = conn.execute(_FIRST_MEMBER).scalar_one_or_none()
    return None if user_id is None else subject_for(conn, user_id)


_SAMPLE_USERS = text(
    """
    SELECT user_id
      FROM (SELECT DISTINCT user_id FROM project_members) AS u
     ORDER BY md5(user_id::text || :salt), user_id
     LIMIT :n
    """
)


def sample_subjects(conn: Connection, n: int, *, salt: str = "bench") -> list[Subject]:
    """Up to `n` members drawn pseudo-randomly (stable per dataset), each on its largest source."""
    users = conn.execute(_SAMPLE_USERS, {"salt": salt, "n": n * 2}).scalars().all()
    subjects = [s for u in users if (s := subject_for(conn, u)) is not None]
    return subjects[:n]
