"""Projects and members: the repository functions as the application role, and the
last-owner rule enforced by the database (deferred trigger), raw SQL included.

Savepoint releases do not fire deferred triggers, so tests inside the rolled-back
test transaction run `SET CONSTRAINTS ALL IMMEDIATE` where a commit would check;
the tests marked "committed" commit for real.
"""

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from skillmeat.core.database import make_session_factory, tenant_scope
from skillmeat.core.errors import (
    ConstraintViolation,
    LastOwner,
    NotFound,
    PermissionDenied,
    SkillmeatError,
    ValidationFailed,
)
from skillmeat.core.models import MemberRole
from skillmeat.core.repositories import projects as repo
from skillmeat.core.schemas.projects import MemberRead, ProjectCreate, ProjectRead
from tests.rls_world import World, build_world

# --- helpers ------------------------------------------------------------------------


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


@contextmanager
def as_user(session: Session, user: uuid.UUID) -> Iterator[Session]:
    with tenant_scope(session, user_id=user) as scoped:
        yield scoped


@contextmanager
def as_admin(session: Session) -> Iterator[Session]:
    with tenant_scope(session, admin=True) as scoped:
        yield scoped


def members_of(session: Session, project: uuid.UUID) -> dict[uuid.UUID, str]:
    """As the superuser (no RLS): the truth, independent of the code under test."""
    rows = session.execute(
        text("SELECT user_id, role FROM project_members WHERE project_id = :p"), {"p": project}
    )
    return {user: role for user, role in rows}


def name_of(session: Session, project: uuid.UUID) -> str | None:
    return session.execute(
        text("SELECT name FROM projects WHERE id = :p"), {"p": project}
    ).scalar_one_or_none()


def new_project(session: Session, owner: uuid.UUID, name: str = "team") -> ProjectRead:
    with as_admin(session):
        return repo.create_project(session, ProjectCreate(name=name, owner_id=owner))


def assert_library_sentence(exc: SkillmeatError) -> None:
    message = str(exc)
    assert "row-level security" not in message and "policy" not in message, message
    assert "\n" not in message


# --- create / get / list --------------------------------------------------------------


def test_create_project_makes_the_owner_its_first_member(session: Session) -> None:
    owner = uuid.uuid4()
    project = new_project(session, owner, "Platform team")
    assert isinstance(project, ProjectRead)
    assert project.name == "Platform team"
    assert members_of(session, project.id) == {owner: "owner"}
    with as_user(session, owner):
        assert repo.get_project(session, project.id) == project
        assert repo.my_role(session, project.id) is MemberRole.OWNER
        [member] = repo.list_members(session, project.id)
    assert isinstance(member, MemberRead)
    assert (member.user_id, member.role) == (owner, MemberRole.OWNER)


