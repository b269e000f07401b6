"""Identities SQL cannot forge: HMAC proofs verified by the policies' helper.

The forging cases run as skillmeat_app with raw set_config, as an injected
statement would: each must read nothing, write nothing and raise nothing on reads.
"""

import base64
import datetime as dt
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from skillmeat.core.database import identity_settings, make_engine, make_session_factory
from skillmeat.core.database.identity import (
    KEY_ENV,
    PROOF_SETTING,
    USER_SETTING,
    IdentityKey,
    configured_key,
    install_configured_key,
    install_key,
    parse_key,
)
from skillmeat.core.database.provision import throwaway_database, upgrade_to_head
from skillmeat.core.database.tenant import tenant_scope
from skillmeat.core.errors import ConfigurationError, IdentityNotConfigured, ScopeError
from tests.login_roles import MEMBER_POOL, login_role
from tests.rls_world import World, build_world

TABLES = ["projects", "project_members", "marketplace_sources", "marketplace_catalog_entries"]


@pytest.fixture
def world(connection: Connection) -> World:
    return build_world(connection)


def _key() -> IdentityKey:
    key = configured_key()
    assert key is not None, "conftest sets SKILLMEAT_IDENTITY_KEY"
    return key


# --- the key's text forms -----------------------------------------------------------


def test_key_parses_from_hex_and_both_base64_alphabets() -> None:
    secret = bytes(range(200, 232)) + b"\xfb\xff"
    for form in (
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    ):
        assert parse_key(form).secret == secret, form


@pytest.mark.parametrize("value", ["", "  ", "00" * 31, "not a key!", base64.b64encode(b"x" * 31)])
def test_bad_keys_are_refused_naming_the_variable(value: str | bytes) -> None:
    text_value = value.decode() if isinstance(value, bytes) else value
    with pytest.raises(ConfigurationError, match=KEY_ENV):
        parse_key(text_value)


def test_key_repr_shows_only_its_id() -> None:
    key = IdentityKey.generate()
    assert key.secret.hex() not in repr(key)
    assert key.key_id in repr(key)


def test_identity_settings_need_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigurationError, match=KEY_ENV):
        identity_settings(uuid.uuid4())


def test_identity_settings_name_the_user_and_sign_it() -> None:
    user = uuid.uuid4()
    settings = identity_settings(user)
    assert settings[USER_SETTING] == str(user)
    version, key_id, expires, mac = settings[PROOF_SETTING].split(".")
    assert (version, key_id) == ("v1", _key().key_id)
    assert int(expires) == pytest.approx(dt.datetime.now(dt.UTC).timestamp() + 300, abs=5)
    assert len(mac) == 64


# --- forging, as raw SQL inside a request ---------------------------------------------


def _act(conn: Connection, settings: dict[str, str | None]) -> None:
    conn.execute(text("SELECT set_config('role', 'skillmeat_app', true)"))
    for name, value in settings.items():
        if value is not None:
            conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})


def _visible(conn: Connection) -> dict[str, int]:
    return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def _tamper(proof: str) -> str:
    head, mac = proof.rsplit(".", 1)
    return f"{head}.{'0' if mac[0] != '0' else '1'}{mac[1:]}"


def forgeries(world: World) -> dict[str, dict[str, str | None]]:
    """Settings that claim tenant A's owner without a valid proof for it."""
    victim = world.a.members["owner"]
    mine = identity_settings(world.b.members["viewer"])  # a real proof, for another user
    real = identity_settings(victim)
    expired = identity_settings(victim, ttl=dt.timedelta(seconds=-1))
    other_key = identity_settings(victim, key=IdentityKey.generate())
    _, kid, expires, _ = real[PROOF_SETTING].split(".")
    same_id_other_secret = IdentityKey(key_id=kid, secret=os.urandom(32)).proof(
        victim, int(expires)
    )
    return {
        "plain value": {USER_SETTING: str(victim)},
        "empty proof": {USER_SETTING: str(victim), PROOF_SETTING: ""},
        "tampered mac": {USER_SETTING: str(victim), PROOF_SETTING: _tamper(real[PROOF_SETTING])},
        "other user's proof": {USER_SETTING: str(victim), PROOF_SETTING: mine[PROOF_SETTING]},
        "expired": dict(expired),
        "other key": dict(other_key),
        "known key id, other secret": {
            USER_SETTING: str(victim),
            PROOF_SETTING: same_id_other_secret,
        },
        "longer expiry": {
            USER_SETTING: str(victim),
            PROOF_SETTING: real[PROOF_SETTING].replace(f".{expires}.", f".{int(expires) + 9}."),
        },
        "uppercase id": {USER_SETTING: str(victim).upper(), PROOF_SETTING: real[PROOF_SETTING]},
        "garbage proof": {USER_SETTING: str(victim), PROOF_SETTING: "v1.' OR true --"},
        "huge expiry": {
            USER_SETTING: str(victim),
            PROOF_SETTING: f"v1.{kid}.{'9' * 40}.{'0' * 64}",
        },
    }


FORGERIES = [
    "plain value",
    "empty proof",
    "tampered mac",
    "other user's proof",
    "expired",
    "other key",
    "known key id, other secret",
    "longer expiry",
    "uppercase id",
    "garbage proof",
    "huge expiry",
]


