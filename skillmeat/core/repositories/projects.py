"""Repository functions for projects and their members.

Same contract as the marketplace functions: Session first, inside the caller's
`tenant_scope` (row-level security applies), never commit. An id the user cannot
see is NotFound; a visible project the user may not change is PermissionDenied.
A project always keeps an owner: the deferred trigger project_members_keep_an_owner
enforces it at commit, and these functions run it at once so the caller gets
LastOwner from the call itself and its transaction survives the refusal.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import delete, insert, select, text, tuple_, update
from sqlalchemy.orm import Session

from skillmeat.core.database.errors import translated_errors
from skillmeat.core.database.tenant import Scope, current_scope
from skillmeat.core.errors import (
    ConstraintViolation,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from skillmeat.core.models import MemberRole, Project, ProjectMember
from skillmeat.core.repositories import query_paths as paths
from skillmeat.core.repositories.common import Page, check_id, check_limit
from skillmeat.core.schemas.projects import (
    MemberRead,
    ProjectCreate,
    ProjectRead,
    check_project_name,
    check_role,
)

__all__ = [
    "add_member",
    "change_member_role",
    "create_project",
    "delete_project",
    "get_project",
    "list_members",
    "list_projects",
    "my_role",
    "remove_member",
    "rename_project",
]

Member = ProjectMember
_RANK = {MemberRole.VIEWER: 0, MemberRole.EDITOR: 1, MemberRole.OWNER: 2}
_CURSOR_SORT = "name"


# --- projects -----------------------------------------------------------------------


def create_project(session: Session, data: ProjectCreate) -> ProjectRead:
    """Create a project whose first member, data.owner_id, is its owner (admin scope)."""
    if not current_scope(session).admin:
        raise PermissionDenied(
            "permission denied: creating a project is an admin operation "
            "(use tenant_scope(session, admin=True))"
        )
    if not isinstance(data, ProjectCreate):
        raise ValidationFailed("data", data, f"{type(data).__name__} is not a ProjectCreate")
    with translated_errors(), session.begin_nested():
        row = session.execute(
            insert(Project).values(name=data.name).returning(Project)
        ).scalar_one()
        session.execute(
            insert(Member).values(
                project_id=row.id, user_id=data.owner_id, role=MemberRole.OWNER.value
            )
        )
    return ProjectRead.model_validate(row)


def get_project(session: Session, project_id: uuid.UUID) -> ProjectRead:
    current_scope(session)
    check_id("project_id", project_id)
    row = session.execute(select(Project).where(Project.id == project_id)).scalar_one_or_none()
    if row is None:
        raise _not_found(project_id)
    return ProjectRead.model_validate(row)


def list_projects(
    session: Session, *, limit: int = 50, cursor: str | None = None
) -> Page[ProjectRead]:
    """The projects the user is a member of (every project for admin), by name then id."""
    current_scope(session)
    check_limit(limit)
    stmt = select(Project)
    if cursor is not None:
        name, last_id = paths.decode_cursor(cursor, _CURSOR_SORT)
        if not isinstance(name, str):
            raise ValidationFailed(
                "cursor", cursor, f"{cursor[:40]!r} is not a cursor returned by this listing"
            )
        stmt = stmt.where(tuple_(Project.name, Project.id) > tuple_(name, last_id))
    rows = list(session.execute(stmt.order_by(Project.name, Project.id).limit(limit + 1)).scalars())
    items = [ProjectRead.model_validate(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = paths.encode_cursor(_CURSOR_SORT, items[-1].name, items[-1].id)
    return Page(items, next_cursor)


def rename_project(session: Session, project_id: uuid.UUID, name: str) -> ProjectRead:
    """Rename a project (owner)."""
    current_scope(session)
    check_id("project_id", project_id)
    check_project_name(name)
    with translated_errors():
        row = session.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(name=name)
            .returning(Project)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
    if row is None:
        raise _refusal(session, project_id, "rename it")
    return ProjectRead.model_validate(row)


def delete_project(session: Session, project_id: uuid.UUID) -> None:
    """Delete a project with its members, sources and catalog (owner)."""
    current_scope(session)
    check_id("project_id", project_id)
    with translated_errors():
        deleted = session.execute(
            delete(Project).where(Project.id == project_id).returning(Project.id)
        ).first()
    if deleted is None:
        raise _refusal(session, project_id, "delete it")


# --- members ------------------------------------------------------------------------


def my_role(session: Session, project_id: uuid.UUID) -> MemberRole | None:
    """The current user's role in the project; None if not a member (or in admin scope)."""
    scope = current_scope(session)
    check_id("project_id", project_id)
    if scope.user_id is None:
        return None
    role = session.execute(
        select(Member.role).where(Member.project_id == project_id, Member.user_id == scope.user_id)
    ).scalar_one_or_none()
    return None if role is None else MemberRole(role)