def test_create_project_is_an_admin_operation(session: Session, world: World) -> None:
    before = session.execute(text("SELECT count(*) FROM projects")).scalar_one()
    with pytest.raises(PermissionDenied) as caught, as_user(session, world.a.members["owner"]):
        repo.create_project(session, ProjectCreate(name="mine", owner_id=world.a.members["owner"]))
    assert "admin operation" in str(caught.value)
    assert session.execute(text("SELECT count(*) FROM projects")).scalar_one() == before


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("   ", "is blank"),
        ("x" * 201, "has 201 characters"),
        ("tab\there", "control characters"),
        ("nul\x00", "control characters"),
    ],
)
def test_project_create_refuses_a_bad_name(name: object, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ProjectCreate(name=name, owner_id=uuid.uuid4())
    [error] = caught.value.errors()
    assert error["loc"] == ("name",)
    assert why in error["msg"]
    assert "must be 1-200 characters" in error["msg"]


def test_project_create_forbids_unknown_fields_and_needs_a_uuid_owner() -> None:
    with pytest.raises(ValidationError) as caught:
        ProjectCreate.model_validate({"name": "x", "owner_id": "nope", "id": str(uuid.uuid4())})
    assert {e["loc"] for e in caught.value.errors()} == {("owner_id",), ("id",)}


def test_get_project_invisible_is_not_found(session: Session, world: World) -> None:
    for user in (world.outsider, world.b.members["owner"]):
        with pytest.raises(NotFound) as caught, as_user(session, user):
            repo.get_project(session, world.a.project)
        assert str(caught.value) == (
            f"project_id: {world.a.project} is not a project visible to this user"
        )
    with pytest.raises(ValidationFailed) as refused, as_user(session, world.outsider):
        repo.get_project(session, str(world.a.project))  # type: ignore[arg-type]
    assert refused.value.field == "project_id"


def test_list_projects_shows_a_members_projects_and_all_to_admin(
    session: Session, world: World
) -> None:
    viewer = world.a.members["viewer"]
    extra = new_project(session, world.a.members["owner"], "zz extra")
    with as_user(session, viewer):
        assert [p.id for p in repo.list_projects(session).items] == [world.a.project]
    with as_user(session, world.outsider):
        assert repo.list_projects(session).items == []
    with as_admin(session):
        seen = {p.id for p in repo.list_projects(session, limit=500).items}
    assert {world.a.project, world.b.project, extra.id} <= seen


def test_list_projects_pages_by_name_then_id(session: Session) -> None:
    user = uuid.uuid4()
    names = ["delta", "alpha", "charlie", "alpha", "bravo"]
    created = [new_project(session, user, name) for name in names]
    expected = [p.id for p in sorted(created, key=lambda p: (p.name, str(p.id)))]
    seen: list[uuid.UUID] = []
    cursor = None
    with as_user(session, user):
        for _ in range(10):
            page = repo.list_projects(session, limit=2, cursor=cursor)
            seen.extend(p.id for p in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    # PostgreSQL's uuid order is byte order, which str() of the uuid preserves.
    assert seen == expected
    with as_user(session, user):
        with pytest.raises(ValidationFailed) as bad_cursor:
            repo.list_projects(session, cursor="garbage")
        assert bad_cursor.value.field == "cursor"
        with pytest.raises(ValidationFailed) as bad_limit:
            repo.list_projects(session, limit=0)
        assert bad_limit.value.field == "limit"


# --- rename / delete ----------------------------------------------------------------


def test_owner_renames_others_may_not(session: Session, world: World) -> None:
    with as_user(session, world.a.members["owner"]):
        renamed = repo.rename_project(session, world.a.project, "Renamed")
    assert renamed.name == "Renamed" == name_of(session, world.a.project)
    with pytest.raises(PermissionDenied) as denied, as_user(session, world.a.members["editor"]):
        repo.rename_project(session, world.a.project, "Editor was here")
    assert "owner role required" in str(denied.value)
    assert_library_sentence(denied.value)
    with pytest.raises(NotFound), as_user(session, world.b.members["owner"]):
        repo.rename_project(session, world.a.project, "Foreign")
    with pytest.raises(ValidationFailed) as blank, as_user(session, world.a.members["owner"]):
        repo.rename_project(session, world.a.project, " ")
    assert blank.value.field == "name"
    assert name_of(session, world.a.project) == "Renamed"


def test_owner_deletes_a_project_and_its_memberships_go_with_it(
    session: Session, world: World
) -> None:
    with pytest.raises(PermissionDenied), as_user(session, world.a.members["viewer"]):
        repo.delete_project(session, world.a.project)
    with pytest.raises(NotFound), as_user(session, world.outsider):
        repo.delete_project(session, world.a.project)
    with as_user(session, world.a.members["owner"]):
        repo.delete_project(session, world.a.project)
    # What a commit checks: the cascade removed the last owner of a project that is gone.
    session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
    assert name_of(session, world.a.project) is None
    assert members_of(session, world.a.project) == {}


# --- members ------------------------------------------------------------------------


def test_owner_adds_a_member(session: Session, world: World) -> None:
    newcomer = uuid.uuid4()
    with as_user(session, world.a.members["owner"]):
        member = repo.add_member(session, world.a.project, newcomer, "editor")
    assert (member.project_id, member.user_id, member.role) == (
        world.a.project,
        newcomer,
        MemberRole.EDITOR,
    )
    assert members_of(session, world.a.project)[newcomer] == "editor"


def test_add_member_refusals(session: Session, world: World) -> None:
    a = world.a
    newcomer = uuid.uuid4()
    before = members_of(session, a.project)
    with pytest.raises(PermissionDenied) as denied, as_user(session, a.members["editor"]):
        repo.add_member(session, a.project, newcomer, MemberRole.VIEWER)
    assert_library_sentence(denied.value)
    with pytest.raises(NotFound), as_user(session, world.b.members["owner"]):
        repo.add_member(session, a.project, newcomer, MemberRole.VIEWER)
    with pytest.raises(ValidationFailed) as bad_role, as_user(session, a.members["owner"]):
        repo.add_member(session, a.project, newcomer, "admin")
    assert bad_role.value.field == "role"
    assert "'admin' is not allowed (viewer, editor, owner)" in str(bad_role.value)
    with pytest.raises(ConstraintViolation) as duplicate, as_user(session, a.members["owner"]):
        repo.add_member(session, a.project, a.members["viewer"], MemberRole.EDITOR)
    assert "is already a member" in str(duplicate.value)
    with pytest.raises(PermissionDenied), as_user(session, a.members["owner"]):
        repo.add_member(session, a.project, a.members["owner"], MemberRole.VIEWER)
    assert members_of(session, a.project) == before


def test_admin_adds_a_member_to_any_project(session: Session, world: World) -> None:
    newcomer = uuid.uuid4()
    with as_admin(session):
        repo.add_member(session, world.b.project, newcomer, MemberRole.OWNER)
    assert members_of(session, world.b.project)[newcomer] == "owner"


def test_owner_changes_a_role_but_never_its_own(session: Session, world: World) -> None:
    a = world.a
    with as_user(session, a.members["owner"]):
        member = repo.change_member_role(session, a.project, a.members["viewer"], "owner")
    assert member.role is MemberRole.OWNER
    with pytest.raises(PermissionDenied) as own, as_user(session, a.members["owner"]):
        repo.change_member_role(session, a.project, a.members["owner"], MemberRole.VIEWER)
    assert "cannot change its own role" in str(own.value)
    with pytest.raises(NotFound) as missing, as_user(session, a.members["owner"]):
        repo.change_member_role(session, a.project, world.outsider, MemberRole.VIEWER)
    assert str(missing.value) == f"user_id: {world.outsider} is not a member of project {a.project}"
    with pytest.raises(PermissionDenied), as_user(session, a.members["editor"]):
        repo.change_member_role(session, a.project, a.members["viewer"], MemberRole.VIEWER)
    assert members_of(session, a.project)[a.members["owner"]] == "owner"


def test_demoting_the_last_owner_raises_last_owner(session: Session, world: World) -> None:
    a = world.a
    with pytest.raises(LastOwner) as caught, as_admin(session):
        repo.change_member_role(session, a.project, a.members["owner"], MemberRole.EDITOR)
    assert str(caught.value) == (
        f"project_id: {a.project} would have no owner left; make another member owner "
        "first, or delete the project"
    )
    assert members_of(session, a.project)[a.members["owner"]] == "owner"
    # With a second owner, the first may be demoted.
    with as_admin(session):
        repo.change_member_role(session, a.project, a.members["editor"], MemberRole.OWNER)
        repo.change_member_role(session, a.project, a.members["owner"], MemberRole.VIEWER)
    session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
    assert members_of(session, a.project)[a.members["owner"]] == "viewer"


def test_last_owner_keeps_the_callers_transaction_usable(session: Session, world: World) -> None:
    a = world.a
    with as_user(session, a.members["owner"]):
        repo.rename_project(session, a.project, "kept")
        with pytest.raises(LastOwner):
            repo.remove_member(session, a.project, a.members["owner"])
        assert repo.get_project(session, a.project).name == "kept"
    assert members_of(session, a.project)[a.members["owner"]] == "owner"


def test_owner_removes_members_and_may_leave_if_another_owner_remains(
    session: Session, world: World
) -> None:
    a = world.a
    owner = a.members["owner"]
    with as_user(session, owner):
        repo.remove_member(session, a.project, a.members["viewer"])
        repo.change_member_role(session, a.project, a.members["editor"], MemberRole.OWNER)
        repo.remove_member(session, a.project, owner)
    session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
    assert members_of(session, a.project) == {a.members["editor"]: "owner"}


def test_remove_member_refusals(session: Session, world: World) -> None:
    a = world.a
    before = members_of(session, a.project)
    with pytest.raises(PermissionDenied) as denied, as_user(session, a.members["editor"]):
        repo.remove_member(session, a.project, a.members["viewer"])
    assert "owner role required" in str(denied.value)
    with pytest.raises(NotFound), as_user(session, world.b.members["owner"]):
        repo.remove_member(session, a.project, a.members["viewer"])
    with pytest.raises(NotFound), as_user(session, world.outsider):
        repo.remove_member(session, a.project, world.outsider)
    with pytest.raises(NotFound) as missing, as_user(session, a.members["owner"]):
        repo.remove_member(session, a.project, world.outsider)
    assert "is not a member" in str(missing.value)
    assert members_of(session, a.project) == before


def test_a_member_may_leave(session: Session, world: World) -> None:
    a = world.a
    with as_user(session, a.members["viewer"]):
        repo.remove_member(session, a.project, a.members["viewer"])
    assert a.members["viewer"] not in members_of(session, a.project)


def test_my_role_and_list_members(session: Session, world: World) -> None:
    a = world.a
    for role, user in a.members.items():
        with as_user(session, user):
            assert repo.my_role(session, a.project) is MemberRole(role)
            listed = {m.user_id: m.role.value for m in repo.list_members(session, a.project)}
        assert listed == {u: r for r, u in a.members.items()}
    with as_user(session, world.outsider):
        assert repo.my_role(session, a.project) is None
        with pytest.raises(NotFound):
            repo.list_members(session, a.project)
    with as_admin(session):
        assert repo.my_role(session, a.project) is None
        assert len(repo.list_members(session, a.project)) == 3


# --- the rule in the database: raw SQL cannot break it ------------------------------


def test_raw_sql_cannot_remove_the_last_owner(session: Session, world: World) -> None:
    a = world.a
    with pytest.raises(LastOwner), as_admin(session):
        session.execute(
            text("DELETE FROM project_members WHERE project_id = :p AND role = 'owner'"),
            {"p": a.project},
        )
        session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))


