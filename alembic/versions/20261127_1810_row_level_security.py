"""Row-level security on the four tables: roles, helper functions, policies, grants.

Applies: the frozen copy of skillmeat/core/database/rls_policies.sql beside this
file (20261127_1810_row_level_security.sql): roles skillmeat_app, skillmeat_admin
and skillmeat_definer when absent; schema skillmeat_private with the identity and
membership helpers; TEMPORARY on the database for the application roles (the
sync's staging table); ENABLE + FORCE ROW LEVEL SECURITY, policies and grants per table.
Undone by: dropping every policy, turning RLS off, revoking the grants and dropping
skillmeat_private with its functions, and revoking TEMPORARY on the database
from the two roles. Roles are cluster-wide and may serve other
databases, so they are kept.

Revision ID: c71f5e0a4d22
Revises: 8d4e2b6c9a31
Create Date: 2026-11-27 18:10:00+00:00
"""

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "c71f5e0a4d22"
down_revision: str | Sequence[str] | None = "8d4e2b6c9a31"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen with this revision: a later change to rls_policies.sql is a new revision.
POLICIES_SQL = Path(__file__).with_suffix(".sql")

TABLES = ("projects", "project_members", "marketplace_sources", "marketplace_catalog_entries")
ROLES = "skillmeat_app, skillmeat_admin, skillmeat_definer"


def upgrade() -> None:
    op.execute(POLICIES_SQL.read_text(encoding="utf-8"))


def downgrade() -> None:
    op.execute(
        """
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
    )
    for table in TABLES:
        op.execute(f"ALTER TABLE public.{table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE public.{table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE ALL ON public.{table} FROM {ROLES}")
    op.execute("DROP SCHEMA skillmeat_private CASCADE")
    op.execute(
        "DO $$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I "
        "FROM skillmeat_app, skillmeat_admin', current_database()); END $$"
    )
