"""Marketplace sources and catalog entries.

Applies: tables marketplace_sources and marketplace_catalog_entries with their
CHECKs (value sets as text CHECKs, canonical repo URL, relative paths, confidence
range), the case-insensitive unique repo per project, the seed's indexes plus a
partial index of new/updated entries, and the updated_at triggers.
Undone by: dropping both tables (their indexes, constraints and triggers go with them).

Revision ID: 8d4e2b6c9a31
Revises: 3f0c1a7d2b10
Create Date: 2026-11-27 18:05:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "8d4e2b6c9a31"
down_revision: str | Sequence[str] | None = "3f0c1a7d2b10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = postgresql.TIMESTAMP(timezone=True)

REPO_URL_CHECK = (
    "repo_url ~ '^https://github\\.com/[A-Za-z0-9](-?[A-Za-z0-9])*/[A-Za-z0-9._-]{1,100}$' "
    "AND char_length(split_part(repo_url, '/', 4)) <= 39 "
    "AND repo_url !~* '\\.git$' AND split_part(repo_url, '/', 5) NOT IN ('.', '..')"
)


def relative_path_check(column: str) -> str:
    return (
        f"octet_length({column}) <= 1024 AND ({column} = '.' "
        f"OR ({column} <> '' AND {column} !~ '(^|/)(\\.\\.?)?(/|$)'))"
    )


def timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
    ]


def updated_at_trigger(table: str) -> str:
    return (
        f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION skillmeat_set_updated_at()"
    )


def upgrade() -> None:
    op.create_table(
        "marketplace_sources",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("repo_url", sa.Text(), nullable=False),
        sa.Column("branch_or_ref", sa.Text(), server_default="HEAD", nullable=False),
        sa.Column("root_hint", sa.Text(), nullable=True),
        sa.Column(
            "manual_map",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("last_sync", TIMESTAMPTZ, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("trust_level", sa.String(32), server_default="unsigned", nullable=False),
        sa.Column("visibility", sa.String(32), server_default="private", nullable=False),
        *timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_marketplace_sources"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_marketplace_sources_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(REPO_URL_CHECK, name=op.f("ck_marketplace_sources_repo_url_canonical")),
        sa.CheckConstraint(
            "branch_or_ref ~ '[^[:space:]]'",
            name=op.f("ck_marketplace_sources_branch_or_ref_not_blank"),
        ),
        sa.CheckConstraint(
            relative_path_check("root_hint"), name=op.f("ck_marketplace_sources_root_hint_relative")
        ),
        sa.CheckConstraint(
            "jsonb_typeof(manual_map) = 'object'",
            name=op.f("ck_marketplace_sources_manual_map_object"),
        ),
        sa.CheckConstraint(
            "trust_level IN ('signed', 'unsigned')", name=op.f("ck_marketplace_sources_trust_level")
        ),
        sa.CheckConstraint(
            "visibility IN ('private', 'public')", name=op.f("ck_marketplace_sources_visibility")
        ),
    )
    op.create_index(
        "uq_marketplace_sources_project_id_lower_repo_url",
        "marketplace_sources",
        ["project_id", sa.text("lower(repo_url)")],
        unique=True,
    )
    op.create_index(
        "ix_marketplace_sources_project_id_last_sync",
        "marketplace_sources",
        ["project_id", sa.text("last_sync NULLS FIRST"), "id"],
    )
    op.create_index(
        "ix_marketplace_sources_last_sync",
        "marketplace_sources",
        [sa.text("last_sync NULLS FIRST")],
    )
    op.execute(updated_at_trigger("marketplace_sources"))

    op.create_table(
        "marketplace_catalog_entries",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("artifact_type", sa.String(32), nullable=False),
        sa.Column("detected_path", sa.Text(), nullable=False),
        sa.Column("upstream_url", sa.Text(), nullable=False),
        sa.Column("detected_version_sha", sa.Text(), nullable=False),
        sa.Column("detected_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("confidence_score", sa.Double(), nullable=False),
        sa.Column("status", sa.String(32), server_default="new", nullable=False),
        sa.Column("imported_at", TIMESTAMPTZ, nullable=True),
        sa.Column("imported_version_sha", sa.Text(), nullable=True),
        *timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_marketplace_catalog_entries"),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["marketplace_sources.id"],
            name="fk_marketplace_catalog_entries_source_id_marketplace_sources",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "source_id",
            "artifact_type",
            "detected_path",
            name="uq_marketplace_catalog_entries_source_type_path",
        ),
        sa.CheckConstraint(
            "artifact_type IN ('skill', 'agent', 'command', 'mcp', 'plugin', 'hook', 'bundle')",
            name=op.f("ck_marketplace_catalog_entries_artifact_type"),
        ),
        sa.CheckConstraint(
            "status IN ('new', 'updated', 'removed', 'unchanged')",
            name=op.f("ck_marketplace_catalog_entries_status"),
        ),
        sa.CheckConstraint(
            relative_path_check("detected_path"),
            name=op.f("ck_marketplace_catalog_entries_detected_path_relative"),
        ),
        sa.CheckConstraint(
            "upstream_url ~ '^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^[:space:]]*)?$'",
            name=op.f("ck_marketplace_catalog_entries_upstream_url_https"),
        ),
        sa.CheckConstraint(
            "detected_version_sha ~ '[^[:space:]]'",
            name=op.f("ck_marketplace_catalog_entries_detected_version_sha_not_blank"),
        ),
        sa.CheckConstraint(
            "confidence_score >= 0 AND confidence_score <= 100 "
            "AND confidence_score::numeric = round(confidence_score::numeric, 2)",
            name=op.f("ck_marketplace_catalog_entries_confidence_score_range"),
        ),
    )
    op.create_index(
        "ix_marketplace_catalog_entries_source_id_status",
        "marketplace_catalog_entries",
        ["source_id", "status"],
    )
    op.create_index(
        "ix_marketplace_catalog_entries_source_id_confidence_score_id",
        "marketplace_catalog_entries",
        ["source_id", "confidence_score", "id"],
    )
    op.create_index(
        "ix_marketplace_catalog_entries_source_id_detected_path_id",
        "marketplace_catalog_entries",
        ["source_id", "detected_path", "id"],
        postgresql_where=sa.text("status IN ('new', 'updated')"),
        postgresql_include=["status"],
    )
    op.execute(updated_at_trigger("marketplace_catalog_entries"))


def downgrade() -> None:
    op.drop_table("marketplace_catalog_entries")
    op.drop_table("marketplace_sources")
