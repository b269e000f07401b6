"""Projects and project members, and the updated_at trigger function.

Applies: function skillmeat_set_updated_at(); tables projects and project_members
(with their CHECKs, keys and the by-user index); the updated_at trigger on projects.
Undone by: dropping the two tables (trigger with them) and the function.

Revision ID: 3f0c1a7d2b10
Revises:
Create Date: 2026-11-27 18:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "3f0c1a7d2b10"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = postgresql.TIMESTAMP(timezone=True)

# clock_timestamp(), not now(): two updates in one transaction must still move
# updated_at forward; greatest() keeps it monotonic if the clock steps back.
SET_UPDATED_AT = """
CREATE FUNCTION skillmeat_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := greatest(clock_timestamp(), OLD.updated_at + interval '1 microsecond');
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.execute(SET_UPDATED_AT)
    op.create_table(
        "projects",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.CheckConstraint("name ~ '[^[:space:]]'", name=op.f("ck_projects_name_not_blank")),
    )
    op.execute(
        "CREATE TRIGGER trg_projects_updated_at BEFORE UPDATE ON projects "
        "FOR EACH ROW EXECUTE FUNCTION skillmeat_set_updated_at()"
    )
    op.create_table(
        "project_members",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("created_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "user_id", name="pk_project_members"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_project_members_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "role IN ('viewer', 'editor', 'owner')", name=op.f("ck_project_members_role")
        ),
    )
    op.create_index("ix_project_members_user_id", "project_members", ["user_id"])


def downgrade() -> None:
    op.drop_table("project_members")
    op.drop_table("projects")
    op.execute("DROP FUNCTION skillmeat_set_updated_at()")