def test_raw_sql_as_the_table_owner_cannot_either(session: Session, world: World) -> None:
    """The superuser bypasses RLS, not triggers."""
    a = world.a
    with pytest.raises(IntegrityError) as caught, session.begin_nested():
        session.execute(
            text("UPDATE project_members SET role = 'viewer' WHERE project_id = :p"),
            {"p": a.project},
        )
        session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
    orig = caught.value.orig
    assert isinstance(orig, psycopg.Error)
    assert orig.diag.constraint_name == "project_members_keep_an_owner"


def test_swapping_owners_in_one_transaction_is_allowed(session: Session, world: World) -> None:
    a = world.a
    with session.begin_nested():
        session.execute(
            text("UPDATE project_members SET role = 'viewer' WHERE user_id = :u"),
            {"u": a.members["owner"]},
        )
        session.execute(
            text("UPDATE project_members SET role = 'owner' WHERE user_id = :u"),
            {"u": a.members["viewer"]},
        )
        session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
    assert members_of(session, a.project)[a.members["viewer"]] == "owner"


def test_deleting_a_project_by_raw_sql_cascades(session: Session, world: World) -> None:
    with session.begin_nested():
        session.execute(text("DELETE FROM projects WHERE id = :p"), {"p": world.a.project})
        session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
    assert members_of(session, world.a.project) == {}