def list_members(session: Session, project_id: uuid.UUID) -> list[MemberRead]:
    """The project's members, oldest membership first (viewer)."""
    current_scope(session)
    check_id("project_id", project_id)
    _require(session, project_id, MemberRole.VIEWER, "list its members")
    rows = session.execute(
        select(Member)
        .where(Member.project_id == project_id)
        .order_by(Member.created_at, Member.user_id)
    ).scalars()
    return [MemberRead.model_validate(row) for row in rows]


def add_member(
    session: Session, project_id: uuid.UUID, user_id: uuid.UUID, role: MemberRole | str
) -> MemberRead:
    """Add a user to the project with `role` (owner)."""
    scope = current_scope(session)
    check_id("project_id", project_id)
    check_id("user_id", user_id)
    wanted = check_role(role)
    _require(session, project_id, MemberRole.OWNER, "add members")
    _refuse_own_row(scope, project_id, user_id, "add itself")
    try:
        with translated_errors(), session.begin_nested():
            row = session.execute(
                insert(Member)
                .values(project_id=project_id, user_id=user_id, role=wanted.value)
                .returning(Member)
            ).scalar_one()
    except ConstraintViolation as exc:
        if exc.sqlstate == "23505":
            raise ConstraintViolation(
                f"user_id: {user_id} is already a member of project {project_id} "
                "(use change_member_role to change its role)",
                constraint=exc.constraint,
                sqlstate=exc.sqlstate,
            ) from exc
        raise
    return MemberRead.model_validate(row)


def change_member_role(
    session: Session, project_id: uuid.UUID, user_id: uuid.UUID, role: MemberRole | str
) -> MemberRead:
    """Give a member another role (owner); LastOwner if that demotes the last owner."""
    scope = current_scope(session)
    check_id("project_id", project_id)
    check_id("user_id", user_id)
    wanted = check_role(role)
    _require(session, project_id, MemberRole.OWNER, "change roles")
    _refuse_own_row(scope, project_id, user_id, "change its own role")
    with _owner_kept(session):
        row = session.execute(
            update(Member)
            .where(Member.project_id == project_id, Member.user_id == user_id)
            .values(role=wanted.value)
            .returning(Member)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if row is None:
            raise _not_a_member(project_id, user_id)
    return MemberRead.model_validate(row)


def remove_member(session: Session, project_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Remove a member (owner), or leave (a member removing itself); LastOwner if that
    removes the last owner."""
    scope = current_scope(session)
    check_id("project_id", project_id)
    check_id("user_id", user_id)
    leaving = scope.user_id == user_id
    _require(
        session,
        project_id,
        MemberRole.VIEWER if leaving else MemberRole.OWNER,
        "remove members",
    )
    with _owner_kept(session):
        removed = session.execute(
            delete(Member)
            .where(Member.project_id == project_id, Member.user_id == user_id)
            .returning(Member.user_id)
        ).first()
        if removed is None:
            if leaving:
                raise PermissionDenied(
                    f"permission denied: this user may not leave project {project_id} "
                    "(an owner must remove it)"
                )
            raise _not_a_member(project_id, user_id)


# --- helpers ------------------------------------------------------------------------


@contextmanager
def _owner_kept(session: Session) -> Iterator[None]:
    """Run a membership change in a savepoint and check the last-owner rule now, not at
    commit: LastOwner comes from the call, and the savepoint's rollback undoes only it."""
    with translated_errors(), session.begin_nested():
        yield
        session.execute(text("SET CONSTRAINTS public.project_members_keep_an_owner IMMEDIATE"))
        session.execute(text("SET CONSTRAINTS public.project_members_keep_an_owner DEFERRED"))


def _require(session: Session, project_id: uuid.UUID, need: MemberRole, action: str) -> None:
    """NotFound if the project is invisible; PermissionDenied if the user's role is below
    `need` (admin scope may do anything)."""
    if session.execute(select(Project.id).where(Project.id == project_id)).first() is None:
        raise _not_found(project_id)
    if current_scope(session).admin:
        return
    role = my_role(session, project_id)
    if role is None or _RANK[role] < _RANK[need]:
        raise PermissionDenied(
            f"permission denied: this user may read project {project_id} but not {action} "
            f"({need.value} role required)"
        )


def _refuse_own_row(scope: Scope, project_id: uuid.UUID, user_id: uuid.UUID, what: str) -> None:
    if scope.user_id == user_id:
        raise PermissionDenied(
            f"permission denied: a member cannot {what} in project {project_id} "
            "(another owner, or an admin, must)"
        )


def _refusal(session: Session, project_id: uuid.UUID, action: str) -> Exception:
    """A write matched no row: PermissionDenied if the user can see it, else NotFound."""
    if session.execute(select(Project.id).where(Project.id == project_id)).first() is None:
        return _not_found(project_id)
    return PermissionDenied(
        f"permission denied: this user may read project {project_id} but not {action} "
        "(owner role required)"
    )


def _not_found(project_id: uuid.UUID) -> NotFound:
    return NotFound(f"project_id: {project_id} is not a project visible to this user")


def _not_a_member(project_id: uuid.UUID, user_id: uuid.UUID) -> NotFound:
    return NotFound(f"user_id: {user_id} is not a member of project {project_id}")
