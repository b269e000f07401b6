"""Source tokens at rest: AES-256-GCM in the backend, ciphertext only in the database,
readable by the worker alone (docs/security.md, "Tokens")."""

import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from skillmeat import cli
from skillmeat.core import crypto
from skillmeat.core.database import make_engine, make_session_factory, tenant_scope
from skillmeat.core.errors import (
    ConfigurationError,
    NotFound,
    PermissionDenied,
    ScopeError,
    TokenDecryptionFailed,
    TokenKeyUnknown,
    ValidationFailed,
)
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.repositories import scans
from skillmeat.core.repositories.tokens import tokens_to_rotate
from skillmeat.core.schemas.scans import ClaimedScan
from tests.login_roles import MEMBER_POOL, WORKER_POOL, login_role
from tests.rls_world import World, build_world

# Distinctive plaintexts: any of them found anywhere is a leak.
TOKEN = "ghp_Plaintext0Leak0Canary0A1b2C3d4E5f6G7h8"
OTHER_TOKEN = "github_pat_11ZZcanary_second_token_value"


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Two fresh key entries; k1 configured."""
    entries = {kid: crypto.generate_key_entry(kid) for kid in ("k1", "k2", "k0")}
    monkeypatch.setenv(crypto.KEYS_ENV, entries["k1"])
    return entries


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


def stored(session: Session, source_id: uuid.UUID) -> Any:
    return session.execute(
        text("SELECT * FROM marketplace_source_tokens WHERE source_id = :s"), {"s": source_id}
    ).one_or_none()


def claim(session: Session, source_id: uuid.UUID) -> ClaimedScan:
    with tenant_scope(session, worker=True):
        session.execute(
            text("INSERT INTO marketplace_scans (source_id) VALUES (:s) ON CONFLICT DO NOTHING"),
            {"s": source_id},
        )
        claimed = [c for c in scans.claim_scans(session, worker="w", limit=50)]
    [mine] = [c for c in claimed if c.source_id == source_id]
    return mine


# --- the crypto module ------------------------------------------------------------


def test_seal_open_round_trip_with_a_fresh_nonce_each_time(keys: dict[str, str]) -> None:
    keyring = crypto.required_keyring()
    source = uuid.uuid4()
    first, second = (keyring.seal(source, SecretStr(TOKEN)) for _ in range(2))
    assert first.key_id == second.key_id == "k1"
    assert len(first.nonce) == 12 and first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    assert TOKEN.encode() not in first.ciphertext
    assert keyring.open(source, first).get_secret_value() == TOKEN


def test_aad_binds_the_ciphertext_to_its_source_and_key_id(keys: dict[str, str]) -> None:
    keyring = crypto.parse_keys(f"{keys['k1']},{keys['k2']}")
    source, other = uuid.uuid4(), uuid.uuid4()
    sealed = keyring.seal(source, SecretStr(TOKEN))
    with pytest.raises(TokenDecryptionFailed, match=str(other)):
        keyring.open(other, sealed)  # copied to another source's row
    relabelled = crypto.SealedToken(key_id="k2", nonce=sealed.nonce, ciphertext=sealed.ciphertext)
    with pytest.raises(TokenDecryptionFailed):
        keyring.open(source, relabelled)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(TokenDecryptionFailed):
        keyring.open(source, crypto.SealedToken("k1", sealed.nonce, flipped))


def test_wrong_and_unknown_key_ids(keys: dict[str, str]) -> None:
    source = uuid.uuid4()
    sealed = crypto.parse_keys(keys["k1"]).seal(source, SecretStr(TOKEN))
    # Another key under the same id: the tag does not verify.
    impostor = crypto.parse_keys("k1:" + keys["k2"].split(":", 1)[1])
    with pytest.raises(TokenDecryptionFailed, match="does not decrypt"):
        impostor.open(source, sealed)
    with pytest.raises(TokenKeyUnknown, match=r"'k1'.*not in SKILLMEAT_TOKEN_KEYS"):
        crypto.parse_keys(keys["k2"]).open(source, sealed)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("k1", "not '<key id>:<base64 key>'"),
        ("bad id!:AAAA", "not '<key id>:<base64 key>'"),
        ("k1:%%%%", "not base64"),
        ("k1:" + "A" * 43 + "=", "has 32 bytes"),  # fine length
        ("k1:QUJD", "has 3 bytes"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_them(value: str, says: str) -> None:
    if says == "has 32 bytes":
        assert crypto.parse_keys(value).key_ids == ["k1"]
        return
    with pytest.raises(ConfigurationError, match=says) as refused:
        crypto.parse_keys(value)
    secret_part = value.partition(":")[2]
    assert not secret_part or secret_part not in str(refused.value)


def test_duplicate_key_ids_and_no_keys_are_refused(
    keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="listed twice"):
        crypto.parse_keys(f"{keys['k1']} {keys['k1']}")
    monkeypatch.delenv(crypto.KEYS_ENV)
    with pytest.raises(ConfigurationError, match="SKILLMEAT_TOKEN_KEYS is not set"):
        crypto.required_keyring()


# --- set, clear, has_token ----------------------------------------------------------


def test_editor_sets_replaces_and_clears_a_token(
    session: Session, world: World, keys: dict[str, str]
) -> None:
    src = world.a.source
    with tenant_scope(session, user_id=world.a.members["editor"]):
        assert repo.get_source(session, src).has_token is False
        repo.set_source_token(session, src, TOKEN)
    first = stored(session, src)
    with tenant_scope(session, user_id=world.a.members["editor"]):
        repo.set_source_token(session, src, SecretStr(OTHER_TOKEN))  # replaces
        assert repo.get_source(session, src).has_token is True
        [listed] = [s for s in repo.list_sources(session).items if s.id == src]
        assert listed.has_token is True
    second = stored(session, src)
    assert first.nonce != second.nonce and second.key_id == "k1"
    assert claim(session, src).token == SecretStr(OTHER_TOKEN)
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        assert repo.get_source(session, src).has_token is True
    with pytest.raises(PermissionDenied), tenant_scope(session, user_id=world.a.members["viewer"]):
        repo.set_source_token(session, src, TOKEN)
    with pytest.raises(PermissionDenied), tenant_scope(session, user_id=world.a.members["viewer"]):
        repo.clear_source_token(session, src)
    with pytest.raises(NotFound), tenant_scope(session, user_id=world.b.members["owner"]):
        repo.set_source_token(session, src, TOKEN)
    with tenant_scope(session, user_id=world.a.members["owner"]):
        repo.clear_source_token(session, src)
        repo.clear_source_token(session, src)  # nothing left: a no-op
        assert repo.get_source(session, src).has_token is False
    assert stored(session, src) is None


def test_without_keys_nothing_is_stored(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(crypto.KEYS_ENV, raising=False)
    with (
        pytest.raises(ConfigurationError, match="SKILLMEAT_TOKEN_KEYS"),
        tenant_scope(session, user_id=world.a.members["editor"]),
    ):
        repo.set_source_token(session, world.a.source, TOKEN)
    assert stored(session, world.a.source) is None


@pytest.mark.parametrize("bad", ["", "   ", "two words", "ghp_x\n", "a" * 1025, 42, None])
def test_bad_tokens_are_refused_without_echoing_them(
    session: Session, world: World, keys: dict[str, str], bad: Any
) -> None:
    with (
        pytest.raises(ValidationFailed, match=r"^token: ") as refused,
        tenant_scope(session, user_id=world.a.members["editor"]),
    ):
        repo.set_source_token(session, world.a.source, bad)
    if isinstance(bad, str) and bad.strip():
        assert bad.strip() not in str(refused.value) and bad.strip() not in repr(refused.value)
        assert bad.strip() not in repr(refused.value.value)


def test_the_worker_cannot_set_tokens(session: Session, world: World, keys: dict[str, str]) -> None:
    with pytest.raises(ScopeError), tenant_scope(session, worker=True):
        repo.set_source_token(session, world.a.source, TOKEN)


# --- the worker's claim ---------------------------------------------------------------


def test_claim_decrypts_the_token_and_unknown_keys_give_none(
    session: Session,
    world: World,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = world.a.source, world.b.source
    with tenant_scope(session, user_id=world.a.members["editor"]):
        repo.set_source_token(session, a, TOKEN)
    assert claim(session, b).token is None  # no token stored
    claimed = claim(session, a)
    assert isinstance(claimed.token, SecretStr) and claimed.token.get_secret_value() == TOKEN
    # The ciphertext copied onto another source's row does not decrypt there.
    session.execute(
        text(
            "INSERT INTO marketplace_source_tokens (source_id, key_id, nonce, ciphertext) "
            "SELECT :b, key_id, nonce, ciphertext FROM marketplace_source_tokens "
            "WHERE source_id = :a"
        ),
        {"a": a, "b": b},
    )
    with caplog.at_level(logging.INFO):
        session.execute(
            text(
                "UPDATE marketplace_scans SET state = 'succeeded', lease_token = NULL, "
                "lease_expires_at = NULL, finished_at = now() WHERE source_id = :b"
            ),
            {"b": b},
        )
        assert claim(session, b).token is None
        monkeypatch.setenv(crypto.KEYS_ENV, keys["k2"])  # k1 removed too early
        session.execute(
            text(
                "UPDATE marketplace_scans SET state = 'succeeded', lease_token = NULL, "
                "lease_expires_at = NULL, finished_at = now() WHERE source_id = :a"
            ),
            {"a": a},
        )
        assert claim(session, a).token is None
    logged = [r.getMessage() for r in caplog.records if r.name == "skillmeat.tokens"]
    assert any(str(b) in m and "does not decrypt" in m for m in logged), logged
    assert any(str(a) in m and "not in SKILLMEAT_TOKEN_KEYS" in m for m in logged), logged
    assert all(TOKEN not in m for m in logged)


def test_secret_hygiene_repr_str_logs_and_exceptions(
    session: Session, world: World, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    src = world.a.source
    with caplog.at_level(logging.DEBUG):
        with tenant_scope(session, user_id=world.a.members["editor"]):
            repo.set_source_token(session, src, TOKEN)
        claimed = claim(session, src)
        logging.getLogger("skillmeat.test").info("claimed %s %r", claimed, claimed)
        with tenant_scope(session, admin=True):
            repo.rotate_token_keys(session)
    keyring = crypto.required_keyring()
    sealed = keyring.seal(src, SecretStr(TOKEN))
    failures: list[BaseException] = []
    for ring, source_id in ((keyring, uuid.uuid4()), (crypto.parse_keys(keys["k2"]), src)):
        try:
            ring.open(source_id, sealed)
        except TokenDecryptionFailed as exc:
            failures.append(exc)
    secret_key = keys["k1"].split(":", 1)[1]
    shown = [
        repr(claimed),
        str(claimed),
        str(claimed.model_dump()),
        claimed.model_dump_json(),
        repr(keyring),
        repr(sealed),
        *(f"{exc!s} {exc!r}" for exc in failures),
        caplog.text,
    ]
    assert len(failures) == 2
    for text_ in shown:
        assert TOKEN not in text_ and secret_key not in text_
    assert claimed.token is not None and claimed.token.get_secret_value() == TOKEN


# --- rotation -------------------------------------------------------------------------


def test_rotation_end_to_end_two_keys_then_the_old_one_removed(
    session: Session, world: World, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = [
        session.execute(
            text(
                "INSERT INTO marketplace_sources (project_id, repo_url) "
                "VALUES (:p, :u) RETURNING id"
            ),
            {"p": world.a.project, "u": f"https://github.com/rot/r{i}"},
        ).scalar_one()
        for i in range(5)
    ]
    sources = [world.a.source, *extra]
    monkeypatch.setenv(crypto.KEYS_ENV, keys["k0"])
    with tenant_scope(session, user_id=world.a.members["editor"]):
        repo.set_source_token(session, extra[0], "token-under-k0")  # k0 will be lost
    monkeypatch.setenv(crypto.KEYS_ENV, keys["k1"])
    with tenant_scope(session, user_id=world.a.members["editor"]):
        for i, src in enumerate(sources[2:], start=2):
            repo.set_source_token(session, src, f"token-{i}")
        repo.set_source_token(session, sources[0], "token-0")
    # Step 1: a new first key; the old one still decrypts.
    monkeypatch.setenv(crypto.KEYS_ENV, f"{keys['k2']},{keys['k1']}")
    with tenant_scope(session, worker=True):
        assert tokens_to_rotate(session) == 6
        report = repo.rotate_token_keys(session, batch_size=2)
    assert (report.primary_key_id, report.rotated) == ("k2", 5)
    assert report.unknown_key == [extra[0]] and report.undecryptable == []
    with tenant_scope(session, admin=True):
        again = repo.rotate_token_keys(session)  # idempotent
    assert (again.rotated, again.unknown_key) == (0, [extra[0]])
    key_ids: dict[uuid.UUID, str] = dict(
        session.execute(text("SELECT source_id, key_id FROM marketplace_source_tokens")).all()
    )
    assert {key_ids[s] for s in sources if s != extra[0]} == {"k2"}
    assert key_ids[extra[0]] == "k0"  # left alone
    # Step 2: the old key removed; every rotated token still decrypts.
    monkeypatch.setenv(crypto.KEYS_ENV, keys["k2"])
    for i, src in enumerate(sources):
        token = claim(session, src).token
        if src == extra[0]:
            assert token is None
        else:
            assert token is not None and token.get_secret_value() == f"token-{i}"
    with pytest.raises(ScopeError), tenant_scope(session, user_id=world.a.members["owner"]):
        repo.rotate_token_keys(session)
    with pytest.raises(ValidationFailed, match="batch_size"), tenant_scope(session, admin=True):
        repo.rotate_token_keys(session, batch_size=0)


# --- as the real roles; what a dump or the app role can read ----------------------


@pytest.fixture
def pools(engine: Engine, database_url: URL) -> Iterator[dict[str, sessionmaker[Session]]]:
    with (
        login_role(engine, database_url, MEMBER_POOL) as member,
        login_role(engine, database_url, WORKER_POOL) as worker,
    ):
        engines = {"member": make_engine(member), "worker": make_engine(worker)}
        try:
            yield {name: make_session_factory(e) for name, e in engines.items()}
        finally:
            for e in engines.values():
                e.dispose()


APP_ATTEMPTS = {
    "read everything": "SELECT * FROM marketplace_source_tokens",
    "read the ciphertext": "SELECT ciphertext FROM marketplace_source_tokens",
    "read the key id": "SELECT key_id FROM marketplace_source_tokens",
    "filter on it": "SELECT source_id FROM marketplace_source_tokens WHERE ciphertext IS NOT NULL",
    "copy it over": "UPDATE marketplace_source_tokens SET ciphertext = ciphertext",
    "return it": "DELETE FROM marketplace_source_tokens RETURNING ciphertext",
    "upsert reading excluded": (
        "INSERT INTO marketplace_source_tokens (source_id, key_id, nonce, ciphertext) "
        "SELECT source_id, 'k', '\\x000000000000000000000000', '\\x00' FROM "
        "marketplace_source_tokens ON CONFLICT (source_id) DO UPDATE "
        "SET ciphertext = EXCLUDED.ciphertext"
    ),
}


def test_as_the_real_roles_members_write_and_never_read_tokens(
    engine: Engine,
    pools: dict[str, sessionmaker[Session]],
    committed_world: World,
    keys: dict[str, str],
    database_url: URL,
) -> None:
    world = committed_world
    src = world.a.source
    editor = world.a.members["editor"]
    member = pools["member"]
    with member() as s, tenant_scope(s, user_id=editor):
        repo.set_source_token(s, src, OTHER_TOKEN)
    with member() as s, tenant_scope(s, user_id=editor):
        repo.set_source_token(s, src, TOKEN)  # the update path of the upsert
        assert repo.get_source(s, src).has_token is True
    with member() as s, tenant_scope(s, user_id=world.a.members["viewer"]):
        assert repo.get_source(s, src).has_token is True
    with member() as s, tenant_scope(s, user_id=world.b.members["owner"]):
        assert s.execute(text("SELECT count(*) FROM marketplace_source_tokens")).scalar() == 0
    refused: dict[str, str] = {}
    for name, sql in APP_ATTEMPTS.items():
        with member() as s:
            try:
                with tenant_scope(s, user_id=world.a.members["owner"]):
                    s.execute(text(sql))
                    refused[name] = "ran"
            except PermissionDenied:
                refused[name] = "denied"
    assert refused == dict.fromkeys(APP_ATTEMPTS, "denied")

    # Everything the app role may read, as the owner of the project: no plaintext.
    with member() as s, tenant_scope(s, user_id=world.a.members["owner"]):
        readable = s.execute(
            text(
                "SELECT c.table_name, array_agg(c.column_name::text) FROM "
                "information_schema.columns c WHERE c.table_schema = 'public' AND "
                "has_column_privilege('skillmeat_app', format('public.%I', c.table_name), "
                "c.column_name, 'SELECT') GROUP BY 1"
            )
        ).all()
        seen = ""
        for table, columns in readable:
            cols = ", ".join(f'"{c}"::text' for c in columns)
            for row in s.execute(text(f'SELECT {cols} FROM public."{table}"')):
                seen += " ".join(str(v) for v in row) + "\n"
    assert "marketplace_source_tokens" in {t for t, _ in readable} and str(src) in seen
    assert TOKEN not in seen and TOKEN.encode().hex() not in seen

    # The worker reads it with its claim.
    with member() as s, tenant_scope(s, user_id=editor):
        scans.request_scan(s, src)
    with pools["worker"]() as s, tenant_scope(s, worker=True):
        claimed = [c for c in scans.claim_scans(s, worker="pool", limit=100) if c.source_id == src]
    assert claimed[0].token == SecretStr(TOKEN)

    # pg_dump --data-only: ciphertext, never the token.
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "pg_dump is needed for this test"
    env = os.environ | {"PGPASSWORD": database_url.password or ""}
    dump = subprocess.run(
        [
            pg_dump,
            "--data-only",
            "-h",
            database_url.host or "127.0.0.1",
            "-p",
            str(database_url.port or 5432),
            "-U",
            database_url.username or "postgres",
            database_url.database or "",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    assert "marketplace_source_tokens" in dump and str(src) in dump
    assert TOKEN not in dump and TOKEN.encode().hex() not in dump
    assert OTHER_TOKEN not in dump


def test_cli_rotates_resumably_and_reports_unknown_keys(
    engine: Engine,
    committed_world: World,
    keys: dict[str, str],
    database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = committed_world
    sessions = make_session_factory(engine)
    with sessions() as s, tenant_scope(s, user_id=world.a.members["editor"]):
        repo.set_source_token(s, world.a.source, TOKEN)
    monkeypatch.setenv(crypto.KEYS_ENV, keys["k0"])
    with sessions() as s, tenant_scope(s, user_id=world.b.members["editor"]):
        repo.set_source_token(s, world.b.source, OTHER_TOKEN)
    url = database_url.render_as_string(hide_password=False)
    monkeypatch.setenv(crypto.KEYS_ENV, f"{keys['k2']},{keys['k1']}")
    assert cli.main(["rotate-token-keys", "--url", url, "--batch-size", "1"]) == 2
    out = capsys.readouterr().out
    assert "1 token(s) re-encrypted under key 'k2'; 1 left alone" in out
    assert f"source {world.b.source}: key id not in SKILLMEAT_TOKEN_KEYS" in out
    assert cli.main(["rotate-token-keys", "--url", url]) == 2  # idempotent
    assert "0 token(s) re-encrypted" in capsys.readouterr().out
    monkeypatch.delenv(crypto.KEYS_ENV)
    assert cli.main(["rotate-token-keys", "--url", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("skillmeat-db rotate-token-keys: SKILLMEAT_TOKEN")
