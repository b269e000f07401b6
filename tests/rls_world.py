"""Two tenants with members of every role, for the row-level security tests.

Built as the connecting superuser (which bypasses RLS); the tests then act as
skillmeat_app or skillmeat_admin with a transaction-local identity.
"""

import uuid
from dataclasses import dataclass, field

from sqlalchemy import Connection, text


@dataclass
class Tenant:
    project: uuid.UUID
    source: uuid.UUID
    entry: uuid.UUID
    members: dict[str, uuid.UUID] = field(default_factory=dict)


@dataclass
class World:
    a: Tenant
    b: Tenant
    outsider: uuid.UUID


def _insert(conn: Connection, sql: str, **params: object) -> uuid.UUID:
    value = conn.execute(text(sql), params).scalar_one()
    assert isinstance(value, uuid.UUID)
    return value


def add_tenant(conn: Connection, name: str) -> Tenant:
    project = _insert(conn, "INSERT INTO projects (name) VALUES (:n) RETURNING id", n=name)
    source = _insert(
        conn,
        "INSERT INTO marketplace_sources (project_id, repo_url) VALUES (:p, :u) RETURNING id",
        p=project,
        u=f"https://github.com/{name}/catalog",
    )
    entry = _insert(
        conn,
        "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
        "upstream_url, detected_version_sha, confidence_score) VALUES (:s, 'skill', 'skills/x', "
        "'https://github.com/x/y/tree/abc/skills/x', 'abc', 90) RETURNING id",
        s=source,
    )
    tenant = Tenant(project=project, source=source, entry=entry)
    for role in ("viewer", "editor", "owner"):
        user = uuid.uuid4()
        conn.execute(
            text("INSERT INTO project_members (project_id, user_id, role) VALUES (:p, :u, :r)"),
            {"p": project, "u": user, "r": role},
        )
        tenant.members[role] = user
    return tenant


def build_world(conn: Connection) -> World:
    suffix = uuid.uuid4().hex[:8]
    return World(
        a=add_tenant(conn, f"tenant-a-{suffix}"),
        b=add_tenant(conn, f"tenant-b-{suffix}"),
        outsider=uuid.uuid4(),
    )
