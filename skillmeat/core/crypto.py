"""Source tokens at rest: the one module that sees a key or a plaintext token.

AES-256-GCM (`cryptography`'s AESGCM): a fresh random 96-bit nonce per encryption,
and associated data that binds the ciphertext to its source and key id, so a
ciphertext copied to another source's row (or relabelled with another key id) does
not decrypt. Encryption happens here, in the backend, before any SQL: no statement,
server log, WAL record or dead tuple ever holds a plaintext token.

Keys come from `SKILLMEAT_TOKEN_KEYS`: `<key id>:<base64 of 32 bytes>` entries
separated by commas or whitespace; the first encrypts, all decrypt (rotation adds a
new first key, re-encrypts, then drops the old one). With none configured,
encrypting raises ConfigurationError: a token is never stored in plaintext.
Plaintexts leave this module only as pydantic `SecretStr`; keys never leave it.
"""

import base64
import binascii
import os
import re
import secrets
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from skillmeat.core.errors import ConfigurationError, TokenDecryptionFailed, TokenKeyUnknown

KEYS_ENV = "SKILLMEAT_TOKEN_KEYS"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits: GCM's native nonce size
KEY_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the CHECK on key_id holds the same
_AAD_PREFIX = b"skillmeat source token v1\x00"
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, repr=False)
class TokenKey:
    """One key of the keyring; `repr` shows only its id."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:
        return f"TokenKey(key_id={self.key_id!r})"


@dataclass(frozen=True)
class SealedToken:
    """What the database stores: the key id, the nonce and the ciphertext (with its tag)."""

    key_id: str
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"SealedToken(key_id={self.key_id!r}, {len(self.ciphertext)} bytes)"


class TokenKeyring:
    """The configured keys: the first encrypts, every one decrypts."""

    def __init__(self, keys: list[TokenKey]) -> None:
        if not keys:
            raise ConfigurationError(_NO_KEYS)
        ids = [key.key_id for key in keys]
        duplicate = next((i for i in ids if ids.count(i) > 1), None)
        if duplicate is not None:
            raise ConfigurationError(f"{KEYS_ENV}: key id {duplicate!r} is listed twice")
        self._keys = {key.key_id: key for key in keys}
        self.primary_id = ids[0]

    def __repr__(self) -> str:
        return f"TokenKeyring(key_ids={list(self._keys)!r})"

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def knows(self, key_id: str) -> bool:
        return key_id in self._keys

    def seal(self, source_id: uuid.UUID, token: SecretStr) -> SealedToken:
        """Encrypt `token` for `source_id` under the first key, with a fresh nonce."""
        key = self._keys[self.primary_id]
        nonce = os.urandom(NONCE_BYTES)
        plaintext = token.get_secret_value().encode("utf-8")
        ciphertext = AESGCM(key.secret).encrypt(nonce, plaintext, _aad(source_id, key.key_id))
        return SealedToken(key_id=key.key_id, nonce=nonce, ciphertext=ciphertext)

    def open(self, source_id: uuid.UUID, sealed: SealedToken) -> SecretStr:
        """The token `sealed` holds for `source_id`. TokenKeyUnknown when its key id is
        not configured, TokenDecryptionFailed when it was not made for this source
        with this key (the GCM tag does not verify)."""
        key = self._keys.get(sealed.key_id)
        if key is None:
            raise TokenKeyUnknown(source_id, sealed.key_id)
        try:
            plaintext = AESGCM(key.secret).decrypt(
                bytes(sealed.nonce), bytes(sealed.ciphertext), _aad(source_id, sealed.key_id)
            )
        except (InvalidTag, ValueError):
            raise TokenDecryptionFailed(
                source_id,
                sealed.key_id,
                "does not decrypt (not made for this source with this key: tampered, "
                "copied from another source, or another key under the same id)",
            ) from None
        return SecretStr(plaintext.decode("utf-8"))

    def reseal(self, source_id: uuid.UUID, sealed: SealedToken) -> SealedToken:
        """Re-encrypt under the first key (rotation); the plaintext stays in here."""
        return self.seal(source_id, self.open(source_id, sealed))


_NO_KEYS = (
    f"{KEYS_ENV} is not set: tokens are stored only encrypted; set it to "
    "'<key id>:<base64 of 32 random bytes>' (e.g. "
    "\"k1:$(openssl rand -base64 32)\"; docs/security.md, 'Tokens')"
)


def _aad(source_id: uuid.UUID, key_id: str) -> bytes:
    return _AAD_PREFIX + source_id.bytes + key_id.encode("ascii")


def parse_keys(value: str) -> TokenKeyring:
    """A keyring from the text of SKILLMEAT_TOKEN_KEYS; ConfigurationError naming the
    entry (by position and key id, never its key) when one is malformed."""
    entries = [entry for entry in _SEPARATORS.split(value.strip()) if entry]
    keys: list[TokenKey] = []
    for position, entry in enumerate(entries, start=1):
        key_id, colon, encoded = entry.partition(":")
        where = f"{KEYS_ENV} entry {position}"
        if not colon or not KEY_ID_RE.fullmatch(key_id):
            raise ConfigurationError(
                f"{where}: not '<key id>:<base64 key>' with a key id of 1-64 letters, "
                "digits, '.', '_' or '-'"
            )
        try:
            standard = encoded.replace("-", "+").replace("_", "/")
            secret = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"{where} ({key_id!r}): the key is not base64") from None
        if len(secret) != KEY_BYTES:
            raise ConfigurationError(
                f"{where} ({key_id!r}): the key has {len(secret)} bytes; AES-256 needs "
                f"exactly {KEY_BYTES} (e.g. `openssl rand -base64 32`)"
            )
        keys.append(TokenKey(key_id=key_id, secret=secret))
    return TokenKeyring(keys)


def configured_keyring() -> TokenKeyring | None:
    """The keyring of SKILLMEAT_TOKEN_KEYS (read on each call), or None when unset."""
    value = os.environ.get(KEYS_ENV, "")
    return parse_keys(value) if value.strip() else None


def required_keyring() -> TokenKeyring:
    """The configured keyring; ConfigurationError when none is set (never plaintext)."""
    keyring = configured_keyring()
    if keyring is None:
        raise ConfigurationError(_NO_KEYS)
    return keyring


def generate_key_entry(key_id: str) -> str:
    """A new `<key id>:<base64>` entry for SKILLMEAT_TOKEN_KEYS (setup and tests)."""
    if not KEY_ID_RE.fullmatch(key_id):
        raise ConfigurationError(f"key id {key_id!r}: 1-64 letters, digits, '.', '_' or '-'")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode('ascii')}"
