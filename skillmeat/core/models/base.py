"""Declarative base: one MetaData with a naming convention, type map and mixins."""

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Enum, MetaData, func
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Frozen since the first revision: constraint and index names in the migrations
# were generated from it, so changing it would make models and schema drift.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads this class attribute)
        dt.datetime: TIMESTAMP(timezone=True),
        dict[str, Any]: JSONB,
        uuid.UUID: PG_UUID(as_uuid=True),
    }


def text_enum(enum_cls: type[StrEnum], name: str) -> Enum:
    """A StrEnum stored as text with a named CHECK listing its values (never member names)."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        # Room to add values later without touching the column type.
        length=32,
        values_callable=lambda cls: [m.value for m in cls],
        validate_strings=True,
    )


def not_blank(column: str, name: str) -> CheckConstraint:
    # [:space:] also covers tabs and newlines, which btrim() would keep.
    return CheckConstraint(f"{column} ~ '[^[:space:]]'", name=name)


class UUIDPrimaryKeyMixin:
    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=func.gen_random_uuid(), sort_order=-100
    )


class CreatedAtMixin:
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), sort_order=100)


class TimestampMixin(CreatedAtMixin):
    """created_at/updated_at; updated_at is advanced by a trigger on every UPDATE, ORM or not."""

    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), sort_order=101)
