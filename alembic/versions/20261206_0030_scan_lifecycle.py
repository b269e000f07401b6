"""Scan lifecycle: the scan queue table, the worker role and its policies.

Applies: table marketplace_scans (one row per requested scan: state CHECK'd to
queued/running/succeeded/failed/cancelled, a partial unique index allowing one
queued or running scan per source, a partial index of queued scans in claim
order, a partial index of running scans by lease expiry, a source's scans by
creation, the updated_at trigger), then replaces the row-level security layer
with the frozen copy of skillmeat/core/database/rls_policies.sql beside this file
(20261206_0030_scan_lifecycle.sql): every policy, table grant and helper of the
previous layer is dropped (the skillmeat_private schema, its identity keys and
project_keeps_an_owner() stay), then the new file is applied. New in it: role
skillmeat_worker (NOLOGIN NOINHERIT) with its own policies and column grants, and
the marketplace_scans policies. Also SELECT on alembic_version for the worker.
Undone by: dropping the new layer and the table, revoking the worker's database
and alembic_version grants (the role itself stays: roles are cluster-wide), and
applying the previous layer's frozen copy (20261205_2250_request_isolation.sql).

Revision ID: 0b7e3c9d5a61
Revises: ac48ebd7ed9a
Create Date: 2026-12-06 00:30:00+00:00
"""

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0b7e3c9d5a61"
down_revision: str | Sequence[str] | None = "ac48ebd7ed9a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen with this revision: a later change to rls_policies.sql is a new revision.
POLICIES_SQL = Path(__file__).with_suffix(".sql")
PREVIOUS_POLICIES_SQL = Path(__file__).with_name("20261205_2250_request_isolation.sql")

OLD_TABLES = ("projects", "project_members", "marketplace_sources", "marketplace_catalog_entries")

DROP_POLICIES = """
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT policyname, tablename FROM pg_catalog.pg_policies
              WHERE schemaname = 'public'
                AND tablename IN ('projects', 'project_members', 'marketplace_sources',
                                  'marketplace_catalog_entries', 'marketplace_scans')
    LOOP
        EXECUTE format('DROP POLICY %I ON public.%I', p.policyname, p.tablename);
    END LOOP;
END
$$
"""

# By name: the schema also holds identity_keys and project_keeps_an_owner(), which stay.
DROP_HELPERS = """
DROP FUNCTION skillmeat_private.member_source_ids(text);
DROP FUNCTION skillmeat_private.member_project_ids(text);
DROP FUNCTION skillmeat_private.current_user_id();
"""

WORKER_EXISTS = "EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'skillmeat_worker')"

CREATE_SCANS = """
CREATE TABLE public.marketplace_scans (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    source_id uuid NOT NULL,
    state varchar(32) DEFAULT 'queued' NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    not_before timestamptz DEFAULT now() NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    heartbeat_at timestamptz,
    worker text,
    lease_token uuid,
    lease_expires_at timestamptz,
    cancel_requested_at timestamptz,
    error text,
    commit_sha text,
    duration_ms bigint,
    files_scanned integer,
    bytes_fetched bigint,
    rate_limit_remaining integer,
    entries_new integer,
    entries_updated integer,
    entries_removed integer,
    entries_unchanged integer,
    entries_inserted integer,
    entries_changed integer,
    confidence_histogram integer[],
    created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_marketplace_scans PRIMARY KEY (id),
    CONSTRAINT fk_marketplace_scans_source_id_marketplace_sources FOREIGN KEY (source_id)
        REFERENCES public.marketplace_sources (id) ON DELETE CASCADE,
    CONSTRAINT ck_marketplace_scans_state
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT ck_marketplace_scans_lease_when_running
        CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT ck_marketplace_scans_counts_not_negative CHECK (
        (attempts IS NULL OR attempts >= 0) AND (duration_ms IS NULL OR duration_ms >= 0)
        AND (files_scanned IS NULL OR files_scanned >= 0)
        AND (bytes_fetched IS NULL OR bytes_fetched >= 0)
        AND (rate_limit_remaining IS NULL OR rate_limit_remaining >= 0)
        AND (entries_new IS NULL OR entries_new >= 0)
        AND (entries_updated IS NULL OR entries_updated >= 0)
        AND (entries_removed IS NULL OR entries_removed >= 0)
        AND (entries_unchanged IS NULL OR entries_unchanged >= 0)
        AND (entries_inserted IS NULL OR entries_inserted >= 0)
        AND (entries_changed IS NULL OR entries_changed >= 0)),
    CONSTRAINT ck_marketplace_scans_confidence_histogram_buckets
        CHECK (cardinality(confidence_histogram) = 10),
    CONSTRAINT ck_marketplace_scans_worker_length CHECK (char_length(worker) <= 200),
    CONSTRAINT ck_marketplace_scans_worker_clean CHECK (
        worker !~ '[\\x01-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]'
        AND worker IS NFC NORMALIZED),
    CONSTRAINT ck_marketplace_scans_error_length CHECK (char_length(error) <= 10000),
    CONSTRAINT ck_marketplace_scans_commit_sha_length CHECK (char_length(commit_sha) <= 256),
    CONSTRAINT ck_marketplace_scans_commit_sha_clean CHECK (
        commit_sha !~ '[\\x01-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]'
        AND commit_sha IS NFC NORMALIZED)
);
CREATE UNIQUE INDEX uq_marketplace_scans_source_id_active ON public.marketplace_scans (source_id)
    WHERE state IN ('queued', 'running');
CREATE INDEX ix_marketplace_scans_not_before_id ON public.marketplace_scans (not_before, id)
    WHERE state = 'queued';
CREATE INDEX ix_marketplace_scans_lease_expires_at ON public.marketplace_scans (lease_expires_at)
    WHERE state = 'running';
CREATE INDEX ix_marketplace_scans_source_id_created_at_id
    ON public.marketplace_scans (source_id, created_at, id);
CREATE INDEX ix_marketplace_scans_created_at ON public.marketplace_scans (created_at);
CREATE TRIGGER trg_marketplace_scans_updated_at BEFORE UPDATE ON public.marketplace_scans
    FOR EACH ROW EXECUTE FUNCTION skillmeat_set_updated_at();
"""


def _drop_layer(tables: Sequence[str], roles: str) -> None:
    """Policies and table grants go; RLS stays enabled and forced throughout."""
    op.execute(DROP_POLICIES)
    for table in tables:
        op.execute(f"REVOKE ALL ON public.{table} FROM {roles}")
    op.execute(DROP_HELPERS)


def upgrade() -> None:
    _drop_layer(OLD_TABLES, "skillmeat_app, skillmeat_admin, skillmeat_definer")
    op.execute(CREATE_SCANS)
    op.execute(POLICIES_SQL.read_text(encoding="utf-8"))
    # A worker backend checks its schema at start-up too (ac48ebd7ed9a did it for the others).
    op.execute("GRANT SELECT ON public.alembic_version TO skillmeat_worker")


def downgrade() -> None:
    op.execute("REVOKE SELECT ON public.alembic_version FROM skillmeat_worker")
    roles = "skillmeat_app, skillmeat_admin, skillmeat_definer, skillmeat_worker"
    _drop_layer((*OLD_TABLES, "marketplace_scans"), roles)
    op.execute("DROP TABLE public.marketplace_scans")
    op.execute(
        "DO $$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM skillmeat_worker', "
        "current_database()); END $$"
    )
    op.execute(PREVIOUS_POLICIES_SQL.read_text(encoding="utf-8"))