def test_a_valid_proof_acts_for_its_user(connection: Connection, world: World) -> None:
    with connection.begin_nested() as savepoint:
        _act(connection, dict(identity_settings(world.a.members["owner"])))
        assert _visible(connection) == {t: 1 if t != "project_members" else 3 for t in TABLES}
        renamed = connection.execute(
            text("UPDATE projects SET name = 'mine' WHERE id = :p"), {"p": world.a.project}
        )
        assert renamed.rowcount == 1
        savepoint.rollback()


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_identity_reads_and_writes_nothing(
    connection: Connection, world: World, forgery: str
) -> None:
    attacker = uuid.uuid4()
    with connection.begin_nested() as savepoint:
        _act(connection, forgeries(world)[forgery])
        assert _visible(connection) == dict.fromkeys(TABLES, 0)
        renamed = connection.execute(
            text("UPDATE projects SET name = 'taken' WHERE id = :p"), {"p": world.a.project}
        )
        assert renamed.rowcount == 0
        with pytest.raises(DBAPIError) as refused, connection.begin_nested():
            connection.execute(
                text(
                    "INSERT INTO project_members (project_id, user_id, role) "
                    "VALUES (:p, :u, 'owner')"
                ),
                {"p": world.a.project, "u": attacker},
            )
        assert getattr(refused.value.orig, "sqlstate", None) == "42501"
        savepoint.rollback()
    owners = (
        connection.execute(
            text("SELECT user_id FROM project_members WHERE project_id = :p AND role = 'owner'"),
            {"p": world.a.project},
        )
        .scalars()
        .all()
    )
    assert owners == [world.a.members["owner"]]


def test_rotation_accepts_every_installed_key_until_it_is_removed(
    connection: Connection, world: World
) -> None:
    new = IdentityKey.generate()
    user = world.a.members["viewer"]

    def sees(key: IdentityKey) -> int:
        with connection.begin_nested() as savepoint:
            _act(connection, dict(identity_settings(user, key=key)))
            n = connection.execute(text("SELECT count(*) FROM projects")).scalar_one()
            savepoint.rollback()
        return int(n)

    assert (sees(_key()), sees(new)) == (1, 0)
    assert install_key(connection, new) is True
    assert install_key(connection, new) is False  # idempotent
    assert (sees(_key()), sees(new)) == (1, 1)
    connection.execute(
        text("DELETE FROM skillmeat_private.identity_keys WHERE key_id = :k"), {"k": _key().key_id}
    )
    assert (sees(_key()), sees(new)) == (0, 1)


def test_scope_refuses_a_key_the_database_does_not_know(
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    committed_world: World,
    caplog: pytest.LogCaptureFixture,
) -> None:
    unknown = IdentityKey.generate()
    monkeypatch.setenv(KEY_ENV, unknown.secret.hex())
    user = committed_world.a.members["viewer"]
    with (
        caplog.at_level("WARNING", logger="skillmeat.database.scope"),
        make_session_factory(engine)() as session,
        pytest.raises(ScopeError, match="did not accept the identity proof"),
        tenant_scope(session, user_id=user),
    ):
        pass
    assert f"did not verify the proof for {user}" in caplog.text
    assert unknown.secret.hex() not in caplog.text and "v1." not in caplog.text


# --- installing the key, and the development fallback ---------------------------------


@pytest.fixture
def keyless_database(pg_server_url: URL, monkeypatch: pytest.MonkeyPatch) -> Iterator[URL]:
    """A database migrated with no SKILLMEAT_IDENTITY_KEY: upgrade generated one."""
    monkeypatch.delenv(KEY_ENV)
    with throwaway_database(pg_server_url, prefix="skillmeat_keyless") as url:
        said = upgrade_to_head(url)
        assert said is not None and "generated identity key" in said and KEY_ENV in said
        yield url


def test_upgrade_without_a_key_generates_one_a_superuser_can_sign_with(
    keyless_database: URL,
) -> None:
    engine = make_engine(keyless_database, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            world = build_world(conn)
            assert install_configured_key(conn) is None  # keys exist: nothing generated
            stored = conn.execute(text("SELECT count(*) FROM skillmeat_private.identity_keys"))
            assert stored.scalar_one() == 1
        with make_session_factory(engine)() as session:
            with tenant_scope(session, user_id=world.a.members["viewer"]):
                seen = session.execute(text("SELECT id FROM projects")).scalars().all()
            assert seen == [world.a.project]
    finally:
        engine.dispose()


def test_without_a_key_a_non_superuser_backend_is_refused_naming_the_variable(
    keyless_database: URL,
) -> None:
    owner = make_engine(keyless_database, poolclass=NullPool)
    try:
        with owner.begin() as conn:
            world = build_world(conn)
        with login_role(owner, keyless_database, MEMBER_POOL) as url:
            backend = make_engine(url, poolclass=NullPool)
            try:
                with (
                    make_session_factory(backend)() as session,
                    pytest.raises(IdentityNotConfigured, match=KEY_ENV),
                    tenant_scope(session, user_id=world.a.members["viewer"]),
                ):
                    pass
            finally:
                backend.dispose()
    finally:
        owner.dispose()


def test_upgrade_installs_the_configured_key_once(pg_server_url: URL) -> None:
    with throwaway_database(pg_server_url, prefix="skillmeat_keyed") as url:
        said = upgrade_to_head(url)
        assert said == f"installed identity key {_key().key_id} from {KEY_ENV}"
        assert upgrade_to_head(url) is None
        engine = make_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT key_id, secret IS NULL FROM skillmeat_private.identity_keys")
                ).all()
        finally:
            engine.dispose()
        assert [tuple(r) for r in rows] == [
            (_key().key_id, True)
        ]  # a configured key's secret stays out
