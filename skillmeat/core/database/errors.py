"""Turn driver errors into the library's exceptions (one sentence, no driver traceback)."""

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError

from skillmeat.core.errors import (
    ConstraintViolation,
    DeadlockDetected,
    InvalidValue,
    LastOwner,
    LockTimeout,
    PermissionDenied,
    RetryableError,
    SerializationFailure,
    SkillmeatError,
    StatementTimeout,
)

_CONSTRAINT_STATES = {
    "23502": "a required value is missing",
    "23503": "it refers to a row that does not exist",
    "23505": "it duplicates an existing row",
    "23514": "a value is outside what the column allows",
}


# Not the caller's input: the server rolled the transaction back (deadlock,
# serialization) or aborted it (timeouts); running the whole transaction again is safe.
_RETRYABLE: dict[str, tuple[type[RetryableError], str]] = {
    "40P01": (
        DeadlockDetected,
        "deadlock detected: PostgreSQL rolled this transaction back to break a lock cycle "
        "with another one, so retrying the whole transaction is safe",
    ),
    "40001": (
        SerializationFailure,
        "serialization failure: a concurrent transaction changed rows this one read or "
        "writes, so it was rolled back and retrying the whole transaction is safe",
    ),
    "55P03": (
        LockTimeout,
        "lock timeout: a lock held by another transaction was not granted within "
        "lock_timeout and this transaction was aborted, so retrying the whole transaction "
        "is safe",
    ),
    "57014": (
        StatementTimeout,
        "statement timeout: a statement ran past statement_timeout (or was canceled) and "
        "this transaction was aborted, so retrying the whole transaction is safe",
    ),
}


# What a refused write was about, in the business's words, and who may do it.
_OBJECTS: dict[str, tuple[str, str]] = {
    "projects": ("a project", "an admin creates projects; the owner renames or deletes one"),
    "project_members": ("a project's members", "owner role required"),
    "marketplace_sources": ("a source", "editor or owner role required"),
    "marketplace_catalog_entries": ("a source's catalog", "editor or owner role required"),
    "marketplace_scans": ("a source's scans", "editor or owner role required"),
}
_TABLE_RE = re.compile(r'(?:for table|relation) "?([a-z_]+)"?')


def _refusal(primary: str) -> str:
    """The library's sentence for SQLSTATE 42501 (an RLS WITH CHECK or a missing grant),
    never PostgreSQL's policy text."""
    if "role" in primary and "set role" in primary.lower():
        return "permission denied: this connection may not take that role"
    if "would be affected by row-level security" in primary:
        return (
            "permission denied: row-level security is off for this session "
            "(row_security = off), so the read was refused rather than filtered"
        )
    if primary.startswith("permission denied for table"):
        # a missing grant: no scope (the login role itself) or a column not granted
        found = _TABLE_RE.search(primary.replace("for table ", 'for table "') + '"')
        what = _OBJECTS.get(found.group(1), ("that table", ""))[0] if found else "that table"
        return (
            f"permission denied: this role holds no such privilege on {what} "
            "(outside tenant_scope, or a column no request role may write)"
        )
    found = _TABLE_RE.search(primary)
    if found and found.group(1) in _OBJECTS:
        what, who = _OBJECTS[found.group(1)]
        return f"permission denied: this user may not make that change to {what} ({who})"
    return "permission denied: this user may not do that"


def sqlstate_of(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def translate(exc: DBAPIError) -> SkillmeatError | None:
    """The library exception for a driver error, or None when it is not the caller's fault."""
    state = sqlstate_of(exc)
    diag = getattr(exc.orig, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc.orig).splitlines()[0]
    if state in _RETRYABLE:
        cls, message = _RETRYABLE[state]
        return cls(message, sqlstate=state)
    if state == "42501":
        return PermissionDenied(_refusal(primary))
    if state in _CONSTRAINT_STATES:
        constraint = getattr(diag, "constraint_name", None)
        if constraint == LastOwner.CONSTRAINT:
            # The trigger's message is "project <uuid> would have no owner".
            return LastOwner(primary.split()[1] if primary.startswith("project ") else "?")
        detail = getattr(diag, "message_detail", None)
        where = f" ({constraint})" if constraint else ""
        tail = f": {detail}" if detail else ""
        return ConstraintViolation(
            f"refused by the database{where}: {_CONSTRAINT_STATES[state]}{tail}",
            constraint=constraint,
            sqlstate=state,
        )
    if state is not None and (state.startswith("22") or state == "54000"):
        # Data exceptions (malformed input for a type) and program limits (a value
        # too large for an index entry): the caller's value, not a server fault.
        column = getattr(diag, "column_name", None)
        where = f"{column}: " if column else ""
        return InvalidValue(f"{where}value refused by the database: {primary}")
    return None


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise known driver errors as library exceptions, chained to the original."""
    try:
        yield
    except DBAPIError as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc
