"""Input checks and the page type shared by the repository modules."""

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from skillmeat.core.errors import ValidationFailed


def check_id(field: str, value: Any) -> uuid.UUID:
    """Ids are uuid.UUID objects: a string or int is a caller bug, refused before SQL."""
    if not isinstance(value, uuid.UUID):
        raise ValidationFailed(field, value, f"{value!r} is not allowed (must be a uuid.UUID)")
    return value


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
