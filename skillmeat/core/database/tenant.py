"""Tenant scope: the transaction-local identity that row-level security reads.

A member request runs as role skillmeat_app with `skillmeat.user_id` set; an
admin request runs as skillmeat_admin. Both are set with set_config(..., true),
so they end with the transaction and a pooled connection never carries an
identity into the next request.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from skillmeat.core.database.errors import translated_errors
from skillmeat.core.errors import ScopeError

APP_ROLE = "skillmeat_app"
ADMIN_ROLE = "skillmeat_admin"
USER_SETTING = "skillmeat.user_id"
_SCOPE_KEY = "skillmeat.scope"


@dataclass(frozen=True)
class Scope:
    """Who the current transaction acts for."""

    user_id: uuid.UUID | None
    admin: bool


def current_scope(session: Session) -> Scope:
    """The scope the session is in; ScopeError outside `tenant_scope`."""
    scope = session.info.get(_SCOPE_KEY)
    if not isinstance(scope, Scope):
        raise ScopeError(
            "this call must run inside tenant_scope(session, user_id=...) or "
            "tenant_scope(session, admin=True)"
        )
    return scope


@contextmanager
def tenant_scope(
    session: Session, *, user_id: uuid.UUID | None = None, admin: bool = False
) -> Iterator[Session]:
    """Begin a transaction acting for `user_id` (or as admin); commit on success, else roll back.

    Inside an already open transaction it uses a savepoint and restores the
    previous role and identity on exit.
    """
    if admin == (user_id is not None):
        raise ScopeError(
            "tenant_scope needs exactly one of user_id=<uuid.UUID> (a member request) "
            "or admin=True (an admin request)"
        )
    if user_id is not None and not isinstance(user_id, uuid.UUID):
        raise ScopeError(f"user_id: {user_id!r} is not allowed (must be a uuid.UUID)")
    if _SCOPE_KEY in session.info:
        raise ScopeError("tenant_scope cannot be nested in another tenant_scope on one session")

    role = ADMIN_ROLE if admin else APP_ROLE
    transaction = session.begin_nested() if session.in_transaction() else session.begin()
    with translated_errors(), transaction:
        previous_role, previous_user = session.execute(
            text(
                "SELECT current_setting('role'), current_setting(:setting, true), "
                "set_config('role', :role, true), set_config(:setting, :user_id, true)"
            ),
            {"setting": USER_SETTING, "role": role, "user_id": str(user_id or "")},
        ).one()[:2]
        session.info[_SCOPE_KEY] = Scope(user_id=user_id, admin=admin)
        try:
            yield session
            if session.connection().in_nested_transaction():
                # A savepoint's release keeps SET LOCAL: put the caller's identity back.
                session.execute(
                    text(
                        "SELECT set_config('role', :role, true), set_config(:setting, :user, true)"
                    ),
                    {"role": previous_role, "setting": USER_SETTING, "user": previous_user or ""},
                )
        finally:
            session.info.pop(_SCOPE_KEY, None)
