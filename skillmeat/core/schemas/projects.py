"""Validated inputs and read models of projects and their members.

The name rule mirrors the CHECK on projects.name (not blank), plus what PostgreSQL
text cannot hold; bad input is refused here with a sentence a person can act on.
"""

import datetime as dt
import unicodedata
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

from skillmeat.core.errors import ValidationFailed
from skillmeat.core.models.enums import MemberRole

__all__ = [
    "MAX_PROJECT_NAME",
    "MemberRead",
    "ProjectCreate",
    "ProjectRead",
    "Role",
    "check_project_name",
    "check_role",
]

Role = MemberRole
MAX_PROJECT_NAME = 200
_ROLES = ", ".join(role.value for role in MemberRole)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_project_name(value: Any) -> str:
    """The name as given, or ValidationFailed("name", ...) saying what is allowed."""
    rule = f"must be 1-{MAX_PROJECT_NAME} characters with at least one that is not whitespace"
    if not isinstance(value, str):
        why = "is not a string"
    elif not value.strip():
        why = "is blank"
    elif len(value) > MAX_PROJECT_NAME:
        why = f"has {len(value)} characters"
    elif any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        why = "contains control characters or an unpaired surrogate"
    else:
        return value
    raise ValidationFailed("name", value, f"{_show(value)} is not allowed ({why}; {rule})")


def check_role(value: Any) -> MemberRole:
    """A MemberRole from a role or its value, or ValidationFailed("role", ...)."""
    try:
        return MemberRole(value)
    except ValueError:
        raise ValidationFailed("role", value, f"{_show(value)} is not allowed ({_ROLES})") from None


def _name(value: str) -> str:
    try:
        return check_project_name(value)
    except ValidationFailed as exc:
        raise PydanticCustomError("skillmeat_invalid", "{reason}", {"reason": exc.reason}) from exc


ProjectName = Annotated[str, AfterValidator(_name)]


class ProjectCreate(BaseModel):
    """A new project and the user who owns it (its first member)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ProjectName
    owner_id: uuid.UUID


class ProjectRead(BaseModel):
    """A stored project, built from a `Project` row."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: uuid.UUID
    name: str
    created_at: dt.datetime
    updated_at: dt.datetime


class MemberRead(BaseModel):
    """A stored membership, built from a `ProjectMember` row."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    project_id: uuid.UUID
    user_id: uuid.UUID
    role: MemberRole
    created_at: dt.datetime
