"""A source's GitHub token: set, clear, rotate (docs/security.md, "Tokens").

The token is encrypted by `skillmeat.core.crypto` before any SQL runs; these
functions move only ciphertext. Editors write tokens but cannot read them back (the
request roles may SELECT no column of marketplace_source_tokens but source_id); the
worker reads them with its claims (scans.claim_scans) and re-encrypts them under a
new key (rotate_token_keys), as may admin.
"""

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from skillmeat.core import crypto
from skillmeat.core.database.errors import translated_errors
from skillmeat.core.database.tenant import current_scope
from skillmeat.core.errors import (
    NotFound,
    PermissionDenied,
    ScopeError,
    TokenDecryptionFailed,
    TokenKeyUnknown,
    ValidationFailed,
)
from skillmeat.core.models import MarketplaceSource, MarketplaceSourceToken
from skillmeat.core.repositories.common import check_id

log = logging.getLogger("skillmeat.tokens")

Source = MarketplaceSource
SourceToken = MarketplaceSourceToken
MAX_TOKEN_CHARS = 1024
MAX_BATCH = 10_000

# Bind parameters in DO UPDATE, not EXCLUDED.*: reading EXCLUDED.ciphertext would need
# SELECT on ciphertext, which no request role holds. The conflict target needs SELECT
# on source_id only.
UPSERT_SQL = """
INSERT INTO marketplace_source_tokens (source_id, key_id, nonce, ciphertext)
VALUES (:source_id, :key_id, :nonce, :ciphertext)
ON CONFLICT (source_id) DO UPDATE
   SET key_id = :key_id, nonce = :nonce, ciphertext = :ciphertext, updated_at = now()
"""


def set_source_token(session: Session, source_id: uuid.UUID, token: str | SecretStr) -> None:
    """Store (or replace) the source's token, encrypted under the first key of
    SKILLMEAT_TOKEN_KEYS (editor or owner; ConfigurationError when no key is set)."""
    current_scope(session)
    check_id("source_id", source_id)
    secret = _checked_token(token)
    sealed = crypto.required_keyring().seal(source_id, secret)
    with translated_errors():
        _require_visible(session, source_id)
        session.execute(
            text(UPSERT_SQL),
            {
                "source_id": source_id,
                "key_id": sealed.key_id,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
            },
        )


def clear_source_token(session: Session, source_id: uuid.UUID) -> None:
    """Delete the source's token (editor or owner); a source without one is left as it is."""
    current_scope(session)
    check_id("source_id", source_id)
    with translated_errors():
        _require_visible(session, source_id)
        deleted = session.execute(
            text("DELETE FROM marketplace_source_tokens WHERE source_id = :s RETURNING source_id"),
            {"s": source_id},
        ).first()
        if deleted is None and has_token(session, source_id):
            raise PermissionDenied(
                f"permission denied: this user may read source {source_id} but not clear "
                "its token (editor or owner role required)"
            )


def has_token(session: Session, source_id: uuid.UUID) -> bool:
    """Whether the source has a stored token (viewer)."""
    current_scope(session)
    check_id("source_id", source_id)
    with translated_errors():
        found = session.execute(
            select(SourceToken.source_id).where(SourceToken.source_id == source_id)
        ).first()
    return found is not None


def open_claimed_token(source_id: uuid.UUID, row: Any) -> SecretStr | None:
    """The plaintext of a claim's token columns (token_key_id, token_nonce,
    token_ciphertext), or None: none stored, or it does not decrypt (its key id is not
    configured, or it was not made for this source). A scan without its token fails
    visibly on a private repository; one bad row must not stop the queue."""
    if row.token_key_id is None:
        return None
    keyring = crypto.configured_keyring()
    sealed = crypto.SealedToken(
        key_id=row.token_key_id, nonce=row.token_nonce, ciphertext=row.token_ciphertext
    )
    try:
        if keyring is None:
            raise TokenKeyUnknown(source_id, sealed.key_id)
        return keyring.open(source_id, sealed)
    except TokenDecryptionFailed as exc:
        log.error("claim without its token: %s", exc)
        return None


# --- rotation ---------------------------------------------------------------------


@dataclass
class RotationReport:
    """What a rotation did: tokens re-encrypted under `primary_key_id`, and those left
    alone because their key id is not configured (`unknown_key`) or they did not
    decrypt (`undecryptable`), by source id."""

    primary_key_id: str
    rotated: int = 0
    unknown_key: list[uuid.UUID] = field(default_factory=list)
    undecryptable: list[uuid.UUID] = field(default_factory=list)

    @property
    def left_alone(self) -> int:
        return len(self.unknown_key) + len(self.undecryptable)

    def add(self, other: "RotationReport") -> None:
        self.rotated += other.rotated
        self.unknown_key += other.unknown_key
        self.undecryptable += other.undecryptable


def tokens_to_rotate(session: Session) -> int:
    """How many stored tokens are not under the first configured key (admin or worker)."""
    _require_rotator(session, "tokens_to_rotate")
    keyring = crypto.required_keyring()
    with translated_errors():
        count = session.execute(
            text("SELECT count(*) FROM marketplace_source_tokens WHERE key_id <> :k"),
            {"k": keyring.primary_id},
        ).scalar_one()
    return int(count)