def test_committed_last_owner_removal_fails_at_commit(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    owner = uuid.uuid4()
    with sessions() as session:
        project = new_project(session, owner)
    try:
        with pytest.raises(LastOwner), sessions() as session, as_admin(session):
            session.execute(
                text("DELETE FROM project_members WHERE project_id = :p"), {"p": project.id}
            )
        with sessions() as session, as_user(session, owner):
            assert repo.my_role(session, project.id) is MemberRole.OWNER
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM projects WHERE id = :p"), {"p": project.id})


def test_two_owners_demoting_each_other_concurrently_leave_one(engine: Engine) -> None:
    """Without the trigger's per-project lock each would see the other still an owner."""
    sessions = make_session_factory(engine)
    first, second = uuid.uuid4(), uuid.uuid4()
    with sessions() as session:
        project = new_project(session, first)
        with as_admin(session):
            repo.add_member(session, project.id, second, MemberRole.OWNER)
    outcome: dict[str, BaseException | None] = {}
    checked = threading.Event()

    def demote(demoter: uuid.UUID, target: uuid.UUID, key: str, hold: bool) -> None:
        try:
            with sessions() as session, as_user(session, demoter):
                repo.change_member_role(session, project.id, target, MemberRole.VIEWER)
                checked.set()
                if hold:  # keep the transaction (and its lock) open for the other one
                    threading.Event().wait(0.5)
            outcome[key] = None
        except BaseException as exc:
            outcome[key] = exc

    try:
        holder = threading.Thread(target=demote, args=(first, second, "first", True))
        holder.start()
        assert checked.wait(10)
        demote(second, first, "second", False)
        holder.join(10)
        assert outcome["first"] is None
        assert isinstance(outcome["second"], LastOwner)
        with engine.connect() as conn:
            roles = conn.execute(
                text("SELECT user_id, role FROM project_members WHERE project_id = :p"),
                {"p": project.id},
            ).all()
        assert dict(roles) == {first: "owner", second: "viewer"}
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM projects WHERE id = :p"), {"p": project.id})


def test_an_advisory_lock_held_by_another_tenant_does_not_block_owner_changes(
    engine: Engine, committed_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_advisory_lock is executable by PUBLIC: the last-owner check must not depend on
    a lock key any request can take first (it locks the project row instead)."""
    a, b = committed_world.a, committed_world.b
    monkeypatch.setenv("SKILLMEAT_LOCK_TIMEOUT_MS", "1000")
    sessions = make_session_factory(engine)
    with engine.connect() as attacker:
        with tenant_scope(Session(bind=attacker), user_id=a.members["owner"]) as s:
            for key in ("skillmeat.project_owners", "project_owners", str(b.project)):
                s.execute(
                    text("SELECT pg_advisory_lock(hashtext(:k), hashtext(:p))"),
                    {"k": key, "p": str(b.project)},
                )
        heir = uuid.uuid4()
        with sessions() as session, tenant_scope(session, user_id=b.members["owner"]):
            repo.add_member(session, b.project, heir, MemberRole.OWNER)
        with sessions() as session, tenant_scope(session, user_id=heir):
            changed = repo.change_member_role(
                session, b.project, b.members["owner"], MemberRole.EDITOR
            )
        assert changed.role is MemberRole.EDITOR
        attacker.execute(text("SELECT pg_advisory_unlock_all()"))
