"""Bounded, clean input: length, size and character CHECKs, so raw SQL cannot store what
the validators refuse.

Applies: on marketplace_sources, branch_or_ref at most 255 characters, manual_map at most
100 paths across its values, and branch_or_ref and root_hint free of control characters
(C0, C1, DEL), bidi controls (U+202A-U+202E, U+2066-U+2069) and, in root_hint, backslashes,
and in NFC; on marketplace_catalog_entries, upstream_url at most 2048 characters,
detected_version_sha and imported_version_sha at most 256, and detected_path,
upstream_url and both SHAs clean the same way. Existing rows are counted first: if any
breaks a rule, the upgrade stops with the counts and changes nothing.
Undone by: dropping those CHECKs.

Revision ID: 96234684d7d9
Revises: 5e0b2d7a9c14
Create Date: 2026-12-05 23:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "96234684d7d9"
down_revision: str | Sequence[str] | None = "5e0b2d7a9c14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Copied from skillmeat/core/models/marketplace.py as of this revision (never imported).
# PostgreSQL's regex engine reads the \x and \u escapes itself (standard strings). NUL
# needs no rule: text cannot hold it.
UNCLEAN_TEXT_RE = r"[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
UNCLEAN_PATH_RE = r"[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\\]"


def clean_text_check(column: str, *, path: bool = False) -> str:
    regex = UNCLEAN_PATH_RE if path else UNCLEAN_TEXT_RE
    return f"{column} !~ '{regex}' AND {column} IS NFC NORMALIZED"


# table -> [(name as in the naming convention's ck_<table>_<name>, expression)]
CHECKS: dict[str, list[tuple[str, str]]] = {
    "marketplace_sources": [
        ("branch_or_ref_length", "char_length(branch_or_ref) <= 255"),
        ("branch_or_ref_clean", clean_text_check("branch_or_ref")),
        ("root_hint_clean", clean_text_check("root_hint", path=True)),
        # Every element of every value; lax mode counts a bare string value as one path.
        (
            "manual_map_size",
            "jsonb_array_length(jsonb_path_query_array(manual_map, 'lax $.*[*]')) <= 100",
        ),
    ],
    "marketplace_catalog_entries": [
        ("detected_path_clean", clean_text_check("detected_path", path=True)),
        ("upstream_url_length", "char_length(upstream_url) <= 2048"),
        ("upstream_url_clean", clean_text_check("upstream_url")),
        ("detected_version_sha_length", "char_length(detected_version_sha) <= 256"),
        ("detected_version_sha_clean", clean_text_check("detected_version_sha")),
        ("imported_version_sha_length", "char_length(imported_version_sha) <= 256"),
        ("imported_version_sha_clean", clean_text_check("imported_version_sha")),
    ],
}


def _refuse_existing_violations(table: str, checks: list[tuple[str, str]]) -> None:
    """Count the rows that break each CHECK in one scan; stop with the counts if any does.

    The owner is subject to FORCE ROW LEVEL SECURITY and would count nothing, so FORCE
    is lifted for the count and restored (all inside this revision's transaction).
    """
    if op.get_context().as_sql:
        return  # `alembic upgrade --sql` prints the DDL; there are no rows to count
    bind = op.get_bind()
    forced = bind.execute(
        sa.text("SELECT relforcerowsecurity FROM pg_class WHERE oid = CAST(:t AS regclass)"),
        {"t": table},
    ).scalar_one()
    if forced:
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    counts = bind.execute(
        sa.text(
            "SELECT "
            + ", ".join(f"count(*) FILTER (WHERE NOT ({expr}))" for _, expr in checks)
            + f" FROM {table}"
        )
    ).one()
    if forced:
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    broken = [
        f"{n} rows break ck_{table}_{name} ({expr})"
        for n, (name, expr) in zip(counts, checks, strict=True)
        if n
    ]
    if broken:
        first = next(expr for n, (_, expr) in zip(counts, checks, strict=True) if n)
        raise RuntimeError(
            f"revision {revision} cannot add its CHECKs to {table}: "
            + "; ".join(broken)
            + ". Fix or delete those rows and upgrade again; as a superuser, list them with "
            f"SELECT id FROM {table} WHERE NOT ({first})"
        )


def upgrade() -> None:
    for table, checks in CHECKS.items():
        _refuse_existing_violations(table, checks)
        # One ALTER TABLE: PostgreSQL checks all the new constraints in a single scan.
        op.execute(
            f"ALTER TABLE {table} "
            + ", ".join(f"ADD CONSTRAINT ck_{table}_{name} CHECK ({expr})" for name, expr in checks)
        )


def downgrade() -> None:
    for table, checks in CHECKS.items():
        op.execute(
            f"ALTER TABLE {table} "
            + ", ".join(f"DROP CONSTRAINT ck_{table}_{name}" for name, _ in checks)
        )
