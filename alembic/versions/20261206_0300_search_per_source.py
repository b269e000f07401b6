"""Search per source: full-text candidates read source by source, plain words first.

Replaces the row-level security layer with the frozen copy of
skillmeat/core/database/rls_policies.sql beside this file
(20261206_0300_search_per_source.sql): every policy, table grant and helper of the
previous layer is dropped (the skillmeat_private schema, its identity keys,
project_keeps_an_owner() and the search column functions stay), then the new file is
applied. What changes in it: the search functions take the query twice
(`p_plain`: without the type-ahead prefix on the last word), gather full-text
candidates one visible source at a time (LATERAL), the plain words first and the
prefix's expansions only while fewer than 1,000 were found, and pin their own
planner settings (the caller's `enable_*` and `jit` no longer reach them). Nothing
else in the layer changes, and no table does.
Undone by: dropping the new layer and applying the previous frozen copy
(20261206_0050_tokens_and_links.sql).

Revision ID: b4e1c07d2f58
Revises: 5d2f8a41c7e9
Create Date: 2026-12-06 03:00:00+00:00
"""

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "b4e1c07d2f58"
down_revision: str | Sequence[str] | None = "5d2f8a41c7e9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen with this revision: a later change to rls_policies.sql is a new revision.
POLICIES_SQL = Path(__file__).with_suffix(".sql")
PREVIOUS_POLICIES_SQL = Path(__file__).with_name("20261206_0050_tokens_and_links.sql")

TABLES = (
    "projects",
    "project_members",
    "marketplace_sources",
    "marketplace_catalog_entries",
    "marketplace_scans",
    "marketplace_source_tokens",
    "marketplace_source_links",
)
ROLES = (
    "skillmeat_app, skillmeat_admin, skillmeat_definer, skillmeat_worker, skillmeat_search, "
    "skillmeat_harvester"
)

DROP_POLICIES = """
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT policyname, tablename FROM pg_catalog.pg_policies
              WHERE schemaname = 'public'
                AND tablename IN ('projects', 'project_members', 'marketplace_sources',
                                  'marketplace_catalog_entries', 'marketplace_scans',
                                  'marketplace_source_tokens', 'marketplace_source_links')
    LOOP
        EXECUTE format('DROP POLICY %I ON public.%I', p.policyname, p.tablename);
    END LOOP;
END
$$
"""

# By name, with each layer's own search signatures (the new ones take p_plain).
OLD_SEARCH = (
    "tsquery, text, text, text, text, uuid, uuid[], text[], text[], boolean, "
    "double precision, uuid, integer"
)
OLD_CORE = (
    "uuid[], tsquery, text, text, text, text, text[], text[], boolean, double precision, "
    "uuid, integer"
)
NEW_SEARCH = f"tsquery, {OLD_SEARCH}"
NEW_CORE = f"uuid[], tsquery, {OLD_CORE.removeprefix('uuid[], ')}"
DROP_HELPERS = """
DROP FUNCTION skillmeat_private.search_catalog_admin({search});
DROP FUNCTION skillmeat_private.search_catalog({search});
DROP FUNCTION skillmeat_private.search_core({core});
DROP FUNCTION skillmeat_private.record_harvested_links(uuid, text[]);
DROP FUNCTION skillmeat_private.member_source_ids(text);
DROP FUNCTION skillmeat_private.member_project_ids(text);
DROP FUNCTION skillmeat_private.current_user_id();
"""


def _drop_layer(search: str, core: str) -> None:
    """Policies, table grants and helpers go; RLS stays enabled and forced throughout."""
    op.execute(DROP_POLICIES)
    for table in TABLES:
        op.execute(f"REVOKE ALL ON public.{table} FROM {ROLES}")
    op.execute(DROP_HELPERS.format(search=search, core=core))


def upgrade() -> None:
    _drop_layer(OLD_SEARCH, OLD_CORE)
    op.execute(POLICIES_SQL.read_text(encoding="utf-8"))


def downgrade() -> None:
    _drop_layer(NEW_SEARCH, NEW_CORE)
    op.execute(PREVIOUS_POLICIES_SQL.read_text(encoding="utf-8"))
