"""Library exceptions: errors a caller can act on (field, value and what is allowed)."""

from functools import partial
from typing import Any


class SkillmeatError(Exception):
    """Base of every error the library raises on purpose, so callers can catch them all."""


class ValidationFailed(SkillmeatError, ValueError):
    """Input refused before it reaches the database; `str()` is `<field>: <reason>`."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason

    def __reduce__(self) -> tuple[type["ValidationFailed"], tuple[str, object, str]]:
        # Exception pickles self.args (one string); rebuild from the real arguments.
        return (type(self), (self.field, self.value, self.reason))


class PermissionDenied(SkillmeatError):
    """The current scope may not do this (SQLSTATE 42501: RLS WITH CHECK or a missing grant)."""


class NotFound(SkillmeatError, LookupError):
    """No row with that id is visible in the current scope (it may exist for another tenant)."""


class ConstraintViolation(SkillmeatError, ValueError):
    """The database refused a value (CHECK, unique, foreign key, not null); names the constraint."""

    def __init__(self, message: str, *, constraint: str | None, sqlstate: str) -> None:
        super().__init__(message)
        self.constraint = constraint
        self.sqlstate = sqlstate


class DuplicateSource(ConstraintViolation):
    """The project already has this repository (compared case-insensitively)."""

    def __init__(self, repo_url: str) -> None:
        super().__init__(
            f"repo_url: {repo_url} is already a source of this project "
            "(GitHub names are compared case-insensitively)",
            constraint="uq_marketplace_sources_project_id_lower_repo_url",
            sqlstate="23505",
        )
        self.repo_url = repo_url


class ScopeError(SkillmeatError):
    """A repository function was called outside `tenant_scope`, or the scope is misused."""


class InvalidValue(SkillmeatError, ValueError):
    """The database could not take a value (too long for an index, malformed for its type)."""


class ConfigurationError(SkillmeatError):
    """The library is not configured for this call (a missing or malformed setting)."""


class IdentityNotConfigured(ConfigurationError, ScopeError):
    """A member scope cannot be entered: no identity key to sign its proof with."""


class LastOwner(ConstraintViolation):
    """The change would leave a project without an owner (enforced by a deferred trigger)."""

    CONSTRAINT = "project_members_keep_an_owner"

    def __init__(self, project_id: object) -> None:
        super().__init__(
            f"project_id: {project_id} would have no owner left; make another member "
            "owner first, or delete the project",
            constraint=self.CONSTRAINT,
            sqlstate="23514",
        )
        self.project_id = project_id

    def __reduce__(self) -> tuple[type["LastOwner"], tuple[object]]:
        return (type(self), (self.project_id,))


class RetryableError(SkillmeatError):
    """The database gave up on this transaction for a reason that is not the caller's input
    (a lock conflict or a timeout); it was rolled back, and running the whole transaction
    again is safe. `sqlstate` is the server's code."""

    def __init__(self, message: str, *, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Exception pickles self.args only; sqlstate is keyword-only.
        return (partial(type(self), sqlstate=self.sqlstate), (str(self),))


class DeadlockDetected(RetryableError):
    """SQLSTATE 40P01: PostgreSQL broke a lock cycle by rolling this transaction back."""


class SerializationFailure(RetryableError):
    """SQLSTATE 40001: a concurrent commit conflicts with this transaction's snapshot."""


class LockTimeout(RetryableError):
    """SQLSTATE 55P03 (lock_not_available): a lock was not granted within lock_timeout."""


class StatementTimeout(RetryableError):
    """SQLSTATE 57014 (query_canceled): statement_timeout or a cancel request ended a statement."""


class LeaseLost(SkillmeatError):
    """The worker's claim on a scan ended (its lease expired and the scan was reaped or
    claimed again, or it finished): nothing was written, and the worker must drop the scan."""

    def __init__(self, scan_id: object) -> None:
        super().__init__(
            f"scan_id: {scan_id} is no longer held by this lease_token (the lease expired "
            "and the scan was reaped or claimed by another worker); drop this scan"
        )
        self.scan_id = scan_id

    def __reduce__(self) -> tuple[type["LeaseLost"], tuple[object]]:
        return (type(self), (self.scan_id,))


class TokenDecryptionFailed(SkillmeatError):
    """A stored token did not decrypt: its key id is not configured, or the ciphertext
    was not made for this source with that key (tampered, copied from another row, or
    a different key under the same id). Names the source and key id, never a secret."""

    def __init__(self, source_id: object, key_id: str, reason: str) -> None:
        super().__init__(f"source_id: {source_id}: the token under key {key_id!r} {reason}")
        self.source_id = source_id
        self.key_id = key_id
        self.reason = reason

    def __reduce__(self) -> tuple[type["TokenDecryptionFailed"], tuple[object, str, str]]:
        return (type(self), (self.source_id, self.key_id, self.reason))


class TokenKeyUnknown(TokenDecryptionFailed):
    """The token's key id is not in SKILLMEAT_TOKEN_KEYS (removed too early, or never set)."""

    def __init__(self, source_id: object, key_id: str) -> None:
        super().__init__(
            source_id,
            key_id,
            "cannot be decrypted: that key id is not in SKILLMEAT_TOKEN_KEYS",
        )

    def __reduce__(self) -> tuple[type["TokenKeyUnknown"], tuple[object, str]]:  # type: ignore[override]
        return (type(self), (self.source_id, self.key_id))
