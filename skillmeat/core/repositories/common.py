"""Input checks and the page type shared by the repository modules."""

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, NoReturn, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from skillmeat.core.errors import NotFound, PermissionDenied, ValidationFailed
from skillmeat.core.models import MarketplaceSource


def check_id(field: str, value: Any) -> uuid.UUID:
    """Ids are uuid.UUID objects: a string or int is a caller bug, refused before SQL."""
    if not isinstance(value, uuid.UUID):
        raise ValidationFailed(field, value, f"{value!r} is not allowed (must be a uuid.UUID)")
    return value


def source_not_found(source_id: uuid.UUID) -> NotFound:
    return NotFound(f"source_id: {source_id} is not a source visible to this user")


def require_visible_source(session: Session, source_id: uuid.UUID) -> None:
    """NotFound unless the scope can see the source (the same answer whether it exists
    for another tenant or not at all)."""
    visible = session.execute(
        select(MarketplaceSource.id).where(MarketplaceSource.id == source_id)
    ).first()
    if visible is None:
        raise source_not_found(source_id)


def require_visible_sources(session: Session, source_ids: list[uuid.UUID]) -> None:
    """require_visible_source for several ids, in one query."""
    if not source_ids:
        return
    visible = set(
        session.execute(
            select(MarketplaceSource.id).where(MarketplaceSource.id.in_(source_ids))
        ).scalars()
    )
    for source_id in source_ids:
        if source_id not in visible:
            raise source_not_found(source_id)


def refuse_source_write(session: Session, source_id: uuid.UUID, action: str) -> NoReturn:
    """A write matched no row: PermissionDenied if the scope can see the source, else
    NotFound. Always raises."""
    require_visible_source(session, source_id)
    raise PermissionDenied(
        f"permission denied: this user may read source {source_id} but not {action} "
        "(editor or owner role required)"
    )


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset-paginated listing; pass next_cursor back for the next one."""

    items: list[T]
    next_cursor: str | None


MAX_PAGE = 500  # query_paths.MAX_PAGE: the largest page any listing returns


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValidationFailed(
            "limit", limit, f"{limit!r} is not allowed (an int, 1 to {MAX_PAGE})"
        )
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed("limit", limit, f"{limit!r} is not allowed (1 to {MAX_PAGE})")


E = TypeVar("E", bound=StrEnum)


def enum_value(field: str, value: Any, enum_cls: type[E]) -> E:
    """A member of enum_cls, or ValidationFailed listing the allowed values."""
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ValidationFailed(field, value, f"{value!r} is not allowed ({allowed})") from None
