"""Request isolation: verifiable identities, one-query policy helper, narrower grants.

Applies: replaces the row-level security layer with the frozen copy of
skillmeat/core/database/rls_policies.sql beside this file
(20261205_2250_request_isolation.sql): every policy, grant and helper of the
previous revision is dropped, then the new file is applied. New in it: the member
identity is accepted only with an HMAC proof verified by
skillmeat_private.current_user_id() against skillmeat_private.identity_keys (created
here, readable by the definer only; keys are installed after migrating, see
skillmeat.core.database.identity); member_source_ids() answers in one query; INSERT
and UPDATE grants name their columns (never id or audit stamps); a member may
leave a project. Also: no planner statistics on project_members.user_id (EXPLAIN
estimates revealed user ids).
Undone by: dropping the new layer and the key table (the installed keys with it),
restoring the statistics target, and applying the previous revision's frozen copy.

Revision ID: 5e0b2d7a9c14
Revises: c71f5e0a4d22
Create Date: 2026-12-05 22:50:00+00:00
"""

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "5e0b2d7a9c14"
down_revision: str | Sequence[str] | None = "c71f5e0a4d22"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen with this revision: a later change to rls_policies.sql is a new revision.
POLICIES_SQL = Path(__file__).with_suffix(".sql")
PREVIOUS_POLICIES_SQL = Path(__file__).with_name("20261127_1810_row_level_security.sql")

TABLES = ("projects", "project_members", "marketplace_sources", "marketplace_catalog_entries")
ROLES = "skillmeat_app, skillmeat_admin, skillmeat_definer"

DROP_POLICIES = """
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT policyname, tablename FROM pg_catalog.pg_policies
              WHERE schemaname = 'public'
                AND tablename IN ('projects', 'project_members',
                                  'marketplace_sources', 'marketplace_catalog_entries')
    LOOP
        EXECUTE format('DROP POLICY %I ON public.%I', p.policyname, p.tablename);
    END LOOP;
END
$$
"""

DROP_HELPERS = """
DROP FUNCTION skillmeat_private.member_source_ids(text);
DROP FUNCTION skillmeat_private.member_project_ids(text);
DROP FUNCTION skillmeat_private.current_user_id();
"""


def _drop_layer() -> None:
    """Policies and table grants go; RLS stays enabled and forced throughout."""
    op.execute(DROP_POLICIES)
    for table in TABLES:
        op.execute(f"REVOKE ALL ON public.{table} FROM {ROLES}")
    op.execute(DROP_HELPERS)


def upgrade() -> None:
    _drop_layer()
    op.execute(
        """
        CREATE TABLE skillmeat_private.identity_keys (
            key_id text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
            inner_pad bytea NOT NULL CHECK (octet_length(inner_pad) = 64),
            outer_pad bytea NOT NULL CHECK (octet_length(outer_pad) = 64),
            -- kept only for a key that `skillmeat-db upgrade` generated (development)
            secret bytea,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(POLICIES_SQL.read_text(encoding="utf-8"))
    op.execute("ALTER TABLE public.project_members ALTER COLUMN user_id SET STATISTICS 0")


def downgrade() -> None:
    op.execute("ALTER TABLE public.project_members ALTER COLUMN user_id SET STATISTICS -1")
    _drop_layer()
    op.execute("DROP TABLE skillmeat_private.identity_keys")
    op.execute("DROP SCHEMA skillmeat_private")
    op.execute(PREVIOUS_POLICIES_SQL.read_text(encoding="utf-8"))
