"""Projects API: a project always keeps an owner; the request roles read the revision.

Applies: SECURITY DEFINER function skillmeat_private.project_keeps_an_owner()
(owned by skillmeat_definer, search_path pinned, EXECUTE revoked from PUBLIC) and
the deferred constraint trigger project_members_keep_an_owner on project_members,
which refuses (SQLSTATE 23514) a transaction that leaves a still-existing project
without an owner (it reads projects through the definer's SELECT policy from
rls_policies.sql, so deleting a project, which cascades its memberships, stays
allowed); SELECT on alembic_version for skillmeat_app and skillmeat_admin (a
backend checks its schema at start-up).
Undone by: dropping the trigger and the function, and the grant.

Revision ID: ac48ebd7ed9a
Revises: 96234684d7d9
Create Date: 2026-12-05 23:10:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ac48ebd7ed9a"
down_revision: str | Sequence[str] | None = "96234684d7d9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Runs at commit (or at SET CONSTRAINTS ... IMMEDIATE) for every membership row
# that stopped being an owner of its project. The lock on the project row
# serializes the check per project: two owners demoting each other concurrently
# would otherwise each see the other still an owner (READ COMMITTED) and both commit.
KEEPS_AN_OWNER = """
CREATE FUNCTION skillmeat_private.project_keeps_an_owner() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.role <> 'owner' OR (TG_OP = 'UPDATE' AND NEW.role = 'owner'
                               AND NEW.project_id = OLD.project_id) THEN
        RETURN NULL;
    END IF;
    -- The project row, locked: concurrent checks of one project run one after the
    -- other, each on a fresh snapshot. (An advisory lock could be taken by any
    -- request first: pg_advisory_lock is executable by PUBLIC.) Absent: the project
    -- is being deleted, which may take its owners with it.
    PERFORM 1 FROM public.projects p WHERE p.id = OLD.project_id FOR NO KEY UPDATE;
    IF FOUND
       AND NOT EXISTS (SELECT 1 FROM public.project_members m
                        WHERE m.project_id = OLD.project_id AND m.role = 'owner') THEN
        RAISE EXCEPTION 'project % would have no owner', OLD.project_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'project_members_keep_an_owner',
                  HINT = 'make another member owner first, or delete the project';
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(KEEPS_AN_OWNER)
    # A new owner needs CREATE on the schema (unless a superuser migrates): lend it.
    op.execute("GRANT CREATE ON SCHEMA skillmeat_private TO skillmeat_definer")
    op.execute(
        "ALTER FUNCTION skillmeat_private.project_keeps_an_owner() OWNER TO skillmeat_definer"
    )
    op.execute("REVOKE CREATE ON SCHEMA skillmeat_private FROM skillmeat_definer")
    op.execute("REVOKE ALL ON FUNCTION skillmeat_private.project_keeps_an_owner() FROM PUBLIC")
    op.execute(
        "CREATE CONSTRAINT TRIGGER project_members_keep_an_owner "
        "AFTER UPDATE OR DELETE ON public.project_members "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        "EXECUTE FUNCTION skillmeat_private.project_keeps_an_owner()"
    )
    # The revision is no secret; NOINHERIT login roles read it after SET ROLE.
    op.execute("GRANT SELECT ON public.alembic_version TO skillmeat_app, skillmeat_admin")


def downgrade() -> None:
    op.execute("REVOKE SELECT ON public.alembic_version FROM skillmeat_app, skillmeat_admin")
    op.execute("DROP TRIGGER project_members_keep_an_owner ON public.project_members")
    op.execute("DROP FUNCTION skillmeat_private.project_keeps_an_owner()")
