"""Tokens and links: a source's encrypted GitHub token, README link harvesting.

Applies: table marketplace_source_tokens (one AES-256-GCM ciphertext per source with
its key id and nonce; the backend encrypts, the database never sees a plaintext),
columns harvest_links, harvest_limit (0..20), discovered_at and discovered_by on
marketplace_sources (a discovered source never harvests: a CHECK), table
marketplace_source_links (a source's README links, in order), then replaces the
row-level security layer with the frozen copy of
skillmeat/core/database/rls_policies.sql beside this file
(20261206_0050_tokens_and_links.sql): every policy, table grant and helper of the
previous layer is dropped (the skillmeat_private schema, its identity keys and
project_keeps_an_owner() stay), then the new file is applied. New in it: the
tokens' and links' policies (no request role may read a ciphertext), role
skillmeat_harvester (NOLOGIN NOINHERIT) and the helper it owns,
skillmeat_private.record_harvested_links(uuid, text[]).
Undone by: dropping the new layer, the helper, both tables and the new columns (the
tokens are lost: they exist nowhere else), revoking what the harvester holds (the
role itself stays: roles are cluster-wide), and applying the previous layer's
frozen copy (20261206_0040_catalog_search.sql).

Revision ID: 5d2f8a41c7e9
Revises: 3f9c1d2e8b70
Create Date: 2026-12-06 00:50:00+00:00
"""

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "5d2f8a41c7e9"
down_revision: str | Sequence[str] | None = "3f9c1d2e8b70"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen with this revision: a later change to rls_policies.sql is a new revision.
POLICIES_SQL = Path(__file__).with_suffix(".sql")
PREVIOUS_POLICIES_SQL = Path(__file__).with_name("20261206_0040_catalog_search.sql")

OLD_TABLES = (
    "projects",
    "project_members",
    "marketplace_sources",
    "marketplace_catalog_entries",
    "marketplace_scans",
)
NEW_TABLES = ("marketplace_source_tokens", "marketplace_source_links")
OLD_ROLES = "skillmeat_app, skillmeat_admin, skillmeat_definer, skillmeat_worker, skillmeat_search"

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

# By name: the schema also holds identity_keys, project_keeps_an_owner() and the search
# column functions, which stay. The policies file creates the search functions again.
SEARCH_SIGNATURE = (
    "tsquery, text, text, text, text, uuid, uuid[], text[], text[], boolean, "
    "double precision, uuid, integer"
)
DROP_HELPERS = f"""
DROP FUNCTION skillmeat_private.search_catalog_admin({SEARCH_SIGNATURE});
DROP FUNCTION skillmeat_private.search_catalog({SEARCH_SIGNATURE});
DROP FUNCTION skillmeat_private.search_core(uuid[], tsquery, text, text, text, text, text[],
    text[], boolean, double precision, uuid, integer);
DROP FUNCTION skillmeat_private.member_source_ids(text);
DROP FUNCTION skillmeat_private.member_project_ids(text);
DROP FUNCTION skillmeat_private.current_user_id();
"""

CREATE_TABLES = """
ALTER TABLE public.marketplace_sources
    ADD COLUMN harvest_links boolean DEFAULT false NOT NULL,
    ADD COLUMN harvest_limit integer DEFAULT 5 NOT NULL,
    ADD COLUMN discovered_at timestamptz,
    ADD COLUMN discovered_by uuid,
    ADD CONSTRAINT fk_marketplace_sources_discovered_by_marketplace_sources
        FOREIGN KEY (discovered_by) REFERENCES public.marketplace_sources (id) ON DELETE SET NULL,
    ADD CONSTRAINT ck_marketplace_sources_harvest_limit_range
        CHECK (harvest_limit >= 0 AND harvest_limit <= 20),
    ADD CONSTRAINT ck_marketplace_sources_discovered_never_harvests
        CHECK (discovered_at IS NULL OR NOT harvest_links);
CREATE INDEX ix_marketplace_sources_discovered_by ON public.marketplace_sources (discovered_by);

CREATE TABLE public.marketplace_source_tokens (
    source_id uuid NOT NULL,
    key_id text NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_marketplace_source_tokens PRIMARY KEY (source_id),
    CONSTRAINT fk_marketplace_source_tokens_source_id_marketplace_sources FOREIGN KEY (source_id)
        REFERENCES public.marketplace_sources (id) ON DELETE CASCADE,
    CONSTRAINT ck_marketplace_source_tokens_key_id_shape CHECK (key_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    CONSTRAINT ck_marketplace_source_tokens_nonce_length CHECK (octet_length(nonce) = 12),
    CONSTRAINT ck_marketplace_source_tokens_ciphertext_length
        CHECK (octet_length(ciphertext) BETWEEN 17 AND 4096)
);

CREATE TABLE public.marketplace_source_links (
    source_id uuid NOT NULL,
    linked_source_id uuid NOT NULL,
    position integer NOT NULL,
    created_at timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_marketplace_source_links PRIMARY KEY (source_id, linked_source_id),
    CONSTRAINT fk_marketplace_source_links_source_id_marketplace_sources FOREIGN KEY (source_id)
        REFERENCES public.marketplace_sources (id) ON DELETE CASCADE,
    CONSTRAINT fk_marketplace_source_links_linked_source_id FOREIGN KEY (linked_source_id)
        REFERENCES public.marketplace_sources (id) ON DELETE CASCADE,
    CONSTRAINT ck_marketplace_source_links_not_itself CHECK (source_id <> linked_source_id),
    CONSTRAINT ck_marketplace_source_links_position_not_negative CHECK (position >= 0)
);
CREATE INDEX ix_marketplace_source_links_linked_source_id
    ON public.marketplace_source_links (linked_source_id);
"""


def _drop_layer(tables: Sequence[str], roles: str) -> None:
    """Policies and table grants go; RLS stays enabled and forced throughout."""
    op.execute(DROP_POLICIES)
    for table in tables:
        op.execute(f"REVOKE ALL ON public.{table} FROM {roles}")
    op.execute(DROP_HELPERS)


def upgrade() -> None:
    _drop_layer(OLD_TABLES, OLD_ROLES)
    op.execute(CREATE_TABLES)
    op.execute(POLICIES_SQL.read_text(encoding="utf-8"))


def downgrade() -> None:
    op.execute("DROP FUNCTION skillmeat_private.record_harvested_links(uuid, text[])")
    _drop_layer((*OLD_TABLES, *NEW_TABLES), f"{OLD_ROLES}, skillmeat_harvester")
    op.execute("DROP TABLE public.marketplace_source_links")
    op.execute("DROP TABLE public.marketplace_source_tokens")
    op.execute(
        "ALTER TABLE public.marketplace_sources "
        "DROP COLUMN discovered_by, DROP COLUMN discovered_at, "
        "DROP COLUMN harvest_limit, DROP COLUMN harvest_links"
    )
    # A non-superuser migrator made itself a member to hand the helper over.
    op.execute(
        "DO $$ BEGIN IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles "
        "WHERE rolname = current_user) THEN "
        "EXECUTE format('REVOKE skillmeat_harvester FROM %I', current_user); END IF; END $$"
    )
    op.execute(PREVIOUS_POLICIES_SQL.read_text(encoding="utf-8"))