def rotate_token_batch(
    session: Session, *, after: uuid.UUID | None = None, batch_size: int = 500
) -> tuple[RotationReport, uuid.UUID | None]:
    """Re-encrypt up to `batch_size` tokens not under the first key, in source id order
    after `after`; returns the report and the cursor of the next batch (None: done).

    One transaction per batch keeps a rotation resumable: a rotated token is under the
    first key, so running again only sees what is left.
    """
    _require_rotator(session, "rotate_token_batch")
    if after is not None:
        check_id("after", after)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValidationFailed("batch_size", batch_size, f"{batch_size!r} is not allowed (an int)")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValidationFailed(
            "batch_size", batch_size, f"{batch_size!r} is not allowed (1 to {MAX_BATCH})"
        )
    keyring = crypto.required_keyring()
    report = RotationReport(primary_key_id=keyring.primary_id)
    with translated_errors():
        # FOR UPDATE: a set_source_token meanwhile waits, rather than being overwritten.
        rows = session.execute(
            text(
                "SELECT source_id, key_id, nonce, ciphertext FROM marketplace_source_tokens "
                "WHERE key_id <> :primary AND (CAST(:after AS uuid) IS NULL OR source_id > :after) "
                "ORDER BY source_id LIMIT :limit FOR UPDATE"
            ),
            {"primary": keyring.primary_id, "after": after, "limit": batch_size},
        ).all()
        for row in rows:
            sealed = crypto.SealedToken(
                key_id=row.key_id, nonce=bytes(row.nonce), ciphertext=bytes(row.ciphertext)
            )
            try:
                fresh = keyring.reseal(row.source_id, sealed)
            except TokenKeyUnknown:
                report.unknown_key.append(row.source_id)
                continue
            except TokenDecryptionFailed:
                report.undecryptable.append(row.source_id)
                continue
            session.execute(
                text(
                    "UPDATE marketplace_source_tokens SET key_id = :key_id, nonce = :nonce, "
                    "ciphertext = :ciphertext, updated_at = now() WHERE source_id = :source_id"
                ),
                {
                    "source_id": row.source_id,
                    "key_id": fresh.key_id,
                    "nonce": fresh.nonce,
                    "ciphertext": fresh.ciphertext,
                },
            )
            report.rotated += 1
    for source_id in report.unknown_key:
        log.warning("rotation left source %s alone: its key id is not configured", source_id)
    for source_id in report.undecryptable:
        log.warning("rotation left source %s alone: its token does not decrypt", source_id)
    next_cursor = rows[-1].source_id if len(rows) == batch_size else None
    return report, next_cursor


def rotate_token_keys(session: Session, *, batch_size: int = 500) -> "RotationReport":
    """Re-encrypt every token not under the first key of SKILLMEAT_TOKEN_KEYS (admin or
    worker), `batch_size` rows a statement, in the caller's transaction. Tokens whose key
    id is unknown (or that do not decrypt) are reported by source id and left alone.
    Idempotent: run again, it rotates nothing. `skillmeat-db rotate-token-keys` commits
    each batch instead (resumable)."""
    _require_rotator(session, "rotate_token_keys")
    report = RotationReport(primary_key_id=crypto.required_keyring().primary_id)
    after: uuid.UUID | None = None
    while True:
        batch, after = rotate_token_batch(session, after=after, batch_size=batch_size)
        report.add(batch)
        if after is None:
            return report


# --- helpers ------------------------------------------------------------------------


def _checked_token(token: Any) -> SecretStr:
    """The token as a SecretStr; refused (without echoing it) when it is not one line of
    printable text. A ValidationFailed's value is the masked SecretStr."""
    if isinstance(token, SecretStr):
        secret = token
    elif isinstance(token, str):
        secret = SecretStr(token)
    else:
        raise ValidationFailed("token", type(token).__name__, "must be a str or pydantic SecretStr")
    value = secret.get_secret_value()
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("token", secret, "is blank (clear_source_token removes a token)")
    if len(value) > MAX_TOKEN_CHARS:
        raise ValidationFailed(
            "token", secret, f"has {len(value)} characters (at most {MAX_TOKEN_CHARS})"
        )
    if value != value.strip() or any(not c.isprintable() or c.isspace() for c in value):
        raise ValidationFailed(
            "token", secret, "contains whitespace or control characters (paste the token alone)"
        )
    return secret


def _require_visible(session: Session, source_id: uuid.UUID) -> None:
    """NotFound before a write when the source is not visible (RLS would say 42501 for a
    source of another tenant, whether or not it exists: same answer as everywhere)."""
    scope = current_scope(session)
    if scope.worker:
        raise ScopeError("source tokens are set by members or admin, not by a scan worker")
    if session.execute(select(Source.id).where(Source.id == source_id)).first() is None:
        raise NotFound(f"source_id: {source_id} is not a source visible to this user")


def _require_rotator(session: Session, name: str) -> None:
    scope = current_scope(session)
    if not (scope.admin or scope.worker):
        raise ScopeError(
            f"{name} re-encrypts every tenant's tokens: use tenant_scope(session, admin=True) "
            "or tenant_scope(session, worker=True)"
        )
