"""Catalog content and search: name, description, tags, exclusions, a definer search.

Applies: on marketplace_catalog_entries, the columns name (NOT NULL, existing rows get
the last segment of their path without extension, or the repository's name for '.'),
description, tags, excluded_at and excluded_reason with their CHECKs; the generated
search_vector (skillmeat_private.catalog_search_vector(), an IMMUTABLE function created
here); a trigger naming rows inserted without a name the same way
(catalog_entry_default_name()); the extensions pg_trgm and btree_gin (when absent:
marked by a comment as ours);
a GIN index on (source_id, search_vector) and a trigram GIN index on (source_id, name).
Then replaces the row-level security layer with the frozen copy of rls_policies.sql
beside this file (20261206_0040_catalog_search.sql): every policy and table grant and
the helpers of the previous layer are dropped (the schema skillmeat_private stays, with
identity_keys and project_keeps_an_owner()), then the new file is applied. New in it:
the request roles' column grants name the new columns; the role skillmeat_search (NOLOGIN,
no members) owns search_core(), search_catalog() (members) and search_catalog_admin().
Undone by: dropping the new layer, the indexes, columns, function and the extensions this
revision created, then applying 20261206_0030_scan_lifecycle.sql again.

Revision ID: 3f9c1d2e8b70
Revises: 0b7e3c9d5a61
Create Date: 2026-12-06 00:40:00+00:00
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "3f9c1d2e8b70"
down_revision: str | Sequence[str] | None = "0b7e3c9d5a61"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen with this revision: a later change to rls_policies.sql is a new revision.
POLICIES_SQL = Path(__file__).with_suffix(".sql")
PREVIOUS_POLICIES_SQL = Path(__file__).with_name("20261206_0030_scan_lifecycle.sql")

TABLE = "marketplace_catalog_entries"
TABLES = ("projects", "project_members", "marketplace_sources", TABLE, "marketplace_scans")
PREVIOUS_ROLES = "skillmeat_app, skillmeat_admin, skillmeat_definer, skillmeat_worker"
ROLES = PREVIOUS_ROLES + ", skillmeat_search"
EXTENSIONS = ("pg_trgm", "btree_gin")
# An extension this revision created carries this comment; the downgrade drops only those.
CREATED_MARK = "created by skillmeat revision 3f9c1d2e8b70 (dropped by its downgrade)"

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

DROP_HELPERS = """
DROP FUNCTION skillmeat_private.member_source_ids(text);
DROP FUNCTION skillmeat_private.member_project_ids(text);
DROP FUNCTION skillmeat_private.current_user_id();
"""

SEARCH_SIGNATURE = (
    "tsquery, text, text, text, text, uuid, uuid[], text[], text[], boolean, "
    "double precision, uuid, integer"
)
DROP_SEARCH = f"""
DROP FUNCTION skillmeat_private.search_catalog_admin({SEARCH_SIGNATURE});
DROP FUNCTION skillmeat_private.search_catalog({SEARCH_SIGNATURE});
DROP FUNCTION skillmeat_private.search_core(uuid[], tsquery, text, text, text, text, text[],
    text[], boolean, double precision, uuid, integer);
"""

# Copied from skillmeat/core/models/marketplace.py as of this revision (never imported).
UNCLEAN_TEXT_RE = r"[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"


def clean_text_check(column: str) -> str:
    return f"{column} !~ '{UNCLEAN_TEXT_RE}' AND {column} IS NFC NORMALIZED"


CHECKS = [
    ("name_not_blank", "name ~ '[^[:space:]]'"),
    ("name_length", "char_length(name) <= 200"),
    ("name_clean", clean_text_check("name")),
    ("description_length", "char_length(description) <= 2000"),
    ("description_clean", clean_text_check("description")),
    ("tags_size", "cardinality(tags) <= 20"),
    ("excluded_with_reason", "(excluded_at IS NULL) = (excluded_reason IS NULL)"),
    ("excluded_reason_length", "char_length(excluded_reason) <= 500"),
]

SEARCH_VECTOR_FUNCTION = """
CREATE FUNCTION skillmeat_private.catalog_search_vector(name text, description text, tags text[])
    RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT setweight(to_tsvector('simple'::regconfig, $1), 'A')
        || setweight(to_tsvector('english'::regconfig, $1), 'A')
        || setweight(to_tsvector('simple'::regconfig, array_to_string($3, ' ')), 'B')
        || setweight(to_tsvector('english'::regconfig, array_to_string($3, ' ')), 'B')
        || setweight(to_tsvector('english'::regconfig, coalesce($2, '')), 'C')
$$
"""

# The last path segment without its extension ('.hidden' stays whole), at most 200
# characters; the repository's name for the root. Same rule as DetectedArtifact.
NAME_FROM_PATH = """left(CASE
           WHEN {path} = '.' THEN {repo_name}
           ELSE coalesce(nullif(regexp_replace(regexp_replace({path}, '^.*/', ''),
                                               '\\.[^.]*$', ''), ''),
                         regexp_replace({path}, '^.*/', ''))
       END, 200)"""

# Rows inserted without a name (raw SQL; sync_catalog always sends one) get the same
# default, so name can be NOT NULL without breaking writers that predate it. Invoker
# rights: the repository's name is read under the inserting role's own RLS.
DEFAULT_NAME_TRIGGER = f"""
CREATE FUNCTION skillmeat_private.catalog_entry_default_name() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.name := {
    NAME_FROM_PATH.format(
        path="NEW.detected_path",
        repo_name="coalesce((SELECT split_part(s.repo_url, '/', 5) "
        "FROM public.marketplace_sources s WHERE s.id = NEW.source_id), '.')",
    )
};
    RETURN NEW;
END
$$;
CREATE TRIGGER catalog_entries_default_name BEFORE INSERT ON {TABLE}
    FOR EACH ROW WHEN (NEW.name IS NULL)
    EXECUTE FUNCTION skillmeat_private.catalog_entry_default_name();
"""

REPO_NAME = "split_part(s.repo_url, '/', 5)"
BACKFILL_NAMES = f"""
UPDATE {TABLE} e
   SET name = {NAME_FROM_PATH.format(path="e.detected_path", repo_name=REPO_NAME)}
  FROM marketplace_sources s
 WHERE s.id = e.source_id
"""


def _drop_layer(roles: str) -> None:
    """Policies and table grants go; RLS stays enabled and forced throughout."""
    op.execute(DROP_POLICIES)
    for table in TABLES:
        op.execute(f"REVOKE ALL ON public.{table} FROM {roles}")


def _create_extensions() -> None:
    for name in EXTENSIONS:
        op.execute(
            f"""
            DO $ext$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = '{name}') THEN
                    CREATE EXTENSION {name} WITH SCHEMA public;
                    COMMENT ON EXTENSION {name} IS '{CREATED_MARK}';
                END IF;
            END
            $ext$
            """
        )


def _drop_created_extensions() -> None:
    for name in reversed(EXTENSIONS):
        op.execute(
            f"""
            DO $ext$
            BEGIN
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension x
                            WHERE x.extname = '{name}'
                              AND pg_catalog.obj_description(x.oid, 'pg_extension')
                                  = '{CREATED_MARK}') THEN
                    DROP EXTENSION {name};
                END IF;
            END
            $ext$
            """
        )


def _backfill_names() -> None:
    """Existing rows get a name. The owner is subject to FORCE ROW LEVEL SECURITY and
    would update nothing, so FORCE is lifted for the update (inside this transaction)."""
    if op.get_context().as_sql:
        op.execute(BACKFILL_NAMES)
        return
    op.execute(f"ALTER TABLE {TABLE} NO FORCE ROW LEVEL SECURITY")
    op.get_bind().execute(sa.text(BACKFILL_NAMES))
    op.execute(f"ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY")


def upgrade() -> None:
    _drop_layer(PREVIOUS_ROLES)
    op.execute(DROP_HELPERS)
    _create_extensions()
    op.execute(SEARCH_VECTOR_FUNCTION)
    op.execute(
        f"ALTER TABLE {TABLE} ADD COLUMN name text, ADD COLUMN description text, "
        "ADD COLUMN tags text[] DEFAULT '{}'::text[] NOT NULL, "
        "ADD COLUMN excluded_at timestamptz, ADD COLUMN excluded_reason text"
    )
    _backfill_names()
    op.execute(
        f"ALTER TABLE {TABLE} ALTER COLUMN name SET NOT NULL, "
        + ", ".join(f"ADD CONSTRAINT ck_{TABLE}_{name} CHECK ({expr})" for name, expr in CHECKS)
        + ", ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
        "(skillmeat_private.catalog_search_vector(name, description, tags)) STORED"
    )
    op.execute(DEFAULT_NAME_TRIGGER)
    op.execute(
        f"CREATE INDEX ix_{TABLE}_source_id_search_vector ON {TABLE} "
        "USING gin (source_id, search_vector)"
    )
    op.execute(
        f"CREATE INDEX ix_{TABLE}_source_id_name ON {TABLE} "
        "USING gin (source_id, name public.gin_trgm_ops)"
    )
    op.execute(POLICIES_SQL.read_text(encoding="utf-8"))


def downgrade() -> None:
    _drop_layer(ROLES)
    op.execute(DROP_SEARCH)
    op.execute(DROP_HELPERS)
    op.execute(f"DROP TRIGGER catalog_entries_default_name ON {TABLE}")
    op.execute("DROP FUNCTION skillmeat_private.catalog_entry_default_name()")
    op.execute(f"DROP INDEX ix_{TABLE}_source_id_name")
    op.execute(f"DROP INDEX ix_{TABLE}_source_id_search_vector")
    op.execute(
        f"ALTER TABLE {TABLE} DROP COLUMN search_vector, "
        + ", ".join(f"DROP CONSTRAINT ck_{TABLE}_{name}" for name, _ in CHECKS)
        + ", DROP COLUMN name, DROP COLUMN description, DROP COLUMN tags, "
        "DROP COLUMN excluded_at, DROP COLUMN excluded_reason"
    )
    op.execute("DROP FUNCTION skillmeat_private.catalog_search_vector(text, text, text[])")
    _drop_created_extensions()
    op.execute(PREVIOUS_POLICIES_SQL.read_text(encoding="utf-8"))
