"""Input checks shared by the repository modules (refused before any SQL runs)."""

import uuid
from typing import Any

from skillmeat.core.errors import ValidationFailed


def check_id(field: str, value: Any) -> uuid.UUID:
    """Ids are uuid.UUID objects: a string or int is a caller bug, refused before SQL."""
    if not isinstance(value, uuid.UUID):
        raise ValidationFailed(field, value, f"{value!r} is not allowed (must be a uuid.UUID)")
    return value
