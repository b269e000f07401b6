"""The cached settings: a changed settings object does not reach later scopes."""

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from skillmeat.core.database import tenant_scope
from skillmeat.core.database.settings import current_settings
from tests.rls_world import build_world


def test_a_changed_settings_object_does_not_reach_later_scopes(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = build_world(session.connection())
    monkeypatch.setenv("SKILLMEAT_STATEMENT_TIMEOUT_MS", "4321")
    # one request's code (a bug, or a test helper) adjusts "its" settings
    current_settings().statement_timeout_ms = 0
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        got = session.execute(text("SELECT current_setting('statement_timeout')")).scalar_one()
    assert got == "4321ms"
