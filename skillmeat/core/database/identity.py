"""Request identities the database can verify: an HMAC proof over the user id and an expiry.

A member scope sets two transaction-local settings: `skillmeat.user_id` and
`skillmeat.user_proof`. The proof is `v1.<key id>.<expires>.<hmac>`, where the HMAC
(SHA-256) covers `<user id>.<expires>` and is keyed with `SKILLMEAT_IDENTITY_KEY`. The
policies' helper recomputes it from keys kept in `skillmeat_private.identity_keys`,
which no request role can read, so SQL running inside a request (an injection)
cannot act for anybody but the request's own user. A compromised backend process
holds the key and is out of scope (docs/security.md).
"""

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, text

from skillmeat.core.errors import ConfigurationError

KEY_ENV = "SKILLMEAT_IDENTITY_KEY"
USER_SETTING = "skillmeat.user_id"
PROOF_SETTING = "skillmeat.user_proof"
MIN_KEY_BYTES = 32
# Long enough for clock skew between the backend and the database; a scope's proof
# is checked against the transaction's start time, so long transactions keep it.
DEFAULT_TTL = dt.timedelta(minutes=5)
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_BLOCK = 64  # SHA-256 block size: the database stores the key's HMAC pads


@dataclass(frozen=True, repr=False)
class IdentityKey:
    """A key that signs identity proofs; `repr` shows only its id."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:
        return f"IdentityKey(key_id={self.key_id!r})"

    @classmethod
    def from_secret(cls, secret: bytes) -> "IdentityKey":
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigurationError(
                f"{KEY_ENV}: the key has {len(secret)} bytes; at least {MIN_KEY_BYTES} are "
                "required (e.g. the output of `openssl rand -hex 32`)"
            )
        digest = hashlib.sha256(b"skillmeat identity key id\x00" + secret).hexdigest()
        return cls(key_id=digest[:16], secret=secret)

    @classmethod
    def generate(cls) -> "IdentityKey":
        return cls.from_secret(secrets.token_bytes(MIN_KEY_BYTES))

    def pads(self) -> tuple[bytes, bytes]:
        """(key XOR ipad, key XOR opad): what the database needs to compute the HMAC."""
        key = hashlib.sha256(self.secret).digest() if len(self.secret) > _BLOCK else self.secret
        key = key.ljust(_BLOCK, b"\x00")
        return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)

    def proof(self, user_id: uuid.UUID, expires: int) -> str:
        message = f"{user_id}.{expires}".encode()
        mac = hmac.new(self.secret, message, hashlib.sha256).hexdigest()
        return f"v1.{self.key_id}.{expires}.{mac}"


def parse_key(value: str) -> IdentityKey:
    """A key from its text form: hex (64+ digits) or base64 (standard or URL-safe)."""
    raw = value.strip()
    if not raw:
        raise ConfigurationError(f"{KEY_ENV} is empty: set it to 32+ random bytes in hex or base64")
    secret: bytes | None = None
    if _HEX_RE.fullmatch(raw) and len(raw) % 2 == 0:
        secret = bytes.fromhex(raw)
    else:
        standard = raw.replace("-", "+").replace("_", "/")  # URL-safe alphabet too
        try:
            secret = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            secret = None
    if secret is None:
        raise ConfigurationError(
            f"{KEY_ENV}: not hex or base64 (set it to 32+ random bytes, e.g. "
            "`openssl rand -hex 32`)"
        )
    return IdentityKey.from_secret(secret)


def configured_key() -> IdentityKey | None:
    """The key from `SKILLMEAT_IDENTITY_KEY`, or None when it is not set."""
    value = os.environ.get(KEY_ENV)
    return None if value is None or not value.strip() else parse_key(value)


def identity_settings(
    user_id: uuid.UUID, *, key: IdentityKey | None = None, ttl: dt.timedelta = DEFAULT_TTL
) -> dict[str, str]:
    """The transaction-local settings (name -> value) that act for `user_id`.

    Set each with `set_config(name, value, true)` after `SET LOCAL ROLE skillmeat_app`.
    Signed with `key`, else `SKILLMEAT_IDENTITY_KEY`; ConfigurationError without one.
    """
    if not isinstance(user_id, uuid.UUID):
        raise ConfigurationError(f"user_id: {user_id!r} is not allowed (must be a uuid.UUID)")
    signer = key or configured_key()
    if signer is None:
        raise ConfigurationError(
            f"no identity key: set {KEY_ENV} (32+ random bytes, hex or base64) to the key "
            "installed by `skillmeat-db upgrade` (docs/security.md)"
        )
    expires = int(time.time() + ttl.total_seconds())
    return {USER_SETTING: str(user_id), PROOF_SETTING: signer.proof(user_id, expires)}


# --- the database's copy of the keys ------------------------------------------------

_KEYS_TABLE = "skillmeat_private.identity_keys"


def keys_table_exists(conn: Connection) -> bool:
    found = conn.execute(
        text("SELECT pg_catalog.to_regclass(:t) IS NOT NULL"), {"t": _KEYS_TABLE}
    ).scalar_one()
    return bool(found)


def install_key(conn: Connection, key: IdentityKey, *, generated: bool = False) -> bool:
    """Store `key` so the database accepts its proofs; True if it was not there yet.

    Idempotent. A generated key also keeps its secret, so a development connection
    allowed to read the table (a superuser) can sign with it.
    """
    inner, outer = key.pads()
    added = conn.execute(
        text(
            f"INSERT INTO {_KEYS_TABLE} (key_id, inner_pad, outer_pad, secret) "
            "VALUES (:kid, :inner, :outer, :secret) ON CONFLICT (key_id) DO NOTHING "
            "RETURNING key_id"
        ),
        {
            "kid": key.key_id,
            "inner": inner,
            "outer": outer,
            "secret": key.secret if generated else None,
        },
    ).first()
    return added is not None


def install_configured_key(conn: Connection) -> str | None:
    """What `alembic upgrade` and `skillmeat-db upgrade` do after migrating.

    Installs `SKILLMEAT_IDENTITY_KEY`; without it, generates a key when the database
    has none. Returns a sentence for the operator, or None when nothing changed.
    """
    if not keys_table_exists(conn):
        return None
    key = configured_key()
    if key is not None:
        if install_key(conn, key):
            return f"installed identity key {key.key_id} from {KEY_ENV}"
        return None
    if conn.execute(text(f"SELECT count(*) FROM {_KEYS_TABLE}")).scalar_one():
        return None
    generated = IdentityKey.generate()
    install_key(conn, generated, generated=True)
    return (
        f"{KEY_ENV} is not set: generated identity key {generated.key_id} and stored it in the "
        "database (development only: a non-superuser backend needs the key in its environment)"
    )


def stored_generated_key(conn: Connection) -> IdentityKey | None:
    """The generated key, if this connection's user may read it (development superusers)."""
    readable = conn.execute(
        text(
            "SELECT pg_catalog.has_table_privilege(c.oid, 'SELECT') FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'skillmeat_private' AND c.relname = 'identity_keys'"
        )
    ).scalar()
    if not readable:
        return None
    secret = conn.execute(
        text(
            f"SELECT secret FROM {_KEYS_TABLE} WHERE secret IS NOT NULL "
            "ORDER BY created_at DESC, key_id LIMIT 1"
        )
    ).scalar()
    return None if secret is None else IdentityKey.from_secret(bytes(secret))
