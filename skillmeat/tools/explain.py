"""`skillmeat-db explain`: each named query path's plan as a member sees it, next to the plan
of the same rows without row-level security (the connecting superuser's explicit filter).

A DBA reads one table: which index each path uses, whether RLS changed the plan,
estimated and actual rows, and the execution time with and without RLS.
"""

import argparse
import uuid

from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from skillmeat.core.database import DatabaseSettings, make_engine
from skillmeat.core.repositories.query_paths import NAMED_PATHS, NamedPath
from skillmeat.tools import CommandError
from skillmeat.tools.console import render_table
from skillmeat.tools.plans import (
    PathPlans,
    Plan,
    Subject,
    explain_path,
    first_subject,
    subject_for,
)


def run(args: argparse.Namespace) -> None:
    url = make_url(args.url or DatabaseSettings().database_url)
    for line in explain_report(url, user_id=args.user_id, show_plans=args.plans):
        print(line)


def explain_report(
    url: URL, *, user_id: uuid.UUID | None = None, show_plans: bool = False
) -> list[str]:
    """The lines `skillmeat-db explain` prints: a header, the table, optionally the plans."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        # One connection throughout: the policy helpers' plpgsql plans are cached per backend.
        with engine.connect() as conn, Session(bind=conn) as session:
            with session.begin():
                subject = _subject(session, url, user_id)
            results = [_measure(session, path, subject) for path in NAMED_PATHS]
    finally:
        engine.dispose()
    p = subject.params
    lines = [
        f"user {subject.user_id}: {subject.visible_sources} visible sources; "
        f"project {p.project_id}; source {p.source_id} ({subject.source_entries} entries, "
        f"type {p.artifact_type.value})",
        "",
        render_table(
            [
                "path",
                "index used (RLS)",
                "RLS changed plan",
                "est rows",
                "actual rows",
                "RLS ms",
                "no-RLS ms",
                "check",
            ],
            [
                [
                    r.path.key,
                    _indexes(r.under_rls),
                    r.rls_changed_plan,
                    round(r.under_rls.estimated_rows()),
                    round(r.under_rls.actual_rows() or 0),
                    r.under_rls.execution_ms or 0.0,
                    r.baseline.execution_ms or 0.0,
                    "; ".join(r.problems()) or "ok",
                ]
                for r in results
            ],
        ),
    ]
    if show_plans:
        for r in results:
            lines += ["", f"path {r.path.key}: {r.path.title}"]
            scoped = "  as skillmeat_admin:" if r.path.admin else "  under RLS (skillmeat_app):"
            lines += [scoped, *_tree(r.under_rls), "  without RLS:", *_tree(r.baseline)]
    return lines


def _subject(session: Session, url: URL, user_id: uuid.UUID | None) -> Subject:
    conn = session.connection()
    subject = first_subject(conn) if user_id is None else subject_for(conn, user_id)
    if subject is not None:
        return subject
    if user_id is None:
        raise CommandError(
            f"database {url.database!r} has no project member with a source that has catalog "
            "entries; point --url at one that has (`skillmeat-db bench queries --keep NAME` "
            "builds one)"
        )
    raise CommandError(
        f"--user-id: {user_id} sees no source with catalog entries in {url.database!r} "
        "(pass a member of a project whose sources have entries)"
    )


def _measure(session: Session, path: NamedPath, subject: Subject) -> PathPlans:
    # The first run compiles the policy helpers' plpgsql and warms the cache; report the second.
    explain_path(session, path, subject.params, user_id=subject.user_id, analyze=True)
    return explain_path(session, path, subject.params, user_id=subject.user_id, analyze=True)


def _indexes(plan: Plan) -> str:
    seq = [f"Seq Scan {n.relation}" for n in plan.main_nodes if n.node_type == "Seq Scan"]
    names = list(dict.fromkeys([*plan.indexes(), *seq]))
    return ", ".join(names) or "-"


def _tree(plan: Plan) -> list[str]:
    lines = []
    for n in plan.nodes:
        label = n.node_type
        if n.index:
            label += f" using {n.index}"
        if n.relation:
            label += f" on {n.relation}"
        if n.init_plan and n.depth == 1:
            label = f"InitPlan (policy helper): {label}"
        rows = f"rows est {n.plan_rows:.0f}"
        if n.actual_rows is not None:
            rows += f", actual {n.actual_rows * (n.loops or 1):.0f}"
        pad = "    " + "  " * n.depth
        lines.append(f"{pad}{label}  ({rows})")
        if n.index_cond:
            lines.append(f"{pad}  Index Cond: {_abbreviate(n.index_cond)}")
        if n.filter:
            removed = ""
            if n.removed_by_filter is not None:
                removed = f"  (removed {n.removed_by_filter * (n.loops or 1):.0f})"
            lines.append(f"{pad}  Filter: {_abbreviate(n.filter)}{removed}")
    return lines


def _abbreviate(condition: str, limit: int = 110) -> str:
    """Long uuid arrays (the explicit overview's ids) cut to keep one line per condition."""
    return condition if len(condition) <= limit else condition[: limit - 5] + " ...)"
